"""Format readers for ``mimetic ingest``: bytes of one file in, the writer's documents out.

Every reader takes the raw bytes of a file (never a path: files inside zip archives are read
without extracting them, and originals are never opened for writing) and returns a list of
:class:`Extracted` documents — one for most formats, one per message for mail and one per
conversation for chat exports. A reader raises :class:`ReadError` with a short, writer-facing
reason for input it cannot use; ``read_bytes`` turns any other exception from a library into
a ``ReadError`` too, so that no file can stop an ingest.

Libraries, one per format (the well-kept one for each):

========================  ==============================================================
format                    library
========================  ==============================================================
text (any encoding)       charset-normalizer (detection), ftfy (repair)
Markdown, Gemini          mimetic.text.markdown (front matter through PyYAML / tomllib)
HTML                      trafilatura (main text; navigation and boilerplate dropped)
DOCX                      python-docx
ODT                       odfpy
RTF                       striprtf
EPUB                      ebooklib (spine order; navigation documents skipped), lxml
PDF                       pypdf
e-mail (.eml, .mbox)      the standard library's ``email`` package
chat exports (.json/l)    the standard library's ``json``
zip archives              the standard library's ``zipfile``
========================  ==============================================================
"""

from __future__ import annotations

import email
import email.policy
import io
import json
import math
import re
import statistics
import unicodedata
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any, Callable, Iterable, NamedTuple

from mimetic.text.markdown import clean_markdown, split_front_matter

FORMATS = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".gmi": "gemini",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".docx": "docx",
    ".odt": "odt",
    ".rtf": "rtf",
    ".epub": "epub",
    ".pdf": "pdf",
    ".eml": "email",
    ".mbox": "mbox",
    ".json": "chat",
    ".jsonl": "chat",
    ".zip": "zip",
}
"""File extension → format name. Files with other extensions are skipped with a reason."""

UNSUPPORTED_HINTS = {
    ".doc": "old Word .doc files are not read; save it as .docx",
    ".pages": "Apple Pages files are not read; export it as .docx",
    ".mobi": "Kindle .mobi files are not read; convert it to .epub (e.g. with Calibre)",
    ".azw3": "Kindle files are not read; convert it to .epub (e.g. with Calibre)",
}


class ReadError(Exception):
    """A file could not be used; the message is the reason shown to the writer."""

    unsupported = False


class Unsupported(ReadError):
    """A file type mimetic does not read (a photo, a spreadsheet): skipped, not a problem."""

    unsupported = True


@dataclass
class Extracted:
    """One document found in a file.

    Attributes:
        paragraphs: the writer's paragraphs, cleaned, in order.
        part: where inside the file it came from (a message number, a conversation title,
            a zip member), or ``""`` for the whole file.
        title, date, tags, author: metadata when the format has it (``date`` as ISO 8601).
        encoding: the text encoding detected, for text formats.
        removed_words: words the reader removed (quoted replies, signatures, other
            speakers' turns, headers and footers), for the corpus report.
        notes: reader remarks kept in the provenance (e.g. "12 of 40 messages by the writer").
    """

    paragraphs: list[str]
    part: str = ""
    title: str | None = None
    date: str | None = None
    tags: list[str] = field(default_factory=list)
    author: str | None = None
    encoding: str | None = None
    removed_words: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class ReadOptions:
    """What readers need to know from the ingest settings.

    Attributes:
        authors: the writer's e-mail addresses or names (lower case); mail and chat readers
            keep only what they wrote. Empty: mail readers keep every message and tag its
            sender so that ``ingest`` can pick the most frequent one.
        remove_blockquotes: drop quotations (Markdown ``>``) as other people's words.
        join_wrapped_lines: join hard-wrapped lines into paragraphs.
        max_bytes: largest file (or zip member, uncompressed) read, in bytes.
        max_zip_members: most files read from one archive (a guard against zip bombs).
        encoding: the writer's text encoding for plain-text and Markdown files (any name
            Python's ``codecs`` knows), or ``None`` to detect it (:func:`decode_bytes`).
    """

    authors: tuple[str, ...] = ()
    remove_blockquotes: bool = True
    join_wrapped_lines: bool = True
    max_bytes: int = 64 * 2**20
    max_zip_members: int = 20_000
    encoding: str | None = None


_WORD = re.compile(r"\b[\w'’-]+\b")


def count_words(text: str) -> int:
    """Number of words (runs of letters, digits, apostrophes and inner hyphens)."""
    return len(_WORD.findall(text))


def format_of(name: str) -> str | None:
    """The format name for a file name (by extension), or ``None`` if mimetic does not read it."""
    dot = name.rfind(".")
    return FORMATS.get(name[dot:].lower()) if dot >= 0 else None


# --------------------------------------------------------------------------------------------
# Text: decoding, paragraphs, Project Gutenberg


