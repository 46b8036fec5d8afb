"""The Voices page: every voice at a glance, the folder picker, a new voice."""

from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from mimetic.core.workspace import Workspace
from mimetic.errors import MimeticError
from mimetic.frontends import jobs
from mimetic.frontends.app import plain, security
from mimetic.frontends.app.deps import Desk, get_desk, versions
from mimetic.frontends.app.security import VOICE_NAME, allowed_path, inside, voice_path

router = APIRouter()


def voice_card(ws: Workspace) -> dict[str, Any]:
    """What the Voices page shows of one voice: corpus size, published version, its held-out
    NLL change and attribution, a plain verdict, and whether something is running."""
    card: dict[str, Any] = {"name": ws.root.name, "words": None, "documents": None, "run": None, "version": None,
                            "nll_drop": None, "attribution": None, "busy": None}
    try:
        m = ws.read_manifest()
        card["words"], card["documents"] = m.words, m.documents
    except MimeticError:
        pass
    published = next((v for v in versions(ws) if v["published"]), None)
    if published:
        card.update(run=published["run"], version=published["name"], nll_drop=published["nll_drop"],
                    attribution=published["attribution"])
    card["verdict"] = plain.voice_verdict(card["nll_drop"], card["attribution"])
    running = [j for j in jobs.all_jobs(ws) if j.running]
    card["busy"] = running[0].kind if running else None
    return card


@router.get("/", response_class=HTMLResponse)
def home(request: Request, desk: Desk = Depends(get_desk)) -> Any:
    config = desk.config
    cards = [voice_card(Workspace.open(d, create=False)) for d in sorted(config.voices.iterdir())
             if (d / "mimetic.toml").exists() and VOICE_NAME.fullmatch(d.name)]
    trained = [c for c in cards if c["nll_drop"] is not None]
    closer = [c for c in trained if c["nll_drop"] > 0.005]
    summary = (f"{len(closer)} of your {len(trained)} trained voice{'s' if len(trained) != 1 else ''} "
               f"{'writes' if len(closer) == 1 else 'write'} closer to you than the base model."
               if trained else "No voice is trained yet." if cards else "")
    return desk.page(request, "voices.html", voices=cards, summary=summary, roots=[str(r) for r in config.allowed],
                     base_model=config.base_model or "", max_mb=security.MAX_UPLOAD_MB)


@router.get("/api/folders")
def folders(path: str = "", desk: Desk = Depends(get_desk)) -> Any:
    """Sub-folders of ``path`` (default: the allowed roots), for the folder picker: ``folders``
    their full paths, ``names`` what the picker shows (a folder's own name)."""
    config = desk.config
    if not path:
        roots = [str(r) for r in config.allowed]
        return {"path": "", "parent": None, "folders": roots, "names": roots}
    p = allowed_path(config, path)
    if not p.is_dir():
        raise MimeticError(f"{path} is not a folder.", "Choose a folder.")
    subs = sorted(c for c in p.iterdir() if c.is_dir() and not c.name.startswith(".") and inside(config, c))[:500]
    parent = str(p.parent) if any(p != r and p.is_relative_to(r) for r in config.allowed) else ""
    return {"path": str(p), "name": p.name, "parent": parent, "folders": [str(c) for c in subs], "names": [c.name for c in subs]}


@router.post("/voices")
def create_voice(request: Request, name: str = Form(...), folder: str = Form(""), base_model: str = Form(""),
                 csrf: str = Form(""), desk: Desk = Depends(get_desk)) -> Any:
    config = desk.config
    root = voice_path(config, name.strip(), exists=False)
    if (root / "mimetic.toml").exists():
        raise MimeticError(f"A voice called {name!r} already exists.", "Choose another name, or open it.")
    chosen_folders = [str(allowed_path(config, folder))] if folder.strip() else []
    ws = Workspace.open(root)
    vc = ws.load_config()
    chosen = base_model.strip() or config.base_model
    if chosen and chosen != "auto":  # "auto" is decided by the job, once the writing is read
        from mimetic.models.loading import check_model

        check_model(chosen)  # a name that cannot load here is refused now, never saved
        vc.train.base_model = chosen
    ws.save_config(vc)
    if chosen_folders:
        jobs.start(ws, "create", {"folders": chosen_folders, "base_model": chosen, "allowed": [str(r) for r in config.allowed]})
        return RedirectResponse(f"/voices/{name}/corpus", status_code=303)
    return RedirectResponse(f"/voices/{name}/corpus?upload=1", status_code=303)
