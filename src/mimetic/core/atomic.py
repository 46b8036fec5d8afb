"""Atomic writes: readers see a file's old content or its new content, never half of it.

Every file mimetic writes goes through these helpers (temporary file in the same folder, fsync,
then ``os.replace``); whole directories are swapped in crash-safely (:func:`atomic_dir`,
repaired after a crash by :func:`recover_dir`).
This module imports nothing of mimetic's, so any module (records, workspace) can use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


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


def _fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (POSIX: fsync the directory; a no-op elsewhere)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (what a library wrote there without fsync)."""
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(folder))


def _old(final: Path) -> Path:
    return final.with_name(f".{final.name}.old")


def recover_dir(final: Path) -> None:
    """Finish or undo a swap of ``final`` that a crash interrupted (see :func:`atomic_dir`).

    ``final`` missing but its previous copy ``.<name>.old`` present (the crash came between
    the two renames): the previous copy is put back. Both present (the crash came before the
    previous copy was deleted): the previous copy is deleted. Temporary folders of unfinished
    swaps (``.<name>.*.tmp``) are deleted. Only call it when no other process may be writing
    ``final`` (it would delete that process's temporary folder): a workspace calls it when its
    lock is taken, and when it is opened while no process holds the lock.
    """
    final = Path(final)
    old = _old(final)
    if old.exists():
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, final)
            _fsync_dir(final.parent)
    for tmp in final.parent.glob(f".{final.name}.*.tmp") if final.parent.exists() else ():
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``final``.

    Crash-safe: the new folder's files are fsynced; then ``final`` is renamed to
    ``.<name>.old``, the new folder to ``final`` (each rename made durable with an fsync of the
    parent folder), and only then is the old copy deleted. At every moment there is a complete
    old or new copy on disk; a crash between the renames leaves ``final`` missing and
    ``.<name>.old`` complete, which :func:`recover_dir` puts back. On an exception the
    temporary directory is removed and ``final`` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    swap_in(tmp, final)


def swap_in(new: Path, final: Path) -> None:
    """Replace folder ``final`` with the complete folder ``new`` (a sibling), crash-safely:
    fsync ``new``'s files, rename ``final`` to ``.<name>.old``, rename ``new`` to ``final``
    (each rename made durable), then delete the old copy (see :func:`atomic_dir`)."""
    new, final = Path(new), Path(final)
    _fsync_tree(new)
    old = _old(final)
    if old.exists():  # left by an earlier crash; the copy being swapped in is complete
        shutil.rmtree(old)
    if not final.exists():
        old = None
    else:
        os.replace(final, old)
        _fsync_dir(final.parent)
    os.replace(new, final)
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