WESTERN_ENCODINGS = ("cp1252", "latin_1", "mac_roman")  # tried in this order; the first clean one wins a tie
_ASCII = bytes(range(32, 127))  # a code page that changes these is not one a writer's text file uses (EBCDIC)
_TYPOGRAPHIC = set("’‘“”–—…")  # Windows-1252's typographic punctuation: a tie with another page on these goes to it
_FINE_SYMBOLS = set("£€¥¢°©®§¶µ×÷±")  # symbols that occur in prose; ‡, √, ∂, ƒ, ◊, ˜ do not


class Decoded(NamedTuple):
    """Text decoded from bytes: ``text``; ``encoding``, the codec used (Python's name); and
    ``doubt``, a sentence for the writer when the choice was uncertain, else ``None``."""

    text: str
    encoding: str
    doubt: str | None = None


def oddities(text: str) -> int:
    """How many characters of ``text`` are unlikely in prose: C1 control characters, letters
    in the wrong case for their place (``cafÈ``, ``windÕs``, ``ÒIt``), non-ASCII lowercase
    letters standing alone, and symbols that prose does not use (``‡``, ``√``, ``ƒ``). The
    measure by which :func:`decode_bytes` tells one 8-bit Western code page from another: the
    right one reads as words, a wrong one scatters such characters through them."""
    odd = 0
    for i, c in enumerate(text):
        if c < "\x80":
            continue
        cat = unicodedata.category(c)
        prev = text[i - 1] if i else " "
        nxt = text[i + 1] if i + 1 < len(text) else " "
        if cat == "Cc":
            odd += 3
        elif cat == "Lu":
            after = text[i + 2] if i + 2 < len(text) else " "
            if prev.islower() or (nxt.isupper() and after.islower()) or c in "ŸŽ":
                odd += 1
        elif cat == "Ll":
            if (not prev.isalpha() and not nxt.isalpha() and c != "à") or (nxt.isascii() and nxt.isupper()):
                odd += 1
        elif cat[0] == "S" and c not in _FINE_SYMBOLS:
            odd += 1
        elif c in "†‡◊" or (c in "•¶§‘“" and prev.isalpha()) or (c in "¡¿" and prev.isalnum()):
            odd += 1
        elif c == "–" and prev.isalpha() and nxt.isalpha():
            odd += 1
    return odd


def _non_ascii(chars: Iterable[str]) -> int:
    return sum(1 for c in chars if c >= "\x80")


def _odd_share(text: str) -> float:
    """:func:`oddities` per non-ASCII character: 0 for text that reads as words."""
    return oddities(text) / max(1, _non_ascii(text))


def decode_bytes(raw: bytes, encoding: str | None = None) -> Decoded:
    """Decode file bytes to text and name the encoding used.

    Order: ``encoding`` when given (the writer's override; strict); a byte-order mark
    (UTF-8/UTF-16/UTF-32); strict UTF-8; UTF-16 without a mark (NUL bytes on every other
    byte); then the 8-bit Western code pages (:data:`WESTERN_ENCODINGS`: Windows-1252, Latin-1,
    Mac Roman), keeping the one whose text has the fewest :func:`oddities` — unless all of
    them read badly and charset-normalizer's best guess (any code page: Cyrillic, Greek, …)
    reads cleanly. charset-normalizer alone reads short Western 8-bit text as Baltic or Central
    European code pages (``café`` as ``cafķ``), hence the Western pages first. A choice between
    code pages that give different text with similar scores, or a text that still reads
    oddly, comes with a ``doubt`` naming a sample line and the ``--encoding`` override.
    Text is repaired with ftfy (mojibake; HTML entities are left alone), normalised to NFC,
    and newlines (CRLF, CR) to LF.

    Raises:
        ReadError: the bytes look binary (NUL bytes without a UTF-16/32 layout), no
            encoding fits, or they do not decode in the ``encoding`` asked for.
    """
    import codecs

    if encoding:
        try:
            codec = codecs.lookup(encoding).name
            return _checked(raw.decode(codec), codec)
        except LookupError:
            raise ReadError(f"unknown encoding {encoding!r} (try cp1252, latin-1, mac_roman, utf-8, utf-16)") from None
        except UnicodeDecodeError as e:
            raise ReadError(f"not valid {encoding} text (byte {e.start}); try another --encoding") from None
    boms = [
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ]
    for bom, enc in boms:
        if raw.startswith(bom):
            return _checked(raw.decode(enc, errors="replace"), enc)
    try:
        return _checked(raw.decode("utf-8"), "utf-8")
    except UnicodeDecodeError:
        pass
    even, odd_ = raw[0::2][:4096], raw[1::2][:4096]
    if len(raw) >= 4 and len(raw) % 2 == 0 and max(even.count(0), odd_.count(0)) > 0.3 * len(even):
        enc = "utf-16-le" if odd_.count(0) > even.count(0) else "utf-16-be"
        try:
            return _checked(raw.decode(enc), enc)
        except UnicodeDecodeError:
            pass
    if raw.count(0) > 0:
        raise ReadError("binary file (contains NUL bytes)")
    scored = []
    for enc in WESTERN_ENCODINGS:
        try:
            text = raw.decode(enc)
        except UnicodeDecodeError:
            continue
        scored.append((_odd_share(text), enc, text))
    best_score, best_enc, best_text = min(scored, key=lambda t: t[0])  # stable: earlier pages win ties
    letters = [c for c in best_text if c.isalpha()]
    foreign = _non_ascii(letters) / max(1, len(letters))
    if best_score > 0.3 or (foreign > 0.3 and len(letters) >= 20):  # Western languages: few non-ASCII letters (French about 4%)
        from charset_normalizer import from_bytes

        guess = from_bytes(raw).best()
        ascii_safe = guess is not None and _ASCII.decode(guess.encoding, errors="replace") == _ASCII.decode()
        if guess is not None and ascii_safe and guess.encoding not in WESTERN_ENCODINGS:
            text = str(guess)
            score = _odd_share(text)
            if score < 0.1:
                scored = [(score, guess.encoding, text)]
                best_score, best_enc, best_text = score, guess.encoding, text
        if best_enc in WESTERN_ENCODINGS:
            best_score = max(best_score, 1.0)  # no page reads as a Western language: say so
    rivals = [enc for score, enc, text in scored if enc != best_enc and text != best_text and score - best_score < 0.1
              and not (best_enc == "cp1252" and {a for a, b in zip(best_text, text) if a != b} <= _TYPOGRAPHIC)]
    doubt = None
    if best_score > 0.1 or rivals:
        lines = [ln.strip() for ln in best_text.splitlines() if ln.strip()]
        sample = max(lines, key=_non_ascii, default="")[:120]
        other = ", ".join(rivals) or "cp1252, mac_roman, cp1251, …"
        doubt = (f"encoding uncertain: read as {best_enc}, for example {sample!r}; if its letters look wrong, "
                 f"run ingest again with --encoding set to the right one ({other})")
    return _checked(best_text, best_enc, doubt)


