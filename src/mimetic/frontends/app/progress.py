"""Every job's progress, for every page: its event stream, its outcome, and dismissing a failed
job's card."""

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, StreamingResponse

from mimetic.frontends import jobs
from mimetic.frontends.app.deps import Desk, get_desk, job_dict

router = APIRouter()
PAGES = {"create": "corpus", "ingest": "corpus", "train": "train", "resume": "train", "evaluate": "evaluate", "export": "evaluate"}


@router.get("/api/voices/{name}/jobs/{job_id}/events")
async def job_events(name: str, job_id: str, request: Request, start: int = 0, desk: Desk = Depends(get_desk)) -> Any:
    """Server-sent events: the job's event stream from line ``start``, then its outcome."""
    ws = desk.open_voice(name)
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
                yield f"event: end\ndata: {json.dumps(job_dict(job))}\n\n"
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.3)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


@router.get("/api/voices/{name}/jobs/{job_id}")
def job_status(name: str, job_id: str, desk: Desk = Depends(get_desk)) -> Any:
    return job_dict(jobs.load(desk.open_voice(name), job_id))


@router.post("/voices/{name}/jobs/{job_id}/dismiss")
def dismiss(name: str, job_id: str, request: Request, csrf: str = Form(""), desk: Desk = Depends(get_desk)) -> Any:
    """The writer has read a finished job's card: it is not shown again."""
    job = jobs.dismiss(desk.open_voice(name), job_id)
    return RedirectResponse(f"/voices/{name}/{PAGES.get(job.kind, 'corpus')}", status_code=303)
