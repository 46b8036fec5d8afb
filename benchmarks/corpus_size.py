"""How much writing is enough: the default voice trained on 5k … 300k words of one novelist, every
measure against corpus size, on the same held-out text (issue 33, item 4).

For ``--author`` (a folder of ``../shared/corpora/authors/``) the last ``--held-out-words`` of
each novel are set aside once as the held-out text every size is measured on; a corpus of N words
is the first N / (novels) words of each novel's remainder. For each size, in its own workspace:
``mimetic ingest`` and ``prepare`` (the defaults), then ``data/held_out`` is replaced by the fixed
held-out text (prepared once, both of its splits), so in-run early stopping, the held-out NLL and
every evaluation openings are the same text for all sizes; then ``mimetic train`` with
``--minutes`` of budget (small corpora stop earlier, at the default 2 epochs) and
``mimetic evaluate`` with the other shared novelists as references.

Each row (printed as JSON, and the table at the end) has: corpus words, training steps and
tokens, minutes, held-out NLL of base and voice (nats/token) and its change, attribution (voice /
writer's own held-out sets / base model), distinguishability ROC AUC (voice / base /
writer-vs-writer), invented words per 1,000 (voice / writer), calibration (voice's NLL of its own
samples minus its NLL of the writer's text, nats/token), and the longest verbatim overlap.

    .venv/bin/python benchmarks/corpus_size.py --author dickens --root /work/curve    # ~1 h on 2 cores
    .venv/bin/python benchmarks/corpus_size.py --plot /work/curve/curve.json           # docs/corpus-size.png

The curve recorded in RESULTS.md and :data:`mimetic.corpus.sizes.CURVE` comes from this script.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

AUTHORS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "authors"


def mimetic(args: list[str]) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    subprocess.run([sys.executable, "-m", "mimetic", *args], check=True, env=env)


def paragraphs(path: Path) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")) if p.strip()]


def split_author(author: Path, held_out_words: int) -> tuple[list[list[str]], list[list[str]]]:
    """Per novel: (training paragraphs in order, the last ``held_out_words / novels`` words)."""
    novels = sorted(author.glob("*.txt"))
    per = held_out_words // len(novels)
    train, held = [], []
    for novel in novels:
        paras = paragraphs(novel)
        n, cut = 0, len(paras)
        while cut > 0 and n < per:
            cut -= 1
            n += len(paras[cut].split())
        train.append(paras[:cut])
        held.append(paras[cut:])
    return train, held


def first_words(paras: list[str], n: int) -> list[str]:
    out, count = [], 0
    for p in paras:
        if count >= n:
            break
        out.append(p)
        count += len(p.split())
    return out


def write_folder(folder: Path, parts: list[list[str]], names: list[str]) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    words = 0
    for paras, name in zip(parts, names):
        (folder / name).write_text("\n\n".join(paras) + "\n", encoding="utf-8")
        words += sum(len(p.split()) for p in paras)
    return words


def fixed_held_out(root: Path, held: list[list[str]], names: list[str]) -> Path:
    """The held-out text prepared once; both of its splits concatenated, as an Arrow dataset."""
    out = root / "held-out" / "dataset"
    if out.exists():
        return out
    src, ws = root / "held-out" / "writing", root / "held-out" / "workspace"
    write_folder(src, held, names)
    mimetic(["ingest", str(src), "--workspace", str(ws)])
    mimetic(["prepare", "--workspace", str(ws)])
    from datasets import concatenate_datasets, load_from_disk

    both = concatenate_datasets([load_from_disk(str(ws / "data" / "train")), load_from_disk(str(ws / "data" / "held_out"))])
    both.save_to_disk(str(out))
    return out


def measure(ws: Path, words: int) -> dict:
    run = sorted(p for p in (ws / "runs").iterdir() if (p / "summary.json").exists())[-1]
    s = json.loads((run / "summary.json").read_text())
    m = json.loads((run / "evaluation" / "metrics.json").read_text())
    st, r = m["stylometry"], m.get("reader", {})
    att = st["attribution"]
    dist, inv, cal = r.get("distinguishability", {}), r.get("invented_words", {}), r.get("calibration", {})
    overlaps = [x["characters"] for x in m["memorization"]["voice"]["samples"]]
    return {
        "words": words, "steps": s.get("final_step"), "train_tokens": s["train_tokens"], "minutes": s["elapsed_s"] / 60,
        "nll_base": m["nll"]["base"]["nll"], "nll_voice": m["nll"]["voice"]["nll"],
        "nll_change": m["nll"]["voice"]["nll"] / m["nll"]["base"]["nll"] - 1,
        "attribution_voice": att["voice"]["writer_share"], "attribution_writer": att["held_out"]["writer_share"],
        "attribution_base": att.get("base", {}).get("writer_share"),
        "auc_voice": dist.get("voice", {}).get("auc"), "auc_base": dist.get("base", {}).get("auc"),
        "auc_writer": dist.get("writer_halves", {}).get("auc"),
        "invented_voice": inv.get("voice", {}).get("per_1000"), "invented_writer": inv.get("writer", {}).get("per_1000"),
        "calibration": cal.get("difference"), "overlap_max": max(overlaps, default=0),
        "continuity_voice": (r.get("continuity", {}).get("voice") or {}).get("kept"),
        "continuity_writer": (r.get("continuity", {}).get("writer") or {}).get("kept"),
    }


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["words"] / 1000 for r in rows]
    fig, grid = plt.subplots(2, 2, figsize=(10, 7))
    axes = grid.ravel()
    axes[0].plot(xs, [100 * r["nll_change"] for r in rows], "o-")
    axes[0].set_title("held-out NLL change (%)")
    axes[1].plot(xs, [r["auc_voice"] for r in rows], "o-", label="voice")
    axes[1].plot(xs, [r["auc_base"] for r in rows], "s--", label="base model")
    axes[1].plot(xs, [r["auc_writer"] for r in rows], "^:", label="writer vs writer")
    axes[1].set_title("told apart from the writer (ROC AUC)")
    axes[1].legend(fontsize=8)
    axes[2].plot(xs, [100 * r["attribution_voice"] for r in rows], "o-", label="voice")
    axes[2].plot(xs, [100 * r["attribution_writer"] for r in rows], "^:", label="writer's own")
    axes[2].set_title("sets attributed to the writer (%)")
    axes[2].legend(fontsize=8)
    axes[3].plot(xs, [r["invented_voice"] for r in rows], "o-", label="voice")
    axes[3].plot(xs, [r["invented_writer"] for r in rows], "^:", label="writer")
    axes[3].set_title("invented words per 1,000")
    axes[3].legend(fontsize=8)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{x:.0f}k" for x in xs])
        ax.minorticks_off()
        ax.set_xlabel("words of writing (log scale)")
    fig.suptitle("A 15-minute voice of Dickens against how much of his writing it learned from (same held-out text)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--author", default="dickens")
    ap.add_argument("--sizes", default="5000,20000,50000,100000,300000")
    ap.add_argument("--held-out-words", type=int, default=24000)
    ap.add_argument("--minutes", type=float, default=15)
    ap.add_argument("--sample-words", type=int, default=5000)
    ap.add_argument("--root", default="/tmp/mimetic-curve")
    ap.add_argument("--plot", default="", help="draw docs/corpus-size.png from a curve.json and stop")
    a = ap.parse_args()
    if a.plot:
        plot(json.loads(Path(a.plot).read_text()), Path(__file__).resolve().parents[1] / "docs" / "corpus-size.png")
        return
    root = Path(a.root)
    author = AUTHORS / a.author
    names = [p.name for p in sorted(author.glob("*.txt"))]
    train, held = split_author(author, a.held_out_words)
    held_ds = fixed_held_out(root, held, names)
    refs = root / "references"
    refs.mkdir(parents=True, exist_ok=True)
    for other in sorted(p for p in AUTHORS.iterdir() if p.is_dir() and p.name != a.author):
        if not (refs / other.name).exists():
            (refs / other.name).symlink_to(other)
    rows, out = [], root / "curve.json"
    for size in (int(s) for s in a.sizes.split(",")):
        ws, src = root / f"w{size}" / "workspace", root / f"w{size}" / "writing"
        words = write_folder(src, [first_words(p, size // len(train)) for p in train], names)
        if not list(ws.glob("runs/*/evaluation/metrics.json")):
            t = time.time()
            mimetic(["ingest", str(src), "--workspace", str(ws)])
            mimetic(["prepare", "--workspace", str(ws)])
            shutil.rmtree(ws / "data" / "held_out")
            shutil.copytree(held_ds, ws / "data" / "held_out")
            mimetic(["train", "--workspace", str(ws), "--time-budget", str(a.minutes)])
            mimetic(["evaluate", "--workspace", str(ws), "--references", str(refs), "--sample-words", str(a.sample_words)])
            print(f"size {size}: {(time.time() - t) / 60:.1f} min", flush=True)
        rows.append(measure(ws, words))
        print(json.dumps(rows[-1]), flush=True)
        out.write_text(json.dumps(rows, indent=1))
    print("\n| words | steps | NLL change | attribution voice / writer / base | AUC voice / base / writer | invented voice / writer | calibration | overlap |")
    print("|---:|---:|---:|---|---|---|---:|---:|")
    for r in rows:
        f = (lambda x, d=2: "–" if x is None else f"{x:.{d}f}")
        print(f"| {r['words']:,} | {r['steps']} | {100 * r['nll_change']:+.1f}% | {f(r['attribution_voice'])} / "
              f"{f(r['attribution_writer'])} / {f(r['attribution_base'])} | {f(r['auc_voice'])} / {f(r['auc_base'])} / "
              f"{f(r['auc_writer'])} | {f(r['invented_voice'], 1)} / {f(r['invented_writer'], 1)} | {f(r['calibration'])} | {r['overlap_max']} |")


if __name__ == "__main__":
    main()
