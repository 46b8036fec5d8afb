"""Training throughput: mimetic's trainer vs an earlier commit's vs TRL ``SFTTrainer`` (defaults + PEFT) vs HF ``Trainer``.

Same base model (the embedded SmolLM2-135M-Instruct), same data (the first ``--words`` words of
``../shared/corpora/authors/doyle/``, cut by ``mimetic prepare`` into chunks of at most ``--seq``
tokens; TRL and Trainer get exactly those chunk texts), same LoRA config (r 16, alpha 32, dropout
0.05, all linear layers), same batch size and number of optimizer steps. Each configuration runs in
its own process (so peak RSS is its own), one after the other, ``--repeats`` rounds interleaved.

Reports real (non-padding) training tokens per second, peak RSS, ratios against TRL defaults, and
model FLOP utilisation: ``4 · parameters · tokens/s`` (forward + input-gradient backward of the
frozen model) against this CPU's fp32 and bf16 matmul peak, measured by the same script.

    .venv/bin/pip install trl==1.16.0      # the benchmark's only extra
    .venv/bin/python benchmarks/train_throughput.py --steps 12 --repeats 2

``mimetic-flash`` is this trainer with PyTorch's SDPA attention (the CPU flash kernel) instead of
:mod:`mimetic.models.attention`. ``mimetic-baseline`` runs the same call on an earlier commit's code, each with its own defaults
(give its ``src`` folder: ``git worktree add /tmp/mimetic-baseline 563b509`` then
``--baseline-src /tmp/mimetic-baseline/src``).

Results and the reproduce command go to ``benchmarks/RESULTS.md`` by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "authors" / "doyle"
CONFIGS = ["mimetic-baseline", "mimetic-flash", "mimetic", "trl-defaults", "trl-fp32", "trainer-bf16"]


def prepare_data(root: Path, words: int, seq: int) -> Path:
    """A mimetic workspace with the benchmark's data prepared; returns its path."""
    from mimetic import PrepareConfig, Workspace, ingest, prepare

    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    if SHARED.exists():
        text = " ".join(f.read_text() for f in sorted(SHARED.glob("*.txt")))
    else:  # synthetic stand-in when the shared corpora are absent
        import random

        rng = random.Random(0)
        vocab = "the of and a to in he was that it his with as had for you on at by but not".split()
        text = "\n\n".join(" ".join(rng.choices(vocab, k=120)).capitalize() + "." for _ in range(2000))
    paras, n = [], 0
    for p in text.split("\n\n"):
        paras.append(p)
        n += len(p.split())
        if n >= words:
            break
    for i in range(0, len(paras), 40):
        (src / f"part{i // 40:03d}.txt").write_text("\n\n".join(paras[i : i + 40]))
    ws = Workspace.open(root / "voice")
    ingest([src], ws)
    prepare(ws, PrepareConfig(max_tokens=seq, held_out_fraction=0.05, min_held_out_documents=1), base_model="embedded")
    return ws.root


def peak_gflops(dtype_name: str) -> float:
    """Best of a few (2048×2048)·(2048×2048) matmuls on the CPU after a warm-up, GFLOP/s
    (:func:`mimetic.models.hardware.matmul_gflops`, what ``--base-model auto`` measures). bf16 on
    a CPU where mimetic's probe finds it slower than fp32 (no bf16 instructions: one 2048³ matmul
    took 20 s on an AVX2-only AMD EPYC) is measured at 512³ instead: it is not the peak."""
    from mimetic.models.hardware import matmul_gflops
    from mimetic.models.loading import cpu_bf16_is_faster

    if dtype_name == "bfloat16" and not cpu_bf16_is_faster():
        return matmul_gflops("cpu", dtype_name, n=512, repeats=2, warmup=1)
    return matmul_gflops("cpu", dtype_name)


