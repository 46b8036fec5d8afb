"""Nothing silently garbled (issue 19): a writer's old files in 8-bit code pages and UTF-16 are
read as written, uncertain ones are flagged with the override that fixes them, and prompt
files are read the same way."""

import json

import pytest

from mimetic import IngestConfig, MimeticError, Workspace, ingest
from mimetic.corpus.ingest import load_corpus

TYPOGRAPHIC = [
    "The café owner, naïve and señor-like, charged £5 for the crème brûlée at the Hôtel.",
    "“It was late,” she said — and the harbour’s lamps went out, one by one… Nobody slept that night in the town.",
]
PLAIN = [
    "The café owner, naïve and señor-like, charged £5 for the crème brûlée at the Hôtel.",
    "It was late, she said, and the harbour lamps went out one by one. Nobody slept that night in the town.",
]
FILLER = ("We walked down to the water after supper, as we always did in August, and counted the boats "
          "that were still out past the breakwater.")


def _text(typographic: bool, long: bool) -> list[str]:
    paras = list(TYPOGRAPHIC if typographic else PLAIN)
    if long:
        paras += [f"{FILLER} That was the {n}th evening of the summer." for n in range(4, 54)]
    return paras


def _ingest_file(tmp_path, raw: bytes, **config):
    src = tmp_path / "writing"
    src.mkdir(exist_ok=True)
    (src / "old.txt").write_bytes(raw)
    ws = Workspace.open(tmp_path / "voice")
    result = ingest([src], ws, IngestConfig(min_words=0, **config))
    return ws, result


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1", "mac_roman", "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("long", [False, True], ids=["short", "long"])
@pytest.mark.parametrize("typographic", [True, False], ids=["curly", "straight"])
def test_old_files_are_read_as_written(tmp_path, encoding, long, typographic):
    if typographic and encoding == "latin-1":
        pytest.skip("Latin-1 has no typographic quotes or dashes")
    paras = _text(typographic, long)
    ws, result = _ingest_file(tmp_path, "\r\n\r\n".join(paras).encode(encoding))
    (doc,) = load_corpus(ws)
    assert doc["paragraphs"] == paras
    assert result.report["encoding_doubts"] == []


def test_an_uncertain_encoding_is_flagged_and_the_override_fixes_it(tmp_path):
    # one high byte, 0xBB: "ª" in Mac Roman, "»" in Windows-1252; either reading is plausible
    raw = "Add ½ cup of flour and stir it in slowly until the batter is smooth and thick enough to coat a spoon.".encode("cp1252")
    ws, result = _ingest_file(tmp_path, raw.replace("½".encode("cp1252"), "ª".encode("mac_roman")))
    (doubt,) = result.report["encoding_doubts"]
    assert doubt["path"].endswith("old.txt") and "--encoding" in doubt["note"]
    report = (ws.corpus_dir / "report.html").read_text()
    assert "encoding is uncertain" in report and "old.txt" in report
    ws, result = _ingest_file(tmp_path, raw.replace("½".encode("cp1252"), "ª".encode("mac_roman")), encoding="mac_roman")
    (doc,) = load_corpus(ws)
    assert "ª cup" in doc["paragraphs"][0] and result.report["encoding_doubts"] == []
    manifest = json.loads((ws.corpus_dir / "manifest.json").read_text())
    assert manifest["files"][0]["encoding"] == "mac-roman"


def test_an_unknown_encoding_is_refused_with_a_sentence():
    with pytest.raises(MimeticError, match="unknown encoding 'klingon'"):
        IngestConfig(encoding="klingon")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "cp1252", "utf-8-sig"])
def test_prompt_files_are_decoded_like_the_corpus(tmp_path, encoding):
    from mimetic.voice.generate import read_prompts, read_text_file

    draft = "“The morning after,” she wrote, “the café was shut.”\n\nAnd then the rain came."
    path = tmp_path / "draft.txt"
    path.write_bytes(draft.encode(encoding))
    assert read_text_file(path, "fix") == draft
    assert read_prompts(path) == draft.split("\n\n")


def test_a_binary_prompt_file_is_refused(tmp_path):
    from mimetic.voice.generate import read_text_file

    path = tmp_path / "photo.jpg"
    path.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(MimeticError, match="not a text file"):
        read_text_file(path, "Give a text file.")


# -- one writer per voice; only finished runs are the voice ---------------------------------

HOLD = """
import sys, time
from mimetic import Workspace
with Workspace.open(sys.argv[1]).lock("trained"):
    print("locked", flush=True)
    time.sleep(120)
"""


PROBE = """
import sys, time
from mimetic import Workspace
probe = Workspace(sys.argv[1])._file_lock()  # what Workspace.open holds while it checks for an interrupted swap
probe.acquire()
print("probing", flush=True)
time.sleep(0.5)
probe.release()
"""


