"""The training loop: a :class:`Run` (typed, versioned state) and :func:`fit`, the only loop.

Supervised fine-tuning (:mod:`mimetic.training.sft`) uses it now; a preference stage (DPO, KTO) and
the web app's runs plug into the same seams (see ``docs/architecture.md``):

* :class:`Run` — a run's folder, its frozen hyperparameters (``config.toml``, a
  :class:`~mimetic.core.config.TrainConfig`), the runtime options of this session
  (:class:`RuntimeOptions`: device, precision, time budget, compile, processes — a resume may
  change them, and the run records each session's) and :class:`RunState` (step, tokens, time,
  schedule, best score, early-stopping count) that a checkpoint saves. ``Run.start`` /
  ``Run.resume``.
* :func:`fit` — takes its parts (model, optimizer, scheduler), a ``loss_fn`` that returns a
  summed loss and its count, a ``batches`` function (micro-step → global rows), an ``evaluate``
  function (step → held-out score, lower is better), ``save_best`` / ``save_checkpoint``
  functions, ``callbacks`` (after every step and evaluation: the time budget uses them) and a
  ``should_stop`` the caller provides (Ctrl-C in the CLI, a stop file, a button in the app). It
  reports :mod:`mimetic.core.events` and never prints. In the spirit of mlx-lm's
  ``tuner/trainer.py``: a loop that takes its parts.

Several processes (accelerate): every process runs :func:`fit`; ``batches`` returns the
*global* micro-batch and each process takes its slice; the loss is the global mean (DDP's
gradient averaging undone); stop decisions are shared (see :mod:`mimetic.models.distributed`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from mimetic.core.config import TrainConfig, VoiceConfig, replace
from mimetic.errors import MimeticError, TrainingInterrupted
from mimetic.core.events import Finished, Metric, OnEvent, Progress, Started, ignore
from mimetic.core.workspace import Workspace, atomic_write_text

STATE_VERSION = 1

# TrainConfig fields that say how this session computes, not what is learned: a resume may
# change them (the rest of the config is frozen when the run starts).
RUNTIME_FIELDS = ("device", "precision", "base_weights", "compile", "time_budget_min", "eval_batch_size",
                  "checkpoint_every", "log_every")


@dataclass
class RuntimeOptions:
    """How a session of a run computes; may differ between the sessions of one run. Made from
    a :class:`TrainConfig` (:meth:`from_config`), whose defaults it takes.

    Attributes:
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        precision: compute precision (``auto``: :func:`mimetic.models.loading.pick_precision`).
        base_weights: dtype of the frozen base weights (``auto``, ``fp32``, ``bf16``).
        compile: ``torch.compile`` the training steps.
        time_budget_min: minutes of training for the whole run (evaluations included); a budget
            given anew on resume counts from the resume.
        eval_batch_size, checkpoint_every, log_every: evaluation batch, steps between
            checkpoints, steps between metric lines.
        processes: training processes (accelerate), recorded; set by the launcher.
    """

    device: str
    precision: str
    base_weights: str
    compile: bool
    time_budget_min: float | None
    eval_batch_size: int
    checkpoint_every: int
    log_every: int
    processes: int = 1

    @classmethod
    def from_config(cls, config: TrainConfig, **changes: Any) -> "RuntimeOptions":
        """The runtime part of a ``[train]`` table, with ``changes`` (``None`` values ignored)."""
        opts = cls(**{k: getattr(config, k) for k in RUNTIME_FIELDS})
        return replace(opts, **changes)

    def apply(self, config: TrainConfig) -> TrainConfig:
        """``config`` with these runtime options in place of its own."""
        return replace(config, **{k: getattr(self, k) for k in RUNTIME_FIELDS})


def human_minutes(minutes: float) -> str:
    """A time budget as a writer reads it: ``2.39543`` → ``"2 min 24 s"``, ``15`` → ``"15 min"``, ``0.5`` → ``"30 s"``."""
    seconds = round(minutes * 60)
    m, s = divmod(seconds, 60)
    return f"{m} min {s} s" if m and s else f"{m} min" if m else f"{s} s"


def with_runtime(config: TrainConfig, **runtime: Any) -> TrainConfig:
    """``config`` with this session's runtime options (:data:`RUNTIME_FIELDS`, same names as
    ``TrainConfig``'s; ``None`` values ignored).

    Raises:
        MimeticError: a key that is not a runtime option.
    """
    unknown = sorted(k for k, v in runtime.items() if v is not None and k not in RUNTIME_FIELDS)
    if unknown:
        raise MimeticError(f"{', '.join(unknown)} is not a runtime option.",
                           f"Runtime options are: {', '.join(RUNTIME_FIELDS)}; set the others in the [train] table.")
    return replace(config, **runtime)


@dataclass
class RunState:
    """Everything about a run's progress that a checkpoint saves (besides weights, optimizer and
    RNG states). Times are seconds; NLL is nats per token.

    Attributes:
        step: optimizer steps done. ``tokens``: training tokens seen (padding excluded).
        elapsed_s: wall time of the run so far, all sessions. ``eval_s``: the part not spent on
            training steps (evaluations, the plan) — tokens/s is tokens / (elapsed − eval).
        total_steps: where the learning-rate schedule ends (shrunk to fit a time budget);
            ``planned_steps``: what epochs / max_steps allow; ``warmup_steps``;
            ``steps_per_epoch``.
        base_nll: the score at step 0; ``best_nll`` / ``best_step``: the best evaluation;
            ``bad_evals``: evaluations since the best (early stopping); ``last_nll``,
            ``last_eval_s``: the latest evaluation and its cost; ``eval_at``: the step of the next
            in-run evaluation when a time budget spaces them (``None``: every ``eval_every``
            steps; 0: none before the end).
        train_loss: the last step's loss; ``window_loss`` / ``window_count``: summed loss and
            count since the last metric line.
        sessions: one entry per start or resume: ``{"step", "started_at", "options"}``.
        eval_tokens: the in-run held-out subset's size (tokens) this run chose (a time budget
            may size it by the machine's speed); ``None`` in a checkpoint written before it:
            ``config.eval_tokens``.
        sample_tokens: the measured sample's size (tokens) this run chose: the base model and the
            kept adapter are scored on a seeded sample of whole held-out examples of about this many
            tokens when the whole split would not fit in ``config.max_whole_share`` of a time budget;
            0 (and ``None``, a checkpoint written before it): the whole split. Kept so that a resumed
            run measures the same sample.
        sample_eval_s: of ``eval_s``, the seconds held by ``max_whole_share`` rather than
            ``max_eval_share`` (the speed probe and the base model's pass before step 1).
    """

    version: int = STATE_VERSION
    step: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0
    eval_s: float = 0.0
    total_steps: int = 0
    planned_steps: int = 0
    warmup_steps: int = 0
    steps_per_epoch: int = 0
    base_nll: float | None = None
    best_nll: float | None = None
    best_step: int = 0
    bad_evals: int = 0
    last_nll: float | None = None
    last_eval_s: float = 0.0
    eval_at: int | None = None
    train_loss: float | None = None
    window_loss: float = 0.0
    window_count: int = 0
    sessions: list[dict[str, Any]] = field(default_factory=list)
    eval_tokens: int | None = None
    sample_tokens: int | None = None
    sample_eval_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunState":
        """Read a saved state; checkpoints written before this class (a ``trainer`` dict and a
        ``sched`` dict) are converted.

        Raises:
            MimeticError: the state is from a newer mimetic.
        """
        if "version" not in data:  # the first release's checkpoint: {"trainer": {...}, "sched": {...}}
            t, s = data.get("trainer", {}), data.get("sched", {})
            data = {"step": t.get("step", 0), "tokens": t.get("tokens", 0), "elapsed_s": t.get("elapsed", 0.0),
                    "eval_s": t.get("eval_total_s", 0.0), "total_steps": s.get("total", 0),
                    "planned_steps": s.get("planned", 0), "warmup_steps": s.get("warmup", 0),
                    "base_nll": t.get("base_nll"), "best_nll": t.get("best_nll"), "best_step": t.get("best_step", 0),
                    "bad_evals": t.get("bad_evals", 0), "last_nll": t.get("last_nll"),
                    "last_eval_s": t.get("last_eval_s", 0.0), "train_loss": t.get("train_loss"),
                    "window_loss": t.get("win_loss", 0.0), "window_count": t.get("win_count", 0), "version": STATE_VERSION}
        if data["version"] > STATE_VERSION:
            raise MimeticError("This run's checkpoint was written by a newer mimetic.", "Upgrade mimetic to resume it.")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class Run:
    """One training run: its folder ``runs/<id>``, hyperparameters, runtime options and state.

    ``config`` is the effective :class:`TrainConfig`: the frozen hyperparameters with this
    session's runtime options applied. ``checkpoint`` is the loaded checkpoint (``None`` for a
    fresh run) for the stage to restore weights, optimizer and RNG from.
    """

    def __init__(self, workspace: Workspace, run_id: str, config: TrainConfig, options: RuntimeOptions,
                 state: RunState, checkpoint: dict[str, Any] | None = None):
        self.workspace = workspace
        self.id = run_id
        self.dir = workspace.runs_dir / run_id
        self.config = options.apply(config)
        self.options = options
        self.state = state
        self.checkpoint = checkpoint
        self.stop_reason: str | None = None  # a callback's reason to end the run now (the time budget)

    @property
    def resumed(self) -> bool:
        return self.checkpoint is not None

    @classmethod
    def start(cls, workspace: Workspace, config: TrainConfig, options: RuntimeOptions | None = None,
              run_id: str | None = None, write: bool = True) -> "Run":
        """A new run with ``config`` frozen into ``runs/<id>/config.toml`` (with the workspace's
        other tables, so the run says how its data was made).

        Args:
            run_id: given by the main process when several train together; default a new id.
            write: ``False`` in processes other than the main one.
        """
        options = options or RuntimeOptions.from_config(config)
        run = cls(workspace, run_id or workspace.new_run_id(), config, options, RunState())
        if write:
            run.dir.mkdir(parents=True, exist_ok=True)
            vc = workspace.load_config()
            atomic_write_text(run.dir / "config.toml", VoiceConfig(vc.ingest, vc.prepare, run.config, vc.generate).dumps())
            atomic_write_text(run.dir / "metrics.jsonl", "")
        return run

    @classmethod
    def resume(cls, workspace: Workspace, run_id: str | None = None, **runtime: Any) -> "Run":
        """The run ``run_id`` (default: the latest) from its checkpoint, its hyperparameters from
        its ``config.toml`` and its runtime options from there unless given in ``runtime``
        (``device=``, ``time_budget_min=``, ``compile=`` …; ``None`` values are ignored).

        Raises:
            MimeticError: no such run, no checkpoint, a runtime option that is not one, or a
                checkpoint from a newer mimetic.
        """
        import torch

        run_dir = workspace.run_dir(run_id, finished=False)
        state_file = run_dir / "checkpoint" / "state.pt"
        if not state_file.exists():
            raise MimeticError(f"Run {run_dir.name} has no checkpoint to resume from.", "Start a new run with: mimetic train")
        unknown = sorted(k for k, v in runtime.items() if v is not None and k not in RUNTIME_FIELDS + ("processes",))
        if unknown:
            raise MimeticError(f"{', '.join(unknown)} cannot change when a run is resumed (the run's settings are frozen).",
                               "Start a new run to change them: mimetic train")
        config = VoiceConfig.load(run_dir / "config.toml").train
        try:
            blob = torch.load(state_file, weights_only=False)
        except Exception as e:  # truncated or damaged (RuntimeError, EOFError, UnpicklingError …)
            raise MimeticError(f"The checkpoint of run {run_dir.name} is damaged ({type(e).__name__}).",
                               f"Start a new run: mimetic train --workspace {workspace.root} (the run's adapter, "
                               "if it has one, is still usable for writing).") from None
        state = RunState.from_dict(blob.get("state") or blob)
        options = RuntimeOptions.from_config(config, **runtime)
        if runtime.get("time_budget_min") is not None:  # a budget given anew counts from the resume
            options = replace(options, time_budget_min=runtime["time_budget_min"] + state.elapsed_s / 60)
        return cls(workspace, run_dir.name, config, options, state, checkpoint=blob)

    def plan_schedule(self, steps_per_epoch: int, epochs: float, max_steps: int | None, warmup_ratio: float) -> None:
        """Set the learning-rate schedule of a new run: ``ceil(epochs × steps_per_epoch)`` steps
        (at most ``max_steps``), the first ``warmup_ratio`` of them warm-up. A resumed run keeps
        its own (it may have been fitted to a time budget)."""
        st = self.state
        if not self.resumed:
            planned = math.ceil(epochs * steps_per_epoch)
            if max_steps:
                planned = min(planned, max_steps)
            st.planned_steps = st.total_steps = planned
            st.warmup_steps = int(round(warmup_ratio * planned))
        st.steps_per_epoch = steps_per_epoch

    def record_session(self) -> None:
        """Note this session's start (step, time, runtime options) in the state."""
        self.state.sessions.append({"step": self.state.step, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                    "options": asdict(self.options)})

    def stop_file(self) -> Path:
        """Creating this file asks a run in progress to checkpoint and stop (``mimetic stop``, the app)."""
        return self.dir / "stop"

    @staticmethod
    def request_stop(run_dir: Path) -> None:
        """Ask the run in ``run_dir`` to checkpoint and stop after its current step (from any process)."""
        (Path(run_dir) / "stop").touch()


