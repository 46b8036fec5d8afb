"""Behaviour parity of a code change in training: the same seeded short runs, their held-out NLL.

Trains a few steps of supervised fine-tuning (SFT), an SFT run interrupted and resumed, and a
polish (self-play DPO) run on top of the first, with the tiny random Llama model of
``tests/conftest.py`` (or ``--base-model embedded`` with short sequences), and prints each run's
held-out NLL (nats/token, the whole held-out split) and a fingerprint of its final LoRA weights.
Run it under two code trees and compare the lines (issue 30: identical within 1e-4 nats):

    PYTHONPATH=/work/old/src  .venv/bin/python benchmarks/refactor_parity.py
    PYTHONPATH=/work/main/src .venv/bin/python benchmarks/refactor_parity.py

Uses only the public API (``mimetic.train``, ``mimetic.polish`` …), so it runs on any layout.
A few seconds on two CPU cores with the tiny model.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path



def _tests_of_the_tree() -> None:
    """Put the ``tests/`` folder of the code tree being run (``mimetic``'s own repository, from
    ``PYTHONPATH``) on the path, for its ``conftest.make_corpus``."""
    import mimetic

    sys.path.insert(0, str(Path(mimetic.__file__).resolve().parents[2] / "tests"))


def tiny_model(root: Path) -> str:
    """The tiny random Llama model of tests/conftest.py (seed 0), saved under ``root``."""
    import importlib

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    try:  # the stage packages
        loading = importlib.import_module("mimetic.models.loading")
    except ModuleNotFoundError:  # the flat layout before them
        loading = importlib.import_module("mimetic.models")
    tok = loading.load_tokenizer("embedded")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    path = root / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def fingerprint(run_dir: Path) -> float:
    """Sum of |w| over the final checkpoint's LoRA weights: equal weights, equal sums."""
    import torch

    lora = torch.load(run_dir / "checkpoint" / "state.pt", weights_only=False)["lora"]
    return float(sum(v.double().abs().sum() for v in lora.values()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-model", default="tiny", help="tiny (the tests' random model) or embedded")
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    import torch

    torch.set_num_threads(1)  # the same reduction order in both trees
    _tests_of_the_tree()
    from conftest import make_corpus
    from mimetic import PolishConfig, PrepareConfig, TrainConfig, TrainingInterrupted, Workspace, ingest, polish, prepare, train

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ.setdefault("MIMETIC_CACHE_DIR", str(root / "cache"))
        model = tiny_model(root) if args.base_model == "tiny" else "embedded"
        ws = Workspace.open(root / "voice")
        ingest([make_corpus(root / "writing", n_docs=30, paragraphs=6)], ws)
        prepare(ws, PrepareConfig(max_tokens=64) if model == "embedded" else None, base_model=model)
        tc = TrainConfig(base_model=model, max_steps=args.steps, batch_size=2, eval_every=2, checkpoint_every=2, log_every=1,
                         learning_rate=1e-2, lora_r=4, lora_alpha=8, precision="fp32", eval_tokens=512)
        sft = train(ws, tc)
        print(f"sft      base_nll={sft.base_nll:.6f} best_nll={sft.best_nll:.6f} best_step={sft.best_step} "
              f"final_step={sft.final_step} lora_abs_sum={fingerprint(sft.run_dir):.6f}")
        try:
            train(ws, tc, should_stop=lambda run: run.state.step == 3, publish=False)
        except TrainingInterrupted:
            pass
        stopped = sorted(p.name for p in ws.runs_dir.iterdir() if not (p / "summary.json").exists())[-1]
        res = train(ws, resume=stopped, publish=False)
        print(f"resumed  base_nll={res.base_nll:.6f} best_nll={res.best_nll:.6f} best_step={res.best_step} "
              f"final_step={res.final_step} lora_abs_sum={fingerprint(res.run_dir):.6f}")
        pc = PolishConfig(pairs=6, prompt_tokens=16, continuation_tokens=16, batch_size=2, eval_every=2,
                          generate_batch_size=4, held_out_examples=0, learning_rate=5e-3, max_steps=3)
        pol = polish(ws, sft.run_id, pc)
        print(f"polish   nll_before={pol.nll_before:.6f} nll_after={pol.nll_after:.6f} best_nll={pol.best_nll:.6f} "
              f"best_step={pol.best_step} margin_after={pol.margin_after:.6f} lora_abs_sum={fingerprint(pol.run_dir):.6f}")


if __name__ == "__main__":
    main()
