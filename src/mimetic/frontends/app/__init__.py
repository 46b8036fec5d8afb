"""The writer's desk: a local web app over the whole pipeline (``mimetic app``).

FastAPI with server-rendered pages (Jinja2) and server-sent events; no script or style from
anywhere but this app (no CDN), nothing sent anywhere. Every page calls the same Python API
as the CLI; the long stages run as :mod:`mimetic.frontends.jobs` processes whose event stream the pages
follow, so a training run goes on when the tab or the browser is closed, and is found again
when the page is opened.

Security, for an app that can read a writer's folders:

* it listens on 127.0.0.1 unless told otherwise; another interface needs a token
  (:func:`serve_app`), then sent by every request (``?token=`` once, then a cookie);
* requests must name this app as their host (``Host`` is 127.0.0.1, localhost, or the host it
  was started on: DNS rebinding is refused);
* every request that changes something is a POST carrying the page's CSRF token (a random
  secret per app start, put in every page and sent back in a form field or the
  ``X-CSRF-Token`` header), and, when the browser names one, from this app's own origin;
* folders can be browsed and read only inside the roots the writer allowed (``--allow``,
  default: the home folder), after resolving ``..`` and symbolic links; voices live only
  under the app's voices folder, by plain names;
* dropped files are copied, by their base name only, into the voice's ``sources/``, within
  :data:`MAX_UPLOAD_MB` each; nothing uploaded is run or unpacked.
"""


import asyncio
import json
import os
import queue
import re
import secrets
import threading
from pathlib import Path
from typing import Any

from mimetic.frontends import jobs
from mimetic.errors import MimeticError
from mimetic.core.workspace import Workspace

WEB = Path(__file__).parent
MAX_UPLOAD_MB = 50
VOICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}")
UPLOAD_SUFFIXES = {".txt", ".md", ".markdown", ".gmi", ".html", ".htm", ".pdf", ".docx", ".odt", ".rtf", ".epub", ".eml",
                   ".mbox", ".json", ".csv", ".zip", ".tex", ".org", ".rst"}


REFUSED = "Refused: this request did not come from mimetic's own page."


class Refused(MimeticError):
    """A request that did not come from the app's own page (a cross-site request)."""

    def __init__(self, message: str = REFUSED):
        super().__init__(message, "Reload the page and try again.")


class AppConfig:
    """What one app serves.

    Attributes:
        voices: the folder of voices (one sub-folder each).
        allowed: folders the writer may browse and read writing from (resolved).
        token: required from every request when not ``None`` (serving beyond this machine).
        hosts: the ``Host`` names accepted.
        base_model: the base model a new voice starts with (``None``: the embedded default).
    """

    def __init__(self, voices: Path, allowed: list[Path] | None = None, token: str | None = None,
                 hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), base_model: str | None = None):
        self.voices = Path(voices).expanduser().resolve()
        self.allowed = [Path(p).expanduser().resolve() for p in (allowed or [Path.home()])]
        self.token = token
        self.hosts = hosts
        self.base_model = base_model
        self.csrf = secrets.token_urlsafe(24)


def allowed_path(config: AppConfig, path: str | Path) -> Path:
    """``path`` resolved (``~``, ``..``, symbolic links), if it lies inside an allowed root.

    Raises:
        MimeticError: outside every allowed root, or not an existing folder or file.
    """
    try:
        p = Path(str(path)).expanduser().resolve(strict=True)
    except (OSError, RuntimeError):
        raise MimeticError(f"{path} does not exist on this machine.", "Choose a folder with the folder picker.") from None
    if not any(p == root or p.is_relative_to(root) for root in config.allowed):
        raise MimeticError(f"{path} is outside the folders this app may read.",
                           "Choose a folder inside " + ", ".join(str(r) for r in config.allowed)
                           + " (or start the app with --allow FOLDER).")
    return p


