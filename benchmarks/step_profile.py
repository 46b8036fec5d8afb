"""Where a training step goes: mimetic's LoRA step on the embedded SmolLM2-135M, variant by variant.

Each variant runs in this one process on the same batch (``--batch`` rows of ``--seq`` tokens of
real text when ../shared is present), alternating, ``--steps`` timed steps each after two
warm-up steps: forward, backward, AdamW step. Reports ms per step, tokens/s, MFU against this
CPU's best measured matmul (fp32 and bf16, 2048³), and with ``--profile`` the top operators of
the default variant from ``torch.profiler``.

    .venv/bin/python benchmarks/step_profile.py --steps 4 --profile

Variants are compared only as ratios within one run (CPUs differ between machines).
"""

from __future__ import annotations

import argparse
import time

from train_throughput import peak_gflops  # the same matmul peak as the throughput benchmark

VARIANTS = {
    # name: TrainConfig changes, and whether the loss is the fused chunked one (mimetic.models.nll)
    "fp32 weights, dropout 0.05, full logits (old default)": (dict(base_weights="fp32", lora_dropout=0.05), False),
    "fp32 weights, no dropout, full logits": (dict(base_weights="fp32", lora_dropout=0.0), False),
    "fp32 weights, no dropout, fused loss": (dict(base_weights="fp32", lora_dropout=0.0), True),
    "bf16 weights, no dropout, fused loss, flash attention (session 8 default)": (dict(base_weights="bf16", lora_dropout=0.0, attention="sdpa"), True),
    "bf16 weights, no dropout, fused loss, matmul attention, PEFT's LoRA forward, one query block (previous default)": (dict(base_weights="bf16", lora_dropout=0.0, lora="peft", blocks=1), True),
    "bf16 weights, no dropout, fused loss, matmul attention, LoRA fused, one query block": (dict(base_weights="bf16", lora_dropout=0.0, blocks=1), True),
    "bf16 weights, no dropout, fused loss, matmul attention, LoRA fused, 4 query blocks (new default)": (dict(base_weights="bf16", lora_dropout=0.0), True),
    "bf16 weights, dropout 0.05, fused loss": (dict(base_weights="bf16", lora_dropout=0.05), True),
    # attention kernels (transformers' attn_implementation: "sdpa" is PyTorch's SDPA, its flash
    # kernel on a CPU; "sdpa-math" is SDPA restricted to its math backend; without "attention",
    # mimetic's own choice: mimetic.models.attention in bf16 on a CPU)
    "new default, transformers' eager attention": (dict(base_weights="bf16", lora_dropout=0.0, attention="eager"), True),
    "new default, SDPA math backend": (dict(base_weights="bf16", lora_dropout=0.0, attention="sdpa-math"), True),
    # where the CPU probe picks fp32 (no fast bf16: an AVX2-only CPU), PyTorch's SDPA flash kernel
    # for attention; mimetic.models.attention in fp32 was tried at commit 5e77227 (RESULTS.md)
    "fp32, no dropout, fused loss, LoRA fused, SDPA flash attention (fp32 default)": (dict(base_weights="fp32", lora_dropout=0.0), True),
    "fp32, no dropout, fused loss, PEFT's LoRA forward, SDPA flash attention": (dict(base_weights="fp32", lora_dropout=0.0, lora="peft"), True),
}


def batch_rows(tokenizer, batch: int, seq: int) -> list[dict]:
    from pathlib import Path

    shared = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "authors" / "doyle"
    text = " ".join(f.read_text()[:200_000] for f in sorted(shared.glob("*.txt"))[:1]) if shared.exists() else "the cat sat " * 20000
    ids = tokenizer(text)["input_ids"]
    return [{"input_ids": ids[i * seq:(i + 1) * seq], "labels": ids[i * seq:(i + 1) * seq]} for i in range(batch)]