class Callback(Protocol):
    """Optional hooks of :func:`fit`; any object with some of these methods will do."""

    def after_step(self, run: Run) -> None: ...  # pragma: no cover

    def after_evaluation(self, run: Run, score: float, improved: bool) -> None: ...  # pragma: no cover


@dataclass
class Parts:
    """What :func:`fit` trains with: ``model`` (wrapped for several processes), ``step_model``
    (the same, or its compiled version), the trainable ``params``, ``optimizer``,
    ``scheduler`` (stepped once per optimizer step), ``dist`` (:class:`mimetic.models.distributed.Dist`)
    and, for fp16 compute, a ``scaler`` (``torch.amp.GradScaler``: :func:`grad_scaler`)."""

    model: Any
    step_model: Any
    params: list[Any]
    optimizer: Any
    scheduler: Any
    dist: Any
    scaler: Any = None


def grad_scaler(device: str, precision: str) -> Any:
    """A ``torch.amp.GradScaler`` for fp16 compute, else ``None``.

    fp16 has five exponent bits: small gradients flush to zero unless the loss is multiplied up
    first and the gradients divided back before the step, and a step whose gradients overflow is
    skipped while the factor is halved (PyTorch's automatic mixed precision recipe,
    Micikevicius et al. 2018, "Mixed Precision Training"). bf16 and fp32 need none. fp16 is what
    a GPU without bf16 computes in (an RTX 2070, the qwen3b-8gb preset's card), or an older Mac.
    """
    if precision != "fp16":
        return None
    import torch

    return torch.amp.GradScaler(device)


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


