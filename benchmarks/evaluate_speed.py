"""How long the model-free part of `mimetic evaluate` takes on a 300k-word corpus.

Goal (issue 4): under 60 s on a 2-core machine for a 300k-word corpus and 5,000 words of samples,
excluding generation. Uses the shared corpora when present (../shared/corpora/authors: Doyle as the
writer, ~250k words, plus Austen's Emma to reach ~300k; Dickens as the stand-in "samples"; the other
authors as references), otherwise synthetic text of the same size.

    .venv/bin/python benchmarks/evaluate_speed.py
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from mimetic.core.config import EvaluateConfig
from mimetic.evaluation.evaluate import analyse, render_report

SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "authors"


def corpus() -> tuple[list[tuple[str, str]], str, list[str], dict[str, str]]:
    if SHARED.exists():
        training = [(f.stem, f.read_text()) for f in sorted((SHARED / "doyle").glob("*.txt"))]
        training.append(("emma", (SHARED / "austen" / "emma.txt").read_text()))
        held = training[0][1][:150_000]
        other = (SHARED / "dickens" / "hard_times.txt").read_text().split()
        refs = {a: "\n\n".join(f.read_text() for f in sorted((SHARED / a).glob("*.txt"))) for a in ("hawthorne", "twain")}
    else:
        rng = random.Random(0)
        vocab = [f"w{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}" for i in range(5000)]
        w = [1 / (i + 1) for i in range(len(vocab))]
        training = [(f"doc{i}", " ".join(rng.choices(vocab, w, k=30_000))) for i in range(10)]
        held = " ".join(rng.choices(vocab, w, k=25_000))
        other = rng.choices(vocab, w, k=20_000)
        refs = {"ref": " ".join(rng.choices(vocab, w, k=100_000))}
    pieces = [" ".join(other[i * 190 : (i + 1) * 190]) for i in range(28)]  # 28 samples × 190 words ≈ 5,300 words
    samples = [{"base": p, "voice": pieces[(i + 1) % len(pieces)], "writer": p, "prefix": "", "seed": 0, "document": "x"}
               for i, p in enumerate(pieces)]
    return training, held, samples, refs


def main() -> None:
    training, held, samples, refs = corpus()
    words = sum(len(t.split()) for _, t in training)
    t0 = time.perf_counter()
    metrics, plots = analyse(training, held, samples, EvaluateConfig(), refs)
    t1 = time.perf_counter()
    metrics.update(run="bench", base_model="-", evaluated_at="-", nll={
        "base": {"nll": 3.0, "ppl": 20.1, "ci": [2.9, 3.1]}, "voice": {"nll": 2.8, "ppl": 16.4, "ci": [2.7, 2.9]},
        "drop": {"value": 0.067, "ci": [0.06, 0.07]}, "tokens": 1, "documents": 1, "resamples": 1000})
    render_report(metrics, plots, samples, [], [])
    t2 = time.perf_counter()
    print(f"corpus: {words:,} training words, {metrics['words']['voice_samples']:,} voice-sample words, "
          f"{len(refs)} reference authors")
    print(f"analyse (stylometry + memorization + names): {t1 - t0:.1f} s")
    print(f"report (plots + HTML): {t2 - t1:.1f} s")
    print(f"total: {t2 - t0:.1f} s (goal: under 60 s)")


if __name__ == "__main__":
    main()
