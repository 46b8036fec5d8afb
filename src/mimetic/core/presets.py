"""Presets: the setups of the writers this project grew from, and the base models mimetic knows.

A **preset** is a named bundle of settings for one kind of machine — base model, LoRA or QLoRA,
precision, batch, schedule, training format and GGUF quantization — taken from a writer's own
account of what worked. ``--preset NAME`` on ``mimetic voice``, ``prepare`` or ``train`` writes
its settings into the voice's ``mimetic.toml`` (``[train] preset`` names it), where every one of
them can be read and changed; options given on the same command line win over the preset.

The **catalog** (:data:`BASE_MODELS`) lists the base models that ``--base-model auto`` chooses
among, with the sizes a memory and speed estimate needs (from each model's ``config.json`` on the
Hugging Face hub); :mod:`mimetic.models.hardware` does the choosing.

Settings a source account does not give are mimetic's defaults, and say so in ``filled_in``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mimetic.core.config import EMBEDDED_ALIASES, EMBEDDED_MODEL, VoiceConfig, default_learning_rate, replace
from mimetic.errors import MimeticError


@dataclass(frozen=True)
class BaseModel:
    """A base model's shape, enough to estimate training memory and speed without loading it.

    Attributes:
        id: the Hugging Face hub id (or :data:`~mimetic.core.config.EMBEDDED_MODEL`).
        arch: transformers' architecture (``LlamaForCausalLM``, ``Qwen2ForCausalLM``, ``PhiForCausalLM``).
        params: parameters in all, embeddings included.
        hidden_size, layers, heads, kv_heads, intermediate_size, vocab_size: from ``config.json``.
        instruct: an instruction-tuned (chat) model: it can write briefs and chat.
        licence: the model's licence, as its model card names it.
    """

    id: str
    arch: str
    params: float
    hidden_size: int
    layers: int
    heads: int
    kv_heads: int
    intermediate_size: int
    vocab_size: int
    tied_embeddings: bool
    instruct: bool
    licence: str

    @property
    def embedding_params(self) -> float:
        """Parameters of the token embeddings and, when untied, the output layer."""
        return self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)

    def lora_params(self, r: int) -> float:
        """Trainable parameters of rank-``r`` LoRA on every linear layer of every block
        (PEFT's ``all-linear``: attention q, k, v, o and the MLP), Hu et al. 2021: ``r·(d_in + d_out)`` each."""
        h, i, kv = self.hidden_size, self.intermediate_size, self.hidden_size * self.kv_heads // self.heads
        attention = 2 * (h + h) + 2 * (h + kv)  # q and o; k and v
        mlp = 2 * (h + i) if self.arch == "PhiForCausalLM" else 3 * (h + i)  # fc1, fc2 / gate, up, down
        return r * self.layers * (attention + mlp)


BASE_MODELS: tuple[BaseModel, ...] = (
    BaseModel(EMBEDDED_MODEL, "LlamaForCausalLM", 134.5e6, 576, 30, 9, 3, 1536, 49152, True, True, "Apache-2.0"),
    BaseModel("HuggingFaceTB/SmolLM2-360M-Instruct", "LlamaForCausalLM", 361.8e6, 960, 32, 15, 5, 2560, 49152, True, True, "Apache-2.0"),
    BaseModel("Qwen/Qwen2.5-0.5B-Instruct", "Qwen2ForCausalLM", 494.0e6, 896, 24, 14, 2, 4864, 151936, True, True, "Apache-2.0"),
    BaseModel("Qwen/Qwen2.5-1.5B-Instruct", "Qwen2ForCausalLM", 1.544e9, 1536, 28, 12, 2, 8960, 151936, True, True, "Apache-2.0"),
    BaseModel("microsoft/phi-2", "PhiForCausalLM", 2.780e9, 2560, 32, 32, 32, 10240, 51200, False, False, "MIT"),
    BaseModel("Qwen/Qwen2.5-3B-Instruct", "Qwen2ForCausalLM", 3.086e9, 2048, 36, 16, 2, 11008, 151936, True, True, "Qwen Research"),
    BaseModel("meta-llama/Llama-3.1-8B", "LlamaForCausalLM", 8.030e9, 4096, 32, 32, 8, 14336, 128256, False, False, "Llama 3.1 Community"),
)
"""The base models ``--base-model auto`` chooses among, smallest first."""


def catalog_entry(model_id: str) -> BaseModel | None:
    """The catalog's entry for ``model_id`` (case-insensitive; the embedded model's aliases too), or ``None``."""
    key = EMBEDDED_MODEL if model_id.lower() in EMBEDDED_ALIASES else model_id
    return next((m for m in BASE_MODELS if m.id.lower() == key.lower()), None)


@dataclass(frozen=True)
class Preset:
    """A named setup for one kind of machine.

    Attributes:
        name: what ``--preset`` takes.
        title: one line for listings.
        hardware: the machine it is made for, in words.
        device: ``mps``, ``cuda`` or ``cpu`` — the device it is meant to run on.
        memory_gb: the device memory it is sized for (GPU memory, or an Apple machine's unified memory).
        source: the account the settings come from.
        prepare, train, export: the settings it sets, by ``[section]`` of ``mimetic.toml``.
        filled_in: settings the account does not give, and where mimetic's value comes from.
    """

    name: str
    title: str
    hardware: str
    device: str
    memory_gb: float
    source: str
    prepare: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    filled_in: str = ""

    @property
    def base_model(self) -> str:
        return self.train["base_model"]


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset(
        "phi2-mac", "Phi-2 (2.7B) with LoRA on an Apple laptop with 16 GB",
        "Apple Silicon Mac (M1 or later) with 16 GB of unified memory", "mps", 16,
        "A writer who LoRA-tuned Phi-2 on 280k of her own words on a 2021 M1 MacBook Pro with 16 GB "
        "(the account this project grew from that calls the model \"a living archive — queryable\").",
        prepare=dict(format="completion", max_tokens=512),
        train=dict(base_model="microsoft/phi-2", device="mps", precision="auto", lora_r=16, lora_alpha=32,
                   batch_size=1, grad_accum=4, epochs=1.0, lr_schedule="cosine", load_in_4bit=False),
        export=dict(quantizations=["q8_0", "q4_k_m"]),
        filled_in="The account names the model, the machine and LoRA only: rank 16, alpha 32, batch 1 × 4, "
                  "the size-aware learning rate (about 4.1e-4 for Phi-2's hidden size 2560) and 512-token examples are "
                  "mimetic's defaults, sized so the fp16 weights (5.6 GB) and a batch fit 16 GB of unified memory; "
                  "one epoch is the preset's own (mimetic's default is two, within the time budget).",
    ),
    Preset(
        "qwen3b-8gb", "Qwen2.5-3B-Instruct with 4-bit QLoRA on an 8 GB NVIDIA GPU",
        "NVIDIA GPU with 8 GB (the account: an RTX 2070)", "cuda", 8,
        "A writer who tuned Qwen2.5-3B-Instruct with QLoRA (r 16, alpha 32, 4-bit, batch 1 × gradient accumulation 4, "
        "lr 2e-4 cosine, one epoch) on 9,572 examples from 14 sources in 82 minutes on an RTX 2070 with 8 GB, "
        "resumed after a crash, and exported GGUF Q4_K_M to Ollama.",
        prepare=dict(format="chat", max_tokens=512),
        train=dict(base_model="Qwen/Qwen2.5-3B-Instruct", device="cuda", precision="auto", load_in_4bit=True,
                   lora_r=16, lora_alpha=32, batch_size=1, grad_accum=4, learning_rate=2e-4, lr_schedule="cosine",
                   epochs=1.0),
        export=dict(quantizations=["q4_k_m"]),
        filled_in="The account does not give the example length: 512 tokens is mimetic's default. The chat format "
                  "because the model is an instruct model, as in the account. On a GPU without bf16 (an RTX 2070) "
                  "training runs in fp16 with loss scaling.",
    ),
    Preset(
        "llama8b-gpu", "Llama-3.1-8B with LoRA and briefs on a rented 40 GB+ GPU",
        "NVIDIA GPU with 40 GB or more, rented by the hour (A100, L40S, H100)", "cuda", 40,
        "A writer who tuned Llama-3.1-8B (base) on 650 snippets with a prompt written for each, learning rate "
        "5e-5 · 10 · (2000 / hidden_size)^0.781 with linear decay, three epochs, and saw the held-out NLL rise "
        "after epoch 3: \"voice, not versatility\".",
        prepare=dict(format="brief", max_tokens=1024),
        train=dict(base_model="meta-llama/Llama-3.1-8B", device="cuda", precision="auto", load_in_4bit=False,
                   lora_r=16, lora_alpha=32, batch_size=2, grad_accum=2, learning_rate=default_learning_rate(4096),
                   lr_schedule="linear", epochs=3.0, patience=2),
        export=dict(quantizations=["q8_0", "q4_k_m"]),
        filled_in="Rank 16, alpha 32, batch 2 × 2 and 1,024-token examples are mimetic's choices, sized for 16 GB of "
                  "bf16 weights and a batch in 40 GB (about 30 GB by mimetic.models.hardware's estimate); the briefs come from "
                  "`prepare --brief-model` (the writer's own prompts can be edited into data/briefs.jsonl). Early "
                  "stopping (patience 2) keeps the best adapter when the held-out NLL turns, as it did after epoch 3.",
    ),
)}
"""The presets, by name."""


def get_preset(name: str) -> Preset:
    """The preset called ``name``.

    Raises:
        MimeticError: no such preset (the message lists them).
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise MimeticError(f"There is no preset called {name!r}.",
                           f"Choose one of: {', '.join(PRESETS)} (mimetic presets lists them).") from None


def apply_preset(vc: VoiceConfig, name: str) -> VoiceConfig:
    """``vc`` with preset ``name``'s settings written into its ``[prepare]``, ``[train]`` and
    ``[export]`` tables and ``train.preset`` set to ``name``; other settings are kept.

    Raises:
        MimeticError: unknown preset.
    """
    p = get_preset(name)
    return VoiceConfig(
        ingest=vc.ingest, generate=vc.generate, evaluate=vc.evaluate, polish=vc.polish,
        prepare=replace(vc.prepare, **p.prepare),
        train=replace(vc.train, preset=name, **p.train),
        export=replace(vc.export, **p.export),
    )


__all__ = ["BaseModel", "BASE_MODELS", "catalog_entry", "Preset", "PRESETS", "get_preset", "apply_preset"]