def scheduler_for(optimizer: Any, run: Run) -> Any:
    """A ``LambdaLR`` following :func:`lr_lambda` with the run's warmup and *current* total
    (read from ``run.state`` at every step, so a re-planned schedule takes effect)."""
    import torch

    st, schedule = run.state, run.config.lr_schedule
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_lambda(s, st.warmup_steps, st.total_steps, schedule))


LossFn = Callable[[Any, list[dict[str, Any]]], tuple[Any, int]]


def fit(
    run: Run,
    parts: Parts,
    loss_fn: LossFn,
    batches: Callable[[int], list[dict[str, Any]]],
    evaluate: Callable[[int], float],
    *,
    count: Callable[[list[dict[str, Any]]], int] = len,
    save_best: Callable[[Run], None] = lambda run: None,
    save_checkpoint: Callable[[Run], None] = lambda run: None,
    should_stop: Callable[[Run], bool] | None = None,
    callbacks: Sequence[Any] = (),
    on_event: OnEvent = ignore,
    stage: str = "train",
    score_name: str = "held_out_nll",
) -> str:
    """Train ``run`` from ``run.state.step`` to ``run.state.total_steps``; returns why it stopped.

    Each optimizer step takes ``config.grad_accum`` micro-batches ``batches(micro_step)`` (the
    *global* rows; each process trains on its ``batch_size`` slice) and minimises
    ``Σ loss_fn(model, rows)[0] / count(all rows of the step)``: a mean over the whole step's
    units (tokens for SFT, pairs for a preference loss), however they fall into micro-batches
    and processes. Gradients are clipped to ``config.max_grad_norm`` (0: off).

    Evaluation: at step 0 when ``run.state.base_nll`` is unset, every ``config.eval_every``
    steps and at the end, ``evaluate(step)`` gives a score (lower is better; logged as
    ``score_name``, the held-out NLL unless a stage scores otherwise); an improvement by
    more than ``config.min_delta`` calls ``save_best``; ``config.patience`` evaluations without
    one stop the run early. ``save_checkpoint`` is called every ``config.checkpoint_every``
    steps, on a stop and at the end.

    Events: :class:`~mimetic.core.events.Metric` lines (train loss, lr, tokens, tokens/s every
    ``config.log_every`` steps; the evaluations) and :class:`~mimetic.core.events.Progress` every step.

    Returns:
        ``"finished"``, ``"early stopping: …"`` or ``"time budget of … reached"`` (a callback
        may set ``run.stop_reason``).

    Raises:
        TrainingInterrupted: ``should_stop(run)`` said so (in any process); a checkpoint was saved.
    """
    st, config, dist = run.state, run.config, parts.dist
    run.stop_reason = None

    def run_eval(step: int) -> float:
        return _evaluate(run, step, evaluate, save_best, callbacks, on_event, stage, score_name)

    parts.model.train()
    t_start = time.perf_counter() - st.elapsed_s
    if st.base_nll is None:
        st.base_nll = run_eval(0)
        st.elapsed_s = time.perf_counter() - t_start
        save_checkpoint(run)

    stopped = "finished"
    since = (st.tokens, st.eval_s, time.perf_counter())  # this session's start: its speed
    on_event(Started(stage, f"training {run.id}", total=st.total_steps, unit="steps"))
    while st.step < st.total_steps:
        _optimizer_step(run, parts, loss_fn, batches, count)
        st.elapsed_s = time.perf_counter() - t_start
        _report_step(run, parts, since, on_event, stage)
        due = st.step % config.eval_every == 0 if st.eval_at is None else 0 < st.eval_at <= st.step
        if due and st.step < st.total_steps:
            run_eval(st.step)
            if st.bad_evals >= config.patience:
                stopped = f"early stopping: held-out NLL did not improve for {config.patience} evaluations"
                break
        for cb in callbacks:
            if hasattr(cb, "after_step"):
                cb.after_step(run)
        over = run.stop_reason is not None
        asked = bool(should_stop and should_stop(run))
        # every process stops at the same step: a stop anywhere is a stop everywhere
        over, asked = (x > 0 for x in dist.sum([float(over), float(asked)]))
        if over:
            stopped = run.stop_reason or "stopped"
            break
        if asked:
            save_checkpoint(run)
            dist.wait()  # every process leaves once the checkpoint is written: a resume may follow at once
            raise TrainingInterrupted(
                f"Training stopped at step {st.step} of {st.total_steps}; a checkpoint was saved.",
                f"Resume with: mimetic train --resume {run.id} --workspace {run.workspace.root}"
                + (f" --processes {dist.world}" if dist.world > 1 else ""),
            )
        if st.step % config.checkpoint_every == 0:
            save_checkpoint(run)
    if not stopped.startswith("early"):
        run_eval(st.step)
    st.elapsed_s = time.perf_counter() - t_start  # the final evaluation included
    save_checkpoint(run)
    on_event(Finished(stage, stopped, {"step": st.step, "best_nll": st.best_nll, "base_nll": st.base_nll}))
    return stopped


