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

The package: :mod:`.security` (the guards above), :mod:`.deps` (the state every page shares, the
error pages), :mod:`.plain` (verdicts and fixes in a writer's words), and one router per page:
:mod:`.voices`, :mod:`.corpus`, :mod:`.train`, :mod:`.write`, :mod:`.evaluate`, with
:mod:`.progress` for every job's event stream. :func:`create_app` only assembles them.
"""

import secrets
import threading
from pathlib import Path
from typing import Any

from mimetic.errors import MimeticError
from mimetic.frontends.app.security import (
    MAX_UPLOAD_MB,
    REFUSED,
    AppConfig,
    Refused,
    allowed_path,
    voice_path,
)


def create_app(config: AppConfig) -> Any:
    """The FastAPI application (see the module docstring for what it guards): the guards, the
    error pages, the static files and each page's router."""
    from fastapi import Depends, FastAPI
    from fastapi.staticfiles import StaticFiles

    from mimetic.frontends.app import corpus, evaluate, progress, train, voices, write
    from mimetic.frontends.app.deps import WEB, Desk, csrf_guard, install_error_pages
    from mimetic.frontends.app.security import install_guard

    config.voices.mkdir(parents=True, exist_ok=True)
    app = FastAPI(title="mimetic", docs_url=None, redoc_url=None, openapi_url=None, dependencies=[Depends(csrf_guard)])
    app.state.desk = Desk(config)
    app.mount("/static", StaticFiles(directory=str(WEB / "static")), name="static")
    install_guard(app, config)
    install_error_pages(app)
    for page in (voices, corpus, train, progress, write, evaluate):
        app.include_router(page.router)
    return app


def voice_card(ws: Any) -> dict[str, Any]:
    """What the Voices page shows of one voice (:func:`mimetic.frontends.app.voices.voice_card`)."""
    from mimetic.frontends.app.voices import voice_card as card

    return card(ws)


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


__all__ = ["AppConfig", "create_app", "serve_app", "allowed_path", "voice_path", "voice_card", "MAX_UPLOAD_MB",
           "Refused", "REFUSED"]
