"""Stage 3 — train: LoRA fine-tuning with held-out NLL, early stopping, checkpoints and resume.

Supervised fine-tuning as one use of the training loop :func:`mimetic.training.loop.fit`, around PEFT's LoRA:

* held-out NLL (nats per token, token-weighted) and perplexity ``exp(NLL)`` before the first
  step (the base model, once per voice), every ``eval_every`` steps (spaced further under a
  time budget) and at the end;
* early stopping after ``patience`` evaluations without improvement; the adapter with the
  best held-out NLL is kept in ``runs/<id>/adapter``;
* a checkpoint (LoRA weights, AdamW and scheduler state, RNG states, data position) every
  ``checkpoint_every`` steps and when ``should_stop`` says so (Ctrl-C in the CLI, a stop file);
  ``resume=`` continues the run exactly;
* :mod:`mimetic.core.events` for front ends; ``metrics.jsonl`` (one of their sinks) and ``loss.png``;
* on CPUs with native bf16 the forward/backward runs under bf16 autocast with fp32 LoRA
  weights (about 2.5× faster than fp32 on this project's 2-core test machine).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from mimetic.core.config import TrainConfig, default_learning_rate, replace
from mimetic.core.events import Artifact, Finished, Metric, MetricsFile, OnEvent, Progress, Warning, fan_out
from mimetic.core.records import RunSummary, TrainOutcome
from mimetic.models.engines import made_from_current_adapter
from mimetic.models.loading import autocast as _autocast_factory
from mimetic.models.nll import IGNORE_INDEX, collate, evaluate_nll, nll_sums, per_example_nll, token_nll_sum  # noqa: F401 - nll_sums: API
from mimetic.training.loop import Run, RuntimeOptions, TimeBudget, lr_lambda, peak_rss_mb, with_runtime  # noqa: F401 - lr_lambda: API
from mimetic.training.session import (  # noqa: F401 - check_version, compute_precision, epoch_batches, padding_share: API
    Compute, Session, check_data_for, check_version, compute_precision, epoch_batches, pad_id, padding_share,
    ready_to_write, record_version, resume_run, seed_all)
from mimetic.core.workspace import Workspace, atomic_write_bytes, atomic_write_json, writes_voice


@dataclass(kw_only=True)
class TrainResult(TrainOutcome):
    """Outcome of a training run (:class:`~mimetic.core.records.TrainOutcome`) and its folder."""

    run_dir: Path


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


def lora_model(config: TrainConfig, device: str, precision: str) -> tuple[Any, list[Any]]:
    """The base model with fresh LoRA adapters (PEFT) on ``device``; returns ``(model, trainable params)``.

    LoRA weights are kept in fp32 whatever the compute precision; under bf16 / fp16 autocast
    their input is not cast to fp32 first (:func:`mimetic.models.loading.skip_lora_input_casts`). On a
    CPU in bf16 attention runs as plain matmuls (:mod:`mimetic.models.attention`, 1.8× PyTorch's CPU
    flash kernel there), and each LoRA layer's training forward is one fused step
    (:mod:`mimetic.models.lora`), unless the run is compiled.
    """
    from peft import LoraConfig, get_peft_model

    from mimetic.models.attention import use_for_training
    from mimetic.models.loading import load_model, skip_lora_input_casts
    from mimetic.models.lora import fuse

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
    model = skip_lora_input_casts(get_peft_model(model, lora), precision)
    if not config.compile:  # torch.compile keeps PyTorch's own kernels (the path it was measured on)
        use_for_training(model, device, precision)
        fuse(model)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # LoRA weights in fp32, whatever the compute precision
    return model, [p for p in model.parameters() if p.requires_grad]


def _training_rows(workspace: Workspace, config: TrainConfig) -> tuple[list[dict], list[dict], list[int]]:
    """Training and held-out examples as plain lists, the training ones packed when
    ``config.packing``; also the unpacked training lengths (for the padding report)."""
    from mimetic.corpus.prepare import load_split

    train_rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in load_split(workspace, "train", config.where)]
    held_rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in load_split(workspace, "held_out", config.where)]
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
        peak_memory_mb: predicted peak resident memory of the training process (CPU), plus
            what Metal has allocated (MPS), or peak GPU memory on CUDA, in MiB.
        available_mb: memory available now (RAM, free GPU memory, or MPS's recommended working
            set), MiB.
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

    from mimetic.models.loading import pick_device

    config = config or workspace.load_config().train
    workspace.data_meta()
    device = pick_device(config.device)
    precision = compute_precision(device, config)
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
    return _plan_figures(speed, adam, train_rows, held_rows, config, device, processes)


def _plan_figures(speed: float, extra_mb: float, train_rows: list[dict], held_rows: list[dict], config: TrainConfig,
                  device: str, processes: int = 1) -> Plan:
    """A :class:`Plan` from a measured training speed (tokens/s, all processes) and this
    process's peak memory so far (+ ``extra_mb`` not yet allocated)."""
    import torch

    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20 + extra_mb
        free, _ = torch.cuda.mem_get_info()
        available = free / 2**20 + peak
    elif device == "mps":  # unified memory: the GPU's allocations do not show in the process's RSS
        peak = peak_rss_mb() + torch.mps.driver_allocated_memory() / 2**20 + extra_mb
        available = torch.mps.recommended_max_memory() / 2**20
    else:
        import psutil

        peak = peak_rss_mb() + extra_mb
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


