"""The terminal front end of the event stream: :mod:`mimetic.core.events` drawn with rich.

The CLI passes a :class:`RichEvents` as ``on_event`` to every stage; the web app renders the
same events in the page. Nothing here computes anything.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Any

from rich.console import Console
from rich.markup import escape

from mimetic.core.events import Event, Finished, Progress, Started, Warning


class RichEvents:
    """Render events on ``console``: a progress bar per stage that reports counted work (steps,
    files, samples) with the figures in ``Progress.info``, a spinner line for messages (printed
    as lines when the output is not a terminal, and always for a resumed run), warnings in
    yellow with their hint, and the plan line. Use as a context manager so the live display is
    closed even when the stage fails.

    Args:
        console: where to draw (the CLI's).
        quiet: draw nothing (the other processes of a multi-process run).
    """

    def __init__(self, console: Console, quiet: bool = False):
        self.console = console
        self.quiet = quiet
        self._bar: Any = None
        self._task: Any = None
        self._status: Any = None

    def __enter__(self) -> "RichEvents":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self._status is not None:
            self._status.stop()
            self._status = None

    def _open_bar(self, stage: str, total: float | None, done: float = 0) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        self._close()
        self._bar = Bar(TextColumn(f"[bold]{stage}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console)
        self._bar.start()
        self._task = self._bar.add_task(stage, total=total, completed=done, info="")

    def __call__(self, event: Event) -> None:
        if self.quiet:
            return
        if isinstance(event, Started):
            if event.message and (_is_news(event) or not self.console.is_terminal):
                if _is_news(event) and self._bar is None:
                    self._close()
                self.console.print(escape(event.message), highlight=False)  # a line, kept (also in a log file)
            if event.unit == "steps" and event.total:
                self._open_bar(event.stage, event.total)
            elif event.message and not _is_news(event):
                if self._bar is None:
                    self._close()
                    self._status = self.console.status(escape(event.message) + "…")
                    self._status.start()
        elif isinstance(event, Progress):
            if event.unit == "steps":
                if self._bar is None:
                    self._open_bar(event.stage, event.total, event.done)
                self._bar.update(self._task, completed=event.done, total=event.total, info=_info(event.info))
            elif self._status is not None:
                what = f"{event.message} {event.done:,.0f}/{event.total:,.0f}" if event.total else event.message
                self._status.update(escape(what) + "…")
            elif event.message:
                self._status = self.console.status(escape(event.message) + "…")
                self._status.start()
        elif isinstance(event, Warning):
            self.console.print(f"[yellow]{escape(event.message)}[/] {escape(event.hint)}")
        elif isinstance(event, Finished):
            if event.stage in ("plan", "base model"):
                self.console.print(escape(event.message))
            else:
                self._close()


def _is_news(event: Started) -> bool:
    """A start that tells the writer something to remember, not only what is under way: a run
    resumed from a checkpoint (which run, at which step) is printed as a line, never only as a
    passing spinner."""
    return event.message.startswith(("resuming ", "Resuming "))


def _info(info: dict[str, Any]) -> str:
    parts = []
    if info.get("train_loss") is not None:
        parts.append(f"loss {info['train_loss']:.3f}")
    if info.get("held_out_nll") is not None:
        parts.append(f"held-out NLL {info['held_out_nll']:.3f}")
    if info.get("tokens_per_s"):
        parts.append(f"{info['tokens_per_s']:,.0f} tok/s")
    return " · ".join(parts)


class CtrlC:
    """A ``should_stop`` for the terminal: the first Ctrl-C asks the stage to checkpoint and stop
    after the current step; a second one aborts at once. Installs its SIGINT handler only in
    the main thread, and puts the old one back on exit."""

    def __init__(self) -> None:
        self.asked = False
        self._old: Any = None

    def __enter__(self) -> "CtrlC":
        def handler(signum: int, frame: Any) -> None:
            if self.asked:
                raise KeyboardInterrupt
            self.asked = True

        with contextlib.suppress(ValueError):  # not in the main thread: no handler
            self._old = signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)

    def __call__(self, *args: Any) -> bool:
        return self.asked
