"""Stage 3 — train: LoRA fine-tuning with held-out NLL, early stopping, checkpoints and resume.

A short, plain PyTorch loop (in the spirit of nanoGPT's ``train.py``) around PEFT's LoRA:

* held-out NLL (nats per token, token-weighted) and perplexity ``exp(NLL)`` at step 0 (the
  base model), every ``eval_every`` steps and at the end;
* early stopping after ``patience`` evaluations without improvement; the adapter with the
  best held-out NLL is kept in ``runs/<id>/adapter``;
* a checkpoint (LoRA weights, AdamW and scheduler state, RNG states, data position) every
  ``checkpoint_every`` steps and on Ctrl-C; ``resume=`` continues the run exactly;
* ``metrics.jsonl`` (one JSON object per log line) and ``loss.png`` (train and held-out curves);
* on CPUs with native bf16 the forward/backward runs under bf16 autocast with fp32 LoRA
  weights (about 2.5× faster than fp32 on this project's 2-core test machine).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import resource
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from .config import TrainConfig, VoiceConfig, default_learning_rate, replace
from .errors import MimeticError, TrainingInterrupted
from .models import autocast as _autocast_factory
from .nll import IGNORE_INDEX, collate, evaluate_nll, nll_sums, token_nll_sum
from .workspace import Workspace, atomic_dir, atomic_write_bytes, atomic_write_json, atomic_write_text, check_free_disk


@dataclass
class TrainResult:
    """Outcome of a training run. NLL values are nats per token on the held-out split."""

    run_id: str
    run_dir: Path
    base_nll: float
    best_nll: float
    best_step: int
    final_step: int
    stopped_because: str
    tokens_per_s: float
    train_tokens: int
    elapsed_s: float
    peak_rss_mb: float

    @property
    def nll_drop(self) -> float:
        """Relative fall of held-out NLL from the base model: ``1 - best / base``."""
        return 1.0 - self.best_nll / self.base_nll


def lr_lambda(step: int, warmup: int, total: int, schedule: str) -> float:
    """Learning-rate multiplier at ``step``: linear warmup over ``warmup`` steps, then cosine or
    linear decay to 0 at ``total`` (as transformers' ``get_cosine_schedule_with_warmup`` /
    ``get_linear_schedule_with_warmup``), or constant."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def pack(rows: list[dict[str, Any]], max_len: int) -> list[dict[str, Any]]:
    """Pack whole examples into rows of at most ``max_len`` tokens (first-fit decreasing).

    Each packed row carries ``position_ids`` that restart at 0 for every example, which is how
    transformers recognises packed sequences and keeps attention inside each example (a
    block-diagonal causal mask; ``masking_utils.find_packed_sequence_indices``). The first
    label of every example is ``-100``, so no example is asked to predict the next one's first
    token: the summed NLL equals that of the examples run one by one. Deterministic (no RNG),
    so a resumed run packs identically. Examples longer than ``max_len`` stay alone.

    Args:
        rows: examples with ``input_ids`` and ``labels`` (lists of int).
        max_len: longest packed row, in tokens.

    Returns:
        Packed rows with ``input_ids``, ``labels`` and ``position_ids``.
    """
    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i]["input_ids"]), i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = len(rows[i]["input_ids"])
        for b, free in enumerate(room):
            if n <= free:
                bins[b].append(i)
                room[b] -= n
                break
        else:
            bins.append([i])
            room.append(max_len - n)
    out = []
    for b in bins:
        ids: list[int] = []
        labels: list[int] = []
        pos: list[int] = []
        for i in b:
            r = rows[i]
            ids += list(r["input_ids"])
            labels += [IGNORE_INDEX] + list(r["labels"][1:])
            pos += list(range(len(r["input_ids"])))
        out.append({"input_ids": ids, "labels": labels, "position_ids": pos})
    return out


