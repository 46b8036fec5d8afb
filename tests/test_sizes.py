"""How much writing is enough (issue 33, item 4): a corpus placed on the measured corpus-size
curve, in one sentence, by ingest on the command line and by the desk's Corpus page."""

from __future__ import annotations

import math

from typer.testing import CliRunner

from conftest import make_corpus
from mimetic.corpus.sizes import CURVE, PLENTY, TOO_LITTLE, round_words, size_verdict


def test_the_curve_is_recorded_smallest_first_with_every_measure():
    assert len(CURVE) >= 5 and [r["words"] for r in CURVE] == sorted(r["words"] for r in CURVE)
    assert all({"words", "nll_change", "auc_voice", "auc_base", "attribution_voice", "invented_voice"} <= set(r) for r in CURVE)
    assert CURVE[0]["words"] <= TOO_LITTLE < PLENTY <= CURVE[-1]["words"]


def test_a_corpus_is_placed_by_the_nearest_measured_size_and_warned_below_the_line():
    little = size_verdict(TOO_LITTLE // 2)
    assert little.band == "too little" and "add writing" in little.sentence
    middle = size_verdict((TOO_LITTLE + PLENTY) // 2)
    assert middle.band == "enough" and f"{round_words(PLENTY):,}" in middle.sentence
    assert size_verdict(PLENTY).band == "plenty" and "--time-budget" in size_verdict(PLENTY).sentence
    for row in CURVE:  # each measured size is its own nearest point, its figures quoted
        v = size_verdict(row["words"])
        assert v.nearest == row and f"{row['words']:,} words lowered" in v.sentence
        assert f"{row['auc_voice']:.2f}" in v.sentence
    words = int(math.sqrt(CURVE[1]["words"] * CURVE[2]["words"])) + 1  # just past the log midpoint
    assert size_verdict(words).nearest == CURVE[2]


def test_ingest_says_where_the_corpus_sits(tmp_path):
    from mimetic.frontends.cli import app

    src = make_corpus(tmp_path / "writing", n_docs=4)
    r = CliRunner().invoke(app, ["ingest", str(src), "-w", str(tmp_path / "v")])
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "Little writing" in out and "add writing" in out and "ROC AUC" in out


def test_the_desks_corpus_page_says_it_too(tmp_path):
    from fastapi.testclient import TestClient

    from mimetic import Workspace, ingest
    from mimetic.frontends.app import AppConfig, create_app

    config = AppConfig(tmp_path / "voices")
    ingest([make_corpus(tmp_path / "writing", n_docs=4)], Workspace.open(config.voices / "v"))
    page = TestClient(create_app(config), base_url="http://127.0.0.1").get("/voices/v/corpus").text
    assert 'id="corpus-size"' in page and "add writing" in page
