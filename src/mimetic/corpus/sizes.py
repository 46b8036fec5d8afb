"""How much writing is enough: where a corpus sits on mimetic's measured corpus-size curve.

:data:`CURVE` is ``benchmarks/corpus_size.py``'s measurement: the default voice (the embedded
SmolLM2-135M-Instruct, a 15-minute budget, 2 epochs at most) trained on the first N words of one
shared novelist's two novels and measured on the same held-out text (the last 12,000 words of each), with
every figure ``mimetic evaluate`` reports. :func:`size_verdict` turns a writer's word count into
one sentence from it, which ``mimetic ingest``, ``mimetic voice`` and the desk's Corpus page show.

The curve is one writer's, on one machine kind; it says what more writing bought there, not a law.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CURVE_SOURCE = "15-minute voices of Charles Dickens on 2 CPU cores"
"""Where :data:`CURVE` was measured (RESULTS.md has the whole table and the CPU's peaks)."""

CURVE: list[dict[str, Any]] = [
    {"words": 5016, "steps": 20, "nll_change": -0.029, "auc_voice": 0.956, "auc_base": 0.998, "auc_writer": 0.417, "attribution_voice": 0.143, "attribution_writer": 0.583, "invented_voice": 0.322, "invented_writer": 2.135},
    {"words": 20084, "steps": 36, "nll_change": -0.047, "auc_voice": 0.977, "auc_base": 0.998, "auc_writer": 0.417, "attribution_voice": 0.714, "attribution_writer": 0.625, "invented_voice": 1.615, "invented_writer": 1.941},
    {"words": 50169, "steps": 60, "nll_change": -0.076, "auc_voice": 0.966, "auc_base": 0.998, "auc_writer": 0.417, "attribution_voice": 0.714, "attribution_writer": 0.792, "invented_voice": 0.964, "invented_writer": 1.941},
    {"words": 100098, "steps": 152, "nll_change": -0.091, "auc_voice": 0.928, "auc_base": 0.998, "auc_writer": 0.417, "attribution_voice": 1.000, "attribution_writer": 0.917, "invented_voice": 0.330, "invented_writer": 2.135},
    {"words": 242195, "steps": 155, "nll_change": -0.096, "auc_voice": 0.911, "auc_base": 0.998, "auc_writer": 0.417, "attribution_voice": 1.000, "attribution_writer": 0.875, "invented_voice": 1.283, "invented_writer": 1.747},
]
"""One row per corpus size, smallest first: ``words`` (the corpus; the largest is all of both
novels but the held-out text), ``steps`` trained, ``nll_change`` (held-out NLL, voice over base,
minus 1), ``auc_voice`` / ``auc_base`` / ``auc_writer`` (a classifier telling the voice's, the
base model's, or half of the writer's own passages from the writer's: ROC AUC, 0.5 = cannot
tell, ±0.13 with the 28 pairs measured), ``attribution_voice`` / ``attribution_writer`` (shares of
1,000-word sets Cosine Delta attributes to the writer among five novelists and the base model),
``invented_voice`` / ``invented_writer`` (words per 1,000 in neither the training text nor a
dictionary). Measured December 2026 on 2 cores of an AMD EPYC (bf16 matmul peak 372 GFLOP/s)."""

def _too_little(curve: list[dict[str, Any]]) -> int:
    """The smallest measured size whose voice's 1,000-word sets were attributed to the writer at
    least as often as the writer's own held-out sets (below it, the voice was still much nearer
    the base model than the writer)."""
    return next((r["words"] for r in curve if r["attribution_voice"] >= r["attribution_writer"]), curve[-1]["words"]) if curve else 0


def _plenty(curve: list[dict[str, Any]]) -> int:
    """The smallest measured size whose held-out NLL change came within one point of the
    largest size's: past it, more writing bought little in the 15-minute budget."""
    return next((r["words"] for r in curve if r["nll_change"] <= curve[-1]["nll_change"] + 0.01), curve[-1]["words"]) if curve else 0


TOO_LITTLE = _too_little(CURVE)
"""Below this many words a writer is warned (:func:`_too_little` of :data:`CURVE`)."""

PLENTY = _plenty(CURVE)
"""From this many words on, the curve's voice was about as good as at the largest size measured
(:func:`_plenty` of :data:`CURVE`): more writing needs a longer budget to help."""


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
            f"by {-100 * nearest['nll_change']:.0f}%, {100 * nearest['attribution_voice']:.0f}% of its passages read as the "
            f"writer's by word frequencies (the writer's own: {100 * nearest['attribution_writer']:.0f}%), and a classifier "
            f"still told them from the writer's with ROC AUC {nearest['auc_voice']:.2f} (0.5 = cannot tell)")
    if words < TOO_LITTLE:
        below = CURVE[0]
        band, advice = "too little", (f"Below about {round_words(TOO_LITTLE):,} words the voice read as the writer far less often "
                                      f"than the writer's own text ({100 * below['attribution_voice']:.0f}% against "
                                      f"{100 * below['attribution_writer']:.0f}%): add writing if you have more.")
    elif words < PLENTY:
        band, advice = "enough", f"More writing kept helping up to about {round_words(PLENTY):,} words."
    else:
        band, advice = "plenty", ("Beyond this the 15-minute voice got little closer: a longer --time-budget "
                                  "lets it learn from more of your writing.")
    return SizeVerdict(words, band, f"{words:,} words: {what}. {advice}", nearest)


def round_words(words: int) -> int:
    """``words`` to two significant figures (20,084 → 20,000)."""
    return int(float(f"{words:.2g}"))


__all__ = ["CURVE", "CURVE_SOURCE", "TOO_LITTLE", "PLENTY", "SizeVerdict", "size_verdict", "round_words"]
