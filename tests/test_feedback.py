"""The feedback loop (issue 16): the writer's marks on what the voice wrote become a preference
stage — DPO on picks among drafts, KTO on texts kept or discarded — producing a new run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from conftest import trained_voice
from mimetic import GenerateConfig, MimeticError
from mimetic.frontends.cli import app
from mimetic.core.config import PolishConfig
from mimetic.core.logdb import add_marks, latest_generations
from mimetic.training.preference import PAIRS_FILE, kto_loss, polish, read_pairs

PC = dict(batch_size=2, eval_every=2, held_out_examples=8, learning_rate=1e-2, beta=0.1, epochs=2.0)


def test_kto_loss_is_the_formula():
    pol, ref = torch.tensor([-10.0, -10.0, -4.0]), torch.tensor([-12.0, -8.0, -4.0])
    good = torch.tensor([True, False, True])
    beta = 0.1
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = [1 - sig(beta * 2.0), sig(beta * -2.0), 0.5]
    assert kto_loss(pol, ref, good, beta).tolist() == pytest.approx(expected, rel=1e-6)
    # a kept text more likely than the reference made it lowers the loss; a discarded one raises it
    assert kto_loss(pol, ref, good, beta)[0] < 0.5 < kto_loss(pol, ref, torch.tensor([False, False, False]), beta)[0]


@pytest.fixture(scope="module")
def marked(tmp_path_factory, tiny_model):
    """A trained tiny voice whose drafts were marked by a scripted, seeded rule: for each of four
    prompts, three drafts ranked by style distance (``write --best-of 3``); the closest is the
    best over the other two (8 DPO pairs); four single texts kept or discarded by seed parity (4 KTO)."""
    from mimetic.voice.generate import write

    ws = trained_voice(tmp_path_factory.mktemp("feedback"), tiny_model)
    parent = sorted(p.name for p in ws.runs_dir.iterdir())[-1]
    gc = GenerateConfig(max_new_tokens=12, seed=3)
    for prompt in ("The kettle", "My grandmother", "When the river rose", "Nobody said"):
        write(ws, prompt, gc, run=parent, best_of=3)
        ids = [g["id"] for g in latest_generations(ws.db_path, 3)]  # newest first; ranked by distance in params
        dist = {g["id"]: json.loads(g["params"])["style_distance"] for g in latest_generations(ws.db_path, 3)}
        best = min(ids, key=lambda i: (dist[i], i))
        add_marks(ws.db_path, best, "best", [i for i in ids if i != best])
    for k in range(4):
        write(ws, "The harbour", GenerateConfig(max_new_tokens=10, seed=100 + k), run=parent)
        g = latest_generations(ws.db_path, 1)[0]
        add_marks(ws.db_path, g["id"], "keep" if k % 2 == 0 else "discard")
    return ws, parent


def test_marks_become_dpo_pairs_and_kto_examples_in_the_runs_tokens(marked):
    from mimetic.voice.generate import feedback_examples
    from mimetic.models.loading import load_tokenizer

    ws, parent = marked
    fb = feedback_examples(ws, parent)
    assert len(fb["pairs"]) == 8 and len(fb["singles"]) == 4 and fb["marks"] == 16 and fb["skipped"] == 0
    tok = load_tokenizer(ws.data_meta().base_model)
    first = fb["pairs"][0]
    assert tok.decode(first["prompt"]) == "The kettle" and first["chosen"] != first["rejected"]
    assert [s["desirable"] for s in fb["singles"]] == [True, False, True, False]
    assert all(tok.decode(s["prompt"]) == "The harbour" for s in fb["singles"])


def test_a_feedback_round_trains_a_new_run_towards_the_picks(marked):
    from mimetic.voice.generate import feedback_examples

    ws, parent = marked
    r = polish(ws, parent, PolishConfig(**PC, max_steps=6), feedback=feedback_examples(ws, parent))
    assert r.parent_run_id == parent and r.run_id != parent and r.final_step == 6 and r.pairs == 12
    info = json.loads((r.run_dir / "polish.json").read_text())
    assert info["source"] == "feedback" and info["result"]["pairs"] == 12
    rows = read_pairs(r.run_dir / PAIRS_FILE)
    assert [row["kind"] for row in rows].count("pair") == 8 and [row["kind"] for row in rows].count("single") == 4
    assert all(math.isfinite(row["ref"]) for row in rows if row["kind"] == "single")
    assert r.margin_before == pytest.approx(0.0, abs=1e-3) and r.margin_after > 0.01  # the picks became more likely
    assert math.isfinite(r.nll_after) and (r.run_dir / "adapter" / "adapter_model.safetensors").exists()
    # scored by the marks, guarded by the held-out NLL: the kept adapter fits the marks better than the parent
    lines = [json.loads(x) for x in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    pref = {x["step"]: x["preference_loss"] for x in lines if "preference_loss" in x}
    nll = {x["step"]: x["held_out_nll"] for x in lines if "held_out_nll" in x}
    assert set(pref) == set(nll) and pref[0] == pytest.approx((8 * math.log(2) + 4 * 0.5) / 12, abs=1e-3)
    print(f"preference loss {pref}, held-out NLL {nll}, kept step {r.best_step}")
    kept = r.best_step
    assert kept > 0 and pref[kept] < pref[0] and nll[kept] <= nll[0] * 1.01 and r.best_nll == pytest.approx(nll[kept])
    assert r.nll_before == pytest.approx(nll[0])
    # no rise of the held-out NLL allowed: every trained adapter is refused, the parent's is kept, and the writer is told
    from mimetic.core.events import Warning as Warn

    events = []
    strict = polish(ws, parent, PolishConfig(**PC, max_steps=4, max_nll_rise=0.0), feedback=feedback_examples(ws, parent),
                    on_event=events.append)
    assert strict.best_step == 0 and any(isinstance(e, Warn) and "not kept" in e.message for e in events)


def test_no_marks_is_refused_before_a_run_is_made(tmp_path, tiny_model):
    from mimetic.voice.generate import feedback_examples

    ws = trained_voice(tmp_path, tiny_model, max_steps=2)
    runs = sorted(p.name for p in ws.runs_dir.iterdir())
    with pytest.raises(MimeticError, match="no marks"):
        polish(ws, feedback=feedback_examples(ws))
    assert sorted(p.name for p in ws.runs_dir.iterdir()) == runs
    r = CliRunner().invoke(app, ["polish", "--from-feedback", "-w", str(ws.root)])
    assert r.exit_code != 0 and "mimetic rate" in r.output and "Traceback" not in r.output


def test_cli_polish_from_feedback(marked):
    ws, parent = marked
    vc = ws.load_config()
    vc.polish = PolishConfig(**PC)
    ws.save_config(vc)
    r = CliRunner().invoke(app, ["polish", parent, "--from-feedback", "--max-steps", "2", "-w", str(ws.root)])
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())  # the terminal's line wrapping undone
    assert "Learning from 16 marks: 8 picks among drafts (DPO), 4 texts kept or discarded (KTO)" in out
    assert "preferred the text you chose" in out and "New run:" in out
    r = CliRunner().invoke(app, ["train", "--from-feedback", "--max-steps", "1", "-w", str(ws.root)])  # the spelling
    assert r.exit_code == 0 and "Learning from 16 marks" in " ".join(r.output.split()), r.output
