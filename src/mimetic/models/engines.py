"""Inference engines: what runs a trained voice, behind one interface, and the one place that
chooses between them (:func:`open_voice`).

* :class:`Voice` — transformers: the base model with the run's LoRA adapter attached (PEFT);
  ``with voice.base():`` switches the adapter off, so base and voice share one copy of the
  weights (what ``compare`` and ``evaluate`` need). The reference, and the fallback.
* :class:`GGUFVoice` — llama.cpp (``llama-cpp-python``): either the base model's GGUF with the
  run's adapter converted to a GGUF LoRA and applied at load (:meth:`GGUFVoice.load_run`; no
  export needed, ``with voice.base():`` works too), or a full GGUF export
  (:meth:`GGUFVoice.load`). Much faster on a CPU; same prompts, same sampling chain.

Both satisfy :class:`Engine`, which is all :func:`mimetic.voice.generate.write` needs. Prompts are
tokenized the same way for both (:func:`prompt_ids`), and sampling settings are translated for
each by :class:`mimetic.models.sampling.SamplingParams`. :func:`load_llama` imports llama-cpp-python
with a writer-facing error; :mod:`mimetic.voice.export` uses it too, and the llama.cpp
converters (:func:`llama_cpp_tools`, :func:`convert_into`, :func:`lora_to_gguf`) live here so that
every stage that samples from a voice (the voice, training and evaluation layers) can open one.

The GGUF files behind :meth:`GGUFVoice.load_run`:

* the base model: the embedded model's own GGUF (or any ``.gguf`` base model) as it is; any
  other base model converted once by ``convert_hf_to_gguf.py`` (f16, or bf16 for a bf16
  checkpoint) and cached in ``<cache dir>/gguf/`` (:func:`base_gguf`);
* the adapter: ``runs/<id>/adapter.gguf``, converted by ``convert_lora_to_gguf.py`` (f32, a few
  MB, seconds) the first time the run is opened, and again if the adapter is newer
  (:func:`run_adapter_gguf`);
* the merged voice: ``runs/<id>/voice-q8_0.gguf``, the adapter merged into the base model's
  weights and stored as Q8_0 (:func:`run_merged_gguf`), made when training finishes for a small
  base model. Applying a LoRA at every layer costs a small model a quarter of its speed; merged,
  it decodes as fast as the base model. When it is there :meth:`GGUFVoice.load_run` writes with
  it and opens the base model's GGUF only when asked for the base model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from mimetic.core.config import VoiceConfig
from mimetic.core.events import OnEvent, Progress, Warning
from mimetic.errors import MimeticError
from mimetic.models.hardware import usable_cpus
from mimetic.models.sampling import SamplingParams
from mimetic.core.workspace import Workspace, check_free_disk

ENGINES = ("auto", "llama.cpp", "transformers")
"""The values of ``[generate] engine`` (:func:`open_voice`)."""


class Engine(Protocol):
    """What generating in the voice needs from an engine.

    Attributes:
        tokenizer: the base model's Hugging Face tokenizer (prompts are tokenized with it).
        base_model: the base model's name or path.
        adapter: what was added to the base model (the adapter folder, or the GGUF file).
        format: ``completion``, ``chat``, ``brief`` or ``mixed``, as the voice was trained (see
            :func:`prompt_ids`).
        parallel: how many prompts the engine decodes best at once (:meth:`complete`,
            :meth:`generate_parallel`); callers with many prompts send them in groups this size.
    """

    tokenizer: Any
    base_model: str
    adapter: str | None
    format: str
    engine: str
    parallel: int

    def generate(
        self, prompt: str, params: SamplingParams, seed: int, on_text: Callable[[str], None] | None = None, *, system_prompt: str = ""
    ) -> tuple[str, int]:
        """One continuation of ``prompt``: ``(text, number of new tokens)``; ``on_text`` gets
        decoded text as it is produced. The same ``seed`` and settings give the same text."""
        ...

    def generate_ids(self, ids: list[int], params: SamplingParams, seed: int) -> list[int]:
        """The new token ids after the prompt ``ids`` (the end-of-text token, if reached, not included)."""
        ...

    def generate_parallel(self, prompts: list[list[int]], params: SamplingParams, seeds: list[int]) -> list[list[int]]:
        """The new token ids after each prompt, prompt ``k`` drawn with ``seeds[k]`` as
        :meth:`generate_ids` draws it (the end-of-text token, if reached, not included)."""
        ...

    def generate_many(self, prompt: str, params: SamplingParams, seeds: list[int], *, system_prompt: str = "") -> list[tuple[str, int]]:
        """Continuations of one ``prompt``, one per seed (``write --best-of``), ``(text, number
        of new tokens)`` each as :meth:`generate` returns them."""
        ...

    def complete(self, prefixes: list[list[int]], params: SamplingParams, seed: int) -> list[str]:
        """One decoded continuation of each token prefix (``evaluate``'s samples); deterministic in ``seed``."""
        ...

    def base(self) -> Any:
        """Context manager: generate from the base model alone (the adapter switched off)."""
        ...


def prompt_ids(tokenizer: Any, fmt: str, prompt: str, system_prompt: str = "") -> list[int]:
    """Token ids of ``prompt`` as the voice was trained: plain text for a ``completion`` voice
    (after the beginning-of-sequence token where the model expects one: :func:`mimetic.models.loading.bos_ids`),
    the chat template with a generation prompt (and the system prompt, if any) for the others
    (``chat``, ``brief``, ``mixed``; the mode's marker is already in ``prompt``, see
    :func:`mimetic.corpus.briefs.request`)."""
    if fmt != "completion":
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [{"role": "user", "content": prompt}]
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
    from mimetic.models.loading import bos_ids

    return bos_ids(tokenizer) + list(tokenizer(prompt, add_special_tokens=False)["input_ids"])


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


# --------------------------------------------------------------------------------------------
# llama.cpp's converters (installed by `make install`), shared with mimetic.voice.export


def llama_cpp_tools() -> Path:
    """The folder with llama.cpp's converters (``convert_hf_to_gguf.py`` …), installed by ``make install``.

    ``MIMETIC_LLAMA_CPP`` overrides the default ``<venv>/share/mimetic/llama.cpp``.

    Raises:
        MimeticError: the converters are not installed.
    """
    d = Path(os.environ.get("MIMETIC_LLAMA_CPP", Path(sys.prefix) / "share" / "mimetic" / "llama.cpp"))
    if not (d / "convert_hf_to_gguf.py").exists():
        raise MimeticError(
            f"llama.cpp's GGUF converters are not installed (looked in {d}).",
            "Run `make install` in the mimetic folder: it builds llama-cpp-python and installs the converters.",
        )
    return d


def run_converter(script: str, args: list[str], what: str) -> None:
    """Run llama.cpp's converter ``script`` with ``args`` in a subprocess, with its own ``gguf-py``
    first on the path (not the ``gguf`` transformers uses) and offline.

    Raises:
        MimeticError: the converters are missing, or the converter failed (its last lines quoted;
            the hint says when llama.cpp does not support the architecture).
    """
    tools = llama_cpp_tools()
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    env["PYTHONPATH"] = str(tools / "gguf-py") + os.pathsep + str(tools)  # its own gguf, not transformers'
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run([sys.executable, str(tools / script), *args], capture_output=True, text=True, env=env, cwd=tools)
    if proc.returncode != 0:
        tail = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()][-3:]
        reason = " / ".join(tail)[-400:]
        hint = "The base model's architecture may not be supported by llama.cpp; the adapter and merged exports still work."
        if "not supported" in reason.lower():
            hint = "llama.cpp does not support this architecture; export 'adapter' and 'merged' instead."
        raise MimeticError(f"llama.cpp could not convert {what}: {reason}", hint)