@writes_voice("trained")
def train(
    workspace: Workspace,
    config: TrainConfig | None = None,
    *,
    resume: str | bool | None = None,
    runtime: dict[str, Any] | None = None,
    on_event: OnEvent | None = None,
    should_stop: Callable[[Run], bool] | None = None,
    publish: bool | None = None,
) -> TrainResult:
    """Fine-tune a LoRA adapter on ``data/train``, measuring held-out NLL on ``data/held_out``.

    With ``config.where`` only the selected documents' examples of both splits are used, and
    with ``config.version`` the finished run is recorded under that name
    (:meth:`Workspace.add_version`). A finished run is published (becomes what ``write`` and
    ``export`` use) when ``publish`` is true; with ``publish=None``, when it has no version name
    and measures at least as well as the published voice (its held-out NLL change against the
    base model; otherwise a ``Warning`` event says it was kept as a version and how to publish
    it: :func:`mimetic.training.session.record_version`); a named version is published only when
    asked (``mimetic publish``). An interrupted or failed run is never published: it has no
    ``summary.json``.

    Supervised fine-tuning as one use of :class:`mimetic.training.session.Session` and
    :func:`mimetic.training.loop.fit`: the loss is the summed next-token NLL of the training
    tokens (:func:`mimetic.models.nll.token_nll_sum`) over the step's labelled tokens; the score
    is the held-out NLL on a fixed, seeded subset of about ``config.eval_tokens`` held-out tokens
    (:func:`eval_subset`; under a time budget fewer when this machine measures too slowly for
    that, :func:`budgeted_eval_tokens`), and on the whole held-out split at the end
    (:func:`_final_evaluation` chooses between the final model and the kept adapter); the base
    model's NLL is measured before the first step and cached per voice (:class:`BaseNLLCache`).
    The time budget holds the run's whole wall time from this call on (loading, measuring and
    the final evaluation included), and the in-run evaluations are spaced so that measuring
    stays within ``config.max_eval_share`` of it; the plan line comes from the run's first steps.
    The kept adapter is in ``runs/<id>/adapter``; a checkpoint (LoRA weights, AdamW and
    scheduler state, run state, RNG states of every process) in ``runs/<id>/checkpoint``.

    Args:
        workspace: a prepared workspace.
        config: training settings (default: the workspace's ``[train]``). Ignored on resume:
            the run's frozen settings are used.
        resume: ``True`` for the latest run, or a run id, to continue from its checkpoint.
        runtime: runtime options (``device``, ``precision``, ``base_weights``, ``compile``,
            ``time_budget_min``, ``eval_batch_size``, ``checkpoint_every``, ``log_every``; see
            :class:`mimetic.training.loop.RuntimeOptions`) that override ``config``'s, or the run's on
            resume (a time budget given on resume counts from the resume).
        on_event: receives the run's :mod:`mimetic.core.events` (the plan, metrics, progress);
            ``metrics.jsonl`` is written whatever it is.
        should_stop: called after every step; ``True`` checkpoints the run and raises
            :class:`TrainingInterrupted`. A file ``runs/<id>/stop`` does the same.
        publish: ``True`` / ``False``: publish the finished run or not; ``None``: the rule above.

    Returns:
        :class:`TrainResult` (held-out NLL of base and best adapter, steps, speed, memory).

    Raises:
        MimeticError: no data, data prepared for another model, no checkpoint to resume, a
            setting that cannot change on resume.
        TrainingInterrupted: ``should_stop`` or the stop file; the message says how to resume.
    """
    import torch

    from mimetic.models.loading import load_tokenizer

    clock = time.perf_counter()  # the time budget counts from here: loading and measuring included
    run, config = _open_run(workspace, config, resume, runtime)
    compute = Compute.pick(config)
    dist = compute.dist
    if run is None:
        run = _start_run(workspace, config, dist)
    run.options.processes = dist.world
    emit = fan_out(MetricsFile(run.dir / "metrics.jsonl", dist.main), on_event if dist.main else None)
    st = run.state
    seed_all(config.seed)
    pad = pad_id(load_tokenizer(config.base_model))
    train_rows, held_rows, unpacked_lengths = _training_rows(workspace, config)
    with dist.main_first():  # a first load may convert and cache the model: once
        model, params = lora_model(config, compute.device, compute.precision)
    if dist.rank:  # same LoRA initialisation everywhere, different dropout masks per process
        torch.manual_seed(config.seed + dist.rank)
    lr = config.learning_rate or default_learning_rate(model.config.hidden_size)
    global_config = _global_config(config, dist.world)  # × grad_accum examples per optimizer step
    run.plan_schedule(_steps_per_epoch(len(train_rows), global_config), config.epochs, config.max_steps, config.warmup_ratio)
    session = Session(run, compute, model, params, learning_rate=lr, stage="train", emit=emit, should_stop=should_stop,
                      compile=config.compile)
    before = st.elapsed_s  # the run's time before this session; the probe below counts in the budget from `clock`
    held = HeldOut(workspace, session, held_rows, pad)
    run_plan: list[Plan] = []
    callbacks = _callbacks(session, held, train_rows, run_plan, started=clock - before)
    if not run.resumed:
        held.measure_base()
        session.save_adapter(run)  # the step-0 adapter (no change yet): kept unless training improves on it
    stopped = session.fit(
        loss_fn=lambda m, rows: token_nll_sum(m, collate(rows, pad), compute.device, compute.autocast),
        batches=lambda micro: _batch_for(micro, train_rows, global_config),
        evaluate=held.evaluate, count=lambda rows: sum(_labelled(r) for r in rows), callbacks=callbacks,
        on_interrupt=lambda: _plot(run.dir / "metrics.jsonl", run.dir / "loss.png", f"{run.id} (interrupted at step {st.step})"),
    )
    base_full, best_full = _final_evaluation(run, session, held, stopped)
    return _finish(workspace, session, held, base_full, best_full, stopped, lr, train_rows, unpacked_lengths,
                   run_plan[0] if run_plan else None, publish)