def test_a_readers_brief_probe_does_not_turn_a_writer_away(tmp_path):
    """Two processes of one training run: one opens the voice (probing the lock for a moment to
    repair it if idle) while the other takes the lock to train. The writer must not fail."""
    import subprocess
    import sys

    ws = Workspace.open(tmp_path / "voice")
    probe = subprocess.Popen([sys.executable, "-c", PROBE, str(ws.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert probe.stdout.readline().strip() == "probing"
        with ws.lock("trained"):  # taken while the other process still holds its probe
            assert json.loads((ws.root / ".lock.json").read_text())["doing"] == "trained"
    finally:
        probe.wait(timeout=30)


def test_a_second_writer_is_told_who_holds_the_voice_and_kill_9_frees_it(tmp_path):
    import subprocess
    import sys

    from mimetic import prepare

    ws = Workspace.open(tmp_path / "voice")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(ws.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(MimeticError) as busy:
            prepare(ws)  # any stage that changes the voice
        assert f"being trained by process {holder.pid} since" in busy.value.message
        assert "mimetic stop --workspace" in busy.value.hint
        with pytest.raises(MimeticError, match="being trained"):
            ingest([tmp_path], ws)
    finally:
        holder.kill()  # kill -9: the OS releases the lock with the process
        holder.wait()
    with ws.lock("ingested"), ws.lock("prepared"):  # free again, and re-entrant within a process
        assert (ws.root / ".lock.json").exists()
    assert not (ws.root / ".lock.json").exists()


def test_run_ids_are_unique_within_a_second(tmp_path, monkeypatch):
    import time

    ws = Workspace.open(tmp_path / "voice")
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20260101-120000")
    ids = [ws.new_run_id() for _ in range(3)]
    assert ids == ["20260101-120000", "20260101-120000-2", "20260101-120000-3"]
    assert all((ws.runs_dir / i).is_dir() for i in ids)  # reserved at once: no second process can take them


def test_a_failed_run_never_becomes_the_voice(tmp_path, tiny_model, monkeypatch):
    from conftest import prepared_voice, small_train_config

    from mimetic import train
    from mimetic.models.engines import Voice

    ws = prepared_voice(tmp_path, tiny_model)
    good = train(ws, small_train_config(tiny_model, max_steps=2))

    def full_disk(*args, **kwargs):
        raise MimeticError("Not enough free disk space for a checkpoint.", "Free some space.")

    import sys

    monkeypatch.setattr(sys.modules["mimetic.training.session"], "check_free_disk", full_disk)  # the module, not the function
    with pytest.raises(MimeticError, match="disk"):
        train(ws, small_train_config(tiny_model, max_steps=4))
    failed = sorted(p.name for p in ws.runs_dir.iterdir() if p.name != good.run_id)[-1]
    assert not (ws.runs_dir / failed / "summary.json").exists()
    assert ws.run_dir() == good.run_dir  # the latest *finished* run
    assert Voice.load(ws).adapter == str(good.run_dir / "adapter")
    with pytest.raises(MimeticError, match="has not finished") as e:
        ws.run_dir(failed)
    assert f"--resume {failed}" in e.value.hint
    assert ws.run_dir(failed, finished=False).name == failed  # resume and stop still find it


# -- crash-safe writes and swaps --------------------------------------------------------------

def test_an_interrupted_file_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    import os

    from mimetic.core.atomic import atomic_write_text

    path = tmp_path / "summary.json"
    atomic_write_text(path, "old")

    def crash(src, dst):
        raise KeyboardInterrupt  # Ctrl-C between writing and renaming

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(path, "new " * 10_000)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


SWAP = """
import os, shutil, sys
from pathlib import Path
from mimetic.core.atomic import atomic_dir

crash_at = sys.argv[2]
real_replace, real_rmtree, calls = os.replace, shutil.rmtree, []

def replace(a, b):
    calls.append("replace")
    if crash_at == f"rename {len(calls)}":
        os.kill(os.getpid(), 9)  # kill -9 just before this rename
    real_replace(a, b)

def rmtree(path, *args, **kwargs):
    if crash_at == "delete old" and Path(path).name.endswith(".old"):
        os.kill(os.getpid(), 9)
    real_rmtree(path, *args, **kwargs)

os.replace, shutil.rmtree = replace, rmtree
with atomic_dir(Path(sys.argv[1])) as tmp:
    (tmp / "state.pt").write_text("new")
"""


@pytest.mark.parametrize("crash_at, expected", [("rename 1", "old"), ("rename 2", "old"), ("delete old", "new"), ("never", "new")])
def test_a_kill_during_a_folder_swap_leaves_a_complete_copy(tmp_path, crash_at, expected):
    import subprocess
    import sys

    ws = Workspace.open(tmp_path / "voice")
    checkpoint = ws.runs_dir / "20260101-120000" / "checkpoint"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.pt").write_text("old")
    done = subprocess.run([sys.executable, "-c", SWAP, str(checkpoint), crash_at])
    assert done.returncode == (0 if crash_at == "never" else -9)
    Workspace.open(ws.root)  # opening the voice repairs a half-done swap
    assert (checkpoint / "state.pt").read_text() == expected
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["checkpoint"]  # no leftovers


# -- damaged workspace files: a two-line error with the command that fixes it -----------------

def test_damaged_workspace_files_are_named_with_the_fix_and_nothing_uses_the_network(tmp_path, tiny_model, monkeypatch):
    from typer.testing import CliRunner

    from conftest import trained_voice

    from mimetic.frontends.cli import app
    from mimetic.models.engines import Voice
    from mimetic.training.loop import Run
    from mimetic.corpus.prepare import load_split

    import socket

    from mimetic import GenerateConfig
    from mimetic.voice.generate import write

    attempts = []

    def no_network(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    ws = trained_voice(tmp_path, tiny_model)  # ingest, prepare, train
    write(ws, "The sea", GenerateConfig(max_new_tokens=4))
    assert attempts == []  # and nothing tried to connect anywhere
    monkeypatch.undo()
    run_dir = ws.run_dir()
    runner = CliRunner()

    # a truncated adapter
    weights = run_dir / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(MimeticError, match=f"adapter of run {run_dir.name} is damaged") as e:
        Voice.load(ws)
    assert "mimetic train" in e.value.hint
    # a truncated checkpoint
    state = run_dir / "checkpoint" / "state.pt"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(MimeticError, match="checkpoint of run .* is damaged") as e:
        Run.resume(ws, run_dir.name)
    assert "mimetic train" in e.value.hint
    # deleted held-out examples
    import shutil

    shutil.rmtree(ws.data_dir / "held_out")
    with pytest.raises(MimeticError, match="held-out examples .* missing or damaged") as e:
        load_split(ws, "held_out")
    assert "mimetic prepare" in e.value.hint
    # garbage settings: the CLI says so in two lines, no traceback
    ws.config_path.write_bytes(b"\xff\xfe\x00garbage\x81")
    r = runner.invoke(app, ["write", "Hello", "-w", str(ws.root)], env={"COLUMNS": "1000"})  # one line: the path is long
    out = " ".join(r.output.split())
    assert r.exit_code == 1 and "mimetic.toml is damaged" in out and "mv " in out
    assert "Traceback" not in out and "Unexpected error" not in out


def test_a_damaged_log_never_loses_a_generation(tmp_path):
    ws = Workspace.open(tmp_path / "voice")
    ws.db_path.write_bytes(b"this is not an SQLite database" * 100)
    row = dict(command="write", prompt="The sea", output=" was grey.", params={"seed": 1}, base_model="m",
               adapter=None, seed=1, new_tokens=3, duration_s=0.1)
    ws.log_generation(**row)
    (aside,) = list(ws.root.glob("mimetic.db.damaged-*"))
    assert aside.read_bytes().startswith(b"this is not")  # kept for recovery
    assert [g["output"] for g in ws.generations()] == [" was grey."]
    assert ws.notices and aside.name in ws.notices[0]


# -- a held-out share as configured -----------------------------------------------------------

@pytest.mark.parametrize("n_docs", range(1, 21))
def test_the_held_out_share_is_the_configured_fraction_for_any_number_of_documents(n_docs):
    import random

    from mimetic import PrepareConfig
    from mimetic.corpus.prepare import split_held_out
    from mimetic.text.readers import count_words

    rng = random.Random(n_docs)
    words = "the sea was grey and the town slept under a low sky while we walked".split()
    docs = [{"doc_id": f"doc-{d:02d}", "title": None,
             "paragraphs": [" ".join(rng.choices(words, k=rng.randint(20, 150))) for _ in range(rng.randint(10, 300))]}
            for d in range(n_docs)]
    total = sum(count_words(p) for d in docs for p in d["paragraphs"])
    for fraction in (0.05, 0.1, 0.2):
        mode, train, held = split_held_out(docs, PrepareConfig(held_out_fraction=fraction))
        held_words = sum(count_words(p) for u in held for p in u["paragraphs"])
        assert abs(held_words / total - fraction) <= 0.01, (mode, held_words / total)
        assert sum(count_words(p) for u in train for p in u["paragraphs"]) + held_words == total
        assert split_held_out(docs, PrepareConfig(held_out_fraction=fraction)) == (mode, train, held)  # reproducible


def test_opening_a_voice_while_it_is_being_written_leaves_the_writers_folders_alone(tmp_path):
    import subprocess
    import sys

    ws = Workspace.open(tmp_path / "voice")
    run = ws.runs_dir / "20260101-120000"
    in_progress = run / ".checkpoint.abc123.tmp"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(ws.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        in_progress.mkdir(parents=True)  # a checkpoint being written by the process that holds the voice
        Workspace.open(ws.root)  # what write, evaluate or the app do while it trains
        assert in_progress.is_dir()
    finally:
        holder.kill()
        holder.wait()
    Workspace.open(ws.root)  # the writer is gone: now the leftover is cleared
    assert not in_progress.exists()
