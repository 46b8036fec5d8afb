"""What the desk guards: its address, its token, its own origin and page (CSRF), and the paths
it may read (see the package docstring). No FastAPI import at module level: importing the app
package stays cheap for the CLI."""

import re
import secrets
from pathlib import Path
from typing import Any

from mimetic.errors import MimeticError

MAX_UPLOAD_MB = 50
VOICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}")
UPLOAD_SUFFIXES = {".txt", ".md", ".markdown", ".gmi", ".html", ".htm", ".pdf", ".docx", ".odt", ".rtf", ".epub", ".eml",
                   ".mbox", ".json", ".csv", ".zip", ".tex", ".org", ".rst"}
REFUSED = "Refused: this request did not come from mimetic's own page."
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"


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


def inside(config: AppConfig, p: Path) -> bool:
    """Whether ``p``, resolved, lies inside an allowed root (no error: for listings)."""
    try:
        r = p.resolve()
    except (OSError, RuntimeError):
        return False
    return any(r == root or r.is_relative_to(root) for root in config.allowed)


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


def _host(value: str) -> str:
    return value.rsplit(":", 1)[0].strip("[]")


def install_guard(app: Any, config: AppConfig) -> None:
    """The middleware in front of every request: its ``Host`` (DNS rebinding), the token when
    serving beyond this machine, the origin of what changes something; the headers that keep
    the pages out of frames and scripts from elsewhere."""
    from fastapi.responses import HTMLResponse

    @app.middleware("http")
    async def guard(request: Any, call_next: Any) -> Any:
        if _host(request.headers.get("host") or "") not in config.hosts:
            return HTMLResponse("This app answers only on its own address.", status_code=421)
        if config.token is not None:
            given = request.query_params.get("token") or request.cookies.get("mimetic_token") or \
                request.headers.get("authorization", "").removeprefix("Bearer ")
            if not secrets.compare_digest(given or "", config.token):
                return HTMLResponse("This app needs its token: open the address it printed, with ?token=…", status_code=401)
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("origin") or request.headers.get("referer") or ""
            if origin and _host(re.sub(r"^[a-z]+://", "", origin).split("/")[0]) not in config.hosts:
                return HTMLResponse(REFUSED, status_code=403)
        response = await call_next(request)
        if config.token is not None and request.query_params.get("token"):
            response.set_cookie("mimetic_token", config.token, httponly=True, samesite="strict")
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = CSP
        response.headers["Referrer-Policy"] = "same-origin"  # forms then send their Origin (no-referrer makes it "null")
        return response
