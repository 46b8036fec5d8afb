"""Stage 4 — write: generate in the voice, and compare it with the base model side by side.

* :func:`write` continues a text or drafts from a prompt with the trained adapter, streaming
  tokens to a callback (the CLI prints them as they come).
* :func:`compare` runs the base model and the voice on the same prompts with the same seeds
  and settings and writes the pairs as Markdown and as a self-contained HTML page.

A completion-format voice continues the prompt as text; a chat-format voice answers it
through the chat template, with the voice's system prompt. Every generation is logged in the
workspace's SQLite ``mimetic.db`` (prompt, parameters, output, base model, adapter, time).
"""

from __future__ import annotations

import html
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from .config import GenerateConfig
from .errors import MimeticError
from .workspace import Workspace, atomic_write_text


@dataclass
class Generation:
    """One generated text and how it was made."""

    prompt: str
    output: str
    model: str  # "voice" or "base"
    seed: int
    new_tokens: int
    duration_s: float


def prompt_ids(tokenizer: Any, fmt: str, prompt: str, system_prompt: str = "") -> list[int]:
    """Token ids of ``prompt`` as the voice was trained: plain text for a ``completion`` voice,
    the chat template with a generation prompt (and the system prompt, if any) for a ``chat`` voice."""
    if fmt == "chat":
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [{"role": "user", "content": prompt}]
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
    return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])


class Voice:
    """A base model with a run's adapter attached, ready to generate.

    Use :meth:`load`; ``with voice.base():`` generates from the base model alone (PEFT's
    ``disable_adapter``), so both share one copy of the weights.
    """

    def __init__(self, model: Any, tokenizer: Any, base_model: str, adapter: str | None, fmt: str, device: str, precision: str):
        self.model, self.tokenizer = model, tokenizer
        self.base_model, self.adapter, self.format = base_model, adapter, fmt
        self.device, self.precision = device, precision

    @classmethod
    def load(cls, workspace: Workspace, run: str | None = None, device: str = "auto") -> "Voice":
        """Load the workspace's base model and the best adapter of ``run`` (default: latest).

        Raises:
            MimeticError: no run, or the run has no adapter yet.
        """
        from peft import PeftModel

        from .config import VoiceConfig
        from .models import load_model, load_tokenizer, pick_device, pick_precision

        run_dir = workspace.run_dir(run)
        adapter = run_dir / "adapter"
        if not (adapter / "adapter_config.json").exists():
            raise MimeticError(f"Run {run_dir.name} has no adapter yet.", f"Train first: mimetic train --workspace {workspace.root}")
        vc = VoiceConfig.load(run_dir / "config.toml")
        dev = pick_device(device)
        precision = pick_precision(dev, vc.train.precision)
        tokenizer = load_tokenizer(vc.train.base_model)
        model = load_model(vc.train.base_model, dev, precision)
        model = PeftModel.from_pretrained(model, str(adapter))
        model.eval()
        return cls(model, tokenizer, vc.train.base_model, str(adapter), vc.prepare.format, dev, precision)

    def base(self) -> Any:
        """Context manager: generate with the adapter switched off (the base model)."""
        return self.model.disable_adapter()

    def encode_prompt(self, prompt: str, system_prompt: str = "") -> Any:
        """Token ids (shape ``(1, n)``) for ``prompt`` in the voice's format."""
        import torch

        return torch.tensor([prompt_ids(self.tokenizer, self.format, prompt, system_prompt)])

    def generate(
        self, prompt: str, config: GenerateConfig, seed: int, on_text: Callable[[str], None] | None = None
    ) -> tuple[str, int]:
        """Sample one continuation of ``prompt``; returns ``(text, number of new tokens)``.

        ``on_text`` receives decoded text as it is produced (streaming).
        """
        import torch
        from transformers import TextStreamer

        ids = self.encode_prompt(prompt, config.system_prompt).to(self.device)
        streamer = None
        if on_text is not None:

            class _Stream(TextStreamer):
                def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                    on_text(text)

            streamer = _Stream(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        torch.manual_seed(seed)
        sampling = config.temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": config.max_new_tokens,
            "do_sample": sampling,
            "repetition_penalty": config.repetition_penalty,
            "pad_token_id": self.tokenizer.pad_token_id,
            "streamer": streamer,
        }
        if sampling:
            kwargs.update(temperature=config.temperature, top_p=config.top_p, min_p=config.min_p or None)
        from .models import autocast

        with torch.no_grad(), autocast(self.device, self.precision)():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
        new = out[0, ids.shape[1] :]
        return self.tokenizer.decode(new, skip_special_tokens=True), int(new.shape[0])