def _evaluate(run: Run, step: int, evaluate: Callable[[int], float], save_best: Callable[[Run], None],
              callbacks: Sequence[Any], on_event: OnEvent, stage: str, score_name: str) -> float:
    """One evaluation of :func:`fit`: the score, its cost, its event, the best so far (saved
    when improved by more than ``min_delta``), the early-stopping count and the callbacks."""
    st, config = run.state, run.config
    t = time.perf_counter()
    score = evaluate(step)
    st.last_eval_s = time.perf_counter() - t
    st.eval_s += st.last_eval_s
    st.last_nll = score
    values = {score_name: score, "eval_s": st.last_eval_s}
    if score_name == "held_out_nll":
        values["held_out_ppl"] = math.exp(min(score, 700))
    on_event(Metric(stage, step, values))
    improved = st.best_nll is None or score < st.best_nll - config.min_delta
    if improved:
        st.best_nll, st.best_step, st.bad_evals = score, step, 0
        save_best(run)
    else:
        st.bad_evals += 1
    for cb in callbacks:
        if hasattr(cb, "after_evaluation"):
            cb.after_evaluation(run, score, improved)
    return score


def _optimizer_step(run: Run, parts: Parts, loss_fn: LossFn, batches: Callable[[int], list[dict[str, Any]]],
                    count: Callable[[list[dict[str, Any]]], int]) -> None:
    """One optimizer step of :func:`fit`: ``grad_accum`` micro-batches weighted into one global
    mean, clipping, the step (through the fp16 scaler when there is one) and the schedule; the
    state's step, tokens, loss and loss window advanced."""
    st, config, dist = run.state, run.config, parts.dist
    bs = config.batch_size
    step = st.step
    micro = step * config.grad_accum
    loss_sum = 0.0
    global_rows = [batches(micro + k) for k in range(config.grad_accum)]
    n_units = sum(count(rows) for rows in global_rows)
    for k, rows in enumerate(global_rows):  # gradient accumulation, weighted across micro-batches
        mine, weight = rows[dist.rank * bs : (dist.rank + 1) * bs], 1.0
        if not mine:  # a short last batch: run one row with weight 0 so every process takes part
            mine, weight = rows[:1], 0.0
        with dist.no_sync(parts.model, skip=k < config.grad_accum - 1):
            s, _ = loss_fn(parts.step_model, mine)
            loss = s / max(1, n_units)
            if dist.world > 1:  # DDP averages gradients over processes: undo that for a global mean
                loss = loss * (weight * dist.world)
            dist.backward(loss if parts.scaler is None else parts.scaler.scale(loss))
        loss_sum += float(s.detach()) * weight
    loss_sum = dist.sum([loss_sum])[0]
    if parts.scaler is not None:
        parts.scaler.unscale_(parts.optimizer)  # true gradients, for clipping and the step
    if config.max_grad_norm:
        dist.clip_grad_norm_(parts.model, parts.params, config.max_grad_norm)
    if parts.scaler is None:
        parts.optimizer.step()
    else:  # skips the step when a gradient overflowed, and adjusts the scale
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
    parts.scheduler.step()
    parts.optimizer.zero_grad(set_to_none=True)
    st.step = step + 1
    st.tokens += sum(len(r["input_ids"]) for rows in global_rows for r in rows)
    st.train_loss = loss_sum / max(1, n_units)
    st.window_loss += loss_sum
    st.window_count += n_units


