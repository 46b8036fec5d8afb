"""What every trainer sets up the same way: a training session around :func:`mimetic.training.loop.fit`.

Supervised fine-tuning (:mod:`mimetic.training.sft`) and the preference stage
(:mod:`mimetic.training.preference`) differ in their loss, their batches and their evaluation;
everything else is here, written once:

* opening a run: :func:`resume_run` (a run from its checkpoint, with this session's runtime
  options), :func:`check_version`, :func:`check_data_for` (data prepared for this model),
  :func:`check_frozen` (a resumed run keeps its settings);
* the computing: :class:`Compute` (device, precision, autocast, processes), :func:`seed_all`,
  :func:`rng_state` / :func:`set_rng_state`;
* the session itself: :class:`Session` makes the optimizer (AdamW) and the schedule, restores a
  checkpoint (LoRA weights, optimizer, schedule, gradient scaler, RNG states, the metrics
  file's tail), watches the stop file, saves the best adapter and the checkpoint, and runs
  :func:`~mimetic.training.loop.fit`;
* batches: :func:`epoch_batches` (seeded, length-grouped) and :func:`padding_share`;
* publishing: :func:`record_version` (a finished run becomes a version, and the voice only
  when it measures better or the writer asked).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from mimetic.core.config import TrainConfig
from mimetic.core.events import Artifact, OnEvent, Progress, Started, Warning
from mimetic.core.workspace import Workspace, atomic_dir, check_free_disk
from mimetic.errors import MimeticError, TrainingInterrupted
from mimetic.training.loop import Parts, Run, fit, grad_scaler, scheduler_for

# ------------------------------------------------------------------------------ random states


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's random generators with ``seed``."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """This process's random states (Python, NumPy, torch, CUDA): what a checkpoint saves so that
    dropout masks and sampling continue exactly on resume."""
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Put back random states saved by :func:`rng_state`."""
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------ checks


def check_data_for(workspace: Workspace, base_model: str, *, format: str | None = None, preset: str | None = None) -> None:
    """Training ``base_model`` needs data prepared with its tokenizer (and, for a preset, in its
    ``format``): the one check of train, polish and the CLI's ``--preset``.

    Raises:
        MimeticError: nothing prepared, or data prepared for another model (or format); the
            fix is the prepare command (for the preset, when one is named).
    """
    meta = workspace.data_meta()
    if preset is None:
        if meta.base_model != base_model:
            raise MimeticError(f"The training data was prepared for {meta.base_model!r}, not {base_model!r}.",
                               f"Run: mimetic prepare --base-model {base_model} --workspace {workspace.root}")
        return
    fmt = meta.config.get("format", "completion")
    if meta.base_model != base_model or fmt != format:
        raise MimeticError(
            f"The training data was prepared for {meta.base_model} ({fmt}); preset {preset} trains {base_model} ({format}).",
            f"Prepare it for the preset first: mimetic prepare --preset {preset} --workspace {workspace.root}, then mimetic train",
        )


def check_frozen(given: dict[str, Any], *, polish: bool = False) -> None:
    """A resumed run keeps the settings it started with: refuse any of them given again.

    Args:
        given: option name (as the command line spells it, without ``--``) → value; ``None``
            values are not given.
        polish: the run is a polish run (its command is ``mimetic polish``).

    Raises:
        MimeticError: one or more frozen settings were given; names them all.
    """
    names = sorted(k for k, v in given.items() if v is not None)
    if not names:
        return
    flags = ", --".join(names)
    if polish:
        raise MimeticError(f"A resumed polish run keeps its settings: --{flags} cannot change.",
                           "Resume without them, or start a new polish run: mimetic polish")
    raise MimeticError(f"A resumed run keeps its settings: --{flags} cannot change.",
                       "Resume without them, or start a new run to change them: mimetic train")


def check_version(workspace: Workspace, config: TrainConfig) -> None:
    """Check a new run's version name and selection before anything is trained.

    Raises:
        MimeticError: a selection without a version name, an unusable or taken name, or a
            selection that cannot be read or leaves no training or held-out example.
    """
    from mimetic.corpus.prepare import load_split

    if config.where and not config.version:
        raise MimeticError("A selection of your writing makes a version: name it.",
                           f'mimetic train --version NAME --where "{config.where}"')
    workspace.check_new_version(config.version)
    if config.where:
        load_split(workspace, "train", config.where)
        load_split(workspace, "held_out", config.where)


