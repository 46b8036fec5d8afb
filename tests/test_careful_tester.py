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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unknown_base_model_offline_fails_at_once_and_is_never_saved(tmp_path):
    """Finding 6: offline (HF_HUB_OFFLINE, or no hub to reach), a hub id that is not on this
    machine is refused in seconds, not after a minute of retries, and mimetic.toml keeps the
    model it had; an id the hub does not know is refused as such."""
    import http.server
    import subprocess
    import sys
    import threading
    import time

    from conftest import make_corpus
    from mimetic import ingest

    ws = Workspace.open(tmp_path / "voice")
    ingest([make_corpus(tmp_path / "writing")], ws)  # enough words for prepare
    before = ws.config_path.read_text() if ws.config_path.exists() else ""

    class NoSuchRepo(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # the hub's answer for a repository it does not have (huggingface.co: 401)
            self.send_response(401)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": "Repository not found"}')

        do_HEAD = do_GET

        def log_message(self, *a):
            pass

    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoSuchRepo)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")}
    cases = [({"HF_HUB_OFFLINE": "1"}, "downloads are switched off"),
             ({"HF_ENDPOINT": f"http://127.0.0.1:{_free_port()}"}, "hub cannot be reached"),
             ({"HF_ENDPOINT": f"http://127.0.0.1:{hub.server_address[1]}"}, "no model 'no-such-model-xyz' on the Hugging Face hub")]
    try:
        for extra, said in cases:
            t = time.monotonic()
            r = subprocess.run([sys.executable, "-m", "mimetic", "prepare", "-w", str(ws.root), "--base-model", "no-such-model-xyz"],
                               capture_output=True, text=True, env={**env, **extra, "COLUMNS": "250"}, timeout=300)
            took = time.monotonic() - t
            out = r.stdout + r.stderr
            assert r.returncode == 1, out
            assert said in out and "--base-model smollm2-135m-instruct" in out, out
            assert "Retry" not in out and "Traceback" not in out, out
            assert took < 30, f"{took:.0f} s"
            assert (ws.config_path.read_text() if ws.config_path.exists() else "") == before  # never saved
            assert "no-such-model" not in (ws.config_path.read_text() if ws.config_path.exists() else "")
    finally:
        hub.shutdown()


def test_a_wrong_typed_setting_is_named_with_its_type(copy):
    """Finding 7: ``temperature = "hot"`` in mimetic.toml names the setting and what it must be."""
    import tomllib

    import tomli_w

    data = tomllib.loads(copy.config_path.read_text())
    data.setdefault("generate", {})["temperature"] = "hot"
    copy.config_path.write_text(tomli_w.dumps(data))
    r = runner.invoke(app, ["write", "The kettle", "-w", str(copy.root), "-n", "3"])
    out = " ".join(r.output.split())
    assert r.exit_code == 1, r.output
    assert 'generate.temperature = "hot"' in out and "is not a number" in out and "Unexpected error" not in out
    from mimetic.core.config import GenerateConfig

    assert f"(the default: {GenerateConfig().temperature})" in out


