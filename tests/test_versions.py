"""Versions of a voice (issue 16): a selection of the corpus (--where), named versions, the
published one (never an interrupted run), comparing versions, and the style-drift view."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import _sentence, small_train_config
from mimetic import MimeticError, Workspace
from mimetic.frontends.cli import app
from mimetic.core.selection import parse

DOCS = [
    {"doc_id": "a", "path": "/w/essays/2014-first.md", "date": "2014-03-02", "format": "markdown", "tags": ["Travel"], "words": 100},
    {"doc_id": "b", "path": "/w/essays/2016-late.md", "date": "2016-12-31", "format": "markdown", "tags": [], "words": 200},
    {"doc_id": "c", "path": "/w/mail/inbox.mbox", "date": "2017-01-01", "format": "email", "tags": [], "words": 300, "part": "message 1"},
    {"doc_id": "d", "path": "/w/notes/undated.txt", "date": None, "format": "text", "tags": [], "words": 400},
    {"doc_id": None, "path": "/w/broken.pdf", "format": "pdf", "skipped": "unreadable", "words": 0},
]


@pytest.mark.parametrize("where, chosen", [
    ("", {"a", "b", "c", "d"}),
    ("date < 2017", {"a", "b"}),
    ("date <= 2016", {"a", "b"}),
    ("date >= 2016-12 and date < 2017-02", {"b", "c"}),
    ("year = 2014", {"a"}),
    ("date != 2014", {"b", "c"}),
    ("folder = essays", {"a", "b"}),
    ('folder = "ESSAYS" and date > 2015', {"b"}),
    ("file = *.mbox", {"c"}),
    ("file = 2014-*", {"a"}),
    ("format = email", {"c"}),
    ("format != email", {"a", "b", "d"}),
    ("tag = travel", {"a"}),
])
def test_a_selection_picks_documents_by_their_provenance(where, chosen):
    assert parse(where).documents(DOCS) == chosen


def test_a_selection_says_what_it_picks_and_what_it_leaves_out():
    assert parse("date < 2017").describe(DOCS) == "2 of 4 documents (300 words); 1 without a date are left out"
    assert parse("format = email").describe(DOCS) == "1 of 4 documents (300 words)"


@pytest.mark.parametrize("where, says", [
    ("colour = blue", "cannot select by 'colour'"),
    ("date < 17", "not a date"),
    ("format < email", "takes = or !="),
    ("date before 2017", "FIELD OP VALUE"),
    ("folder = old essays", "quoted"),
])
def test_a_selection_that_cannot_be_read_says_how_to_write_it(where, says):
    with pytest.raises(MimeticError) as e:
        parse(where)
    assert says in str(e.value)


# ----------------------------------------------------------------- the registry, without models


def _finished(ws: Workspace, run_id: str, finished: bool = True) -> None:
    d = ws.runs_dir / run_id
    d.mkdir(parents=True)
    if finished:
        (d / "summary.json").write_text("{}")


def test_the_published_version_is_chosen_not_the_latest_folder(tmp_path):
    ws = Workspace.open(tmp_path / "v")
    _finished(ws, "20240101-000000")
    _finished(ws, "20240102-000000")
    # a voice from before versions: its latest finished run, as before
    assert ws.published_run() == "20240102-000000" and ws.run_dir().name == "20240102-000000"
    _finished(ws, "20240103-000000")
    ws.add_version("20240103-000000", "early")  # a named version is not published by itself...
    assert ws.published_run() == "20240102-000000"  # ...and the older voice keeps what it was using
    assert ws.run_dir("early").name == "20240103-000000" and ws.names_of("20240103-000000") == ["early"]
    _finished(ws, "20240104-000000", finished=False)  # started later, interrupted: never the voice
    assert ws.run_dir().name == "20240102-000000"
    assert ws.run_dir(finished=False).name == "20240104-000000"  # resume and stop still find it
    with pytest.raises(MimeticError, match="has not finished"):
        ws.publish("20240104-000000")
    assert ws.publish("early") == "20240103-000000" and ws.run_dir().name == "20240103-000000"
    with pytest.raises(MimeticError, match="already run 20240103-000000's"):
        ws.add_version("20240102-000000", "early")
    with pytest.raises(MimeticError, match="cannot name a version"):
        ws.add_version("20240102-000000", "20240102-000000")
    with pytest.raises(MimeticError, match="No run or version named 'later'"):
        ws.run_dir("later")


def test_the_first_version_of_a_new_voice_is_published(tmp_path):
    ws = Workspace.open(tmp_path / "v")
    _finished(ws, "20240101-000000")
    ws.add_version("20240101-000000", "first")
    assert ws.published_run() == "20240101-000000"
    _finished(ws, "20240102-000000")
    ws.add_version("20240102-000000", publish=True)
    assert ws.published_run() == "20240102-000000" and json.loads(ws.versions_path.read_text())["names"] == {"first": "20240101-000000"}


# ------------------------------------------------------------------ with a tiny model, end to end


def dated_corpus(root: Path) -> Path:
    """24 Markdown essays, dated 2014–2016 (the first 12) and 2018–2020 (the others)."""
    root.mkdir(parents=True)
    for d in range(24):
        rng = random.Random(7000 + d)
        year = 2014 + d % 3 if d < 12 else 2018 + d % 3
        paras = [" ".join(_sentence(rng) for _ in range(5)) for _ in range(8)]
        (root / f"essay-{d}.md").write_text(f"---\ntitle: Essay {d}\ndate: {year}-0{d % 9 + 1}-1{d % 9}\n---\n\n"
                                            + "\n\n".join(paras), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def versioned(tmp_path_factory, tiny_model):
    """A voice with a full version (published) and an era version named ``early``."""
    from mimetic import ingest, prepare, train

    root = tmp_path_factory.mktemp("versions")
    ws = Workspace.open(root / "voice")
    ingest([dated_corpus(root / "writing")], ws)
    prepare(ws, base_model=tiny_model)
    full = train(ws, small_train_config(tiny_model, max_steps=3))
    early = train(ws, small_train_config(tiny_model, max_steps=3, version="early", where="date < 2017"))
    return ws, full.run_id, early.run_id


def test_an_era_version_learns_and_is_measured_on_its_era_only(versioned):
    from mimetic.core.config import VoiceConfig
    from mimetic.corpus.prepare import load_split

    ws, full, early = versioned
    assert ws.published_run() == full and ws.run_dir("early").name == early
    assert VoiceConfig.load(ws.runs_dir / early / "config.toml").train.where == "date < 2017"
    assert ws.load_config().train.where == "" and ws.load_config().train.version == ""  # the run's, not the voice's
    dates = {f["doc_id"]: f["date"] for f in ws.read_manifest().files}
    for split in ("train", "held_out"):
        rows = load_split(ws, split, "date < 2017")
        assert 0 < len(rows) < len(load_split(ws, split))
        assert all(dates[d] < "2017" for d in rows["doc_id"])
    base_full = json.loads((ws.runs_dir / full / "summary.json").read_text())["base_nll"]
    base_early = json.loads((ws.runs_dir / early / "summary.json").read_text())["base_nll"]
    assert base_full != base_early  # measured on different held-out text
    # the base model's NLL is cached per held-out data: one entry for each selection
    assert len(json.loads((ws.data_dir / "base_nll.json").read_text())) == 2


def test_a_selection_with_no_name_or_no_text_is_refused_before_training(versioned, tiny_model):
    from mimetic import train

    ws, _, _ = versioned
    runs = sorted(ws.runs_dir.iterdir())
    with pytest.raises(MimeticError, match="name it"):
        train(ws, small_train_config(tiny_model, max_steps=1, where="date < 2017"))
    with pytest.raises(MimeticError, match="selects 0 of 24 documents"):
        train(ws, small_train_config(tiny_model, max_steps=1, version="none", where="date < 2000"))
    with pytest.raises(MimeticError, match="already run"):
        train(ws, small_train_config(tiny_model, max_steps=1, version="early"))
    assert sorted(ws.runs_dir.iterdir()) == runs  # nothing started


def test_an_interrupted_run_never_becomes_the_voice(versioned, tiny_model):
    from mimetic import train
    from mimetic.training.loop import TrainingInterrupted

    ws, full, _ = versioned
    with pytest.raises(TrainingInterrupted):
        train(ws, small_train_config(tiny_model, max_steps=6), should_stop=lambda run: run.state.step >= 2, publish=True)
    latest = sorted(p.name for p in ws.runs_dir.iterdir())[-1]
    assert latest != full and not (ws.runs_dir / latest / "summary.json").exists()
    assert ws.published_run() == full and ws.run_dir().name == full
    r = CliRunner().invoke(app, ["versions", "--workspace", str(ws.root)])
    assert r.exit_code == 0 and latest not in r.output


def test_versions_lists_and_publish_switches_the_voice(versioned):
    ws, full, early = versioned
    runner = CliRunner()
    r = runner.invoke(app, ["versions", "--workspace", str(ws.root)], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    rows = {cells[2]: cells for cells in ([c.strip() for c in ln.split("│")] for ln in r.output.splitlines()) if len(cells) > 4}
    assert rows[full][:2] == ["★", "–"] and rows[full][3] == "all your writing"
    assert rows[early][:2] == ["", "early"] and rows[early][3] == "date < 2017 (12 documents)"
    r = runner.invoke(app, ["versions", "--where", "date >= 2018", "--workspace", str(ws.root)])
    assert "selects 12 of 24 documents" in r.output
    try:
        r = runner.invoke(app, ["publish", "early", "--workspace", str(ws.root)])
        assert r.exit_code == 0 and f"run {early}" in r.output
        assert ws.run_dir().name == early
        from mimetic.voice.generate import run_where

        assert run_where(ws) == "date < 2017"
        r = runner.invoke(app, ["publish", "nonesuch", "--workspace", str(ws.root)])
        assert r.exit_code == 1 and "No run or version named 'nonesuch'" in r.output
    finally:
        ws.publish(full)


def test_versions_side_by_side_on_the_same_prompts_and_seeds(versioned):
    ws, full, early = versioned
    r = CliRunner().invoke(app, ["compare", "--versions", f"{full},early", "-n", "6", "--workspace", str(ws.root)])
    assert r.exit_code == 0, r.output
    page = sorted(ws.compare_dir.glob("*-versions.html"))[-1].read_text()
    assert "<th>early<br><small>date &lt; 2017</small></th>" in page and f"<th>{full}<br>" in page
    md = sorted(ws.compare_dir.glob("*-versions.md"))[-1].read_text()
    assert md.count("\n**early**\n") == 5 and md.count(f"\n**{full}**\n") == 5  # five held-out prompts, each version on each
    rows = ws.generations(10)
    assert {json.loads(g["params"]).get("version") for g in rows} == {"early", full}
    assert len({g["seed"] for g in rows}) == 5  # the same five seeds for both


def test_the_drift_view_places_versions_among_the_eras(versioned):
    from mimetic.core.config import EvaluateConfig
    from mimetic.evaluation.versions import drift

    ws, full, early = versioned
    ec = EvaluateConfig(sample_words=240, set_words=120, n_mfw=40, new_tokens=24, prefix_tokens=16, batch_size=8)
    d = drift(ws, [full, "early"], ec, min_era_sets=3)
    assert d.eras[0].startswith("2014") and d.eras[-1].endswith("2020") and len(d.eras) >= 2
    assert set(d.table) == {"your held-out writing", full, "early", "base model"}
    assert all(sum(row.values()) >= 2 for row in d.table.values())
    assert d.own_era_share[full] is None and 0.0 <= d.own_era_share["early"] <= 1.0
    data = json.loads(d.json_path.read_text())
    assert data["table"] == d.table and 0.0 <= data["control_share"] <= 1.0
    page = d.html_path.read_text()
    assert "data:image/png;base64," in page and "in its own era" in page and d.png_path.stat().st_size > 1000
    # the versions' own eras, from the same samples (nothing written again)
    samples = (ws.root / "drift" / "samples.json").stat().st_mtime_ns
    two = drift(ws, [full, "early"], ec, splits=[2017])
    assert two.eras == ["2014–2016", "2018–2020"] and (ws.root / "drift" / "samples.json").stat().st_mtime_ns == samples
    assert sum(two.table["early"].values()) == sum(d.table["early"].values())
    assert two.own_era_share["early"] == two.table["early"]["2014–2016"] / sum(two.table["early"].values())


def test_polishing_a_named_version_makes_a_named_unpublished_version_on_its_era(versioned):
    from mimetic.core.config import PolishConfig, VoiceConfig
    from mimetic.training.preference import polish

    ws, full, early = versioned
    r = polish(ws, "early", PolishConfig(pairs=4, prompt_tokens=8, continuation_tokens=8, batch_size=2, max_steps=1,
                                         eval_every=1, held_out_examples=4))
    assert ws.names_of(r.run_id) == ["early+polish"] and ws.published_run() == full
    assert VoiceConfig.load(r.run_dir / "config.toml").train.where == "date < 2017"
    # its evaluation sets it beside its parent's
    from mimetic.core.config import EvaluateConfig
    from mimetic.evaluation.evaluate import evaluate

    ec = EvaluateConfig(sample_words=200, set_words=100, n_mfw=30, new_tokens=16, prefix_tokens=16, batch_size=4,
                        extraction_prefixes=4, bootstrap=100)
    first = evaluate(ws, "early+polish", ec)
    assert first.metrics["parent"] == {"run": early, "evaluated": False}
    assert any(f"run {early} has no evaluation yet" in line for line in first.summary())
    parent = evaluate(ws, "early", ec)
    child = evaluate(ws, "early+polish", ec)
    again = child.metrics["parent"]
    assert again["evaluated"] and again["same_settings"] and again["run"] == early
    assert again["parent"]["nll"] == pytest.approx(parent.metrics["nll"]["voice"]["nll"])
    assert again["voice"]["nll"] == pytest.approx(child.metrics["nll"]["voice"]["nll"])
    assert again["parent"]["longest_characters"] == parent.metrics["memorization"]["voice"]["longest_characters"]
    assert any(line.startswith(f"Against its parent (run {early}): held-out NLL") for line in child.summary())


def test_the_server_offers_the_published_version_under_the_voices_name(versioned):
    from mimetic.frontends.serve import find_models

    ws, full, early = versioned
    for run in (full, early):  # exports as `mimetic export` leaves them (only their names are read here)
        (ws.root / "exports" / run).mkdir(parents=True, exist_ok=True)
        (ws.root / "exports" / run / "voice-q8_0.gguf").write_bytes(b"GGUF")
    try:
        models = {m.id: m.run for m in find_models([ws.root])[0]}
        assert models["voice"] == full and models[f"voice@{early}"] == models["voice@early"] == early  # newer, not published
        ws.publish("early")
        assert {m.id: m.run for m in find_models([ws.root])[0]}["voice"] == early
    finally:
        ws.publish(full)
