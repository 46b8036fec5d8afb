"""Nothing silently garbled (issue 19): a writer's old files in 8-bit code pages and UTF-16 are
read as written, uncertain ones are flagged with the override that fixes them, and prompt
files are read the same way."""

import json

import pytest

from mimetic import IngestConfig, MimeticError, Workspace, ingest
from mimetic.ingest import load_corpus

TYPOGRAPHIC = [
    "The café owner, naïve and señor-like, charged £5 for the crème brûlée at the Hôtel.",
    "“It was late,” she said — and the harbour’s lamps went out, one by one… Nobody slept that night in the town.",
]
PLAIN = [
    "The café owner, naïve and señor-like, charged £5 for the crème brûlée at the Hôtel.",
    "It was late, she said, and the harbour lamps went out one by one. Nobody slept that night in the town.",
]
FILLER = ("We walked down to the water after supper, as we always did in August, and counted the boats "
          "that were still out past the breakwater.")


def _text(typographic: bool, long: bool) -> list[str]:
    paras = list(TYPOGRAPHIC if typographic else PLAIN)
    if long:
        paras += [f"{FILLER} That was the {n}th evening of the summer." for n in range(4, 54)]
    return paras


def _ingest_file(tmp_path, raw: bytes, **config):
    src = tmp_path / "writing"
    src.mkdir(exist_ok=True)
    (src / "old.txt").write_bytes(raw)
    ws = Workspace.open(tmp_path / "voice")
    result = ingest([src], ws, IngestConfig(min_words=0, **config))
    return ws, result


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1", "mac_roman", "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("long", [False, True], ids=["short", "long"])
@pytest.mark.parametrize("typographic", [True, False], ids=["curly", "straight"])
def test_old_files_are_read_as_written(tmp_path, encoding, long, typographic):
    if typographic and encoding == "latin-1":
        pytest.skip("Latin-1 has no typographic quotes or dashes")
    paras = _text(typographic, long)
    ws, result = _ingest_file(tmp_path, "\r\n\r\n".join(paras).encode(encoding))
    (doc,) = load_corpus(ws)
    assert doc["paragraphs"] == paras
    assert result.report["encoding_doubts"] == []


def test_an_uncertain_encoding_is_flagged_and_the_override_fixes_it(tmp_path):
    # one high byte, 0xBB: "ª" in Mac Roman, "»" in Windows-1252; either reading is plausible
    raw = "Add ½ cup of flour and stir it in slowly until the batter is smooth and thick enough to coat a spoon.".encode("cp1252")
    ws, result = _ingest_file(tmp_path, raw.replace("½".encode("cp1252"), "ª".encode("mac_roman")))
    (doubt,) = result.report["encoding_doubts"]
    assert doubt["path"].endswith("old.txt") and "--encoding" in doubt["note"]
    report = (ws.corpus_dir / "report.html").read_text()
    assert "encoding is uncertain" in report and "old.txt" in report
    ws, result = _ingest_file(tmp_path, raw.replace("½".encode("cp1252"), "ª".encode("mac_roman")), encoding="mac_roman")
    (doc,) = load_corpus(ws)
    assert "ª cup" in doc["paragraphs"][0] and result.report["encoding_doubts"] == []
    manifest = json.loads((ws.corpus_dir / "manifest.json").read_text())
    assert manifest["files"][0]["encoding"] == "mac-roman"


def test_an_unknown_encoding_is_refused_with_a_sentence():
    with pytest.raises(MimeticError, match="unknown encoding 'klingon'"):
        IngestConfig(encoding="klingon")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "cp1252", "utf-8-sig"])
def test_prompt_files_are_decoded_like_the_corpus(tmp_path, encoding):
    from mimetic.generate import read_prompts, read_text_file

    draft = "“The morning after,” she wrote, “the café was shut.”\n\nAnd then the rain came."
    path = tmp_path / "draft.txt"
    path.write_bytes(draft.encode(encoding))
    assert read_text_file(path, "fix") == draft
    assert read_prompts(path) == draft.split("\n\n")


def test_a_binary_prompt_file_is_refused(tmp_path):
    from mimetic.generate import read_text_file

    path = tmp_path / "photo.jpg"
    path.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(MimeticError, match="not a text file"):
        read_text_file(path, "Give a text file.")
