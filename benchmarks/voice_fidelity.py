"""Voice fidelity: the main job with the default budget, then ``evaluate``, per author, old recipe vs new.

For each author in ``--authors`` (folders of ``../shared/corpora/authors/``): ``mimetic voice``
on that author's novels with ``--minutes`` of training, then ``mimetic evaluate`` with the other
shared novelists as reference authors and ``--sample-words`` words of samples (11,000 gives at
least 10 sets of 1,000 words per model). The old recipe is an earlier commit's code (``--baseline-src``,
its own defaults); the evaluation always runs on this commit's code, so both are measured alike.

Reports per author and recipe: held-out NLL change (whole held-out split), training tokens,
the share of the run spent measuring, attribution share of the voice's 1,000-word sets, of the
author's own held-out sets (the control) and of the base model's sets, the spread (mean pairwise
Cosine Delta between one model's sets) of voice and author, and memorization (longest verbatim
overlap in characters, 99th percentile and maximum; extraction rate).

    git worktree add /tmp/mimetic-baseline 563b509      # the recipe before issue 20
    .venv/bin/python benchmarks/voice_fidelity.py --authors doyle,twain,austen --baseline-src /tmp/mimetic-baseline/src

A recipe ``new-epochsN`` is this commit's defaults with ``--epochs N`` (how the budget is used).

It takes about 20–40 minutes per author and recipe on 2 CPU cores. Results go to RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

AUTHORS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "authors"


def mimetic(args: list[str], src: str | None = None) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if src:
        env["PYTHONPATH"] = src
    subprocess.run([sys.executable, "-m", "mimetic", *args], check=True, env=env)


def measure(ws: Path) -> dict:
    """The figures of the latest run of workspace ``ws`` and of its evaluation."""
    run = sorted(p for p in (ws / "runs").iterdir() if (p / "summary.json").exists())[-1]
    s = json.loads((run / "summary.json").read_text())
    m = json.loads((run / "evaluation" / "metrics.json").read_text())
    st = m["stylometry"]
    att = st["attribution"]
    overlaps = [r["characters"] for r in m["memorization"]["voice"]["samples"]]
    spread = st.get("spread", {})
    return {
        "nll_drop": s["held_out_nll_drop"], "train_tokens": s["train_tokens"], "minutes": s["elapsed_s"] / 60,
        "measuring": (s.get("eval_s") or 0) / s["elapsed_s"], "tokens_per_s": s["tokens_per_s"],
        "voice_share": att["voice"]["writer_share"], "voice_sets": att["voice"]["sets"],
        "control_share": att["held_out"]["writer_share"], "control_sets": att["held_out"]["sets"],
        "base_share": att.get("base", {}).get("writer_share"),
        "spread_voice": spread.get("voice"), "spread_writer": spread.get("writer"), "spread_base": spread.get("base model"),
        "overlap_p99": float(np.percentile(overlaps, 99)) if overlaps else 0.0, "overlap_max": max(overlaps, default=0),
        "extraction": m["extraction"]["voice"]["exact"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--authors", default="doyle,twain,austen")
    ap.add_argument("--recipes", default="old,new")
    ap.add_argument("--baseline-src", help="src folder of the earlier commit (the old recipe)")
    ap.add_argument("--minutes", type=float, default=15)
    ap.add_argument("--sample-words", type=int, default=11000)
    ap.add_argument("--root", default="", help="where the workspaces go (default: a temporary folder)")
    ap.add_argument("--keep-trained", action="store_true", help="evaluate a voice already trained under --root again, without training it")
    a = ap.parse_args()
    root = Path(a.root or tempfile.mkdtemp(prefix="mimetic-fidelity-"))
    rows = []
    for author in a.authors.split(","):
        refs = root / f"references-without-{author}"
        refs.mkdir(parents=True, exist_ok=True)
        for other in sorted(p for p in AUTHORS.iterdir() if p.is_dir() and p.name != author):
            if not (refs / other.name).exists():
                (refs / other.name).symlink_to(other)
        for recipe in a.recipes.split(","):
            if recipe == "old" and not a.baseline_src:
                print("old recipe skipped: no --baseline-src")
                continue
            ws = root / author / recipe
            if a.keep_trained and list(ws.glob("runs/*/summary.json")):
                print(f"{author} / {recipe}: a finished run is there; evaluating it")
            else:
                extra = ["--epochs", recipe.removeprefix("new-epochs")] if recipe.startswith("new-epochs") else []
                mimetic(["voice", str(AUTHORS / author), "--workspace", str(ws), "--time-budget", str(a.minutes), *extra],
                        a.baseline_src if recipe == "old" else None)
            mimetic(["evaluate", "--workspace", str(ws), "--references", str(refs), "--sample-words", str(a.sample_words)])
            rows.append({"author": author, "recipe": recipe, **measure(ws)})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| author | recipe | NLL change | tokens trained | measuring | voice → author | control → author | "
          "base → author | spread voice / author / base | overlap p99 / max (chars) | extraction |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for r in rows:
        f = (lambda x: "–" if x is None else f"{x:.2f}")
        base = "–" if r["base_share"] is None else f"{100 * r['base_share']:.0f}%"
        print(f"| {r['author']} | {r['recipe']} | {-100 * r['nll_drop']:+.1f}% | {r['train_tokens']:,} | {100 * r['measuring']:.0f}% | "
              f"{100 * r['voice_share']:.0f}% of {r['voice_sets']} | {100 * r['control_share']:.0f}% of {r['control_sets']} | {base} | "
              f"{f(r['spread_voice'])} / {f(r['spread_writer'])} / {f(r['spread_base'])} | "
              f"{r['overlap_p99']:.0f} / {r['overlap_max']} | {100 * r['extraction']:.0f}% |")


if __name__ == "__main__":
    main()