def _checked(text: str, encoding: str, doubt: str | None = None) -> Decoded:
    """Refuse binary-looking text; repair and normalise the rest."""
    if "\x00" in text:
        raise ReadError("binary file (contains NUL bytes)")
    controls = sum(1 for c in text[:20000] if unicodedata.category(c) == "Cc" and c not in "\n\r\t\f")
    if controls > 0.01 * min(len(text), 20000):
        raise ReadError("binary file (mostly control characters)")
    return Decoded(repair(text), encoding, doubt)


def repair(text: str) -> str:
    """Unicode repair (ftfy: mojibake, line breaks), NFC normalisation, LF newlines."""
    import ftfy

    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = ftfy.fix_text(text, uncurl_quotes=False, fix_line_breaks=True, unescape_html=False)
    return unicodedata.normalize("NFC", text)


def paragraphs(text: str, join_wrapped_lines: bool = True) -> list[str]:
    """Split text into paragraphs (blank-line separated), joining hard-wrapped lines.

    A text with no blank lines at all is read as one paragraph per line (notes, or books
    stored one paragraph per line). Whitespace inside a paragraph is collapsed; paragraphs
    without a letter or digit are dropped.
    """
    text = text.replace("\u00a0", " ").replace("\t", " ").replace("\f", "\n\n")
    if "\n\n" not in text.strip() and "\n" in text.strip():
        blocks = text.split("\n")
    else:
        blocks = re.split(r"\n[ \t]*\n", text)
    out = []
    for block in blocks:
        if join_wrapped_lines:
            block = re.sub(r"\s*\n\s*", " ", block)
        block = re.sub(r"[ ]{2,}", " ", block).strip()
        if block and re.search(r"\w", block):
            out.append(block)
    return out


def clean_paragraphs(texts: Iterable[str]) -> list[str]:
    """Paragraph texts from a structured format (one per element or line): each repaired
    (:func:`repair`), its whitespace collapsed, and dropped if it has no letter or digit."""
    out = []
    for text in texts:
        text = re.sub(r"\s+", " ", repair(text)).strip()
        if re.search(r"\w", text):
            out.append(text)
    return out


_PG_START = re.compile(
    r"^[ \t]*\*{3}[ \t]*START OF (?:THE|THIS) PROJECT GUTENBERG E-?(?:BOOK|TEXT)[^\n]*$"
    r"|^[ \t]*\*END\*THE SMALL PRINT![^\n]*$",
    re.IGNORECASE | re.MULTILINE,
)
_PG_END = re.compile(
    r"^[ \t]*\*{3}[ \t]*END OF (?:THE|THIS) PROJECT GUTENBERG E-?(?:BOOK|TEXT)[^\n]*$"
    r"|^[ \t]*End of (?:the |this )?Project Gutenberg'?s? [^\n]*$",
    re.IGNORECASE | re.MULTILINE,
)
_PG_CREDIT = re.compile(r"^[ \t]*(?:Produced|Transcribed|Prepared|E-?text prepared) by\b", re.IGNORECASE)
_PG_LINE = re.compile(r"project gutenberg|gutenberg\.org|gutenberg-tm|gutenberg literary archive", re.IGNORECASE)


