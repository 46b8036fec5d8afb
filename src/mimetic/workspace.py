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

import shutil
import time
from pathlib import Path
from typing import Any

from . import logdb
from .atomic import atomic_dir, atomic_write_bytes, atomic_write_json, atomic_write_text  # noqa: F401 - the stages import them from here
from .config import VoiceConfig
from .errors import MimeticError
from .records import DataMeta, Manifest


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

        Raises:
            MimeticError: ``mimetic.db`` is damaged (not an SQLite database).
        """
        return logdb.insert_generation(
            self.db_path, command=command, prompt=prompt, output=output, params=params, base_model=base_model,
            adapter=adapter, seed=seed, new_tokens=new_tokens, duration_s=duration_s,
        )

    def generations(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest ``limit`` generations, newest first, as dicts (see :mod:`mimetic.logdb`)."""
        return logdb.latest_generations(self.db_path, limit)


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
