"""Inference engines: what runs a trained voice, behind one interface.

* :class:`Voice` — transformers: the base model with the run's LoRA adapter attached (PEFT);
  ``with voice.base():`` switches the adapter off, so base and voice share one copy of the
  weights (what ``compare`` and ``evaluate`` need).
* :class:`GGUFVoice` — llama.cpp (``llama-cpp-python``) on the run's GGUF export: much faster
  on a CPU, same prompts and sampling settings.

Both satisfy :class:`Engine`, which is all :func:`mimetic.voice.generate.write` needs. Prompts are
tokenized the same way for both (:func:`prompt_ids`), and sampling settings are translated for
each by :class:`mimetic.models.sampling.SamplingParams`. :func:`load_llama` imports llama-cpp-python
with a writer-facing error; :mod:`mimetic.voice.export` uses it too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Protocol

from mimetic.core.config import VoiceConfig
from mimetic.errors import MimeticError
from mimetic.models.sampling import SamplingParams
from mimetic.core.workspace import Workspace


class Engine(Protocol):
    """What generating in the voice needs from an engine.

    Attributes:
        tokenizer: the base model's Hugging Face tokenizer (prompts are tokenized with it).
        base_model: the base model's name or path.
        adapter: what was added to the base model (the adapter folder, or the GGUF file).
        format: ``completion``, ``chat``, ``brief`` or ``mixed``, as the voice was trained (see
            :func:`prompt_ids`).
    """

    tokenizer: Any
    base_model: str
    adapter: str | None
    format: str

    def generate(
        self, prompt: str, params: SamplingParams, seed: int, on_text: Callable[[str], None] | None = None, *, system_prompt: str = ""
    ) -> tuple[str, int]:
        """One continuation of ``prompt``: ``(text, number of new tokens)``; ``on_text`` gets
        decoded text as it is produced. The same ``seed`` and settings give the same text."""
        ...


def prompt_ids(tokenizer: Any, fmt: str, prompt: str, system_prompt: str = "") -> list[int]:
    """Token ids of ``prompt`` as the voice was trained: plain text for a ``completion`` voice,
    the chat template with a generation prompt (and the system prompt, if any) for the others
    (``chat``, ``brief``, ``mixed``; the mode's marker is already in ``prompt``, see
    :func:`mimetic.corpus.briefs.request`)."""
    if fmt != "completion":
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [{"role": "user", "content": prompt}]
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
    return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def load_llama() -> Any:
    """The ``llama_cpp`` module (llama-cpp-python), imported on first use.

    Raises:
        MimeticError: llama-cpp-python is not installed (``make install`` builds it).
    """
    try:
        import llama_cpp
    except ImportError as e:
        raise MimeticError(
            "llama-cpp-python is not installed, so GGUF files cannot be quantized or checked.",
            "Run `make install` in the mimetic folder (it builds llama-cpp-python, about 6 minutes).",
        ) from e
    return llama_cpp


def open_gguf(path: Path, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(model_path=path, **kwargs)``, with a refusal by llama.cpp turned into a
    two-line error (llama-cpp-python raises a bare ``ValueError`` and prints the reason only
    when verbose).

    Raises:
        MimeticError: llama-cpp-python is missing, or llama.cpp cannot load the file.
    """
    llama_cpp = load_llama()
    try:
        return llama_cpp.Llama(model_path=str(path), **kwargs)
    except ValueError as e:
        raise MimeticError(
            f"llama.cpp could not load {Path(path).name}: the file is damaged, or its shapes are not what "
            "llama.cpp expects for this architecture.",
            "Export 'adapter' and 'merged' instead (they do not need llama.cpp), or try a model llama.cpp supports; "
            f"llama.cpp's own message: python -c \"import llama_cpp; llama_cpp.Llama('{path}')\"",
        ) from e


