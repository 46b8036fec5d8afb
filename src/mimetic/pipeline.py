"""The main job as one function: ingest → prepare → train → compare (``mimetic voice``).

The CLI's ``voice`` command and the web app call :func:`make_voice`; it holds the whole
sequence and the settings it saves, so no front end carries a copy of the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from mimetic.core import config as cfg
from mimetic.errors import MimeticError
from mimetic.core.events import Finished, OnEvent, Started, ignore
from mimetic.core.workspace import Workspace


@dataclass
class VoiceResult:
    """What the main job made: the workspace and each stage's result
    (:class:`~mimetic.corpus.ingest.IngestResult`, :class:`~mimetic.corpus.prepare.PrepareResult`,
    :class:`~mimetic.training.sft.TrainResult`, :class:`~mimetic.voice.generate.Comparison`)."""

    workspace: Workspace
    ingest: Any
    prepare: Any
    train: Any
    compare: Any


def default_workspace(corpus: Path) -> Path:
    """Where a voice of ``corpus`` lives when the writer names no folder: ``voices/<folder name>``."""
    return Path("voices") / corpus.expanduser().resolve().name


def choose_settings(
    ws: Workspace,
    *,
    preset: str | None = None,
    base_model: str | None = None,
    prepare_changes: dict[str, Any] | None = None,
    on_event: OnEvent = ignore,
    always_recommend: bool = False,
    save: bool = True,
    **train_changes: Any,
) -> tuple[cfg.VoiceConfig, Any]:
    """The voice's settings with a preset and a base model applied, saved in its ``mimetic.toml``.

    ``preset`` writes the preset's settings first (:func:`mimetic.core.presets.apply_preset`); then
    ``prepare_changes`` and ``train_changes`` (``None`` values ignored) win over it. ``base_model="auto"`` asks
    :func:`mimetic.models.hardware.recommend` for the largest catalog model that fits this machine's
    memory and the time budget and is already on this machine (the embedded model at worst),
    with the batch and 4-bit setting it was estimated for; any other name is used as given.
    With ``always_recommend`` the recommendation is made (and sent as a ``Finished("base model")``
    event) even when the model is named, so the writer sees it. ``save``: write the result into
    the voice's ``mimetic.toml`` (a plan-only run does not).

    Returns:
        ``(settings, recommendation)``: the recommendation is ``None`` when none was asked for.

    Raises:
        MimeticError: an unknown preset or setting, or a named base model that cannot be loaded
            (:func:`mimetic.models.loading.check_model`: offline, it fails at once); nothing is
            saved then.
    """
    from mimetic.models.hardware import apply_choice, corpus_tokens, recommend
    from mimetic.core.presets import apply_preset

    vc = ws.load_config()
    if preset:
        vc = apply_preset(vc, preset)
        _warn_if_preset_device_missing(preset, on_event)
    vc.prepare = cfg.replace(vc.prepare, **(prepare_changes or {}))
    vc.train = cfg.replace(vc.train, base_model=None if base_model == "auto" else base_model, **train_changes)
    rec = None
    if base_model == "auto" or always_recommend:
        rec = recommend(vc.train, vc.prepare.max_tokens, corpus_tokens(ws, vc.prepare.held_out_fraction))
        if base_model == "auto":
            vc.train = apply_choice(vc.train, rec.chosen)
        on_event(Finished("base model", "\n".join(rec.lines()), {"recommendation": rec}))
    if base_model and base_model != "auto":  # a name that does not load is never saved (offline: refused at once)
        from mimetic.models.loading import load_tokenizer

        load_tokenizer(base_model)
    if save:
        ws.save_config(vc)
    return vc, rec


def _warn_if_preset_device_missing(name: str, on_event: OnEvent) -> None:
    """A preset made for a GPU this machine lacks cannot train here: say so when it is chosen,
    not minutes later when training starts."""
    from mimetic.core.events import Warning
    from mimetic.models.loading import pick_device
    from mimetic.core.presets import get_preset

    p = get_preset(name)
    try:
        pick_device(p.device)
    except MimeticError:
        on_event(Warning("preset", f"Preset {name} is made for: {p.hardware}. This machine has no "
                                   f"{'NVIDIA GPU' if p.device == 'cuda' else 'Apple GPU'}, so training with it will not start here.",
                         "Prepare here and train on that machine, or choose for this one: --base-model auto (mimetic presets lists the others)."))


def make_voice(
    corpus: Sequence[Path],
    workspace: Path | None = None,
    *,
    base_model: str | None = None,
    preset: str | None = None,
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
        base_model: the embedded default, a folder, a ``.gguf`` file, a hub id, or ``auto``
            (the largest model this machine trains in the time budget: :func:`choose_settings`);
            ``None``: the workspace's (the embedded model for a new voice).
        preset: a preset of :mod:`mimetic.core.presets` applied first (its settings saved in the voice).
        time_budget_min: minutes of training at most, evaluations included (``None``: no limit).
        epochs: passes over the training data (default: the workspace's, 2).
        format: ``completion`` or ``chat`` (default: the workspace's).
        on_event: receives every stage's :mod:`mimetic.core.events`; the ``Finished`` event of ingest
            and prepare carries the stage's result object under ``values["result"]``.
        should_stop: passed to training (Ctrl-C, a stop button).
        compare_prompts: openings of held-out passages written by the base model and the voice.

    Raises:
        MimeticError: from any stage (no readable writing, too little text, …).
        TrainingInterrupted: training was stopped; the message says how to resume.
    """
    from mimetic.voice.generate import compare, held_out_prompts
    from mimetic.training.sft import train

    if preset:
        from mimetic.core.presets import get_preset

        get_preset(preset)  # an unknown name is refused before the corpus is read
    ws = Workspace.open(workspace or default_workspace(Path(corpus[0])))
    on_event(Started("voice", f"making a voice in {ws.root}"))
    made = create_voice(corpus, ws, base_model=base_model, preset=preset, format=format, always_recommend=True,
                        on_event=on_event, time_budget_min=time_budget_min, epochs=epochs)
    vc = made.settings
    trained = train(ws, vc.train, on_event=on_event, should_stop=should_stop)
    on_event(Started("compare", "Writing side by side"))
    compared = compare(ws, held_out_prompts(ws, n=compare_prompts), vc.generate, run=trained.run_id)
    on_event(Finished("compare", str(compared.html)))
    on_event(Finished("voice", f"voice ready in {ws.root}", {"run_id": trained.run_id}))
    return VoiceResult(ws, made.ingest, made.prepare, trained, compared)


