"""How much writing is enough: where a corpus sits on mimetic's measured corpus-size curve.

:data:`CURVE` is ``benchmarks/corpus_size.py``'s measurement: the default voice (the embedded
SmolLM2-135M-Instruct, a 15-minute budget, 2 epochs at most) trained on the first N words of one
shared novelist's two novels and measured on the same held-out text (the last 24,000 words), with
every figure ``mimetic evaluate`` reports. :func:`size_verdict` turns a writer's word count into
one sentence from it, which ``mimetic ingest``, ``mimetic voice`` and the desk's Corpus page show.

The curve is one writer's, on one machine kind; it says what more writing bought there, not a law.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CURVE_SOURCE = "a 15-minute voice of Charles Dickens (benchmarks/corpus_size.py, 2-core AMD EPYC, December 2026)"
"""Where :data:`CURVE` was measured (RESULTS.md has the whole table and the CPU's peaks)."""

CURVE: list[dict[str, Any]] = []
"""One row per corpus size, smallest first: ``words`` (the corpus), ``nll_change`` (held-out NLL,
voice over base, minus 1), ``auc_voice`` / ``auc_base`` (a classifier telling their passages
from the writer's continuations: ROC AUC, 0.5 = cannot tell), ``attribution_voice`` /
``attribution_writer`` (shares of 1,000-word sets Cosine Delta attributes to the writer),
``invented_voice`` (invented words per 1,000)."""

TOO_LITTLE = 0
"""Below this many words the measured voice was no closer to the writer than the base model
(set from :data:`CURVE`: the smallest size whose voice beat the base model on held-out NLL by 3%
and on distinguishability)."""

PLENTY = 0
"""From this many words on, the curve's voice was as good as at the largest size measured within
the 15-minute budget: more writing needs a longer budget to help."""


@dataclass(frozen=True)
class SizeVerdict:
    """Where a corpus sits on :data:`CURVE`.

    Attributes:
        words: the corpus's words.
        band: ``too little`` (below :data:`TOO_LITTLE`), ``enough`` or ``plenty`` (from :data:`PLENTY`).
        sentence: one sentence for the writer, with the nearest measured point's figures.
        nearest: that point (a row of :data:`CURVE`), or ``None`` when no curve is recorded.
    """

    words: int
    band: str
    sentence: str
    nearest: dict[str, Any] | None


def size_verdict(words: int) -> SizeVerdict:
    """Where ``words`` words of writing sit on :data:`CURVE`, in one sentence.

    Args:
        words: the corpus's words after cleaning (``ingest``'s count).

    Returns:
        A :class:`SizeVerdict`; its ``nearest`` is the measured size closest on a log scale.
    """
    if not CURVE:
        return SizeVerdict(words, "enough", "", None)
    import math

    nearest = min(CURVE, key=lambda r: abs(math.log(max(words, 1) / r["words"])))
    what = (f"on mimetic's measured curve ({CURVE_SOURCE}), a voice from {nearest['words']:,} words lowered held-out NLL "
            f"by {-100 * nearest['nll_change']:.0f}% and a classifier told its passages from the writer's with ROC AUC "
            f"{nearest['auc_voice']:.2f} (the base model {nearest['auc_base']:.2f}; 0.5 = cannot tell)")
    if words < TOO_LITTLE:
        band, advice = "too little", (f"Below about {TOO_LITTLE:,} words the voice stayed as far from the writer as the "
                                      "base model: add writing if you have more.")
    elif words < PLENTY:
        band, advice = "enough", f"More writing kept helping up to about {PLENTY:,} words."
    else:
        band, advice = "plenty", ("Beyond this the 15-minute voice did not get closer: a longer --time-budget "
                                  "lets it learn from more of your writing.")
    return SizeVerdict(words, band, f"{words:,} words: {what}. {advice}", nearest)


__all__ = ["CURVE", "CURVE_SOURCE", "TOO_LITTLE", "PLENTY", "SizeVerdict", "size_verdict"]