def _open_run(workspace: Workspace, config: TrainConfig | None, resume: str | bool | None,
              runtime: dict[str, Any] | None) -> tuple[Run | None, TrainConfig]:
    """The run to resume (``None`` for a new one) and the settings it trains with, checked:
    prepared data for its model, a usable version name and selection for a new run.

    Raises:
        MimeticError: see :func:`train`.
    """
    workspace.data_meta()  # nothing prepared: said first
    runtime = {k: v for k, v in (runtime or {}).items() if v is not None}
    run = None
    if resume:
        run = resume_run(workspace, resume, **runtime)
        config = run.config
    else:
        config = with_runtime(config or workspace.load_config().train, **runtime)
    check_data_for(workspace, config.base_model)
    if not resume:
        check_version(workspace, config)
    return run, config


def _start_run(workspace: Workspace, config: TrainConfig, dist: Any) -> Run:
    """A new run (its id chosen by the main process) whose settings become the voice's."""
    run_id = dist.broadcast(workspace.new_run_id() if dist.main else None)
    run = Run.start(workspace, config, RuntimeOptions.from_config(config, processes=dist.world), run_id, write=dist.main)
    if dist.main:  # like every stage: the settings it ran with are the workspace's from now on
        vc = workspace.load_config()
        vc.train = replace(config, version="", where="")  # these two belong to the run
        workspace.save_config(vc)
    return run


def _callbacks(session: Session, held: "HeldOut", train_rows: list[dict], run_plan: list["Plan"], started: float) -> list[Any]:
    """The time budget (counting from ``started``, a ``time.perf_counter()``, earlier sessions'
    time taken off) and, for a new
    run, the plan line made from its own first steps (``run_plan`` receives the plan)."""
    run, dist = session.run, session.compute.dist
    config, st = run.config, run.state
    callbacks: list[Any] = []
    if config.time_budget_min:
        callbacks.append(TimeBudget(config.time_budget_min, dist, started=started,
                                    reserve=held.final_cost, eval_share=config.max_eval_share,
                                    share_apart=bool(config.max_whole_share) and not dist.sharded))
    if not run.resumed and not dist.sharded:
        # The plan line, from the run's own first steps: the first batch holds the longest row
        # (the memory peak), the steps after it give the speed. Nothing extra is run.
        callbacks.append(_PlanFromRun(train_rows, held.rows, held.subset_tokens, config, session.compute.device,
                                      dist.world, run_plan, session.emit))
    return callbacks


def _finish(workspace: Workspace, session: Session, held: "HeldOut", base_full: float, best_full: float, stopped: str,
            lr: float, train_rows: list[dict], unpacked_lengths: list[int], run_plan: "Plan | None", publish: bool | None) -> TrainResult:
    """The end of a run: the loss plot, :class:`TrainResult`, ``summary.json`` and the version
    (the main process writes; every process returns the result)."""
    run, dist, emit = session.run, session.compute.dist, session.emit
    st, config = run.state, run.config
    peak_rss = max(dist.gather(peak_rss_mb()))
    dist.wait()
    if dist.main:
        _plot(run.dir / "metrics.jsonl", run.dir / "loss.png", f"{run.id}: {config.base_model}, LoRA r={config.lora_r}")
        emit(Artifact("train", run.dir / "loss.png", "plot"))
    result = TrainResult(
        run_id=run.id, run_dir=run.dir, base_nll=base_full, best_nll=best_full, best_step=st.best_step,
        final_step=st.step, stopped_because=stopped,
        tokens_per_s=st.tokens / max(1e-9, st.elapsed_s - st.eval_s),  # training time only
        train_tokens=st.tokens, elapsed_s=st.elapsed_s, eval_s=st.eval_s,
        peak_rss_mb=peak_rss,  # the largest of the processes
    )
    if not dist.main:
        return result
    lengths = [len(r["input_ids"]) for r in train_rows]
    global_config = _global_config(config, dist.world)
    RunSummary.from_result(
        result, learning_rate=lr, device=session.compute.device, precision=session.compute.precision,
        trainable_parameters=session.trainable, total_parameters=session.total_params, steps_per_epoch=st.steps_per_epoch,
        padding_share=padding_share(lengths, epoch_batches(lengths, config, 0)),
        padding_share_unpacked=padding_share(unpacked_lengths, epoch_batches(unpacked_lengths, replace(config, packing=False), 0)),
        padding_share_random_batches=padding_share(
            unpacked_lengths, epoch_batches(unpacked_lengths, replace(config, group_by_length=False, packing=False), 0)),
        packed_rows=len(train_rows) if config.packing else None, planned_steps=st.total_steps, processes=dist.world,
        plan=asdict(run_plan) if run_plan else None, global_batch_size=global_config.batch_size * config.grad_accum,
        held_out_tokens=held.tokens, held_out_tokens_measured=held.measured_tokens,
    ).save(run.dir / "summary.json")
    emit(Artifact("train", run.dir / "summary.json", "summary"))
    record_version(workspace, run.id, config.version, publish, emit)
    ready_to_write(run.dir, config.base_model, emit)
    return result