def resume_run(workspace: Workspace, resume: str | bool, **runtime: Any) -> Run:
    """The run ``resume`` (``True``: the latest) from its checkpoint, with this session's runtime
    options (:meth:`Run.resume`), checked to be resumed by as many processes as trained it.

    Raises:
        MimeticError: from :meth:`Run.resume`; or a different number of processes.
    """
    from mimetic.models.distributed import launched_processes

    run = Run.resume(workspace, None if resume is True else str(resume), **runtime)
    saved = run.checkpoint.get("processes", 1) if run.checkpoint else 1
    if saved != launched_processes():
        raise MimeticError(
            f"Run {run.id} was trained by {saved} process(es), not {launched_processes()}.",
            f"Resume it with the same number: mimetic train --resume {run.id} --processes {saved}",
        )
    return run


# ----------------------------------------------------------------------------------- compute


def compute_precision(device: str, config: TrainConfig) -> str:
    """Compute precision of a run: bf16 when the base weights are stored in bf16, else
    :func:`mimetic.models.loading.pick_precision` of ``config.precision``."""
    from mimetic.models.loading import pick_precision

    return pick_precision(device, "bf16" if config.base_weights == "bf16" else config.precision)


@dataclass
class Compute:
    """Where and how a session computes: ``device`` (``cpu``, ``cuda``, ``mps``), ``precision``
    (``fp32``, ``bf16``, ``fp16``), ``autocast`` (a context factory for that precision) and
    ``dist`` (:class:`mimetic.models.distributed.Dist`: the processes; the main one decides the
    precision, the others follow)."""

    device: str
    precision: str
    autocast: Callable[[], Any]
    dist: Any

    @classmethod
    def pick(cls, config: TrainConfig) -> "Compute":
        """The device, precision and processes of ``config`` (``device``, ``precision``, ``base_weights``).

        Raises:
            MimeticError: the device asked for is not on this machine.
        """
        from mimetic.models.distributed import Dist
        from mimetic.models.loading import autocast, pick_device

        device = pick_device(config.device)
        dist = Dist(device)  # several processes (accelerate launch / torchrun): the main one decides
        precision = dist.broadcast(compute_precision(device, config))
        return cls(device, precision, autocast(device, precision), dist)


def compiled(model: Any) -> Any:
    """``torch.compile(model, dynamic=True)`` (batches change length), with inductor's cache in
    mimetic's user cache directory so later runs skip most of the compilation."""
    import os

    import torch

    from mimetic.models.loading import cache_dir

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))
    return torch.compile(model, dynamic=True)


def adamw(params: list[Any], learning_rate: float, weight_decay: float) -> Any:
    """AdamW (Loshchilov & Hutter 2019; betas 0.9 / 0.999, eps 1e-8: PyTorch's and HF's defaults)
    with PyTorch's fused kernel where the parameters' device has one (CPU, CUDA, MPS): one pass
    over all of them instead of PyTorch's CPU default, a loop of about ten operations per
    tensor. On the 2-core AMD EPYC, for the 420 LoRA tensors (4.9M weights) of SmolLM2-135M at
    rank 16, a step took 7.4–7.8 ms against 24.7–24.8 ms (``benchmarks/RESULTS.md``). The same
    update, the same state (a checkpoint of either loads into the other). Elsewhere PyTorch's
    default implementation."""
    import torch

    kwargs = dict(lr=learning_rate, weight_decay=weight_decay, betas=(0.9, 0.999), eps=1e-8)
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # a device or dtype the fused kernel does not take
        return torch.optim.AdamW(params, **kwargs)


def pad_id(tokenizer: Any) -> int:
    """The token id batches are padded with: the tokenizer's pad token, else 0."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


# ----------------------------------------------------------------------------------- session


def stop_requested(run: Run, should_stop: Callable[[Run], bool] | None) -> bool:
    """Whether ``run`` is asked to stop: its stop file exists (``mimetic stop``, the app), or the
    caller's ``should_stop(run)`` says so (Ctrl-C)."""
    return run.stop_file().exists() or bool(should_stop and should_stop(run))


