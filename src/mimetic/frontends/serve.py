"""Serve voices: an OpenAI-compatible HTTP API on the writer's machine.

``mimetic serve`` makes every exported voice in a folder of voices available to the tools a
writer already uses (editors, note apps, chat front ends, the official ``openai`` clients) at
``http://127.0.0.1:8000/v1``:

* ``GET /v1/models``: each voice by its folder name (its published version), each exported run
  as ``<voice>@<run id>`` and ``<voice>@<version name>``, and the base model the voices were
  trained from.
* ``POST /v1/chat/completions`` and ``POST /v1/completions``, streaming or not, with the
  OpenAI API's sampling parameters (``temperature``, ``top_p``, ``max_tokens`` /
  ``max_completion_tokens``, ``stop``, ``seed``, ``n``, ``presence_penalty``,
  ``frequency_penalty``) and llama.cpp's ``min_p`` and ``repeat_penalty`` (or
  ``repetition_penalty``); what a request leaves out comes from the voice's ``[generate]``
  settings, so a voice samples as ``mimetic write`` does. Like OpenAI's API, the server refuses
  (400, naming it) a parameter it does not know, and one a voice cannot honour (``tools``,
  ``response_format`` other than text, ``logprobs``…: :data:`UNSUPPORTED`); parameters that
  change nothing in the text (``user``, ``store``, ``metadata``…: :data:`IGNORED`) are accepted.

Each voice runs in llama.cpp (llama-cpp-python's ``Llama``) on the smallest GGUF of its export
(``mimetic export``), the fastest engine on a CPU; one voice answers one request at a time, and
several voices answer side by side. The published voices are loaded before the server listens
(``max_loaded`` of them at most), so the first request is answered at once; another run or
voice is loaded on first use, and kept (at most ``max_loaded``; the least recently used idle
one is closed first).

Prompts are built as the voice was trained (:func:`mimetic.models.engines.prompt_ids`): a chat voice
gets its chat template with all the request's messages and, when the request has no system
message, the voice's system prompt (:func:`mimetic.text.identity.voice_system_prompt`, which keeps a
small voice from taking names in the writing as its own); a completion voice, trained on plain
prose, continues the text of the last user message (chat) or the prompt (completions). A voice
trained with briefs (``brief``, ``mixed``) reads a chat message as a brief (``Write:`` is put
before it unless it starts with a mode's marker, :data:`mimetic.corpus.briefs.MARKERS`) and, on
``/v1/completions``, continues the prompt (``mixed``) or writes on it as a brief (``brief``).

Every generation is logged in the voice's ``mimetic.db`` as ``write`` logs it (command ``serve``).
The server binds to 127.0.0.1; another interface needs ``host`` and an API key, which clients
send as ``Authorization: Bearer <key>`` (the OpenAI clients' ``api_key``).

The API follows OpenAI's reference (https://platform.openai.com/docs/api-reference/chat) and
its streaming format (server-sent events, ``data: {chunk}`` lines ending with ``data: [DONE]``).
"""

from __future__ import annotations

import collections
import ipaddress
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from fastapi import Request  # at module level: FastAPI reads the routes' annotations from this module's names

from mimetic.corpus.briefs import MARKERS, default_mode, request
from mimetic.core.config import GenerateConfig, VoiceConfig
from mimetic.models.engines import load_llama, prompt_ids
from mimetic.models.hardware import usable_cpus
from mimetic.errors import MimeticError
from mimetic.text.identity import voice_system_prompt
from mimetic.core.workspace import Workspace

CONFIG_FILE = "mimetic.toml"