def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _plot(metrics_path: Path, out: Path, title: str) -> None:
    """Draw train loss and held-out NLL against step into ``out`` (PNG), atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["train_loss"]) for r in rows if "train_loss" in r]
    held = [(r["step"], r["held_out_nll"]) for r in rows if "held_out_nll" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train), label="training loss", color="#8aa8c8", lw=1.2)
    if held:
        ax.plot(*zip(*held), label="held-out NLL", color="#c0392b", marker="o", lw=2)
        best = min(held, key=lambda x: x[1])
        ax.axhline(held[0][1], color="#999", ls="--", lw=1, label=f"base model {held[0][1]:.3f}")
        ax.annotate(f"best {best[1]:.3f}", best, textcoords="offset points", xytext=(0, -16), ha="center", fontsize=8)
    ax.set_xlabel("step")
    ax.set_ylabel("NLL (nats / token)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())


class _StopFlag:
    """First Ctrl-C asks the loop to checkpoint and stop after the current step; a second one aborts."""

    def __init__(self) -> None:
        self.stop = False
        self._old: Any = None

    def __enter__(self) -> "_StopFlag":
        def handler(signum: int, frame: Any) -> None:
            if self.stop:
                raise KeyboardInterrupt
            self.stop = True

        with contextlib.suppress(ValueError):  # not in the main thread: no handler
            self._old = signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def lora_model(config: TrainConfig, device: str, precision: str) -> tuple[Any, list[Any]]:
    """The base model with fresh LoRA adapters (PEFT) on ``device``; returns ``(model, trainable params)``.

    LoRA weights are kept in fp32 whatever the compute precision.
    """
    from peft import LoraConfig, get_peft_model

    from .models import load_model

    model = load_model(config.base_model, device, precision, config.load_in_4bit, config.base_weights)
    if config.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules if config.target_modules == "all-linear" else config.target_modules.split(","),
        task_type="CAUSAL_LM",
        bias="none",
    )
    model = get_peft_model(model, lora)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # LoRA weights in fp32, whatever the compute precision
    return model, [p for p in model.parameters() if p.requires_grad]


def _precision(device: str, config: TrainConfig) -> str:
    """Compute precision of a run: bf16 when the base weights are stored in bf16, else
    :func:`mimetic.models.pick_precision` of ``config.precision``."""
    from .models import pick_precision

    return pick_precision(device, "bf16" if config.base_weights == "bf16" else config.precision)


def _compiled(model: Any) -> Any:
    """``torch.compile(model, dynamic=True)`` (batches change length), with inductor's cache in
    mimetic's user cache directory so later runs skip most of the compilation."""
    import os

    import torch

    from .models import cache_dir

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))
    return torch.compile(model, dynamic=True)


def _training_rows(workspace: Workspace, config: TrainConfig) -> tuple[list[dict], list[dict], list[int]]:
    """Training and held-out examples as plain lists, the training ones packed when
    ``config.packing``; also the unpacked training lengths (for the padding report)."""
    from .prepare import load_split

    train_rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in load_split(workspace, "train")]
    held_rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in load_split(workspace, "held_out")]
    unpacked_lengths = [len(r["input_ids"]) for r in train_rows]
    if config.packing:
        train_rows = pack(train_rows, max(unpacked_lengths))
    return train_rows, held_rows, unpacked_lengths


def _global_config(config: TrainConfig, processes: int) -> TrainConfig:
    """``config`` with the batch one optimizer step takes across all processes: each of the
    ``processes`` takes ``batch_size`` examples, so the global batch is their product."""
    return replace(config, batch_size=config.batch_size * processes)


def _steps_per_epoch(rows: int, config: TrainConfig) -> int:
    return max(1, math.ceil(rows / (config.batch_size * config.grad_accum)))