def main() -> None:
    import resource

    import torch

    from mimetic.core.config import TrainConfig, replace
    from mimetic.models.loading import autocast, load_tokenizer, pick_precision
    from mimetic.models import attention as attention_module
    from mimetic.models import nll
    from mimetic.models.nll import collate
    from mimetic.training.sft import lora_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--only", default="")
    ap.add_argument("--precision", default="", help="compute precision (default: what the CPU probe picks)")
    args = ap.parse_args()
    precision = args.precision or pick_precision("cpu")

    peaks = {d: peak_gflops(d) for d in ("float32", "bfloat16")}
    best_peak = max(peaks.values())
    print(f"matmul peak: fp32 {peaks['float32']:.0f} GFLOP/s, bf16 {peaks['bfloat16']:.0f} GFLOP/s; "
          f"probe picks {pick_precision('cpu')}; compute precision {precision}")
    tok = load_tokenizer("embedded")
    batch = collate(batch_rows(tok, args.batch, args.seq), tok.pad_token_id or 0)
    tokens = int(batch["attention_mask"].sum())
    models = {}
    attentions: dict[str, str] = {}
    query_blocks: dict[str, int] = {}  # mimetic.models.attention's query blocks per variant
    for name, (changes, fused) in VARIANTS.items():
        if args.only and args.only not in name:
            continue
        changes = dict(changes)
        attention = changes.pop("attention", "default")
        lora_forward = changes.pop("lora", "fused")
        query_blocks[name] = changes.pop("blocks", attention_module.BLOCKS)
        cfg = replace(TrainConfig(base_model="embedded"), **changes)
        torch.manual_seed(0)
        model, params = lora_model(cfg, "cpu", precision)
        if attention != "default":  # else mimetic's choice (mimetic.models.attention on a bf16 CPU)
            model.base_model.model.config._attn_implementation = "eager" if attention == "eager" else "sdpa"
        attentions[name] = attention
        if lora_forward == "peft":  # PEFT's own LoRA forward instead of mimetic.models.lora's fused step
            for module in model.modules():
                module.__dict__.pop("forward", None)
        opt = torch.optim.AdamW(params, lr=1e-5)
        models[name] = (model, params, opt, fused)
    n_params = sum(p.numel() for p in next(iter(models.values()))[0].parameters())
    amp = autocast("cpu", precision)
    times: dict[str, list[float]] = {name: [] for name in models}
    first_loss: dict[str, float] = {}
    own_head = nll.fused_head

    def step(name: str) -> float:
        model, params, opt, fused = models[name]
        nll.fused_head = own_head if fused else (lambda m: None)
        from contextlib import nullcontext

        from torch.nn.attention import SDPBackend, sdpa_kernel

        kernel = sdpa_kernel(SDPBackend.MATH) if attentions[name] == "sdpa-math" else nullcontext()
        attention_module.BLOCKS = query_blocks[name]
        t = time.perf_counter()
        with kernel:
            s, c = nll.token_nll_sum(model, batch, "cpu", amp)
            (s / c).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        first_loss.setdefault(name, float(s) / c)
        return time.perf_counter() - t

    for name in models:
        for _ in range(2):
            step(name)
    for _ in range(args.steps):
        for name in models:
            times[name].append(step(name))
    print(f"{args.batch} × {args.seq} tokens ({tokens:,} real), {n_params / 1e6:.0f}M parameters; "
          f"MFU = 6 · parameters · tokens/s (LoRA: about 4 ·, frozen weights need no weight gradient) shown as 4·N·tok/s")
    base = None
    for name, ts in times.items():
        ms = 1000 * min(ts)
        tps = tokens / min(ts)
        base = base or tps
        mfu = 4 * n_params * tps / 1e9 / best_peak
        print(f"{name:52s} {ms:7.0f} ms {tps:6.0f} tok/s ×{tps / base:.2f}  MFU {100 * mfu:3.0f}%  "
              f"first-step loss {first_loss[name]:.4f}")
    print(f"peak RSS of this process (all variants loaded): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name in models:
            step(name)  # the last one profiled: the new default's breakdown
        name = [n for n in models if "new default" in n][0] if any("new default" in n for n in models) else next(iter(models))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(name)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