def strip_gutenberg(text: str) -> str:
    """Remove a Project Gutenberg header (up to ``*** START OF …``), footer and licence.

    After the start marker, a "Produced by …" credit (up to the next blank line, at most six
    lines) is removed too, as are stray lines that mention Project Gutenberg near either end
    of the text. Text without any of the markers is returned unchanged.
    """
    start = _PG_START.search(text)
    if start:
        text = text[start.end() :]
        lines = text.lstrip("\n").split("\n")
        if lines and _PG_CREDIT.match(lines[0]):
            n = 0
            while n < min(len(lines), 6) and lines[n].strip():
                n += 1
            text = "\n".join(lines[n:])
    end = _PG_END.search(text)
    if end and (start or "gutenberg" in text[end.start() :].lower()):
        text = text[: end.start()]
    if start:  # leftovers such as "Updated editions will replace…" next to the markers
        lines = text.split("\n")
        edge = 40
        keep = [
            line
            for i, line in enumerate(lines)
            if not ((i < edge or i >= len(lines) - edge) and _PG_LINE.search(line))
        ]
        text = "\n".join(keep)
    return text


# --------------------------------------------------------------------------------------------
# HTML (pages) and XHTML (EPUB chapters)


def read_html(raw: bytes, opts: ReadOptions) -> list[Extracted]:
    """Main text of a web page or HTML book through trafilatura; navigation and boilerplate dropped.

    Title and date come from trafilatura's metadata extraction (``<title>``, meta tags).

    Raises:
        ReadError: no main text found.
    """
    import trafilatura

    text = trafilatura.extract(
        raw,
        favor_recall=True,
        include_comments=False,
        include_tables=False,
        include_images=False,
        include_links=False,
        deduplicate=False,
    )
    if not text or not text.strip():
        raise ReadError("no main text found in this HTML page")
    meta = trafilatura.extract_metadata(raw)
    # trafilatura writes one paragraph per line
    paras = clean_paragraphs(strip_gutenberg(text).split("\n"))
    return [Extracted(paras, title=getattr(meta, "title", None), date=getattr(meta, "date", None))]


_BLOCKS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "blockquote", "pre", "dd", "dt", "td", "th", "figcaption"}


def html_paragraphs(markup: bytes | str, remove_blockquotes: bool = False) -> list[str]:
    """Paragraphs of an XHTML/HTML fragment in document order (lxml), for EPUB chapters.

    Block elements (``p``, headings, list items, …) become paragraphs; ``script``, ``style``,
    ``nav`` and footnote asides are dropped; text directly inside ``div``/``body`` counts too.
    """
    import lxml.html

    if isinstance(markup, bytes):
        markup = markup.decode("utf-8", errors="replace")
    markup = re.sub(r"^\s*<\?xml[^>]*\?>", "", markup)  # lxml refuses str input with an encoding declaration
    if not markup.strip():
        return []
    root = lxml.html.fromstring(markup)
    for bad in root.xpath("//script|//style|//nav|//head|//aside|//*[@epub:type='footnote']", namespaces={"epub": "http://www.idpf.org/2007/ops"}):
        bad.drop_tree()
    if remove_blockquotes:
        for q in root.xpath("//blockquote"):
            q.drop_tree()
    out: list[str] = []

    def walk(el: Any) -> None:
        tag = el.tag if isinstance(el.tag, str) else ""
        tag = tag.rsplit("}", 1)[-1].lower()
        if tag in _BLOCKS and not any(
            isinstance(c.tag, str) and c.tag.rsplit("}", 1)[-1].lower() in _BLOCKS for c in el.iterdescendants()
        ):
            out.append(el.text_content())
            return
        if el.text and el.text.strip():
            out.append(el.text)
        for child in el:
            walk(child)
            if child.tail and child.tail.strip():
                out.append(child.tail)

    walk(root)
    return clean_paragraphs(out)


# --------------------------------------------------------------------------------------------
# Office documents and books


def read_docx(raw: bytes, opts: ReadOptions) -> list[Extracted]:
    """Paragraphs of a Word .docx (python-docx), in order; title, author and date from its core properties."""
    import docx

    doc = docx.Document(io.BytesIO(raw))
    paras = clean_paragraphs(p.text for p in doc.paragraphs)
    props = doc.core_properties
    date = props.created or props.modified
    return [
        Extracted(
            paras,
            title=props.title or None,
            author=props.author or None,
            date=date.isoformat() if date else None,
        )
    ]


def read_odt(raw: bytes, opts: ReadOptions) -> list[Extracted]:
    """Paragraphs and headings of an OpenDocument text (.odt) through odfpy."""
    from odf import teletype
    from odf.namespaces import TEXTNS
    from odf.opendocument import load

    doc = load(io.BytesIO(raw))
    blocks = {(TEXTNS, "p"), (TEXTNS, "h")}
    paras = []
    stack = list(doc.text.childNodes)
    while stack:  # depth-first, in document order: paragraphs may sit inside lists and sections
        node = stack.pop(0)
        if getattr(node, "qname", None) in blocks:
            paras.append(teletype.extractText(node))
        else:
            stack[0:0] = [c for c in getattr(node, "childNodes", []) if c.nodeType == c.ELEMENT_NODE]
    from odf.dc import Title

    titles = [teletype.extractText(t) for t in doc.getElementsByType(Title)]
    title = titles[0] if titles and titles[0] else None
    return [Extracted(clean_paragraphs(paras), title=title)]


