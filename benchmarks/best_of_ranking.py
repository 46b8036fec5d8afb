"""Best of N, ranked three ways, measured by what a reader sees (issue 33, item 3).

For a trained voice (``WORKSPACE``, its published run), ``--openings`` held-out openings are each
continued ``--drafts`` times (llama.cpp, the voice's ``[generate]`` settings or ``--settings``).
The openings are split in two halves; for each half, a discriminator
(:class:`mimetic.text.discriminator.Discriminator`) is fitted on the *other* half — the writer's
real continuations against the voice's first draft — so that no passage it ranks was seen in
fitting, as in ``write --best-of`` after ``evaluate``. Then one draft per opening is kept:

* ``first``: the first draft (what plain ``write`` gives: no ranking);
* ``style``: the lowest style distance (:func:`mimetic.voice.generate.style_profile`, today's ranking);
* ``discriminator``: the highest ``P(writer)``.

Each choice is measured against the writer's continuations of the same openings: the
distinguishability ROC AUC (:func:`mimetic.evaluation.reader.distinguishability`), invented words
per 1,000 and the share of 1,000-word sets Cosine Delta attributes to the writer among the
reference authors. A ranking that only learned the discriminator's own tells would show a lower
AUC under the same classifier family; the attribution (another judge) and invented words say
whether the prose moved too.

    .venv/bin/python benchmarks/best_of_ranking.py WORKSPACE REFERENCES --openings 64 --drafts 4
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from mimetic.core.workspace import Workspace
from mimetic.corpus.prepare import load_split
from mimetic.evaluation.evaluate import _continuation_prompts, _doc_texts, analyse, read_references
from mimetic.evaluation.reader import measure as reader_measure
from mimetic.models.engines import open_voice
from mimetic.models.sampling import SamplingParams
from mimetic.text.discriminator import Discriminator
from mimetic.voice.generate import style_profile


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("references", type=Path)
    ap.add_argument("--openings", type=int, default=64)
    ap.add_argument("--drafts", type=int, default=4)
    ap.add_argument("--settings", default="{}", help='JSON [generate] changes, e.g. {"temperature": 1.0}')
    a = ap.parse_args()
    ws = Workspace.open(a.workspace, create=False)
    vc = ws.load_config()
    config = vc.evaluate
    params = SamplingParams.from_config(replace(vc.generate, **json.loads(a.settings)), max_new_tokens=config.new_tokens)
    train_rows, held_rows = load_split(ws, "train"), load_split(ws, "held_out")
    voice = open_voice(ws)
    prompts = _continuation_prompts(held_rows, voice.tokenizer, config, a.openings)
    t = time.perf_counter()
    drafts = []  # drafts[i][k]: draft k of opening i
    for b in range(0, len(prompts), 16):
        batch = prompts[b : b + 16]
        per_draft = [voice.complete([p["prefix_ids"] for p in batch], params, 1000 * k + b) for k in range(a.drafts)]
        drafts += [[per_draft[k][i] for k in range(a.drafts)] for i in range(len(batch))]
    gen_s = time.perf_counter() - t
    profile = style_profile(ws)
    half = len(prompts) // 2
    folds = [(range(0, half), range(half, len(prompts))), (range(half, len(prompts)), range(0, half))]
    chosen: dict[str, list[str]] = {"first": [""] * len(prompts), "style": [""] * len(prompts), "discriminator": [""] * len(prompts)}
    for fit_on, rank in folds:
        judge = Discriminator([prompts[i]["writer"] for i in fit_on], [drafts[i][0] for i in fit_on])
        for i in rank:
            chosen["first"][i] = drafts[i][0]
            chosen["style"][i] = min(drafts[i], key=profile.distance)
            likeness = judge.writer_likeness(drafts[i])
            chosen["discriminator"][i] = drafts[i][int(likeness.argmax())]
    refs = read_references(a.references)
    training = _doc_texts(train_rows)
    held = "\n\n".join(t for _, t in _doc_texts(held_rows))
    print(f"{len(prompts)} openings × {a.drafts} drafts in {gen_s:.0f} s; settings {params}")
    print("| ranking | AUC (95% CI) | invented / 1,000 | attribution | writer-vs-writer AUC |")
    print("|---|---:|---:|---:|---:|")
    for name, texts in chosen.items():
        samples = [{"document": p["document"], "prefix": p["prefix"], "writer": p["writer"], "base": "", "voice": v}
                   for p, v in zip(prompts, texts)]
        m, _ = analyse(training, held, samples, config, refs)
        r = reader_measure("\n\n".join(t for _, t in training), held, samples, config.seed)
        d = r["distinguishability"]
        row = {"ranking": name, "auc": d["voice"]["auc"], "ci": d["voice"]["ci"], "invented": r["invented_words"]["voice"]["per_1000"],
               "attribution": m["stylometry"]["attribution"]["voice"]["writer_share"], "auc_writer": d["writer_halves"]["auc"]}
        print(json.dumps(row), flush=True)
        print(f"| {name} | {row['auc']:.2f} ({row['ci'][0]:.2f}–{row['ci'][1]:.2f}) | {row['invented']:.2f} | "
              f"{row['attribution']:.2f} | {row['auc_writer']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
