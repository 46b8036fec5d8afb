"""The Write page: base model and voice side by side, streamed, with the writer's marks."""

import json
import queue
import threading
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from mimetic.core import config as cfg
from mimetic.errors import MimeticError
from mimetic.frontends.app.deps import Desk, get_desk, versions

router = APIRouter()


@router.get("/voices/{name}/write", response_class=HTMLResponse)
def write_page(name: str, request: Request, desk: Desk = Depends(get_desk)) -> Any:
    from mimetic.voice.generate import run_format

    ws = desk.open_voice(name)
    ws.run_dir()  # a clear page when there is no trained voice yet
    fmt = run_format(ws)
    modes = {"completion": ["continue"], "chat": ["chat"], "brief": ["write"], "mixed": ["write", "continue", "rewrite"]}[fmt]
    return desk.page(request, "write.html", voice=name, gc=ws.load_config().generate, modes=modes, tab="write",
                     published=ws.published_run(), versions=versions(ws))


@router.post("/api/voices/{name}/write")
def write_stream(name: str, request: Request, prompt: str = Form(...), mode: str = Form(""), temperature: float = Form(1.0),
                 min_p: float = Form(0.0), max_new_tokens: int = Form(200), seed: int = Form(0), version: str = Form(""),
                 csrf: str = Form(""), desk: Desk = Depends(get_desk)) -> Any:
    """Server-sent events: base model then voice, streamed as they write (each ``text`` event
    carries the tokens written so far of the ``total`` asked for, for the progress bar); then
    both log ids."""
    from mimetic.voice.generate import compare

    ws = desk.open_voice(name)
    run = ws.run_dir(version or None).name  # a version's name or run id; default the published one
    if not prompt.strip():
        raise MimeticError("Nothing to write from: the prompt is empty.", "Type an opening, a brief or a draft.")
    gc = cfg.replace(ws.load_config().generate, temperature=temperature, min_p=min_p,
                     max_new_tokens=max(1, min(max_new_tokens, 2048)), seed=seed)
    q: queue.Queue = queue.Queue()
    lock = desk.writers.setdefault(name, threading.Lock())
    written = {"base": 0, "voice": 0}
    tokenizer: list[Any] = []

    def on_text(i: int, model: str, chunk: str) -> None:
        n = len(tokenizer[0].encode(chunk, add_special_tokens=False)) if tokenizer else 1
        written[model] = min(gc.max_new_tokens, written.get(model, 0) + max(1, n))
        q.put(("text", {"model": model, "text": chunk, "written": written[model], "total": gc.max_new_tokens}))

    def work() -> None:
        try:
            q.put(("started", {"total": 2 * gc.max_new_tokens, "loading": (str(ws.root), run) not in desk.loaded}))
            with lock:  # one voice writes one text at a time; the model stays loaded between requests
                loaded = desk.voice(ws, run)
                tokenizer[:] = [t for t in [getattr(loaded, "tokenizer", None)] if hasattr(t, "encode")]
                result = compare(ws, [prompt], gc, mode=None if mode in ("", "chat") else mode, voice=loaded, on_text=on_text)
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


@router.post("/api/voices/{name}/mark")
def mark(name: str, request: Request, id: int = Form(...), label: str = Form(...), over: str = Form(""),
         csrf: str = Form(""), desk: Desk = Depends(get_desk)) -> Any:
    from mimetic.core.logdb import add_marks

    ws = desk.open_voice(name)
    others = [int(x) for x in over.split(",") if x.strip().isdigit()]
    made = add_marks(ws.db_path, id, label, others)
    return {"marks": len(made), "label": label}