def test_an_error_after_the_echoed_prompt_starts_on_its_own_line(copy):
    """Finding 7: a truncated adapter's error is not glued onto the prompt ``write`` echoed."""
    run_dir = copy.run_dir()
    weights = next((run_dir / "adapter").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    r = runner.invoke(app, ["write", "The kettle", "-w", str(copy.root), "-n", "3"])
    assert r.exit_code == 1, r.output
    assert "damaged" in r.output
    assert not [line for line in r.output.splitlines() if "The kettle" in line and "rror" in line], r.output


def test_write_help_states_the_real_defaults():
    """Finding 8: ``write --help`` said the default temperature was 1 when the settings said 1.2."""
    from mimetic.core.config import GenerateConfig

    r = runner.invoke(app, ["write", "--help"], env={"COLUMNS": "300"}, terminal_width=300)
    text = " ".join(r.output.split())
    g = GenerateConfig()
    assert f"(default {g.temperature:g}, or the voice's generate.temperature)" in text
    assert "default 1: the voice's own distribution" not in text  # what it said before
    assert f"default {g.max_new_tokens}" in text


def test_runs_lists_unfinished_runs_and_never_cuts_an_id(copy, monkeypatch):
    """Finding 7: at 80 columns every run id is whole, and an interrupted run (no summary) is
    listed with the step it reached and how to resume it, as the footer says."""
    from mimetic.frontends import cli

    done = copy.run_dir()
    unfinished = copy.runs_dir / f"{done.name}-2"
    shutil.copytree(done, unfinished)
    (unfinished / "summary.json").unlink()  # what kill -9 leaves: a checkpoint, no summary
    (unfinished / "checkpoint").mkdir(exist_ok=True)
    (unfinished / "checkpoint" / "state.pt").touch()
    monkeypatch.setattr(cli.console, "_width", 80)
    r = runner.invoke(app, ["runs", "-w", str(copy.root)])
    assert r.exit_code == 0, r.output
    assert done.name in r.output and unfinished.name in r.output  # whole, on one line each
    assert f"Not finished: {unfinished.name}." in r.output and "mimetic train --resume RUN" in r.output
    row = next(line for line in r.output.splitlines() if unfinished.name in line and "│" in line)
    assert "at step" in " ".join(r.output.split()) and row.split("│")[-2].strip()  # the step it reached
    assert max(len(line) for line in r.output.splitlines() if "│" in line) <= 80


def test_the_resume_line_is_a_line_in_a_terminal_and_in_a_file():
    """Finding 7: "resuming run … at step 1 of 34" was only a passing spinner, absent from
    redirected output."""
    import io

    from rich.console import Console

    from mimetic.core.events import Finished, Progress, Started
    from mimetic.frontends.render import RichEvents

    for terminal in (False, True):
        out = io.StringIO()
        with RichEvents(Console(file=out, force_terminal=terminal, width=80)) as show:
            show(Started("train", "resuming run 20261206-224737 at step 1 of 34"))
            show(Progress("train", 2, 34, "steps"))
            show(Finished("train", "done"))
        lines = [line for line in out.getvalue().splitlines() if "resuming run" in line]
        assert lines and lines[0].strip().endswith("resuming run 20261206-224737 at step 1 of 34"), (terminal, out.getvalue())


def test_the_desk_reads_nothing_through_links_out_of_the_chosen_folder(tmp_path, tiny_model):
    """Finding 1, as the tester did it: a voice created on the desk (valid token, same origin)
    from a folder inside the allowed root holding ``notes.txt → /outside/secret.txt`` and
    ``linkdir → /outside/sub``; the outside text never reaches the corpus."""
    import time

    from fastapi.testclient import TestClient

    from conftest import make_corpus
    from mimetic.frontends import jobs
    from mimetic.frontends.app import AppConfig, create_app

    allowed, outside = tmp_path / "home", tmp_path / "outside"
    writing = make_corpus(allowed / "writing", n_docs=12, paragraphs=8)
    (outside / "sub").mkdir(parents=True)
    (outside / "secret.txt").write_text("The combination of the safe is hidden under the blue tile. " * 30)
    (outside / "sub" / "diary.txt").write_text("My private diary speaks of the orchard and the quarrel. " * 30)
    (writing / "notes.txt").symlink_to(outside / "secret.txt")
    (writing / "linkdir").symlink_to(outside / "sub", target_is_directory=True)
    config = AppConfig(tmp_path / "voices", allowed=[allowed], base_model=tiny_model)
    client = TestClient(create_app(config), base_url="http://127.0.0.1")
    r = client.post("/voices", data={"name": "v", "folder": str(writing), "csrf": config.csrf}, follow_redirects=False)
    assert r.status_code == 303
    ws = Workspace.open(config.voices / "v", create=False)
    job_id = jobs.all_jobs(ws, "create")[0].id
    deadline = time.time() + 600
    while jobs.load(ws, job_id).running:
        assert time.time() < deadline
        time.sleep(0.3)
    assert jobs.load(ws, job_id).status == "finished", jobs.load(ws, job_id).message
    corpus = " ".join(p.read_text() for p in (ws.corpus_dir / "docs").iterdir())
    assert "combination of the safe" not in corpus and "private diary" not in corpus
    not_read = {os.path.basename(p) for p in __import__("json").loads((ws.corpus_dir / "report.json").read_text())["outside"]}
    assert not_read == {"notes.txt", "linkdir"}
