"""Training in several processes through accelerate (DDP, gloo on this CPU).

Two processes with 2 examples each per step must follow one process with 4 examples per step:
the same global batches, the same token-weighted loss, the same held-out NLL and adapter.
Dropout is off, so the only differences are the order of floating-point sums.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_corpus
from mimetic import TrainConfig, Workspace, ingest, prepare, train


def _metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("dist")
    ws = Workspace.open(root / "voice")
    ingest([make_corpus(root / "writing", n_docs=30, paragraphs=6)], ws)
    prepare(ws, base_model=tiny_model)
    return ws


def test_two_processes_follow_the_single_process_loss_curve(prepared, tiny_model):
    ws = prepared
    settings = dict(base_model=tiny_model, max_steps=6, eval_every=3, log_every=1, learning_rate=1e-2,
                    precision="fp32", lora_dropout=0.0)
    one = train(ws, TrainConfig(batch_size=4, **settings))

    vc = ws.load_config()
    vc.train = TrainConfig(batch_size=2, **settings)
    ws.save_config(vc)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-m", "mimetic", "train", "--workspace", str(ws.root), "--processes", "2"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-9000:]
    assert "Starting 2 training processes" in proc.stdout
    assert proc.stdout.count("Run ") == 1  # only the main process reports
    two_dir = ws.run_dir()
    assert two_dir != one.run_dir

    summary = json.loads((two_dir / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["global_batch_size"] == 4
    a, b = _metrics(one.run_dir), _metrics(two_dir)
    train_a = [(m["step"], m["train_loss"], m["tokens"]) for m in a if "train_loss" in m]
    train_b = [(m["step"], m["train_loss"], m["tokens"]) for m in b if "train_loss" in m]
    assert [x[0] for x in train_a] == [x[0] for x in train_b] == [1, 2, 3, 4, 5, 6]
    assert [x[2] for x in train_a] == [x[2] for x in train_b]  # the same examples, step by step
    for (_, la, _), (_, lb, _) in zip(train_a, train_b):
        assert lb == pytest.approx(la, rel=1e-4)
    held_a = [(m["step"], m["held_out_nll"]) for m in a if "held_out_nll" in m]
    held_b = [(m["step"], m["held_out_nll"]) for m in b if "held_out_nll" in m]
    assert [s for s, _ in held_a] == [s for s, _ in held_b] == [0, 3, 6]
    assert held_b[0][1] == pytest.approx(held_a[0][1], rel=1e-6)  # the base model, scored in two halves
    for (_, x), (_, y) in zip(held_a, held_b):
        assert y == pytest.approx(x, rel=1e-4)
    wa = load_file(str(one.run_dir / "adapter" / "adapter_model.safetensors"))
    wb = load_file(str(two_dir / "adapter" / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-4), k


def test_resuming_with_another_number_of_processes_is_refused(prepared, tiny_model):
    from mimetic.errors import TrainingInterrupted

    ws = prepared
    c = TrainConfig(base_model=tiny_model, max_steps=4, batch_size=2, eval_every=2, precision="fp32")
    with pytest.raises(TrainingInterrupted):
        train(ws, c, should_stop=lambda run: run.state.step == 2)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-m", "mimetic", "train", "--workspace", str(ws.root), "--resume", "latest", "--processes", "2"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode != 0
    assert "trained by 1 process" in proc.stderr and "--processes 1" in proc.stderr
    assert "Traceback" not in proc.stderr


RESUME_SCRIPT = """
import json, sys
from mimetic import TrainConfig, Workspace, train
from mimetic.errors import TrainingInterrupted
from mimetic.models.distributed import is_main_process, leave_process_group

ws = Workspace.open(sys.argv[1], create=False)
c = TrainConfig(base_model=sys.argv[2], max_steps=6, batch_size=2, eval_every=3, learning_rate=1e-2,
                precision="fp32", lora_dropout=0.1)
full = train(ws, c)
try:
    train(ws, c, should_stop=lambda run: run.state.step == 2)
except TrainingInterrupted as e:
    stopped = ws.run_dir(finished=False).name  # the interrupted run: not finished
resumed = train(ws, resume=stopped)
if is_main_process():
    print(json.dumps({"full": full.run_id, "resumed": resumed.run_id, "stopped": stopped}))
leave_process_group()
"""


def test_two_processes_resume_exactly_after_an_interruption(prepared, tiny_model, tmp_path):
    """With dropout on, each process's RNG must be saved and restored for an exact resume."""
    import socket

    ws = prepared
    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
         str(script), str(ws.root), tiny_model],
        capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"), timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-9000:]
    ids = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ids["resumed"] == ids["stopped"] != ids["full"]
    a = torch.load(ws.runs_dir / ids["full"] / "checkpoint" / "state.pt", weights_only=False)
    b = torch.load(ws.runs_dir / ids["resumed"] / "checkpoint" / "state.pt", weights_only=False)
    assert a["processes"] == b["processes"] == 2 and len(b["rng_by_process"]) == 2
    assert a["state"]["step"] == b["state"]["step"] == 6
    for k in a["lora"]:
        assert torch.allclose(a["lora"][k], b["lora"][k], atol=1e-6), k
