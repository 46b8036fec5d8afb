"""Memorization audit for the evaluate stage: is the voice quoting the writer back?

:class:`TrainingIndex` holds the training text as one sequence of integer token ids (words and
punctuation marks, case kept, quotes normalised) with a suffix array built by ``pydivsufsort``
(libdivsufsort, Mori). For every position of a sample, a binary search over the suffix array
gives the *matching statistic*: the length of the longest prefix of the sample from there that
occurs verbatim somewhere in the training text (Chang & Lawler 1994). From these:

* the **longest verbatim overlap** of each sample (tokens, characters, the passage itself and
  the training document it comes from);
* the share of the sample's **8-grams and 13-grams** found in the training text (13-gram overlap
  is the contamination test of Brown et al. 2020, GPT-3 paper, appendix C).

Building the index for a 300k-word corpus takes well under a second; a 5,000-word audit a
fraction of one. Carlini-style extraction (prefixes from the training text, greedy
continuation, exact-match rate; Carlini et al. 2021, "Extracting Training Data from Large
Language Models", and 2023, "Quantifying Memorization Across Neural Language Models") needs the
model and lives in :mod:`mimetic.evaluation.evaluate`.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

_TOKEN = re.compile(r"\w+|[^\w\s]")
_FOLD = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'", "—": "-", "–": "-"})


def tokenize(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Words and punctuation marks of ``text`` with their character spans.

    Curly quotes and dashes are folded to ASCII so editions agree; case is kept (verbatim).
    Returns ``(tokens, spans)``, ``spans[i] = (start, end)`` into ``text``.
    """
    toks, spans = [], []
    for m in _TOKEN.finditer(text):
        toks.append(m.group().translate(_FOLD))
        spans.append(m.span())
    return toks, spans


@dataclass
class Overlap:
    """The longest verbatim overlap of one sample with the training text."""

    tokens: int
    characters: int
    passage: str
    document: str | None
    share_8gram: float
    share_13gram: float
    matching: list[int] = field(repr=False, default_factory=list)


class TrainingIndex:
    """A suffix-array index of the training documents for verbatim-overlap queries.

    Args:
        documents: ``[(doc_id, text), …]``; matches never cross from one document to the next.

    Memory: about 12 bytes per token (ids, suffix array, document starts).
    """

    def __init__(self, documents: Sequence[tuple[str, str]]):
        from pydivsufsort import divsufsort

        self.vocab: dict[str, int] = {}
        seq: list[int] = []
        self.doc_ids: list[str] = []
        self.doc_starts: list[int] = []
        self.texts: list[str] = []
        self.spans: list[list[tuple[int, int]]] = []
        for doc_id, text in documents:
            toks, spans = tokenize(text)
            self.doc_ids.append(doc_id)
            self.doc_starts.append(len(seq))
            self.texts.append(text)
            self.spans.append(spans)
            seq.extend(self.vocab.setdefault(t, len(self.vocab) + 1) for t in toks)
            seq.append(0)  # document separator: id 0 never occurs in a sample
        self.tokens = len(seq) - len(self.doc_ids)
        self.seq = seq
        self.sa = divsufsort(np.asarray(seq, dtype=np.int64)).tolist() if seq else []

    def _longest_at(self, s: list[int], i: int) -> tuple[int, int]:
        """Longest ``l`` such that ``s[i:i+l]`` occurs in the training text, and one start of it."""
        q = s[i:]
        seq, sa = self.seq, self.sa
        lo = bisect.bisect_left(sa, q, key=lambda p: seq[p : p + len(q)])
        best, where = 0, -1
        for j in (lo - 1, lo):
            if 0 <= j < len(sa):
                p = sa[j]
                n = 0
                while n < len(q) and p + n < len(seq) and seq[p + n] == q[n]:
                    n += 1
                if n > best:
                    best, where = n, p
        return best, where

    def matching_statistics(self, tokens: list[str]) -> tuple[list[int], list[int]]:
        """For each position ``i`` of ``tokens``: the longest verbatim match starting there, and a
        training position where it occurs (``-1`` when nothing matches)."""
        s = [self.vocab.get(t, -1) for t in tokens]
        lengths, where = [0] * len(s), [-1] * len(s)
        for i in range(len(s)):
            if s[i] >= 0:
                lengths[i], where[i] = self._longest_at(s, i)
        return lengths, where

    def _document_of(self, position: int) -> tuple[int, int]:
        d = bisect.bisect_right(self.doc_starts, position) - 1
        return d, position - self.doc_starts[d]

    def overlap(self, text: str) -> Overlap:
        """The longest verbatim overlap of ``text`` with the training text, and its n-gram shares."""
        toks, spans = tokenize(text)
        lengths, where = self.matching_statistics(toks)
        best = max(range(len(toks)), key=lambda i: lengths[i], default=None)
        if best is None or lengths[best] == 0:
            return Overlap(0, 0, "", None, 0.0, 0.0, lengths)
        n = lengths[best]
        start, end = spans[best][0], spans[best + n - 1][1]
        d, _ = self._document_of(where[best])

        def share(k: int) -> float:
            total = len(toks) - k + 1
            return sum(1 for x in lengths[:total] if x >= k) / total if total > 0 else 0.0

        return Overlap(n, end - start, text[start:end], self.doc_ids[d], share(8), share(13), lengths)


def audit(index: TrainingIndex, samples: Sequence[str], flag_tokens: int = 50, flag_share_13: float = 0.1) -> dict[str, Any]:
    """Verbatim-overlap audit of ``samples`` against ``index``.

    A sample is *flagged* when its longest overlap reaches ``flag_tokens`` tokens (words and
    punctuation; 50 follows Carlini et al. 2023's 50-token extraction length) or when
    ``flag_share_13`` or more of its 13-grams occur in the training text.

    Returns:
        ``{"samples": [per-sample dict], "flagged": int, "longest_tokens": int, "longest_characters":
        int, "mean_share_8gram": float, "mean_share_13gram": float}``; each per-sample dict has
        ``tokens``, ``characters``, ``passage``, ``document``, ``share_8gram``, ``share_13gram``, ``flagged``.
    """
    rows = []
    for text in samples:
        o = index.overlap(text)
        rows.append({
            "tokens": o.tokens, "characters": o.characters, "passage": o.passage, "document": o.document,
            "share_8gram": o.share_8gram, "share_13gram": o.share_13gram,
            "flagged": o.tokens >= flag_tokens or o.share_13gram >= flag_share_13,
        })
    return {
        "samples": rows,
        "flagged": sum(r["flagged"] for r in rows),
        "longest_tokens": max((r["tokens"] for r in rows), default=0),
        "longest_characters": max((r["characters"] for r in rows), default=0),
        "mean_share_8gram": float(np.mean([r["share_8gram"] for r in rows])) if rows else 0.0,
        "mean_share_13gram": float(np.mean([r["share_13gram"] for r in rows])) if rows else 0.0,
        "flag_tokens": flag_tokens,
        "flag_share_13gram": flag_share_13,
    }


__all__ = ["TrainingIndex", "Overlap", "audit", "tokenize"]
