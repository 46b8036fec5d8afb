"""The voices as tools for AI clients: an MCP server (Model Context Protocol, the ``mcp`` package).

``mimetic mcp [VOICES]`` speaks MCP over standard input and output, the transport desktop
clients start a server with (Claude Desktop, editors with MCP support). Its tools:

* ``list_voices()``: every exported voice (and run) it can write with, as ``mimetic serve``
  lists them (:func:`mimetic.frontends.serve.find_models`).
* ``write_in_voice(voice, opening, brief, length, temperature, seed)``: a text in the voice. A
  completion voice (trained on plain prose) continues ``opening``; a chat voice answers
  ``brief`` (or continues ``opening`` when asked to), with its system prompt
  (:func:`mimetic.text.identity.voice_system_prompt`); a voice trained with briefs (``brief``,
  ``mixed``) writes on ``brief`` in its *write* mode, or continues ``opening`` (mixed).
* ``rewrite_in_voice(voice, draft, length, temperature, seed)``: a draft rewritten in the voice
  (voices trained with ``--format mixed``; :func:`mimetic.voice.generate.rewrite`).

The voices are loaded as the server starts, in the background (:meth:`mimetic.frontends.serve.Voices.warm`),
so the client's first call does not wait for a cold load. Generation runs in llama.cpp on the
exported GGUF files and is logged in the voice's
``mimetic.db`` (command ``serve mcp``), exactly as the HTTP server does (:class:`mimetic.frontends.serve.Voices`).
Nothing listens on the network. Searching the writer's archive comes with the archive (not yet
in mimetic).

Protocol: https://modelcontextprotocol.io/specification (tools, stdio transport).
"""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

from mimetic.corpus.briefs import request
from mimetic.errors import MimeticError
from mimetic.frontends.serve import BadRequest, ServeConfig, Voices, find_models, request_sampling
from mimetic.core.workspace import Workspace


def create_server(paths: list[Path], config: ServeConfig | None = None) -> Any:
    """An ``mcp.server.mcpserver.MCPServer`` with the tools above, over the voices under ``paths``.

    Raises:
        MimeticError: no exported voice under ``paths``.
    """
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    models, notes = find_models(paths)
    if not any(m.kind == "voice" for m in models):
        raise MimeticError(f"No exported voice in {', '.join(str(p) for p in paths)}." + (f" ({'; '.join(notes)})" if notes else ""),
                           "Export a voice first: mimetic export --workspace voices/<name>.")
    voices = Voices(models, config or ServeConfig())
    server = MCPServer("mimetic", instructions=(
        "Write in the voices of a writer's own language models, trained by mimetic on their writing. "
        "Call list_voices first; a 'completion' voice continues an opening, a 'chat' or 'brief' voice writes on a brief, "
        "and a 'mixed' voice does both and rewrites a draft (rewrite_in_voice)."))

    @server.tool()
    def list_voices() -> list[dict[str, Any]]:
        """The voices this server writes with: id (pass it as `voice`), format (completion: continues an
        opening; chat and brief: write on a brief; mixed: write on a brief, continue, rewrite), the
        base model and the training run."""
        return [{"id": m.id, "format": m.format, "base_model": m.base_model, "run": m.run}
                for m in voices.models.values() if m.kind == "voice"]

    @server.tool()
    def write_in_voice(voice: str, opening: str = "", brief: str = "", length: int = 200,
                       temperature: float | None = None, seed: int | None = None) -> str:
        """Write in a writer's voice. voice: an id from list_voices. opening: text to continue (for
        completion and mixed voices). brief: what to write (for chat, brief and mixed voices).
        length: at most this many tokens (1-2000). temperature: 0-2 (default: the voice's own). seed: for a repeatable text."""
        try:
            m = voices.get(voice)
        except BadRequest as e:
            raise ToolError(e.message) from None
        if not (opening.strip() or brief.strip()):
            raise ToolError("Give an opening to continue or a brief to write from.")
        if m.format == "completion":
            if not opening.strip():
                raise ToolError(f"The voice '{m.id}' continues text: give an opening (a first sentence or paragraph), not a brief.")
            message = opening
        elif m.format in ("brief", "mixed"):
            try:
                message = request(m.format, "write" if brief.strip() else "continue", brief or opening)
            except MimeticError as e:
                raise ToolError(f"{e.message} {e.hint}") from None
        else:
            message = brief if brief.strip() else f"Continue this text:\n\n{opening}"
        return _answer(m, message, length, temperature, seed)

    @server.tool()
    def rewrite_in_voice(voice: str, draft: str, length: int = 400, temperature: float | None = None,
                         seed: int | None = None) -> str:
        """Rewrite a draft (the writer's flat draft, or another text) in a writer's voice; for voices
        trained with three modes (format mixed in list_voices). voice: an id from list_voices.
        draft: the text to rewrite. length: at most this many tokens (1-2000). temperature: 0-2
        (default: the voice's own). seed: for a repeatable text."""
        from mimetic.voice.generate import rewrites_from_notes

        try:
            m = voices.get(voice)
            from_notes = m.workspace is not None and rewrites_from_notes(Workspace.open(m.workspace, create=False))
            message = request(m.format, "rewrite", draft, from_notes)
        except BadRequest as e:
            raise ToolError(e.message) from None
        except MimeticError as e:
            raise ToolError(f"{e.message} {e.hint}") from None
        return _answer(m, message, length, temperature, seed)

    def _answer(m: Any, message: str, length: int, temperature: float | None, seed: int | None) -> str:
        """One generation for a tool: ``message`` as the user turn, ``length`` tokens at most."""
        body: dict[str, Any] = {"max_tokens": length}
        if temperature is not None:
            body["temperature"] = temperature
        try:
            if not 1 <= length <= 2000:
                raise BadRequest(400, "length must be from 1 to 2000 tokens.")
            parts = list(voices.generate(m, [{"role": "user", "content": message}], None, request_sampling(body, m),
                                         random.randrange(2**31) if seed is None else seed, "mcp"))
        except BadRequest as e:
            raise ToolError(e.message) from None
        return "".join(p.get("text", "") for p in parts)

    server.voices = voices  # for closing, and for tests
    # the voices load while the client connects: the first tool call does not wait for them
    server.warming = threading.Thread(target=voices.warm, name="mimetic-warm", daemon=True)
    server.warming.start()
    return server


def run_stdio(paths: list[Path], config: ServeConfig | None = None) -> None:
    """Serve the voices under ``paths`` over MCP's stdio transport until the client closes it."""
    server = create_server(paths, config)
    try:
        server.run("stdio")
    finally:
        server.voices.close()


__all__ = ["create_server", "run_stdio"]
