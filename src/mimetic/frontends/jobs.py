"""Long stages run as their own processes, for the app: ingest, train, evaluate, export.

A *job* is one stage of one voice run by ``python -m mimetic.frontends.jobs VOICE JOB-ID`` in a new
session (it keeps going when the browser, the tab or the app is closed). Its files, in the
voice's ``.app/jobs/``:

* ``<id>.json``: what was asked (``kind``, ``args``), the process id, and at the end the
  outcome: ``finished`` (with the stage's result), ``failed`` (the error's two sentences),
  ``stopped`` (a training run asked to stop; it keeps a checkpoint and can resume);
* ``<id>.events.jsonl``: the stage's event stream (:mod:`mimetic.core.events`), the one the CLI
  renders, one JSON object per line, which the app's pages follow;
* ``<id>.log``: the process's own output (a traceback, if it ever crashes, is kept there, not
  shown to the writer).

A job whose process has gone without writing its outcome (killed, out of memory, the machine
restarted) reads as ``died``, with how to resume. Only one training job per voice runs at a
time (and the voice's lock, :meth:`mimetic.core.workspace.Workspace.lock`, keeps every other writer out).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mimetic.errors import MimeticError, TrainingInterrupted
from mimetic.core.events import Event
from mimetic.core.workspace import Workspace, atomic_write_json

KINDS = ("create", "ingest", "train", "resume", "evaluate", "export")
FINAL = ("finished", "failed", "stopped", "died")


@dataclass
class Job:
    """One job's record (``.app/jobs/<id>.json``); see the module's docstring."""

    id: str
    kind: str
    args: dict[str, Any]
    status: str = "starting"
    pid: int | None = None
    started_at: str = ""
    ended_at: str = ""
    message: str = ""
    hint: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    dismissed: bool = False

    @property
    def running(self) -> bool:
        return self.status not in FINAL


def jobs_dir(ws: Workspace) -> Path:
    return ws.root / ".app" / "jobs"


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a finished child not yet reaped is a zombie: gone as far as the writer is concerned
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def load(ws: Workspace, job_id: str) -> Job:
    """The job ``job_id`` as it stands; a job whose process is gone without an outcome is
    ``died``, with what to do.

    Raises:
        MimeticError: no such job.
    """
    path = jobs_dir(ws) / f"{job_id}.json"
    try:
        job = Job(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        raise MimeticError(f"No job {job_id!r} for this voice.", "Start it again from the page.") from None
    if job.running and job.pid and not _alive(job.pid):
        job = load_final(ws, job)  # it may have written its outcome just now
        if job.running:
            job.status, job.message = "died", "The process stopped before it could finish (it was killed, or ran out of memory)."
            job.hint = ("Resume the training run from its last checkpoint." if job.kind in ("train", "resume")
                        else "Start it again.")
    return job


def load_final(ws: Workspace, job: Job) -> Job:
    try:
        return Job(**json.loads((jobs_dir(ws) / f"{job.id}.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return job


def all_jobs(ws: Workspace, kind: str | None = None) -> list[Job]:
    """Every job of the voice (of ``kind`` or of any), newest first."""
    d = jobs_dir(ws)
    ids = sorted((p.name[:-5] for p in d.glob("*.json")), reverse=True) if d.is_dir() else []
    jobs = [load(ws, i) for i in ids]
    return [j for j in jobs if kind is None or j.kind in ((kind, "resume") if kind == "train" else (kind,))]


def events(ws: Workspace, job_id: str, start: int = 0) -> list[dict[str, Any]]:
    """The job's events from line ``start`` on (as dicts, :meth:`mimetic.core.events.Event.to_dict`)."""
    path = jobs_dir(ws) / f"{job_id}.events.jsonl"
    if not path.exists():
        return []
    out = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f):
            if n >= start and line.endswith("\n"):  # a line being written is read next time
                try:
                    out.append(json.loads(line))
                except ValueError:
                    out.append({"event": "warning", "message": "an unreadable event line"})
    return out


