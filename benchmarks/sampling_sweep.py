"""Sampling settings against the voice's range: the same prompts and seeds, other sampling.

Takes a workspace whose latest run has been evaluated (``mimetic evaluate``: its
``evaluation/cache.json`` holds the prompts, seeds, the writer's continuations and the base
model's samples) and writes the voice's samples again with each variant of the ``[generate]``
sampling settings, then runs the evaluation's model-free analysis on them: the spread of the
voice's 1,000-word sets against the writer's own (mean pairwise Cosine Delta,
:func:`mimetic.text.stylometry.spread`), attribution among the writer and the reference authors, and
the longest verbatim overlap with the training text. Only the voice is sampled again, so a
variant costs about a third of an evaluation.

    .venv/bin/python benchmarks/sampling_sweep.py WORKSPACE REFERENCES \\
        '{"defaults": {}, "t08_truncated": {"temperature": 0.8, "top_p": 0.95, "min_p": 0.05, "repetition_penalty": 1.1}}'

``--sample-words`` must be the value the evaluation ran with (it sets how many prompts there
were). ``--draws N`` samples every variant N times with other seeds (draw 0 is the evaluation's
own seeds), so that a difference can be told from the noise of one draw.

Each draw also reports how surprising the samples are to the voice itself: the voice's NLL
(nats/token) of its own continuations, next to its NLL of the writer's real continuations of
the same openings. At temperature 1 a calibrated model's samples are about as surprising as real
text; sampled hotter, they are more surprising than the writer (less predictable, the first
sign of incoherence), colder, less. Results: one JSON line per draw on stdout. RESULTS.md has the
table by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

from mimetic.models.engines import Voice
from mimetic.evaluation.evaluate import (
    _continuation_prompts,
    _doc_texts,
    _generate_batch,
    analyse,
    read_references,
)
from mimetic.corpus.prepare import load_split
from mimetic.models.sampling import SamplingParams
from mimetic.core.workspace import Workspace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("references", type=Path, help="one folder of texts per reference author")
    ap.add_argument("variants", help='JSON: {"name": {generate setting: value, ...}, ...}')
    ap.add_argument("--sample-words", type=int, default=5000)
    ap.add_argument("--writer", default="writer")
    ap.add_argument("--draws", type=int, default=1, help="draws per variant; draw k adds 7919·k to every seed")
    a = ap.parse_args()
    ws = Workspace.open(a.workspace, create=False)
    vc = ws.load_config()
    config = replace(vc.evaluate, sample_words=a.sample_words)
    run_dir = ws.run_dir(None)
    samples = json.loads((run_dir / "evaluation" / "cache.json").read_text())["samples"]
    train_rows, held_rows = load_split(ws, "train"), load_split(ws, "held_out")
    voice = Voice.load(ws, run_dir.name)
    # the evaluation's prompts, rebuilt the way generate_samples builds them
    per_sample = max(20, int(config.new_tokens * 0.7))
    first = max(config.batch_size, math.ceil(config.sample_words / per_sample))
    first = math.ceil(first / config.batch_size) * config.batch_size
    prompts = _continuation_prompts(held_rows, voice.tokenizer, config, first * 2)[: len(samples)]
    if any(p["prefix"] != s["prefix"] for p, s in zip(prompts, samples)):
        raise SystemExit("The prompts differ from the evaluation's: pass its --sample-words.")
    refs = read_references(a.references)
    training = _doc_texts(train_rows)
    held = "\n\n".join(t for _, t in _doc_texts(held_rows))
    writer_nll = continuation_nll(voice, prompts, [p["writer"] for p in prompts])
    for name, settings in json.loads(a.variants).items():
        params = SamplingParams.from_config(replace(vc.generate, **settings), max_new_tokens=config.new_tokens)
        for draw in range(a.draws):
            t = time.perf_counter()
            texts: list[str] = []
            for b in range(0, len(samples), config.batch_size):
                batch = prompts[b : b + config.batch_size]
                texts += _generate_batch(voice, [p["prefix_ids"] for p in batch], params, samples[b]["seed"] + 7919 * draw)
            m, _ = analyse(training, held, [dict(s, voice=v) for s, v in zip(samples, texts)], config, refs, writer=a.writer)
            st = m.get("stylometry", m)
            mem = m["memorization"]["voice"]
            print(json.dumps({"variant": name, "draw": draw, "sampling": params.__dict__, "seconds": round(time.perf_counter() - t),
                              "spread": st["spread"], "attribution": st["attribution"]["voice"],
                              "voice_nll_of_samples": continuation_nll(voice, prompts, texts), "voice_nll_of_writer": writer_nll,
                              "longest_overlap_chars": mem["longest_characters"], "flagged": mem["flagged"]}), flush=True)


def continuation_nll(voice: Voice, prompts: list[dict], texts: list[str]) -> float:
    """The voice's NLL (nats/token) of ``texts``, each after its prompt's prefix, token-weighted."""
    from mimetic.models.loading import autocast
    from mimetic.models.nll import per_example_nll

    rows = []
    for p, text in zip(prompts, texts):
        cont = voice.tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = list(p["prefix_ids"]) + cont
        rows.append({"input_ids": ids, "labels": [-100] * len(p["prefix_ids"]) + cont})
    sums, counts = per_example_nll(voice.model, rows, voice.tokenizer.pad_token_id, voice.device, autocast(voice.device, voice.precision))
    return float(sums.sum() / max(1, counts.sum()))


if __name__ == "__main__":
    main()
