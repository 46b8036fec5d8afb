import hashlib
import json
import os
import re
import time
from pathlib import Path

import pytest
from collections import Counter

from conftest import SHARED, make_corpus
from mimetic import IngestConfig, MimeticError, Workspace, ingest
from mimetic.corpus.ingest import clean_markdown, decode_bytes, load_corpus, paragraphs, split_front_matter, strip_gutenberg
from mimetic.text.readers import ReadError, count_words

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


def test_markdown_attribute_lists_removed():
    body = "Some memory:\n\n| a | b |\n|---|---|\n| 1 | 2 |\n{:.table}\n\n## Pointers {#ptr .big}\n\nKeep {this} and {:nothing} else."
    text = "\n\n".join(paragraphs(clean_markdown(body)))
    assert text == "Some memory:\n\nPointers\n\nKeep {this} and else."


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
    text, enc, _ = decode_bytes(raw)
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
        ingest([bad], ws, IngestConfig(min_words=50), replace=True)
    assert ws.manifest_path.read_text() == before
    assert not [p for p in ws.root.iterdir() if p.name.startswith(".") and p.name != ".lock"]  # .lock: the voice's lock file stays


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


# --------------------------------------------------------------------------------------------
# Full breadth: bad input, duplicates, boilerplate, redaction, names, re-runs


def _prose(seed: int, n: int = 6) -> str:
    import random

    from conftest import _sentence

    rng = random.Random(seed)
    return "\n\n".join(" ".join(_sentence(rng) for _ in range(3)) for _ in range(n))