def convert_into(out: Path, script: str, args: list[str], what: str) -> None:
    """Run a llama.cpp converter writing to a temporary name, renamed to ``out`` when complete (no
    half-written file is ever left under ``out``). Raises what :func:`run_converter` raises."""
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        run_converter(script, [*args, "--outfile", str(tmp)], what)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def check_lora_convertible(adapter_dir: Path) -> None:
    """Refuse the adapters llama.cpp's LoRA converter cannot convert.

    Raises:
        MimeticError: a DoRA adapter, or one that changes the embeddings (resized or trained tokens).
    """
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    if cfg.get("use_dora"):
        raise MimeticError(
            "This is a DoRA adapter; llama.cpp's LoRA converter cannot convert DoRA.",
            "Export 'merged' and 'gguf' instead (merging works for DoRA): --format merged,gguf,ollama",
        )
    saved = [m for m in (cfg.get("modules_to_save") or []) if any(k in m for k in ("embed", "lm_head", "wte"))]
    if saved or cfg.get("trainable_token_indices"):
        raise MimeticError(
            "This adapter changes the embeddings (resized or trained token embeddings); llama.cpp's LoRA converter refuses those.",
            "Export 'merged' and 'gguf' instead: --format merged,gguf,ollama",
        )


def convert_to_gguf(model_dir: Path, out: Path, outtype: str = "f16", what: str | None = None) -> None:
    """Convert a saved transformers model folder to GGUF with llama.cpp's ``convert_hf_to_gguf.py``.

    Written to a temporary name and renamed, so no half-written file is left under ``out``;
    ``what`` names the model in an error (default: the file's name).

    Raises:
        MimeticError: the converters are missing or llama.cpp cannot convert the architecture.
    """
    convert_into(out, "convert_hf_to_gguf.py", [str(model_dir), "--outtype", outtype], what or out.name)


def lora_to_gguf(adapter_dir: Path, base_dir: Path, out: Path, outtype: str = "f16") -> Path:
    """Convert a PEFT LoRA adapter folder to a GGUF LoRA with ``convert_lora_to_gguf.py``.

    Args:
        adapter_dir: the folder with ``adapter_config.json`` and ``adapter_model.safetensors``.
        base_dir: the base model's transformers folder (its ``config.json`` names the architecture).
        out: the GGUF file to write (atomically).
        outtype: ``f32``, ``f16``, ``bf16`` or ``q8_0`` (the adapter's tensors).

    Returns:
        ``out``.

    Raises:
        MimeticError: a DoRA or embedding-changing adapter, the converters are missing, or
            llama.cpp cannot convert the architecture.
    """
    check_lora_convertible(adapter_dir)
    convert_into(out, "convert_lora_to_gguf.py", [str(adapter_dir), "--base", str(base_dir), "--outtype", outtype], "the adapter")
    return out