def _seeded_order(n: int, seed: int) -> list[int]:
    """The seeded order in which held-out examples are picked: the in-run subset and the measured
    sample are both prefixes of it, so the sample holds the subset."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def eval_subset(rows: list[dict[str, Any]], tokens: int, seed: int) -> list[int]:
    """Indices (ascending) of a seeded random subset of ``rows`` holding at least ``tokens``
    tokens: the passages scored by every in-run evaluation. All rows when ``tokens`` is 0 or the
    split is less than 1.5 × ``tokens`` (a subset would save little)."""
    total = sum(len(r["input_ids"]) for r in rows)
    if tokens <= 0 or total <= 1.5 * tokens:
        return list(range(len(rows)))
    picked, n = [], 0
    for i in _seeded_order(len(rows), seed):
        if n >= tokens:
            break
        picked.append(i)
        n += len(rows[i]["input_ids"])
    return sorted(picked)


def measured_sample(rows: list[dict[str, Any]], tokens: int, seed: int, at_least: int = 0) -> list[int]:
    """Indices (ascending) of the seeded sample of whole held-out examples that the base model and
    the kept adapter are scored on when a time budget cannot hold the whole split: the longest
    prefix of :func:`eval_subset`'s seeded order holding at most ``tokens`` tokens, and at least
    its first ``at_least`` rows (the in-run subset, a prefix of the same order). All rows when
    ``tokens`` is 0. Deterministic: a resumed run measures the same sample."""
    if tokens <= 0:
        return list(range(len(rows)))
    order = _seeded_order(len(rows), seed)
    k = n = 0
    while k < len(order) and n + len(rows[order[k]]["input_ids"]) <= tokens:
        n += len(rows[order[k]]["input_ids"])
        k += 1
    return sorted(order[: max(k, at_least)])


MIN_EVAL_TOKENS = 256  # the smallest in-run subset a time budget sizes: below it the curve is noise


def budgeted_eval_tokens(eval_tokens: int, budget_min: float, eval_share: float, tokens_per_s: float) -> int:
    """The in-run held-out subset's size under a time budget, tokens: ``eval_tokens`` (0: the
    whole split) unless four evaluations of it would take more than ``eval_share`` of
    ``budget_min`` at ``tokens_per_s`` (forward speed measured on this machine today); then the
    largest power of two that fits, at least :data:`MIN_EVAL_TOKENS`. Powers of two keep the
    base model's cached NLL usable across runs on the same machine."""
    fits = eval_share * 60 * budget_min * tokens_per_s / 4
    if eval_tokens and fits >= eval_tokens:
        return eval_tokens
    size = MIN_EVAL_TOKENS
    while size * 2 <= fits:
        size *= 2
    return min(size, eval_tokens) if eval_tokens else size