@dataclass
class CreatedVoice:
    """What :func:`create_voice` made: the workspace, the ingest result, the settings saved and
    the prepare result."""

    workspace: Workspace
    ingest: Any
    settings: cfg.VoiceConfig
    prepare: Any


def create_voice(
    corpus: Sequence[Path],
    workspace: Workspace,
    *,
    base_model: str | None = None,
    preset: str | None = None,
    format: str | None = None,
    always_recommend: bool = False,
    on_event: OnEvent = ignore,
    replace: bool = False,
    allowed_roots: Sequence[Path | str] | None = None,
    **train_changes: Any,
) -> CreatedVoice:
    """The first half of the main job: read the writing, choose the settings, prepare the
    training examples (ingest → settings → prepare), as :func:`make_voice` and the desk's
    "create" job both do it.

    Args:
        corpus: folders (or files) of the writer's text; never modified.
        workspace: the voice.
        base_model, preset, format, always_recommend, train_changes: as for
            :func:`choose_settings` (chosen after ingest: the recommendation knows the
            corpus's size).
        on_event: every stage's events; the ``Finished`` events of ingest and prepare carry
            the stage's result object under ``values["result"]``.
        replace, allowed_roots: as for :func:`mimetic.corpus.ingest.ingest`: ``corpus`` is added
            to the folders the voice was read from unless ``replace``; nothing outside
            ``allowed_roots`` (the desk's ``--allow`` roots and the voice's ``sources/``) is read.

    Raises:
        MimeticError: from any stage (no readable writing, too little text, …).
    """
    from mimetic.corpus.ingest import ingest
    from mimetic.corpus.prepare import prepare

    ws = workspace
    on_event(Started("ingest", "Reading your writing"))
    ingested = ingest(list(corpus), ws, ws.load_config().ingest, on_event=on_event, replace=replace, allowed_roots=allowed_roots)
    on_event(Finished("ingest", f"{ingested.words:,} words kept", {"result": ingested}))
    vc, _ = choose_settings(ws, preset=preset, base_model=base_model, prepare_changes={"format": format},
                            on_event=on_event, always_recommend=always_recommend, **train_changes)
    on_event(Started("prepare", "Preparing training examples"))
    prepared = prepare(ws, vc.prepare, vc.train.base_model, on_event=on_event)
    on_event(Finished("prepare", f"{prepared.train_examples:,} training examples", {"result": prepared}))
    return CreatedVoice(ws, ingested, vc, prepared)