@dataclass
class ServeConfig:
    """Settings for ``mimetic serve``.

    Attributes:
        host: interface to listen on; anything but a loopback address needs ``api_key``.
        port: TCP port (0: a free one, chosen by the system).
        api_key: when set, every request must send ``Authorization: Bearer <api_key>``.
        max_loaded: voices kept in memory at once (a 135M-parameter voice in q8_0 takes about
            200 MB; a 3B one in q4_k_m about 2 GB).
        threads: llama.cpp threads per voice (default: every CPU core).
        context: llama.cpp context length in tokens (prompt and answer together).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_loaded: int = 4
    threads: int | None = None
    context: int = 4096

    def __post_init__(self) -> None:
        if not _is_loopback(self.host) and not self.api_key:
            raise MimeticError(
                f"Serving on {self.host} would let other machines use your voices without a key.",
                "Give one with --api-key (or MIMETIC_API_KEY), or leave --host out to serve on this machine only.",
            )
        if self.max_loaded < 1:
            raise MimeticError("--max-loaded must be at least 1.", "Use --max-loaded 1 or more.")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServedModel:
    """One model the server offers: a voice's exported run, or a base model.

    Attributes:
        id: the name clients send as ``model``: ``<voice>``, ``<voice>@<run id>``, ``<voice>@<version name>``
            or the base model's name.
        kind: ``voice`` or ``base``.
        gguf: the GGUF file llama.cpp runs.
        base_model: the base model's name (its tokenizer builds the prompts).
        format: ``completion``, ``chat``, ``brief`` or ``mixed``, as the voice was trained.
        system_prompt: used when a chat request has no system message.
        generate: the voice's ``[generate]`` settings (defaults of a request).
        workspace: the voice's folder (its ``mimetic.db`` logs the generations); ``None`` for a base model.
        run: the run id (voices only).
    """

    id: str
    kind: str
    gguf: Path
    base_model: str
    format: str
    system_prompt: str = ""
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    workspace: Path | None = None
    run: str | None = None
    created: int = 0


def _workspaces(paths: list[Path]) -> list[Path]:
    found = []
    for p in paths:
        p = Path(p).expanduser()
        if (p / CONFIG_FILE).exists():
            found.append(p)
        elif p.is_dir():
            found += sorted(c for c in p.iterdir() if (c / CONFIG_FILE).exists())
        else:
            raise MimeticError(f"{p} is not a folder.", "Give a voice's folder, or a folder of voices (such as voices/).")
    return found


def find_models(paths: list[Path]) -> tuple[list[ServedModel], list[str]]:
    """The models a server over ``paths`` offers, and notes on voices it cannot offer.

    Args:
        paths: voice folders (with ``mimetic.toml``) or folders of voices (their sub-folders).

    Returns:
        ``(models, notes)``: per voice, its published version as ``<voice>`` (or, when that one
        has no export, its latest exported run), every exported run as ``<voice>@<run id>`` and
        as ``<voice>@<version name>`` (the smallest ``voice-*.gguf`` of ``exports/<run id>/``);
        then each base model once, as its name, where a GGUF of it is at hand (the embedded
        model's own file, or a ``base-f16.gguf`` an export left). ``notes`` name the voices
        without an export, with the command that makes one.

    Raises:
        MimeticError: a path is not a folder.
    """
    from mimetic.models.loading import resolve

    models: list[ServedModel] = []
    notes: list[str] = []
    bases: dict[str, Path | None] = {}
    for root in _workspaces(paths):
        ws = Workspace.open(root, create=False)
        name = root.name
        exported = []
        for run in ws.finished_runs():
            ggufs = sorted((root / "exports" / run).glob("voice-*.gguf"), key=lambda p: p.stat().st_size)
            if ggufs:
                exported.append((run, ggufs[0]))
        if not exported:
            notes.append(f"{name}: no GGUF export yet (make one with: mimetic export --workspace {root})")
            continue
        published = ws.published_run()
        main = published if published in dict(exported) else exported[-1][0]  # the voice in use, if exported
        for run, gguf in sorted(reversed(exported), key=lambda e: e[0] != main):  # the main one first, then newest first
            vc = VoiceConfig.load(root / "runs" / run / "config.toml")
            m = ServedModel(f"{name}@{run}", "voice", gguf, vc.train.base_model, vc.prepare.format,
                            voice_system_prompt(vc, name), vc.generate, root, run, int(gguf.stat().st_mtime))
            if run == main:
                models.append(ServedModel(**{**m.__dict__, "id": name}))
            models.append(m)
            models += [ServedModel(**{**m.__dict__, "id": f"{name}@{version}"}) for version in ws.names_of(run)]
            base_f16 = root / "exports" / run / "base-f16.gguf"
            if bases.get(vc.train.base_model) is None:
                src = None
                try:
                    src = resolve(vc.train.base_model)
                except MimeticError:
                    pass
                bases[vc.train.base_model] = (Path(src.location) if src is not None and src.kind == "gguf"
                                              else base_f16 if base_f16.exists() else None)
    ids = {m.id for m in models}
    for base, gguf in bases.items():
        if gguf is None:
            notes.append(f"the base model {base}: no GGUF of it here (an export with lora-gguf leaves one)")
            continue
        bid = Path(base).name if Path(base).name not in ids else f"base:{Path(base).name}"
        models.append(ServedModel(bid, "base", gguf, base, "chat" if "instruct" in base.lower() else "completion",
                                  created=int(gguf.stat().st_mtime)))
    return models, notes


class BadRequest(Exception):
    """A request the server refuses: HTTP ``status``, an OpenAI-style error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        kind = {401: "authentication_error", 404: "invalid_request_error", 503: "server_error"}.get(self.status, "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


class _Loaded:
    def __init__(self, llm: Any, tokenizer: Any):
        self.llm, self.tokenizer = llm, tokenizer
        self.lock = threading.Lock()  # llama.cpp contexts are not thread-safe: one request at a time


class Voices:
    """The served models, loaded on first use, with one lock per model.

    Use :meth:`generate`; it holds the model's lock while it runs, so two requests to one voice
    never share a llama.cpp context, and requests to different voices run side by side.
    """

    def __init__(self, models: list[ServedModel], config: ServeConfig):
        self.models = {m.id: m for m in models}
        self.config = config
        self._loaded: collections.OrderedDict[Path, _Loaded] = collections.OrderedDict()
        self._guard = threading.Lock()
        self._log_lock = threading.Lock()

    def get(self, model_id: str) -> ServedModel:
        """The model called ``model_id``, or a 404 naming the models there are."""
        m = self.models.get(model_id)
        if m is None:
            raise BadRequest(404, f"The model '{model_id}' does not exist here. Models: {', '.join(self.models) or 'none'}.",
                             "model", "model_not_found")
        return m

    def first_to_load(self) -> list[ServedModel]:
        """The models :meth:`warm` loads: each voice's published version (its plain folder name),
        one per GGUF file, ``max_loaded`` at most; other runs and base models load on first use."""
        out: dict[Path, ServedModel] = {}
        for m in sorted((m for m in self.models.values() if m.kind == "voice" and "@" not in m.id), key=lambda m: m.id):
            if len(out) < self.config.max_loaded:
                out.setdefault(m.gguf, m)
        return list(out.values())

    def warm(self) -> list[str]:
        """Load :meth:`first_to_load` now (llama.cpp and the tokenizer), so the first request is
        answered at once instead of after the loading; returns the ids loaded. A model that fails
        to load is left for its first request to report."""
        done = []
        for m in self.first_to_load():
            try:
                self._load(m)
                done.append(m.id)
            except Exception:  # noqa: BLE001 - its request will say what is wrong
                continue
        return done

    def loaded(self) -> list[Path]:
        """The GGUF files in memory now."""
        with self._guard:
            return list(self._loaded)

    def _load(self, m: ServedModel) -> _Loaded:
        from mimetic.models.loading import load_tokenizer

        with self._guard:
            got = self._loaded.get(m.gguf)
            if got is not None:
                self._loaded.move_to_end(m.gguf)
                return got
            while len(self._loaded) >= self.config.max_loaded:
                idle = next((k for k, v in self._loaded.items() if not v.lock.locked()), None)
                if idle is None:
                    break  # every loaded voice is busy: load one more rather than wait
                self._loaded.pop(idle).llm.close()
            llama_cpp = load_llama()
            llm = llama_cpp.Llama(model_path=str(m.gguf), n_ctx=self.config.context, verbose=False,
                                  n_threads=self.config.threads or usable_cpus())
            got = self._loaded[m.gguf] = _Loaded(llm, load_tokenizer(m.base_model))
            return got

    def prompt(self, m: ServedModel, tokenizer: Any, messages: list[dict[str, str]] | None, text: str | None) -> tuple[list[int], str]:
        """Token ids for a chat request's ``messages`` or a completion request's ``text``, and the
        prompt as logged. See the module docstring for how each kind of voice reads them."""
        if text is not None and m.format in ("brief", "mixed"):
            try:
                messages = [{"role": "user", "content": request(m.format, default_mode(m.format), text)}]
            except MimeticError as e:
                raise BadRequest(400, f"{e.message} {e.hint}", "prompt") from None
        elif text is not None:
            return prompt_ids(tokenizer, "completion", text), text
        assert messages is not None
        if m.format in ("brief", "mixed"):
            users = [i for i, x in enumerate(messages) if x["role"] == "user"]
            if not users:
                raise BadRequest(400, f"The voice '{m.id}' writes on a brief: send the brief as a user message.", "messages")
            last = users[-1]
            said = messages[last]["content"]
            mode = next((k for k, marker in MARKERS.items() if said.startswith(marker)), "write")
            try:  # the request as training built it: a mode this voice learned, a brief that is one
                asked = request(m.format, mode, said[len(MARKERS[mode]) :] if said.startswith(MARKERS[mode]) else said)
            except MimeticError as e:
                raise BadRequest(400, f"{e.message} {e.hint}", "messages") from None
            messages = [*messages[:last], {**messages[last], "content": asked}, *messages[last + 1 :]]
        if m.format != "completion":
            if not any(x["role"] == "system" for x in messages) and m.system_prompt:
                messages = [{"role": "system", "content": m.system_prompt}] + messages
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
            return list(ids), "\n\n".join(f"[{x['role']}] {x['content']}" for x in messages)
        user = [x["content"] for x in messages if x["role"] == "user"]
        if not user:
            raise BadRequest(400, f"The voice '{m.id}' continues text: send it as a user message.", "messages")
        return prompt_ids(tokenizer, "completion", user[-1]), user[-1]

    def generate(self, m: ServedModel, messages: list[dict[str, str]] | None, text: str | None,
                 sampling: dict[str, Any], seed: int, endpoint: str) -> Iterator[dict[str, Any]]:
        """Generate one answer, yielding llama.cpp's stream chunks (``{"text", "finish_reason"}``)
        and finally ``{"done": True, "prompt_tokens", "completion_tokens", "finish_reason"}``;
        the whole answer is then logged. Holds the model's lock until the generator ends."""
        loaded = self._load(m)
        ids, logged_prompt = self.prompt(m, loaded.tokenizer, messages, text)
        if len(ids) + sampling["max_tokens"] > self.config.context:
            raise BadRequest(400, f"The prompt ({len(ids)} tokens) and max_tokens ({sampling['max_tokens']}) exceed "
                                  f"the context of {self.config.context} tokens.", "max_tokens", "context_length_exceeded")
        with loaded.lock:
            t = time.perf_counter()
            loaded.llm.reset()
            parts, n, finish = [], 0, None
            for chunk in loaded.llm.create_completion(ids, seed=seed, stream=True, **sampling):
                choice = chunk["choices"][0]
                piece = choice["text"]
                n += choice.get("finish_reason") is None or bool(piece)  # the closing chunk carries no token
                finish = choice.get("finish_reason") or finish
                if piece:
                    parts.append(piece)
                    yield {"text": piece}
            duration = time.perf_counter() - t
        output = "".join(parts)
        finish = finish or "stop"
        self._log(m, endpoint, logged_prompt, output, sampling, seed, n, duration)
        yield {"done": True, "prompt_tokens": len(ids), "completion_tokens": n, "finish_reason": finish}

    def _log(self, m: ServedModel, endpoint: str, prompt: str, output: str, sampling: dict[str, Any], seed: int,
             n: int, duration: float) -> None:
        if m.workspace is None:
            return  # a base model has no voice log
        with self._log_lock:
            Workspace.open(m.workspace, create=False).log_generation(
                command=f"serve {endpoint}", prompt=prompt, output=output,
                params={**sampling, "model": "voice", "served_as": m.id, "run": m.run},
                base_model=m.base_model, adapter=str(m.gguf), seed=seed, new_tokens=n, duration_s=duration)

    def close(self) -> None:
        with self._guard:
            while self._loaded:
                self._loaded.popitem()[1].llm.close()


# ---------------------------------------------------------------------------------- the app


FOLLOWED = ("model", "messages", "prompt", "stream", "stream_options", "n", "seed", "temperature", "top_p", "max_tokens",
            "max_completion_tokens", "stop", "presence_penalty", "frequency_penalty", "min_p", "repeat_penalty",
            "repetition_penalty")
"""The request parameters a voice follows."""

IGNORED = ("user", "store", "metadata", "service_tier", "parallel_tool_calls", "prompt_cache_key", "safety_identifier")
"""OpenAI parameters that change nothing in the text written (who asks, what the service keeps):
accepted and ignored."""

UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "tools": ([], None), "tool_choice": ("none", "auto", None), "functions": ([], None), "function_call": ("none", "auto", None),
    "response_format": ({"type": "text"}, None), "logprobs": (False, None), "top_logprobs": (0, None),
    "logit_bias": ({}, None), "echo": (False, None), "suffix": ("", None), "best_of": (1, None),
    "modalities": (["text"], None), "audio": (None,), "prediction": (None,), "reasoning_effort": (None,),
    "web_search_options": (None,),
}
"""OpenAI parameters a voice cannot honour (tools, JSON output, log-probabilities…), with the
values that ask for nothing more than plain text: those are accepted, any other is refused."""


def check_parameters(body: dict[str, Any]) -> None:
    """Refuse what a voice would otherwise silently not do, as OpenAI's API refuses what it does
    not know: an unknown parameter, or one of :data:`UNSUPPORTED` asking for more than text.

    Raises:
        BadRequest: 400, naming the parameter.
    """
    for name, value in body.items():
        if name in FOLLOWED or name in IGNORED:
            continue
        if name in UNSUPPORTED:
            if value not in UNSUPPORTED[name]:
                raise BadRequest(400, f"'{name}' is not supported: a mimetic voice writes plain text (leave '{name}' out).",
                                 name, "unsupported_parameter")
            continue
        raise BadRequest(400, f"Unrecognized request argument supplied: {name}. A voice follows: {', '.join(FOLLOWED)}.",
                         name, "unknown_parameter")


def _figure(x: float) -> str:
    """A bound as people write it: ``1048576``, ``0.01``, ``-2``."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def request_sampling(body: dict[str, Any], m: ServedModel) -> dict[str, Any]:
    """llama.cpp's ``create_completion`` settings from an OpenAI request, defaults from the voice.

    Raises:
        BadRequest: a value out of the OpenAI API's range (400, naming the parameter).
    """
    g = m.generate

    def num(name: str, default: float, lo: float, hi: float, integer: bool = False) -> Any:
        v = body.get(name)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not float(v).is_integer()):
            raise BadRequest(400, f"'{name}' must be {'an integer' if integer else 'a number'}, not {v!r}.", name, "invalid_type")
        if not lo <= v <= hi:
            raise BadRequest(400, f"'{name}' must be between {_figure(lo)} and {_figure(hi)}; got {v!r}.", name, "invalid_value")
        return int(v) if integer else float(v)

    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    max_tokens = num(name, g.max_new_tokens, 1, 1 << 20, integer=True) if max_tokens is not None else g.max_new_tokens
    temperature = num("temperature", g.temperature, 0, 2)
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop)):
        raise BadRequest(400, "'stop' must be a string or a list of up to 4 non-empty strings.", "stop", "invalid_value")
    greedy = temperature == 0
    return {
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": 1.0 if greedy else num("top_p", g.top_p, 0, 1),
        "min_p": 0.0 if greedy else num("min_p", g.min_p, 0, 1),
        "top_k": 1 if greedy else 0,  # off: only top-p and min-p truncate, as in mimetic write
        "repeat_penalty": num("repeat_penalty", num("repetition_penalty", g.repetition_penalty, 0.01, 10), 0.01, 10),
        "presence_penalty": num("presence_penalty", 0.0, -2, 2),
        "frequency_penalty": num("frequency_penalty", 0.0, -2, 2),
        "stop": stop or [],
    }


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise BadRequest(400, "'messages' must be a non-empty list of {role, content} objects.", "messages", "invalid_value")
    out = []
    for i, x in enumerate(msgs):
        if not isinstance(x, dict) or x.get("role") not in ("system", "developer", "user", "assistant"):
            raise BadRequest(400, f"messages[{i}] needs a role of system, user or assistant.", f"messages[{i}].role", "invalid_value")
        content = x.get("content")
        if isinstance(content, list):  # content parts: only text is understood
            if any(not isinstance(p, dict) or p.get("type") != "text" for p in content):
                raise BadRequest(400, f"messages[{i}]: a voice reads text only.", f"messages[{i}].content", "invalid_value")
            content = "".join(p.get("text", "") for p in content)
        if not isinstance(content, str):
            raise BadRequest(400, f"messages[{i}].content must be text.", f"messages[{i}].content", "invalid_value")
        out.append({"role": "system" if x["role"] == "developer" else x["role"], "content": content})
    return out


def create_app(voices: Voices) -> Any:
    """The FastAPI application over ``voices`` (see the module docstring for its routes)."""
    from fastapi import FastAPI
    from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI(title="mimetic", description="Your voices, served on your machine (OpenAI-compatible).", docs_url=None, redoc_url=None)
    key = voices.config.api_key

    @app.exception_handler(BadRequest)
    async def _bad(_: Request, e: BadRequest) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    @app.middleware("http")
    async def _auth(request: Request, call_next: Any) -> Any:
        if key and request.headers.get("authorization", "") != f"Bearer {key}":
            return JSONResponse(BadRequest(401, "Missing or wrong API key: send Authorization: Bearer <key>.").body(), status_code=401)
        return await call_next(request)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": m.id, "object": "model", "created": m.created, "owned_by": "you" if m.kind == "voice" else "base model",
             "format": m.format, "base_model": m.base_model, "run": m.run}
            for m in voices.models.values()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        m = voices.get(model_id)
        return {"id": m.id, "object": "model", "created": m.created, "owned_by": "you" if m.kind == "voice" else "base model"}

    async def _body(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise BadRequest(400, "The request body is not JSON.") from None
        if not isinstance(body, dict):
            raise BadRequest(400, "The request body must be a JSON object.")
        if not isinstance(body.get("model"), str):
            raise BadRequest(400, "'model' is required: the name of a voice (GET /v1/models lists them).", "model", "missing")
        return body

    async def _complete(request: Request, chat: bool) -> Any:
        body = await _body(request)
        check_parameters(body)
        m = voices.get(body["model"])
        sampling = request_sampling(body, m)
        messages = _messages(body) if chat else None
        prompt = None
        if not chat:
            prompt = body.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                prompt = prompt[0]
            if not isinstance(prompt, str) or not prompt:
                raise BadRequest(400, "'prompt' must be a non-empty string.", "prompt", "invalid_value")
        n = body.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 8:
            raise BadRequest(400, "'n' must be an integer from 1 to 8.", "n", "invalid_value")
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise BadRequest(400, "'seed' must be an integer.", "seed", "invalid_type")
        seed = random.randrange(2**31) if seed is None else seed % 2**31
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        kind = "chat.completion" if chat else "text_completion"
        endpoint = "chat" if chat else "completion"
        stream = bool(body.get("stream"))
        if stream and n > 1:
            raise BadRequest(400, "Streaming answers one choice at a time: use n 1 with stream.", "n", "invalid_value")

        def run(i: int) -> Iterator[dict[str, Any]]:
            return voices.generate(m, messages, prompt, sampling, seed + i, endpoint)

        if stream:
            gen = run(0)
            first = await run_in_threadpool(next, gen)  # errors (context too long) answer before the stream starts
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

            def events() -> Iterator[str]:
                def chunk(delta: dict[str, Any] | None, text: str | None, finish: str | None, usage: Any = None) -> str:
                    choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
                    if chat:
                        choice["delta"] = delta or {}
                    else:
                        choice["text"] = text or ""
                    out = {"id": rid, "object": kind + ".chunk" if chat else kind, "created": created, "model": m.id,
                           "choices": [choice] if usage is None else []}
                    if usage is not None:
                        out["usage"] = usage
                    return f"data: {json.dumps(out)}\n\n"

                if chat:
                    yield chunk({"role": "assistant", "content": ""}, None, None)
                try:
                    for part in _chain(first, gen):
                        if part.get("done"):
                            yield chunk({}, "", part["finish_reason"])
                            if include_usage:
                                yield chunk(None, None, None, _usage(part))
                        else:
                            yield chunk({"content": part["text"]}, part["text"], None)
                finally:
                    gen.close()
                yield "data: [DONE]\n\n"

            return StreamingResponse(iterate_in_threadpool(events()), media_type="text/event-stream")

        def answer_all() -> list[dict[str, Any]]:
            done = []
            for i in range(n):
                parts = list(run(i))
                done.append({"text": "".join(p["text"] for p in parts if "text" in p), **parts[-1]})
            return done

        answers = await run_in_threadpool(answer_all)
        choices = []
        for i, a in enumerate(answers):
            c: dict[str, Any] = {"index": i, "finish_reason": a["finish_reason"], "logprobs": None}
            if chat:
                c["message"] = {"role": "assistant", "content": a["text"]}
            else:
                c["text"] = a["text"]
            choices.append(c)
        usage = {"prompt_tokens": answers[0]["prompt_tokens"], "completion_tokens": sum(a["completion_tokens"] for a in answers)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return {"id": rid, "object": kind, "created": created, "model": m.id, "choices": choices, "usage": usage,
                "system_fingerprint": f"seed-{seed}"}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await _complete(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await _complete(request, chat=False)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": len(voices.models)}

    return app


def _chain(first: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield first
    yield from rest


def _usage(done: dict[str, Any]) -> dict[str, int]:
    return {"prompt_tokens": done["prompt_tokens"], "completion_tokens": done["completion_tokens"],
            "total_tokens": done["prompt_tokens"] + done["completion_tokens"]}


class Server:
    """A running server (uvicorn in a background thread): :attr:`url`, :meth:`stop`.

    ``with Server(models, config) as s:`` starts it and waits until it accepts connections;
    leaving the block stops it. ``mimetic serve`` uses :func:`serve`, which runs in the foreground.
    """

    def __init__(self, models: list[ServedModel], config: ServeConfig | None = None):
        import uvicorn

        self.config = config or ServeConfig()
        self.voices = Voices(models, self.config)
        self._server = uvicorn.Server(uvicorn.Config(create_app(self.voices), host=self.config.host, port=self.config.port,
                                                     log_level="warning", access_log=False, lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self.url = ""

    def start(self, warm: bool = True) -> "Server":
        """Load the voices (:meth:`Voices.warm`, unless ``warm`` is false), then listen; returns
        when connections are accepted, so a first request never waits for a model to load."""
        if warm:
            self.voices.warm()
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise MimeticError(f"The server could not start on {self.config.host}:{self.config.port}.",
                                   "Is the port in use? Choose another with --port.")
            time.sleep(0.02)
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}/v1"
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self.voices.close()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve(paths: list[Path], config: ServeConfig | None = None, on_ready: Any = None, on_loading: Any = None) -> None:
    """Serve the voices under ``paths`` until interrupted (Ctrl-C).

    Args:
        paths: voice folders or folders of voices (see :func:`find_models`).
        config: :class:`ServeConfig`.
        on_ready: called with ``(url, models, notes)`` once the voices are loaded and the server
            accepts connections.
        on_loading: called with the models being loaded at start (:meth:`Voices.first_to_load`).

    Raises:
        MimeticError: no exported voice under ``paths``, llama-cpp-python missing, a port in use,
            a non-loopback ``host`` without an API key.
    """
    config = config or ServeConfig()
    models, notes = find_models(paths)
    if not any(m.kind == "voice" for m in models):
        raise MimeticError(
            f"No exported voice in {', '.join(str(p) for p in paths)}." + (f" ({'; '.join(notes)})" if notes else ""),
            "Export a voice first (mimetic export --workspace voices/<name>), then serve its folder or the voices/ folder.",
        )
    load_llama()  # a clear error now rather than at the first request
    server = Server(models, config)
    if on_loading:
        on_loading(server.voices.first_to_load())
    server.start()
    try:
        if on_ready:
            on_ready(server.url, models, notes)
        while server._thread.is_alive():
            server._thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


__all__ = ["BadRequest", "ServeConfig", "ServedModel", "Server", "Voices", "create_app", "find_models", "request_sampling", "serve"]
