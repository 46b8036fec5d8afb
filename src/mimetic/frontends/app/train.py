"""The Train page: the plan, a run with live progress, stop and resume, versions and publishing."""

import json
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from mimetic.core.workspace import Workspace
from mimetic.errors import MimeticError
from mimetic.frontends import jobs
from mimetic.frontends.app import plain
from mimetic.frontends.app.deps import Desk, get_desk, latest_job, versions

router = APIRouter()


def unfinished_runs(ws: Workspace) -> list[str]:
    """Runs with a checkpoint and no summary: stopped or killed, resumable."""
    if not ws.runs_dir.is_dir():
        return []
    return sorted(p.name for p in ws.runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and not (p / "summary.json").exists() and (p / "checkpoint" / "state.pt").exists())


def curve_so_far(ws: Workspace, job: jobs.Job | None) -> list[dict[str, Any]]:
    """The metric lines a resumed run had before this job (its ``metrics.jsonl``), so that its
    curve starts where the run did, not at the step it resumed from."""
    if job is None or job.kind != "resume" or not job.args.get("run"):
        return []
    path = ws.runs_dir / str(job.args["run"]) / "metrics.jsonl"
    out = []
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            v = {k: d[k] for k in ("train_loss", "held_out_nll") if isinstance(d.get(k), (int, float))}
            if v and isinstance(d.get("step"), int):
                out.append({"step": d["step"], "values": v})
    except (OSError, ValueError):
        return []
    return out[-2000:]


@router.get("/voices/{name}/train", response_class=HTMLResponse)
def train_page(name: str, request: Request, desk: Desk = Depends(get_desk)) -> Any:
    ws = desk.open_voice(name)
    job = latest_job(ws, "train")
    verdict = None
    if job is not None and job.status == "finished" and job.result.get("base_nll"):
        verdict = plain.nll_verdict(1 - job.result["best_nll"] / job.result["base_nll"])
    known = versions(ws)
    published = next((v for v in known if v["published"]), None)
    return desk.page(request, "train.html", voice=name, job=job, unfinished=unfinished_runs(ws), tab="train",
                     versions=known, time_budget_min=ws.load_config().train.time_budget_min or 15, verdict=verdict,
                     versions_verdict=plain.nll_verdict(published["nll_drop"]) if published else "No version is published yet.",
                     history=curve_so_far(ws, job if job is not None and job.running else None))


@router.get("/api/voices/{name}/plan")
def plan(name: str, desk: Desk = Depends(get_desk)) -> Any:
    from mimetic.pipeline import choose_settings

    ws = desk.open_voice(name)
    ws.data_meta()
    vc, rec = choose_settings(ws, save=False, always_recommend=True)
    return {"lines": rec.lines() if rec is not None else [], "base_model": vc.train.base_model}


@router.post("/voices/{name}/train")
def start_training(name: str, request: Request, time_budget_min: float = Form(15.0), max_steps: str = Form(""),
                   csrf: str = Form(""), desk: Desk = Depends(get_desk)) -> Any:
    ws = desk.open_voice(name)
    ws.data_meta()
    if not 0 < time_budget_min <= 24 * 60:
        raise MimeticError("The time budget must be between a minute and a day.", "Type the minutes of training.")
    jobs.start(ws, "train", {"time_budget_min": time_budget_min, "max_steps": int(max_steps) if max_steps.strip().isdigit() else None})
    return RedirectResponse(f"/voices/{name}/train", status_code=303)


@router.post("/voices/{name}/resume")
def resume_training(name: str, request: Request, run: str = Form(""), time_budget_min: str = Form(""), csrf: str = Form(""),
                    desk: Desk = Depends(get_desk)) -> Any:
    ws = desk.open_voice(name)
    run_dir = ws.run_dir(run or None, finished=False)
    jobs.start(ws, "resume", {"run": run_dir.name, "time_budget_min": float(time_budget_min) if time_budget_min.strip() else None})
    return RedirectResponse(f"/voices/{name}/train", status_code=303)


@router.post("/voices/{name}/stop")
def stop_training(name: str, request: Request, csrf: str = Form(""), desk: Desk = Depends(get_desk)) -> Any:
    jobs.stop_training(desk.open_voice(name))
    return RedirectResponse(f"/voices/{name}/train", status_code=303)


@router.post("/voices/{name}/publish")
def publish(name: str, request: Request, version: str = Form(...), csrf: str = Form(""), desk: Desk = Depends(get_desk)) -> Any:
    ws = desk.open_voice(name)
    with ws.lock("published"):
        ws.publish(version)
    return RedirectResponse(f"/voices/{name}/train", status_code=303)