class Session:
    """One session of a run: its model, optimizer, schedule, saving and stopping, ready for :meth:`fit`.

    Made after the stage has planned the run's schedule (:meth:`Run.plan_schedule`) and built
    its model with trainable LoRA weights ``params`` (fp32). Making it restores a resumed run's
    checkpoint: LoRA weights (before the model is wrapped for several processes), AdamW and
    schedule state, the fp16 gradient scaler, this process's RNG states, and drops the
    interrupted tail of ``metrics.jsonl``; then records the session in the run's state and
    removes a stale stop file.

    Args:
        run: the run, started or resumed.
        compute: :class:`Compute` of this session.
        model: the PEFT model; ``params``: its trainable weights.
        learning_rate: AdamW's peak learning rate (the schedule scales it).
        stage: the stage's name in events (``train``, ``polish``).
        emit: where events go (the metrics file included).
        should_stop: the caller's stop request (Ctrl-C, a button), asked after every step; a
            file ``runs/<id>/stop`` asks the same.
        compile: ``torch.compile`` the training steps (evaluation stays eager).
        extra_state: the stage's own entries of every checkpoint (``dict``, picklable).

    Attributes:
        model: wrapped for the processes (``peft_model``: unwrapped). ``parts``: what :func:`fit`
            trains with. ``trainable``, ``total_params``: parameter counts.
    """

    def __init__(self, run: Run, compute: Compute, model: Any, params: list[Any], *, learning_rate: float, stage: str,
                 emit: OnEvent, should_stop: Callable[[Run], bool] | None = None, compile: bool = False,
                 extra_state: Callable[[], dict[str, Any]] = dict):
        from peft import set_peft_model_state_dict

        self.run, self.compute, self.stage, self.emit = run, compute, stage, emit
        self.should_stop, self.extra_state, self.params = should_stop, extra_state, params
        dist, config = compute.dist, run.config
        ckpt = run.checkpoint or {}
        if "lora" in ckpt:
            set_peft_model_state_dict(model, ckpt["lora"])
        optimizer = adamw(params, learning_rate, config.weight_decay)
        model, optimizer = dist.prepare(model, optimizer)
        step_model = compiled(model) if compile else model  # training steps only; evaluation runs eagerly
        self.model = model
        self.parts = Parts(model, step_model, params, optimizer, scheduler_for(optimizer, run), dist,
                           grad_scaler(compute.device, compute.precision))
        self.trainable, self.total_params = self.peft_model.get_nb_trainable_parameters()
        if run.resumed:
            self._restore(ckpt)
        run.record_session()
        if dist.main:
            run.stop_file().unlink(missing_ok=True)  # a stale request from an earlier session

    @property
    def peft_model(self) -> Any:
        return self.compute.dist.unwrap(self.model)

    def _restore(self, ckpt: dict[str, Any]) -> None:
        from mimetic.core.events import MetricsFile

        run, dist, parts = self.run, self.compute.dist, self.parts
        if dist.sharded:  # FSDP / DeepSpeed: sharded weights and optimizer, saved by accelerate
            dist.acc.load_state(str(run.dir / "checkpoint-accelerate"))
        else:
            parts.optimizer.load_state_dict(ckpt["optimizer"])
        parts.scheduler.load_state_dict(ckpt["scheduler"])
        if parts.scaler is not None and "grad_scaler" in ckpt:
            parts.scaler.load_state_dict(ckpt["grad_scaler"])
        MetricsFile(run.dir / "metrics.jsonl", dist.main).truncate_after(run.state.step)  # the interrupted tail
        set_rng_state(ckpt.get("rng_by_process", [ckpt["rng"]])[dist.rank])
        self.emit(Started(self.stage, f"resuming run {run.id} at step {run.state.step} of {run.state.total_steps}"))

    def stop_asked(self, run: Run) -> bool:
        """:func:`stop_requested` with this session's ``should_stop``."""
        return stop_requested(run, self.should_stop)

    def save_adapter(self, run: Run) -> None:
        """Write the current LoRA weights as the run's ``adapter/`` (atomically; sharded weights
        are gathered first, so every process calls it)."""
        dist = self.compute.dist
        full = dist.full_state_dict(self.model)
        if dist.main:
            with atomic_dir(run.dir / "adapter") as tmp:
                self.peft_model.save_pretrained(tmp, state_dict=full)
            self.emit(Artifact(self.stage, run.dir / "adapter", "adapter"))

    def save_checkpoint(self, run: Run) -> None:
        """Write ``checkpoint/state.pt``: run state, schedule, RNG states of every process, LoRA
        weights and AdamW state (or accelerate's shards), the gradient scaler, the stage's
        ``extra_state()``; atomically.

        Raises:
            MimeticError: not enough free disk space for it.
        """
        import torch
        from peft import get_peft_model_state_dict

        dist, parts = self.compute.dist, self.parts
        check_free_disk(run.dir, 4 * sum(p.numel() * 4 for p in self.params) + 2**20, "a checkpoint")
        rngs = dist.gather(rng_state())  # every process's RNG: dropout masks continue exactly on resume
        if dist.sharded:  # every process writes its shards of weights and optimizer
            dist.save_state(run.dir / "checkpoint-accelerate")
        if not dist.main:
            return
        blob = {"state": run.state.to_dict(), "scheduler": parts.scheduler.state_dict(), "rng": rngs[0],
                "processes": dist.world, **self.extra_state()}
        if dist.world > 1:
            blob["rng_by_process"] = rngs
        if parts.scaler is not None:
            blob["grad_scaler"] = parts.scaler.state_dict()
        if not dist.sharded:
            blob["lora"] = {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(self.peft_model).items()}
            blob["optimizer"] = parts.optimizer.state_dict()
        with atomic_dir(run.dir / "checkpoint") as tmp:
            torch.save(blob, tmp / "state.pt")

    def fit(self, loss_fn: Callable[[Any, list[dict[str, Any]]], tuple[Any, int]], batches: Callable[[int], list[dict[str, Any]]],
            evaluate: Callable[[int], float], *, count: Callable[[list[dict[str, Any]]], int] = len,
            callbacks: Sequence[Any] = (), score_name: str = "held_out_nll", resume_hint: str | None = None,
            on_interrupt: Callable[[], None] | None = None) -> str:
        """:func:`mimetic.training.loop.fit` with this session's parts, saving and stopping;
        returns why training stopped.

        Raises:
            TrainingInterrupted: a stop was asked (a checkpoint is saved); its hint is
                ``resume_hint`` when given. The stop file is removed and ``on_interrupt`` called
                (in the main process) first.
        """
        run = self.run
        try:
            return fit(run, self.parts, loss_fn, batches, evaluate, count=count, save_best=self.save_adapter,
                       save_checkpoint=self.save_checkpoint, should_stop=self.stop_asked, callbacks=callbacks,
                       on_event=self.emit, stage=self.stage, score_name=score_name)
        except TrainingInterrupted as e:
            if self.compute.dist.main:
                run.stop_file().unlink(missing_ok=True)
                if on_interrupt:
                    on_interrupt()
            if resume_hint is None:
                raise
            raise TrainingInterrupted(e.message, resume_hint) from None


