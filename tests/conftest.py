"""Shared fixtures: a tiny random Llama model with the embedded model's real tokenizer.

The tiny model (2 layers, hidden size 32) is built from a ``LlamaConfig`` and saved as a
local model folder, so every stage runs for real (real tokenizer, real PEFT, real Arrow and
SQLite files) in seconds and without any network.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _pin_this_worker() -> None:
    """Under pytest-xdist (``make test`` runs ``-n logical``), give each worker its own share of
    the CPUs (``os.sched_setaffinity``; inherited by the processes it starts), so that two
    workers' torch, OpenMP and llama.cpp threads do not spin on each other's cores. Done at
    import, before torch is, so OpenMP sizes its thread pool to the share."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw"):
        return
    # xdist sets COLUMNS=80 in its workers, and rich fixes a Console's width from COLUMNS when the
    # console is made (the CLI's, at import): the tests that give CliRunner a wide COLUMNS would
    # then read tables cut to 80 columns, as they never are when run one after another
    os.environ.pop("COLUMNS", None)
    if count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    share = cpus[int(worker[2:]) % count :: count] if len(cpus) >= count else cpus
    os.sched_setaffinity(0, share)
    os.environ["OMP_NUM_THREADS"] = str(len(share))


_pin_this_worker()

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ.setdefault("MIMETIC_CACHE_DIR", str(tmp_path_factory.mktemp("mimetic-cache")))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["MIMETIC_GGUF_AFTER_TRAINING"] = "0"  # converted on first use; tests/test_engines.py checks the default


@pytest.fixture(scope="session")
def tokenizer(_cache: None):
    from mimetic.models.loading import load_tokenizer

    return load_tokenizer("embedded")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> str:
    """Path of a saved tiny random Llama model using the embedded model's tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def has_llama_cpp() -> bool:
    """llama-cpp-python and llama.cpp's converters are installed (``make install`` does both)."""
    import importlib.util

    from mimetic import MimeticError
    from mimetic.voice.export import llama_cpp_tools

    try:
        llama_cpp_tools()
    except MimeticError:
        return False
    return importlib.util.find_spec("llama_cpp") is not None


# only the GGUF conversions and llama.cpp itself need llama.cpp; everything else always runs
needs_llama_cpp = pytest.mark.skipif(not has_llama_cpp(), reason="llama-cpp-python and its converters are installed by `make install`")


PROSE = [
    "The kettle had been singing for some minutes before I noticed it, and by then the kitchen was full of steam.",
    "My grandmother kept her letters in a biscuit tin, tied with string, and she never once told us who wrote them.",
    "We walked along the harbour wall while the boats knocked together, and nobody said what we were all thinking.",
    "There is a particular silence that falls over a house after an argument, heavier than any ordinary quiet.",
    "In the spring the river rose so high that the footbridge vanished, and we had to go the long way round.",
    "I have always distrusted people who claim to enjoy mornings; they are hiding something, probably sleep.",
]


_WORDS = {
    "adj": "quiet narrow bright heavy sudden pale crooked patient tired honest bitter gentle restless hollow silver "
    "faded careful stubborn distant ordinary wooden".split(),
    "noun": "kettle harbour letter garden river window sister morning lantern orchard ferry ladder teacup hedge "
    "chimney notebook bicycle meadow attic violin staircase postcard umbrella".split(),
    "verb": "waited sang leaned burned drifted trembled shone knocked wandered settled rattled lingered "
    "vanished creaked softened".split(),
    "prep": "beside beyond under across behind towards against near above through".split(),
    "who": "my grandmother|the neighbour|nobody|my brother|the postman|our teacher|everyone|a stranger".split("|"),
    "did": "remembered ignored described mended painted doubted admired forgot questioned noticed".split(),
    "adv": "slowly|twice|again|carefully|badly|quietly|at last|once more|all winter".split("|"),
}


def _sentence(rng) -> str:
    w = {k: rng.choice(v) for k, v in _WORDS.items()}
    noun2 = rng.choice(_WORDS["noun"])
    forms = [
        f"The {w['adj']} {w['noun']} {w['verb']} {w['prep']} the {noun2}, and {w['who']} {w['did']} it {w['adv']}.",
        f"{w['who'].capitalize()} {w['did']} the {w['adj']} {w['noun']} {w['adv']}, {w['prep']} a {noun2} that {w['verb']}.",
        f"When the {w['noun']} {w['verb']}, {w['who']} {w['did']} every {noun2} {w['prep']} the {w['adj']} house.",
    ]
    return rng.choice(forms)


def make_corpus(root: Path, n_docs: int = 12, paragraphs: int = 12) -> Path:
    """Write ``n_docs`` Markdown/text files of varied prose under ``root``; returns ``root``.

    The sentences are drawn at random (seeded) from a small grammar, so documents and
    paragraphs are distinct: ingest's duplicate detection keeps all of them.
    """
    import random

    root.mkdir(parents=True, exist_ok=True)
    for d in range(n_docs):
        rng = random.Random(1000 + d)
        paras = []
        for p in range(paragraphs):
            sentences = [PROSE[(d + p) % len(PROSE)]] + [_sentence(rng) for _ in range(3)]
            paras.append(f"Entry {d}.{p}: " + " ".join(sentences))
        if d % 2:
            body = f"---\ntitle: Essay {d}\ndate: 2020-01-{d % 28 + 1:02d}\n---\n\n" + "\n\n".join(paras)
            (root / f"essay-{d}.md").write_text(body, encoding="utf-8")
        else:
            (root / f"note-{d}.txt").write_text("\n\n".join(paras), encoding="utf-8")
    return root


def prepared_voice(root: Path, tiny_model: str, paragraphs: int = 8, name: str = "voice", prepare_config=None):
    """A workspace ``root/name`` with a small corpus (30 documents) ingested and prepared for the tiny model."""
    from mimetic import Workspace, ingest, prepare

    ws = Workspace.open(root / name)
    ingest([make_corpus(root / "writing", n_docs=30, paragraphs=paragraphs)], ws)
    prepare(ws, prepare_config, base_model=tiny_model)
    return ws


def small_train_config(tiny_model: str, **changes):
    """A fast, deterministic TrainConfig for the tiny model (fp32, batch 2, LoRA r 4)."""
    from mimetic import TrainConfig

    base = dict(base_model=tiny_model, batch_size=2, eval_every=3, checkpoint_every=2, log_every=1, learning_rate=5e-3,
                lora_r=4, lora_alpha=8, precision="fp32")
    base.update(changes)
    return TrainConfig(**base)


def trained_voice(root: Path, tiny_model: str, paragraphs: int = 6, name: str = "voice", prepare_config=None, **train_settings):
    """A workspace ``root/name`` with a small corpus ingested, prepared and trained on the tiny model."""
    from mimetic import TrainConfig, train

    ws = prepared_voice(root, tiny_model, paragraphs, name, prepare_config)
    settings = dict(base_model=tiny_model, max_steps=4, batch_size=2, eval_every=2, learning_rate=1e-2, precision="fp32")
    settings.update(train_settings)
    train(ws, TrainConfig(**settings))
    return ws
