"""Format readers on real files built with the libraries themselves, plus corrupt versions and fuzzing."""

import io
import json
import mailbox
import zipfile
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mimetic.text.readers import ReadError, ReadOptions, clean_email_body, read_bytes

OPTS = ReadOptions()
PARAS = [
    "The harbour was quiet that morning, and the ferry waited beside the wall as if it had forgotten its purpose.",
    "I wrote to my sister about the orchard, though she never answered letters about trees.",
]


def docs(name, raw, opts=OPTS):
    [(n, fmt, value)] = read_bytes(name, raw, opts)
    if isinstance(value, ReadError):
        raise value
    return value


# --------------------------------------------------------------------------------------------
# Fixtures, built with each format's own library


def make_docx() -> bytes:
    import docx

    d = docx.Document()
    d.core_properties.title = "Harbour notes"
    d.core_properties.author = "A. Writer"
    d.add_heading("Harbour notes", level=1)
    for p in PARAS:
        d.add_paragraph(p)
    b = io.BytesIO()
    d.save(b)
    return b.getvalue()


def make_odt() -> bytes:
    from odf import text
    from odf.opendocument import OpenDocumentText

    d = OpenDocumentText()
    d.text.addElement(text.H(outlinelevel=1, text="Harbour notes"))
    lst = text.List()
    item = text.ListItem()
    item.addElement(text.P(text=PARAS[0]))
    lst.addElement(item)
    d.text.addElement(lst)
    d.text.addElement(text.P(text=PARAS[1]))
    b = io.BytesIO()
    d.write(b)
    return b.getvalue()


def make_epub(tmp_path) -> bytes:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("mimetic-test")
    book.set_title("Harbour notes")
    book.set_language("en")
    book.add_author("A. Writer")
    chapters = []
    for i, p in enumerate(PARAS):
        c = epub.EpubHtml(title=f"Chapter {i + 1}", file_name=f"chap_{i + 1}.xhtml", lang="en")
        c.content = f"<h1>Chapter {i + 1}</h1><p>{p}</p><blockquote><p>Someone else's epigraph.</p></blockquote>"
        book.add_item(c)
        chapters.append(c)
    book.toc = chapters
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *chapters]
    path = tmp_path / "book.epub"
    epub.write_epub(str(path), book)
    return path.read_bytes()


def make_pdf(pages: int = 3) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    b = io.BytesIO()
    with PdfPages(b) as pdf:
        for page in range(pages):
            fig = plt.figure(figsize=(8.5, 11))
            fig.text(0.1, 0.96, "HARBOUR NOTES — A. WRITER")  # running header
            day = ["Monday", "Tuesday", "Wednesday", "Thursday"][page]
            lines = [
                f"The harbour was quiet on {day} morning, and the ferry waited beside the",
                "wall as if it had forgotten its purpose; the gulls were inde-",
                "pendent of all of it and wheeled above the chimneys of the town.",
                "Nobody spoke.",
                "I wrote to my sister about the orchard, though she never answered",
                "letters about trees, and I knew she would not answer this one either.",
                f"She did not, that {day}.",
            ]
            for i, line in enumerate(lines):
                fig.text(0.1, 0.9 - i * 0.03, line)
            fig.text(0.5, 0.04, str(page + 1))  # page number
            pdf.savefig(fig)
            plt.close(fig)
    return b.getvalue()


def make_image_pdf() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    plt.imshow([[0, 1], [1, 0]])
    plt.axis("off")
    b = io.BytesIO()
    fig.savefig(b, format="pdf")
    plt.close(fig)
    return b.getvalue()


def message(sender: str, body: str, subject: str = "Hello", date: str = "Mon, 02 Mar 2020 10:00:00 +0000") -> EmailMessage:
    m = EmailMessage()
    m["From"] = sender
    m["To"] = "friend@example.org"
    m["Subject"] = subject
    m["Date"] = date
    m.set_content(body)
    return m


