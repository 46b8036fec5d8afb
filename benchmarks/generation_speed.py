"""Generation speed: transformers vs llama.cpp on the same voice, in one run (issue 32).

A small voice on the embedded SmolLM2-135M-Instruct (the first ``--words`` words of
``../shared/corpora/authors/doyle/``, else synthetic prose; ``--steps`` LoRA steps, r 16) is
trained once into ``--workspace`` and reused. Then, for each engine, opened through
:func:`mimetic.models.engines.open_voice` with ``engine`` forced:

* **load**: opening the engine. Three engines: ``merged`` — llama.cpp on the voice merged into
  ``runs/<id>/voice-q8_0.gguf`` (what a finished run makes for a small base model; the merge is
  timed here as part of load), ``adapter`` — llama.cpp on the base model's GGUF with the adapter
  converted to ``runs/<id>/adapter.gguf`` and applied at load, and ``transformers`` (PEFT);
* **write**: one stream of ``--tokens`` new tokens (``mimetic write``; the voice stops early only
  at its end-of-text token), seconds after load and tokens/s;
* **best-of**: ``mimetic write --best-of N`` (N drafts of ``--tokens`` tokens, ranked by style);
* **samples**: evaluate's samples (:func:`mimetic.evaluation.evaluate.generate_samples`: the base
  model and the voice continue held-out openings until each has written ``--sample-words`` words).

The engines sample with the same settings (``[generate]`` defaults: temperature 1, top-p 0.95, top-k 50),
so they write texts of the same kind but not the same texts; tokens/s counts the tokens each
actually wrote. The CPU (``lscpu`` model name) and the threads are printed with the table, and the
ratios are llama.cpp (merged, and adapter) over transformers from this one run.

    .venv/bin/python benchmarks/generation_speed.py                    # about 5 minutes on 2 cores
    .venv/bin/python benchmarks/generation_speed.py --sample-words 10000 --best-of 8
    .venv/bin/python benchmarks/generation_speed.py --workspace DIR --parallel 8,16,24,32,48
    .venv/bin/python benchmarks/generation_speed.py --workspace DIR --base-types
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "authors" / "doyle"


def cpu_name() -> str:
    """``lscpu``'s model name (or the platform's processor string)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    import platform

    return platform.processor() or "unknown CPU"