# ----------------------------------------------------------------------------------- batches


def epoch_batches(lengths: list[int], config: TrainConfig, epoch: int) -> list[list[int]]:
    """Row indices of every micro-batch of ``epoch``, from a seeded permutation (so the data
    position of any step can be recomputed on resume).

    With ``config.group_by_length`` (the default), each block of ``32 × batch_size`` shuffled
    rows is sorted by length before it is cut into batches, and the batches are then shuffled:
    rows of similar length share a batch, so little of each batch is padding (the
    ``group_by_length`` sampler of HF ``Trainer`` works the same way). A block whose rows do not
    fill whole batches leaves its short batch at its short end: the batch holding the longest
    row is a full one, so the first step — where the run's plan measures peak memory —
    sees the epoch's largest batch, not one long row alone (on 12 steps of Doyle the plan's
    peak memory was then 12% under the run's, now 2%: ``benchmarks/RESULTS.md``). The number of
    batches is ``ceil(len(lengths) / batch_size)`` either way, and the batch holding the longest
    row comes first (:func:`longest_first`).
    """
    import torch

    g = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    perm = torch.randperm(len(lengths), generator=g).tolist()
    bs = config.batch_size
    if not config.group_by_length:
        return longest_first([perm[i : i + bs] for i in range(0, len(perm), bs)], lengths)
    block = 32 * bs
    batches = []
    for m in range(0, len(perm), block):
        rows = sorted(perm[m : m + block], key=lambda i: lengths[i])
        short = len(rows) % bs  # rows left over after whole batches: the block's shortest
        batches += ([rows[:short]] if short else []) + [rows[i : i + bs] for i in range(short, len(rows), bs)]
    order = torch.randperm(len(batches), generator=g).tolist()
    return longest_first([batches[k] for k in order], lengths)


def longest_first(batches: list[list[int]], lengths: list[int]) -> list[list[int]]:
    """Move the batch with the epoch's longest row to the front: the memory peak comes at the
    first step, where the run's plan line measures it (HF ``LengthGroupedSampler`` does the same
    so that an out-of-memory error comes at once, not an hour in)."""
    if batches:
        k = max(range(len(batches)), key=lambda j: max((lengths[i] for i in batches[j]), default=0))
        batches.insert(0, batches.pop(k))
    return batches