class GGUFVoice:
    """The voice exported as GGUF (``mimetic export``), run by llama.cpp: much faster on a CPU
    than transformers, with the same prompts, sampling settings and log.

    Use :meth:`load`. Prompts are tokenized with the voice's own tokenizer (its chat template
    for chat voices), so llama.cpp sees exactly the tokens transformers would.
    """

    def __init__(self, llm: Any, tokenizer: Any, base_model: str, gguf: str, fmt: str):
        self.llm, self.tokenizer = llm, tokenizer
        self.base_model, self.adapter, self.format = base_model, gguf, fmt

    @classmethod
    def load(cls, workspace: Workspace, run: str | None = None, gguf: Path | None = None) -> "GGUFVoice":
        """Load ``gguf`` or, by default, the smallest ``voice-*.gguf`` exported for ``run`` (latest).

        Raises:
            MimeticError: no export yet, or llama-cpp-python is not installed.
        """
        import os

        from .config import VoiceConfig
        from .export import _llama
        from .models import load_tokenizer

        run_dir = workspace.run_dir(run)
        if gguf is None:
            files = sorted((workspace.root / "exports" / run_dir.name).glob("voice-*.gguf"), key=lambda p: p.stat().st_size)
            if not files:
                raise MimeticError(
                    f"Run {run_dir.name} has no GGUF export yet.",
                    f"Export it first: mimetic export {run_dir.name} --workspace {workspace.root}",
                )
            gguf = files[0]
        llama_cpp = _llama()
        vc = VoiceConfig.load(run_dir / "config.toml")
        llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=4096, verbose=False, n_threads=os.cpu_count() or 1)
        return cls(llm, load_tokenizer(vc.train.base_model), vc.train.base_model, str(gguf), vc.prepare.format)

    def generate(self, prompt: str, config: GenerateConfig, seed: int, on_text: Callable[[str], None] | None = None) -> tuple[str, int]:
        """Sample one continuation of ``prompt`` in llama.cpp; returns ``(text, number of new tokens)``."""
        ids = prompt_ids(self.tokenizer, self.format, prompt, config.system_prompt)
        sampling = config.temperature > 0
        self.llm.reset()
        stream = self.llm.create_completion(
            ids, max_tokens=config.max_new_tokens, temperature=config.temperature if sampling else 0.0,
            top_p=config.top_p if sampling else 1.0, min_p=config.min_p if sampling else 0.0,
            top_k=0 if sampling else 1, repeat_penalty=config.repetition_penalty, seed=seed, stream=True,
        )
        parts, n = [], 0
        for chunk in stream:
            choice = chunk["choices"][0]
            text = choice["text"]
            n += choice.get("finish_reason") is None or bool(text)  # the closing chunk carries no token
            parts.append(text)
            if on_text and text:
                on_text(text)
        return "".join(parts), n


def _log(workspace: Workspace, voice: Any, command: str, g: Generation, config: GenerateConfig) -> None:
    workspace.log_generation(
        command=command,
        prompt=g.prompt,
        output=g.output,
        params={**asdict(config), "model": g.model},
        base_model=voice.base_model,
        adapter=voice.adapter if g.model == "voice" else None,
        seed=g.seed,
        new_tokens=g.new_tokens,
        duration_s=g.duration_s,
    )


