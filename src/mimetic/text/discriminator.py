"""A discriminator between the writer's passages and a model's: the classifier of
:func:`mimetic.evaluation.reader.distinguishability`, and what ``write --best-of`` ranks drafts by.

* :func:`normalise_typography`: one form for each mark editions and models write differently, so
  that quote glyphs are never what tells two texts apart.
* :func:`features` and :func:`classifier`: word 1–2-grams and character 2–4-grams, TF-IDF
  (sublinear term frequency), L2-regularised logistic regression — the standard strong baseline of
  authorship verification (Stamatatos 2009, "A survey of modern authorship attribution methods",
  JASIST 60(3); Kestemont et al. 2019, PAN overview).
* :class:`Discriminator`: both, fitted on the writer's passages against a voice's samples;
  :meth:`Discriminator.writer_likeness` is the probability it gives a passage of being the
  writer's (scikit-learn's ``predict_proba``).
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

_TYPOGRAPHY = [
    (re.compile("[‘’‚‛′`]"), "'"),
    (re.compile("[“”„‟″«»]"), '"'),
    (re.compile(r"(?<![^\W\d_])'|'(?![^\W\d_])"), '"'),  # a single quote not inside a word quotes, as a double one does
    (re.compile(r"\s*(?:[–—―]|-{2,})\s*"), " — "),
    (re.compile(r"\.\s?\.\s?\.|…"), "…"),
    (re.compile(r"[_*]"), ""),
    (re.compile(r"\s+"), " "),
]


def normalise_typography(text: str) -> str:
    """``text`` with one form for each mark that editions and models write differently:
    quotation marks (curly, straight, single or double: British and American editions) as
    ``"``, apostrophes inside words as ``'``, every dash (en, em, ``--``) as a spaced em dash,
    ellipses as ``…``, emphasis marks (``_``, ``*``) dropped, all whitespace as single spaces.

    >>> normalise_typography("‘Well—’ she said… “_don’t_”")
    '"Well — " she said… "don\\'t"'
    """
    for pattern, repl in _TYPOGRAPHY:
        text = pattern.sub(repl, text)
    return text.strip()



def features() -> Any:
    """The feature extractor (a scikit-learn ``FeatureUnion`` of two ``TfidfVectorizer``)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    return FeatureUnion([
        ("w", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b|[^\w\s]")),
        ("c", TfidfVectorizer(analyzer="char", ngram_range=(2, 4), sublinear_tf=True)),
    ])


def classifier() -> Any:
    """L2-regularised logistic regression (C 1, liblinear), scikit-learn's."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, solver="liblinear")


MIN_PASSAGES = 6
"""Fewer passages on either side than this and no discriminator is fitted."""


class Discriminator:
    """The writer's passages against a model's, fitted once; scores new passages.

    Args:
        writer: the writer's passages (e.g. their real continuations of held-out openings).
        model: the voice's passages (e.g. its samples from the same openings).

    Raises:
        ValueError: fewer than :data:`MIN_PASSAGES` passages on either side.
    """

    def __init__(self, writer: Sequence[str], model: Sequence[str]):
        writer = [normalise_typography(t) for t in writer if t.strip()]
        model = [normalise_typography(t) for t in model if t.strip()]
        if min(len(writer), len(model)) < MIN_PASSAGES:
            raise ValueError(f"{len(writer)} passages of the writer and {len(model)} of the model; at least {MIN_PASSAGES} each are needed")
        self.union = features()
        x = self.union.fit_transform(writer + model)
        self.model = classifier().fit(x, np.array([1] * len(writer) + [0] * len(model)))
        self.passages = (len(writer), len(model))

    def writer_likeness(self, texts: Sequence[str]) -> np.ndarray:
        """``P(writer)`` of each text, shape ``(len(texts),)``, in [0, 1]: higher reads more like the writer."""
        x = self.union.transform([normalise_typography(t) for t in texts])
        return self.model.predict_proba(x)[:, 1]


__all__ = ["normalise_typography", "features", "classifier", "Discriminator", "MIN_PASSAGES"]