class HeldOut:
    """The held-out split as a run scores it: every in-run evaluation scores a fixed, seeded
    subset (:func:`eval_subset`); the run's figures (the base model's NLL and the kept adapter's)
    are measured on the whole split — or, under a time budget that cannot hold it, on a seeded
    sample of whole examples that holds the subset (:func:`measured_sample`). The measured set is
    the subset plus the rest, so the end of the run scores only the rest. The base model's NLL is
    measured before training and cached per example (:class:`BaseNLLCache`).

    Under a time budget a new run first times one batch of held-out rows (forward only; the base
    model, so its values go to the cache) and sizes by that speed the subset
    (:func:`budgeted_eval_tokens`, ``max_eval_share``) and the measured sample (the base model's
    pass, where not cached, and the final pass within ``max_whole_share``). Both sizes are kept
    in the run's state, so a resumed run scores the same rows.

    Attributes:
        rows: the whole split; ``eval_rows`` / ``rest_rows``: the subset and the rest of the
            measured set (``subset_idx`` / ``rest_idx``: their indices in ``rows``). ``subset_tokens``, ``measured_tokens``, ``tokens``: tokens in the subset,
            the measured set and the whole split; ``whole``: the measured set is the whole split.
        subset_rows: step → row → (summed NLL, tokens) of that step's evaluation. ``cache``: the base model's cached NLL. ``base_measured``:
            the base model's NLL on the measured set.
    """

    def __init__(self, workspace: Workspace, session: Session, rows: list[dict[str, Any]], pad: int):
        self.session, self.rows, self.pad = session, rows, pad
        self.probe_speed: float | None = None  # forward tokens/s, when a time budget timed it
        run, dist = session.run, session.compute.dist
        config, st = run.config, run.state
        self.cache = BaseNLLCache(workspace, config.base_model, session.compute.precision, rows)
        budgeted = bool(config.time_budget_min) and not run.resumed and not dist.sharded
        tokens = config.eval_tokens if st.eval_tokens is None else st.eval_tokens
        if st.eval_tokens is None and budgeted and config.max_eval_share:
            tokens = budgeted_eval_tokens(config.eval_tokens, config.time_budget_min, config.max_eval_share, self._speed())
        st.eval_tokens = tokens
        subset = list(range(len(rows))) if dist.sharded else eval_subset(rows, tokens, config.seed)
        if st.sample_tokens is None:  # a new run (or a checkpoint written before samples: the whole split)
            st.sample_tokens = self._sample_tokens(len(subset)) if budgeted and config.max_whole_share and not run.resumed else 0
        sample = measured_sample(rows, st.sample_tokens, config.seed, len(subset))
        chosen = set(subset)
        self.subset_idx, self.sample_idx = subset, sample
        self.eval_rows = [rows[i] for i in subset]
        self.rest_idx = [i for i in sample if i not in chosen]
        self.rest_rows = [rows[i] for i in self.rest_idx]
        self.subset_tokens = sum(len(r["input_ids"]) for r in self.eval_rows)
        self.measured_tokens = sum(len(rows[i]["input_ids"]) for i in sample)
        self.tokens = sum(len(r["input_ids"]) for r in rows)
        self.whole = len(sample) == len(rows)
        self.full_ratio = self.measured_tokens / max(1, self.subset_tokens)
        self.subset_rows: dict[int, dict[int, tuple[float, int]]] = {}
        self.base_measured: float | None = self.cache.full if self.whole else self.cache.mean(sample)

    def _speed(self) -> float:
        """Forward tokens per second on this machine now: one timed batch of held-out rows, scored
        by the base model (a new run's LoRA changes nothing yet), whose values the cache keeps."""
        if self.probe_speed is not None:
            return self.probe_speed
        st = self.session.run.state
        probe = list(range(min(len(self.rows), self.session.run.config.eval_batch_size)))
        t = time.perf_counter()
        self.cache.rows.update(self.row_sums(probe))
        spent = time.perf_counter() - t
        st.eval_s += spent
        st.elapsed_s += spent
        st.sample_eval_s += spent
        self.probe_speed = sum(len(self.rows[i]["input_ids"]) for i in probe) / max(1e-9, spent)
        return self.probe_speed

    def _sample_tokens(self, at_least: int) -> int:
        """The measured sample's size for a new run under a time budget, tokens (0: the whole
        split): the base model's pass (only the examples the cache lacks; none for the whole
        split when its value is cached) and the final pass over the sample fit in
        ``max_whole_share`` of the budget, less the probe, at the probe's speed."""
        config, st = self.session.run.config, self.session.run.state
        speed = self._speed()
        allowance = config.max_whole_share * 60 * config.time_budget_min - st.sample_eval_s
        lengths = [len(r["input_ids"]) for r in self.rows]
        known = self.cache.rows
        base_whole = 0 if self.cache.full is not None else sum(n for i, n in enumerate(lengths) if i not in known)
        if (sum(lengths) + base_whole) / speed <= allowance:
            return 0
        order = _seeded_order(len(lengths), config.seed)
        k = voice = base = 0
        while k < len(order):
            n = lengths[order[k]]
            extra = 0 if order[k] in known else n
            if k >= at_least and (voice + n + base + extra) / speed > allowance:
                break
            voice, base, k = voice + n, base + extra, k + 1
        return 0 if k == len(order) else voice

    def row_sums(self, idx: list[int]) -> dict[int, tuple[float, int]]:
        """Summed NLL (nats) and labelled tokens of the current weights on each row ``idx``, over
        all processes (each scores its share of the rows)."""
        s = self.session
        dist, config, c = s.compute.dist, s.run.config, s.compute
        if dist.sharded:  # sharded weights: every process runs every batch together
            sums, counts = per_example_nll(s.model, [self.rows[i] for i in idx], self.pad, c.device, c.autocast,
                                           config.eval_batch_size)
            return {i: (float(a), int(b)) for i, a, b in zip(idx, sums, counts)}
        mine = idx[dist.rank :: dist.world]
        sums, counts = per_example_nll(s.peft_model, [self.rows[i] for i in mine], self.pad, c.device, c.autocast,
                                       config.eval_batch_size)
        parts = dist.gather([(i, float(a), int(b)) for i, a, b in zip(mine, sums, counts)])
        return {i: (a, b) for part in parts for i, a, b in part}

    def sums(self, rows: list[dict[str, Any]]) -> tuple[float, int]:
        """Summed NLL (nats) and labelled tokens of the current weights on ``rows``, over all processes."""
        s = self.session
        dist, config, c = s.compute.dist, s.run.config, s.compute
        if dist.sharded:  # sharded weights: every process runs every batch together
            a, b = per_example_nll(s.model, rows, self.pad, c.device, c.autocast, config.eval_batch_size)
            return float(a.sum()), int(b.sum())
        # each process scores its share of the held-out examples; the sums are added up
        a, b = per_example_nll(s.peft_model, rows[dist.rank :: dist.world], self.pad, c.device, c.autocast,
                               config.eval_batch_size)
        total, n = dist.sum([float(a.sum()), float(b.sum())])
        return float(total), int(n)

    def evaluate(self, step: int) -> float:
        """The held-out NLL (nats/token) of the subset at ``step``: :func:`fit`'s score. Each row's
        sum is kept (:attr:`subset_rows`) for the record of the kept adapter (:func:`_final_evaluation`)."""
        self.subset_rows[step] = self.row_sums(self.subset_idx)
        return _mean(self.subset_rows[step])

    def final_cost(self, run: Run) -> float:
        """Seconds the end of the run will take to evaluate: the subset and the rest of the measured
        set, from the cost of the last evaluation of the subset."""
        return run.state.last_eval_s * self.full_ratio

    def sampled_line(self) -> str:
        """The one line that says the run's figures were measured on a sample."""
        share = self.session.run.config.max_whole_share
        return (f"measured on {self.measured_tokens:,} of {self.tokens:,} held-out tokens to keep measuring within "
                f"{share:.0%} of the budget; `mimetic evaluate` measures the whole split")

    def measure_base(self) -> None:
        """Step 0 of a new run: the base model's NLL on the subset and on the measured set,
        measured (the model before training is the base model: LoRA's B matrices start at zero)
        for the examples the cache lacks, or read from the cache."""
        s = self.session
        st, emit, dist, cache = s.run.state, s.emit, s.compute.dist, self.cache
        base_sub = cache.subset_mean(self.subset_idx)
        need = set() if base_sub is not None else set(cache.missing(self.subset_idx))
        if self.base_measured is None:
            need |= set(cache.missing(self.sample_idx))
        spent = 0.0
        if need:
            emit(Progress("train", message=f"measuring the base model on {len(need)} held-out passages (once per voice)"))
            t = time.perf_counter()
            cache.rows.update(self.row_sums(sorted(need)))
            spent = time.perf_counter() - t
            st.eval_s += spent
            st.elapsed_s += spent
            st.sample_eval_s += spent
            measured = sum(len(self.rows[i]["input_ids"]) for i in need)
            st.last_eval_s = spent * self.subset_tokens / max(1, measured)
            if self.base_measured is None:
                self.base_measured = cache.mean(self.sample_idx)
            if self.whole and cache.full is None:
                cache.full = self.base_measured
            if dist.main:
                cache.save()
        else:  # until the first evaluation, the subset's cost from the probe, if any
            st.last_eval_s = self.subset_tokens / self.probe_speed if self.probe_speed else 0.0
        sub = cache.sums(self.subset_idx)
        if sub is not None:
            self.subset_rows[0] = {i: cache.rows[i] for i in self.subset_idx}
            base_sub = sub[0] / max(1, sub[1])
        st.base_nll = st.best_nll = st.last_nll = base_sub
        emit(Metric("train", 0, {"held_out_nll": st.base_nll, "held_out_ppl": math.exp(st.base_nll),
                                 "base_nll_whole": cache.full, "base_nll_measured": self.base_measured,
                                 "held_out_tokens_measured": self.measured_tokens, "held_out_tokens": self.tokens,
                                 "eval_s": spent, "cached": not need, "peak_rss_mb": peak_rss_mb()}))


