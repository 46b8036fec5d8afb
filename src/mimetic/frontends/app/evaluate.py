"""The Evaluate & export page: a plain verdict first, the evaluation job, the report, exports."""

import json
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from mimetic.core.workspace import Workspace
from mimetic.errors import MimeticError
from mimetic.frontends import jobs
from mimetic.frontends.app import plain
from mimetic.frontends.app.deps import Desk, get_desk, latest_job

router = APIRouter()


def verdict(ws: Workspace, run: str) -> str | None:
    """The evaluation page's first sentence, from the run's ``evaluation/metrics.json`` (``None``
    when the run has not been evaluated)."""
    path = ws.runs_dir / run / "evaluation" / "metrics.json"
    try:
        return plain.evaluation_verdict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


@router.get("/voices/{name}/evaluate", response_class=HTMLResponse)
def evaluate_page(name: str, request: Request, desk: Desk = Depends(get_desk)) -> Any:
    ws = desk.open_voice(name)
    run = ws.run_dir().name
    report = ws.runs_dir / run / "evaluation" / "report.html"
    return desk.page(request, "evaluate.html", voice=name, run=run, tab="evaluate", report=report.exists(),
                     verdict=verdict(ws, run), eval_job=latest_job(ws, "evaluate"), export_job=latest_job(ws, "export"))


@router.post("/voices/{name}/evaluate")
def start_evaluation(name: str, request: Request, sample_words: int = Form(5000), csrf: str = Form(""),
                     desk: Desk = Depends(get_desk)) -> Any:
    ws = desk.open_voice(name)
    jobs.start(ws, "evaluate", {"run": ws.run_dir().name, "settings": {"sample_words": max(200, sample_words)}})
    return RedirectResponse(f"/voices/{name}/evaluate", status_code=303)


@router.get("/voices/{name}/report")
def report(name: str, desk: Desk = Depends(get_desk)) -> Any:
    ws = desk.open_voice(name)
    path = ws.run_dir() / "evaluation" / "report.html"
    if not path.exists():
        raise MimeticError("This voice has not been evaluated yet.", "Press Evaluate on the Evaluate page.")
    return FileResponse(path, media_type="text/html")


@router.post("/voices/{name}/export")
def start_export(name: str, request: Request, formats: list[str] = Form(["adapter", "gguf", "ollama"]),
                 quantizations: list[str] = Form(["q4_k_m"]), csrf: str = Form(""), desk: Desk = Depends(get_desk)) -> Any:
    ws = desk.open_voice(name)
    jobs.start(ws, "export", {"run": ws.run_dir().name, "formats": formats, "quantizations": quantizations})
    return RedirectResponse(f"/voices/{name}/evaluate#export", status_code=303)