def voice_path(config: AppConfig, name: str, exists: bool = True) -> Path:
    """The folder of voice ``name`` under the voices folder.

    Raises:
        MimeticError: not a plain name, or (with ``exists``) no such voice.
    """
    if not VOICE_NAME.fullmatch(name or "") or name.strip() != name:
        raise MimeticError(f"{name!r} cannot name a voice.", "Use letters, digits, spaces, - _ . (up to 64).")
    p = config.voices / name
    if exists and not (p / "mimetic.toml").exists():
        raise MimeticError(f"There is no voice called {name!r}.", "Create it on the Voices page.")
    return p


def voice_card(ws: Workspace) -> dict[str, Any]:
    """What the Voices page shows of one voice: corpus size, published version, its held-out
    NLL change and attribution, and whether something is running."""
    card: dict[str, Any] = {"name": ws.root.name, "words": None, "documents": None, "run": None, "version": None,
                            "nll_drop": None, "attribution": None, "busy": None}
    try:
        m = ws.read_manifest()
        card["words"], card["documents"] = m.words, m.documents
    except MimeticError:
        pass
    published = next((v for v in _versions(ws) if v["published"]), None)
    if published:
        card.update(run=published["run"], version=published["name"], nll_drop=published["nll_drop"],
                    attribution=published["attribution"])
    running = [j for j in jobs.all_jobs(ws) if j.running]
    card["busy"] = running[0].kind if running else None
    return card


