"""The Corpus page: dropped files, reading the writing again, the ingest report, names and
personal data."""

import json
import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse

from mimetic.core.workspace import Workspace
from mimetic.errors import MimeticError
from mimetic.frontends import jobs
from mimetic.frontends.app import security
from mimetic.frontends.app.deps import Desk, get_desk, latest_job
from mimetic.frontends.app.security import UPLOAD_SUFFIXES

router = APIRouter()


def sources_dir(ws: Workspace) -> Path:
    """Where files dropped on the desk are kept: the voice's ``sources/``."""
    return ws.root / "sources"


def writing_folders(ws: Workspace) -> list[str]:
    """What "Read my writing again" reads: the folders the voice was read from (those still on
    this machine) and the files dropped on the desk (``sources/``), each once."""
    folders = [s for s in (ws.read_manifest().sources if ws.manifest_path.exists() else []) if Path(s).exists()]
    dropped = sources_dir(ws)
    if dropped.is_dir() and any(not p.name.startswith(".") for p in dropped.iterdir()):
        seen = {Path(f).resolve() for f in folders}
        if dropped.resolve() not in seen:
            folders.append(str(dropped))
    return folders


@router.post("/voices/{name}/upload")
async def upload(name: str, request: Request, files: list[UploadFile] = File(...), desk: Desk = Depends(get_desk)) -> Any:
    ws = desk.open_voice(name)
    dest = sources_dir(ws)
    dest.mkdir(exist_ok=True)
    limit = security.MAX_UPLOAD_MB
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
                if size > limit << 20:
                    out.close()
                    tmp.unlink(missing_ok=True)
                    raise MimeticError(f"{base} is larger than {limit} MB.", "Split it, or put it in a folder and choose the folder.")
                out.write(chunk)
        os.replace(tmp, target)
        os.chmod(target, 0o444)  # a copy the app only reads
        saved.append(base)
    return {"saved": saved, "folder": str(dest)}


@router.post("/voices/{name}/ingest")
def reingest(name: str, request: Request, base_model: str = Form(""), csrf: str = Form(""), desk: Desk = Depends(get_desk)) -> Any:
    ws = desk.open_voice(name)
    folders = writing_folders(ws)
    if not folders:
        raise MimeticError("This voice has no writing yet.", "Drop files on the page, or create the voice from a folder.")
    # the folders still there and the dropped files, read afresh (replace), never outside the allowed roots
    jobs.start(ws, "create", {"folders": folders, "base_model": base_model.strip() or None, "replace": True,
                              "allowed": [*map(str, desk.config.allowed), str(sources_dir(ws))]})
    return RedirectResponse(f"/voices/{name}/corpus", status_code=303)


@router.get("/voices/{name}/corpus", response_class=HTMLResponse)
def corpus(name: str, request: Request, upload: int = 0, desk: Desk = Depends(get_desk)) -> Any:
    from mimetic.core.config import REDACTIONS

    ws = desk.open_voice(name)
    dropped = sources_dir(ws)
    waiting = sorted(p.name for p in dropped.iterdir() if not p.name.startswith(".")) if dropped.is_dir() else []
    return desk.page(request, "corpus.html", voice=name, report=corpus_report(ws), job=latest_job(ws, "create"), upload=upload,
                     max_mb=security.MAX_UPLOAD_MB, ingest=ws.load_config().ingest, redactions=REDACTIONS, tab="corpus",
                     dropped=waiting)


@router.post("/voices/{name}/names")
def names(name: str, request: Request, person: str = Form(...), action: str = Form(...), alias: str = Form(""),
          csrf: str = Form(""), desk: Desk = Depends(get_desk)) -> Any:
    ws = desk.open_voice(name)
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


@router.post("/voices/{name}/redact")
def redact(name: str, request: Request, kinds: list[str] = Form([]), csrf: str = Form(""), desk: Desk = Depends(get_desk)) -> Any:
    from mimetic.core.config import REDACTIONS

    ws = desk.open_voice(name)
    known = set(REDACTIONS)
    if set(kinds) - known:
        raise MimeticError("Unknown redaction.", f"Choose among {', '.join(sorted(known))}.")
    with ws.lock("changed"):
        vc = ws.load_config()
        vc.ingest.redact = sorted(kinds)
        ws.save_config(vc)
    return RedirectResponse(f"/voices/{name}/corpus#redact", status_code=303)


def _removed(ws: Workspace, files: list[dict[str, Any]]) -> dict[str, int]:
    """Words taken out, by reason: per file, and whole documents (``review.json``)."""
    removed: dict[str, int] = {}
    for f in files:
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
    return removed


def _names(ws: Workspace) -> list[dict[str, Any]]:
    path = ws.corpus_dir / "names.json"
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data.get("names", data) if isinstance(data, dict) else data
    except (OSError, ValueError):
        return []


def corpus_report(ws: Workspace) -> dict[str, Any] | None:
    """The ingest report as the Corpus page shows it: formats, words kept and removed by reason,
    unreadable files with their reasons, the names list."""
    if not ws.manifest_path.exists():
        return None
    m = ws.read_manifest()
    formats: dict[str, int] = {}
    for f in m.files:
        if f.get("doc_id") and not f.get("skipped"):
            formats[f["format"]] = formats.get(f["format"], 0) + 1
    problems = [{"path": f["path"], "why": f.get("skipped")} for f in m.files if f.get("problem")]
    skipped = [{"path": f["path"], "why": f.get("skipped")} for f in m.files if f.get("skipped") and not f.get("problem")]
    vc = ws.load_config()
    from mimetic.corpus.sizes import size_verdict

    return {"words": m.words, "size": size_verdict(m.words), "documents": m.documents, "formats": formats, "removed": _removed(ws, m.files),
            "problems": problems, "skipped": skipped[:200], "skipped_count": len(skipped),
            "names": _names(ws)[:50], "aliases": vc.ingest.aliases, "excluded": vc.ingest.exclude_names,
            "sources": m.sources, "report": (ws.corpus_dir / "report.html").exists()}
