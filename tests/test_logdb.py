"""Migrations of the generation log ``mimetic.db``."""

import contextlib
import sqlite3
from pathlib import Path

import pytest

from mimetic.core import logdb
from mimetic.errors import MimeticError
from mimetic.core.workspace import Workspace

# The schema exactly as the release before migrations created it (a frozen copy, never edited).
RELEASE_SCHEMA = (Path(__file__).parent / "data" / "mimetic-db-release-0.1.0.sql").read_text()
ROWS = [
    ("2025-01-01T12:00:00+0000", "write", "The kettle", " sang.", '{"model": "voice"}', "embedded", "/v/runs/1/adapter", 1, 5, 0.5),
    ("2025-01-01T12:01:00+0000", "compare", "The sea", " was grey.", "{}", "embedded", None, None, 4, 0.25),
]


def _schema(con: sqlite3.Connection, table: str = "generations") -> list[tuple]:
    return con.execute("SELECT type, name, sql FROM sqlite_master WHERE tbl_name = ? ORDER BY name", (table,)).fetchall()


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
        assert _schema(con) == schema  # the release's table untouched, its rows kept
        assert [n for n, in con.execute("SELECT name FROM _migrations")] == ["m001_generations", "m002_marks"]
        assert con.execute("SELECT count(*) FROM marks").fetchone() == (0,)
    ws = Workspace(path.parent)
    assert [tuple(g[k] for k in ("created_at", "command", "prompt", "output", "params", "base_model", "adapter", "seed",
                                 "new_tokens", "duration_s")) for g in reversed(ws.generations())] == ROWS
    assert ws.log_generation(command="write", prompt="p", output="o", params={"b": 1, "a": 2}, base_model="m",
                             adapter=None, seed=3, new_tokens=1, duration_s=0.1) == 3
    assert ws.generations(1)[0]["params"] == '{"a": 2, "b": 1}'


def test_new_log_has_the_release_schema(tmp_path, release_db):
    with contextlib.closing(logdb.connect(tmp_path / "new.db")) as con:
        assert _schema(con) == release_db[1] and _schema(con, "marks")


def test_migrations_run_once(release_db):
    path, _ = release_db
    with contextlib.closing(sqlite3.connect(path)) as con:
        assert logdb.migrate(con) == ["m001_generations", "m002_marks"]
        assert logdb.migrate(con) == []
        assert con.execute("SELECT count(*) FROM _migrations").fetchone() == (2,)
        assert con.execute("SELECT count(*) FROM generations").fetchone() == (2,)


def test_a_new_migration_applies_once_and_a_failing_one_leaves_no_trace(release_db):
    path, _ = release_db

    def m099_generations_rating(con):
        con.execute("ALTER TABLE generations ADD COLUMN rating INTEGER")

    def m100_broken(con):
        con.execute("CREATE TABLE half (x)")
        raise RuntimeError("boom")

    with contextlib.closing(sqlite3.connect(path)) as con:
        assert logdb.migrate(con, [*logdb.MIGRATIONS, m099_generations_rating]) == ["m001_generations", "m002_marks",
                                                                                       "m099_generations_rating"]
        assert logdb.migrate(con, [*logdb.MIGRATIONS, m099_generations_rating]) == []  # a second ALTER would fail
        assert "rating" in [r[1] for r in con.execute("PRAGMA table_info(generations)")]
        assert con.execute("SELECT count(*), count(rating) FROM generations").fetchone() == (2, 0)
        with pytest.raises(RuntimeError):
            logdb.migrate(con, [*logdb.MIGRATIONS, m099_generations_rating, m100_broken])
        assert con.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half'").fetchone() == (0,)
        assert "m100_broken" not in {n for n, in con.execute("SELECT name FROM _migrations")}


def test_damaged_log_is_a_clear_error(tmp_path):
    ws = Workspace(tmp_path)
    ws.db_path.write_bytes(b"this is not a database, it is a shopping list\n" * 50)
    with pytest.raises(MimeticError) as e:  # reading it; writing sets it aside (test_reliability.py)
        ws.generations()
    assert str(ws.db_path) in e.value.message and "mv " in e.value.hint


def test_marks_on_a_log_from_the_previous_release(tmp_path):
    """A log written by the release before marks (``m001`` recorded in ``_migrations``) gains the
    marks table, keeps its generations, and takes the writer's marks with their prompt and run."""
    path = tmp_path / "mimetic.db"
    with contextlib.closing(sqlite3.connect(path)) as con:
        logdb.migrate(con, [logdb.m001_generations])  # the previous release: one migration
        con.executemany("INSERT INTO generations (created_at, command, prompt, output, params, base_model, adapter, seed,"
                        " new_tokens, duration_s) VALUES (?,?,?,?,?,?,?,?,?,?)", ROWS + ROWS[:1])
        con.commit()
    assert logdb.add_marks(path, 1, "keep", note="sounds like me") == [1]
    assert logdb.add_marks(path, 3, "best", over=[1, 2]) == [2, 3, 4]
    rows = logdb.marks(path)
    assert [(m["generation_id"], m["label"], m["group_id"]) for m in rows] == [
        (1, "keep", None), (3, "best", "3>1,2"), (1, "worse", "3>1,2"), (2, "worse", "3>1,2")]
    assert rows[0]["note"] == "sounds like me" and rows[0]["prompt"] == "The kettle" and rows[0]["adapter"] == "/v/runs/1/adapter"
    for bad, match in (((9, "keep"), "No generation #9"), ((1, "love"), "Unknown mark"), ((1, "best"), "better than"),
                       ((1, "best", [1, 2]), "itself")):
        with pytest.raises(MimeticError, match=match):
            logdb.add_marks(path, *bad)
    assert len(logdb.marks(path)) == 4  # a refused mark leaves nothing behind


def test_rate_command(tmp_path):
    from typer.testing import CliRunner

    from mimetic.frontends.cli import app

    ws = Workspace.open(tmp_path / "v")
    ws.save_config(ws.load_config())  # a voice folder, as ingest leaves it
    for k in range(3):
        ws.log_generation(command="write", prompt="p", output=f"o{k}", params={}, base_model="m", adapter=None, seed=k,
                          new_tokens=1, duration_s=0.1)
    runner = CliRunner()
    r = runner.invoke(app, ["rate", "2", "best", "--over", "1,3", "-w", str(ws.root)])
    assert r.exit_code == 0 and "#2 marked best over #1, #3" in r.output
    r = runner.invoke(app, ["rate", "7", "keep", "-w", str(ws.root)])
    assert r.exit_code != 0 and "mimetic log" in r.output and "Traceback" not in r.output
    assert [m["label"] for m in logdb.marks(ws.db_path)] == ["best", "worse", "worse"]
    r = runner.invoke(app, ["log", "-w", str(ws.root)])
    assert r.exit_code == 0 and "#2 " in r.output and "marked best" in r.output and "marked worse" in r.output