def read_rtf(raw: bytes, opts: ReadOptions) -> list[Extracted]:
    """Plain text of an RTF file through striprtf; one paragraph per ``\\par``."""
    from striprtf.striprtf import rtf_to_text

    if not raw.lstrip().startswith(b"{\\rtf"):
        raise ReadError("not an RTF file (no {\\rtf header)")
    text = rtf_to_text(raw.decode("latin-1"), errors="ignore")
    return [Extracted(clean_paragraphs(text.split("\n")))]


def read_epub(raw: bytes, opts: ReadOptions) -> list[Extracted]:
    """Chapters of an EPUB (ebooklib) in spine order; navigation documents and the TOC skipped.

    Raises:
        ReadError: the book has no readable chapter.
    """
    import warnings

    import ebooklib
    from ebooklib import epub

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        book = epub.read_epub(io.BytesIO(raw), options={"ignore_ncx": True})
    paras: list[str] = []
    for idref, *_ in book.spine:
        item = book.get_item_with_id(idref)
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT:
            continue
        if isinstance(item, epub.EpubNav) or "nav" in (getattr(item, "properties", None) or []):
            continue
        name = (item.get_name() or "").lower()
        if re.search(r"(^|/)(toc|nav|cover|copyright)[^/]*\.x?html?$", name):
            continue
        paras.extend(html_paragraphs(item.get_content(), opts.remove_blockquotes))
    if not paras:
        raise ReadError("this EPUB has no readable chapters")

    def meta(name: str) -> str | None:
        values = book.get_metadata("DC", name)
        return str(values[0][0]) if values and values[0][0] else None

    return [Extracted(paras, title=meta("title"), author=meta("creator"), date=meta("date"))]


def read_pdf(raw: bytes, opts: ReadOptions) -> list[Extracted]:
    """Text layer of a PDF (pypdf), with running headers/footers, page numbers and hyphenation fixed.

    Lines repeated at the top or bottom of many pages (digits ignored) are running headers or
    footers and are removed, as are lines that are only a page number. A word hyphenated at a
    line end is joined. Paragraph ends are found where a line ends a sentence well short of the
    page's usual line width (PDF text has no paragraph marks).

    Raises:
        ReadError: encrypted with a password, or no text layer (a scan: run OCR first).
    """
    import logging

    import pypdf

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its repair notices are not for writers
    reader = pypdf.PdfReader(io.BytesIO(raw))
    if reader.is_encrypted and not reader.decrypt(""):
        raise ReadError("the PDF is password-protected")
    pages = []
    for page in reader.pages:
        pages.append((page.extract_text() or "").replace("\r", ""))
    if sum(count_words(p) for p in pages) < 5 * max(1, len(pages)) and sum(len(p.strip()) for p in pages) < 200:
        raise ReadError("the PDF has no text layer (a scanned image?); run OCR first, e.g. with ocrmypdf")
    page_lines = [[ln.strip() for ln in p.split("\n") if ln.strip()] for p in pages]
    removed = 0
    shape = lambda s: re.sub(r"\d+", "#", s.lower())  # noqa: E731 - "Page 3 of 9" and "Page 4 of 9" look alike
    edges: Counter = Counter()
    for lines in page_lines:
        for ln in set(lines[:2] + lines[-2:]):
            edges[shape(ln)] += 1
    running = {s for s, n in edges.items() if len(page_lines) >= 2 and n >= max(2, math.ceil(0.3 * len(page_lines)))}
    page_number = re.compile(r"(?:page\s*)?[\divxlc]+(?:\s*(?:of|/)\s*\d+)?|[-–—]\s*\d+\s*[-–—]", re.IGNORECASE)
    cleaned = []
    for lines in page_lines:
        keep = []
        for i, ln in enumerate(lines):
            edge = i < 2 or i >= len(lines) - 2
            if edge and (shape(ln) in running or page_number.fullmatch(ln)):
                removed += count_words(ln)
                continue
            keep.append(ln)
        cleaned.append(keep)
    page_lines = cleaned
    lines = [ln for p in page_lines for ln in p]
    lines = [ln for ln in strip_gutenberg("\n".join(lines)).split("\n") if ln.strip()]
    if not lines:
        raise ReadError("the PDF has no text layer (a scanned image?); run OCR first, e.g. with ocrmypdf")
    width = statistics.median(len(ln) for ln in lines)
    paras, cur = [], ""
    for ln in lines:
        if cur.endswith("-") and len(cur) > 1 and cur[-2].isalpha() and ln[:1].islower():
            cur = cur[:-1] + ln
        else:
            cur = f"{cur} {ln}" if cur else ln
        if len(ln) < 0.8 * width and re.search(r"[.!?:\"”’)]$", ln):
            paras.append(cur)
            cur = ""
    if cur:
        paras.append(cur)
    info = reader.metadata or {}
    title = info.get("/Title") if isinstance(info, dict) or hasattr(info, "get") else None
    return [Extracted(clean_paragraphs(paras), title=str(title) if title else None, removed_words=removed)]


