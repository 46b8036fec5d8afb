"""One round of the feedback loop on a trained voice, with marks made by a scripted rule.

The rule (seeded, no person involved): for each of ``--prompts`` held-out openings, the voice
drafts ``--drafts`` continuations (``write --best-of``, seeds 1000·k …), ranked by the style
distance to the writer's own passages that ``--best-of`` already computes; the closest draft is
marked ``best`` over the others. That gives prompts × drafts marks and prompts × (drafts − 1) DPO
pairs. Then ``polish --from-feedback`` makes a new run, and both runs are evaluated with the same
settings, seeds and references (held-out NLL, attribution, memorization).

    .venv/bin/python benchmarks/feedback_round.py VOICE --references REFS [--prompts 14 --drafts 3]

The voice folder is changed (marks in mimetic.db, a new run): use a copy.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mimetic import EvaluateConfig, GenerateConfig, Workspace
from mimetic.core.config import PolishConfig
from mimetic.evaluation.evaluate import evaluate
from mimetic.voice.generate import feedback_examples, held_out_prompts, write
from mimetic.core.logdb import add_marks, latest_generations
from mimetic.training.preference import polish


def mark_drafts(ws: Workspace, parent: str, prompts: list[str], drafts: int, new_tokens: int) -> int:
    """Draft and mark by the rule above; returns the number of marks made."""
    made = 0
    for k, prompt in enumerate(prompts):
        write(ws, prompt, GenerateConfig(max_new_tokens=new_tokens, seed=1000 * k), run=parent, best_of=drafts)
        rows = latest_generations(ws.db_path, drafts)
        dist = {g["id"]: json.loads(g["params"])["style_distance"] for g in rows}
        best = min(dist, key=lambda i: (dist[i], i))
        made += len(add_marks(ws.db_path, best, "best", [i for i in dist if i != best]))
        print(f"prompt {k + 1}/{len(prompts)}: best #{best} of {sorted(dist)}", flush=True)
    return made


def new_draft_distance(ws: Workspace, runs: dict[str, str], skip: int, n: int, drafts: int, new_tokens: int) -> dict:
    """Mean style distance (what the marking rule picked by) of fresh drafts from each run, on ``n``
    held-out openings after the first ``skip`` (not those the marks were made on), same seeds."""
    from statistics import mean

    from mimetic.voice.generate import style_profile

    scorer = style_profile(ws)
    prompts = held_out_prompts(ws, n=skip + n)[skip:]
    out = {}
    for name, run in runs.items():
        texts = [g.output for k, p in enumerate(prompts)
                 for g in write(ws, p, GenerateConfig(max_new_tokens=new_tokens, seed=7000 + 10 * k, num_samples=drafts), run=run)]
        out[name] = round(mean(scorer.distance(t) for t in texts), 4)
    return out


def figures(metrics: dict) -> dict:
    att, mem = metrics["stylometry"]["attribution"]["voice"], metrics["memorization"]["voice"]
    return {"held_out_nll": metrics["nll"]["voice"]["nll"], "sets_to_writer": f"{att['to']['you']}/{att['sets']}",
            "writer_share": att["writer_share"], "longest_overlap_chars": mem["longest_characters"],
            "mean_share_13gram": mem["mean_share_13gram"], "flagged": mem["flagged"],
            "spread": metrics["stylometry"]["spread"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("voice", type=Path)
    ap.add_argument("--references", type=Path, required=True)
    ap.add_argument("--prompts", type=int, default=14)
    ap.add_argument("--drafts", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=120)
    ap.add_argument("--sample-words", type=int, default=3000)
    ap.add_argument("--reuse-marks", action="store_true", help="Train on the marks already in the voice's log.")
    ap.add_argument("--fresh-prompts", type=int, default=10, help="Held-out openings, not marked, for fresh drafts.")
    ap.add_argument("--only-fresh", help="Skip training and evaluation: compare the trained run with this feedback run.")
    args = ap.parse_args()
    ws = Workspace.open(args.voice, create=False)
    parent = sorted(p.name for p in ws.runs_dir.iterdir() if not (p / "polish.json").exists())[-1]  # the trained run
    if args.only_fresh:
        print(json.dumps(new_draft_distance(ws, {"parent": parent, "feedback": args.only_fresh}, args.prompts,
                                            args.fresh_prompts, args.drafts, args.new_tokens)))
        return
    t = time.perf_counter()
    if args.reuse_marks:
        from mimetic.core.logdb import marks as read_marks

        marks = len(read_marks(ws.db_path))
    else:
        marks = mark_drafts(ws, parent, held_out_prompts(ws, n=args.prompts), args.drafts, args.new_tokens)
    t_marks = time.perf_counter() - t
    fb = feedback_examples(ws, parent)
    t = time.perf_counter()
    r = polish(ws, parent, PolishConfig(epochs=2.0, batch_size=4, eval_every=4, held_out_examples=64), feedback=fb)
    t_polish = time.perf_counter() - t
    ec = EvaluateConfig(sample_words=args.sample_words)
    out = {"marks": marks, "run": r.run_id, "pairs": len(fb["pairs"]), "singles": len(fb["singles"]), "marking_s": round(t_marks),
           "polish_s": round(t_polish), "polish": {k: getattr(r, k) for k in ("nll_before", "nll_after", "best_nll",
                                                                              "best_step", "final_step", "margin_after",
                                                                              "accuracy_after", "learning_rate")}}
    for name, run in (("parent", parent), ("feedback", r.run_id)):
        ev = evaluate(ws, run, ec, references=args.references)
        out[name] = {"run": run, **figures(ev.metrics), "summary": ev.summary()[:4]}
        print(name, json.dumps(out[name], indent=1), flush=True)
    out["fresh_draft_style_distance"] = new_draft_distance(ws, {"parent": parent, "feedback": r.run_id}, args.prompts,
                                                           args.fresh_prompts, args.drafts, args.new_tokens)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