WRITER = "Ann Writer <ann@example.com>"
REPLY = (
    f"{PARAS[0]}\n\n{PARAS[1]}\n\nOn Mon, 2 Mar 2020 at 09:00, Bob <bob@example.org> wrote:\n"
    "> Did you see the harbour?\n> It was grey.\n\n-- \nAnn\nhttps://ann.example.com\n"
)


def make_mbox(tmp_path) -> bytes:
    path = tmp_path / "mail.mbox"
    box = mailbox.mbox(str(path))
    box.add(message(WRITER, REPLY))
    box.add(message("Bob <bob@example.org>", "From the harbour: I saw it too.\n\nBob\n"))  # 'From ' inside a body
    box.add(message(WRITER, f"{PARAS[1]}\n\nSent from my iPhone\n", subject="Trees"))
    box.add(message(WRITER, f"Short note.\n\n---------- Forwarded message ---------\nFrom: Carol\n\n{PARAS[0]}"))
    box.flush()
    box.close()
    return path.read_bytes()


def make_zip(tmp_path) -> bytes:
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("essays/harbour.md", "---\ntitle: Harbour\n---\n\n" + "\n\n".join(PARAS))
        z.writestr("essays/notes.docx", make_docx())
        z.writestr("__MACOSX/._harbour.md", b"\x00\x05junk")
        z.writestr("photo.jpg", b"\xff\xd8\xff")
    return b.getvalue()


# --------------------------------------------------------------------------------------------
# Each format read


def test_docx():
    [d] = docs("a.docx", make_docx())
    assert d.paragraphs == ["Harbour notes", *PARAS]
    assert d.title == "Harbour notes" and d.author == "A. Writer" and d.date


def test_odt_reads_lists_and_headings_in_order():
    [d] = docs("a.odt", make_odt())
    assert d.paragraphs == ["Harbour notes", *PARAS]


def test_epub_spine_order_without_navigation_or_quotations(tmp_path):
    [d] = docs("b.epub", make_epub(tmp_path))
    assert d.paragraphs == ["Chapter 1", PARAS[0], "Chapter 2", PARAS[1]]
    assert d.title == "Harbour notes" and d.author == "A. Writer"
    keep_quotes = ReadOptions(remove_blockquotes=False)
    assert "Someone else's epigraph." in docs("b.epub", make_epub(tmp_path), keep_quotes)[0].paragraphs


def test_pdf_headers_page_numbers_hyphens_and_paragraphs():
    [d] = docs("a.pdf", make_pdf())
    text = "\n".join(d.paragraphs)
    assert "HARBOUR NOTES" not in text and not any(p.strip().isdigit() for p in d.paragraphs)
    assert "independent of all of it" in text
    assert d.paragraphs[0].startswith("The harbour was quiet on Monday") and d.paragraphs[0].endswith("Nobody spoke.")
    assert len(d.paragraphs) == 6  # two paragraphs per page
    assert d.removed_words > 0


def test_pdf_without_text_layer_is_reported():
    with pytest.raises(ReadError, match="no text layer"):
        docs("scan.pdf", make_image_pdf())


def test_rtf():
    raw = rb"{\rtf1\ansi\deff0{\fonttbl{\f0 Times;}}\f0\pard " + PARAS[0].encode() + rb"\par\pard Caf\'e9 " + PARAS[1].encode() + rb"\par}"
    [d] = docs("a.rtf", raw)
    assert d.paragraphs == [PARAS[0], "Café " + PARAS[1]]


def test_html_main_text_only():
    page = f"""<html><head><title>Harbour</title></head><body>
    <nav><a href="/">Home</a> | <a href="/about">About me</a> | <a href="/rss">RSS feed</a></nav>
    <article><h1>Harbour</h1><p>{PARAS[0]} {PARAS[1]}</p><p>{PARAS[1]} {PARAS[0]}</p>
    <p>A third paragraph, because main-text extraction wants a little text to work with, and
    writers do write more than two paragraphs on a good day.</p></article>
    <footer>© 2020 All rights reserved. Subscribe to my newsletter.</footer></body></html>"""
    [d] = docs("a.html", page.encode())
    text = "\n".join(d.paragraphs)
    assert PARAS[0] in text and "rights reserved" not in text and "RSS feed" not in text
    assert d.title == "Harbour"