def create_app(config: AppConfig) -> Any:
    """The FastAPI application (see the module docstring for what it guards)."""
    from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
    from fastapi.staticfiles import StaticFiles
    from fastapi.templating import Jinja2Templates

    from mimetic.core import config as cfg

    async def csrf_guard(request: Request) -> None:
        """Every request that changes something carries the page's token (the form field ``csrf``
        or the header ``X-CSRF-Token``); FastAPI caches the parsed form, so the endpoint reads it
        again for free."""
        if request.method in ("GET", "HEAD"):
            return
        sent = request.headers.get("x-csrf-token") or ""
        if not sent and request.headers.get("content-type", "").startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            sent = str((await request.form()).get("csrf") or "")
        if not secrets.compare_digest(sent, config.csrf):
            raise Refused(REFUSED)

    config.voices.mkdir(parents=True, exist_ok=True)
    app = FastAPI(title="mimetic", docs_url=None, redoc_url=None, openapi_url=None, dependencies=[Depends(csrf_guard)])
    templates = Jinja2Templates(directory=str(WEB / "templates"))
    app.mount("/static", StaticFiles(directory=str(WEB / "static")), name="static")
    writers: dict[str, threading.Lock] = {}

    def page(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"csrf": config.csrf, **ctx}, status_code=status)

    def open_voice(name: str) -> Workspace:
        return Workspace.open(voice_path(config, name), create=False)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]")
        if host not in config.hosts:
            return HTMLResponse("This app answers only on its own address.", status_code=421)
        if config.token is not None:
            given = request.query_params.get("token") or request.cookies.get("mimetic_token") or \
                request.headers.get("authorization", "").removeprefix("Bearer ")
            if not secrets.compare_digest(given or "", config.token):
                return HTMLResponse("This app needs its token: open the address it printed, with ?token=…", status_code=401)
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("origin") or request.headers.get("referer") or ""
            origin_host = re.sub(r"^[a-z]+://", "", origin).split("/")[0].rsplit(":", 1)[0].strip("[]")
            if origin and origin_host not in config.hosts:
                return HTMLResponse(REFUSED, status_code=403)
        response = await call_next(request)
        if config.token is not None and request.query_params.get("token"):
            response.set_cookie("mimetic_token", config.token, httponly=True, samesite="strict")
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                                       "frame-ancestors 'none'")
        response.headers["Referrer-Policy"] = "same-origin"  # forms then send their Origin (no-referrer makes it "null")
        return response

    @app.exception_handler(MimeticError)
    async def mimetic_error(request: Request, e: MimeticError) -> Any:
        status = 403 if isinstance(e, Refused) else 400
        if request.url.path.startswith("/api/") or request.headers.get("x-csrf-token") is not None:
            return JSONResponse({"error": e.message, "hint": e.hint}, status_code=status)
        return page(request, "error.html", status, message=e.message, hint=e.hint)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception) -> Any:
        message = f"Something went wrong inside mimetic ({type(e).__name__})."
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message, "hint": "Try again; if it happens again, please report it."}, status_code=500)
        return page(request, "error.html", 500, message=message, hint="Try again; if it happens again, please report it.")

    # ---------------------------------------------------------------------------- voices
    @app.get("/", response_class=HTMLResponse)
    def home(request: Request) -> Any:
        cards = []
        for d in sorted(config.voices.iterdir()):
            if (d / "mimetic.toml").exists() and VOICE_NAME.fullmatch(d.name):
                cards.append(voice_card(Workspace.open(d, create=False)))
        return page(request, "voices.html", voices=cards, roots=[str(r) for r in config.allowed],
                    base_model=config.base_model or "", max_mb=MAX_UPLOAD_MB)

    @app.get("/api/folders")
    def folders(path: str = "") -> Any:
        """Sub-folders of ``path`` (default: the allowed roots), for the folder picker."""
        if not path:
            return {"path": "", "parent": None, "folders": [str(r) for r in config.allowed]}
        p = allowed_path(config, path)
        if not p.is_dir():
            raise MimeticError(f"{path} is not a folder.", "Choose a folder.")
        subs = sorted(str(c) for c in p.iterdir() if c.is_dir() and not c.name.startswith(".")
                      and _inside(config, c))
        parent = str(p.parent) if any(p != r and p.is_relative_to(r) for r in config.allowed) else ""
        return {"path": str(p), "parent": parent, "folders": subs[:500]}

    @app.post("/voices")
    def create_voice(request: Request, name: str = Form(...), folder: str = Form(""), base_model: str = Form(""),
                     csrf: str = Form("")) -> Any:
        root = voice_path(config, name.strip(), exists=False)
        if (root / "mimetic.toml").exists():
            raise MimeticError(f"A voice called {name!r} already exists.", "Choose another name, or open it.")
        folders = [str(allowed_path(config, folder))] if folder.strip() else []
        ws = Workspace.open(root)
        vc = ws.load_config()
        chosen = base_model.strip() or config.base_model
        if chosen and chosen != "auto":  # "auto" is decided by the job, once the writing is read
            vc.train.base_model = chosen
        ws.save_config(vc)
        if folders:
            jobs.start(ws, "create", {"folders": folders, "base_model": chosen})
            return RedirectResponse(f"/voices/{name}/corpus", status_code=303)
        return RedirectResponse(f"/voices/{name}/corpus?upload=1", status_code=303)

    @app.post("/voices/{name}/upload")
    async def upload(name: str, request: Request, files: list[UploadFile] = File(...)) -> Any:
        ws = open_voice(name)
        dest = ws.root / "sources"
        dest.mkdir(exist_ok=True)
        saved = []
        for f in files:
            base = Path((f.filename or "").replace("\\", "/")).name
            if not base or base.startswith(".") or Path(base).suffix.lower() not in UPLOAD_SUFFIXES:
                raise MimeticError(f"{f.filename!r} is not a kind of file mimetic reads.",
                                   "Drop text, Markdown, HTML, PDF, Word, OpenDocument, RTF, EPUB, e-mail or zip files.")
            target = dest / base
            size = 0
            tmp = dest / f".{base}.part"
            with tmp.open("wb") as out:
                while chunk := await f.read(1 << 20):
                    size += len(chunk)
                    if size > MAX_UPLOAD_MB << 20:
                        out.close()
                        tmp.unlink(missing_ok=True)
                        raise MimeticError(f"{base} is larger than {MAX_UPLOAD_MB} MB.", "Split it, or put it in a folder and choose the folder.")
                    out.write(chunk)
            os.replace(tmp, target)
            os.chmod(target, 0o444)  # a copy the app only reads
            saved.append(base)
        return {"saved": saved, "folder": str(dest)}

    @app.post("/voices/{name}/ingest")
    def reingest(name: str, request: Request, base_model: str = Form(""), csrf: str = Form("")) -> Any:
        ws = open_voice(name)
        manifest_sources = ws.read_manifest().sources if ws.manifest_path.exists() else []
        folders = [s for s in manifest_sources if Path(s).exists()] or ([str(ws.root / "sources")] if (ws.root / "sources").is_dir() else [])
        if not folders:
            raise MimeticError("This voice has no writing yet.", "Drop files on the page, or create the voice from a folder.")
        jobs.start(ws, "create", {"folders": folders, "base_model": base_model.strip() or None})
        return RedirectResponse(f"/voices/{name}/corpus", status_code=303)

    # ---------------------------------------------------------------------------- corpus
    @app.get("/voices/{name}/corpus", response_class=HTMLResponse)
    def corpus(name: str, request: Request, upload: int = 0) -> Any:
        ws = open_voice(name)
        job = next(iter(jobs.all_jobs(ws, "create")), None)
        report = _corpus_report(ws)
        vc = ws.load_config()
        from mimetic.core.config import REDACTIONS

        return page(request, "corpus.html", voice=name, report=report, job=job, upload=upload, max_mb=MAX_UPLOAD_MB,
                    ingest=vc.ingest, redactions=REDACTIONS, tab="corpus")

    @app.post("/voices/{name}/names")
    def names(name: str, request: Request, person: str = Form(...), action: str = Form(...), alias: str = Form(""),
              csrf: str = Form("")) -> Any:
        ws = open_voice(name)
        with ws.lock("changed"):
            vc = ws.load_config()
            if action == "alias":
                if not alias.strip():
                    raise MimeticError("Give the name to use instead.", "Type it beside the name, then press Alias.")
                vc.ingest.aliases = {**vc.ingest.aliases, person: alias.strip()}
            elif action == "exclude":
                vc.ingest.exclude_names = sorted(set(vc.ingest.exclude_names) | {person})
            elif action == "keep":
                vc.ingest.exclude_names = [n for n in vc.ingest.exclude_names if n != person]
                vc.ingest.aliases = {k: v for k, v in vc.ingest.aliases.items() if k != person}
            else:
                raise MimeticError(f"Unknown action {action!r}.", "Use the buttons on the page.")
            ws.save_config(vc)
        return RedirectResponse(f"/voices/{name}/corpus#names", status_code=303)

    @app.post("/voices/{name}/redact")
    def redact(name: str, request: Request, kinds: list[str] = Form([]), csrf: str = Form("")) -> Any:
        from mimetic.core.config import REDACTIONS

        ws = open_voice(name)
        known = set(REDACTIONS)
        if set(kinds) - known:
            raise MimeticError("Unknown redaction.", f"Choose among {', '.join(sorted(known))}.")
        with ws.lock("changed"):
            vc = ws.load_config()
            vc.ingest.redact = sorted(kinds)
            ws.save_config(vc)
        return RedirectResponse(f"/voices/{name}/corpus#redact", status_code=303)

    # ---------------------------------------------------------------------------- train
    @app.get("/voices/{name}/train", response_class=HTMLResponse)
    def train_page(name: str, request: Request) -> Any:
        ws = open_voice(name)
        job = next(iter(jobs.all_jobs(ws, "train")), None)
        unfinished = _unfinished_runs(ws)
        return page(request, "train.html", voice=name, job=job, unfinished=unfinished, tab="train",
                    versions=_versions(ws), minutes=ws.load_config().train.time_budget_min or 15)

    @app.get("/api/voices/{name}/plan")
    def plan(name: str) -> Any:
        from mimetic.pipeline import choose_settings

        ws = open_voice(name)
        ws.data_meta()
        vc, rec = choose_settings(ws, save=False, always_recommend=True)
        return {"lines": rec.lines() if rec is not None else [], "base_model": vc.train.base_model}

    @app.post("/voices/{name}/train")
    def start_training(name: str, request: Request, minutes: float = Form(15.0), max_steps: str = Form(""),
                       csrf: str = Form("")) -> Any:
        ws = open_voice(name)
        ws.data_meta()
        if not 0 < minutes <= 24 * 60:
            raise MimeticError("The time budget must be between a minute and a day.", "Type the minutes of training.")
        jobs.start(ws, "train", {"minutes": minutes, "max_steps": int(max_steps) if max_steps.strip().isdigit() else None})
        return RedirectResponse(f"/voices/{name}/train", status_code=303)

    @app.post("/voices/{name}/resume")
    def resume_training(name: str, request: Request, run: str = Form(""), minutes: str = Form(""), csrf: str = Form("")) -> Any:
        ws = open_voice(name)
        run_dir = ws.run_dir(run or None, finished=False)
        jobs.start(ws, "resume", {"run": run_dir.name, "minutes": float(minutes) if minutes.strip() else None})
        return RedirectResponse(f"/voices/{name}/train", status_code=303)

    @app.post("/voices/{name}/stop")
    def stop_training(name: str, request: Request, csrf: str = Form("")) -> Any:
        jobs.stop_training(open_voice(name))
        return RedirectResponse(f"/voices/{name}/train", status_code=303)

    @app.post("/voices/{name}/publish")
    def publish(name: str, request: Request, version: str = Form(...), csrf: str = Form("")) -> Any:
        ws = open_voice(name)
        with ws.lock("published"):
            ws.publish(version)
        return RedirectResponse(f"/voices/{name}/train", status_code=303)

    @app.get("/api/voices/{name}/jobs/{job_id}/events")
    async def job_events(name: str, job_id: str, request: Request, start: int = 0) -> Any:
        """Server-sent events: the job's event stream from line ``start``, then its outcome."""
        ws = open_voice(name)
        jobs.load(ws, job_id)

        async def stream() -> Any:
            n = start
            while True:
                new = jobs.events(ws, job_id, n)
                for e in new:
                    yield f"id: {n}\nevent: stage\ndata: {json.dumps(e)}\n\n"
                    n += 1
                job = jobs.load(ws, job_id)
                if not job.running and not jobs.events(ws, job_id, n):
                    yield f"event: end\ndata: {json.dumps(_job_dict(job))}\n\n"
                    return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.3)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    @app.get("/api/voices/{name}/jobs/{job_id}")
    def job_status(name: str, job_id: str) -> Any:
        return _job_dict(jobs.load(open_voice(name), job_id))

    # ---------------------------------------------------------------------------- write
    @app.get("/voices/{name}/write", response_class=HTMLResponse)
    def write_page(name: str, request: Request) -> Any:
        from mimetic.voice.generate import run_format

        ws = open_voice(name)
        ws.run_dir()  # a clear page when there is no trained voice yet
        fmt = run_format(ws)
        modes = {"completion": ["continue"], "chat": ["chat"], "brief": ["write"], "mixed": ["write", "continue", "rewrite"]}[fmt]
        return page(request, "write.html", voice=name, gc=ws.load_config().generate, modes=modes, tab="write",
                    published=ws.published_run(), versions=_versions(ws))

    @app.post("/api/voices/{name}/write")
    def write_stream(name: str, request: Request, prompt: str = Form(...), mode: str = Form(""), temperature: float = Form(1.0),
                     min_p: float = Form(0.0), max_new_tokens: int = Form(200), seed: int = Form(0), version: str = Form(""),
                     csrf: str = Form("")) -> Any:
        """Server-sent events: base model then voice, streamed as they write; then both log ids."""
        from mimetic.voice.generate import compare

        ws = open_voice(name)
        run = ws.run_dir(version or None).name  # a version's name or run id; default the published one
        if not prompt.strip():
            raise MimeticError("Nothing to write from: the prompt is empty.", "Type an opening, a brief or a draft.")
        gc = cfg.replace(ws.load_config().generate, temperature=temperature, min_p=min_p,
                         max_new_tokens=max(1, min(max_new_tokens, 2048)), seed=seed)
        q: queue.Queue = queue.Queue()
        lock = writers.setdefault(name, threading.Lock())

        def work() -> None:
            try:
                with lock:  # one voice writes one text at a time; the model stays loaded between requests
                    result = compare(ws, [prompt], gc, mode=None if mode in ("", "chat") else mode,
                                     voice=_voice(ws, run), on_text=lambda i, model, chunk: q.put(("text", {"model": model, "text": chunk})))
                base, voice = result.pairs[0]
                q.put(("done", {"base": base.log_id, "voice": voice.log_id, "seed": base.seed}))
            except MimeticError as e:
                q.put(("error", {"error": e.message, "hint": e.hint}))
            except Exception as e:  # noqa: BLE001 - a sentence for the page
                q.put(("error", {"error": f"Something went wrong inside mimetic ({type(e).__name__}).", "hint": "Try again."}))

        threading.Thread(target=work, daemon=True).start()

        def stream() -> Any:
            while True:
                kind, data = q.get()
                yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"
                if kind in ("done", "error"):
                    return

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    voices_loaded: dict[tuple[str, str], Any] = {}

    def _voice(ws: Workspace, run: str) -> Any:
        from mimetic.models.engines import Voice

        key = (str(ws.root), run)
        if key not in voices_loaded:
            voices_loaded.clear()  # one voice in memory at a time
            voices_loaded[key] = Voice.load(ws, run)
        return voices_loaded[key]

    @app.post("/api/voices/{name}/mark")
    def mark(name: str, request: Request, id: int = Form(...), label: str = Form(...), over: str = Form(""),
             csrf: str = Form("")) -> Any:
        from mimetic.core.logdb import add_marks

        ws = open_voice(name)
        others = [int(x) for x in over.split(",") if x.strip().isdigit()]
        made = add_marks(ws.db_path, id, label, others)
        return {"marks": len(made), "label": label}

    # ---------------------------------------------------------------------------- evaluate, export
    @app.get("/voices/{name}/evaluate", response_class=HTMLResponse)
    def evaluate_page(name: str, request: Request) -> Any:
        ws = open_voice(name)
        run = ws.run_dir().name
        report = ws.runs_dir / run / "evaluation" / "report.html"
        return page(request, "evaluate.html", voice=name, run=run, tab="evaluate", report=report.exists(),
                    eval_job=next(iter(jobs.all_jobs(ws, "evaluate")), None),
                    export_job=next(iter(jobs.all_jobs(ws, "export")), None))

    @app.post("/voices/{name}/evaluate")
    def start_evaluation(name: str, request: Request, sample_words: int = Form(5000), csrf: str = Form("")) -> Any:
        ws = open_voice(name)
        jobs.start(ws, "evaluate", {"run": ws.run_dir().name, "settings": {"sample_words": max(200, sample_words)}})
        return RedirectResponse(f"/voices/{name}/evaluate", status_code=303)

    @app.get("/voices/{name}/report")
    def report(name: str) -> Any:
        ws = open_voice(name)
        path = ws.run_dir() / "evaluation" / "report.html"
        if not path.exists():
            raise MimeticError("This voice has not been evaluated yet.", "Press Evaluate.")
        return FileResponse(path, media_type="text/html")

    @app.post("/voices/{name}/export")
    def start_export(name: str, request: Request, formats: list[str] = Form(["adapter", "gguf", "ollama"]),
                     quantizations: list[str] = Form(["q4_k_m"]), csrf: str = Form("")) -> Any:
        ws = open_voice(name)
        jobs.start(ws, "export", {"run": ws.run_dir().name, "formats": formats, "quantizations": quantizations})
        return RedirectResponse(f"/voices/{name}/evaluate#export", status_code=303)

    return app


