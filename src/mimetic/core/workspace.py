"""A voice's workspace: one directory that holds everything mimetic makes for one voice.

Layout::

    mimetic.toml          resolved config of every stage
    corpus/               cleaned documents (docs/*.txt) and manifest.json (provenance)
    data/                 training examples as Arrow (train/, held_out/) and meta.json
    runs/<run-id>/        adapter/, checkpoint/, metrics.jsonl, loss.png, config.toml, summary.json
    compare/              side-by-side comparisons (Markdown and HTML)
    mimetic.db            SQLite log of every generation, and the writer's marks
    versions.json         the versions' names and which one is published

Every file is written atomically (temporary file, then ``os.replace``), and whole directories
are swapped in with a rename, so an interrupted command never leaves a half-written file
under its final name. The writer's original files are only ever read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from mimetic.core import logdb
from mimetic.core.atomic import recover_dir
from mimetic.core.atomic import atomic_dir, atomic_write_bytes, atomic_write_json, atomic_write_text  # noqa: F401 - the stages import them from here
from mimetic.core.config import VoiceConfig
from mimetic.errors import MimeticError
from mimetic.core.records import DataMeta, Manifest

F = TypeVar("F", bound=Callable[..., Any])


_HELD: dict[Path, int] = {}  # workspaces whose lock this process holds, and how many times
# A writer waits this long for the lock: a reader opening the voice holds it for milliseconds
# (:meth:`Workspace._recover_if_idle`), a writer for minutes. Without the wait, two processes
# of one training run (one opening the voice, one taking the lock) could turn the writer away.
WRITER_WAIT_S = 2.0
VERSIONS_FILE = "versions.json"


def writes_voice(doing: str) -> Callable[[F], F]:
    """Decorator of a stage that changes a voice: it runs holding the workspace's lock
    (:meth:`Workspace.lock`), found as the function's ``workspace`` argument. Under a launcher
    of several processes only the main one (``RANK`` 0) takes it."""
    import functools
    import inspect

    def wrap(fn: F) -> F:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args: Any, **kwargs: Any) -> Any:
            workspace = sig.bind(*args, **kwargs).arguments["workspace"]
            if os.environ.get("RANK", "0") not in ("0", ""):
                return fn(*args, **kwargs)
            with workspace.lock(doing):
                return fn(*args, **kwargs)

        return locked  # type: ignore[return-value]

    return wrap


class Workspace:
    """A voice directory. Create with :meth:`open`; paths are attributes.

    Raises:
        MimeticError: the path exists and is a file, or (with ``create=False``) has no voice.
    """

    def __init__(self, root: Path):
        self.root = Path(root).expanduser().resolve()
        self.config_path = self.root / "mimetic.toml"
        self.corpus_dir = self.root / "corpus"
        self.data_dir = self.root / "data"
        self.runs_dir = self.root / "runs"
        self.compare_dir = self.root / "compare"
        self.db_path = self.root / "mimetic.db"
        self.notices: list[str] = []  # things the writer should hear about (a damaged log set aside)

    @classmethod
    def open(cls, root: Path | str, create: bool = True) -> "Workspace":
        ws = cls(Path(root))
        if ws.root.exists() and not ws.root.is_dir():
            raise MimeticError(f"{ws.root} is a file, not a voice folder.", "Choose another --workspace.")
        if not create and not ws.config_path.exists():
            raise MimeticError(
                f"No voice found in {ws.root}.",
                "Start one with: mimetic ingest PATH-TO-YOUR-WRITING --workspace " + str(root),
            )
        ws.root.mkdir(parents=True, exist_ok=True)
        ws._recover_if_idle()
        return ws

    def _recover_if_idle(self) -> None:
        """:meth:`recover` when no process is changing the voice (its lock is free); a writer
        in progress has its temporary folders, which recovery would delete, so it is left
        alone (the next writer repairs the voice when it takes the lock)."""
        from filelock import Timeout

        if _HELD.get(self.root):
            return
        probe = self._file_lock()
        try:
            probe.acquire()
        except Timeout:
            return
        try:
            self.recover()
        finally:
            probe.release()

    def recover(self) -> None:
        """Repair folders whose swap a crash interrupted (:func:`mimetic.core.atomic.recover_dir`):
        the corpus, the data, and every run's checkpoint and adapter."""
        folders = [self.corpus_dir, self.data_dir]
        if self.runs_dir.is_dir():
            for run in self.runs_dir.iterdir():
                folders += [run / "checkpoint", run / "adapter"]
        for folder in folders:
            if folder.parent.is_dir():
                recover_dir(folder)

    # -- config -----------------------------------------------------------------------------
    def load_config(self) -> VoiceConfig:
        return VoiceConfig.load(self.config_path)

    def save_config(self, config: VoiceConfig) -> None:
        atomic_write_text(self.config_path, config.dumps())

    # -- corpus and data --------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.corpus_dir / "manifest.json"

    def read_manifest(self) -> Manifest:
        """The corpus's ``corpus/manifest.json``.

        Raises:
            MimeticError: no corpus yet, or a damaged or newer manifest.
        """
        if not self.manifest_path.exists():
            raise MimeticError(
                f"The voice in {self.root} has no corpus yet.",
                f"Run: mimetic ingest PATH-TO-YOUR-WRITING --workspace {self.root}",
            )
        return Manifest.load(self.manifest_path)

    def data_meta(self) -> DataMeta:
        """The training examples' ``data/meta.json``.

        Raises:
            MimeticError: no training examples yet, or a damaged or newer file.
        """
        meta = self.data_dir / "meta.json"
        if not meta.exists():
            raise MimeticError(
                f"The voice in {self.root} has no training examples yet.",
                f"Run: mimetic prepare --workspace {self.root}",
            )
        return DataMeta.load(meta)

    # -- one writer at a time ------------------------------------------------------------------
    @contextmanager
    def lock(self, doing: str) -> Iterator[None]:
        """Hold the voice's write lock while ``doing`` (``trained``, ``ingested``, ``prepared``…).

        One process at a time may change a voice: an OS file lock on ``.lock`` (``filelock``;
        the OS releases it when the process ends, even after kill -9), with the holder's process
        id, task and start time in ``.lock.json`` for the message a second writer gets (after
        waiting :data:`WRITER_WAIT_S` for it, so a reader's brief probe is not taken for one). Readers
        (write, evaluate, export, the app) take no lock: they only read finished runs
        (:meth:`run_dir`). Re-entrant within a process (the main job holds it across stages).

        Raises:
            MimeticError: another process holds the lock; says which, since when, and what to do.
        """
        from filelock import Timeout

        if _HELD.get(self.root):
            _HELD[self.root] += 1
            try:
                yield
            finally:
                _HELD[self.root] -= 1
            return
        self.root.mkdir(parents=True, exist_ok=True)
        file_lock = self._file_lock(WRITER_WAIT_S)
        try:
            file_lock.acquire()
        except Timeout:
            raise self._busy() from None
        try:
            atomic_write_json(self.root / ".lock.json", {"pid": os.getpid(), "doing": doing,
                                                         "since": time.strftime("%Y-%m-%dT%H:%M:%S")})
            _HELD[self.root] = 1
            self.recover()  # a writer starts from a whole voice
            yield
        finally:
            _HELD.pop(self.root, None)
            (self.root / ".lock.json").unlink(missing_ok=True)
            file_lock.release()

    def _file_lock(self, wait_s: float = 0) -> Any:
        """The OS lock on ``.lock`` (``filelock``), waited for at most ``wait_s`` seconds."""
        from filelock import FileLock

        return FileLock(str(self.root / ".lock"), timeout=wait_s)

    def _busy(self) -> MimeticError:
        try:
            holder = json.loads((self.root / ".lock.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            holder = {}
        who = f"process {holder['pid']}" if holder.get("pid") else "another process"
        since = f" since {holder['since'][11:16]}" if len(holder.get("since", "")) >= 16 else ""
        doing = holder.get("doing", "changed")
        fix = "Wait for it to finish"
        if doing == "trained":
            fix += f", or stop it (it keeps a checkpoint) with: mimetic stop --workspace {self.root}"
        return MimeticError(f"This voice is being {doing} by {who}{since}.", fix + ".")

    # -- runs -------------------------------------------------------------------------------
    def new_run_id(self) -> str:
        """A new run's id (its start time to the second, then ``-2``, ``-3``… ), its folder
        created at once so that no other process can take the same id."""
        base = time.strftime("%Y%m%d-%H%M%S")
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        run_id, n = base, 1
        while True:
            try:
                (self.runs_dir / run_id).mkdir()
                return run_id
            except FileExistsError:
                n += 1
                run_id = f"{base}-{n}"

    def finished_runs(self) -> list[str]:
        """Ids of the runs that ended (their ``summary.json`` written), oldest first."""
        return sorted(p.parent.name for p in self.runs_dir.glob("*/summary.json") if not p.parent.name.startswith("."))

    def run_dir(self, run_id: str | None = None, finished: bool = True) -> Path:
        """The directory of ``run_id`` (a run id or a version's name), or of the published
        version when ``None``.

        With ``finished`` (what write, evaluate, export and polish use) only a run that ended
        (its ``summary.json`` written: completed, stopped early or by its time budget) is taken:
        a run in progress, interrupted or failed is never the voice. ``None`` means the
        published version (:meth:`published_run`). ``finished=False`` (resume, stop) takes any
        run, ``None`` then meaning the latest started.

        Raises:
            MimeticError: no such run or version, no (finished) run yet, or ``run_id`` has not
                finished.
        """
        runs = sorted(p.name for p in self.runs_dir.glob("*") if p.is_dir() and not p.name.startswith("."))
        done = self.finished_runs()
        if run_id is None:
            pool = done if finished else runs
            if not pool:
                unfinished = f" ({len(runs)} unfinished: resume with mimetic train --resume)" if runs else ""
                raise MimeticError(f"The voice in {self.root} has no {'finished ' if finished else ''}training run yet"
                                   f"{unfinished if finished else ''}.",
                                   f"Run: mimetic train --workspace {self.root}")
            run_id = (self.published_run() or pool[-1]) if finished else pool[-1]
        else:
            run_id = self.version_names().get(run_id, run_id)
        d = self.runs_dir / run_id
        if not d.is_dir():
            names = ", ".join(self.version_names())
            raise MimeticError(f"No run or version named {run_id!r} in {self.root}.",
                               f"Runs: {', '.join(runs) or 'none'}" + (f"; versions: {names}." if names else "."))
        if finished and run_id not in done:
            raise MimeticError(f"Run {run_id} has not finished (it is training, was interrupted, or failed).",
                               f"Resume it with: mimetic train --resume {run_id} --workspace {self.root}; "
                               f"or use a finished run: {', '.join(done) or 'none yet'}.")
        return d

    # -- versions -----------------------------------------------------------------------------
    @property
    def versions_path(self) -> Path:
        return self.root / VERSIONS_FILE

    def _versions(self) -> dict[str, Any]:
        """``versions.json`` as ``{"published": run id or None, "names": {name: run id}}``;
        ``None`` published when the file is absent (a voice from before versions)."""
        try:
            data = json.loads(self.versions_path.read_text(encoding="utf-8")) if self.versions_path.exists() else {}
        except (OSError, ValueError):
            raise MimeticError(f"{self.versions_path} is damaged.",
                               "Delete it and publish a version again: mimetic publish RUN-OR-NAME") from None
        return {"published": data.get("published"), "names": dict(data.get("names") or {})}

    def version_names(self) -> dict[str, str]:
        """Named versions: ``{name: run id}``, in the order they were named."""
        return self._versions()["names"]

    def names_of(self, run_id: str) -> list[str]:
        """The version names given to ``run_id``."""
        return [n for n, r in self.version_names().items() if r == run_id]

    def published_run(self) -> str | None:
        """The run id of the published version: the one ``write``, ``export``, ``serve`` and
        the app use when no run is named. Before any version was published explicitly (a voice
        from an older release), the latest finished run; ``None`` when there is none."""
        done = self.finished_runs()
        if not self.versions_path.exists():
            return done[-1] if done else None
        published = self._versions()["published"]
        return published if published in done else None

    def add_version(self, run_id: str, name: str = "", publish: bool = False) -> None:
        """Record a finished run as a version, named ``name`` if given, and publish it when
        ``publish`` or when the voice has no published version yet. Called by training (under
        the voice's lock) once the run's ``summary.json`` is written: a run that did not finish
        never becomes a version.

        Raises:
            MimeticError: ``name`` is taken by another run, or is not a usable name.
        """
        self.check_new_version(name, run_id)
        data = self._versions()
        if not self.versions_path.exists():  # first version of an older voice: keep what it was using
            earlier = [r for r in self.finished_runs() if r != run_id]
            data["published"] = earlier[-1] if earlier else None
        if name:
            data["names"][name] = run_id
        if publish or not data["published"] or not (self.runs_dir / data["published"]).is_dir():
            data["published"] = run_id
        atomic_write_json(self.versions_path, data)

    def check_new_version(self, name: str, run_id: str | None = None) -> None:
        """Check that ``name`` (``""``: no name) can name the version of ``run_id`` (``None``: a
        run not started yet): a usable name (:func:`check_version_name`) no other run has.

        Raises:
            MimeticError: an unusable name, or one taken by another run.
        """
        if not name:
            return
        check_version_name(name)
        taken = self.version_names().get(name)
        if taken and taken != run_id:
            raise MimeticError(f"The version name {name!r} is already run {taken}'s.",
                               "Choose another --version name (mimetic versions lists them).")

    def publish(self, run_or_name: str) -> str:
        """Make ``run_or_name`` (a finished run id or a version name) the published version;
        returns its run id.

        Raises:
            MimeticError: no such finished run or version.
        """
        run_id = self.run_dir(run_or_name).name
        data = self._versions()
        data["published"] = run_id
        atomic_write_json(self.versions_path, data)
        return run_id

    # -- generation log ---------------------------------------------------------------------
    def log_generation(
        self,
        *,
        command: str,
        prompt: str,
        output: str,
        params: dict[str, Any],
        base_model: str,
        adapter: str | None,
        seed: int | None,
        new_tokens: int,
        duration_s: float,
    ) -> int:
        """Append one generation to ``mimetic.db``; returns its row id.

        A generation is never lost to a damaged log: when ``mimetic.db`` cannot be read as a
        database, it is moved aside (``mimetic.db.damaged-<time>``, kept for recovery), a new
        log is started with this generation in it, and :attr:`notices` says so.
        """
        row = dict(command=command, prompt=prompt, output=output, params=params, base_model=base_model,
                   adapter=adapter, seed=seed, new_tokens=new_tokens, duration_s=duration_s)
        try:
            return logdb.insert_generation(self.db_path, **row)
        except MimeticError:
            aside = self.db_path.with_name(f"{self.db_path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(self.db_path, aside)
            self.notices.append(f"{self.db_path.name} could not be read as a database: it was kept as {aside.name} "
                                f"and a new log started with this generation.")
            return logdb.insert_generation(self.db_path, **row)

    def generations(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest ``limit`` generations, newest first, as dicts (see :mod:`mimetic.core.logdb`)."""
        return logdb.latest_generations(self.db_path, limit)


def check_version_name(name: str) -> None:
    """Raise :class:`MimeticError` unless ``name`` is a usable version name: letters, digits,
    ``-``, ``_``, ``.`` and ``+``, at most 64 characters, not starting with ``.``, and not
    looking like a run id (``20240101-120000``), which it would shadow."""
    if not re.fullmatch(r"[A-Za-z0-9_+][A-Za-z0-9_.+-]{0,63}", name) or re.fullmatch(r"\d{8}-\d{6}(-\d+)?", name):
        raise MimeticError(f"{name!r} cannot name a version.",
                           "Use letters, digits, - _ . + (up to 64), not a run id: --version 2014-2016")


def check_free_disk(path: Path, needed_bytes: int, what: str) -> None:
    """Raise a clear :class:`MimeticError` when ``path``'s disk has less than ``needed_bytes`` free."""
    path = Path(path)
    probe = path if path.exists() else next(p for p in path.parents if p.exists())
    free = shutil.disk_usage(probe).free
    if free < needed_bytes:
        raise MimeticError(
            f"Not enough disk space for {what}: {free / 2**20:.0f} MiB free, about {needed_bytes / 2**20:.0f} MiB needed.",
            f"Free some space on the disk that holds {probe}, then run the same command again.",
        )
