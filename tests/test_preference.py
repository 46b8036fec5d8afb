"""The preference stage (polish): DPO loss, self-play pairs from the training split, the run."""

import json
import math

import pytest
import torch

from conftest import trained_voice
from mimetic import TrainingInterrupted
from mimetic.core.config import PolishConfig
from mimetic.core.events import Metric, Progress
from mimetic.models.nll import IGNORE_INDEX
from mimetic.training.preference import PAIRS_FILE, dpo_loss, polish, read_pairs, sequence_rows


def test_dpo_loss_is_the_formula():
    pc, pr = torch.tensor([-10.0, -3.0]), torch.tensor([-12.0, -2.0])
    rc, rr = torch.tensor([-11.0, -3.5]), torch.tensor([-11.5, -2.5])
    beta = 0.1
    expected = [-math.log(1 / (1 + math.exp(-beta * ((a - c) - (b - d))))) for a, b, c, d in
                zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist())]
    assert dpo_loss(pc, pr, rc, rr, beta).tolist() == pytest.approx(expected, rel=1e-6)
    # the policy is the reference: log 2, whatever the log-probabilities
    assert dpo_loss(pc, pr, pc, pr, beta).tolist() == pytest.approx([math.log(2)] * 2)
    assert dpo_loss(pc, pr, pc, pr, 5.0).tolist() == pytest.approx([math.log(2)] * 2)


def test_sequence_rows_mask_the_prompt():
    rows = sequence_rows([{"prompt": [1, 2, 3], "chosen": [4, 5], "rejected": [6]}])
    assert rows[0] == {"input_ids": [1, 2, 3, 4, 5], "labels": [IGNORE_INDEX] * 3 + [4, 5]}
    assert rows[1] == {"input_ids": [1, 2, 3, 6], "labels": [IGNORE_INDEX] * 3 + [6]}


PC = dict(pairs=6, prompt_tokens=16, continuation_tokens=16, batch_size=2, generate_batch_size=4, eval_every=2,
          held_out_examples=8, learning_rate=5e-3, beta=0.1, epochs=1.0)


@pytest.fixture(scope="module")
def voice(tmp_path_factory, tiny_model):
    return trained_voice(tmp_path_factory.mktemp("polish"), tiny_model)


def test_polish_end_to_end(voice, monkeypatch):
    from peft import PeftModel

    from mimetic.models.loading import load_model
    from mimetic.corpus.prepare import load_split
    from mimetic.training.preference import _margins

    parent = sorted(p.name for p in voice.runs_dir.iterdir())[-1]
    events = []
    r = polish(voice, parent, PolishConfig(**PC, max_steps=3), on_event=events.append)
    assert r.parent_run_id == parent and r.run_id != parent and r.final_step == 3 and r.pairs == 6
    info = json.loads((r.run_dir / "polish.json").read_text())
    assert info["parent_run_id"] == parent and info["config"]["pairs"] == 6
    assert "[polish]" in (r.run_dir / "config.toml").read_text()

    # pairs: training split only, chosen is the writer's text, progress reported
    pairs = read_pairs(r.run_dir / PAIRS_FILE)
    assert len(pairs) == 6
    meta = voice.data_meta()
    train = load_split(voice, "train")
    held_docs = set(meta.held_out_documents) or {d for d in load_split(voice, "held_out")["doc_id"]}
    assert held_docs and not {p["doc_id"] for p in pairs} & held_docs
    for p in pairs:
        ids = list(train[p["row"]]["input_ids"])
        assert train[p["row"]]["doc_id"] == p["doc_id"]
        assert ids[:32] == p["prompt"] + p["chosen"] and len(p["chosen"]) == 16
        assert 1 <= len(p["rejected"]) <= 16 and p["rejected"] != p["chosen"]
    progress = [e for e in events if isinstance(e, Progress) and e.unit == "pairs"]
    assert progress[-1].done == progress[-1].total == 6
    from conftest import has_llama_cpp

    if has_llama_cpp():  # the self-play samples come from the parent voice in llama.cpp, as write's do
        assert any(isinstance(e, Progress) and e.stage == "generate" and "llama.cpp" in e.message for e in events)

    # the reference log-probabilities are the parent adapter's, unchanged by training
    from mimetic.models.nll import collate, token_losses
    from mimetic.models.loading import load_tokenizer

    tok = load_tokenizer(str(meta.base_model))
    ref = PeftModel.from_pretrained(load_model(meta.base_model), str(voice.runs_dir / parent / "adapter")).eval()
    with torch.no_grad():
        losses, _ = token_losses(ref, collate(sequence_rows(pairs), tok.pad_token_id), "cpu", torch.no_grad)
    logps = (-losses.sum(1)).tolist()
    assert logps[:6] == pytest.approx([p["ref_chosen"] for p in pairs], abs=1e-3)
    assert logps[6:] == pytest.approx([p["ref_rejected"] for p in pairs], abs=1e-3)

    # the new adapter loads and differs from the parent; the margin grew with training
    polished = PeftModel.from_pretrained(load_model(meta.base_model), str(r.run_dir / "adapter")).eval()
    margins = [e.values["reward_margin"] for e in events if isinstance(e, Metric) and "reward_margin" in e.values]
    assert margins[0] == pytest.approx(0.0, abs=1e-3) and r.margin_before == margins[0]
    assert r.margin_after == margins[-1] > margins[0] + 1e-3, margins
    assert r.accuracy_after > 0.5
    last, _, _ = _margins(polished, pairs, 0.1, tok.pad_token_id, "cpu", torch.no_grad, 4)
    if r.best_step == r.final_step:  # the kept adapter is the last one
        assert last == pytest.approx(r.margin_after, abs=1e-3)
    assert r.nll_before == pytest.approx(json.loads((voice.runs_dir / parent / "summary.json").read_text())["best_nll"], abs=1e-4)
    summary = json.loads((r.run_dir / "summary.json").read_text())
    assert summary["run_id"] == r.run_id and summary["final_step"] == 3 and summary["learning_rate"] == 5e-3
    print(f"margins {margins}, held-out NLL {r.nll_before:.4f} -> {r.nll_after:.4f}, accuracy {r.accuracy_after}")