def make_voice(root: Path, words: int, steps: int) -> "object":
    """A workspace at ``root`` with a small embedded voice trained (reused when already there)."""
    from mimetic import PrepareConfig, TrainConfig, Workspace, ingest, prepare, train

    ws = Workspace.open(root)
    if ws.finished_runs():
        return ws
    src = root.parent / f"{root.name}-writing"
    src.mkdir(parents=True, exist_ok=True)
    if SHARED.exists():
        text = "\n\n".join(f.read_text() for f in sorted(SHARED.glob("*.txt")))
    else:  # synthetic stand-in
        import random

        rng = random.Random(0)
        vocab = "the of and a to in he was that it his with as had for you on at by but not her she said".split()
        text = "\n\n".join(" ".join(rng.choices(vocab, k=120)).capitalize() + "." for _ in range(2000))
    paras, n = [], 0
    for p in text.split("\n\n"):
        if p.strip():
            paras.append(p.strip())
            n += len(p.split())
        if n >= words:
            break
    per = max(1, len(paras) // 20)
    for i in range(0, len(paras), per):
        (src / f"part-{i // per:03d}.txt").write_text("\n\n".join(paras[i : i + per]), encoding="utf-8")
    ingest([src], ws)
    prepare(ws, PrepareConfig(max_tokens=256), base_model="embedded")
    train(ws, TrainConfig(base_model="embedded", max_steps=steps, batch_size=4, eval_every=1000, eval_tokens=512,
                          learning_rate=1e-3, lora_r=16, lora_alpha=32))
    return ws


def bench(ws: object, engine: str, tokens: int, best_of: int, sample_words: int) -> dict:
    """The figures of one engine (see the module docstring)."""
    from mimetic import EvaluateConfig, GenerateConfig
    from mimetic.corpus.prepare import load_split
    from mimetic.evaluation.evaluate import generate_samples
    from mimetic.models.engines import open_voice
    from mimetic.text.stylometry import words
    from mimetic.voice.generate import held_out_prompts, style_profile, write

    prompt = held_out_prompts(ws, 1, 40)[0]
    style_profile(ws)  # fitted once, outside the timings
    lines: list[str] = []
    from mimetic.models.engines import MERGED_GGUF, run_merged_gguf

    run_dir = ws.run_dir(None)
    t = time.perf_counter()
    if engine == "merged":
        run_merged_gguf(run_dir, ws.load_config().train.base_model)
    elif engine == "adapter":
        (run_dir / MERGED_GGUF).unlink(missing_ok=True)
    voice = open_voice(ws, engine="transformers" if engine == "transformers" else "llama.cpp", on_event=lambda e: lines.append(e.message))
    row: dict = {"engine": engine, "load_s": time.perf_counter() - t, "said": lines[0] if lines else ""}
    gc = GenerateConfig(max_new_tokens=tokens, seed=0)
    write(ws, prompt, GenerateConfig(max_new_tokens=8, seed=99), voice=voice)  # warm-up (first-call allocations)
    t = time.perf_counter()
    g = write(ws, prompt, gc, voice=voice)[0]
    row["write_s"], row["write_tokens"] = time.perf_counter() - t, g.new_tokens
    t = time.perf_counter()
    drafts = write(ws, prompt, gc, voice=voice, best_of=best_of)
    row["best_of_s"], row["best_of_tokens"] = time.perf_counter() - t, sum(d.new_tokens for d in drafts)
    held = load_split(ws, "held_out")
    ec = EvaluateConfig(sample_words=sample_words, prefix_tokens=32)
    t = time.perf_counter()
    samples = generate_samples(voice, held, ec, GenerateConfig(), lambda m: None)
    row["samples_s"] = time.perf_counter() - t
    row["samples_words"] = sum(len(words(s["voice"])) + len(words(s["base"])) for s in samples)
    row["samples_passages"] = len(samples)
    del voice
    return row


def parallel_sweep(ws: object, sizes: list[int], prompts: int, tokens: int) -> list[dict]:
    """llama.cpp's batched decoding (the merged voice) by group size: ``prompts`` held-out openings
    of 64 tokens, ``tokens`` new tokens each ([generate] sampling), sent in groups of each size in
    ``sizes``; tokens/s per size (what :attr:`mimetic.models.engines.GGUFVoice.parallel` is set by)."""
    from mimetic.core.config import VoiceConfig
    from mimetic.corpus.prepare import load_split
    from mimetic.models.engines import GGUFVoice, prompt_ids
    from mimetic.models.sampling import SamplingParams

    voice = GGUFVoice.load_run(ws)
    held = load_split(ws, "held_out")
    openings = [prompt_ids(voice.tokenizer, "completion", held[i % len(held)]["text"])[:64] for i in range(prompts)]
    params = SamplingParams.from_config(VoiceConfig().generate, max_new_tokens=tokens)
    out = []
    for n in sizes:
        voice.parallel = n  # slots: all the openings in one call, a slot refilled as a passage ends
        t = time.perf_counter()
        made = sum(len(o) for o in voice.generate_parallel(openings, params, list(range(prompts))))
        out.append({"parallel": n, "tokens": made, "seconds": time.perf_counter() - t})
        print(json.dumps(out[-1]), flush=True)
    return out


def base_types(ws: object, prompts: int, tokens: int, repeats: int = 2) -> list[dict]:
    """The base model beside a merged voice (evaluate's and ``compare``'s base-model side) in
    llama.cpp from two files, timed in turn ``repeats`` times: the embedded GGUF as it ships
    (Q4_1) and its Q8_0 copy (:data:`mimetic.models.engines.BASE_BESIDE_MERGED`); ``prompts``
    held-out openings of 64 tokens, ``tokens`` new tokens each, all in one call."""
    from mimetic.core.config import VoiceConfig
    from mimetic.corpus.prepare import load_split
    from mimetic.models.engines import BASE_BESIDE_MERGED, GGUFVoice, _threads, base_gguf, open_gguf, prompt_ids
    from mimetic.models.loading import load_tokenizer
    from mimetic.models.sampling import SamplingParams

    name = ws.load_config().train.base_model
    tokenizer = load_tokenizer(name)
    files = {"as shipped": base_gguf(name)[0], BASE_BESIDE_MERGED: base_gguf(name, BASE_BESIDE_MERGED)[0]}
    held = load_split(ws, "held_out")
    openings = [prompt_ids(tokenizer, "completion", held[i % len(held)]["text"])[:64] for i in range(prompts)]
    params = SamplingParams.from_config(VoiceConfig().generate, max_new_tokens=tokens)
    voices = {k: GGUFVoice(open_gguf(f, n_ctx=4096, verbose=False, n_threads=_threads(), n_threads_batch=_threads()), tokenizer,
                           name, str(f), "completion") for k, f in files.items()}
    out = []
    for r in range(repeats):
        for k, voice in voices.items():
            t = time.perf_counter()
            made = sum(len(o) for o in voice.generate_parallel(openings, params, list(range(prompts))))
            out.append({"base": k, "file": Path(voice.adapter).name, "repeat": r, "tokens": made, "seconds": time.perf_counter() - t})
            print(json.dumps(out[-1]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, default=Path("/tmp/mimetic-genbench/voice"))
    ap.add_argument("--words", type=int, default=20_000, help="words of the writer's text to train on")
    ap.add_argument("--steps", type=int, default=4, help="LoRA training steps (a small adapter is enough to time)")
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--best-of", type=int, default=8)
    ap.add_argument("--sample-words", type=int, default=1000, help="evaluate's samples: words from each model")
    ap.add_argument("--engines", default="merged,adapter,transformers")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--parallel", help="instead: llama.cpp's batched decoding by slots, e.g. 8,16,24,32,48")
    ap.add_argument("--base-types", action="store_true", help="instead: the base model's GGUF as shipped against its Q8_0 copy")
    args = ap.parse_args()

    import torch

    from mimetic.models.engines import _threads
    from mimetic.models.loading import quiet_hf

    quiet_hf()
    ws = make_voice(args.workspace, args.words, args.steps)
    if args.parallel:
        sweep = parallel_sweep(ws, [int(x) for x in args.parallel.split(",")], 48, 256)
        print(f"\nCPU: {cpu_name()} · llama.cpp threads {_threads()} · 48 openings × 256 new tokens, one call")
        for r in sweep:
            print(f"{r['parallel']:>3} at once: {r['tokens'] / r['seconds']:6.1f} tokens/s ({r['seconds']:.1f} s)")
        return
    if args.base_types:
        rows = base_types(ws, 56, 256)
        print(f"\nCPU: {cpu_name()} · llama.cpp threads {_threads()} · 56 openings × 256 new tokens, one call")
        for r in rows:
            print(f"{r['base']:<11} {r['file']:<44} {r['tokens'] / r['seconds']:6.1f} tokens/s ({r['seconds']:.1f} s)")
        return
    rows = []
    for e in args.engines.split(","):
        rows.append(bench(ws, e, args.tokens, args.best_of, args.sample_words))
        print(json.dumps(rows[-1]), flush=True)  # each engine's figures as soon as they are measured
    print(f"\nCPU: {cpu_name()} · {os.cpu_count()} CPUs, {_threads()} usable · torch threads {torch.get_num_threads()}, "
          f"llama.cpp threads {_threads()} · run {ws.finished_runs()[-1]} (embedded SmolLM2-135M-Instruct, Q4_1 GGUF)")
    print(f"{'engine':<13} {'load s':>7} {'write s':>8} {'tok/s':>7} {f'best-of {args.best_of} s':>12} {'tok/s':>7} "
          f"{'samples s':>10} {'words/s':>8}")
    for r in rows:
        print(f"{r['engine']:<13} {r['load_s']:7.1f} {r['write_s']:8.2f} {r['write_tokens'] / r['write_s']:7.1f} "
              f"{r['best_of_s']:12.2f} {r['best_of_tokens'] / r['best_of_s']:7.1f} {r['samples_s']:10.1f} "
              f"{r['samples_words'] / r['samples_s']:8.1f}")
        print(f"{'':13} said: {r['said']}; write {r['write_tokens']} tokens, best-of {r['best_of_tokens']} tokens, "
              f"samples {r['samples_words']} words from {r['samples_passages']} passages (base + voice)")
    by = {r["engine"]: r for r in rows}
    rate = lambda r, k: r[f"{k}_tokens"] / r[f"{k}_s"]  # noqa: E731
    for name in ("merged", "adapter"):
        if {"transformers", name} <= set(by):
            t, lc = by["transformers"], by[name]
            print(f"llama.cpp {name} / transformers: write {rate(lc, 'write') / rate(t, 'write'):.1f}x tokens/s, "
                  f"best-of {rate(lc, 'best_of') / rate(t, 'best_of'):.1f}x tokens/s, "
                  f"samples {(lc['samples_words'] / lc['samples_s']) / (t['samples_words'] / t['samples_s']):.1f}x words/s")
    if {"merged", "adapter"} <= set(by):
        print(f"merged / adapter: write {rate(by['merged'], 'write') / rate(by['adapter'], 'write'):.2f}x tokens/s")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "threads": _threads(), "rows": rows}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
