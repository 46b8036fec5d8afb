"""Stage 1 — ingest: read a writer's files, clean them, and keep the provenance of each.

Readers by format (this version: plain text and Markdown):

* ``.txt``/``.text``: encoding detected (BOM, then strict UTF-8, then charset-normalizer),
  mojibake repaired by ftfy, Project Gutenberg header/footer/licence removed.
* ``.md``/``.markdown``/``.gmi``: YAML/TOML front matter read as metadata (title, date, tags)
  and removed; fenced and indented code, tables, HTML, images, footnote markers, link targets
  and bare URLs removed, link text kept; emphasis and heading marks dropped.

Hard-wrapped lines inside a paragraph are joined. Each kept document is written to
``corpus/docs/<doc-id>.txt`` (paragraphs separated by a blank line), and
``corpus/manifest.json`` records, per source file: path, sha256, bytes, format, words kept,
title, date and, for a skipped file, the reason. Originals are opened read-only.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .config import IngestConfig
from .errors import MimeticError
from .workspace import Workspace, atomic_dir, atomic_write_json

TEXT_EXTENSIONS = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown", ".gmi": "markdown"}
LATER_FORMATS = {".docx", ".doc", ".odt", ".rtf", ".epub", ".pdf", ".html", ".htm", ".eml", ".mbox", ".json", ".jsonl", ".zip"}
_WORD = re.compile(r"\b[\w'’-]+\b")


@dataclass
class SourceFile:
    """Provenance of one input file (kept or skipped)."""

    path: str
    format: str
    bytes: int
    sha256: str = ""
    words: int = 0
    doc_id: str | None = None
    title: str | None = None
    date: str | None = None
    tags: list[str] = field(default_factory=list)
    encoding: str | None = None
    skipped: str | None = None


@dataclass
class IngestResult:
    """What ``ingest`` did: kept and skipped files, words, and where the corpus is."""

    files: list[SourceFile]
    corpus_dir: Path

    @property
    def kept(self) -> list[SourceFile]:
        return [f for f in self.files if not f.skipped]

    @property
    def skipped(self) -> list[SourceFile]:
        return [f for f in self.files if f.skipped]

    @property
    def words(self) -> int:
        return sum(f.words for f in self.kept)


def count_words(text: str) -> int:
    """Number of words (runs of letters, digits, apostrophes and inner hyphens)."""
    return len(_WORD.findall(text))


# --------------------------------------------------------------------------------------------
# Decoding


def decode_bytes(raw: bytes) -> tuple[str, str]:
    """Decode file bytes to text and name the encoding used.

    Order: a byte-order mark (UTF-8/UTF-16/UTF-32), strict UTF-8, then charset-normalizer's
    best guess (it handles Latin-1, CP1252, UTF-16 without BOM and others). Text is repaired
    with ftfy (mojibake, broken HTML entities are left alone) and newlines normalised to LF.

    Raises:
        ValueError: the bytes look binary (NUL bytes without a UTF-16/32 layout) or no
            encoding fits.
    """
    import codecs

    import ftfy

    boms = [
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ]
    text = encoding = None
    for bom, enc in boms:
        if raw.startswith(bom):
            text, encoding = raw.decode(enc, errors="replace"), enc
            break
    if text is None:
        try:
            text, encoding = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            from charset_normalizer import from_bytes

            best = from_bytes(raw).best()
            if best is None:
                raise ValueError("not text in any encoding mimetic recognises") from None
            text, encoding = str(best), best.encoding
    if "\x00" in text:
        raise ValueError("binary file (contains NUL bytes)")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = ftfy.fix_text(text, uncurl_quotes=False, fix_line_breaks=True, unescape_html=False)
    return unicodedata.normalize("NFC", text), encoding


# --------------------------------------------------------------------------------------------
# Project Gutenberg

_PG_START = re.compile(
    r"^\s*\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG E-?(?:BOOK|TEXT)[^\n]*$"
    r"|^\s*\*END\*THE SMALL PRINT![^\n]*$",
    re.IGNORECASE | re.MULTILINE,
)
_PG_END = re.compile(
    r"^\s*\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG E-?(?:BOOK|TEXT)[^\n]*$"
    r"|^\s*End of (?:the |this )?Project Gutenberg'?s? [^\n]*$",
    re.IGNORECASE | re.MULTILINE,
)
_PG_PRODUCED = re.compile(r"^\s*(?:Produced|Transcribed|Prepared) by [^\n]*(?:\n[^\n]+)*\n", re.IGNORECASE)


def strip_gutenberg(text: str) -> str:
    """Remove a Project Gutenberg header (up to ``*** START OF …``), footer and licence.

    Text without the markers is returned unchanged. After the start marker, a
    "Produced by …" credit paragraph is removed too.
    """
    start = _PG_START.search(text)
    if start:
        text = text[start.end() :]
        text = _PG_PRODUCED.sub("", text.lstrip("\n"), count=1)
    end = _PG_END.search(text)
    if end and (start or "gutenberg" in text[end.start() :].lower()):
        text = text[: end.start()]
    return text


# --------------------------------------------------------------------------------------------
# Markdown

_FRONT_YAML = re.compile(r"\A---[ \t]*\n(.*?\n)?(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_FRONT_TOML = re.compile(r"\A\+\+\+[ \t]*\n(.*?\n)?\+\+\+[ \t]*(?:\n|\Z)", re.DOTALL)
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})[^\n]*\n.*?(?:^ {0,3}\1[`~]*[ \t]*$|\Z)", re.DOTALL | re.MULTILINE)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)|!\[[^\]]*\]\[[^\]]*\]")
_LINK_INLINE = re.compile(r"\[([^\]]*)\]\((?:[^()\s]|\([^)]*\))*(?:\s+\"[^\"]*\")?\)")
_LINK_REF = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")
_LINK_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*\S+.*$", re.MULTILINE)
_FOOTNOTE_REF = re.compile(r"\[\^[^\]]+\]")
_FOOTNOTE_DEF = re.compile(r"^\[\^[^\]]+\]:\s*", re.MULTILINE)
_AUTOLINK = re.compile(r"<(?:https?|ftp|mailto|gemini|gopher):[^>\s]*>", re.IGNORECASE)
_URL = re.compile(r"\b(?:https?|ftp|gemini|gopher)://[^\s<>()\]\"']+", re.IGNORECASE)
_GMI_LINK = re.compile(r"^=>\s*\S+\s*(.*)$", re.MULTILINE)
_HTML_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_LIQUID = re.compile(r"\{%.*?%\}|\{\{.*?\}\}", re.DOTALL)
_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)
_SETEXT = re.compile(r"^ {0,3}(?:=+|-+)\s*$", re.MULTILINE)
_HR = re.compile(r"^ {0,3}(?:[-*_]\s*){3,}$", re.MULTILINE)
_LIST = re.compile(r"^\s{0,6}(?:[-*+]|\d{1,3}[.)])\s+", re.MULTILINE)
_EMPH = re.compile(r"(\*{1,3}|_{1,3})(?=\S)(.+?)(?<=\S)\1")
_STRIKE = re.compile(r"~~(.+?)~~")
_CODE_SPAN = re.compile(r"`+([^`\n]*)`+")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$|^\s*\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)+\|?\s*$", re.MULTILINE)


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """Split YAML (``---``) or TOML (``+++``) front matter from a Markdown document.

    Returns the parsed metadata (``{}`` if none or unparsable) and the body.
    """
    import tomllib

    import yaml

    m = _FRONT_YAML.match(text)
    if m:
        try:
            meta = yaml.safe_load(m.group(1) or "") or {}
        except (yaml.YAMLError, ValueError, TypeError):  # e.g. "date: 2020-02-31"
            meta = {}
        return (meta if isinstance(meta, dict) else {}), text[m.end() :]
    m = _FRONT_TOML.match(text)
    if m:
        try:
            meta = tomllib.loads(m.group(1) or "")
        except tomllib.TOMLDecodeError:
            meta = {}
        return meta, text[m.end() :]
    return {}, text


def _drop_indented_code(text: str) -> str:
    """Remove indented code blocks: lines indented 4+ spaces (or a tab) after a blank line."""
    out, in_code, prev_blank = [], False, True
    for line in text.split("\n"):
        indented = line.startswith(("    ", "\t")) and line.strip()
        listy = _LIST.match(line.lstrip())
        if indented and (in_code or prev_blank) and not listy:
            in_code = True
            continue
        if in_code and not line.strip():
            prev_blank = True
            continue
        in_code = False
        out.append(line)
        prev_blank = not line.strip()
    return "\n".join(out)


_HTML_BLOCK = re.compile(
    r"\s*<(?:div|figure|table|script|style|iframe|video|audio|pre|center|img|details|svg|form|object|embed|noscript)\b",
    re.IGNORECASE,
)


def _drop_html_blocks(text: str) -> str:
    """Drop paragraphs that open with a block-level HTML element (figures, embeds, tables)."""
    return "\n\n".join(b for b in re.split(r"\n\s*\n", text) if not _HTML_BLOCK.match(b))


def clean_markdown(text: str, remove_blockquotes: bool = True) -> str:
    """Markdown (or Gemini text) to plain prose, keeping the writer's words only.

    Removes code blocks (fenced and indented), tables, HTML blocks and tags, Liquid/Jinja
    tags, images, link targets (link text is kept), link reference definitions, footnote
    markers, bare URLs, heading/list/emphasis marks, horizontal rules and, optionally,
    block quotations. HTML entities are decoded. Front matter must be split off first.
    """
    text = _HTML_COMMENT.sub("", text)
    text = _FENCE.sub("", text)
    text = _drop_indented_code(text)
    text = _LIQUID.sub("", text)
    text = _drop_html_blocks(text)
    text = _TABLE_ROW.sub("", text)
    if remove_blockquotes:
        text = re.sub(r"^ {0,3}>.*$", "", text, flags=re.MULTILINE)
    else:
        text = re.sub(r"^ {0,3}>\s?", "", text, flags=re.MULTILINE)
    text = _GMI_LINK.sub(lambda m: m.group(1), text)
    text = _AUTOLINK.sub("", text)
    text = _HTML_TAG.sub("", text)  # before links: inline HTML can sit inside link syntax
    text = _IMAGE.sub("", text)
    text = _LINK_INLINE.sub(lambda m: m.group(1), text)
    text = _LINK_REF.sub(lambda m: m.group(1), text)
    text = _FOOTNOTE_DEF.sub("", text)  # before link definitions, which look alike
    text = _LINK_DEF.sub("", text)
    text = _FOOTNOTE_REF.sub("", text)
    text = _URL.sub("", text)
    text = _HEADING.sub(lambda m: "\n" + m.group(1) + "\n", text)
    text = _HR.sub("", text)
    text = _SETEXT.sub("", text)
    text = _LIST.sub("\n", text)
    text = _STRIKE.sub(r"\1", text)
    text = _CODE_SPAN.sub(r"\1", text)
    for _ in range(2):
        text = _EMPH.sub(r"\2", text)
    text = html.unescape(text)
    return text


# --------------------------------------------------------------------------------------------
# Paragraphs


def paragraphs(text: str, join_wrapped_lines: bool = True) -> list[str]:
    """Split text into paragraphs (blank-line separated), joining hard-wrapped lines.

    A file with no blank lines at all is read as one paragraph per line (notes, or books
    stored one paragraph per line). Whitespace inside a paragraph is collapsed.
    """
    text = text.replace("\u00a0", " ").replace("\t", " ")
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


# --------------------------------------------------------------------------------------------
# The stage


def _discover(paths: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for p in paths:
        p = Path(p).expanduser()
        if not p.exists():
            raise MimeticError(f"{p} does not exist.", "Check the path to your writing folder.")
        if p.is_file():
            found.append(p)
            continue
        for root, dirs, files in os.walk(p, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found.extend(Path(root) / f for f in sorted(files) if not f.startswith("."))
    return found


def _date_str(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def read_document(path: Path, config: IngestConfig) -> tuple[SourceFile, list[str]]:
    """Read and clean one file; returns its provenance record and its paragraphs.

    A file that cannot be used gets ``skipped`` set to a reason and no paragraphs; this
    function does not raise for bad input.
    """
    ext = path.suffix.lower()
    fmt = TEXT_EXTENSIONS.get(ext, ext.lstrip(".") or "unknown")
    try:
        size = path.stat().st_size
    except OSError as e:
        return SourceFile(str(path), fmt, 0, skipped=f"cannot read: {e.strerror}"), []
    rec = SourceFile(str(path), fmt, size)
    if ext not in TEXT_EXTENSIONS:
        rec.skipped = (
            f"{ext} files are not read by this version yet" if ext in LATER_FORMATS else f"unsupported file type {ext or '(none)'}"
        )
        return rec, []
    if size == 0:
        rec.skipped = "empty file"
        return rec, []
    if size > config.max_file_mb * 2**20:
        rec.skipped = f"larger than {config.max_file_mb:g} MiB (ingest.max_file_mb)"
        return rec, []
    try:
        with open(path, "rb") as f:  # read-only: originals are never modified
            raw = f.read()
    except OSError as e:
        rec.skipped = f"cannot read: {e.strerror}"
        return rec, []
    rec.sha256 = hashlib.sha256(raw).hexdigest()
    try:
        text, rec.encoding = decode_bytes(raw)
    except ValueError as e:
        rec.skipped = str(e)
        return rec, []
    text = strip_gutenberg(text)
    if fmt == "markdown":
        meta, text = split_front_matter(text)
        rec.title = str(meta["title"]) if meta.get("title") else None
        rec.date = _date_str(meta.get("date"))
        tags = meta.get("tags") or []
        rec.tags = [str(t) for t in (tags if isinstance(tags, list) else [tags])]
        text = clean_markdown(text, remove_blockquotes=config.remove_blockquotes)
    paras = paragraphs(text, config.join_wrapped_lines)
    rec.words = sum(count_words(p) for p in paras)
    if rec.words < max(1, config.min_words):
        rec.skipped = f"only {rec.words} words after cleaning (ingest.min_words is {config.min_words})"
        rec.words = 0
        return rec, []
    if rec.date is None:
        rec.date = time.strftime("%Y-%m-%d", time.localtime(path.stat().st_mtime))
    return rec, paras


def _doc_id(path: Path, sha: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", path.stem).strip("-").lower()[:60] or "doc"
    return f"{slug}-{sha[:8]}"


def ingest(paths: Iterable[Path | str], workspace: Workspace, config: IngestConfig | None = None) -> IngestResult:
    """Read every supported file under ``paths`` into ``workspace.corpus_dir``.

    The whole corpus directory is rebuilt and swapped in atomically, and ``config`` is saved
    in the workspace's ``mimetic.toml``. Exact duplicates (same cleaned text) are skipped
    with the name of the file they repeat.

    Args:
        paths: files or folders of writing; folders are read recursively (hidden files and
            symlinked folders are not followed).
        workspace: the voice's workspace.
        config: ingest settings (defaults from :class:`IngestConfig`).

    Returns:
        IngestResult with one :class:`SourceFile` per file seen.

    Raises:
        MimeticError: a path does not exist, or no usable writing was found.
    """
    config = config or IngestConfig()
    files = _discover([Path(p) for p in paths])
    if not files:
        raise MimeticError(
            f"No files found in {', '.join(str(p) for p in paths)}.",
            "Point mimetic at a folder that holds your writing as .txt or .md files.",
        )
    records: list[SourceFile] = []
    seen: dict[str, str] = {}
    with atomic_dir(workspace.corpus_dir) as tmp:
        (tmp / "docs").mkdir()
        for path in files:
            rec, paras = read_document(path, config)
            records.append(rec)
            if rec.skipped:
                continue
            body = "\n\n".join(paras) + "\n"
            key = hashlib.sha256(re.sub(r"\W+", " ", body.lower()).encode()).hexdigest()
            if key in seen:
                rec.skipped, rec.words = f"exact duplicate of {seen[key]}", 0
                continue
            seen[key] = rec.path
            rec.doc_id = _doc_id(path, rec.sha256)
            (tmp / "docs" / f"{rec.doc_id}.txt").write_text(body, encoding="utf-8")
        kept = [r for r in records if not r.skipped]
        if not kept:
            reasons = sorted({r.skipped for r in records if r.skipped})[:5]
            raise MimeticError(
                f"None of the {len(records)} files could be used ({'; '.join(reasons)}).",
                "mimetic reads .txt and .md files in this version; check the folder holds your writing.",
            )
        atomic_write_json(
            tmp / "manifest.json",
            {
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "sources": [str(Path(p).expanduser().resolve()) for p in paths],
                "config": config.__dict__,
                "documents": len(kept),
                "words": sum(r.words for r in kept),
                "files": [r.__dict__ for r in records],
            },
        )
    vc = workspace.load_config()
    vc.ingest = config
    workspace.save_config(vc)
    return IngestResult(records, workspace.corpus_dir)


def load_corpus(workspace: Workspace) -> list[dict[str, Any]]:
    """The kept documents of a workspace: dicts with ``doc_id``, ``title``, ``paragraphs``, ….

    Raises:
        MimeticError: the workspace has not been ingested.
    """
    manifest = workspace.read_manifest()
    docs = []
    for rec in manifest["files"]:
        if rec.get("skipped") or not rec.get("doc_id"):
            continue
        text = (workspace.corpus_dir / "docs" / f"{rec['doc_id']}.txt").read_text(encoding="utf-8")
        docs.append({**rec, "paragraphs": [p.strip() for p in text.split("\n\n") if p.strip()]})
    return docs