def test_bad_inputs_are_skipped_with_reasons_and_nothing_stops_ingest(tmp_path):
    from typer.testing import CliRunner

    from mimetic.frontends.cli import app

    src = tmp_path / "writing"
    src.mkdir()
    (src / "good.txt").write_text(_prose(1))
    (src / "empty.md").write_bytes(b"")
    (src / "blob.txt").write_bytes(bytes(range(256)) * 40)
    (src / "broken.docx").write_bytes(b"PK\x03\x04" + b"\x00" * 50)
    (src / "broken.epub").write_bytes(b"PK\x03\x04 truncated")
    (src / "archive.zip").write_bytes(b"PK\x05\x06 not really")
    (src / "huge.txt").write_text(_prose(2, 400))
    (src / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    (src / "loop").symlink_to(src, target_is_directory=True)
    (src / "dangling.txt").symlink_to(src / "missing.txt")
    os.mkfifo(src / "pipe.txt")
    ws = Workspace.open(tmp_path / "voice")
    result = ingest([src], ws, IngestConfig(max_file_mb=0.01))
    reasons = {Path(f.path).name: f.skipped for f in result.skipped}
    assert [Path(f.path).name for f in result.kept] == ["good.txt"]
    assert reasons["empty.md"] == "empty file"
    assert "binary" in reasons["blob.txt"]
    assert "not a valid .docx" in reasons["broken.docx"] and "not a valid EPUB" in reasons["broken.epub"]
    assert "not a valid zip" in reasons["archive.zip"]
    assert "larger than" in reasons["huge.txt"]
    assert "unsupported file type .jpg" in reasons["photo.jpg"]
    assert "cannot read" in reasons["dangling.txt"] and "not a regular file" in reasons["pipe.txt"]
    assert "already read" in reasons["loop"]
    assert {Path(f.path).name for f in result.problems} >= {"empty.md", "blob.txt", "broken.docx", "archive.zip", "huge.txt"}
    assert "photo.jpg" not in {Path(f.path).name for f in result.problems}
    report = json.loads((ws.corpus_dir / "report.json").read_text())
    assert len(report["problems"]) == len(result.problems)
    r = CliRunner().invoke(app, ["ingest", str(src), "-w", str(tmp_path / "voice2")])
    assert r.exit_code == 3 and "could not be read" in r.output and "Traceback" not in r.output


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read files whatever their permissions")
def test_unreadable_file_is_skipped(tmp_path):
    src = tmp_path / "w"
    src.mkdir()
    (src / "good.txt").write_text(_prose(1))
    (src / "secret.txt").write_text(_prose(2))
    (src / "secret.txt").chmod(0)
    result = ingest([src], Workspace.open(tmp_path / "voice"))
    assert "cannot read" in next(f.skipped for f in result.skipped if f.path.endswith("secret.txt"))


def test_ten_thousand_files(tmp_path):
    src = tmp_path / "notes"
    for d in range(10):
        (src / f"year-{d}").mkdir(parents=True)
    import random

    from conftest import _sentence

    rng = random.Random(0)
    for i in range(10_000):
        (src / f"year-{i % 10}" / f"note-{i}.txt").write_text(f"Note {i}. " + " ".join(_sentence(rng) for _ in range(2)))
    result = ingest([src], Workspace.open(tmp_path / "voice"), IngestConfig(min_words=5))
    assert len(result.files) == 10_000 and len(result.kept) > 9_900


def test_near_duplicates_review_and_keep(tmp_path):
    src = tmp_path / "w"
    src.mkdir()
    original = _prose(3, 8)
    (src / "post.md").write_text("---\ntitle: Post\n---\n\n" + original)
    (src / "post-mirror.gmi").write_text("# Post\n\n" + original.replace("the", "a", 3) + "\n\n=> https://example.com/ Home")
    (src / "other.txt").write_text(_prose(4, 8))
    ws = Workspace.open(tmp_path / "voice")
    result = ingest([src], ws)
    mirror = next(f for f in result.files if f.path.endswith(".gmi"))
    assert mirror.skipped.startswith("near duplicate of") and mirror.skipped.split(" of ")[1].startswith(str(src / "post.md"))
    review = json.loads((ws.corpus_dir / "review.json").read_text())["removals"]
    [entry] = [r for r in review if r["what"] == "document"]
    assert entry["reason"] == "near duplicate" and entry["duplicate_of"] == str(src / "post.md") and 0.8 <= entry["similarity"] <= 1
    assert len(ingest([src], ws, IngestConfig(keep=["*.gmi"])).kept) == 3
    assert len(ingest([src], ws, IngestConfig(near_duplicate_threshold=1.0)).kept) == 3


def test_boilerplate_and_duplicate_paragraphs_are_removed(tmp_path):
    src = tmp_path / "blog"
    src.mkdir()
    footer = "Thanks for reading! Subscribe to the newsletter for more posts like this one."
    quote = "This long paragraph was pasted into two of my posts and should only be learned once by the model, not twice."
    for i in range(12):
        extra = f"\n\n{quote}" if i in (2, 7) else ""
        (src / f"post-{i}.md").write_text(_prose(10 + i) + extra + f"\n\n{footer}")
    ws = Workspace.open(tmp_path / "voice")
    result = ingest([src], ws)
    text = "\n".join(p for d in load_corpus(ws) for p in d["paragraphs"])
    assert footer not in text and text.count(quote) == 1
    reasons = Counter(r["reason"] for r in result.removals)
    assert reasons["boilerplate (repeated in many documents)"] == 12 and reasons["duplicate paragraph"] == 1
    assert result.report["words_removed"]["boilerplate (repeated in many documents)"] == 12 * 13


def test_redaction_aliases_exclusions_and_names_report(tmp_path):
    src = tmp_path / "w"
    src.mkdir()
    body = (
        "Write to me at ann.writer@example.com or call +44 20 7946 0958 before Friday.\n\n"
        "Marta Klein said the harbour was grey, and Marta Klein is usually right about harbours.\n\n"
        "Jonas Berg never replied, which is like Jonas Berg.\n\nMy card 4111 1111 1111 1111 expired in 1999.\n\n"
        "See https://ann.example.com/about or mail ann.writer@example.com again, on 12/03/2020.\n\n"
    )
    (src / "a.txt").write_text(body + _prose(5))
    (src / "b.txt").write_text("Marta Klein came by again. Marta Klein stayed for tea.\n\n" + _prose(6))
    ws = Workspace.open(tmp_path / "voice")
    cfg = IngestConfig(redact=["emails", "phones", "urls", "cards"], aliases={"Marta Klein": "M."}, exclude_names=["Jonas"])
    result = ingest([src], ws, cfg)
    text = "\n".join(p for d in load_corpus(ws) for p in d["paragraphs"])
    assert "example.com" not in text and "7946" not in text and "4111" not in text and "Jonas" not in text
    assert text.count("[EMAIL_1]") == 2 and "[PHONE_1]" in text and "[URL_1]" in text and "[CARD_1]" in text
    assert "1999" in text and "12/03/2020" in text  # years and dates are not phone numbers
    assert "Marta" not in text and text.count("M.") >= 4
    assert any(r["reason"] == "mentions an excluded name" for r in result.removals)
    assert result.report["redacted"] == {"emails": 2, "urls": 1, "cards": 1, "phones": 1}
    names = json.loads((ws.corpus_dir / "names.json").read_text())["names"]
    assert all(n["name"] not in ("Marta", "Jonas") for n in names)
    plain = ingest([src], Workspace.open(tmp_path / "voice2"))
    top = {n["name"]: n for n in plain.names}
    assert top["Marta"]["count"] == 4 and top["Marta"]["documents"] == 2 and top["Klein"]["count"] == 4


def test_mail_keeps_the_most_frequent_sender_unless_told(tmp_path):
    import mailbox
    from email.message import EmailMessage

    box = mailbox.mbox(str(tmp_path / "in" / "mail.mbox"), create=True) if (tmp_path / "in").mkdir() is None else None
    for i, sender in enumerate(["ann@example.com"] * 3 + ["bob@example.org"]):
        m = EmailMessage()
        m["From"], m["Subject"], m["Date"] = sender, f"Note {i}", "Tue, 03 Mar 2020 10:00:00 +0000"
        m.set_content(_prose(20 + i, 3))
        box.add(m)
    box.close()
    result = ingest([tmp_path / "in"], Workspace.open(tmp_path / "voice"))
    assert result.writer == "ann@example.com" and len(result.kept) == 3
    assert all(f.date.startswith("2020-03-03") for f in result.kept)
    told = ingest([tmp_path / "in"], Workspace.open(tmp_path / "voice"), IngestConfig(authors=["bob@example.org"]))
    assert len(told.kept) == 1 and told.kept[0].author == "bob@example.org"


def test_rerun_reads_only_new_or_changed_files(tmp_path):
    src = make_corpus(tmp_path / "w", n_docs=6)
    ws = Workspace.open(tmp_path / "voice")
    first = ingest([src], ws)
    assert first.read == 6 and first.reused == 0
    (src / "note-0.txt").write_text(_prose(99))
    (src / "new.md").write_text(_prose(98))
    again = ingest([src], ws)
    assert again.reused == 5 and again.read == 2 and len(again.kept) == 7
    changed = next(d for d in load_corpus(ws) if d["path"].endswith("note-0.txt"))
    assert changed["paragraphs"][0] in _prose(99)


@pytest.mark.skipif(not (SHARED / "raw" / "blog").exists(), reason="shared corpora not present")
def test_real_blog_gemini_twins_are_near_duplicates(tmp_path):
    result = ingest([SHARED / "raw" / "blog"], Workspace.open(tmp_path / "voice"))
    by_path = {f.path: f for f in result.files}
    gmi = [f for f in result.files if f.path.endswith(".gmi")]
    assert len(gmi) == 26
    for f in gmi:
        twin = by_path[f.path[:-4] + ".md"]
        if twin.skipped and twin.skipped.startswith("only 0 words"):
            continue  # the .md is a front-matter stub ("outputs: [gemtext]"): the .gmi is the only copy
        assert f.skipped and f.skipped.startswith(("near duplicate of", "exact duplicate of")), f.path
        assert f.skipped.split(" of ", 1)[1].startswith(twin.path)
    assert sum(1 for f in gmi if (f.skipped or "").startswith(("near", "exact"))) >= 17


@pytest.mark.skipif(not (SHARED / "raw" / "gutenberg").exists(), reason="shared corpora not present")
def test_real_gutenberg_editions_match_the_clean_texts(tmp_path):
    from mimetic.text.readers import ReadOptions, read_bytes

    clean = {
        "emma": count_words((SHARED / "authors" / "austen" / "emma.txt").read_text()),
        "sherlock": count_words((SHARED / "authors" / "doyle" / "adventures_of_sherlock_holmes.txt").read_text()),
    }
    for name, book, tolerance in [
        ("emma_158-0.txt", "emma", 0.03), ("sherlock_1661-8.txt", "sherlock", 0.03),
        ("emma_158-h.htm", "emma", 0.03), ("emma_158.pdf", "emma", 0.05),
    ]:
        [(_, _, value)] = read_bytes(name, (SHARED / "raw" / "gutenberg" / name).read_bytes(), ReadOptions())
        if isinstance(value, ReadError):
            assert name.endswith(".pdf") and str(value)  # a PDF may be skipped, with a reason
            continue
        text = "\n".join(p for d in value for p in d.paragraphs)
        words = count_words(text)
        assert abs(words - clean[book]) <= tolerance * clean[book], (name, words, clean[book])
        assert not re.search(r"gutenberg|\*\*\* ?(START|END)|www\.|this e-?book|full licen[cs]e", text, re.IGNORECASE), name


def test_a_mirror_dated_by_its_file_takes_the_date_written_in_its_twin(tmp_path):
    src = tmp_path / "blog"
    src.mkdir()
    (src / "harbour.md").write_text("---\ntitle: Harbour\ndate: 2015-06-01\noutputs: [gemtext]\n---\n")  # a stub
    (src / "harbour.gmi").write_text("# Harbour\n\n" + _prose(5, 6))
    (src / "orchard.txt").write_text(_prose(6, 6))
    result = ingest([src], Workspace.open(tmp_path / "voice"))
    by_name = {Path(f.path).name: f for f in result.files}
    gmi, txt = by_name["harbour.gmi"], by_name["orchard.txt"]
    assert not gmi.skipped and gmi.date == "2015-06-01" and gmi.date_source == f"text of {src / 'harbour.md'}"
    assert txt.date_source == "file" and txt.date[:4] == time.strftime("%Y")
    assert by_name["harbour.md"].date_source == "text"


@pytest.mark.skipif(not (SHARED / "raw" / "blog").exists(), reason="shared corpora not present")
def test_real_blog_every_kept_post_has_the_date_its_author_wrote(tmp_path):
    result = ingest([SHARED / "raw" / "blog"], Workspace.open(tmp_path / "voice"))
    kept = [f for f in result.files if f.doc_id and not f.skipped]
    assert all(f.date_source != "file" for f in kept), [f.path for f in kept if f.date_source == "file"]
    assert max(f.date for f in kept) < "2021"


def test_symbolic_links_out_of_the_folders_being_read_are_never_read(tmp_path):
    """Issue 31, 1: a file and a folder linked from outside are listed, not read — also for the
    desk's allowed roots, and for a named folder that is itself a link out of them."""
    from typer.testing import CliRunner

    from mimetic.frontends.cli import app

    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    src = allowed / "writing"
    src.mkdir(parents=True)
    (outside / "sub").mkdir(parents=True)
    (outside / "secret.txt").write_text("The secret ledger of the quiet harbour. " * 40)
    (outside / "sub" / "private.txt").write_text("A private letter about the hidden orchard. " * 40)
    (src / "mine.txt").write_text(_prose(1))
    (src / "inner").mkdir()
    (src / "inner" / "more.txt").write_text(_prose(2))
    (src / "again.txt").symlink_to(src / "inner" / "more.txt")  # inside: read (then found a duplicate)
    (src / "notes.txt").symlink_to(outside / "secret.txt")
    (src / "linkdir").symlink_to(outside / "sub", target_is_directory=True)
    (src / "inner" / "up").symlink_to(outside, target_is_directory=True)
    ws = Workspace.open(tmp_path / "voice")
    warnings = []
    result = ingest([src], ws, on_event=lambda e: warnings.append(e) if type(e).__name__ == "Warning" else None,
                    allowed_roots=[allowed])
    corpus = " ".join(p.read_text() for p in (ws.corpus_dir / "docs").iterdir())
    assert "secret ledger" not in corpus and "hidden orchard" not in corpus
    assert "secret ledger" not in (ws.corpus_dir / "archive.db").read_bytes().decode("latin-1")
    outside_links = {Path(f.path).name for f in result.skipped if "outside the folders" in (f.skipped or "")}
    assert outside_links == {"notes.txt", "linkdir", "up"}
    assert not any(str(outside) in f.path for f in result.files)  # nothing under the outside folder was even listed
    kept = {Path(f.path).name for f in result.kept}
    assert "mine.txt" in kept and kept & {"more.txt", "again.txt"}  # a link inside is read
    report = json.loads((ws.corpus_dir / "report.json").read_text())
    assert sorted(Path(p).name for p in report["outside"]) == ["linkdir", "notes.txt", "up"]
    assert "symbolic links leading outside" in (ws.corpus_dir / "report.html").read_text()
    assert any("Not read: 3 symbolic link" in w.message for w in warnings)

    # a named folder that is a link out of the allowed roots is not read at all
    (allowed / "door").symlink_to(outside, target_is_directory=True)
    with pytest.raises(MimeticError, match="None of the"):
        ingest([allowed / "door"], Workspace.open(tmp_path / "v2"), allowed_roots=[allowed])

    # the CLI: the same, said on the terminal
    r = CliRunner().invoke(app, ["ingest", str(src), "-w", str(tmp_path / "v3")])
    assert r.exit_code == 0, r.output
    assert "symbolic link" in r.output and "outside" in r.output
    assert "secret ledger" not in " ".join(p.read_text() for p in (tmp_path / "v3" / "corpus" / "docs").iterdir())


def test_a_second_folder_is_added_to_the_voice_and_replace_is_asked_for(tmp_path):
    """Issue 31, 5: ``ingest OTHER`` on a voice keeps the earlier folders' documents and says so;
    ``--replace`` reads only what it names; a vanished earlier folder stops it with two lines."""
    from typer.testing import CliRunner

    from mimetic.frontends.cli import app

    a, b = tmp_path / "novels", tmp_path / "letters"
    a.mkdir()
    b.mkdir()
    (a / "first.txt").write_text(_prose(1))
    (a / "second.txt").write_text(_prose(2))
    (b / "letter.txt").write_text(_prose(3))
    w = str(tmp_path / "voice")
    r = CliRunner().invoke(app, ["ingest", str(a), "-w", w])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["ingest", str(b), "-w", w])
    assert r.exit_code == 0, r.output
    ws = Workspace.open(w)
    kept = {Path(d["path"]).name for d in ws.read_manifest().kept}
    assert kept == {"first.txt", "second.txt", "letter.txt"}
    assert {Path(s).name for s in ws.read_manifest().sources} == {"novels", "letters"}
    assert "Adding" in r.output and "novels" in r.output and "--replace" in r.output
    # the same folder again, or one inside a folder already read: nothing doubled
    r = CliRunner().invoke(app, ["ingest", str(a / "first.txt"), str(b), "-w", w])
    assert r.exit_code == 0, r.output
    assert sorted(Path(d["path"]).name for d in ws.read_manifest().kept) == ["first.txt", "letter.txt", "second.txt"]
    # --replace: only the named folder
    r = CliRunner().invoke(app, ["ingest", str(b), "--replace", "-w", w])
    assert r.exit_code == 0, r.output
    assert {Path(d["path"]).name for d in ws.read_manifest().kept} == {"letter.txt"}
    assert "now only" in r.output
    # an earlier folder gone: refused, nothing dropped
    CliRunner().invoke(app, ["ingest", str(a), "-w", w])
    a.rename(tmp_path / "moved")
    before = (ws.corpus_dir / "manifest.json").read_bytes()
    r = CliRunner().invoke(app, ["ingest", str(b), "-w", w])
    assert r.exit_code == 1 and "no longer there" in r.output and "--replace" in r.output and "Traceback" not in r.output
    assert (ws.corpus_dir / "manifest.json").read_bytes() == before
