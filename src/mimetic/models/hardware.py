"""What this machine can train: a probe of the device, estimates of memory and speed for each
base model of the catalog, and the choice behind ``--base-model auto``.

The probe (:func:`probe`) reads the device (CUDA and its memory, Apple MPS and its unified
memory, or the CPU's cores and free memory) and *measures* the best matmul rate in the precision
training would use there: CPUs differ by 4× in bf16 against fp32, so nothing is assumed.

The estimates (:func:`estimate`) are formulas, not measurements, so that a 3B or 8B model can be
judged without downloading it; ``mimetic train --plan`` then measures the chosen one for real.

* Memory: frozen weights (fp32, 16-bit, or 4-bit NF4 with double quantization at about 4.13
  bits per weight, Dettmers et al. 2023, with embeddings kept in 16-bit) + LoRA weights with
  their gradients and AdamW's two moments (16 bytes each, fp32) + activations kept for the
  backward pass, ``(16·h + 6·i)`` bytes per token per layer in 16-bit (after Korthikanti et al.
  2022, "Reducing Activation Recomputation in Large Transformer Models", 34·h for a 4h MLP;
  written here for a gated MLP of width i), twice that in fp32, + the logits (16-bit, an fp32
  copy for the loss, and its gradient: 10 bytes per token per vocabulary entry) + the runtime
  (CPU: Python, torch and the tokenizer; CUDA: the context). The variable part is multiplied
  by a factor per device kind, :data:`MEMORY_CALIBRATION`.
* Speed: tokens/s = efficiency × measured matmul peak / FLOPs per token, with FLOPs per token
  ``4·N`` for the non-embedding weights (forward 2N, backward to the activations 2N; frozen
  weights get no weight gradient), ``4·V·h`` for the output layer and ``6·L·s·h`` for causal
  attention (Kaplan et al. 2020's 6N rule less the weight gradients). Efficiency per device
  kind, :data:`EFFICIENCY`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from mimetic.core.config import EMBEDDED_MODEL, TrainConfig
from mimetic.core.presets import BASE_MODELS, PRESETS, BaseModel

EFFICIENCY = {"cpu": 0.25, "cuda": 0.35, "mps": 0.25}
"""Share of the measured matmul peak a LoRA training step reaches (model FLOPs utilisation, with
this module's FLOPs per token). CPU: 0.25, SmolLM2-135M's ``train --plan`` on the Doyle voice
(286 tokens/s against a 676 GFLOP/s bf16 peak; ``benchmarks/plan_estimate.py``), 0.31 on the
real batches of ``benchmarks/train_throughput.py`` (issue 20). CUDA and MPS: not measured by
this project (no GPU or Mac was available to it): the CPU's figure for MPS, and for CUDA the
30–40% that LoRA fine-tuning reaches with SDPA on data-centre GPUs."""

QLORA_SLOWDOWN = 0.6
"""4-bit QLoRA dequantizes every weight at every matmul: its speed as a share of 16-bit LoRA's
(the QLoRA paper reports it slower, without one figure; 0.6 is this project's assumption)."""

MEMORY_CALIBRATION = {"cpu": 1.65, "cuda": 1.0, "mps": 1.0}
"""Measured / estimated size of the variable part (activations, logits), per device kind.
CPU: 1.65 (measured 1.64), from ``benchmarks/plan_estimate.py`` (SmolLM2-135M, batch 4 × 512, bf16: ``train
--plan`` measured a 4.6 GiB peak; see ``benchmarks/RESULTS.md``): eager PyTorch keeps more than
the formula's minimum (fp32 copies under autocast, the attention's intermediates). CUDA and MPS:
1.0, not measured by this project (the estimate puts the account's Qwen2.5-3B QLoRA run, batch 1
× 512 tokens in fp16, at 5.7 GB, inside the 8 GB it ran in)."""

RUNTIME_GB = {"cpu": 1.0, "cuda": 0.6, "mps": 1.0}
"""Memory used before the model: Python, torch and the tokenizer (CPU, MPS), the CUDA context."""

TOKENS_PER_WORD = 1.35
"""Tokens per English word for the catalog's tokenizers, for a corpus not yet tokenized
(SmolLM2's tokenizer on the shared novelists gives 1.3–1.4)."""


@dataclass(frozen=True)
class Hardware:
    """What :func:`probe` found.

    Attributes:
        device: ``cuda``, ``mps`` or ``cpu``.
        name: the GPU's name, ``Apple MPS``, or the CPU's model name.
        memory_gb: memory training can use: the GPU's total memory, MPS's recommended working
            set, or the RAM available now (GB, 10⁹ bytes).
        cores: CPU cores this process may use.
        precision: the compute precision training would pick here (``bf16``, ``fp16``, ``fp32``).
        peak_gflops: the best measured matmul rate in that precision, GFLOP/s.
        four_bit: 4-bit QLoRA is possible (CUDA with bitsandbytes installed).
    """

    device: str
    name: str
    memory_gb: float
    cores: int
    precision: str
    peak_gflops: float
    four_bit: bool

    def describe(self) -> str:
        """One line: the device, its memory and its measured speed."""
        what = {"cuda": "NVIDIA GPU", "mps": "Apple GPU (MPS)", "cpu": f"CPU, {self.cores} cores"}[self.device]
        memory = "memory" if self.device == "cuda" else "unified memory" if self.device == "mps" else "free memory"
        return (f"{self.name} ({what}): {self.memory_gb:.1f} GB {memory}, "
                f"{self.peak_gflops:,.0f} GFLOP/s measured in {self.precision}")


def usable_cpus() -> int:
    """How many CPUs this process may run on: its CPU affinity (``taskset``, a container's cpuset,
    a test worker pinned to one core), not the machine's count (``os.cpu_count``); at least 1.
    The thread count given to llama.cpp and to each training process: more threads than usable
    CPUs make their spinning threads wait on each other."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS has no sched_getaffinity
        return os.cpu_count() or 1


def matmul_gflops(device: str, dtype_name: str, n: int = 2048, repeats: int = 5, warmup: int = 3) -> float:
    """Best rate of ``repeats`` (n×n)·(n×n) matmuls on ``device`` in ``dtype_name``, GFLOP/s
    (2n³ FLOPs each), after ``warmup`` untimed ones: the first matmuls of a process ran at half
    speed on this project's CPU (thread pool and clocks still waking up). About 0.2 s on a CPU
    at 800 GFLOP/s, 1 s at 150."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()
        elif device == "mps":
            torch.mps.synchronize()

    for _ in range(warmup):
        a @ b
    sync()
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        sync()
        best = max(best, 2 * n**3 / max(1e-9, time.perf_counter() - t) / 1e9)
    return best


_PROBED: dict[str, Hardware] = {}


def probe(device: str = "auto") -> Hardware:
    """Look at ``device`` (``auto``: CUDA, else MPS, else CPU) and measure its matmul peak in
    the precision training would use (:func:`mimetic.models.loading.pick_precision`); once per process.

    Raises:
        MimeticError: the requested device is not available.
    """
    import importlib.util

    import psutil
    import torch

    from mimetic.models.loading import pick_device, pick_precision

    device = pick_device(device)
    if device in _PROBED:
        return _PROBED[device]
    precision = pick_precision(device)
    dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[precision]
    cores = usable_cpus()
    four_bit = False
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        name, memory = props.name, props.total_memory / 1e9
        four_bit = importlib.util.find_spec("bitsandbytes") is not None
        peak = matmul_gflops(device, dtype, n=4096, repeats=5)
    elif device == "mps":
        name = "Apple MPS"
        memory = (torch.mps.recommended_max_memory() if hasattr(torch.mps, "recommended_max_memory")
                  else psutil.virtual_memory().total * 2 / 3) / 1e9
        peak = matmul_gflops(device, dtype)
    else:
        name = _cpu_name()
        memory = psutil.virtual_memory().available / 1e9
        peak = matmul_gflops(device, dtype)
    _PROBED[device] = Hardware(device, name, memory, cores, precision, peak, four_bit)
    return _PROBED[device]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "CPU"


@dataclass(frozen=True)
class Estimate:
    """One base model's estimated training cost on the probed hardware.

    Attributes:
        model: the catalog entry.
        batch_size, grad_accum, four_bit: the settings the estimate is for (a model over 1B
            parameters is estimated at batch 1 with gradient accumulation keeping the batch).
        memory_gb: estimated peak memory of training, GB.
        tokens_per_s: estimated training speed.
        minutes: estimated minutes to train the corpus for the configured epochs (evaluation
            share included), or ``None`` when the corpus size is unknown.
        fits_memory: ``memory_gb`` × 1.1 ≤ the device's memory.
        fits_time: ``minutes`` within the time budget (always, without a budget).
        available: on this machine already: the embedded model, or in the Hugging Face cache.
    """

    model: BaseModel
    batch_size: int
    grad_accum: int
    four_bit: bool
    memory_gb: float
    tokens_per_s: float
    minutes: float | None
    fits_memory: bool
    fits_time: bool
    available: bool

    @property
    def fits(self) -> bool:
        return self.fits_memory and self.fits_time


def estimate_memory_gb(model: BaseModel, device: str, precision: str, batch_size: int, seq_len: int, lora_r: int,
                       four_bit: bool = False) -> float:
    """Estimated peak memory (GB) of LoRA training of ``model`` (see the module doc for the formula).

    Args:
        device: ``cpu``, ``cuda`` or ``mps``.
        precision: compute precision (``bf16``, ``fp16``, ``fp32``); 16-bit compute stores the
            frozen weights in 16-bit, as :func:`mimetic.models.loading.load_model` does.
        batch_size, seq_len: the micro-batch, in examples of ``seq_len`` tokens.
        lora_r: LoRA rank.
        four_bit: the frozen weights in 4-bit NF4 (QLoRA).
    """
    act_bytes = 2 if precision in ("bf16", "fp16") else 4
    if four_bit:
        weights = (model.params - model.embedding_params) * 4.127 / 8 + model.embedding_params * 2
    else:
        weights = model.params * act_bytes
    lora = model.lora_params(lora_r) * 16
    tokens = batch_size * seq_len
    h, i = model.hidden_size, model.intermediate_size
    activations = tokens * model.layers * (16 * h + 6 * i) * act_bytes / 2
    logits = tokens * model.vocab_size * 10
    variable = (activations + logits) * MEMORY_CALIBRATION[device]
    return (weights + lora + variable) / 1e9 + RUNTIME_GB[device]


def estimate_tokens_per_s(model: BaseModel, hw: Hardware, seq_len: int, four_bit: bool = False) -> float:
    """Estimated training tokens/s of ``model`` on ``hw`` (see the module doc for the formula)."""
    flops = (4 * (model.params - model.embedding_params) + 4 * model.vocab_size * model.hidden_size
             + 6 * model.layers * seq_len * model.hidden_size)
    speed = EFFICIENCY[hw.device] * hw.peak_gflops * 1e9 / flops
    return speed * (QLORA_SLOWDOWN if four_bit else 1.0)


def is_available(model_id: str) -> bool:
    """The embedded model, or a hub model that loading would find in the local Hugging Face
    cache (:func:`mimetic.models.loading.base_model_dir`: no network)."""
    if model_id == EMBEDDED_MODEL:
        return True
    from mimetic.errors import MimeticError
    from mimetic.models.loading import base_model_dir

    try:
        base_model_dir(model_id)
    except MimeticError:
        return False
    return True


def estimate(model: BaseModel, hw: Hardware, config: TrainConfig, seq_len: int, corpus_tokens: int | None) -> Estimate:
    """The :class:`Estimate` of training ``model`` on ``hw`` with ``config``'s rank, batch,
    epochs and time budget, on a corpus of ``corpus_tokens`` tokens (``None``: unknown).

    A model over 1B parameters is estimated at batch 1 (gradient accumulation keeps the batch);
    on CUDA with bitsandbytes, in 4-bit when 16-bit weights do not fit.
    """
    batch = config.batch_size if model.params < 1e9 else 1
    accum = max(1, config.batch_size * config.grad_accum // batch)
    four_bit = config.load_in_4bit and hw.four_bit

    def memory(q: bool) -> float:
        return estimate_memory_gb(model, hw.device, hw.precision, batch, seq_len, config.lora_r, q)

    mem = memory(four_bit)
    if hw.four_bit and not four_bit and mem * 1.1 > hw.memory_gb and memory(True) * 1.1 <= hw.memory_gb:
        four_bit, mem = True, memory(True)
    speed = estimate_tokens_per_s(model, hw, seq_len, four_bit)
    minutes = None
    if corpus_tokens is not None:
        minutes = config.epochs * corpus_tokens / speed / 60 / (1 - config.max_eval_share)
    fits_time = minutes is None or config.time_budget_min is None or minutes <= config.time_budget_min
    return Estimate(model, batch, accum, four_bit, mem, speed, minutes, mem * 1.1 <= hw.memory_gb, fits_time,
                    is_available(model.id))


@dataclass
class Recommendation:
    """The choice of ``--base-model auto`` and its reasons.

    Attributes:
        hardware: the probed device.
        corpus_tokens: training tokens the estimate is for (``None``: unknown).
        estimates: one per catalog model, smallest first.
        best: the largest model that fits memory and the time budget, cached or not.
        chosen: the largest that fits *and* is on this machine already (at worst the embedded model).
        preset: a preset made for ``best`` on this device, if there is one.
    """

    hardware: Hardware
    corpus_tokens: int | None
    estimates: list[Estimate]
    best: Estimate
    chosen: Estimate
    preset: str | None = None
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The reasoning, a few lines for a terminal or a log."""
        hw = self.hardware
        out = [f"This machine: {hw.describe()}."]
        if self.corpus_tokens is not None:
            out.append(f"Your writing: about {self.corpus_tokens:,} training tokens.")
        for e in self.estimates:
            mark = "→" if e is self.chosen else " "
            time_part = f", {e.minutes:,.0f} min" if e.minutes is not None else ""
            why = [] if e.fits_memory else ["too big for the memory"]
            if e.fits_memory and not e.fits_time:
                why.append("too slow for the time budget")
            if not e.available:
                why.append("not downloaded")
            out.append(f" {mark} {e.model.id}: about {e.memory_gb:.1f} GB{' in 4-bit' if e.four_bit else ''}, "
                       f"{e.tokens_per_s:,.0f} tokens/s{time_part}" + (f" ({'; '.join(why)})" if why else ""))
        out.extend(self.notes)
        return out


def recommend(config: TrainConfig, seq_len: int, corpus_tokens: int | None, hw: Hardware | None = None) -> Recommendation:
    """Estimate every catalog model on this machine and choose the largest that fits.

    "Fits": its estimated peak memory (with a 10% margin) within the device's memory and, under a
    time budget, the corpus trained for ``config.epochs`` within the budget. ``chosen`` is the
    largest that fits among the models already on this machine: mimetic makes no network call the
    writer did not ask for, so a larger model that is not downloaded is named with the command
    that downloads it, and the choice falls back to the embedded model.

    Args:
        config: the training settings (rank, batch, epochs, time budget, device, 4-bit).
        seq_len: the longest example, tokens (``prepare.max_tokens``).
        corpus_tokens: training tokens (``None``: unknown, time is not judged).
        hw: the hardware (default: :func:`probe` of ``config.device``).
    """
    hw = hw or probe(config.device)
    estimates = [estimate(m, hw, config, seq_len, corpus_tokens) for m in BASE_MODELS]
    fitting = [e for e in estimates if e.fits]
    best = fitting[-1] if fitting else estimates[0]
    chosen = ([e for e in fitting if e.available] or [estimates[0]])[-1]
    preset = next((p.name for p in PRESETS.values() if p.base_model == best.model.id and p.device == hw.device), None)
    notes = []
    if best is not chosen:
        notes.append(f"{best.model.id} would fit but is not on this machine; mimetic downloads nothing unasked. "
                     f"To use it (one download from huggingface.co): mimetic prepare --base-model {best.model.id}")
    if not fitting:
        notes.append(f"No listed model trains all of your writing in the time budget here; {chosen.model.id} "
                     "trains as much as the budget allows.")
    if preset:
        notes.append(f"--preset {preset} sets the full recipe a writer used with {best.model.id} on such a machine.")
    if hw.device == "cpu" and best.model.id == EMBEDDED_MODEL:
        notes.append("On a CPU the embedded model is the honest choice; an NVIDIA GPU or an Apple Silicon Mac trains "
                     "larger ones (mimetic presets).")
    return Recommendation(hw, corpus_tokens, estimates, best, chosen, preset, notes)


def corpus_tokens(workspace: Any, held_out_fraction: float = 0.1) -> int | None:
    """Training tokens of a voice: the prepared training split's, else the ingested corpus's
    words × :data:`TOKENS_PER_WORD` less the held-out share, else ``None`` (nothing ingested)."""
    from mimetic.errors import MimeticError

    try:
        return int(workspace.data_meta().train["tokens"])
    except MimeticError:
        pass
    try:
        words = workspace.read_manifest().words
    except MimeticError:
        return None
    return int(words * TOKENS_PER_WORD * (1 - held_out_fraction))


def apply_choice(config: TrainConfig, choice: Estimate) -> TrainConfig:
    """``config`` with the chosen model and the batch, gradient accumulation and 4-bit setting
    its estimate was made for."""
    from mimetic.core.config import replace

    return replace(config, base_model=choice.model.id, batch_size=choice.batch_size, grad_accum=choice.grad_accum,
                   load_in_4bit=choice.four_bit)


__all__ = ["Hardware", "probe", "matmul_gflops", "Estimate", "estimate", "estimate_memory_gb", "estimate_tokens_per_s",
           "is_available", "Recommendation", "recommend", "corpus_tokens", "apply_choice", "EFFICIENCY", "MEMORY_CALIBRATION"]