@dataclass
class Plan:
    """What a training run will need, from a short measured warm-up (see :func:`plan`).

    Attributes:
        peak_memory_mb: predicted peak resident memory of the training process (CPU/MPS), or
            peak GPU memory on CUDA, in MiB.
        available_mb: memory available now (RAM, or free GPU memory), MiB.
        tokens_per_s: measured training speed on a full-length batch.
        epoch_minutes: predicted minutes per epoch, held-out evaluations included.
        run_minutes: predicted minutes for the configured run (epochs, max steps, time budget).
        steps_per_epoch, evals_per_epoch: the schedule behind the prediction.
        fits: whether the peak fits in the available memory (with a 10% margin).
        advice: what to change when it does not fit.
    """

    peak_memory_mb: float
    available_mb: float
    tokens_per_s: float
    epoch_minutes: float
    run_minutes: float
    steps_per_epoch: int
    evals_per_epoch: int
    fits: bool
    advice: str = ""

    def summary(self) -> str:
        """One line for the start of a run."""
        return (f"Plan: peak memory about {self.peak_memory_mb / 1024:.1f} GiB of {self.available_mb / 1024:.1f} GiB available; "
                f"{self.tokens_per_s:.0f} tokens/s; about {self.epoch_minutes:.0f} min per epoch, {self.run_minutes:.0f} min for this run.")


def plan(workspace: Workspace, config: TrainConfig | None = None, warmup_steps: int = 3) -> Plan:
    """Predict peak memory and time of a run from a short measured warm-up, before training.

    The warm-up loads the model with LoRA as :func:`train` does and runs ``warmup_steps``
    optimizer steps on a batch of the *longest* examples (the memory peak of an epoch), plus one
    held-out evaluation batch; memory is the process's measured peak (``ru_maxrss``; on CUDA
    ``torch.cuda.max_memory_allocated``), speed is tokens per second of the timed steps (the
    first step is not timed). Epoch time = training tokens / speed + held-out evaluations
    (held-out tokens / the same speed × 1/3, forward only).

    Raises:
        MimeticError: no prepared data.
    """
    import torch

    from .models import pick_device

    config = config or workspace.load_config().train
    workspace.read_data_meta()
    device = pick_device(config.device)
    precision = _precision(device, config)
    autocast = _autocast_factory(device, precision)
    train_rows, held_rows, _ = _training_rows(workspace, config)
    model, params = lora_model(config, device, precision)
    optimizer = torch.optim.AdamW(params, lr=1e-6)
    result = _measure_plan(model, params, optimizer, train_rows, held_rows, config, device, autocast, warmup_steps)
    del model, optimizer
    return result