def base_gguf(name: str, outtype: str | None = None) -> tuple[Path, float]:
    """The base model ``name`` as a GGUF file llama.cpp can run, and the seconds spent converting it
    (0 when nothing was converted).

    A ``.gguf`` base model (the embedded SmolLM2 is one) is used as it is. Any other is converted
    once by ``convert_hf_to_gguf.py`` — f16, or bf16 when its checkpoint is bf16 — and cached in
    ``<cache dir>/gguf/`` (:func:`mimetic.models.loading.cache_dir`), keyed by its folder, weights'
    sizes and times. ``outtype`` (e.g. ``"q8_0"``) asks for that type instead, converted from the
    weights transformers loads (a GGUF base model's dequantized copy), whatever the source: the
    base model beside a merged voice (:data:`BASE_BESIDE_MERGED`).

    Raises:
        MimeticError: the model cannot be found, the converters are missing, not enough disk, or
            llama.cpp cannot convert the architecture.
    """
    from mimetic.models.loading import base_model_dir, cache_dir, resolve

    src = resolve(name)
    if src.kind == "gguf" and outtype is None:
        return Path(src.location), 0.0
    folder = base_model_dir(name).resolve()
    cfg = json.loads((folder / "config.json").read_text())
    outtype = outtype or ("bf16" if (cfg.get("torch_dtype") or cfg.get("dtype")) == "bfloat16" else "f16")
    weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) + [folder / "config.json"]
    stamp = "|".join(f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in weights)
    key = hashlib.sha256(f"{folder}|{stamp}".encode()).hexdigest()[:12]
    out = cache_dir() / "gguf" / f"{folder.name.lower()}-{key}-{outtype}.gguf"
    if out.exists():
        return out, 0.0
    out.parent.mkdir(parents=True, exist_ok=True)
    check_free_disk(out.parent, int(1.2 * sum(p.stat().st_size for p in weights)) + 2**20, "the base model's GGUF")
    t = time.perf_counter()
    convert_to_gguf(folder, out, outtype, f"the base model {name}")
    return out, time.perf_counter() - t


ADAPTER_GGUF = "adapter.gguf"
"""The run's adapter as a GGUF LoRA, in the run's folder (:func:`run_adapter_gguf`)."""


def _run_adapter(run_dir: Path) -> Path:
    """The run's adapter folder. Raises :class:`MimeticError` when the run has none yet."""
    adapter = run_dir / "adapter"
    if not (adapter / "adapter_config.json").exists() or not (adapter / "adapter_model.safetensors").exists():
        raise MimeticError(f"Run {run_dir.name} has no adapter yet.", "Train first: mimetic train")
    return adapter


def made_from_current_adapter(out: Path, run_dir: Path) -> bool:
    """Whether ``out``, made from the run's adapter, is there and not older than the adapter's weights."""
    weights = run_dir / "adapter" / "adapter_model.safetensors"
    return out.exists() and weights.exists() and out.stat().st_mtime >= weights.stat().st_mtime


def run_adapter_gguf(run_dir: Path, base_model: str) -> tuple[Path, float]:
    """``runs/<id>/adapter.gguf``: the run's adapter as a GGUF LoRA (f32), converted when missing
    or older than the adapter; and the seconds spent converting (0 when it was there).

    Raises:
        MimeticError: no adapter, an adapter llama.cpp cannot take (DoRA, trained embeddings),
            the converters are missing, or the conversion failed.
    """
    from mimetic.models.loading import base_model_dir

    adapter = _run_adapter(run_dir)
    out = run_dir / ADAPTER_GGUF
    if made_from_current_adapter(out, run_dir):
        return out, 0.0
    t = time.perf_counter()
    lora_to_gguf(adapter, base_model_dir(base_model), out, "f32")
    return out, time.perf_counter() - t


MERGED_GGUF = "voice-q8_0.gguf"
"""The run's voice merged into one GGUF (Q8_0), in the run's folder (:func:`run_merged_gguf`)."""

BASE_BESIDE_MERGED = "q8_0"
"""The type of the base model's GGUF that writes beside a merged voice (``compare``, evaluation's
base-model samples), converted once from the weights transformers loads: the voice's own type, so
that both sides are the same weights at the same precision, and 1.6× the embedded Q4_1 file's
tokens/s in llama.cpp's batched decoding (56 evaluation openings × 256 tokens on a 2-core AMD EPYC:
224–246 tokens/s against 150–156 in the same run; ``benchmarks/generation_speed.py --base-types``)."""

MERGE_BELOW_BYTES = 2**30
"""Base models whose GGUF is smaller than this (1 GiB) get a merged voice when training ends.
Measured on SmolLM2-135M (Q4_1 base, rank-16 LoRA on all seven projections), 200 tokens on a
2-core AMD EPYC: the adapter applied at load decoded 72 tokens/s, merged Q8_0 101, merged f16 75
(``benchmarks/RESULTS.md``; ``benchmarks/generation_speed.py`` times both paths). The adapter's
share of the work is rank ÷ width, so larger models lose less to it and would pay in disk (a Q8_0
copy per run, about 1.1 bytes a weight)."""