def _inside(config: AppConfig, p: Path) -> bool:
    try:
        r = p.resolve()
    except (OSError, RuntimeError):
        return False
    return any(r == root or r.is_relative_to(root) for root in config.allowed)


def _job_dict(job: jobs.Job) -> dict[str, Any]:
    return {"id": job.id, "kind": job.kind, "status": job.status, "message": job.message, "hint": job.hint,
            "result": job.result, "running": job.running}


def _versions(ws: Workspace) -> list[dict[str, Any]]:
    try:
        from mimetic.evaluation.versions import list_versions

        return [{"run": v.run, "label": v.label, "name": (v.names or [None])[0], "published": v.published, "nll_drop": v.held_out_nll_drop,
                 "attribution": v.attribution, "where": v.where, "steps": v.steps} for v in list_versions(ws)]
    except MimeticError:
        return []


def _unfinished_runs(ws: Workspace) -> list[str]:
    if not ws.runs_dir.is_dir():
        return []
    return sorted(p.name for p in ws.runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and not (p / "summary.json").exists() and (p / "checkpoint" / "state.pt").exists())


def _corpus_report(ws: Workspace) -> dict[str, Any] | None:
    """The ingest report as the Corpus page shows it: formats, words kept and removed by reason,
    unreadable files with their reasons, the names list."""
    if not ws.manifest_path.exists():
        return None
    m = ws.read_manifest()
    formats: dict[str, int] = {}
    removed: dict[str, int] = {}
    for f in m.files:
        if f.get("doc_id") and not f.get("skipped"):
            formats[f["format"]] = formats.get(f["format"], 0) + 1
        for reason, n in (f.get("words_removed") or {}).items():
            removed[reason] = removed.get(reason, 0) + n
    review = ws.corpus_dir / "review.json"
    if review.exists():
        try:
            for r in json.loads(review.read_text(encoding="utf-8")).get("removals", []):
                if r.get("what") == "document":
                    removed[r.get("reason", "removed")] = removed.get(r.get("reason", "removed"), 0) + int(r.get("words") or 0)
        except (OSError, ValueError):
            pass
    problems = [{"path": f["path"], "why": f.get("skipped")} for f in m.files if f.get("problem")]
    skipped = [{"path": f["path"], "why": f.get("skipped")} for f in m.files if f.get("skipped") and not f.get("problem")]
    names_path = ws.corpus_dir / "names.json"
    names = []
    if names_path.exists():
        try:
            data = json.loads(names_path.read_text(encoding="utf-8"))
            names = data.get("names", data) if isinstance(data, dict) else data
        except (OSError, ValueError):
            names = []
    vc = ws.load_config()
    return {"words": m.words, "documents": m.documents, "formats": formats, "removed": removed,
            "problems": problems, "skipped": skipped[:200], "skipped_count": len(skipped),
            "names": names[:50], "aliases": vc.ingest.aliases, "excluded": vc.ingest.exclude_names,
            "sources": m.sources, "report": (ws.corpus_dir / "report.html").exists()}


