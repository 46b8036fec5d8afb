"""The typed files between stages: round trips, old files without ``version``, refusals."""

import json
import math
from pathlib import Path

import pytest

from mimetic.errors import MimeticError
from mimetic.core.records import DataMeta, EvaluationMetrics, Manifest, RunSummary

# The keys train.py writes to summary.json (TrainResult's fields, then its summary.update).
SUMMARY = {
    "run_id": "20250101-120000", "run_dir": "/v/runs/20250101-120000", "base_nll": 3.2, "best_nll": 2.9,
    "best_step": 40, "final_step": 50, "stopped_because": "schedule finished", "tokens_per_s": 170.5,
    "train_tokens": 12345, "elapsed_s": 61.0, "peak_rss_mb": 900.0, "eval_s": 6.0,
    "held_out_nll_drop": 1 - 2.9 / 3.2, "base_ppl": math.exp(3.2), "best_ppl": math.exp(2.9), "learning_rate": 2e-4,
    "device": "cpu", "precision": "fp32", "trainable_parameters": 1000, "total_parameters": 100000,
    "steps_per_epoch": 25, "padding_share": 0.1, "padding_share_unpacked": 0.2, "padding_share_random_batches": 0.3,
    "packed_rows": None, "planned_steps": 50, "processes": 1, "plan": None, "global_batch_size": 8,
    "held_out_tokens": 1000, "held_out_tokens_measured": 1000,
}
MANIFEST = {
    "created_at": "2025-01-01T12:00:00+0000", "sources": ["/w"], "config": {"min_words": 50}, "documents": 1,
    "words": 120, "writer": None,
    "files": [{"path": "/w/a.txt", "format": "text", "bytes": 900, "doc_id": "a-1", "skipped": None},
              {"path": "/w/b.txt", "format": "text", "bytes": 0, "doc_id": None, "skipped": "empty file"}],
    "inputs": [{"path": "/w/a.txt", "size": 900, "mtime_ns": 1, "sha256": "ab"}],
}
META = {
    "created_at": "2025-01-01T12:00:00+0000", "base_model": "embedded", "tokenizer": "t", "vocab_size": 100,
    "config": {"max_tokens": 256}, "split_mode": "documents", "held_out_documents": ["a-1"], "held_out_sections": [],
    "train": {"examples": 10, "tokens": 900}, "held_out": {"examples": 2, "tokens": 100}, "padding_share": 0.2,
    "briefs": {},
}
METRICS = {
    "run": "20250101-120000", "base_model": "embedded", "evaluated_at": "2025-01-01T13:00:00+0000",
    "config": {"seed": 0}, "generate": {"temperature": 0.8},
    "nll": {"base": {"nll": 3.2, "ppl": 24.5, "ci": [3.1, 3.3]}, "voice": {"nll": 2.9, "ppl": 18.2, "ci": [2.8, 3.0]},
            "drop": {"value": 0.09, "ci": [0.05, 0.12]}},
    "words": {"training": 1000},
    "stylometry": {"metric": "cosine", "candidates": ["you", "base model"],
                   "distances": {"cosine": {"voice_to_held_out": 0.4, "base_to_held_out": 0.6, "held_out_to_training": 0.3}},
                   "attribution": {"voice": {"sets": 4, "to": {"you": 3, "base model": 1}}}},
    "profiles": {}, "memorization": {"voice": {"longest_tokens": 9, "longest_characters": 40, "flagged": 0, "samples": [{}, {}]}},
    "identity": {"names_in_voice": [{"name": "Ada", "voice": 2}], "distinct": {"voice": 1},
                 "per_1000_words": {"voice": 1.5, "writer": 2.0}},
    "extraction": {"windows": 4, "voice": {"exact": 0.25}}, "samples": 8, "timings": {"nll_s": 1.0}, "modes": {}, "parent": {}, "reader": {},
}
CASES = [  # record, its file inside a workspace, today's keys, the command its errors point to
    (RunSummary, "runs/20250101-120000/summary.json", SUMMARY, "mimetic train"),
    (Manifest, "corpus/manifest.json", MANIFEST, "mimetic ingest"),
    (DataMeta, "data/meta.json", META, "mimetic prepare"),
    (EvaluationMetrics, "runs/20250101-120000/evaluation/metrics.json", METRICS, "mimetic evaluate 20250101-120000"),
]


def _write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


@pytest.mark.parametrize("cls, rel, keys, command", CASES)
def test_round_trip_keeps_todays_keys_and_adds_version(tmp_path, cls, rel, keys, command):
    rec = cls.from_dict(keys)
    rec.save(tmp_path / rel)
    on_disk = json.loads((tmp_path / rel).read_text())
    assert on_disk == {"version": cls.CURRENT, **keys} and list(on_disk)[1:] == list(keys)  # same keys, same order
    assert cls.load(tmp_path / rel).to_dict() == rec.to_dict() and not list((tmp_path / rel).parent.glob(".*.tmp"))


@pytest.mark.parametrize("cls, rel, keys, command", CASES)
def test_file_from_before_versions_loads_as_version_1_and_keeps_unknown_keys(tmp_path, cls, rel, keys, command):
    rec = cls.load(_write(tmp_path / rel, {**keys, "added_later": {"x": 1}}))
    assert rec.version == 1 and rec.extra == {"added_later": {"x": 1}}
    rec.save(tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text())["added_later"] == {"x": 1}