def run_one(name: str, ws_path: Path, steps: int, batch: int) -> dict:
    """Train ``steps`` optimizer steps with configuration ``name``; returns tokens/s and memory."""
    from peft import LoraConfig

    from mimetic import TrainConfig, Workspace
    from mimetic.models.loading import load_model, load_tokenizer
    from mimetic.corpus.prepare import load_split

    ws = Workspace.open(ws_path, create=False)
    if name.startswith("mimetic"):  # each commit with its own defaults (dropout, weight dtype, loss)
        import inspect

        from mimetic import train

        if name == "mimetic-flash":  # this trainer with PyTorch's SDPA (its CPU flash kernel) for attention
            from mimetic.models import attention

            attention.use_for_training = lambda *a: False
        cfg = TrainConfig(base_model="embedded", max_steps=steps, batch_size=batch, eval_every=10**6, checkpoint_every=10**6,
                          warmup_ratio=0.0)
        old_api = "progress" in inspect.signature(train).parameters
        r = train(ws, cfg, progress=False) if old_api else train(ws, cfg)
        s = json.loads((r.run_dir / "summary.json").read_text())
        return {"tokens_per_s": r.tokens_per_s, "tokens": r.train_tokens,
                "precision": f"{s['precision']}, weights {cfg.base_weights}, dropout {cfg.lora_dropout}"}

    from datasets import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    texts = list(load_split(ws, "train")["text"])
    tok = load_tokenizer("embedded")
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    seen = {"tokens": 0}

    class Counting:
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, features):
            out = self.inner(features)
            seen["tokens"] += int(out["attention_mask"].sum()) if "attention_mask" in out else int(out["input_ids"].numel())
            return out

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            seen["t0"] = time.perf_counter()

        def on_train_end(self, *a, **k):
            seen["t1"] = time.perf_counter()

    out_dir = tempfile.mkdtemp()
    model = load_model("embedded", "cpu", "fp32")
    if name.startswith("trl-"):  # trl-fp32: its defaults but bf16 off, for a CPU without bf16 instructions
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(output_dir=out_dir, max_steps=steps, per_device_train_batch_size=batch, max_length=None, report_to=[],
                         use_cpu=True, save_strategy="no", logging_steps=10**6, dataloader_num_workers=0,
                         **({"bf16": False} if name == "trl-fp32" else {}))
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": texts}), processing_class=tok,
                             peft_config=lora, callbacks=[Clock()])
    else:
        from peft import get_peft_model
        from transformers import DataCollatorForLanguageModeling

        model = get_peft_model(model, lora)
        ds = Dataset.from_dict({"text": texts}).map(lambda b: tok(b["text"]), batched=True, remove_columns=["text"])
        args = TrainingArguments(output_dir=out_dir, max_steps=steps, per_device_train_batch_size=batch, report_to=[],
                                 use_cpu=True, save_strategy="no", logging_steps=10**6, bf16=name == "trainer-bf16",
                                 dataloader_num_workers=0, learning_rate=2e-4)
        trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[Clock()],
                          data_collator=DataCollatorForLanguageModeling(tok, mlm=False))
    trainer.data_collator = Counting(trainer.data_collator)
    trainer.train()
    return {"tokens_per_s": seen["tokens"] / (seen["t1"] - seen["t0"]), "tokens": seen["tokens"],
            "precision": "bf16 autocast" if name == "trainer-bf16" or (name == "trl-defaults" and args.bf16) else "fp32"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--baseline-src", help="src folder of the earlier commit for mimetic-baseline")
    ap.add_argument("--words", type=int, default=40_000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if a.one:
        r = run_one(a.one, Path(a.data), a.steps, a.batch)
        r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(r))
        return
    import torch

    root = Path(tempfile.mkdtemp(prefix="mimetic-bench-"))
    data = prepare_data(root, a.words, a.seq)
    peaks = {d: peak_gflops(d) for d in ("float32", "bfloat16")}
    from mimetic.models.loading import load_model

    n_params = sum(p.numel() for p in load_model("embedded", "cpu", "fp32").parameters())
    results: dict[str, list[dict]] = {c: [] for c in a.configs.split(",")}
    for rep in range(a.repeats):
        for c in results:
            cmd = [sys.executable, __file__, "--one", c, "--data", str(data), "--steps", str(a.steps), "--batch", str(a.batch)]
            env = dict(os.environ)
            if c == "mimetic-baseline":
                if not a.baseline_src:
                    print("mimetic-baseline: skipped (no --baseline-src)")
                    continue
                env["PYTHONPATH"] = a.baseline_src
                old_data = data.parent / "voice-baseline"  # without the settings file the newer code wrote
                if not old_data.exists():
                    shutil.copytree(data, old_data)
                    (old_data / "mimetic.toml").write_text("")  # the older code's defaults
                cmd[cmd.index(str(data))] = str(old_data)
            p = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(f"{c}: failed\n{p.stderr[-2000:]}")
                continue
            results[c].append(json.loads(line[7:]))
            print(f"round {rep + 1}: {c:20s} {results[c][-1]['tokens_per_s']:7.1f} tokens/s", flush=True)
    for d, before_runs in list(peaks.items()):  # measured again after the runs: the CPU's speed moves within minutes
        peaks[d] = max(before_runs, peak_gflops(d))
    print(f"\nSmolLM2-135M ({n_params / 1e6:.0f}M parameters), LoRA r16/α32, batch {a.batch} × ≤{a.seq} tokens, {a.steps} steps, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; matmul peak (best of before and after) fp32 {peaks['float32']:.0f}, "
          f"bf16 {peaks['bfloat16']:.0f} GFLOP/s")
    base = max((r["tokens_per_s"] for r in results.get("trl-defaults", [])), default=None)
    trl32 = max((r["tokens_per_s"] for r in results.get("trl-fp32", [])), default=None)
    before = max((r["tokens_per_s"] for r in results.get("mimetic-baseline", [])), default=None)
    best_peak = max(peaks.values())
    print(f"| configuration | precision | tokens/s (best of {a.repeats}) | × TRL defaults | × TRL fp32 | × baseline | peak RSS (GB) | MFU vs best peak |")
    print("|---|---|---|---|---|---|---|---|")
    for c, rs in results.items():
        if not rs:
            continue
        best = max(rs, key=lambda r: r["tokens_per_s"])
        mfu = 4 * n_params * best["tokens_per_s"] / (best_peak * 1e9)
        ratio = f"{best['tokens_per_s'] / base:.2f}" if base else "–"
        vs = f"{best['tokens_per_s'] / before:.2f}" if before else "–"
        vs32 = f"{best['tokens_per_s'] / trl32:.2f}" if trl32 else "–"
        print(f"| {c} | {best['precision']} | {best['tokens_per_s']:.0f} | {ratio} | {vs32} | {vs} | {best['peak_rss_mb'] / 1024:.1f} | {100 * mfu:.0f}% |")


if __name__ == "__main__":
    main()