# --------------------------------------------------------------------------------------------
# E-mail

_QUOTE_INTRO = re.compile(
    r"^(?:On .{4,200}(?:wrote|écrit|schrieb)\s*:?\s*$"
    r"|-{2,}\s*Original Message\s*-{2,}"
    r"|-{5,}\s*Forwarded message\s*-{5,}"
    r"|Begin forwarded message:"
    r"|From: .+\s*$(?=\n(?:Sent|Date|To|Subject):))",
    re.IGNORECASE | re.MULTILINE,
)
_SIGNOFF = re.compile(
    r"^(?:-- ?$|__+\s*$|Sent from my \w+|Get Outlook for|Sent from (?:Mail|Yahoo|Outlook))", re.IGNORECASE | re.MULTILINE
)


def clean_email_body(body: str) -> tuple[str, int]:
    """The writer's own words in an e-mail body: quoted replies, forwards and signatures removed.

    Removes ``>`` quoted lines, everything from an "On … wrote:" line, an
    "-----Original Message-----" or forwarded-message block onwards, and a signature from the
    standard ``-- `` delimiter (RFC 3676 §4.3) or a "Sent from my …" line onwards.

    Returns:
        (cleaned body, words removed).
    """
    before = count_words(body)
    body = body.replace("\r\n", "\n")
    m = _QUOTE_INTRO.search(body)
    if m:
        body = body[: m.start()]
    m = _SIGNOFF.search(body)
    if m:
        body = body[: m.start()]
    body = "\n".join(line for line in body.split("\n") if not line.lstrip().startswith(">"))
    return body, before - count_words(body)


def _message_text(msg: email.message.EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError, AssertionError):
        payload = part.get_payload(decode=True) or b""
        content = payload.decode("utf-8", errors="replace")
    if part.get_content_subtype() == "html":
        paras = html_paragraphs(content)
        return "\n\n".join(paras)
    return content


def _sender(msg: email.message.EmailMessage) -> tuple[str, str]:
    addrs = getaddresses([str(msg.get("From", ""))])
    name, addr = addrs[0] if addrs else ("", "")
    return name.strip(), addr.strip().lower()


def _is_writer(name: str, addr: str, authors: tuple[str, ...]) -> bool:
    return any(a == addr or (name and a == name.lower()) for a in authors)


def read_messages(raws: list[bytes], opts: ReadOptions) -> list[Extracted]:
    """E-mail messages (RFC 5322 bytes) to documents, one per message the writer sent.

    With ``opts.authors`` set, only messages whose From address or display name matches are
    kept; without it, every message is returned with ``author`` set to its From address, and
    :func:`mimetic.corpus.ingest.ingest` keeps the most frequent sender across the corpus.
    """
    docs: list[Extracted] = []
    others = broken = 0
    for i, raw in enumerate(raws):
        try:
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            name, addr = _sender(msg)
            if opts.authors and not _is_writer(name, addr, opts.authors):
                others += 1
                continue
            body, removed = clean_email_body(_message_text(msg))
        except Exception:  # noqa: BLE001 - e.g. IndexError from the stdlib on "From: Ann <": skip one message, not the mailbox
            broken += 1
            continue
        date = None
        if msg.get("Date"):
            try:
                date = parsedate_to_datetime(str(msg["Date"])).isoformat()
            except (TypeError, ValueError):
                date = None
        subject = str(msg.get("Subject", "")).strip() or None
        paras = paragraphs(repair(body), opts.join_wrapped_lines)
        docs.append(
            Extracted(paras, part=f"message {i + 1}", title=subject, date=date, author=addr or name or None, removed_words=removed)
        )
    if docs and others:
        docs[0].notes.append(f"{others} messages by other senders skipped")
    if docs and broken:
        docs[0].notes.append(f"{broken} malformed messages skipped")
    if not docs and broken:
        raise ReadError(f"{broken} malformed e-mail message(s), none readable")
    return docs


def split_mbox(raw: bytes) -> list[bytes]:
    """Split an mbox file (mboxo/mboxrd) into raw messages; ``>From`` escapes are undone."""
    parts = re.split(rb"(?:^|\n)From [^\n]*\n", raw)
    out = []
    for part in parts:
        if part.strip():
            out.append(re.sub(rb"(?m)^>(>*From )", rb"\1", part))
    return out


def read_eml(raw: bytes, opts: ReadOptions) -> list[Extracted]:
    """One e-mail message (.eml); see :func:`read_messages`."""
    if not re.search(rb"^[A-Za-z-]+:", raw[:2000], re.MULTILINE):
        raise ReadError("not an e-mail message (no headers)")
    return read_messages([raw], opts)


def read_mbox(raw: bytes, opts: ReadOptions) -> list[Extracted]:
    """Every message the writer sent in an mbox mailbox; see :func:`read_messages`."""
    if not raw.startswith(b"From "):
        raise ReadError("not an mbox mailbox (it must start with a 'From ' line)")
    return read_messages(split_mbox(raw), opts)


# --------------------------------------------------------------------------------------------
# Chat exports

