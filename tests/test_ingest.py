import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from conftest import SHARED, make_corpus
from mimetic import IngestConfig, MimeticError, Workspace, ingest
from mimetic.ingest import clean_markdown, decode_bytes, load_corpus, paragraphs, split_front_matter, strip_gutenberg
from mimetic.readers import ReadError

MD = """---
title: "On kettles"
date: 2019-05-04
tags: [home, tea]
---

# On kettles

I like my kettle. It is [a good kettle](https://example.com/kettle "title") and **very** loud.
See <https://example.org> or http://bare.example.com/path for more.

```python
print("no code in a voice")
```

| a | b |
|---|---|
| 1 | 2 |

![a kettle](/img/kettle.png)

<div class="figure">
  <small>Photo credit</small>
</div>

> Someone else's words.

- first item of a list
- second item

The end[^1], with `inline code` kept as words.

[^1]: A footnote in my own words.
[ref]: https://example.com/ref
"""


def test_markdown_cleaning_removes_syntax_and_keeps_words():
    meta, body = split_front_matter(MD)
    assert meta["title"] == "On kettles" and meta["tags"] == ["home", "tea"]
    text = "\n\n".join(paragraphs(clean_markdown(body)))
    for gone in ("http", "```", "print(", "| a |", "![", "Photo credit", "Someone else", "[^1]", "**", "title:", "<div"):
        assert gone not in text, gone
    for kept in ("a good kettle", "very loud", "first item of a list", "inline code kept", "A footnote in my own words", "On kettles"):
        assert kept in text, kept


def test_hard_wrapped_lines_are_joined_into_paragraphs():
    text = "It was a dark\nand stormy night;\nthe rain fell.\n\nSecond\nparagraph here."
    assert paragraphs(text) == ["It was a dark and stormy night; the rain fell.", "Second paragraph here."]


def test_gutenberg_header_and_footer_removed():
    text = (
        "The Project Gutenberg eBook of Things\n\nLicence blah\n\n*** START OF THE PROJECT GUTENBERG EBOOK THINGS ***\n\n"
        "Produced by Someone\n\nCHAPTER I\n\nThe story.\n\n*** END OF THE PROJECT GUTENBERG EBOOK THINGS ***\n\nMore licence."
    )
    out = strip_gutenberg(text)
    assert "The story." in out and "CHAPTER I" in out
    assert "Licence" not in out and "licence" not in out and "Produced by" not in out


@pytest.mark.parametrize(
    "raw,expected_enc",
    [
        ("Café déjà vu — “quoted”".encode("utf-8"), "utf-8"),
        (b"\xef\xbb\xbf" + "Café".encode("utf-8"), "utf-8-sig"),
        ("Café déjà vu, naïve façade, très élevé, où êtes-vous? ".encode("latin-1") * 20, None),
        ("Café\r\nline two".encode("utf-16"), "utf-16"),
    ],
)
def test_decoding(raw, expected_enc):
    text, enc = decode_bytes(raw)
    assert "Café" in text and "\r" not in text and "\ufeff" not in text
    if expected_enc:
        assert enc == expected_enc


def test_binary_file_is_rejected():
    with pytest.raises(ReadError, match="binary"):
        decode_bytes(b"\x00\x01\x02PK\x00\x00" * 100)


def test_ingest_provenance_skips_and_originals_untouched(tmp_path):
    src = make_corpus(tmp_path / "writing", n_docs=4)
    (src / "empty.txt").write_bytes(b"")
    (src / "book.docx").write_bytes(b"PK\x03\x04 not really")
    (src / "blob.txt").write_bytes(b"\x00\x01\x02\x03" * 64)
    (src / "copy.txt").write_bytes((src / "note-0.txt").read_bytes())
    before = {p: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest()) for p in src.iterdir()}
    ws = Workspace.open(tmp_path / "voice")
    result = ingest([src], ws)
    assert len(result.kept) == 4
    assert "[ingest]" in ws.config_path.read_text()  # the resolved config is recorded
    reasons = {Path(f.path).name: f.skipped for f in result.skipped}
    assert reasons["empty.txt"] == "empty file"
    assert "not a valid .docx" in reasons["book.docx"]
    assert {Path(f.path).name for f in result.problems} == {"empty.txt", "book.docx", "blob.txt"}
    assert "binary" in reasons["blob.txt"]
    dup = [n for n in ("copy.txt", "note-0.txt") if n in reasons]
    assert len(dup) == 1 and reasons[dup[0]].startswith("exact duplicate of")
    manifest = json.loads(ws.manifest_path.read_text())
    rec = next(f for f in manifest["files"] if f["path"].endswith("note-2.txt"))
    data = (src / "note-2.txt").read_bytes()
    assert rec["sha256"] == hashlib.sha256(data).hexdigest() and rec["bytes"] == len(data) and rec["words"] > 100
    essay = next(f for f in manifest["files"] if f["path"].endswith("essay-1.md"))
    assert essay["title"] == "Essay 1" and essay["date"] == "2020-01-02"
    docs = load_corpus(ws)
    assert all("title:" not in p for d in docs for p in d["paragraphs"])
    after = {p: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest()) for p in src.iterdir()}
    assert before == after


def test_empty_folder_gives_clear_error(tmp_path):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(MimeticError, match="No files found"):
        ingest([tmp_path / "nothing"], Workspace.open(tmp_path / "voice"))
    with pytest.raises(MimeticError, match="does not exist"):
        ingest([tmp_path / "missing"], Workspace.open(tmp_path / "voice"))


def test_failed_ingest_keeps_previous_corpus(tmp_path):
    ws = Workspace.open(tmp_path / "voice")
    ingest([make_corpus(tmp_path / "w", n_docs=2)], ws)
    before = ws.manifest_path.read_text()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.txt").write_text("too short")
    with pytest.raises(MimeticError):
        ingest([bad], ws, IngestConfig(min_words=50))
    assert ws.manifest_path.read_text() == before
    assert not [p for p in ws.root.iterdir() if p.name.startswith(".")]


@pytest.mark.skipif(not (SHARED / "raw" / "blog").exists(), reason="shared corpora not present")
def test_real_blog_has_no_front_matter_code_or_urls(tmp_path):
    ws = Workspace.open(tmp_path / "voice")
    result = ingest([SHARED / "raw" / "blog"], ws)
    assert len(result.kept) > 180 and result.words > 100_000
    text = "\n".join(p for d in load_corpus(ws) for p in d["paragraphs"])
    assert not re.search(r"https?://|```|^title:|^date:|\]\(", text, re.MULTILINE)


@pytest.mark.skipif(not (SHARED / "raw" / "gutenberg").exists(), reason="shared corpora not present")
def test_real_gutenberg_files_in_two_encodings(tmp_path):
    ws = Workspace.open(tmp_path / "voice")
    result = ingest([SHARED / "raw" / "gutenberg"], ws)
    enc = {Path(f.path).name: f.encoding for f in result.kept}
    assert enc["emma_158-0.txt"] == "utf-8-sig"
    assert enc["sherlock_1661-8.txt"] not in ("utf-8", None)
    for d in load_corpus(ws):
        body = "\n".join(d["paragraphs"])
        assert "Project Gutenberg" not in body and "\ufffd" not in body
    sherlock = next(d for d in load_corpus(ws) if "sherlock" in d["path"])
    assert any("Holmes" in p for p in sherlock["paragraphs"][:50])
    assert os.access(SHARED / "raw" / "gutenberg" / "emma_158-0.txt", os.R_OK)