def write(
    workspace: Workspace,
    prompt: str = "",
    config: GenerateConfig | None = None,
    *,
    run: str | None = None,
    continue_from: Path | None = None,
    on_text: Callable[[str], None] | None = None,
    voice: Any = None,
    engine: str = "transformers",
) -> list[Generation]:
    """Write ``config.num_samples`` texts in the voice from ``prompt`` (or a file's text).

    Args:
        workspace: a workspace with a trained run.
        prompt: the opening to continue, or (chat voices) the request.
        config: sampling settings (default: the workspace's ``[generate]``). Sample ``i`` uses
            seed ``config.seed + i``.
        run: run id (default: latest).
        continue_from: a text file whose last 2,000 characters are continued.
        on_text: streaming callback; called with ``"\\n\\n"`` between samples.
        engine: ``transformers`` (base model + adapter) or ``llama.cpp`` (the smallest GGUF of
            the run's export, see :class:`GGUFVoice`).

    Raises:
        MimeticError: no prompt, unreadable file, no trained run, no GGUF export for llama.cpp.
    """
    config = config or workspace.load_config().generate
    if continue_from is not None:
        try:
            prompt = Path(continue_from).expanduser().read_text(encoding="utf-8", errors="replace")[-2000:] + prompt
        except OSError as e:
            raise MimeticError(f"Cannot read {continue_from}: {e.strerror}.", "Check the path given to --continue-from.") from e
    if not prompt.strip():
        raise MimeticError("Nothing to write from: the prompt is empty.", 'Give a prompt: mimetic write "The morning after…"')
    if engine not in ("transformers", "llama.cpp"):
        raise MimeticError(f"Unknown engine {engine!r}.", "Use --engine transformers or --engine llama.cpp.")
    voice = voice or (GGUFVoice.load(workspace, run) if engine == "llama.cpp" else Voice.load(workspace, run))
    results = []
    for i in range(config.num_samples):
        if i and on_text:
            on_text("\n\n")
        t = time.perf_counter()
        text, n = voice.generate(prompt, config, config.seed + i, on_text)
        g = Generation(prompt, text, "voice", config.seed + i, n, time.perf_counter() - t)
        _log(workspace, voice, "write" if engine == "transformers" else "write (llama.cpp)", g, config)
        results.append(g)
    return results


def read_prompts(path: Path) -> list[str]:
    """Prompts from a file: one per paragraph (blank-line separated); ``#`` lines are comments.

    Raises:
        MimeticError: unreadable file or no prompts in it.
    """
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as e:
        raise MimeticError(f"Cannot read prompts file {path}: {e.strerror}.", "Give a text file with one prompt per paragraph.") from e
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    prompts = [p.strip() for p in "\n".join(lines).split("\n\n") if p.strip()]
    if not prompts:
        raise MimeticError(f"No prompts in {path}.", "Write one prompt per paragraph, separated by blank lines.")
    return prompts


@dataclass
class Comparison:
    """Base and voice outputs for the same prompts, and where they were written."""

    pairs: list[tuple[Generation, Generation]]
    markdown: Path
    html: Path


