"""A voice's workspace: one directory that holds everything mimetic makes for one voice.

Layout::

    mimetic.toml          resolved config of every stage
    corpus/               cleaned documents (docs/*.txt) and manifest.json (provenance)
    data/                 training examples as Arrow (train/, held_out/) and meta.json
    runs/<run-id>/        adapter/, checkpoint/, metrics.jsonl, loss.png, config.toml, summary.json
    compare/              side-by-side comparisons (Markdown and HTML)
    mimetic.db            SQLite log of every generation

Every file is written atomically (temporary file, then ``os.replace``), and whole directories
are swapped in with a rename, so an interrupted command never leaves a half-written file
under its final name. The writer's original files are only ever read.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from .config import VoiceConfig
from .errors import MimeticError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``final`` in one rename.

    On an exception the temporary directory is removed and ``final`` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    command TEXT NOT NULL,
    prompt TEXT NOT NULL,
    output TEXT NOT NULL,
    params TEXT NOT NULL,
    base_model TEXT NOT NULL,
    adapter TEXT,
    seed INTEGER,
    new_tokens INTEGER,
    duration_s REAL
);
"""


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
        return ws

    # -- config -----------------------------------------------------------------------------
    def load_config(self) -> VoiceConfig:
        return VoiceConfig.load(self.config_path)

    def save_config(self, config: VoiceConfig) -> None:
        atomic_write_text(self.config_path, config.dumps())

    # -- corpus and data --------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.corpus_dir / "manifest.json"

    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            raise MimeticError(
                f"The voice in {self.root} has no corpus yet.",
                f"Run: mimetic ingest PATH-TO-YOUR-WRITING --workspace {self.root}",
            )
        return json.loads(self.manifest_path.read_text(encoding="utf-8"))

    def read_data_meta(self) -> dict[str, Any]:
        meta = self.data_dir / "meta.json"
        if not meta.exists():
            raise MimeticError(
                f"The voice in {self.root} has no training examples yet.",
                f"Run: mimetic prepare --workspace {self.root}",
            )
        return json.loads(meta.read_text(encoding="utf-8"))

    # -- runs -------------------------------------------------------------------------------
    def new_run_id(self) -> str:
        base = time.strftime("%Y%m%d-%H%M%S")
        run_id, n = base, 1
        while (self.runs_dir / run_id).exists():
            n += 1
            run_id = f"{base}-{n}"
        return run_id

    def run_dir(self, run_id: str | None = None) -> Path:
        """The directory of ``run_id``, or of the latest run when ``None``.

        Raises:
            MimeticError: no such run, or no run yet.
        """
        if run_id is None:
            runs = sorted(p.name for p in self.runs_dir.glob("*") if p.is_dir() and not p.name.startswith("."))
            if not runs:
                raise MimeticError(f"The voice in {self.root} has no training run yet.", f"Run: mimetic train --workspace {self.root}")
            run_id = runs[-1]
        d = self.runs_dir / run_id
        if not d.is_dir():
            known = ", ".join(sorted(p.name for p in self.runs_dir.glob("*") if p.is_dir())) or "none"
            raise MimeticError(f"No run named {run_id!r} in {self.root}.", f"Runs: {known}.")
        return d

    # -- generation log ---------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.db_path)
        con.executescript(_SCHEMA)
        return con

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
        """Append one generation to ``mimetic.db``; returns its row id."""
        with contextlib.closing(self._db()) as con, con:
            cur = con.execute(
                "INSERT INTO generations (created_at, command, prompt, output, params, base_model, adapter,"
                " seed, new_tokens, duration_s) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    command,
                    prompt,
                    output,
                    json.dumps(params, sort_keys=True),
                    base_model,
                    adapter,
                    seed,
                    new_tokens,
                    duration_s,
                ),
            )
            return int(cur.lastrowid)

    def generations(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest ``limit`` generations, newest first, as dicts."""
        if not self.db_path.exists():
            return []
        with contextlib.closing(self._db()) as con:
            con.row_factory = sqlite3.Row
            rows = con.execute("SELECT * FROM generations ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [dict(r) for r in rows]


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