_WRITER_ROLES = {"user", "human", "me"}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        if "parts" in content:
            return _text_of(content["parts"])
        return str(content.get("text") or "")
    if isinstance(content, list):
        return "\n\n".join(_text_of(c) for c in content if isinstance(c, (str, dict, list)))
    return ""


def _chatgpt_turns(conv: dict) -> list[tuple[str, str]]:
    """The messages of one ChatGPT ``conversations.json`` conversation, oldest first."""
    mapping = conv.get("mapping") or {}
    nodes = []
    for node in mapping.values():
        msg = (node or {}).get("message") or {}
        role = ((msg.get("author") or {}).get("role")) or ""
        text = _text_of(msg.get("content") or {})
        if text.strip():
            nodes.append((msg.get("create_time") or 0, role, text))
    nodes.sort(key=lambda n: n[0])
    return [(role, text) for _, role, text in nodes]


def _generic_turn(obj: Any) -> tuple[str, str] | None:
    if not isinstance(obj, dict):
        return None
    who = obj.get("role") or obj.get("author") or obj.get("sender") or obj.get("from") or obj.get("name")
    if isinstance(who, dict):
        who = who.get("role") or who.get("name")
    text = obj.get("content", obj.get("text", obj.get("message")))
    if who is None or text is None:
        return None
    return str(who), _text_of(text)


def read_chat(raw: bytes, opts: ReadOptions) -> list[Extracted]:
    """The writer's own turns from a chat export (JSON or JSON Lines), one document per conversation.

    Layouts understood: ChatGPT's ``conversations.json`` (a list of conversations with a
    ``mapping`` of messages; the writer is the ``user`` role); a list of turns, or one turn per
    JSON line, with ``{"role", "content"}`` (writer = ``user``) or ``{"author", "text"}``
    (writer = ``opts.authors``, else the most frequent author); or ``{"messages": [...]}``
    objects holding such lists.

    Raises:
        ReadError: not JSON, or no layout with turns found.
    """
    text = decode_bytes(raw).text  # JSON is UTF-8 (or a marked UTF-16/32)
    try:
        data = json.loads(text)
        objs = [data]
    except json.JSONDecodeError:
        objs = []
        for n, line in enumerate(text.splitlines()):
            if line.strip():
                try:
                    objs.append(json.loads(line))
                except json.JSONDecodeError:
                    raise ReadError(f"not valid JSON (line {n + 1})") from None
        objs = [objs]
    data = objs[0]
    conversations: list[tuple[str, list[tuple[str, str]]]] = []
    if isinstance(data, dict) and "messages" in data:
        data = [data]
    if isinstance(data, list) and data and all(isinstance(c, dict) and "mapping" in c for c in data):
        conversations = [(str(c.get("title") or f"conversation {i + 1}"), _chatgpt_turns(c)) for i, c in enumerate(data)]
    elif isinstance(data, list) and data and all(isinstance(c, dict) and isinstance(c.get("messages"), list) for c in data):
        for i, c in enumerate(data):
            turns = [t for t in map(_generic_turn, c["messages"]) if t]
            conversations.append((str(c.get("title") or f"conversation {i + 1}"), turns))
    elif isinstance(data, list):
        turns = [t for t in map(_generic_turn, data) if t]
        if turns:
            conversations = [("conversation 1", turns)]
    if not any(turns for _, turns in conversations):
        raise ReadError("JSON without chat turns (expected role/content or author/text fields)")
    speakers = Counter(who.lower() for _, turns in conversations for who, _ in turns)
    if opts.authors:
        writer = set(opts.authors)
    elif speakers.keys() & _WRITER_ROLES:
        writer = speakers.keys() & _WRITER_ROLES
    else:
        writer = {speakers.most_common(1)[0][0]}
    docs = []
    for title, turns in conversations:
        mine = [t for who, t in turns if who.lower() in writer]
        others = sum(count_words(t) for who, t in turns if who.lower() not in writer)
        paras = [p for t in mine for p in paragraphs(repair(t), opts.join_wrapped_lines)]
        if paras:
            docs.append(Extracted(paras, part=title, title=title, author=", ".join(sorted(writer)), removed_words=others))
    if not docs:
        raise ReadError(f"no turns by the writer ({', '.join(sorted(writer))}) in this chat export")
    return docs


# --------------------------------------------------------------------------------------------
# Dispatch


def read_text(raw: bytes, opts: ReadOptions) -> list[Extracted]:
    """Plain text in any encoding; Project Gutenberg boilerplate removed."""
    text, enc, doubt = decode_bytes(raw, opts.encoding)
    return [Extracted(paragraphs(strip_gutenberg(text), opts.join_wrapped_lines), encoding=enc, notes=[doubt] if doubt else [])]


