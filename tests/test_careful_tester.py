"""Issue 31, as a careful tester met it: a real trained voice (the tiny model), the real CLI,
real damage to real files."""

import os
import random
import shutil
import sqlite3

import pytest
from typer.testing import CliRunner

from conftest import trained_voice
from mimetic import Workspace
from mimetic.frontends.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def voice(tmp_path_factory, tiny_model):
    return trained_voice(tmp_path_factory.mktemp("careful"), tiny_model, max_steps=2)


@pytest.fixture
def copy(voice, tmp_path):
    """A copy of the trained voice this test may damage."""
    return Workspace.open(shutil.copytree(voice.root, tmp_path / "voice", symlinks=True))


def _damage_inside(db, offset: int = 12_288, n: int = 3_000) -> None:
    """The tester's damage: ``n`` random bytes at ``offset`` of the file, its header untouched."""
    rng = random.Random(31)
    with open(db, "r+b") as f:
        f.seek(offset)
        f.write(bytes(rng.randrange(256) for _ in range(n)))


def _fill_log(ws: Workspace, rows: int = 120) -> None:
    for i in range(rows):
        ws.log_generation(command="write", prompt=f"Prompt {i}", output=" and then the sea " * 12, params={"seed": i},
                          base_model="m", adapter=None, seed=i, new_tokens=40, duration_s=0.1)
    assert ws.db_path.stat().st_size > 16_000


def test_a_log_damaged_inside_is_set_aside_and_the_text_still_logged(copy):
    """Finding 3: the database's header is intact, a page inside is not."""
    ws = copy
    _fill_log(ws)
    _damage_inside(ws.db_path)
    with sqlite3.connect(ws.db_path) as con:  # real damage: SQLite itself says so
        with pytest.raises(sqlite3.DatabaseError, match="malformed"):
            con.execute("SELECT count(*), sum(length(output)) FROM generations").fetchone()
    # log and rate: two lines, the file named, how to fix it
    for args in (["log"], ["rate", "3", "keep"]):
        r = runner.invoke(app, [*args, "-w", str(ws.root)])
        out = " ".join(r.output.split())
        assert r.exit_code == 1, r.output
        assert "cannot be read as an SQLite database" in out and "mv " in out and "Unexpected error" not in out
    # write: the text is printed, logged in a new log, the damaged one kept aside, and it says so
    r = runner.invoke(app, ["write", "The kettle", "-w", str(ws.root), "-n", "5", "--seed", "1"])
    out = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert "Unexpected error" not in out and "could not be read as a database" in out
    (aside,) = ws.root.glob("mimetic.db.damaged-*")
    assert aside.name in out
    (g,) = ws.generations()
    assert g["prompt"] == "The kettle" and g["output"] and g["output"] in r.output
    assert not [p for p in ws.root.glob("mimetic.db-*")]  # no journal left to be replayed on the new log
    r = runner.invoke(app, ["log", "-w", str(ws.root)])
    assert r.exit_code == 0 and "The kettle" in r.output
