"""The voice's generation log, ``mimetic.db`` (SQLite), and the migrations of its schema.

Schema changes are migrations, as in simonw/llm's ``migrations.py``: an ordered list of
functions, each decorated with :func:`migration`, each applied once, inside its own
transaction, and recorded by name in the ``_migrations`` table (``name TEXT PRIMARY KEY,
applied_at TEXT``). :func:`connect` applies the missing ones every time the log is opened, so a
database from any earlier release is brought up to date without losing rows. A new feature that
needs a column adds one function at the end of this file::

    @migration
    def m002_generations_rating(con):
        con.execute("ALTER TABLE generations ADD COLUMN rating INTEGER")

Migrations run with ``con.execute`` (never ``executescript``, which commits on its own and
would break the one-transaction-per-migration rule), and are never edited once released.

The table ``generations`` has one row per generation: ``id`` (row id), ``created_at`` (local
time, ISO 8601 with offset), ``command`` (``voice``, ``generate``, ``compare``…), ``prompt``,
``output``, ``params`` (JSON of the sampling settings), ``base_model``, ``adapter`` (path or
NULL), ``seed``, ``new_tokens`` (count) and ``duration_s`` (seconds).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from mimetic.errors import MimeticError

Migration = Callable[[sqlite3.Connection], None]

MIGRATIONS: list[Migration] = []
"""Every migration of ``mimetic.db``, in the order they are applied."""


def migration(fn: Migration) -> Migration:
    """Register ``fn`` as the next migration; its ``__name__`` is what ``_migrations`` records."""
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_generations(con: sqlite3.Connection) -> None:
    """The schema of the first release, created only where it is missing (so a log written by
    that release, which has no ``_migrations`` table, is adopted as it is)."""
    con.execute(
        """
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
)"""
    )


@migration
def m002_marks(con: sqlite3.Connection) -> None:
    """The writer's marks on generations (the feedback loop of issue 16): ``keep`` / ``discard``
    of one text (KTO's labels), or ``best`` / ``worse`` among drafts written for the same prompt
    and marked together under one ``group_id`` (DPO's pairs). The prompt, the sampling settings
    and the run (``adapter``) are the generation's own row."""
    con.execute(
        """
CREATE TABLE marks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    generation_id INTEGER NOT NULL REFERENCES generations(id),
    label TEXT NOT NULL CHECK (label IN ('keep', 'discard', 'best', 'worse')),
    group_id TEXT,
    note TEXT NOT NULL DEFAULT ''
)"""
    )
    con.execute("CREATE INDEX marks_generation ON marks (generation_id)")


MARKS = ("keep", "discard", "best")
"""What a writer can say of a generation (``best`` needs the drafts it was better than)."""


def add_marks(path: Path, generation_id: int, label: str, over: Iterable[int] = (), note: str = "") -> list[int]:
    """Store the writer's mark on generation ``generation_id``; returns the new marks' ids.

    ``keep`` / ``discard`` mark one text. ``best`` marks it the best of the drafts ``over``
    (each of them gets a ``worse`` mark in the same group), all in one transaction.

    Raises:
        MimeticError: an unknown label, a generation not in the log, ``best`` without the drafts
            it beat, or a draft marked better than itself.
    """
    if label not in MARKS:
        raise MimeticError(f"Unknown mark {label!r}.", f"Mark a text {', '.join(MARKS)}: mimetic rate ID keep")
    over = [int(i) for i in over]
    if label == "best" and not over:
        raise MimeticError("'best' needs the drafts it was better than.", "mimetic rate 12 best --over 13,14")
    if generation_id in over:
        raise MimeticError(f"Generation #{generation_id} cannot be better than itself.", "List the other drafts after --over.")
    with _opened(path, transaction=True) as con:
        known = {r[0] for r in con.execute(
            f"SELECT id FROM generations WHERE id IN ({', '.join('?' * (1 + len(over)))})", (generation_id, *over))}
        missing = sorted({generation_id, *over} - known)
        if missing:
            raise MimeticError(f"No generation #{', #'.join(map(str, missing))} in this voice's log.",
                               "See the numbers with: mimetic log")
        group = f"{generation_id}>{','.join(map(str, over))}" if over else None
        rows = [(generation_id, label, group)] + [(g, "worse", group) for g in over]
        return [int(con.execute("INSERT INTO marks (created_at, generation_id, label, group_id, note) VALUES (?, ?, ?, ?, ?)",
                                 (_now(), g, lab, grp, note)).lastrowid) for g, lab, grp in rows]


def marks(path: Path) -> list[dict[str, Any]]:
    """Every mark with its generation's prompt, output, settings and run, oldest first
    (``[]`` without a log)."""
    if not Path(path).exists():
        return []
    with _opened(path) as con:
        con.row_factory = sqlite3.Row
        rows = con.execute(
            """SELECT m.id, m.created_at, m.generation_id, m.label, m.group_id, m.note,
                      g.prompt, g.output, g.params, g.base_model, g.adapter, g.seed
               FROM marks m JOIN generations g ON g.id = m.generation_id ORDER BY m.id""").fetchall()
    return [dict(r) for r in rows]


def migrate(con: sqlite3.Connection, migrations: Iterable[Migration] | None = None) -> list[str]:
    """Apply the migrations (default :data:`MIGRATIONS`) that ``_migrations`` does not list yet.

    Each runs in its own transaction together with the row that records it: a migration that
    fails leaves the database as it was before it. Returns the names applied now (``[]`` when
    the database is up to date).

    Raises:
        sqlite3.DatabaseError: the file is not an SQLite database (see :func:`connect`).
    """
    con.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    con.commit()
    done = {r[0] for r in con.execute("SELECT name FROM _migrations")}
    applied = []
    for fn in MIGRATIONS if migrations is None else migrations:
        if fn.__name__ in done:
            continue
        con.execute("BEGIN")
        try:
            fn(con)
            con.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (fn.__name__, _now()))
        except BaseException:
            con.rollback()
            raise
        con.commit()
        applied.append(fn.__name__)
    return applied


def is_damage(e: sqlite3.DatabaseError) -> bool:
    """``e`` says the file is damaged or not a database (SQLite's ``SQLITE_CORRUPT`` or
    ``SQLITE_NOTADB``), not that it is busy, locked, full or read-only."""
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    return type(e) is sqlite3.DatabaseError  # pragma: no cover - Python before 3.11


def damaged(path: Path, e: sqlite3.DatabaseError) -> MimeticError:
    """The two-line error of a log that cannot be read (its header or its inside damaged)."""
    return MimeticError(
        f"The generation log {path} cannot be read as an SQLite database ({e}).",
        f"Move it aside (for example: mv {path} {path}.damaged); mimetic then starts a new, empty log.",
    )


@contextlib.contextmanager
def _opened(path: Path, transaction: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection to the log at ``path`` (:func:`connect`), closed after use; inside a
    transaction when asked. Damage met anywhere in the file (not only at its header, where
    :func:`connect` meets it) becomes the same :class:`MimeticError`."""
    try:
        with contextlib.closing(connect(path)) as con:
            if transaction:
                with con:
                    yield con
            else:
                yield con
    except sqlite3.DatabaseError as e:
        if is_damage(e):
            raise damaged(path, e) from None
        raise


def connect(path: Path) -> sqlite3.Connection:
    """Open (or create) the log at ``path``, migrated to the current schema.

    Raises:
        MimeticError: ``path`` is not an SQLite database (damaged, or another kind of file).
    """
    con = sqlite3.connect(path)
    try:
        migrate(con)
    except sqlite3.DatabaseError as e:
        con.close()
        raise damaged(path, e) from None
    return con


def insert_generation(path: Path, **row: Any) -> int:
    """Append one generation to the log at ``path``; returns its row id.

    ``row`` holds the columns of ``generations`` except ``id`` and ``created_at`` (set here);
    ``params`` is a dict, stored as JSON with sorted keys.

    Raises:
        MimeticError: the log is damaged, at its header or inside (:func:`damaged`).
    """
    row = {"created_at": _now(), **row, "params": json.dumps(row["params"], sort_keys=True)}
    with _opened(path, transaction=True) as con:
        cur = con.execute(
            f"INSERT INTO generations ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values())
        )
        return int(cur.lastrowid)


def latest_generations(path: Path, limit: int = 20) -> list[dict[str, Any]]:
    """The latest ``limit`` generations of the log at ``path``, newest first, as dicts
    (``[]`` when there is no log yet)."""
    if not Path(path).exists():
        return []
    with _opened(path) as con:
        con.row_factory = sqlite3.Row
        rows = con.execute("SELECT * FROM generations ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    return [dict(r) for r in rows]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


__all__ = ["MIGRATIONS", "migration", "migrate", "connect", "insert_generation", "latest_generations", "MARKS", "add_marks",
           "marks"]
