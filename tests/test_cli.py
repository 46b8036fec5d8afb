import json

from typer.testing import CliRunner

from conftest import make_corpus
from mimetic.frontends.cli import app

runner = CliRunner()


def test_empty_folder_is_a_clear_error_not_a_traceback(tmp_path):
    (tmp_path / "empty").mkdir()
    r = runner.invoke(app, ["ingest", str(tmp_path / "empty"), "-w", str(tmp_path / "v")])
    assert r.exit_code == 1
    assert "No files found" in r.output and "Traceback" not in r.output


def test_commands_before_ingest_say_what_to_run(tmp_path):
    r = runner.invoke(app, ["train", "-w", str(tmp_path / "v")])
    assert r.exit_code == 1 and "mimetic ingest" in r.output


def test_main_job_end_to_end(tmp_path, tiny_model):
    corpus = make_corpus(tmp_path / "my-writing", n_docs=30, paragraphs=6)
    ws = tmp_path / "voice"
    r = runner.invoke(app, ["voice", str(corpus), "-w", str(ws), "--base-model", tiny_model, "--time-budget", "1"])
    assert r.exit_code == 0, r.output
    voice_output = r.output
    for part in ("Your corpus", "held-out NLL, base model", "Side by side"):
        assert part in r.output
    assert (ws / "mimetic.toml").exists() and list((ws / "compare").glob("*.html"))
    r = runner.invoke(app, ["write", "The kettle", "-w", str(ws), "-n", "5", "--seed", "1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["runs", "-w", str(ws)])
    assert r.exit_code == 0 and "%" in r.output
    r = runner.invoke(app, ["log", "-w", str(ws), "--limit", "1"])
    assert r.exit_code == 0 and "The kettle" in r.output
    r = runner.invoke(app, ["train", "-w", str(ws), "--lr", "-1"])
    assert r.exit_code == 1 and "learning_rate" in r.output
    (run_dir,) = [p.parent for p in (ws / "runs").glob("*/summary.json")]  # the failed train made no run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["run_id"] == run_dir.name
    # the figures printed by `voice` are the run's own
    assert f"{summary['base_nll']:.3f} nats/token" in voice_output
    assert f"{summary['best_nll']:.3f} (step {summary['best_step']})" in voice_output
    assert f"{-100 * summary['held_out_nll_drop']:+.1f}%" in voice_output
    assert f'base_model = "{tiny_model}"' in (run_dir / "config.toml").read_text()


def test_evaluate_before_training_says_what_to_run(tmp_path):
    r = runner.invoke(app, ["evaluate", "-w", str(tmp_path / "v")])
    assert r.exit_code == 1 and "Traceback" not in r.output