def _report_step(run: Run, parts: Parts, since: tuple[int, float, float], on_event: OnEvent, stage: str) -> None:
    """The events after a step: a :class:`Metric` line every ``log_every`` steps (and after the
    first), :class:`Progress` every step. ``since``: tokens, evaluation seconds and
    ``perf_counter`` at this session's start, for its training speed."""
    st, config = run.state, run.config
    tokens0, eval0, t0 = since
    # training time only (evaluations left out): the same rule as the run's summary
    speed = (st.tokens - tokens0) / max(1e-9, time.perf_counter() - t0 - (st.eval_s - eval0))
    if st.step % config.log_every == 0 or st.step == 1:
        # a mean over the steps since the last line: a steadier curve
        on_event(Metric(stage, st.step, {
            "epoch": st.step / max(1, st.steps_per_epoch),
            "train_loss": st.window_loss / max(1, st.window_count), "lr": parts.scheduler.get_last_lr()[0],
            "tokens": st.tokens, "tokens_per_s": speed, "elapsed_s": st.elapsed_s,
            "peak_rss_mb": peak_rss_mb()}))
        st.window_loss, st.window_count = 0.0, 0
    left = (st.total_steps - st.step) * (st.elapsed_s - st.eval_s) / max(1, st.step)
    on_event(Progress(stage, st.step, st.total_steps, "steps", eta_s=left,
                      info={"train_loss": st.train_loss, "held_out_nll": st.last_nll, "tokens_per_s": speed}))


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