def test_resume_reuses_the_pairs(voice, monkeypatch):
    import mimetic.training.preference as pref

    parent = sorted(p.name for p in voice.runs_dir.iterdir() if not (p / "polish.json").exists())[-1]
    calls = []
    real, real_llama = pref._sample, pref._llama_sampler  # count the batches sampled, whichever engine samples them
    monkeypatch.setattr(pref, "_sample", lambda *a, **k: calls.append(1) or real(*a, **k))

    def counted(*a, **k):
        sampler = real_llama(*a, **k)
        return sampler and (lambda *b: calls.append(1) or sampler(*b))

    monkeypatch.setattr(pref, "_llama_sampler", counted)

    def stop_at_two(e):
        if isinstance(e, Progress) and e.stage == "polish" and e.unit == "steps" and e.done == 2:
            stop_at_two.asked = True

    stop_at_two.asked = False
    with pytest.raises(TrainingInterrupted) as info:
        polish(voice, parent, PolishConfig(**{**PC, "epochs": 2.0}, max_steps=4), on_event=stop_at_two, should_stop=lambda run: stop_at_two.asked)
    assert "mimetic polish --resume" in info.value.hint
    run_id = sorted(p.name for p in voice.runs_dir.iterdir() if (p / "polish.json").exists())[-1]
    assert len(calls) == 2  # 6 pairs in batches of 4
    pairs_file = voice.runs_dir / run_id / PAIRS_FILE
    before, mtime = pairs_file.read_text(), pairs_file.stat().st_mtime_ns
    r = polish(voice, resume=run_id)
    assert len(calls) == 2  # not sampled again
    assert pairs_file.read_text() == before and pairs_file.stat().st_mtime_ns == mtime
    assert r.run_id == run_id and r.final_step == 4 and r.parent_run_id == parent


def test_cli_polish(voice):
    from typer.testing import CliRunner

    from mimetic.frontends.cli import app

    vc = voice.load_config()
    vc.polish = PolishConfig(**PC)
    voice.save_config(vc)
    parent = sorted(p.name for p in voice.runs_dir.iterdir() if not (p / "polish.json").exists())[-1]
    r = CliRunner().invoke(app, ["polish", parent, "-w", str(voice.root), "--pairs", "4", "--max-steps", "1"])
    assert r.exit_code == 0, r.output
    assert "held-out NLL, before" in r.output and "New run:" in r.output
    new = sorted(p.name for p in voice.runs_dir.iterdir() if (p / "polish.json").exists())[-1]
    assert new in r.output and len(read_pairs(voice.runs_dir / new / PAIRS_FILE)) == 4
    assert voice.load_config().polish.pairs == 4  # the settings it ran with are the workspace's