def serve_app(voices: Path, host: str = "127.0.0.1", port: int = 8765, allowed: list[Path] | None = None,
              token: str | None = None, open_browser: bool = True, base_model: str | None = None) -> None:
    """Run the app until Ctrl-C: on 127.0.0.1 by default; another ``host`` requires a token
    (one is made and printed when none is given).

    Raises:
        MimeticError: the port is taken.
    """
    import socket

    import uvicorn

    loopback = host in ("127.0.0.1", "localhost", "::1")
    if not loopback and not token:
        token = secrets.token_urlsafe(16)
    config = AppConfig(voices, allowed, None if loopback and not token else token,
                       hosts=("127.0.0.1", "localhost") + (() if loopback else (host,)), base_model=base_model)
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            raise MimeticError(f"Port {port} on {host} is taken.", "Start the app on another: mimetic app --port 8766") from None
    url = f"http://{'127.0.0.1' if loopback else host}:{port}/" + (f"?token={config.token}" if config.token else "")
    print(f"mimetic's desk: {url}  (Ctrl-C stops it; training runs go on)", flush=True)
    if open_browser:
        import webbrowser

        threading.Timer(1.0, lambda: webbrowser.open(url)).start()
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning")


__all__ = ["AppConfig", "create_app", "serve_app", "allowed_path", "voice_path", "voice_card", "MAX_UPLOAD_MB"]