def padding_share(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of token positions that are padding when each batch is padded to its longest row
    (rounded up by :func:`mimetic.models.nll.padded_length`, as :func:`mimetic.models.nll.collate` does)."""
    from mimetic.models.nll import padded_length

    padded = sum(len(b) * padded_length(max(lengths[i] for i in b)) for b in batches if b)
    return 1.0 - sum(lengths[i] for b in batches for i in b) / max(1, padded)


def ready_to_write(run_dir: Any, base_model: str, emit: OnEvent, stage: str = "train") -> float | None:
    """Make the finished run ready for llama.cpp now, so that the first ``write`` (or the desk's
    first draft, or ``evaluate``) opens at once: the base model to its cached GGUF, once, when it
    is not one already (:func:`mimetic.models.engines.base_gguf`), and then, for a base model
    whose GGUF is under :data:`~mimetic.models.engines.MERGE_BELOW_BYTES`, the voice merged into
    ``runs/<id>/voice-q8_0.gguf`` (:func:`~mimetic.models.engines.run_merged_gguf`: about 13 s,
    and it writes as fast as the base model) with the base model's own Q8_0 copy beside it (once
    per machine, :data:`~mimetic.models.engines.BASE_BESIDE_MERGED`), else the adapter as ``runs/<id>/adapter.gguf``
    (:func:`~mimetic.models.engines.run_adapter_gguf`: a few MB, seconds). Returns the seconds it
    took, or ``None`` when llama.cpp or its converters are not installed or cannot take this
    model (writing then converts on first use, or falls back to transformers, and says so).
    ``MIMETIC_GGUF_AFTER_TRAINING=0`` in the environment leaves it to the first use (the test
    suite sets it: most of its runs never write).
    """
    import os

    from mimetic.models.engines import BASE_BESIDE_MERGED, MERGE_BELOW_BYTES, base_gguf, llama_cpp_tools, load_llama, run_adapter_gguf, run_merged_gguf

    if os.environ.get("MIMETIC_GGUF_AFTER_TRAINING", "1") == "0":
        return None
    try:
        load_llama()
        llama_cpp_tools()
        base, seconds = base_gguf(base_model)
    except MimeticError:
        return None
    what = ""
    if Path(base).stat().st_size < MERGE_BELOW_BYTES:  # a large base model keeps the adapter applied at load
        try:
            seconds += run_merged_gguf(Path(run_dir), base_model)[1]
            seconds += base_gguf(base_model, BASE_BESIDE_MERGED)[1]  # once per machine: the base model beside it
            what = "voice merged"
        except MimeticError:
            pass
    if not what:
        try:
            seconds += run_adapter_gguf(Path(run_dir), base_model)[1]
            what = "adapter converted"
        except MimeticError:
            return None
    emit(Progress(stage, message=f"{what} for llama.cpp in {seconds:.0f} s: writing in the voice starts at once"))
    return seconds


# -------------------------------------------------------------------------------- publishing


def measured_change(workspace: Workspace, run_id: str) -> float | None:
    """A finished run's held-out NLL change against the base model (``best / base − 1``; −0.09:
    9% lower), from its ``summary.json``. A polish run's summary measures against its parent, so
    the base model's NLL is followed up its parents. ``None`` when it cannot be read."""
    base, best, seen = None, None, set()
    run_dir: Path = workspace.runs_dir / run_id
    while run_dir.name not in seen:
        seen.add(run_dir.name)
        try:
            summary = json.loads((run_dir / "summary.json").read_text())
            base = float(summary["base_nll"])
            best = float(summary["best_nll"]) if best is None else best
            polish_file = run_dir / "polish.json"
            if not polish_file.exists():
                break
            run_dir = workspace.runs_dir / json.loads(polish_file.read_text())["parent_run_id"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
    if base is None or best is None or not base > 0:
        return None
    return best / base - 1


def record_version(workspace: Workspace, run_id: str, name: str, publish: bool | None, emit: OnEvent,
                   stage: str = "train") -> bool:
    """Record a finished run as a version (:meth:`Workspace.add_version`) and decide whether it
    becomes the published voice; returns whether it did.

    ``publish`` true or false is the writer's choice. ``None`` (not asked): a named version is
    not published; an unnamed run is, unless the published voice measured better (a lower
    held-out NLL change against the base model, :func:`measured_change`): then the new run is
    kept as a version and a :class:`~mimetic.core.events.Warning` says so, with the command
    that publishes it.
    """
    if publish is None:
        publish = not name
        current = workspace.published_run()
        if publish and current and current != run_id:
            new, old = measured_change(workspace, run_id), measured_change(workspace, current)
            if new is not None and old is not None and new > old:
                publish = False
                emit(Warning(stage, f"Run {run_id} changed held-out NLL by {100 * new:+.1f}%, the published voice "
                                    f"{current} by {100 * old:+.1f}%: the new run is kept as a version, not published.",
                             f"Publish it anyway with: mimetic publish {run_id} --workspace {workspace.root}"))
    workspace.add_version(run_id, name, publish=publish)
    return workspace.published_run() == run_id
