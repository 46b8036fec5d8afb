"""What every page of the desk shares: the app's state (:class:`Desk`), the page renderer, the
voice opener, the versions list, and the error pages (each with a button to the page that fixes
it: :func:`mimetic.frontends.app.plain.fix`)."""

import secrets
import threading
from pathlib import Path
from typing import Any

from fastapi import Request

from mimetic.core.workspace import Workspace
from mimetic.errors import MimeticError
from mimetic.frontends import jobs
from mimetic.frontends.app import plain
from mimetic.frontends.app.security import REFUSED, AppConfig, Refused, voice_path

WEB = Path(__file__).parent


class Desk:
    """One app's state: its settings, its templates, one writing lock per voice and the one
    voice kept loaded between writes."""

    def __init__(self, config: AppConfig):
        from fastapi.templating import Jinja2Templates

        self.config = config
        self.templates = Jinja2Templates(directory=str(WEB / "templates"))
        self.templates.env.globals["fix"] = plain.fix
        self.writers: dict[str, threading.Lock] = {}
        self.loaded: dict[tuple[str, str], Any] = {}

    def page(self, request: Any, name: str, status: int = 200, **ctx: Any) -> Any:
        """The template ``name`` as a page, with the CSRF token every form sends back."""
        return self.templates.TemplateResponse(request, name, {"csrf": self.config.csrf, **ctx}, status_code=status)

    def open_voice(self, name: str) -> Workspace:
        """The voice ``name``, or a clear error (see :func:`voice_path`)."""
        return Workspace.open(voice_path(self.config, name), create=False)

    def voice(self, ws: Workspace, run: str) -> Any:
        """The loaded engine of ``run`` (one in memory at a time), opened as every stage opens one
        (:func:`mimetic.models.engines.open_voice`: llama.cpp with the run's adapter, else transformers)."""
        from mimetic.models.engines import open_voice

        key = (str(ws.root), run)
        if key not in self.loaded:
            self.loaded.clear()
            self.loaded[key] = open_voice(ws, run, engine=ws.load_config().generate.engine, on_event=lambda event: None)
        return self.loaded[key]


async def csrf_guard(request: Request) -> None:
    """A dependency of every route: a request that changes something carries the page's token
    (the form field ``csrf`` or the header ``X-CSRF-Token``); FastAPI caches the parsed form,
    so the endpoint reads it again for free.

    Raises:
        Refused: no token, or another one.
    """
    if request.method in ("GET", "HEAD"):
        return
    config: AppConfig = request.app.state.desk.config
    sent = request.headers.get("x-csrf-token") or ""
    if not sent and request.headers.get("content-type", "").startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        sent = str((await request.form()).get("csrf") or "")
    if not secrets.compare_digest(sent, config.csrf):
        raise Refused(REFUSED)


def get_desk(request: Request) -> Desk:
    """The dependency that hands a route its app's :class:`Desk`."""
    return request.app.state.desk


def job_dict(job: jobs.Job) -> dict[str, Any]:
    return {"id": job.id, "kind": job.kind, "status": job.status, "message": job.message, "hint": job.hint,
            "result": job.result, "running": job.running}


def latest_job(ws: Workspace, kind: str) -> jobs.Job | None:
    """The newest job of ``kind``, unless it failed and the writer has dismissed its card."""
    job = next(iter(jobs.all_jobs(ws, kind)), None)
    return None if job is not None and job.dismissed and not job.running else job


def versions(ws: Workspace) -> list[dict[str, Any]]:
    """The voice's versions as the pages show them (none when they cannot be read)."""
    try:
        from mimetic.evaluation.versions import list_versions

        return [{"run": v.run, "label": v.label, "name": (v.names or [None])[0], "published": v.published,
                 "nll_drop": v.held_out_nll_drop, "attribution": v.attribution, "where": v.where, "steps": v.steps}
                for v in list_versions(ws)]
    except MimeticError:
        return []


def _voice_of(request: Any) -> str | None:
    parts = request.url.path.strip("/").split("/")
    if len(parts) >= 2 and parts[0] == "voices" or len(parts) >= 3 and parts[:2] == ["api", "voices"]:
        name = parts[1] if parts[0] == "voices" else parts[2]
        desk: Desk = request.app.state.desk
        try:
            if (voice_path(desk.config, name) / "mimetic.toml").exists():
                return name
        except MimeticError:
            return None
    return None


def install_error_pages(app: Any) -> None:
    """A :class:`MimeticError` as a page (or JSON for the API and the page's scripts) with a
    button to the page that fixes it; anything else as a sentence, never a traceback."""
    from fastapi.responses import JSONResponse

    @app.exception_handler(MimeticError)
    async def mimetic_error(request: Any, e: MimeticError) -> Any:
        status = 403 if isinstance(e, Refused) else 400
        said = plain.fix(e.message, e.hint, _voice_of(request))
        if request.url.path.startswith("/api/") or request.headers.get("x-csrf-token") is not None:
            return JSONResponse({"error": said["message"], "hint": said["hint"], "action": said["action"]}, status_code=status)
        return request.app.state.desk.page(request, "error.html", status, message=said["message"], hint=said["hint"],
                                           action=said["action"])

    @app.exception_handler(Exception)
    async def unexpected(request: Any, e: Exception) -> Any:
        message = f"Something went wrong inside mimetic ({type(e).__name__})."
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message, "hint": "Try again; if it happens again, please report it."}, status_code=500)
        return request.app.state.desk.page(request, "error.html", 500, message=message,
                                           hint="Try again; if it happens again, please report it.", action=None)