def test_email_only_the_writers_words(tmp_path):
    raw = make_mbox(tmp_path)
    everyone = docs("m.mbox", raw)
    assert len(everyone) == 4 and {d.author for d in everyone} == {"ann@example.com", "bob@example.org"}
    mine = docs("m.mbox", raw, ReadOptions(authors=("ann@example.com",)))
    assert len(mine) == 3
    first = "\n".join(mine[0].paragraphs)
    assert PARAS[0] in first and "Did you see" not in first and "wrote:" not in first
    assert "ann.example.com" not in first and mine[0].removed_words > 0
    assert mine[0].date.startswith("2020-03-02") and mine[0].title == "Hello"
    assert "iPhone" not in "\n".join(mine[1].paragraphs)
    assert mine[2].paragraphs == ["Short note."]
    by_name = docs("m.mbox", raw, ReadOptions(authors=("ann writer",)))
    assert len(by_name) == 3


def test_eml_and_clean_email_body():
    raw = message(WRITER, REPLY).as_bytes()
    [d] = docs("one.eml", raw)
    assert d.paragraphs == PARAS
    body, removed = clean_email_body("Yes.\n\n-----Original Message-----\nFrom: x\nsecret stuff")
    assert body.strip() == "Yes." and removed == 6


def test_chatgpt_export_keeps_user_turns_only():
    conv = {
        "title": "Trees",
        "mapping": {
            "a": {"message": None},
            "b": {"message": {"author": {"role": "user"}, "create_time": 1, "content": {"content_type": "text", "parts": [PARAS[1]]}}},
            "c": {"message": {"author": {"role": "assistant"}, "create_time": 2, "content": {"parts": ["As an AI, I love trees."]}}},
            "d": {"message": {"author": {"role": "user"}, "create_time": 3, "content": {"parts": [PARAS[0]]}}},
        },
    }
    [d] = docs("conversations.json", json.dumps([conv]).encode())
    assert d.paragraphs == [PARAS[1], PARAS[0]] and d.title == "Trees" and d.removed_words == 6


def test_generic_chat_layouts():
    jsonl = "\n".join(json.dumps(t) for t in [{"role": "system", "content": "Be nice."}, {"role": "user", "content": PARAS[0]}, {"role": "assistant", "content": "Indeed."}])
    assert docs("chat.jsonl", jsonl.encode())[0].paragraphs == [PARAS[0]]
    authored = [{"author": "ann", "text": PARAS[0]}, {"author": "bob", "text": "Hi"}, {"author": "ann", "text": PARAS[1]}]
    assert docs("chat.json", json.dumps(authored).encode())[0].paragraphs == PARAS  # most frequent author
    assert docs("chat.json", json.dumps(authored).encode(), ReadOptions(authors=("bob",)))[0].paragraphs == ["Hi"]
    with pytest.raises(ReadError, match="without chat turns"):
        docs("data.json", b'{"temperature": 3}')


def test_zip_read_in_memory_with_member_paths(tmp_path):
    out = read_bytes("writing.zip", make_zip(tmp_path), OPTS)
    by_name = {n: v for n, _, v in out}
    assert set(by_name) == {"writing.zip!essays/harbour.md", "writing.zip!essays/notes.docx", "writing.zip!photo.jpg"}
    assert by_name["writing.zip!essays/harbour.md"][0].paragraphs == PARAS
    assert by_name["writing.zip!essays/notes.docx"][0].paragraphs[1:] == PARAS
    assert isinstance(by_name["writing.zip!photo.jpg"], ReadError) and by_name["writing.zip!photo.jpg"].unsupported