def _mean(rows: dict[int, tuple[float, int]]) -> float:
    """NLL (nats/token) of rows given as row → (summed NLL, tokens)."""
    return sum(a for a, _ in rows.values()) / max(1, sum(b for _, b in rows.values()))


VOICE_NLL = "held_out_nll.json"
"""``runs/<id>/held_out_nll.json``: the kept adapter's summed NLL and tokens per held-out row, as
the end of training measured them (:func:`_final_evaluation`), so ``mimetic evaluate`` need not
measure them again (:func:`read_voice_nll`)."""


def write_voice_nll(run: Run, held: "HeldOut", rows: dict[int, tuple[float, int]]) -> None:
    """Record the kept adapter's per-row held-out NLL (:data:`VOICE_NLL`), keyed like the base
    model's cache (base model, precision, every row), with the adapter's step."""
    atomic_write_json(run.dir / VOICE_NLL, {"key": held.cache.whole_key, "step": run.state.best_step,
                                            "rows": {str(i): [a, b] for i, (a, b) in sorted(rows.items())}})


def read_voice_nll(run_dir: Path, key: str) -> dict[int, tuple[float, int]]:
    """The run's kept adapter's summed NLL (nats) and tokens per held-out row from
    :data:`VOICE_NLL`: row → (sum, tokens); ``{}`` when there is none, it was measured under
    another ``key`` (:attr:`BaseNLLCache.whole_key`: other rows, base model or precision), or the
    adapter was written after it (:func:`mimetic.models.engines.made_from_current_adapter`)."""
    path = Path(run_dir) / VOICE_NLL
    try:
        if not made_from_current_adapter(path, Path(run_dir)):
            return {}
        data = json.loads(path.read_text())
        if data.get("key") != key:
            return {}
        return {int(k): (float(v[0]), int(v[1])) for k, v in data["rows"].items()}
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):  # damaged: measured again
        return {}