def damaged_adapter(workspace: Workspace, run_dir: Path, error: Exception) -> MimeticError:
    """The two-line error for a run whose adapter files cannot be loaded."""
    others = [r for r in workspace.finished_runs() if r != run_dir.name]
    return MimeticError(
        f"The adapter of run {run_dir.name} is damaged ({type(error).__name__}: {str(error)[:120]}).",
        (f"Use another run with --run ({', '.join(others[-3:])}), or train again" if others else "Train again")
        + f": mimetic train --workspace {workspace.root}",
    )


class Voice:
    """A base model with a run's adapter attached, ready to generate (transformers).

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

        from mimetic.models.loading import load_model, load_tokenizer, pick_device, pick_precision

        run_dir = workspace.run_dir(run)
        adapter = run_dir / "adapter"
        if not (adapter / "adapter_config.json").exists():
            raise MimeticError(f"Run {run_dir.name} has no adapter yet.", f"Train first: mimetic train --workspace {workspace.root}")
        vc = VoiceConfig.load(run_dir / "config.toml")
        dev = pick_device(device)
        precision = pick_precision(dev, vc.train.precision)
        tokenizer = load_tokenizer(vc.train.base_model)
        model = load_model(vc.train.base_model, dev, precision)
        try:
            model = PeftModel.from_pretrained(model, str(adapter))  # PEFT's input casts kept: callers may skip autocast
        except Exception as e:  # a truncated or damaged adapter file (SafetensorError, OSError, ValueError …)
            raise damaged_adapter(workspace, run_dir, e) from None
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
        self, prompt: str, params: SamplingParams, seed: int, on_text: Callable[[str], None] | None = None, *, system_prompt: str = ""
    ) -> tuple[str, int]:
        """Sample one continuation of ``prompt``; returns ``(text, number of new tokens)``.

        ``on_text`` receives decoded text as it is produced (streaming). The seed is set with
        ``torch.manual_seed`` just before generating.
        """
        import torch
        from transformers import TextStreamer

        from mimetic.models.loading import autocast

        ids = self.encode_prompt(prompt, system_prompt).to(self.device)
        streamer = None
        if on_text is not None:

            class _Stream(TextStreamer):
                def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                    on_text(text)

            streamer = _Stream(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        torch.manual_seed(seed)
        with torch.no_grad(), autocast(self.device, self.precision)():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pad_token_id=self.tokenizer.pad_token_id,
                                      streamer=streamer, **params.transformers_kwargs())
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
        from mimetic.models.loading import load_tokenizer

        run_dir = workspace.run_dir(run)
        if gguf is None:
            files = sorted((workspace.root / "exports" / run_dir.name).glob("voice-*.gguf"), key=lambda p: p.stat().st_size)
            if not files:
                raise MimeticError(
                    f"Run {run_dir.name} has no GGUF export yet.",
                    f"Export it first: mimetic export {run_dir.name} --workspace {workspace.root}",
                )
            gguf = files[0]
        vc = VoiceConfig.load(run_dir / "config.toml")
        llm = open_gguf(gguf, n_ctx=4096, verbose=False, n_threads=os.cpu_count() or 1)
        return cls(llm, load_tokenizer(vc.train.base_model), vc.train.base_model, str(gguf), vc.prepare.format)

    def generate(
        self, prompt: str, params: SamplingParams, seed: int, on_text: Callable[[str], None] | None = None, *, system_prompt: str = ""
    ) -> tuple[str, int]:
        """Sample one continuation of ``prompt`` in llama.cpp; returns ``(text, number of new tokens)``."""
        ids = prompt_ids(self.tokenizer, self.format, prompt, system_prompt)
        self.llm.reset()
        stream = self.llm.create_completion(ids, seed=seed, stream=True, **params.llama_cpp_kwargs())
        parts, n = [], 0
        for chunk in stream:
            choice = chunk["choices"][0]
            text = choice["text"]
            n += choice.get("finish_reason") is None or bool(text)  # the closing chunk carries no token
            parts.append(text)
            if on_text and text:
                on_text(text)
        return "".join(parts), n


__all__ = ["Engine", "GGUFVoice", "Voice", "load_llama", "prompt_ids"]