def run_merged_gguf(run_dir: Path, base_model: str) -> tuple[Path, float]:
    """``runs/<id>/voice-q8_0.gguf``: the base model with the run's adapter merged into its weights
    (PEFT's ``merge_and_unload`` in fp32) converted by ``convert_hf_to_gguf.py`` straight to Q8_0;
    made again when older than the adapter. Returns it and the seconds spent (0 when it was
    there): about 13 s and 145 MB for SmolLM2-135M.

    Q8_0 rather than the base GGUF's own type: the merged weights are the dequantized base plus
    the adapter's product, which a 4-bit type would round again.

    Raises:
        MimeticError: no adapter, a damaged one, the converters are missing, not enough disk, or
            llama.cpp cannot convert the architecture.
    """
    import shutil
    import tempfile

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from mimetic.models.loading import base_model_dir, quiet_hf

    run_dir = Path(run_dir).resolve()  # the converter runs in a folder of its own
    adapter = _run_adapter(run_dir)
    out = run_dir / MERGED_GGUF
    if made_from_current_adapter(out, run_dir):
        return out, 0.0
    t = time.perf_counter()
    quiet_hf()
    folder = base_model_dir(base_model)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    check_free_disk(run_dir, int(n_params * (4 + 1.1)) + 2**20, "the merged voice")
    try:
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().eval()
    except Exception as e:  # a truncated or damaged adapter file
        raise MimeticError(f"The adapter of run {run_dir.name} cannot be read: {e}", "Train again, or resume the run.") from None
    with tempfile.TemporaryDirectory(prefix=".merged-", dir=run_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        del model
        for f in folder.iterdir():  # the tokenizer and its templates: everything but the weights and config
            if f.is_file() and f.name != "config.json" and not f.name.endswith((".safetensors", ".bin")) and not (Path(tmp) / f.name).exists():
                shutil.copy(f, tmp)
        convert_to_gguf(Path(tmp), out, "q8_0", "the merged voice")
    return out, time.perf_counter() - t


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

    engine = "transformers"
    parallel = 8
    """Prompts :meth:`complete` pads into one batch best: evaluate's long-standing batch size
    (``[evaluate] batch_size``); larger batches were not measured faster on a CPU."""
    note = ""  # what open_voice said when it chose this engine

    def __init__(self, model: Any, tokenizer: Any, base_model: str, adapter: str | None, fmt: str, device: str, precision: str):
        self.model, self.tokenizer = model, tokenizer
        self.base_model, self.adapter, self.format = base_model, adapter, fmt
        self.device, self.precision = device, precision

    @classmethod
    def load(cls, workspace: Workspace, run: str | None = None, device: str = "auto", precision: str | None = None) -> "Voice":
        """Load the workspace's base model and the best adapter of ``run`` (default: latest), in
        ``precision`` (``fp32``, ``bf16``, ``fp16``; default: the run's training precision,
        ``auto`` resolved by :func:`mimetic.models.loading.pick_precision`).

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
        precision = pick_precision(dev, precision or vc.train.precision)
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

    def generate_ids(self, ids: list[int], params: SamplingParams, seed: int) -> list[int]:
        """The new token ids after the prompt ``ids`` (seeded with ``torch.manual_seed``), without
        the end-of-text token that stopped them, if any."""
        import torch

        from mimetic.models.loading import autocast

        x = torch.tensor([list(ids)], device=self.device)
        torch.manual_seed(seed)
        with torch.no_grad(), autocast(self.device, self.precision)():
            out = self.model.generate(input_ids=x, attention_mask=torch.ones_like(x), pad_token_id=self.tokenizer.pad_token_id,
                                      **params.transformers_kwargs())
        new = out[0, x.shape[1] :].tolist()
        return new[:-1] if new and new[-1] in self._stops() else new

    def generate_parallel(self, prompts: list[list[int]], params: SamplingParams, seeds: list[int]) -> list[list[int]]:
        """The new token ids after each prompt (the end-of-text token excluded). Argmax decoding
        (``SamplingParams.argmax``: no draw, no penalty) of prompts of one length runs as one
        batch of ``generate``, and ``seeds`` do not matter; anything else runs one prompt after
        another, prompt ``k`` drawn with ``seeds[k]`` exactly as :meth:`generate_ids` draws it."""
        import torch

        from mimetic.models.loading import autocast

        if params == SamplingParams.argmax(params.max_new_tokens) and len({len(p) for p in prompts}) == 1 and len(prompts) > 1:
            x = torch.tensor([list(p) for p in prompts], device=self.device)
            with torch.no_grad(), autocast(self.device, self.precision)():
                out = self.model.generate(input_ids=x, attention_mask=torch.ones_like(x), pad_token_id=self.tokenizer.pad_token_id,
                                          **params.transformers_kwargs())
            stops = self._stops()
            rows = []
            for row in out[:, x.shape[1] :].tolist():
                k = next((i for i, t in enumerate(row) if t in stops), len(row))
                rows.append(row[:k])
            return rows
        return [self.generate_ids(list(p), params, seed) for p, seed in zip(prompts, seeds)]

    def generate_many(self, prompt: str, params: SamplingParams, seeds: list[int], *, system_prompt: str = "") -> list[tuple[str, int]]:
        """Continuations of one ``prompt``, one per seed, one after another (:meth:`generate`)."""
        return [self.generate(prompt, params, seed, system_prompt=system_prompt) for seed in seeds]

    def _stops(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        return {t for t in (eos if isinstance(eos, list) else [eos]) if t is not None} | {self.tokenizer.eos_token_id}

    def complete(self, prefixes: list[list[int]], params: SamplingParams, seed: int) -> list[str]:
        """Continue token prefixes in one batch with ``params`` (shorter ones left-padded and
        masked, so equal-length prefixes run exactly as given; ``torch.manual_seed(seed)`` once
        for the batch); returns the decoded continuations, one per prefix."""
        import torch

        from mimetic.models.loading import autocast

        n = max(len(p) for p in prefixes)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        ids = torch.tensor([[pad] * (n - len(p)) + list(p) for p in prefixes], device=self.device)
        mask = torch.tensor([[0] * (n - len(p)) + [1] * len(p) for p in prefixes], device=self.device)
        torch.manual_seed(seed)
        with torch.no_grad(), autocast(self.device, self.precision)():
            out = self.model.generate(input_ids=ids, attention_mask=mask, pad_token_id=pad, **params.transformers_kwargs())
        return [self.tokenizer.decode(row[n:], skip_special_tokens=True) for row in out]


class GGUFVoice:
    """A voice run by llama.cpp: much faster on a CPU than transformers, with the same prompts,
    sampling chain and log.

    Two ways to make one: :meth:`load_run` (the base model's GGUF with the run's adapter as a GGUF
    LoRA applied at load: what :func:`open_voice` uses, no export needed; ``with voice.base():``
    switches the adapter off) and :meth:`load` (a full ``mimetic export``). Prompts are
    tokenized with the voice's own tokenizer (its chat template for chat voices), so llama.cpp
    sees exactly the tokens transformers would; texts are decoded with it too.

    Sampling is llama.cpp's sampler chain built from
    :meth:`mimetic.models.sampling.SamplingParams.llama_cpp_chain` (transformers' order: penalty
    over the whole sequence, temperature, top-k, top-p, min-p, draw); greedy decoding gives
    transformers' tokens (``tests/test_engines.py``). Many continuations at once (best-of drafts,
    evaluation's samples) are decoded in parallel, one forward pass per step for all
    (:meth:`generate_parallel`): 1.75× the tokens/s of one after another for 8 sequences on a
    busy 2-core EPYC (``benchmarks/generation_speed.py``).
    """

    engine = "llama.cpp"
    parallel = 32
    """Slots: the sequences :meth:`generate_parallel` decodes at once (more prompts wait for a slot).
    48 evaluation openings × 256 tokens of the merged Dickens voice on a 2-core AMD EPYC (bf16
    matmul peak 331 GFLOP/s that day) decoded at 211 tokens/s eight at a time, 239 by 16, 249 by 24,
    267 by 32, 261 by 48 (``benchmarks/generation_speed.py --parallel``, RESULTS.md)."""

    def __init__(self, llm: Any, tokenizer: Any, base_model: str, adapter: str, fmt: str, lora: Any = None):
        self.llm, self.tokenizer = llm, tokenizer
        self.base_model, self.adapter, self.format = base_model, adapter, fmt
        self._lora = lora  # the llama_adapter_lora pointer when the adapter is applied separately
        self._base_gguf: tuple[str, int] | None = None  # a merged voice's base model: (name, context), opened on first use
        self._base: tuple[Any, dict] | None = None  # … and once opened: (Llama, its parallel contexts)
        self._on = True
        self._contexts: dict[tuple[int, int], Any] = {}  # parallel decoding: (sequences, tokens each) → context
        self._stops = {t for t in (tokenizer.eos_token_id, llm.token_eos()) if t is not None and t >= 0}
        self.note = ""  # what open_voice said when it chose this engine

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
        llm = open_gguf(gguf, n_ctx=4096, verbose=False, n_threads=_threads())
        return cls(llm, load_tokenizer(vc.train.base_model), vc.train.base_model, str(gguf), vc.prepare.format)

    @classmethod
    def load_run(cls, workspace: Workspace, run: str | None = None, n_ctx: int = 4096) -> "GGUFVoice":
        """The base model's GGUF (:func:`base_gguf`) with ``run``'s adapter (default: the published
        version) converted to ``runs/<id>/adapter.gguf`` (:func:`run_adapter_gguf`) and applied at
        load; ``n_ctx`` tokens of context (prompt and continuation). ``voice.converted_s`` holds
        the seconds spent converting (0 when both files were there), ``voice.load_s`` loading.

        Raises:
            MimeticError: no run or adapter, llama-cpp-python or its converters missing, an
                adapter or architecture llama.cpp cannot take, or a file llama.cpp cannot load.
        """
        from mimetic.models.loading import load_tokenizer

        load_llama()
        run_dir = workspace.run_dir(run)
        vc = VoiceConfig.load(run_dir / "config.toml") if (run_dir / "config.toml").exists() else workspace.load_config()
        base, base_s = base_gguf(vc.train.base_model)
        merged = run_dir / MERGED_GGUF
        threads = _threads()
        if made_from_current_adapter(merged, run_dir):
            t = time.perf_counter()
            llm = open_gguf(merged, n_ctx=n_ctx, verbose=False, n_threads=threads, n_threads_batch=threads)
            voice = cls(llm, load_tokenizer(vc.train.base_model), vc.train.base_model, str(merged), vc.prepare.format)
            voice._base_gguf = (vc.train.base_model, n_ctx)
            voice.converted_s, voice.load_s = base_s, time.perf_counter() - t
            return voice
        lora, lora_s = run_adapter_gguf(run_dir, vc.train.base_model)
        t = time.perf_counter()
        llm = open_gguf(base, n_ctx=n_ctx, verbose=False, n_threads=threads, n_threads_batch=threads, lora_path=str(lora))
        voice = cls(llm, load_tokenizer(vc.train.base_model), vc.train.base_model, str(lora), vc.prepare.format,
                    lora=llm._lora_adapter)
        voice.converted_s, voice.load_s = base_s + lora_s, time.perf_counter() - t
        return voice

    @contextlib.contextmanager
    def base(self) -> Iterator[None]:
        """Generate with the adapter switched off (the base model), then on again.

        A merged voice (``runs/<id>/voice-q8_0.gguf``) opens the base model's GGUF beside it the
        first time (:data:`BASE_BESIDE_MERGED`, converted once per machine: about 10 s for
        SmolLM2-135M), and writes with that inside the block.

        Raises:
            MimeticError: a voice loaded from a full export, where the base model is not at hand.
        """
        if self._base_gguf is not None:
            if self._base is None:
                name, n_ctx = self._base_gguf
                path = base_gguf(name, BASE_BESIDE_MERGED)[0]
                threads = _threads()
                self._base = (open_gguf(path, n_ctx=n_ctx, verbose=False, n_threads=threads, n_threads_batch=threads), {})
            voice = (self.llm, self._contexts)
            self.llm, self._contexts = self._base
            self._on = False
            try:
                yield
            finally:
                self._base = (self.llm, self._contexts)
                self.llm, self._contexts = voice
                self._on = True
            return
        if self._lora is None:
            raise MimeticError("This voice is a merged GGUF export: its base model cannot be switched on.",
                               "Open the run with open_voice (the base GGUF with the adapter applied separately).")
        self._set_lora(False)
        try:
            yield
        finally:
            self._set_lora(True)

    def _set_lora(self, on: bool) -> None:
        import ctypes

        llama_cpp = load_llama()
        for ctx in [self.llm._ctx.ctx] + [c.ctx for c in self._contexts.values()]:
            if on:
                adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._lora)
                scales = (ctypes.c_float * 1)(1.0)
                rc = llama_cpp.llama_set_adapters_lora(ctx, adapters, 1, scales)
            else:
                rc = llama_cpp.llama_set_adapters_lora(ctx, None, 0, None)
            if rc != 0:
                raise MimeticError(f"llama.cpp could not {'apply' if on else 'remove'} the adapter (status {rc}).")
        self._on = on

    def _sampler(self, params: SamplingParams, seed: int, history: list[int]) -> Any:
        """llama.cpp's sampler chain for ``params`` (see the class docstring); the prompt's tokens
        are its penalty's history, as in transformers."""
        from llama_cpp._internals import LlamaSampler

        sampler = LlamaSampler()
        for name, args in params.llama_cpp_chain():
            if name == "penalties":
                args = (self.llm.n_vocab(), self.llm.n_ctx(), *args[2:])
            elif name == "dist":
                args = (seed % 2**32,)
            getattr(sampler, f"add_{name}")(*args)
        for t in history:
            sampler.accept(t)
        return sampler

    def generate_ids(self, ids: list[int], params: SamplingParams, seed: int,
                     on_ids: Callable[[list[int]], None] | None = None) -> list[int]:
        """The new token ids after the prompt ``ids`` (the end-of-text token that stopped them not
        included); ``on_ids`` gets the ids so far after each new one.

        Raises:
            MimeticError: the prompt and ``params.max_new_tokens`` do not fit the context.
        """
        llm = self.llm
        if len(ids) + params.max_new_tokens > llm.n_ctx():
            raise MimeticError(f"The prompt ({len(ids)} tokens) and {params.max_new_tokens} new tokens do not fit "
                               f"llama.cpp's context of {llm.n_ctx()} tokens.", "Shorten the prompt or ask for fewer new tokens.")
        is_eog = load_llama().llama_vocab_is_eog
        llm.reset()
        sampler = self._sampler(params, seed, list(ids))
        llm.eval(list(ids))
        out: list[int] = []
        while len(out) < params.max_new_tokens:
            token = sampler.sample(llm._ctx, -1)  # samples from the last logits and accepts the token
            if token in self._stops or is_eog(llm._model.vocab, token):
                break
            out.append(token)
            if on_ids:
                on_ids(out)
            if len(out) < params.max_new_tokens:
                llm.eval([token])
        sampler.close()
        return out

    def _parallel_context(self, n: int, per_seq: int) -> Any:
        """A llama.cpp context for ``n`` sequences of up to ``per_seq`` tokens at once (the last one
        made is kept), with the adapter as it is now."""
        import ctypes

        from llama_cpp._internals import LlamaContext

        llama_cpp = load_llama()
        key = (n, -(-per_seq // 256) * 256)
        if key not in self._contexts:
            own = self.llm.context_params  # the same settings (attention kernel, cache types) as one stream's
            params = type(own).from_buffer_copy(own)
            params.n_ctx, params.n_seq_max = key[0] * key[1], n
            params.n_batch = params.n_ubatch = max(512, n)
            params.n_threads = params.n_threads_batch = _threads()
            params.kv_unified = False
            ctx = LlamaContext(model=self.llm._model, params=params, verbose=False)
            if self._lora is not None and self._on:
                adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._lora)
                llama_cpp.llama_set_adapters_lora(ctx.ctx, adapters, 1, (ctypes.c_float * 1)(1.0))
            self._contexts = {key: ctx}  # one at a time
        return self._contexts[key]

    def generate_parallel(self, prompts: list[list[int]], params: SamplingParams, seeds: list[int]) -> list[list[int]]:
        """Continue several token prompts at once (llama.cpp's batched decoding: one forward pass
        per step for every sequence writing); prompt ``k`` is sampled with ``seeds[k]`` exactly as
        :meth:`generate_ids` samples it (the same tokens for the same seed, up to the rounding of
        batched matmuls). Returns the new ids of each, the end-of-text token excluded.

        At most :attr:`parallel` prompts write at once, each in a slot of its own (a KV stream);
        when one ends, the next prompt takes its slot (continuous batching), so passages that stop
        early leave no slot idle while prompts wait.

        Raises:
            MimeticError: a prompt and ``params.max_new_tokens`` do not fit the context.
        """
        from llama_cpp._internals import LlamaBatch

        llama_cpp = load_llama()
        n = len(prompts)
        if n == 1:
            return [self.generate_ids(prompts[0], params, seeds[0])]
        longest = max(len(p) for p in prompts) + params.max_new_tokens
        if longest > self.llm.n_ctx():
            raise MimeticError(f"A prompt and {params.max_new_tokens} new tokens do not fit llama.cpp's context of "
                               f"{self.llm.n_ctx()} tokens.", "Shorten the prompts or ask for fewer new tokens.")
        slots = min(n, self.parallel)
        ctx = self._parallel_context(slots, longest)
        ctx.kv_cache_clear()
        vocab = self.llm._model.vocab
        size = llama_cpp.llama_n_batch(ctx.ctx)  # the most tokens one decode of this context takes
        batch = LlamaBatch(n_tokens=size, embd=0, n_seq_max=1, verbose=False)
        b = batch.batch
        outs: list[list[int]] = [[] for _ in prompts]
        samplers: dict[int, Any] = {}
        waiting = iter(range(n))
        held: list[int | None] = [None] * slots  # the prompt writing in each slot; None: idle
        nxt = [0] * slots  # the position the slot's next token takes in its KV stream

        def writes_on(k: int, tok: int) -> bool:
            """Keep prompt ``k``'s new token ``tok``; whether it goes on writing."""
            if tok in self._stops or llama_cpp.llama_vocab_is_eog(vocab, tok):
                return False
            outs[k].append(tok)
            return len(outs[k]) < params.max_new_tokens

        def start(j: int) -> None:
            """The next waiting prompt into slot ``j``: its tokens decoded, its first new one drawn."""
            ctx.kv_cache_seq_rm(j, -1, -1)
            held[j], nxt[j] = None, 0
            for k in waiting:
                p = prompts[k]
                samplers[k] = self._sampler(params, seeds[k], list(p))
                for at in range(0, len(p), size):  # in chunks of the batch's size, the last token's logits kept
                    chunk = p[at : at + size]
                    b.n_tokens = len(chunk)
                    for i, tok in enumerate(chunk):
                        b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, at + i, 1, i == len(chunk) - 1
                        b.seq_id[i][0] = j
                    ctx.decode(batch)
                if writes_on(k, samplers[k].sample(ctx, -1)):  # drawn now: the next decode overwrites the logits
                    held[j], nxt[j] = k, len(p)
                    return
                ctx.kv_cache_seq_rm(j, -1, -1)

        for j in range(slots):
            start(j)
        while any(k is not None for k in held):
            # llama.cpp splits a step whose sequences are not 0..m-1 into one pass per run of
            # consecutive ids (each slot is a KV stream of its own), which made a thinning batch twice
            # as slow per step: idle slots below the last busy one are fed a filler token (no logits)
            # so that every step is one pass.
            top = max(j for j, k in enumerate(held) if k is not None) + 1
            b.n_tokens = top
            for j in range(top):
                k = held[j]
                b.token[j], b.pos[j], b.n_seq_id[j], b.logits[j] = outs[k][-1] if k is not None else 0, nxt[j], 1, k is not None
                b.seq_id[j][0] = j
                nxt[j] += 1
            ctx.decode(batch)
            ended = [j for j in range(top) if held[j] is not None and not writes_on(held[j], samplers[held[j]].sample(ctx, j))]
            for j in ended:  # after every slot has drawn: starting a prompt overwrites the step's logits
                start(j)
        for smp in samplers.values():
            smp.close()
        batch.close()
        return outs

    def generate(
        self, prompt: str, params: SamplingParams, seed: int, on_text: Callable[[str], None] | None = None, *, system_prompt: str = ""
    ) -> tuple[str, int]:
        """Sample one continuation of ``prompt`` in llama.cpp; returns ``(text, number of new
        tokens)``, the end-of-text token counted as transformers counts it. ``on_text`` gets the
        text as it is written (whole characters only)."""
        shown = [""]

        def stream(ids: list[int]) -> None:
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            if text.endswith("\ufffd") or len(text) <= len(shown[0]):
                return  # half of a multi-byte character: wait for the rest
            on_text(text[len(shown[0]) :])  # type: ignore[misc]
            shown[0] = text

        ids = prompt_ids(self.tokenizer, self.format, prompt, system_prompt)
        new = self.generate_ids(ids, params, seed, stream if on_text else None)
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        if on_text and text.startswith(shown[0]) and len(text) > len(shown[0]):
            on_text(text[len(shown[0]) :])
        return text, len(new) + int(len(new) < params.max_new_tokens)

    def generate_many(self, prompt: str, params: SamplingParams, seeds: list[int], *, system_prompt: str = "") -> list[tuple[str, int]]:
        """Continuations of one ``prompt``, one per seed, decoded in parallel (``write --best-of``);
        ``(text, number of new tokens)`` each, counted as :meth:`generate` counts them."""
        ids = prompt_ids(self.tokenizer, self.format, prompt, system_prompt)
        outs = self.generate_parallel([ids] * len(seeds), params, seeds)
        return [(self.tokenizer.decode(o, skip_special_tokens=True), len(o) + int(len(o) < params.max_new_tokens)) for o in outs]

    def complete(self, prefixes: list[list[int]], params: SamplingParams, seed: int) -> list[str]:
        """One decoded continuation of each token prefix, decoded in parallel
        (:meth:`generate_parallel`); prefix ``k`` is drawn with seed ``seed * 1000003 + k``
        (deterministic, distinct within and across batches)."""
        outs = self.generate_parallel(prefixes, params, [seed * 1_000_003 + k for k in range(len(prefixes))])
        return [self.tokenizer.decode(o, skip_special_tokens=True) for o in outs]


def _threads() -> int:
    """llama.cpp's threads: the CPUs this process may use, less those other processes keep busy
    now, at least one. ``MIMETIC_LLAMA_THREADS`` overrides it.

    llama.cpp's threads wait for each other by spinning at every step, so a thread that shares its
    core with another busy process stalls all of them: on a 2-core machine at load 9, SmolLM2
    decoded 2 tokens/s with 2 threads and 40 with 1 (``benchmarks/generation_speed.py``). "Busy now"
    is measured over 0.2 s from ``/proc/stat`` (:func:`_busy_cpus`), not from the 1-minute load
    average, which still counts this process's own training or evaluation of a minute ago (on
    2 cores that made every evaluation after training decode on one thread).
    """
    if os.environ.get("MIMETIC_LLAMA_THREADS"):
        return max(1, int(os.environ["MIMETIC_LLAMA_THREADS"]))
    usable = usable_cpus()
    busy = _busy_cpus()
    return max(1, min(usable, round(usable - busy + 0.3)))


def _busy_cpus(seconds: float = 0.2) -> float:
    """How many CPUs other processes keep busy now: the busy share of all CPUs' time over
    ``seconds`` (``/proc/stat``: everything but idle and iowait) × the CPUs; the 1-minute load
    average where there is no ``/proc/stat`` (macOS), 0 when neither can be read."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0)

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
        cpus = os.cpu_count() or 1
        return cpus * (1 - (idle1 - idle0) / max(1, total1 - total0))
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except OSError:  # pragma: no cover - no load average on this platform
            return 0.0


# --------------------------------------------------------------------------------------------
# The one place that chooses the engine


def _say_stderr(event: Any) -> None:
    print(event.message, file=sys.stderr)


def open_voice(workspace: Workspace, run: str | None = None, *, engine: str = "auto", device: str = "auto",
               precision: str | None = None, on_event: OnEvent | None = None) -> Any:
    """The engine every stage that samples from a voice uses: write, best-of, rewrite, compare,
    evaluate's samples, the identity probe, drift, the desk.

    ``engine="auto"`` opens llama.cpp (:meth:`GGUFVoice.load_run`: the base model's GGUF, the
    run's adapter converted once to ``runs/<id>/adapter.gguf``) on a CPU, and transformers
    (:meth:`Voice.load`, the reference) on a GPU, or when llama.cpp cannot run this voice: not
    installed, an architecture or adapter it does not support, a conversion that fails. The
    choice is said in one line, an event of stage ``generate`` (``Progress`` when llama.cpp
    writes, ``Warning`` when transformers writes instead; the line is printed on stderr when no
    ``on_event`` is given), e.g. ``writing with llama.cpp (adapter converted in 3 s)`` or
    ``llama.cpp is not installed: writing with transformers (slower)``; the engine keeps it as
    ``.note``. ``engine="llama.cpp"`` or ``"transformers"`` forces one (tests, benchmarks):
    llama.cpp's failure is then raised.

    Args:
        workspace: the voice.
        run: a finished run's id (default: the published version).
        engine: ``auto``, ``llama.cpp`` or ``transformers`` (``[generate] engine``).
        device: transformers' device (``auto``: CUDA, MPS, else CPU).
        precision: transformers' precision (default: the run's training precision).
        on_event: receives the one line.

    Returns:
        An :class:`Engine` (:class:`GGUFVoice` or :class:`Voice`), with ``.engine`` its name.

    Raises:
        MimeticError: an unknown engine, no finished run or adapter, or (forced ``llama.cpp``)
            anything :meth:`GGUFVoice.load_run` raises.
    """
    if engine not in ENGINES:
        raise MimeticError(f"Unknown engine {engine!r}.", "Use --engine auto, llama.cpp or transformers.")
    say = on_event or _say_stderr
    gpu = ""
    if engine == "auto":
        from mimetic.models.loading import pick_device

        gpu = "" if pick_device(device) == "cpu" else pick_device(device)
    reason = ""
    if engine == "llama.cpp" or (engine == "auto" and not gpu):
        try:
            if engine == "auto":
                load_llama()
                llama_cpp_tools()
            voice = GGUFVoice.load_run(workspace, run)
        except MimeticError as e:
            if engine == "llama.cpp":
                raise
            reason = _why_not(e)
        else:
            if voice.adapter.endswith(MERGED_GGUF):
                how = f"base model converted in {voice.converted_s:.0f} s, merged voice" if voice.converted_s else "merged voice ready"
            else:
                how = f"adapter converted in {voice.converted_s:.0f} s" if voice.converted_s else "adapter.gguf ready"
            voice.note = f"writing with llama.cpp ({how}, loaded in {voice.load_s:.1f} s)"
            say(Progress("generate", message=voice.note))
            return voice
    tvoice = Voice.load(workspace, run, device=device, precision=precision)
    if reason:
        tvoice.note = f"{reason}: writing with transformers (slower)"
        say(Warning("generate", message=tvoice.note, hint="`make install` builds llama.cpp" if "installed" in reason else ""))
    else:
        tvoice.note = f"writing with transformers on {gpu}" if gpu else "writing with transformers (asked for)"
        say(Progress("generate", message=tvoice.note))
    return tvoice


def _why_not(error: MimeticError) -> str:
    """The short reason llama.cpp cannot run a voice, for the one line."""
    text = str(error.args[0] if error.args else error)
    if "not installed" in text:
        return "llama.cpp is not installed"
    if "could not convert" in text or "DoRA" in text or "embeddings" in text:
        return "llama.cpp cannot convert this voice (" + text.split(":", 1)[-1].strip()[:80] + ")"
    return "llama.cpp could not open this voice (" + text[:80] + ")"


__all__ = ["BASE_BESIDE_MERGED", "ENGINES", "Engine", "GGUFVoice", "Voice", "base_gguf", "check_lora_convertible", "convert_into", "convert_to_gguf", "llama_cpp_tools", "load_llama",
           "lora_to_gguf", "open_gguf", "open_voice", "prompt_ids", "run_adapter_gguf", "run_converter", "run_merged_gguf"]