@pytest.mark.parametrize("cls, rel, keys, command", CASES)
def test_newer_version_is_refused(tmp_path, cls, rel, keys, command):
    path = _write(tmp_path / rel, {**keys, "version": cls.CURRENT + 1})
    with pytest.raises(MimeticError, match="newer mimetic") as e:
        cls.load(path)
    assert str(path) in e.value.message and "Upgrade mimetic" in e.value.hint


@pytest.mark.parametrize("cls, rel, keys, command", CASES)
@pytest.mark.parametrize("content, problem", [
    ('{"run_id": ', "not valid JSON"), ("[1, 2]", "not a JSON object"), ({"version": "two"}, "invalid version"),
    (None, "does not exist"), ("drop", "is missing"),
])
def test_bad_file_is_refused_naming_it_and_the_command_that_fixes_it(tmp_path, cls, rel, keys, command, content, problem):
    path = tmp_path / rel
    if content == "drop":  # the first key (required in every record) left out
        required = next(iter(keys))
        _write(path, {k: v for k, v in keys.items() if k != required})
        problem = f"is missing {required}"
    elif content is not None:
        _write(path, content)
    with pytest.raises(MimeticError) as e:
        cls.load(path)
    assert str(path) in e.value.message and problem in e.value.message
    assert command in e.value.hint and str(tmp_path) in e.value.hint


def test_summary_from_result_has_exactly_the_keys_train_writes(tmp_path):
    from mimetic.training.sft import TrainResult

    result = TrainResult(**{k: SUMMARY[k] for k in ("run_id", "base_nll", "best_nll", "best_step", "final_step",
                                                    "stopped_because", "tokens_per_s", "train_tokens", "elapsed_s",
                                                    "peak_rss_mb", "eval_s")}, run_dir=Path(SUMMARY["run_dir"]))
    derived = ("run_id", "run_dir", "base_nll", "best_nll", "best_step", "final_step", "stopped_because", "tokens_per_s",
               "train_tokens", "elapsed_s", "peak_rss_mb", "eval_s", "held_out_nll_drop", "base_ppl", "best_ppl")
    s = RunSummary.from_result(result, **{k: v for k, v in SUMMARY.items() if k not in derived})
    assert s.to_dict() == {"version": 1, **SUMMARY}
    with pytest.raises(TypeError):
        RunSummary.from_result(result, learning_rate=1e-4)  # the rest is required


def test_headline_from_typed_metrics_and_the_evaluate_alias():
    from mimetic.evaluation.evaluate import headline

    lines = EvaluationMetrics.from_dict(METRICS).headline()
    assert lines == headline(METRICS) and len(lines) == 5
    assert lines[0].startswith("Fit:") and "3 of 4 sample sets" in lines[2] and "25% of 4" in lines[3]
    broken = {**METRICS, "nll": {"base": {}}}
    with pytest.raises(MimeticError, match="lacks a measurement"):
        EvaluationMetrics.from_dict(broken).headline()


def test_manifest_kept_is_the_documents_in_the_corpus():
    assert [f["doc_id"] for f in Manifest.from_dict(MANIFEST).kept] == ["a-1"]


def test_model_card_reads_the_typed_records_and_says_when_there_is_no_evaluation(tmp_path):
    from mimetic.core.config import ExportConfig, VoiceConfig
    from mimetic.voice.export import model_card
    from mimetic.core.workspace import Workspace

    ws = Workspace.open(tmp_path / "voice")
    Manifest.from_dict(MANIFEST).save(ws.manifest_path)
    run_dir = ws.runs_dir / SUMMARY["run_id"]
    RunSummary.from_dict(SUMMARY).save(run_dir / "summary.json")

    def card() -> str:
        return model_card(ws, run_dir, VoiceConfig(), {}, [], ExportConfig(), "")

    assert "held-out NLL 3.200 → 2.900" in card() and "- 1 documents, 120 words" in card()
    assert "- not evaluated: run `mimetic evaluate`" in card()
    EvaluationMetrics.from_dict(METRICS).save(run_dir / "evaluation" / "metrics.json")
    assert "- Fit: on writing the voice never saw" in card()
    _write(run_dir / "evaluation" / "metrics.json", {**METRICS, "version": 99})
    assert "could not be read" in card() and str(tmp_path) not in card()


def test_runs_lists_typed_summaries_and_a_damaged_one_as_a_row(tmp_path):
    from typer.testing import CliRunner

    from mimetic.frontends.cli import app
    from mimetic.core.config import VoiceConfig
    from mimetic.core.workspace import Workspace

    ws = Workspace.open(tmp_path / "voice")
    ws.save_config(VoiceConfig())
    RunSummary.from_dict(SUMMARY).save(ws.runs_dir / SUMMARY["run_id"] / "summary.json")
    _write(ws.runs_dir / "20250102-090000" / "summary.json", '{"run_id": ')
    r = CliRunner().invoke(app, ["runs", "-w", str(ws.root)], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    assert "2.900" in r.output and "-9.4%" in r.output and "not valid JSON" in r.output and "Traceback" not in r.output