class BaseNLLCache:
    """The base model's held-out NLL, kept in ``data/base_nll.json`` so each voice measures it
    once: it never changes for the same base model, compute precision and held-out tokens.

    One entry per held-out split (its key names the base model, the precision and every row):
    ``rows``, each measured example's summed NLL and labelled tokens, so the NLL of any subset
    or sample whose examples were all measured is known without measuring; ``full``, the whole
    split's NLL. Entries of earlier versions (``subset`` and ``full`` values per in-run subset)
    are still read. ``prepare`` rebuilds ``data/``, which drops the cache with the data it
    describes.

    Attributes:
        full: the whole split's NLL (nats/token), or ``None``. ``rows``: index → (summed NLL, tokens).
    """

    def __init__(self, workspace: Workspace, base_model: str, precision: str, held_rows: list[dict[str, Any]]):
        import hashlib

        self._prefix = f"{base_model}|{precision}|"
        self._row_bytes = [json.dumps([r["input_ids"], r["labels"]]).encode() for r in held_rows]
        whole = hashlib.sha256(f"{base_model}|{precision}|whole".encode())
        for row in self._row_bytes:
            whole.update(row)
        self.whole_key = whole.hexdigest()[:32]
        self.path = workspace.data_dir / "base_nll.json"
        self.data = self._read()
        entries = [e for e in self.data.values() if isinstance(e, dict)]
        entry = self.data.get(self.whole_key)
        entry = entry if isinstance(entry, dict) else {}
        self.full: float | None = entry.get("full", next((e.get("full") for e in entries if e.get("whole") == self.whole_key), None))
        try:
            self.rows: dict[int, tuple[float, int]] = {int(k): (float(v[0]), int(v[1])) for k, v in entry.get("rows", {}).items()}
        except (TypeError, ValueError, IndexError, AttributeError):  # a damaged entry is measured again
            self.rows = {}

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text()) if self.path.exists() else {}
        except (OSError, ValueError):  # a damaged cache is measured again
            data = {}
        return data if isinstance(data, dict) else {}

    def missing(self, idx: list[int]) -> list[int]:
        return [i for i in idx if i not in self.rows]

    def sums(self, idx: list[int]) -> tuple[float, int] | None:
        """Summed NLL and tokens of the rows ``idx``, or ``None`` when one was never measured."""
        if self.missing(idx):
            return None
        return sum(self.rows[i][0] for i in idx), sum(self.rows[i][1] for i in idx)

    def mean(self, idx: list[int]) -> float | None:
        """NLL (nats/token) of the rows ``idx``, or ``None`` when one was never measured."""
        s = self.sums(idx)
        return None if s is None else s[0] / max(1, s[1])

    def subset_mean(self, idx: list[int]) -> float | None:
        """NLL of the rows ``idx`` from the rows, or from an earlier version's entry for that subset."""
        value = self.mean(idx)
        if value is None:
            import hashlib

            old = hashlib.sha256(f"{self._prefix}{idx}".encode())  # the key earlier versions wrote
            for row in self._row_bytes:
                old.update(row)
            entry = self.data.get(old.hexdigest()[:32])
            value = entry.get("subset") if isinstance(entry, dict) else None
        return value

    def save(self) -> None:
        """Record the whole split's value and every measured row (atomically; other keys kept)."""
        data = self._read()
        entry = {"whole": self.whole_key, "rows": {str(i): [a, b] for i, (a, b) in sorted(self.rows.items())}}
        if self.full is not None:
            entry["full"] = self.full
        data[self.whole_key] = entry
        atomic_write_json(self.path, data)


