"""The living archive (issue 16): the writer's cleaned corpus, full-text indexed (SQLite FTS5,
BM25) during ingest with provenance, searched from the CLI, and "where does this come from?"
for a generated passage."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from conftest import make_corpus, trained_voice
from mimetic import MimeticError, Workspace, ingest
from mimetic.text.archive import ARCHIVE, nearest, search
from mimetic.frontends.cli import app

runner = CliRunner()


def _writing(root, extra: dict[str, str]):
    folder = make_corpus(root, n_docs=6, paragraphs=4)
    for name, text in extra.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_ingest_builds_an_archive_that_answers_with_provenance(tmp_path):
    ws = Workspace.open(tmp_path / "v")
    ingest([_writing(tmp_path / "w", {"ferry.md": "---\ntitle: The ferry\ndate: 2016-05-02\n---\n\n"
                                      "Nothing happened on Monday, as far as I could tell from the window of the office.\n\n"
                                      "We took the night ferry to the islands, and the gulls followed the boat until dawn, "
                                      "crying over the wake like creditors."})], ws)
    hits, seconds = search(ws.corpus_dir, "gulls followed")
    assert len(hits) == 1 and seconds < 1
    hit = hits[0]
    assert hit.path.endswith("ferry.md") and hit.title == "The ferry" and hit.date == "2016-05-02" and hit.paragraph == 2
    assert "[gulls] [followed]" in hit.snippet and hit.text.startswith("We took the night ferry")
    assert hit.where() == "The ferry (2016-05-02), paragraph 2"
    assert search(ws.corpus_dir, "ferries")[0][0].doc_id == hit.doc_id  # stemmed: ferries finds ferry
    # every word must occur; when none has them all, any of them ranks
    assert search(ws.corpus_dir, "gulls Monday")[0] and all("gull" in h.text or "Monday" in h.text
                                                             for h in search(ws.corpus_dir, "gulls Monday")[0])
    # FTS5 syntax typed by a person is read as words, never as an error
    assert search(ws.corpus_dir, 'ferry AND "NEAR(* OR -')[0][0].doc_id == hit.doc_id
    with pytest.raises(MimeticError, match="Nothing to search"):
        search(ws.corpus_dir, "?! …")
    # the kettle sentence is in many documents: the best ranks first, scores fall
    many, _ = search(ws.corpus_dir, "kettle singing", limit=3)
    assert len(many) == 3 and [h.score for h in many] == sorted((h.score for h in many), reverse=True)


def test_the_archive_is_rebuilt_with_the_corpus_and_survives_a_failed_ingest(tmp_path):
    ws = Workspace.open(tmp_path / "v")
    ingest([_writing(tmp_path / "a", {"z.txt": "The zebracorn grazed in the orchard at the bottom of my grandmother's garden, "
                                                "and nobody in the village ever asked where it had come from or why it stayed."})], ws)
    assert search(ws.corpus_dir, "zebracorn")[0]
    ingest([_writing(tmp_path / "b", {"q.txt": "A quokka smiled at the postman, who did not smile back at the quokka, "
                                                "because he had been warned about animals that smile at people on the island."})], ws,
           replace=True)
    assert not search(ws.corpus_dir, "zebracorn")[0] and search(ws.corpus_dir, "quokka")[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(MimeticError):
        ingest([tmp_path / "empty"], ws, replace=True)
    assert search(ws.corpus_dir, "quokka")[0]  # the archive of the corpus still in place
    (ws.corpus_dir / ARCHIVE).unlink()
    with pytest.raises(MimeticError, match="Ingest your writing again"):
        search(ws.corpus_dir, "quokka")
    r = runner.invoke(app, ["search", "quokka", "-w", str(ws.root)])
    assert r.exit_code != 0 and "mimetic ingest" in r.output and "Traceback" not in r.output


def test_search_command_prints_passages_with_provenance_and_the_time(tmp_path):
    ws = Workspace.open(tmp_path / "v")
    ingest([_writing(tmp_path / "w", {"ferry.md": "---\ntitle: The ferry\ndate: 2016-05-02\n---\n\n"
                                      "We took the night ferry to the islands, and the gulls followed the boat until dawn, "
                                      "crying over the wake like creditors who had heard we were leaving for good."})], ws)
    r = runner.invoke(app, ["search", "night ferry", "-w", str(ws.root)])
    assert r.exit_code == 0, r.output
    assert "The ferry (2016-05-02), paragraph 1" in r.output and "[night] [ferry]" in r.output
    assert "1 passage in" in r.output and " ms." in r.output


def test_where_a_generated_passage_comes_from(tmp_path, tiny_model):
    from mimetic.voice.generate import sources

    ws = trained_voice(tmp_path, tiny_model, max_steps=2)
    quote = "My grandmother kept her letters in a biscuit tin, tied with string, and she never once told us who wrote them."
    found, = sources(ws, ["It rained. " + quote + " Then the moon rose over a city that has never existed."])
    assert found.overlap.tokens == 24 and found.overlap.passage == quote  # 21 words and 3 marks, verbatim
    assert found.nearest and "biscuit" in found.nearest[0].text
    assert nearest(ws.corpus_dir, "zzz qqq") == []  # words the writer never used: nothing is near
    r = runner.invoke(app, ["write", "The kettle", "-w", str(ws.root), "-n", "12", "--sources"])
    assert r.exit_code == 0, r.output
    assert "nearest in your own writing" in r.output and ("paragraph" in r.output or "No passage of yours" in r.output)