def test_zip_bomb_member_is_refused():
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("big.txt", b"a " * 3_000_000)
    [(name, fmt, value)] = read_bytes("bomb.zip", b.getvalue(), ReadOptions(max_bytes=2**20))
    assert isinstance(value, ReadError) and "larger than" in str(value)


# --------------------------------------------------------------------------------------------
# Corrupt files: a reason, never an exception


@pytest.mark.parametrize("fmt", ["docx", "odt", "epub", "pdf", "zip", "mbox"])
def test_truncated_files_give_reasons(fmt, tmp_path):
    raw = {"docx": make_docx, "odt": make_odt, "pdf": make_pdf}.get(fmt, lambda: None)()
    if raw is None:
        raw = {"epub": make_epub, "zip": make_zip, "mbox": make_mbox}[fmt](tmp_path)
    for cut in (len(raw) // 2, 100, 3):
        out = read_bytes(f"broken.{fmt}", raw[:cut], OPTS)
        assert out, fmt
        for _, _, value in out:
            if isinstance(value, ReadError):
                assert str(value) and "\n" not in str(value)


def test_malformed_message_does_not_lose_the_mailbox(tmp_path):
    # found by fuzzing: the stdlib's header parser raises IndexError on an unclosed "<" in From
    good = make_mbox(tmp_path)
    bad = b"From MAILER-DAEMON Mon Mar  2 10:00:00 2020\nFrom: Ann <\nSubject: x\n\nBroken message.\n"
    out = docs("m.mbox", bad + good)
    assert len(out) == 4 and "1 malformed messages skipped" in out[0].notes
    assert "none readable" in str(read_bytes("m.mbox", bad, OPTS)[0][2])


def test_binary_and_wrong_extension():
    assert "binary" in str(read_bytes("x.txt", bytes(range(256)) * 50, OPTS)[0][2])
    assert "not an RTF" in str(read_bytes("x.rtf", b"hello", OPTS)[0][2])
    assert "not an mbox" in str(read_bytes("x.mbox", b"hello", OPTS)[0][2])
    assert "old Word" in str(read_bytes("x.doc", b"hello", OPTS)[0][2])


_FIXTURES: dict[str, bytes] = {}


def _fixture(fmt: str) -> bytes:
    if fmt not in _FIXTURES:
        import tempfile
        from pathlib import Path

        tmp = Path(tempfile.mkdtemp())
        _FIXTURES[fmt] = {
            "docx": make_docx, "odt": make_odt, "pdf": lambda: make_pdf(1), "epub": lambda: make_epub(tmp),
            "zip": lambda: make_zip(tmp), "mbox": lambda: make_mbox(tmp),
        }[fmt]()
    return _FIXTURES[fmt]


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from(["docx", "odt", "pdf", "epub", "zip", "mbox"]),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=8),
    cut=st.floats(0.05, 1),
)
# regression seeds: inputs on which a library raised (found by fuzzing; kept so they stay handled)
@example(fmt="epub", flips=[(0.10500199121831755, 182)], cut=0.543)  # ebooklib EpubException
@example(fmt="pdf", flips=[(0.4410985279968189, 123), (0.31275717049528706, 24), (0.5632848571404352, 49), (0.5431339662116286, 209), (0.3053128912869192, 29), (0.8632726677646327, 51)], cut=0.456)  # pypdf PdfStreamError
@example(fmt="docx", flips=[], cut=0.086)  # BadZipFile
def test_fuzzed_files_never_raise(fmt, flips, cut):
    raw = bytearray(_fixture(fmt))
    for pos, value in flips:
        raw[int(pos * len(raw))] = value
    raw = bytes(raw[: max(1, int(cut * len(raw)))])
    for name, kind, value in read_bytes(f"fuzz.{fmt}", raw, OPTS):
        assert isinstance(value, (list, ReadError))