def _final_evaluation(run: Run, session: Session, held: HeldOut, stopped: str) -> tuple[float, float]:
    """Choose the adapter to keep and score it on the measured set (the whole held-out split, or
    the time budget's sample: :class:`HeldOut`).

    The final model is kept unless the subset calls it worse than the kept (best) adapter by
    more than ``min_delta`` (noise on a few thousand tokens; the final model has trained longer,
    its schedule finished). When the subset does call it worse, or after early stopping, the
    measured set decides between the two. Its NLL is the subset's sums plus the rest of the set,
    so only the rest is scored again. Returns ``(base NLL, kept NLL)`` on the measured set,
    nats/token; a sample is said in one :class:`~mimetic.core.events.Warning`.
    """
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    st, config, dist = run.state, run.config, session.compute.dist
    t = time.perf_counter()
    peft_model = session.peft_model

    def measured(sub: dict[int, tuple[float, int]] | None) -> tuple[float, dict[int, tuple[float, int]]]:
        """The current weights on the measured set: NLL, and each row's sums (the subset's given)."""
        rest = held.row_sums(held.rest_idx) if held.rest_idx else {}
        rows = {**(sub if sub is not None else held.row_sums(held.subset_idx)), **rest}
        return _mean(rows), rows

    final_sub = held.subset_rows.get(st.step)  # None after early stopping: the final model was not scored
    final_nll = None if final_sub is None else _mean(final_sub)
    if final_nll is not None and st.best_step != st.step and final_nll <= st.best_nll + config.min_delta:
        session.save_adapter(run)  # as good as the kept adapter on the subset: keep the final model
        st.best_step, st.best_nll = st.step, final_nll
    kept: dict[int, tuple[float, int]] | None = None  # the kept adapter's rows, when all were measured
    if st.best_step == st.step:
        best_full, kept = measured(final_sub)
    elif not held.rest_rows:  # the subset is the measured set: the kept adapter's score is already on it
        best_full, kept = st.best_nll, held.subset_rows.get(st.best_step)
    else:  # the kept adapter is an earlier one, better on the subset: the measured set decides
        current = {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items()}
        dist.wait()  # the main process has finished writing the adapter
        set_peft_model_state_dict(peft_model, load_file(str(run.dir / "adapter" / "adapter_model.safetensors")))
        best_full, kept = measured(held.subset_rows.get(st.best_step))
        set_peft_model_state_dict(peft_model, current)
        if final_nll is not None:
            final_full, final_rows = measured(final_sub)
            if final_full < best_full - config.min_delta:  # the measured set prefers the final model
                session.save_adapter(run)
                st.best_step, best_full, kept = st.step, final_full, final_rows
    if kept is not None and dist.main:
        write_voice_nll(run, held, kept)
    base_full = held.base_measured
    if base_full is None:  # a resumed run whose cache was removed
        with peft_model.disable_adapter():
            base_full = measured(None)[0]
        if held.whole and dist.main:
            held.cache.full = base_full
            held.cache.save()
    spent = time.perf_counter() - t
    st.eval_s += spent
    st.elapsed_s += spent
    values: dict[str, Any] = ({"held_out_nll_whole": best_full, "base_nll_whole": base_full} if held.whole else
                              {"held_out_nll_measured": best_full, "base_nll_measured": base_full,
                               "base_nll_whole": held.cache.full})
    session.emit(Metric("train", st.step, {**values, "held_out_tokens_measured": held.measured_tokens,
                                           "held_out_tokens": held.tokens, "best_step": st.best_step, "eval_s": spent,
                                           "peak_rss_mb": peak_rss_mb()}))
    if not held.whole:
        session.emit(Warning("train", held.sampled_line(),
                             f"Measure the whole split with: mimetic evaluate --workspace {run.workspace.root}"))
    return base_full, best_full


class _PlanFromRun:
    """A :func:`~mimetic.training.loop.fit` callback that makes the run's plan line from its own first
    steps, so planning costs no extra step: the peak memory after the first step (its batch
    holds the epoch's longest row, :func:`epoch_batches`) and the speed of the steps after it
    (the first one warms up); it fills ``out`` with the :class:`Plan` and emits it."""

    def __init__(self, train_rows: list[dict], held_rows: list[dict], eval_tokens: int, config: TrainConfig,
                 device: str, processes: int, out: list[Plan], emit: OnEvent):
        self.args = (train_rows, held_rows, config, device, processes)
        self.eval_tokens, self.out, self.emit = eval_tokens, out, emit
        self.mark: tuple[float, int, float] | None = None

    def after_step(self, run: Run) -> None:
        st = run.state
        last = min(3, st.total_steps)
        if self.out or st.step < 1:
            return
        now = time.perf_counter()
        if st.step == 1 and last > 1:
            self.mark = (now, st.tokens, st.eval_s)
            return
        if st.step < last:
            return
        if self.mark is None:  # a one-step run: its only step, warm-up and all
            spent, tokens0 = st.elapsed_s - st.eval_s, 0
        else:
            t0, tokens0, eval0 = self.mark
            spent = now - t0 - (st.eval_s - eval0)
        speed = (st.tokens - tokens0) / max(1e-9, spent)
        plan = _plan_figures(speed, 0.0, *self.args)
        self.out.append(plan)
        if not st.last_eval_s:  # the base model was cached: the subset's cost, forward only (a third)
            st.last_eval_s = self.eval_tokens / (3 * speed)
        self.emit(Metric("train", st.step, {"plan_peak_memory_mb": plan.peak_memory_mb, "plan_tokens_per_s": plan.tokens_per_s,
                                            "plan_epoch_min": plan.epoch_minutes, "plan_run_min": plan.run_minutes}))
        self.emit(Finished("plan", plan.summary(), asdict(plan)))
        if not plan.fits:
            self.emit(Warning("plan", "This run may not fit in memory.", plan.advice))


def _labelled(row: dict[str, Any]) -> int:
    """Tokens of ``row`` that are predicted in training (labels after the first, not -100)."""
    return sum(1 for x in row["labels"][1:] if x != IGNORE_INDEX)


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
