"""One event stream for every stage: what a front end (the CLI, the web app) shows, and what is logged.

A stage takes an ``on_event`` callback (``Callable[[Event], None]``) and calls it with typed
events as it works: :class:`Started`, :class:`Progress` (done / total / unit, ETA),
:class:`Metric` (a step's numbers), :class:`Warning`, :class:`Artifact` (a file written) and
:class:`Finished`. The library never prints: the CLI renders the events with rich
(:mod:`mimetic.frontends.render`), the app will render the same events, and ``metrics.jsonl`` is one of
their sinks (:class:`MetricsFile`).

Events are frozen dataclasses with a ``stage`` (``ingest``, ``prepare``, ``train``,
``evaluate``, ``export``, ``write``, ``voice``) and :meth:`Event.to_dict` for JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from mimetic.core.atomic import atomic_write_text


@dataclass(frozen=True)
class Event:
    """Base class of all events; ``stage`` names the stage that sent it."""

    stage: str

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON-ready dict, with its kind (``started``, ``progress``, …) under ``event``."""
        return {"event": type(self).__name__.lower(), **{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}}


@dataclass(frozen=True)
class Started(Event):
    """A stage (or a long step of one) began. ``total`` is the amount of work in ``unit``s, if known."""

    message: str = ""
    total: float | None = None
    unit: str = ""


@dataclass(frozen=True)
class Progress(Event):
    """``done`` of ``total`` ``unit``s are finished; ``eta_s`` is the predicted seconds left
    (``None`` when unknown); ``info`` holds a few current figures (loss, tokens/s …)."""

    done: float = 0
    total: float | None = None
    unit: str = ""
    eta_s: float | None = None
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Metric(Event):
    """Measured values at ``step`` (for training: train loss, held-out NLL, tokens/s, the plan …)."""

    step: int = 0
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Warning(Event):  # noqa: A001 - the event kind's natural name; never raised
    """Something the writer should know; ``hint`` says what to do about it."""

    message: str = ""
    hint: str = ""


@dataclass(frozen=True)
class Artifact(Event):
    """A file or folder the stage wrote (``kind``: adapter, checkpoint, plot, report, gguf …)."""

    path: Path = Path()
    kind: str = ""


@dataclass(frozen=True)
class Finished(Event):
    """The stage ended; ``values`` holds its headline figures."""

    message: str = ""
    values: dict[str, Any] = field(default_factory=dict)


OnEvent = Callable[[Event], None]


def ignore(event: Event) -> None:
    """An ``on_event`` that drops everything (the default of every stage)."""


def fan_out(*sinks: OnEvent | None) -> OnEvent:
    """One ``on_event`` that calls each of ``sinks`` in turn (``None`` entries are skipped)."""
    live = [s for s in sinks if s is not None]

    def emit(event: Event) -> None:
        for s in live:
            s(event)

    return emit


class MetricsFile:
    """The ``metrics.jsonl`` sink: every :class:`Metric` event becomes one JSON line
    ``{"step": …, **values}`` appended to ``path`` (other events are ignored).

    Args:
        path: the JSONL file; created when missing.
        enabled: ``False`` in every training process but the main one.
    """

    def __init__(self, path: Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def __call__(self, event: Event) -> None:
        if self.enabled and isinstance(event, Metric):
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": event.step, **event.values}) + "\n")

    def read(self) -> list[dict[str, Any]]:
        """All lines written so far, as dicts."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop the lines of steps after ``step`` (the tail an interrupted run wrote after its
        last checkpoint), atomically."""
        if self.enabled:
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.read() if r["step"] <= step))


def collect(events: Iterable[Event], kind: type) -> list[Any]:
    """The events of one ``kind`` (a class above) from a recorded list: for tests and front ends."""
    return [e for e in events if isinstance(e, kind)]