def compare(
    workspace: Workspace,
    prompts: list[str],
    config: GenerateConfig | None = None,
    *,
    run: str | None = None,
    voice: Voice | None = None,
    on_pair: Callable[[int, Generation, Generation], None] | None = None,
) -> Comparison:
    """Generate from the base model and from the voice on each prompt, same seed and settings.

    Writes ``compare/<time>.md`` and ``compare/<time>.html`` (self-contained, side by side).

    Raises:
        MimeticError: no prompts, no trained run.
    """
    if not prompts:
        raise MimeticError("No prompts to compare on.", "Pass --prompts FILE with one prompt per paragraph.")
    config = config or workspace.load_config().generate
    voice = voice or Voice.load(workspace, run)
    pairs = []
    for i, prompt in enumerate(prompts):
        seed = config.seed + i
        t = time.perf_counter()
        with voice.base():
            text, n = voice.generate(prompt, config, seed)
        base = Generation(prompt, text, "base", seed, n, time.perf_counter() - t)
        t = time.perf_counter()
        text, n = voice.generate(prompt, config, seed)
        tuned = Generation(prompt, text, "voice", seed, n, time.perf_counter() - t)
        for g in (base, tuned):
            _log(workspace, voice, "compare", g, config)
        pairs.append((base, tuned))
        if on_pair:
            on_pair(i, base, tuned)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    md_path, html_path = workspace.compare_dir / f"{stamp}.md", workspace.compare_dir / f"{stamp}.html"
    atomic_write_text(md_path, comparison_markdown(pairs, voice, config))
    atomic_write_text(html_path, comparison_html(pairs, voice, config))
    return Comparison(pairs, md_path, html_path)


def _settings_line(voice: Voice, config: GenerateConfig) -> str:
    return (
        f"base model `{voice.base_model}` · adapter `{voice.adapter}` · temperature {config.temperature} · "
        f"top-p {config.top_p} · min-p {config.min_p} · max new tokens {config.max_new_tokens}"
    )


def comparison_markdown(pairs: list[tuple[Generation, Generation]], voice: Voice, config: GenerateConfig) -> str:
    """The comparison as Markdown: one section per prompt, base then voice."""
    out = ["# Base model vs your voice", "", _settings_line(voice, config), ""]
    for i, (base, tuned) in enumerate(pairs, 1):
        out += [f"## Prompt {i} (seed {base.seed})", "", "> " + base.prompt.replace("\n", "\n> "), "",
                "**Base model**", "", base.output.strip(), "", "**Your voice**", "", tuned.output.strip(), ""]
    return "\n".join(out)


def comparison_html(pairs: list[tuple[Generation, Generation]], voice: Voice, config: GenerateConfig) -> str:
    """The comparison as one self-contained HTML page, base and voice in two columns."""
    e = html.escape
    rows = []
    for i, (base, tuned) in enumerate(pairs, 1):
        rows.append(
            f"<section><h2>Prompt {i} <small>seed {base.seed}</small></h2><blockquote>{e(base.prompt)}</blockquote>"
            f"<div class=pair><div><h3>Base model</h3><p>{e(base.output.strip())}</p></div>"
            f"<div class=voice><h3>Your voice</h3><p>{e(tuned.output.strip())}</p></div></div></section>"
        )
    css = (
        "body{font:16px/1.55 Georgia,serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        ".pair{display:grid;grid-template-columns:1fr 1fr;gap:1.5em}.pair div{background:#f6f6f4;padding:.2em 1em;"
        "border-radius:6px}.pair .voice{background:#eef5ee}p{white-space:pre-wrap}blockquote{color:#555;"
        "border-left:3px solid #ccc;margin:0;padding-left:1em;white-space:pre-wrap}small{color:#888;font-weight:normal}"
        ".meta{color:#666;font:13px monospace}"
    )
    return (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>Base model vs your voice</title><style>{css}</style>"
        f"<h1>Base model vs your voice</h1><p class=meta>{e(_settings_line(voice, config))}</p>{''.join(rows)}</html>\n"
    )


def held_out_prompts(workspace: Workspace, n: int = 5, words: int = 40) -> list[str]:
    """Openings (first ``words`` words) of ``n`` held-out examples: fair prompts for a comparison,
    since the voice never trained on them."""
    from .prepare import load_split

    rows = load_split(workspace, "held_out")
    step = max(1, len(rows) // n)
    prompts = []
    for i in range(0, len(rows), step):
        text = " ".join(rows[i]["text"].split()[:words])
        if text:
            prompts.append(text)
        if len(prompts) == n:
            break
    return prompts


__all__ = ["Voice", "write", "compare", "read_prompts", "held_out_prompts", "Generation", "Comparison"]
