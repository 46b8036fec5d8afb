"""Sampling settings against every measure at once: the same openings, several draws, each variant.

For a trained voice (``WORKSPACE``, its published run), ``--openings`` held-out passages are cut
into a ``[evaluate] prefix_tokens`` opening and the writer's real continuation, exactly as
``mimetic evaluate`` cuts them (:func:`mimetic.evaluation.evaluate._continuation_prompts`). Each
variant of the ``[generate]`` sampling settings continues every opening ``--draws`` times (draw k
uses other seeds) through the engine ``mimetic write`` uses (:func:`mimetic.models.engines.open_voice`:
llama.cpp with the run's adapter), and each draw is measured as ``evaluate`` measures it:

* attribution: the share of the voice's 1,000-word sets that Cosine Delta attributes to the
  writer among the reference authors, and the spread of those sets over the writer's own;
* distinguishability: the cross-validated ROC AUC of a classifier telling the voice's passages
  from the writer's continuations of the same openings (:func:`mimetic.evaluation.reader.distinguishability`;
  the writer-against-writer control beside it);
* invented words per 1,000 (voice, and the writer's own continuations as control);
* calibration: the voice's NLL (nats/token) of its own samples minus its NLL of the writer's
  continuations (transformers, the reference engine): above 0, hotter than the writer;
* the longest verbatim overlap with the training text.

    .venv/bin/python benchmarks/sampling_sweep.py WORKSPACE REFERENCES \\
        '{"t1.2": {"temperature": 1.2}, "t1.0 min-p 0.05": {"temperature": 1.0, "min_p": 0.05}}' --draws 2

A variant may also set ``[evaluate]`` fields: ``{"opening 256": {"prefix_tokens": 256}}`` cuts the
same passages after a longer opening (the continuity lever: does the voice keep the people of a
longer opening?); the writer's continuations are then cut there too.

One JSON line per draw on stdout, then a Markdown table of the means over draws (±: half the range
of the draws). RESULTS.md has the tables by hand.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from mimetic.core.workspace import Workspace
from mimetic.corpus.prepare import load_split
from mimetic.evaluation.evaluate import _continuation_prompts, _doc_texts, analyse, read_references, sample_calibration
from mimetic.evaluation.reader import measure as reader_measure
from mimetic.models.engines import Voice, open_voice
from mimetic.models.sampling import SamplingParams


def run_variant(voice, tvoice, prompts, params, draw, batch, training, held, config, refs) -> dict:
    t = time.perf_counter()
    texts: list[str] = []
    for b in range(0, len(prompts), batch):
        texts += voice.complete([p["prefix_ids"] for p in prompts[b : b + batch]], params, 7919 * draw + b)
    gen_s = time.perf_counter() - t
    samples = [{"document": p["document"], "prefix": p["prefix"], "writer": p["writer"], "base": "", "voice": v}
               for p, v in zip(prompts, texts)]
    m, _ = analyse(training, held, samples, config, refs)
    r = reader_measure("\n\n".join(t for _, t in training), held, samples, config.seed)
    cal = sample_calibration(tvoice, samples) if tvoice is not None else {}
    st = m["stylometry"]
    d, inv = r["distinguishability"], r["invented_words"]
    return {
        "generation_s": round(gen_s, 1), "words": m["words"]["voice_samples"],
        "attribution": st["attribution"]["voice"]["writer_share"], "sets": st["attribution"]["voice"]["sets"],
        "attribution_writer": st["attribution"]["held_out"]["writer_share"],
        "spread_ratio": (st.get("spread") or {}).get("ratio"),
        "auc": d["voice"]["auc"], "auc_ci": d["voice"].get("ci"), "auc_writer": d["writer_halves"]["auc"],
        "invented": inv["voice"]["per_1000"], "invented_writer": inv["writer"]["per_1000"],
        "invented_examples": inv["voice"]["examples"][:8],
        "calibration": None if cal.get("samples") is None else cal["samples"] - cal["writer"],
        "overlap": m["memorization"]["voice"]["longest_characters"],
        "continuity": r["continuity"]["voice"]["kept"], "continuity_writer": r["continuity"]["writer"]["kept"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("references", type=Path, help="one folder of texts per reference author")
    ap.add_argument("variants", help='JSON: {"name": {generate setting: value, ...}, ...}')
    ap.add_argument("--openings", type=int, default=64)
    ap.add_argument("--draws", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256, help="openings per call (llama.cpp keeps its slots full within a call)")
    ap.add_argument("--no-calibration", action="store_true", help="skip the transformers NLL pass")
    ap.add_argument("--engine", default="auto")
    a = ap.parse_args()
    ws = Workspace.open(a.workspace, create=False)
    vc = ws.load_config()
    config = vc.evaluate
    train_rows, held_rows = load_split(ws, "train"), load_split(ws, "held_out")
    voice = open_voice(ws, engine=a.engine)
    tvoice = None if a.no_calibration else Voice.load(ws)
    prompts = _continuation_prompts(held_rows, voice.tokenizer, config, a.openings)
    refs = read_references(a.references)
    training = _doc_texts(train_rows)
    held = "\n\n".join(t for _, t in _doc_texts(held_rows))
    table = []
    evaluate_keys = {f.name for f in fields(config)}
    for name, settings in json.loads(a.variants).items():
        gen = {k: v for k, v in settings.items() if k not in evaluate_keys}
        cut = replace(config, **{k: v for k, v in settings.items() if k in evaluate_keys})  # e.g. a longer opening
        params = SamplingParams.from_config(replace(vc.generate, **gen), max_new_tokens=cut.new_tokens)
        these = prompts if cut == config else _continuation_prompts(held_rows, voice.tokenizer, cut, a.openings)
        rows = []
        for draw in range(a.draws):
            row = run_variant(voice, tvoice, these, params, draw, a.batch, training, held, cut, refs)
            rows.append(row)
            print(json.dumps({"workspace": str(a.workspace), "variant": name, "draw": draw, "settings": settings, **row}), flush=True)
        table.append((name, rows))
    keys = ("attribution", "auc", "invented", "calibration", "spread_ratio", "continuity", "overlap")
    print(f"\n{len(prompts)} openings × {a.draws} draws; writer-vs-writer AUC {table[0][1][0]['auc_writer']:.2f}, "
          f"writer's invented words {table[0][1][0]['invented_writer']:.2f}/1,000, writer's attribution {table[0][1][0]['attribution_writer']:.2f}")
    print("| sampling | attribution | AUC | invented / 1,000 | calibration | spread ratio | names kept | longest overlap |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, rows in table:
        cells = []
        for k in keys:
            xs = [r[k] for r in rows if r[k] is not None]
            cells.append("–" if not xs else f"{np.mean(xs):.2f} ± {(max(xs) - min(xs)) / 2:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