class TimeBudget:
    """A :func:`fit` callback that fits the learning-rate schedule into ``time_budget_min`` minutes
    (the whole run's wall time from ``started``, a ``time.perf_counter()``) and ends the
    run when what is left would not fit: ``reserve(run)`` seconds are kept for the evaluation at
    the end (default: the cost of the last evaluation).

    The schedule is re-planned after 5 steps, every ``eval_every`` steps and after every
    evaluation, with the training time per step measured so far (evaluation time excluded) and
    the cost of the last evaluation for each evaluation still to come; it never plans beyond ``run.state.planned_steps``. Several
    processes take the most cautious plan.

    With ``eval_share``, the in-run evaluations are spaced (at least ``eval_every`` steps apart)
    so that all the time spent measuring — what is spent so far (``run.state.eval_s``), the
    evaluations to come and the reserve — stays within ``eval_share`` of the budget; when even
    the reserve does not fit, there is none before the end. With ``share_apart`` the passes
    before the first step and at the end are held by a share of their own (the run sizes them
    to it): ``eval_share`` then holds only the in-run evaluations, what is spent so far being
    ``run.state.eval_s`` less ``run.state.sample_eval_s``, and the reserve is not counted in it.
    """

    def __init__(self, time_budget_min: float, dist: Any, started: float, reserve: Callable[[Run], float] | None = None,
                 eval_share: float | None = None, share_apart: bool = False):
        self.time_budget_min = time_budget_min
        self.dist = dist
        self.deadline = started + 60 * time_budget_min
        self.reserve = reserve or (lambda run: run.state.last_eval_s)
        self.eval_share = eval_share
        self.share_apart = share_apart

    def _steps_that_fit(self, run: Run, every: int, per_step: float, left: float) -> int:
        st = run.state
        fit_to = st.step
        while fit_to < st.planned_steps:
            evals = (fit_to + 1 - st.step) // every if every else 0
            if (fit_to + 1 - st.step) * per_step + evals * st.last_eval_s > left:
                break
            fit_to += 1
        return fit_to

    def replan(self, run: Run) -> None:
        st, config = run.state, run.config
        per_step = max(1e-6, (st.elapsed_s - st.eval_s) / max(1, st.step))
        left = self.deadline - time.perf_counter() - self.reserve(run)
        every = config.eval_every
        fit_to = self._steps_that_fit(run, every, per_step, left)
        if self.eval_share and st.last_eval_s > 0:
            if self.share_apart:  # the base model's pass and the final one have their own share
                allowance = self.eval_share * 60 * self.time_budget_min - (st.eval_s - st.sample_eval_s)
            else:
                allowance = self.eval_share * 60 * self.time_budget_min - st.eval_s - self.reserve(run)
            evals = max(0, math.floor(allowance / st.last_eval_s))
            if evals * every < fit_to - st.step:  # evaluating every eval_every steps would go over the share
                fit_to = self._steps_that_fit(run, 0, per_step, left - evals * st.last_eval_s)
                # ceil: evaluations at step + k·every before the end number at most `evals`
                every = max(every, math.ceil((fit_to - st.step) / (evals + 1))) if evals else 0
            every = self.dist.min_int(every or 10**9)  # every process evaluates at the same steps
            every = 0 if every == 10**9 else every
            if not every:
                st.eval_at = 0
            elif not (st.eval_at and st.eval_at > st.step):  # a pending evaluation keeps its step
                st.eval_at = st.step + every
        st.total_steps = self.dist.min_int(max(st.step + 1, fit_to))

    def after_step(self, run: Run) -> None:
        st = run.state
        if st.step == 5 or st.step % run.config.eval_every == 0:  # also when no evaluation is due
            self.replan(run)
        if time.perf_counter() + self.reserve(run) > self.deadline:
            run.stop_reason = f"time budget of {human_minutes(self.time_budget_min)} reached"

    def after_evaluation(self, run: Run, score: float, improved: bool) -> None:
        if run.state.step:
            self.replan(run)
