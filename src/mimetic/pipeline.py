"""The main job as one function: ingest → prepare → train → compare (``mimetic voice``).

The CLI's ``voice`` command and the web app call :func:`make_voice`; it holds the whole
sequence and the settings it saves, so no front end carries a copy of the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from . import config as cfg
from .events import Finished, OnEvent, Started, ignore
from .workspace import Workspace


@dataclass
class VoiceResult:
    """What the main job made: the workspace and each stage's result
    (:class:`~mimetic.ingest.IngestResult`, :class:`~mimetic.prepare.PrepareResult`,
    :class:`~mimetic.train.TrainResult`, :class:`~mimetic.generate.Comparison`)."""

    workspace: Workspace
    ingest: Any
    prepare: Any
    train: Any
    compare: Any


def default_workspace(corpus: Path) -> Path:
    """Where a voice of ``corpus`` lives when the writer names no folder: ``voices/<folder name>``."""
    return Path("voices") / corpus.expanduser().resolve().name


def make_voice(
    corpus: Sequence[Path],
    workspace: Path | None = None,
    *,
    base_model: str = cfg.EMBEDDED_MODEL,
    time_budget_min: float | None = 15.0,
    epochs: float | None = None,
    format: str | None = None,
    on_event: OnEvent = ignore,
    should_stop: Callable[[Any], bool] | None = None,
    compare_prompts: int = 5,
) -> VoiceResult:
    """Train a voice from folders of writing, with the workspace's saved settings and these changes.

    The settings given here are saved in the workspace's ``mimetic.toml`` first, so every later
    command (``write``, ``evaluate``, a resume) sees the same ones.

    Args:
        corpus: folders (or files) of the writer's text; never modified.
        workspace: the voice's folder (default :func:`default_workspace` of the first folder).
        base_model: the embedded default, a folder, a ``.gguf`` file or a hub id.
        time_budget_min: minutes of training at most, evaluations included (``None``: no limit).
        epochs: passes over the training data (default: the workspace's, 1).
        format: ``completion`` or ``chat`` (default: the workspace's).
        on_event: receives every stage's :mod:`mimetic.events`; the ``Finished`` event of ingest
            and prepare carries the stage's result object under ``values["result"]``.
        should_stop: passed to training (Ctrl-C, a stop button).
        compare_prompts: openings of held-out passages written by the base model and the voice.

    Raises:
        MimeticError: from any stage (no readable writing, too little text, …).
        TrainingInterrupted: training was stopped; the message says how to resume.
    """
    from .generate import compare, held_out_prompts
    from .ingest import ingest
    from .prepare import prepare
    from .train import train

    ws = Workspace.open(workspace or default_workspace(Path(corpus[0])))
    vc = ws.load_config()
    vc.prepare = cfg.replace(vc.prepare, format=format)
    vc.train = cfg.replace(vc.train, base_model=base_model, time_budget_min=time_budget_min, epochs=epochs)
    ws.save_config(vc)
    on_event(Started("voice", f"making a voice in {ws.root}"))
    on_event(Started("ingest", "Reading your writing"))
    ingested = ingest(list(corpus), ws, vc.ingest, on_event=on_event)
    on_event(Finished("ingest", f"{ingested.words:,} words kept", {"result": ingested}))
    on_event(Started("prepare", "Preparing training examples"))
    prepared = prepare(ws, vc.prepare, base_model)
    on_event(Finished("prepare", f"{prepared.train_examples:,} training examples", {"result": prepared}))
    trained = train(ws, vc.train, on_event=on_event, should_stop=should_stop)
    on_event(Started("compare", "Writing side by side"))
    compared = compare(ws, held_out_prompts(ws, n=compare_prompts), vc.generate, run=trained.run_id)
    on_event(Finished("compare", str(compared.html)))
    on_event(Finished("voice", f"voice ready in {ws.root}", {"run_id": trained.run_id}))
    return VoiceResult(ws, ingested, prepared, trained, compared)