def _measure_plan(model: Any, params: list[Any], optimizer: Any, train_rows: list[dict], held_rows: list[dict],
                  config: TrainConfig, device: str, autocast: Any, steps: int, processes: int = 1) -> Plan:
    """Time ``steps`` training steps on the longest batch (optimizer steps when ``optimizer`` is
    given; without one, AdamW's two fp32 moments per trainable weight are added to the peak)
    and one held-out batch, and turn the measurements into a :class:`Plan`."""
    import resource

    import torch

    longest = sorted(train_rows, key=lambda r: -len(r["input_ids"]))[: config.batch_size]
    batch = collate(longest, 0)
    tokens = int(batch["attention_mask"].sum())
    was_training = model.training
    model.train()
    times = []
    for k in range(steps):
        t = time.perf_counter()
        for _ in range(config.grad_accum):
            s, c = token_nll_sum(model, batch, device, autocast)
            (s / max(1, c)).backward()
        if optimizer is not None:
            optimizer.step()
        for p in params:
            p.grad = None
        if device == "cuda":
            torch.cuda.synchronize()
        if k or steps == 1:
            times.append(time.perf_counter() - t)
    held_longest = sorted(held_rows, key=lambda r: -len(r["input_ids"]))[: config.eval_batch_size]
    evaluate_nll(model, held_longest, 0, device, autocast, config.eval_batch_size)
    model.train(was_training)
    speed = processes * tokens * config.grad_accum / (sum(times) / max(1, len(times)))
    adam = 0.0 if optimizer is not None else 2 * sum(p.numel() * 4 for p in params) / 2**20
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20 + adam
        free, _ = torch.cuda.mem_get_info()
        available = free / 2**20 + peak
    else:
        import psutil

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 + adam
        available = psutil.virtual_memory().available / 2**20 + psutil.Process().memory_info().rss / 2**20
    train_tokens = sum(len(r["input_ids"]) for r in train_rows)
    held_tokens = sum(len(r["input_ids"]) for r in held_rows)
    steps_per_epoch = _steps_per_epoch(len(train_rows), _global_config(config, processes))
    evals = max(1, steps_per_epoch // config.eval_every) + 1
    epoch_s = train_tokens / speed + evals * held_tokens / (3 * speed)
    epochs = config.epochs
    if config.max_steps:
        epochs = min(epochs, config.max_steps / steps_per_epoch)
    run_s = epochs * epoch_s + held_tokens / (3 * speed)  # + the step-0 evaluation
    if config.time_budget_min:
        run_s = min(run_s, config.time_budget_min * 60)
    fits = peak * 1.1 <= available
    advice = ""
    if not fits:
        advice = ("Lower the memory: shorter examples (prepare.max_tokens, e.g. 256), a smaller batch "
                  "(train.batch_size 1–2 with train.grad_accum to keep the effective batch)"
                  + (", or 4-bit QLoRA (--4bit)" if device == "cuda" else ", or a smaller base model") + ".")
    return Plan(round(peak), round(available), round(speed, 1), epoch_s / 60, run_s / 60, steps_per_epoch, evals, fits, advice)


def train(
    workspace: Workspace,
    config: TrainConfig | None = None,
    *,
    resume: str | bool | None = None,
    progress: bool = True,
    _interrupt_at_step: int | None = None,
) -> TrainResult:
    """Fine-tune a LoRA adapter on ``data/train``, measuring held-out NLL on ``data/held_out``.

    Args:
        workspace: a prepared workspace.
        config: training settings (default: the workspace's ``[train]``). On resume the run's
            saved config is used and this argument is ignored.
        resume: ``True`` for the latest run, or a run id, to continue from its checkpoint.
        progress: show a rich progress bar.
        _interrupt_at_step: for tests: behave as if Ctrl-C arrived after this step.

    Returns:
        :class:`TrainResult` (held-out NLL of base and best adapter, steps, speed, memory).

    Raises:
        MimeticError: no data, data prepared for another model, no checkpoint to resume.
        TrainingInterrupted: Ctrl-C; a checkpoint was written and the message says how to resume.
    """
    import torch
    from peft import set_peft_model_state_dict

    from .distributed import Dist, launched_processes
    from .models import load_tokenizer, pick_device

    meta = workspace.read_data_meta()
    vc = workspace.load_config()
    state: dict[str, Any] | None = None
    if resume:
        run_dir = workspace.run_dir(None if resume is True else str(resume))
        ckpt = run_dir / "checkpoint"
        if not (ckpt / "state.pt").exists():
            raise MimeticError(f"Run {run_dir.name} has no checkpoint to resume from.", "Start a new run with: mimetic train")
        config = VoiceConfig.load(run_dir / "config.toml").train
        state = torch.load(ckpt / "state.pt", weights_only=False)
        run_id = run_dir.name
        if state.get("processes", 1) != launched_processes():
            raise MimeticError(
                f"Run {run_id} was trained by {state.get('processes', 1)} process(es), not {launched_processes()}.",
                f"Resume it with the same number: mimetic train --resume {run_id} --processes {state.get('processes', 1)}",
            )
    else:
        config = config or vc.train
        run_id = ""
    if meta["base_model"] != config.base_model:
        raise MimeticError(
            f"The training data was prepared for {meta['base_model']!r}, not {config.base_model!r}.",
            f"Run: mimetic prepare --base-model {config.base_model} --workspace {workspace.root}",
        )

    device = pick_device(config.device)
    # Several processes (accelerate launch / torchrun): the main one decides, the others follow.
    dist = Dist(device)
    precision = dist.broadcast(_precision(device, config))
    autocast = _autocast_factory(device, precision)
    if not run_id:
        run_id = dist.broadcast(workspace.new_run_id() if dist.main else None)
        run_dir = workspace.runs_dir / run_id
    _seed_all(config.seed)
    tokenizer = load_tokenizer(config.base_model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    train_rows, held_rows, unpacked_lengths = _training_rows(workspace, config)

    with dist.main_first():  # a first load may convert and cache the model: once
        model, params = lora_model(config, device, precision)
    if dist.rank:  # same LoRA initialisation everywhere, different dropout masks per process
        torch.manual_seed(config.seed + dist.rank)
    lr = config.learning_rate or default_learning_rate(model.config.hidden_size)
    global_config = _global_config(config, dist.world)  # × grad_accum examples per optimizer step

    steps_per_epoch = _steps_per_epoch(len(train_rows), global_config)
    planned = math.ceil(config.epochs * steps_per_epoch)
    if config.max_steps:
        planned = min(planned, config.max_steps)
    sched = {"total": planned, "planned": planned, "warmup": int(round(config.warmup_ratio * planned))}
    if state is not None and "lora" in state:
        set_peft_model_state_dict(model, state["lora"])
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay, betas=(0.9, 0.999), eps=1e-8)
    model, optimizer = dist.prepare(model, optimizer)
    step_model = _compiled(model) if config.compile else model  # training steps only; evaluation runs eagerly
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, sched["warmup"], sched["total"], config.lr_schedule)
    )

    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.jsonl"
    trainable, total_params = dist.unwrap(model).get_nb_trainable_parameters()
    if state is None:
        if dist.main:
            cfg_copy = VoiceConfig(vc.ingest, vc.prepare, config, vc.generate)
            atomic_write_text(run_dir / "config.toml", cfg_copy.dumps())
            atomic_write_text(metrics_path, "")
        st = {"step": 0, "best_nll": None, "base_nll": None, "best_step": 0, "bad_evals": 0, "tokens": 0, "elapsed": 0.0,
              "eval_total_s": 0.0, "win_loss": 0.0, "win_count": 0}
    else:
        if dist.sharded:  # FSDP / DeepSpeed: sharded weights and optimizer, saved by accelerate
            dist.acc.load_state(str(run_dir / "checkpoint-accelerate"))
        else:
            optimizer.load_state_dict(state["optimizer"])
        sched.update(state["sched"])
        scheduler.load_state_dict(state["scheduler"])
        st = state["trainer"]
        if dist.main:  # drop metric lines written after the checkpoint (the interrupted tail), then continue
            lines = [line for line in metrics_path.read_text().splitlines() if line.strip()]
            atomic_write_text(metrics_path, "".join(line + "\n" for line in lines if json.loads(line)["step"] <= st["step"]))
        _set_rng_state(state.get("rng_by_process", [state["rng"]])[dist.rank])

    def log(record: dict[str, Any]) -> None:
        if dist.main:
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def save_adapter(dest: Path) -> None:
        full = dist.full_state_dict(model)  # sharded strategies gather the weights first (all processes)
        if dist.main:
            with atomic_dir(dest) as tmp:
                dist.unwrap(model).save_pretrained(tmp, state_dict=full)

    def save_checkpoint() -> None:
        check_free_disk(run_dir, 4 * sum(p.numel() * 4 for p in params) + 2**20, "a checkpoint")
        from peft import get_peft_model_state_dict

        rngs = dist.gather(_rng_state())  # every process's RNG: dropout masks continue exactly on resume
        if dist.sharded:  # every process writes its shards of weights and optimizer
            dist.save_state(run_dir / "checkpoint-accelerate")
        if not dist.main:
            return
        blob = {
            "scheduler": scheduler.state_dict(),
            "sched": dict(sched),
            "rng": rngs[0],
            "trainer": dict(st),
            "processes": dist.world,
        }
        if dist.world > 1:
            blob["rng_by_process"] = rngs
        if not dist.sharded:
            blob["lora"] = {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(dist.unwrap(model)).items()}
            blob["optimizer"] = optimizer.state_dict()
        with atomic_dir(run_dir / "checkpoint") as tmp:
            torch.save(blob, tmp / "state.pt")

    def run_eval(step: int) -> float:
        t = time.perf_counter()
        if dist.sharded:  # sharded weights: every process runs every batch together
            total, count = nll_sums(model, held_rows, pad_id, device, autocast, config.eval_batch_size)
        else:  # each process scores its share of the held-out examples; the sums are added up
            total, count = dist.sum(list(nll_sums(dist.unwrap(model), held_rows[dist.rank :: dist.world], pad_id, device,
                                                  autocast, config.eval_batch_size)))
        nll = total / max(1, count)
        log({"step": step, "held_out_nll": nll, "held_out_ppl": math.exp(nll), "eval_s": time.perf_counter() - t})
        st["last_eval_s"], st["last_nll"] = time.perf_counter() - t, nll
        st["eval_total_s"] += st["last_eval_s"]
        if st["best_nll"] is None or nll < st["best_nll"] - config.min_delta:
            st["best_nll"], st["best_step"], st["bad_evals"] = nll, step, 0
            save_adapter(run_dir / "adapter")
        else:
            st["bad_evals"] += 1
        return nll

    model.train()
    t_start = time.perf_counter() - st["elapsed"]
    deadline = t_start + 60 * config.time_budget_min if config.time_budget_min else None
    run_plan = None
    if state is None and not dist.sharded:
        # The plan line: two steps on this run's longest batch (the second is timed; memory only
        # settles after the second backward pass) and one held-out batch, with the
        # RNG put back and no weight changed, so the run itself is exactly as without it.
        t = time.perf_counter()
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device == "cuda" else []):
            run_plan = _measure_plan(dist.unwrap(model), params, None, train_rows, held_rows, config, device, autocast,
                                     2, dist.world)
        st["eval_total_s"] += time.perf_counter() - t  # time not spent on training steps (speed, budget planning)
        log({"step": 0, "plan_peak_memory_mb": run_plan.peak_memory_mb, "plan_tokens_per_s": run_plan.tokens_per_s,
             "plan_epoch_min": run_plan.epoch_minutes, "plan_run_min": run_plan.run_minutes})
        if progress and dist.main:
            from rich.console import Console

            Console().print(run_plan.summary() + ("" if run_plan.fits else f" [bold red]May not fit.[/] {run_plan.advice}"))
    if st["base_nll"] is None:
        st["base_nll"] = run_eval(0)
        save_checkpoint()

    stopped = "finished"
    tokens_at_start, t_loop = st["tokens"], time.perf_counter()
    bar = _Progress(progress and dist.main, sched["total"], st)
    bs = config.batch_size
    with _StopFlag() as flag, bar:
        while st["step"] < sched["total"]:
            step = st["step"]
            micro = step * config.grad_accum
            loss_sum = 0.0
            global_rows = [_batch_for(micro + k, train_rows, global_config) for k in range(config.grad_accum)]
            n_labelled = sum(_labelled(r) for rows in global_rows for r in rows)
            for k, rows in enumerate(global_rows):  # gradient accumulation, token-weighted across micro-batches
                mine, weight = rows[dist.rank * bs : (dist.rank + 1) * bs], 1.0
                if not mine:  # a short last batch: run one row with weight 0 so every process takes part
                    mine, weight = rows[:1], 0.0
                with dist.no_sync(model, skip=k < config.grad_accum - 1):
                    s, _ = token_nll_sum(step_model, collate(mine, pad_id), device, autocast)
                    loss = s / n_labelled
                    if dist.world > 1:  # DDP averages gradients over processes: undo that for a global token mean
                        loss = loss * (weight * dist.world)
                    dist.backward(loss)
                loss_sum += float(s.detach()) * weight
            loss_sum, count = dist.sum([loss_sum])[0], n_labelled
            if config.max_grad_norm:
                dist.clip_grad_norm_(model, params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            st["step"] = step + 1
            st["tokens"] += sum(len(r["input_ids"]) for rows in global_rows for r in rows)
            st["elapsed"] = time.perf_counter() - t_start
            speed = (st["tokens"] - tokens_at_start) / max(1e-9, time.perf_counter() - t_loop)
            st["train_loss"] = loss_sum / max(1, count)
            st["win_loss"] += loss_sum
            st["win_count"] += count
            if st["step"] % config.log_every == 0 or st["step"] == 1:
                # token-weighted mean over the steps since the last log line: a steadier curve
                window_loss = st["win_loss"] / max(1, st["win_count"])
                st["win_loss"], st["win_count"] = 0.0, 0
                log({"step": st["step"], "epoch": st["step"] / steps_per_epoch, "train_loss": window_loss,
                     "lr": scheduler.get_last_lr()[0], "tokens": st["tokens"], "tokens_per_s": speed, "elapsed_s": st["elapsed"]})
            if deadline and st["step"] == 5:
                _fit_schedule_to_budget(st, sched, deadline, config, dist)
            bar.update(st, speed, sched["total"])
            last = st["step"] >= sched["total"]
            if st["step"] % config.eval_every == 0 and not last:
                run_eval(st["step"])
                if st["bad_evals"] >= config.patience:
                    stopped = f"early stopping: held-out NLL did not improve for {config.patience} evaluations"
                    break
                if deadline:  # re-plan with the speed measured so far
                    _fit_schedule_to_budget(st, sched, deadline, config, dist)
            over_budget = bool(deadline) and time.perf_counter() + st.get("last_eval_s", 0) > deadline
            interrupted = flag.stop or _interrupt_at_step == st["step"]
            # every process stops at the same step: a stop anywhere is a stop everywhere
            over_budget, interrupted = (x > 0 for x in dist.sum([float(over_budget), float(interrupted)]))
            if over_budget:
                stopped = f"time budget of {config.time_budget_min:g} min reached"
                break
            if interrupted:
                save_checkpoint()
                if dist.main:
                    _plot(metrics_path, run_dir / "loss.png", f"{run_id} (interrupted at step {st['step']})")
                raise TrainingInterrupted(
                    f"Training stopped at step {st['step']} of {sched['total']}; a checkpoint was saved.",
                    f"Resume with: mimetic train --resume {run_id} --workspace {workspace.root}"
                    + (f" --processes {dist.world}" if dist.world > 1 else ""),
                )
            if st["step"] % config.checkpoint_every == 0:
                save_checkpoint()
        if not stopped.startswith("early"):
            run_eval(st["step"])
        st["elapsed"] = time.perf_counter() - t_start  # the final evaluation included
        save_checkpoint()

    peak_rss_mb = max(dist.gather(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    dist.wait()
    if dist.main:
        _plot(metrics_path, run_dir / "loss.png", f"{run_id}: {config.base_model}, LoRA r={config.lora_r}")
    result = TrainResult(
        run_id=run_id,
        run_dir=run_dir,
        base_nll=st["base_nll"],
        best_nll=st["best_nll"],
        best_step=st["best_step"],
        final_step=st["step"],
        stopped_because=stopped,
        tokens_per_s=st["tokens"] / max(1e-9, st["elapsed"] - st["eval_total_s"]),  # training time only
        train_tokens=st["tokens"],
        elapsed_s=st["elapsed"],
        peak_rss_mb=peak_rss_mb,  # the largest of the processes
    )
    if not dist.main:
        return result
    summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
    lengths = [len(r["input_ids"]) for r in train_rows]
    summary.update({
        "held_out_nll_drop": result.nll_drop,
        "base_ppl": math.exp(result.base_nll),
        "best_ppl": math.exp(result.best_nll),
        "learning_rate": lr,
        "device": device,
        "precision": precision,
        "trainable_parameters": trainable,
        "total_parameters": total_params,
        "steps_per_epoch": steps_per_epoch,
        "padding_share": padding_share(lengths, epoch_batches(lengths, config, 0)),
        "padding_share_unpacked": padding_share(unpacked_lengths, epoch_batches(unpacked_lengths, replace(config, packing=False), 0)),
        "padding_share_random_batches": padding_share(
            unpacked_lengths, epoch_batches(unpacked_lengths, replace(config, group_by_length=False, packing=False), 0)
        ),
        "packed_rows": len(train_rows) if config.packing else None,
        "planned_steps": sched["total"],
        "processes": dist.world,
        "plan": asdict(run_plan) if run_plan else None,
        "global_batch_size": global_config.batch_size * config.grad_accum,
    })
    atomic_write_json(run_dir / "summary.json", summary)
    return result


def _labelled(row: dict[str, Any]) -> int:
    """Tokens of ``row`` that are predicted in training (labels after the first, not -100)."""
    return sum(1 for x in row["labels"][1:] if x != IGNORE_INDEX)


def epoch_batches(lengths: list[int], config: TrainConfig, epoch: int) -> list[list[int]]:
    """Row indices of every micro-batch of ``epoch``, from a seeded permutation (so the data
    position of any step can be recomputed on resume).

    With ``config.group_by_length`` (the default), each block of ``32 × batch_size`` shuffled
    rows is sorted by length before it is cut into batches, and the batches are then shuffled:
    rows of similar length share a batch, so little of each batch is padding (the
    ``group_by_length`` sampler of HF ``Trainer`` works the same way). The number of batches is
    ``ceil(len(lengths) / batch_size)`` either way.
    """
    import torch

    g = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    perm = torch.randperm(len(lengths), generator=g).tolist()
    bs = config.batch_size
    if not config.group_by_length:
        return [perm[i : i + bs] for i in range(0, len(perm), bs)]
    block = 32 * bs
    batches = []
    for m in range(0, len(perm), block):
        rows = sorted(perm[m : m + block], key=lambda i: lengths[i])
        batches += [rows[i : i + bs] for i in range(0, len(rows), bs)]
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[k] for k in order]


def padding_share(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of token positions that are padding when each batch is padded to its longest row."""
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches if b)
    return 1.0 - sum(lengths[i] for b in batches for i in b) / max(1, padded)


_EPOCH_CACHE: dict[tuple[int, int, int, bool, int], list[list[int]]] = {}  # one epoch's batches


def _batch_for(micro_step: int, rows: list[dict[str, Any]], config: TrainConfig) -> list[dict[str, Any]]:
    """The examples of micro-batch ``micro_step`` (see :func:`epoch_batches`)."""
    per_epoch = max(1, math.ceil(len(rows) / config.batch_size))
    epoch, index = divmod(micro_step, per_epoch)
    lengths = [len(r["input_ids"]) for r in rows]
    key = (hash(tuple(lengths)), config.batch_size, config.seed, config.group_by_length, epoch)
    if key not in _EPOCH_CACHE:
        _EPOCH_CACHE.clear()
        _EPOCH_CACHE[key] = epoch_batches(lengths, config, epoch)
    return [rows[i] for i in _EPOCH_CACHE[key][index]]


def _fit_schedule_to_budget(st: dict[str, Any], sched: dict[str, Any], deadline: float, config: TrainConfig, dist: Any) -> None:
    """Set the number of steps so the learning-rate schedule ends within the time budget.

    Uses the training time per step measured so far (evaluation time excluded) and the cost
    of the last evaluation for each evaluation still to come; never plans beyond the steps
    that ``epochs``/``max_steps`` allow. Called after a few steps and after every evaluation,
    so a slow start (a busy machine) does not cut the run short.
    """
    per_step = max(1e-6, (st["elapsed"] - st["eval_total_s"]) / max(1, st["step"]))
    left = deadline - time.perf_counter()
    eval_s = st.get("last_eval_s", 0.0)
    fit = st["step"]
    while fit < sched["planned"]:
        evals = (fit + 1) // config.eval_every - st["step"] // config.eval_every + 1
        if (fit + 1 - st["step"]) * per_step + evals * eval_s > left:
            break
        fit += 1
    sched["total"] = dist.min_int(max(st["step"] + 1, fit))  # several processes: the most cautious plan


class _Progress:
    """A rich progress bar: step, train loss, held-out NLL, tokens/s, ETA."""

    def __init__(self, enabled: bool, total: int, st: dict[str, Any]):
        self.enabled = enabled
        self._p: Any = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._p = Progress(
                TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            )
            self._task = self._p.add_task("train", total=total, completed=st["step"], info="")

    def __enter__(self) -> "_Progress":
        if self._p:
            self._p.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._p:
            self._p.__exit__(*exc)

    def update(self, st: dict[str, Any], speed: float, total: int) -> None:
        if self._p:
            info = f"loss {st.get('train_loss', float('nan')):.3f} · held-out NLL {st.get('last_nll', float('nan')):.3f} · {speed:,.0f} tok/s"
            self._p.update(self._task, completed=st["step"], total=total, info=info)