def read_markdown(raw: bytes, opts: ReadOptions) -> list[Extracted]:
    """Markdown or Gemini text: front matter as metadata, syntax removed (see :mod:`mimetic.text.markdown`)."""
    text, enc, doubt = decode_bytes(raw, opts.encoding)
    meta, text = split_front_matter(strip_gutenberg(text))
    tags = meta.get("tags") or []
    date = meta.get("date")
    return [
        Extracted(
            paragraphs(clean_markdown(text, opts.remove_blockquotes), opts.join_wrapped_lines),
            title=str(meta["title"]) if meta.get("title") else None,
            date=date.isoformat() if hasattr(date, "isoformat") else (str(date) if date else None),
            tags=[str(t) for t in (tags if isinstance(tags, list) else [tags])],
            encoding=enc,
            notes=[doubt] if doubt else [],
        )
    ]


READERS: dict[str, Callable[[bytes, ReadOptions], list[Extracted]]] = {
    "text": read_text,
    "markdown": read_markdown,
    "gemini": read_markdown,
    "html": read_html,
    "docx": read_docx,
    "odt": read_odt,
    "rtf": read_rtf,
    "epub": read_epub,
    "pdf": read_pdf,
    "email": read_eml,
    "mbox": read_mbox,
    "chat": read_chat,
}

_CORRUPT = {
    "docx": "not a valid .docx file (damaged or not really Word)",
    "odt": "not a valid .odt file (damaged or not really OpenDocument)",
    "epub": "not a valid EPUB (damaged archive or missing parts)",
    "pdf": "the PDF is damaged and cannot be read",
    "rtf": "the RTF file is damaged",
    "html": "the HTML page could not be parsed",
}


def read_bytes(name: str, raw: bytes, opts: ReadOptions, _depth: int = 0) -> list[tuple[str, str, list[Extracted]] | tuple[str, str, ReadError]]:
    """Read one file's bytes with the reader for its extension; never raises for bad input.

    Zip archives are opened in memory and each member is read in turn (nested archives up to
    two levels; members over ``opts.max_bytes`` uncompressed are refused, a guard against
    zip bombs).

    Args:
        name: the file name (or ``archive.zip!member`` path); its extension picks the reader.
        raw: the file's bytes.
        opts: reader options.

    Returns:
        One ``(name, format, documents or ReadError)`` triple per file read — one for a plain
        file, one per member for an archive.
    """
    fmt = format_of(name)
    if fmt is None:
        ext = name[name.rfind(".") :].lower() if "." in name.rsplit("/", 1)[-1] else ""
        return [(name, ext.lstrip(".") or "unknown", Unsupported(UNSUPPORTED_HINTS.get(ext, f"unsupported file type {ext or '(no extension)'}")))]
    if not raw:
        return [(name, fmt, ReadError("empty file"))]
    if fmt == "zip":
        return _read_zip(name, raw, opts, _depth)
    try:
        return [(name, fmt, READERS[fmt](raw, opts))]
    except ReadError as e:
        return [(name, fmt, e)]
    except RecursionError:
        return [(name, fmt, ReadError(f"{fmt} file nested too deeply to read"))]
    except MemoryError:
        return [(name, fmt, ReadError("not enough memory to read this file"))]
    except Exception as e:  # noqa: BLE001 - any library failure on bad input becomes a reason, never a crash
        reason = _CORRUPT.get(fmt, f"could not read this {fmt} file")
        detail = str(e).strip().split("\n")[0][:120]
        return [(name, fmt, ReadError(f"{reason} ({type(e).__name__}{': ' + detail if detail else ''})"))]


def _read_zip(name: str, raw: bytes, opts: ReadOptions, depth: int) -> list:
    if depth >= 2:
        return [(name, "zip", ReadError("zip archive nested more than two levels deep"))]
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
        infos = [i for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        return [(name, "zip", ReadError(f"not a valid zip archive ({str(e)[:80]})"))]
    out: list = []
    if len(infos) > opts.max_zip_members:
        return [(name, "zip", ReadError(f"zip archive with {len(infos)} files (more than {opts.max_zip_members})"))]
    for info in infos:
        member = info.filename
        base = member.rsplit("/", 1)[-1]
        if member.startswith("__MACOSX/") or base.startswith(".") or not base:
            continue
        path = f"{name}!{member}"
        if format_of(base) is None:
            out.extend(read_bytes(path, b"", opts, depth + 1))  # the unsupported-type reason
            continue
        if info.file_size > opts.max_bytes:
            out.append((path, format_of(base), ReadError(f"larger than {opts.max_bytes / 2**20:g} MiB uncompressed (ingest.max_file_mb)")))
            continue
        try:
            with zf.open(info) as f:
                data = f.read(opts.max_bytes + 1)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError) as e:
            out.append((path, format_of(base), ReadError(f"damaged member of the zip archive ({type(e).__name__})")))
            continue
        except Exception as e:  # noqa: BLE001 - e.g. zlib.error on a truncated member
            out.append((path, format_of(base), ReadError(f"damaged member of the zip archive ({type(e).__name__})")))
            continue
        if len(data) > opts.max_bytes:
            out.append((path, format_of(base), ReadError(f"larger than {opts.max_bytes / 2**20:g} MiB uncompressed (ingest.max_file_mb)")))
            continue
        out.extend(read_bytes(path, data, opts, depth + 1))
    if not out:
        return [(name, "zip", ReadError("zip archive with no files"))]
    return out
