"""Migrations of the generation log ``mimetic.db``."""

import contextlib
import sqlite3
from pathlib import Path

import pytest

from mimetic import logdb
from mimetic.errors import MimeticError
from mimetic.workspace import Workspace

# The schema exactly as the release before migrations created it (a frozen copy, never edited).
RELEASE_SCHEMA = (Path(__file__).parent / "data" / "mimetic-db-release-0.1.0.sql").read_text()
ROWS = [
    ("2025-01-01T12:00:00+0000", "write", "The kettle", " sang.", '{"model": "voice"}', "embedded", "/v/runs/1/adapter", 1, 5, 0.5),
    ("2025-01-01T12:01:00+0000", "compare", "The sea", " was grey.", "{}", "embedded", None, None, 4, 0.25),
]


def _schema(con: sqlite3.Connection) -> list[tuple]:
    return con.execute("SELECT type, name, sql FROM sqlite_master WHERE tbl_name != '_migrations' ORDER BY name").fetchall()


@pytest.fixture
def release_db(tmp_path):
    path = tmp_path / "mimetic.db"
    with contextlib.closing(sqlite3.connect(path)) as con:
        con.executescript(RELEASE_SCHEMA)
        con.executemany("INSERT INTO generations (created_at, command, prompt, output, params, base_model, adapter, seed,"
                        " new_tokens, duration_s) VALUES (?,?,?,?,?,?,?,?,?,?)", ROWS)
        con.commit()
        schema = _schema(con)
    return path, schema


def test_log_from_the_release_is_adopted_with_rows_intact(release_db):
    path, schema = release_db
    with contextlib.closing(logdb.connect(path)) as con:
        assert _schema(con) == schema
        assert [n for n, in con.execute("SELECT name FROM _migrations")] == ["m001_generations"]
    ws = Workspace(path.parent)
    assert [tuple(g[k] for k in ("created_at", "command", "prompt", "output", "params", "base_model", "adapter", "seed",
                                 "new_tokens", "duration_s")) for g in reversed(ws.generations())] == ROWS
    assert ws.log_generation(command="write", prompt="p", output="o", params={"b": 1, "a": 2}, base_model="m",
                             adapter=None, seed=3, new_tokens=1, duration_s=0.1) == 3
    assert ws.generations(1)[0]["params"] == '{"a": 2, "b": 1}'


def test_new_log_has_the_release_schema(tmp_path, release_db):
    with contextlib.closing(logdb.connect(tmp_path / "new.db")) as con:
        assert _schema(con) == release_db[1]


def test_migrations_run_once(release_db):
    path, _ = release_db
    with contextlib.closing(sqlite3.connect(path)) as con:
        assert logdb.migrate(con) == ["m001_generations"]
        assert logdb.migrate(con) == []
        assert con.execute("SELECT count(*) FROM _migrations").fetchone() == (1,)
        assert con.execute("SELECT count(*) FROM generations").fetchone() == (2,)


def test_a_new_migration_applies_once_and_a_failing_one_leaves_no_trace(release_db):
    path, _ = release_db

    def m002_generations_rating(con):
        con.execute("ALTER TABLE generations ADD COLUMN rating INTEGER")

    def m003_broken(con):
        con.execute("CREATE TABLE half (x)")
        raise RuntimeError("boom")

    with contextlib.closing(sqlite3.connect(path)) as con:
        assert logdb.migrate(con, [*logdb.MIGRATIONS, m002_generations_rating]) == ["m001_generations", "m002_generations_rating"]
        assert logdb.migrate(con, [*logdb.MIGRATIONS, m002_generations_rating]) == []  # a second ALTER would fail
        assert "rating" in [r[1] for r in con.execute("PRAGMA table_info(generations)")]
        assert con.execute("SELECT count(*), count(rating) FROM generations").fetchone() == (2, 0)
        with pytest.raises(RuntimeError):
            logdb.migrate(con, [*logdb.MIGRATIONS, m002_generations_rating, m003_broken])
        assert con.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half'").fetchone() == (0,)
        assert "m003_broken" not in {n for n, in con.execute("SELECT name FROM _migrations")}


def test_damaged_log_is_a_clear_error(tmp_path):
    ws = Workspace(tmp_path)
    ws.db_path.write_bytes(b"this is not a database, it is a shopping list\n" * 50)
    with pytest.raises(MimeticError) as e:  # reading it; writing sets it aside (test_reliability.py)
        ws.generations()
    assert str(ws.db_path) in e.value.message and "mv " in e.value.hint