def start(ws: Workspace, kind: str, args: dict[str, Any]) -> Job:
    """Start a job in its own process and session; returns its record.

    Raises:
        MimeticError: an unknown kind, or (for training) a training job of this voice still
            running: one training run per voice at a time.
    """
    if kind not in KINDS:
        raise MimeticError(f"Unknown job {kind!r}.", f"Jobs: {', '.join(KINDS)}.")
    if kind in ("train", "resume", "create", "ingest"):
        busy = [j for j in all_jobs(ws) if j.running and j.kind in ("train", "resume", "create", "ingest")]
        if busy:
            raise MimeticError(f"This voice is already busy: a {busy[0].kind} job started at {busy[0].started_at[11:16]}.",
                               "Wait for it, or stop it, before starting another.")
    d = jobs_dir(ws)
    d.mkdir(parents=True, exist_ok=True)
    job_id = time.strftime("%Y%m%d-%H%M%S") + f"-{kind}"
    n = 1
    while (d / f"{job_id}.json").exists():
        n += 1
        job_id = time.strftime("%Y%m%d-%H%M%S") + f"-{kind}-{n}"
    job = Job(job_id, kind, args, started_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    atomic_write_json(d / f"{job_id}.json", asdict(job))
    with (d / f"{job_id}.log").open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mimetic.frontends.jobs", str(ws.root), job_id], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    # the app waits for its children: a finished job leaves no zombie process behind
    threading.Thread(target=proc.wait, name=f"reap-{job_id}", daemon=True).start()
    job.pid, job.status = proc.pid, "running"
    _save_if_running(ws, job)
    return job


def dismiss(ws: Workspace, job_id: str) -> Job:
    """The writer has read the card of a job that has ended: the pages stop showing it.

    Raises:
        MimeticError: no such job, or it is still running.
    """
    job = load(ws, job_id)
    if job.running:
        raise MimeticError("This job is still running.", "Wait for it to finish, or stop it.")
    job.dismissed = True
    atomic_write_json(jobs_dir(ws) / f"{job_id}.json", asdict(job))
    return job


def _save_if_running(ws: Workspace, job: Job) -> None:
    """Record the pid, unless the process has already written its outcome."""
    current = load_final(ws, job)
    if current.status == "starting":
        atomic_write_json(jobs_dir(ws) / f"{job.id}.json", asdict(job))


def stop_training(ws: Workspace) -> str:
    """Ask the voice's training run in progress to checkpoint and stop (the ``stop`` file that
    ``mimetic stop`` makes); returns its run id.

    Raises:
        MimeticError: no training run in progress.
    """
    from mimetic.training.loop import Run

    run_dir = ws.run_dir(None, finished=False)
    if (run_dir / "summary.json").exists() or not any(j.running for j in all_jobs(ws, "train")):
        raise MimeticError("No training run is in progress.", "Start one on the Train page.")
    Run.request_stop(run_dir)
    return run_dir.name


# ------------------------------------------------------------------------------ in the job process


# The evaluation's steps, in order, with the share of its time each takes on a CPU (measured
# on the embedded model; the samples dominate). Its Progress events are messages only: the job
# turns them into a share done and a time left.
EVALUATION_STEPS = (("loading", 3), ("held-out NLL", 30), ("samples", 35), ("extraction", 5), ("reusing", 0),
                    ("calibration", 8), ("identity probe", 5), ("stylometry", 5), ("what a reader sees", 6), ("each mode", 3))
"""The evaluation's steps in the order ``mimetic evaluate`` says them, each with its rough share
of the time (held-out NLL in transformers, the samples in llama.cpp; a Dickens voice on 2 cores,
``benchmarks/corpus_size.py``)."""
_WORDS = re.compile(r"([\d,]+) words from the voice(?:, ([\d,]+) from the base model)?")


class Estimates:
    """Adds a bar and a time left to the events of stages that send none (every long job shows
    both): a stage's ``Progress`` with a total gets the time left at its pace so far; the
    evaluation's message-only steps become a share done (:data:`EVALUATION_STEPS`, the samples
    counted in words); a training run's steps before its first (measuring the base model) get the
    time budget's upper bound (``info["at_most"]``).

    Args:
        job: the job (its kind and arguments).
        clock: seconds, monotonic (a test passes its own).
    """

    def __init__(self, job: Job, clock: Any = time.monotonic):
        self.job, self.clock = job, clock
        self.t0 = clock()
        self.first: dict[tuple[Any, ...], tuple[float, float]] = {}
        self.share = 0.0
        budget = job.args.get("time_budget_min") if job.kind in ("train", "resume") else None
        self.budget_s = float(budget) * 60 if budget else None
        self.sample_words = float((job.args.get("settings") or {}).get("sample_words") or 0)

    def __call__(self, d: dict[str, Any]) -> dict[str, Any]:
        if d.get("event") != "progress" or d.get("eta_s") is not None:
            return d
        now = self.clock()
        if d.get("total"):
            key = (d.get("stage"), d.get("total"), d.get("unit"))
            t, done = self.first.setdefault(key, (now, float(d.get("done") or 0)))
            made = float(d.get("done") or 0) - done
            if made > 0:
                d["eta_s"] = (float(d["total"]) - float(d["done"])) * (now - t) / made
            return d
        if self.job.kind == "evaluate" and d.get("stage") == "evaluate":
            share = self._evaluation_share(str(d.get("message") or ""))
            if share is not None:
                self.share = max(self.share, share)
                d.update(done=round(100 * self.share, 1), total=100, unit="%")
                if self.share >= 0.03:
                    d["eta_s"] = (now - self.t0) * (1 - self.share) / self.share
            return d
        if self.budget_s:
            d["eta_s"] = max(0.0, self.budget_s - (now - self.t0))
            d["info"] = {**(d.get("info") or {}), "at_most": True}
        return d

    def _evaluation_share(self, message: str) -> float | None:
        before = 0.0
        total = sum(w for _, w in EVALUATION_STEPS)
        for name, weight in EVALUATION_STEPS:
            if message.startswith(name):
                inside = 0.0
                m = _WORDS.search(message) if name == "samples" else None
                if m and self.sample_words:
                    got = [float(x.replace(",", "")) for x in m.groups() if x]
                    inside = min(1.0, min(got) / self.sample_words)
                elif name == "held-out NLL" and message.endswith("voice"):
                    inside = 0.5
                return (before + weight * inside) / total
            before += weight
        return None


class _EventLog:
    def __init__(self, path: Path, estimates: Estimates | None = None):
        self.f = path.open("a", encoding="utf-8")
        self.estimates = estimates

    def __call__(self, event: Event) -> None:
        d = event.to_dict()
        if self.estimates is not None:
            d = self.estimates(d)
        self.f.write(json.dumps(d, default=str) + "\n")
        self.f.flush()


def _run_stage(ws: Workspace, job: Job, on_event: Any) -> dict[str, Any]:
    """Call the stage's Python API, as the CLI does; returns what the page shows at the end."""
    from mimetic.core import config as cfg

    a = job.args
    if job.kind in ("create", "ingest"):
        from mimetic.pipeline import create_voice

        folders = [Path(p) for p in a.get("folders", [])] or [ws.root / "sources"]
        allowed = [Path(p) for p in a["allowed"]] if a.get("allowed") else None  # the desk's --allow roots
        made = create_voice(folders, ws, base_model=a.get("base_model") or None, on_event=on_event,
                            replace=bool(a.get("replace")), allowed_roots=allowed)
        return {"words": made.ingest.words, "documents": len(made.ingest.kept),
                "train_examples": made.prepare.train_examples, "held_out_examples": made.prepare.held_out_examples}
    if job.kind in ("train", "resume"):
        from mimetic.training.sft import train

        runtime = {"time_budget_min": a.get("time_budget_min")}
        if job.kind == "resume":
            r = train(ws, resume=a.get("run") or True, runtime=runtime, on_event=on_event)
        else:
            tc = cfg.replace(ws.load_config().train, max_steps=a.get("max_steps"), epochs=a.get("epochs"))
            r = train(ws, tc, runtime=runtime, on_event=on_event)
        return {"run": r.run_id, "base_nll": r.base_nll, "best_nll": r.best_nll, "steps": r.final_step,
                "stopped_because": r.stopped_because, "tokens_per_s": r.tokens_per_s}
    if job.kind == "evaluate":
        from mimetic.evaluation.evaluate import evaluate

        ec = cfg.replace(ws.load_config().evaluate, **{k: v for k, v in a.get("settings", {}).items()})
        e = evaluate(ws, a.get("run"), ec, on_event=on_event)
        return {"run": e.metrics["run"], "summary": e.summary(), "report": str(e.report)}
    if job.kind == "export":
        from mimetic.voice.export import export

        ec = cfg.replace(ws.load_config().export, formats=a.get("formats"), quantizations=a.get("quantizations"))
        r = export(ws, a.get("run"), ec, on_event=on_event)
        ggufs = sorted(n for n in r.files if n.endswith(".gguf") and n.startswith("voice-"))
        return {"out_dir": str(r.out_dir), "files": r.files, "ollama_command": r.ollama_command,
                "llama_cpp_command": (f'llama-cli -m "{r.out_dir / ggufs[0]}" -p "The morning after the storm" -n 200'
                                      if ggufs else "")}
    raise MimeticError(f"Unknown job {job.kind!r}.", f"Jobs: {', '.join(KINDS)}.")


def main(root: str, job_id: str) -> int:
    """The job process: run the stage, write the outcome. Returns the exit status."""
    ws = Workspace.open(root, create=False)
    job = load(ws, job_id)
    job.pid, job.status = os.getpid(), "running"
    path = jobs_dir(ws) / f"{job_id}.json"
    atomic_write_json(path, asdict(job))
    log = _EventLog(jobs_dir(ws) / f"{job_id}.events.jsonl", Estimates(job))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        job.result = _run_stage(ws, job, log)
        job.status = "finished"
    except TrainingInterrupted as e:
        job.status, job.message, job.hint = "stopped", str(e).split("\n")[0], "Resume it from the Train page: it goes on from its checkpoint."
    except MimeticError as e:
        job.status, job.message, job.hint = "failed", e.message, e.hint
    except KeyboardInterrupt:
        job.status, job.message, job.hint = "stopped", "Stopped.", "Start it again, or resume a training run."
    except Exception as e:  # a bug: a sentence for the page, the traceback for the log
        traceback.print_exc()
        job.status = "failed"
        job.message = f"Something went wrong inside mimetic ({type(e).__name__}: {e})."
        job.hint = f"The details are in {jobs_dir(ws) / (job_id + '.log')}; please report them."
    job.ended_at = time.strftime("%Y-%m-%dT%H:%M:%S")
    atomic_write_json(path, asdict(job))
    return 0 if job.status == "finished" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))


__all__ = ["Job", "KINDS", "start", "load", "all_jobs", "events", "stop_training", "dismiss", "jobs_dir", "main"]
