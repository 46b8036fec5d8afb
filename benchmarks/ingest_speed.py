"""Ingest throughput (MB/s) on the shared corpora, and how near-duplicate detection scales.

Two measurements (issue 3):

1. ``mimetic ingest`` on ``../shared/corpora/raw/blog`` (Markdown + Gemini) and
   ``../shared/corpora/raw/gutenberg`` (text in two encodings, HTML, PDF): seconds and MB/s
   of source bytes, cold (every file read) and warm (unchanged files reused from the cache).
2. Near-duplicate detection (``mimetic.corpus.ingest.near_duplicates``, MinHash LSH) on 1×, 2× and
   4× a corpus of documents with planted near duplicates: the time should grow about
   linearly (ratios near 2 and 4), and every planted duplicate should be found.

Uses ../shared/corpora when present, otherwise synthetic documents only for (2).

    .venv/bin/python benchmarks/ingest_speed.py
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

from mimetic import Workspace
from mimetic.corpus.ingest import ingest, near_duplicates

SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora"


def throughput() -> None:
    for name in ("blog", "gutenberg"):
        src = SHARED / "raw" / name
        if not src.exists():
            print(f"{name}: ../shared/corpora not present, skipped")
            continue
        size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
        with tempfile.TemporaryDirectory() as tmp:
            ws = Workspace.open(Path(tmp) / "voice")
            t = time.perf_counter()
            r = ingest([src], ws)
            cold = time.perf_counter() - t
            t = time.perf_counter()
            r2 = ingest([src], ws)
            warm = time.perf_counter() - t
        print(
            f"{name:10s} {size / 2**20:6.1f} MB  cold {cold:6.2f} s ({size / 2**20 / cold:5.2f} MB/s)  "
            f"warm {warm:5.2f} s ({size / 2**20 / warm:5.2f} MB/s, {r2.reused} files reused)  "
            f"kept {len(r.kept)} documents, {r.words:,} words"
        )


def scaling() -> None:
    if (SHARED / "authors").exists():
        words = " ".join(p.read_text() for p in sorted((SHARED / "authors").rglob("*.txt"))).split()
    else:
        rng = random.Random(0)
        words = [f"w{rng.randrange(20000)}" for _ in range(2_000_000)]
    rng = random.Random(1)
    slots = list(range(len(words) // 320))  # disjoint 300-word windows: no accidental duplicates

    def corpus(n_docs: int) -> tuple[list[str], int]:
        docs, planted = [], 0
        for i, slot in enumerate(rng.sample(slots, n_docs)):
            doc = words[slot * 320 : slot * 320 + 300]
            docs.append(" ".join(doc))
            if i % 10 == 0:  # a near duplicate: 3 words changed out of 300
                copy = list(doc)
                for k in rng.sample(range(300), 3):
                    copy[k] = "changed"
                docs.append(" ".join(copy))
                planted += 1
        return docs, planted

    base = None
    for scale in (1, 2, 4):
        docs, planted = corpus(1000 * scale)
        t = time.perf_counter()
        found = near_duplicates(docs, 0.8, 5)
        el = time.perf_counter() - t
        missed = planted - sum(1 for i, (j, _) in found.items() if docs[i].count("changed") and i == j + 1)
        base = base or el
        print(
            f"near duplicates: {len(docs):6,} documents ({scale}×)  {el:6.2f} s  ratio {el / base:4.2f}  "
            f"found {len(found)} (planted {planted}, missed {missed})"
        )


if __name__ == "__main__":
    throughput()
    scaling()
