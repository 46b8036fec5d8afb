"""What a reader sees: can the voice's passages be told from the writer's own, does it make up
words, and is it as sure of its own text as of the writer's.

* :func:`distinguishability`: a classifier trained to tell two groups of passages apart —
  word 1–2-grams and character 2–4-grams, TF-IDF (sublinear term frequency), L2-regularised
  logistic regression, the standard strong baseline of authorship verification (Stamatatos
  2009, "A survey of modern authorship attribution methods", JASIST 60(3); Kestemont et al.
  2019, PAN overview) — scored by cross-validated ROC AUC (0.5: cannot tell them apart, 1:
  always can), with its fold spread and a bootstrap 95% interval, and the features that tell
  most. Passages are paired (the voice's and the writer's continuations of one opening), cut
  to the same number of words within each pair, and typography is normalised first
  (:func:`normalise_typography`) so that the glyphs a model writes are not the tell.
* :func:`invented_words`: words in neither the writer's training text nor a lexicon
  (``wordfreq``'s ``best`` list of each language: Speer 2022, wordfreq 3), per 1,000 words.
* :func:`measure`: both, for the voice and the base model against the writer's continuations,
  with the writer's own controls (two halves of the held-out text for the classifier, the
  continuations themselves for invented words), and the flags of :func:`flags`.
* :func:`calibration`: the voice's NLL of its own samples beside its NLL of the writer's
  continuations of the same openings (the figures of ``benchmarks/sampling_sweep.py``).

Everything here is model-free; the NLLs for :func:`calibration` come from
:func:`mimetic.evaluation.evaluate.continuation_nll`.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from typing import Any, Iterable, Sequence

import numpy as np

from mimetic.text.discriminator import classifier, features, normalise_typography

PASSAGE_WORDS = 150
"""Longest passage compared (words): the issue 33 measurements' length, about one paragraph."""
MIN_PASSAGE_WORDS = 20
"""Pairs whose shorter passage has fewer words are left out: too little for a reader to judge."""
MIN_PAIRS = 6
"""Fewer pairs than this give no AUC (a fold would hold one or two passages)."""
FOLDS, REPEATS, BOOTSTRAP = 5, 3, 1000
DISTINGUISHABLE_MARGIN = 0.2
"""A voice is flagged as told apart from the writer when its AUC exceeds the control's (at
least 0.5, since cross-validated AUC on indistinguishable groups falls a little below 0.5) by
this much and its 95% interval lies above the control. On issue 33's voices the AUC was
0.93–0.97 against the writer's 0.57; 0.2 above chance is where a classifier with a few dozen
passages is right about 7 times in 10, which a careful reader can match."""
INVENTED_MARGIN = 1.0
"""Invented words per 1,000 above the writer's own rate that flag a voice, when the difference
is also beyond chance (:func:`_more_often`). Issue 33's voices invented 3.1–5.7 per 1,000
against their writers' 0.0–0.3; its target line is 0.5. One odd word in a 5,000-word sample is
0.2 per 1,000, so the flag needs five or more such words there."""

def paired_passages(a: Sequence[str], b: Sequence[str], max_words: int = PASSAGE_WORDS,
                    min_words: int = MIN_PASSAGE_WORDS) -> tuple[list[str], list[str]]:
    """Pairs ``(a[i], b[i])`` normalised (:func:`normalise_typography`) and cut to the same
    number of words, ``min(max_words, len(a[i]), len(b[i]))`` (whitespace-separated words, cut
    from the start); pairs shorter than ``min_words`` are left out, so lengths never tell the
    two groups apart."""
    out_a, out_b = [], []
    for x, y in zip(a, b):
        wx, wy = normalise_typography(x).split(), normalise_typography(y).split()
        n = min(max_words, len(wx), len(wy))
        if n >= min_words:
            out_a.append(" ".join(wx[:n]))
            out_b.append(" ".join(wy[:n]))
    return out_a, out_b


def halves(text: str, n_pairs: int, words_each: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """The writer-against-writer control: ``text`` (normalised) cut into ``words_each``-word
    passages, up to ``2 * n_pairs`` of them spread evenly over it, split at random (seeded) into
    two halves of equal size."""
    w = normalise_typography(text).split()
    chunks = [" ".join(w[i : i + words_each]) for i in range(0, len(w) - words_each + 1, words_each)]
    if len(chunks) > 2 * n_pairs:
        step = len(chunks) / (2 * n_pairs)
        chunks = [chunks[int(k * step)] for k in range(2 * n_pairs)]
    order = np.random.default_rng(seed).permutation(len(chunks))
    k = len(chunks) // 2
    return [chunks[i] for i in order[:k]], [chunks[i] for i in order[k : 2 * k]]


# ------------------------------------------------------------------------------ the classifier


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of ``scores`` for binary ``labels`` (1 positive), ties counted half
    (scikit-learn's ``roc_auc_score``); ``nan`` when a class is missing."""
    from sklearn.metrics import roc_auc_score

    if len(set(np.asarray(labels).tolist())) < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


def _tells(names: np.ndarray, x: Any, coef: np.ndarray, labels: np.ndarray, top: int) -> dict[str, list[dict[str, Any]]]:
    """The ``top`` features with the largest weights each way: ``{"a": [...], "b": [...]}``
    (``a``: label 0, negative weights; a feature that is part of, or holds, one listed before
    it is left out), each ``{"feature", "kind" ("word" | "characters"),
    "weight", "in_a", "in_b"}`` (``in_*``: how many passages of each group contain it)."""
    present = (x > 0).astype(np.int64)
    in_a = np.asarray(present[labels == 0].sum(axis=0)).ravel()
    in_b = np.asarray(present[labels == 1].sum(axis=0)).ravel()

    def row(j: int) -> dict[str, Any]:
        kind, feature = names[j].split("__", 1)
        return {"feature": feature, "kind": "word" if kind == "w" else "characters", "weight": float(coef[j]),
                "in_a": int(in_a[j]), "in_b": int(in_b[j])}

    def pick(order: np.ndarray, sign: int) -> list[dict[str, Any]]:
        out, seen = [], []
        for j in order:
            if sign * coef[j] <= 0 or len(out) == top:
                break
            key = names[j].split("__", 1)[1].strip()
            if key and not any(key in k or k in key for k in seen):  # "—", " —", "— " tell one thing
                out.append(row(j))
                seen.append(key)
        return out

    order = np.argsort(coef)
    return {"a": pick(order, -1), "b": pick(order[::-1], 1)}


def distinguishability(a: Sequence[str], b: Sequence[str], *, folds: int = FOLDS, repeats: int = REPEATS,
                       resamples: int = BOOTSTRAP, seed: int = 0, top: int = 8) -> dict[str, Any]:
    """How well a classifier tells passages ``b`` from passages ``a``: cross-validated ROC AUC.

    ``a[i]`` and ``b[i]`` are a pair (two texts from one opening, cut to one length by
    :func:`paired_passages`) and always fall in the same fold, so nothing of an opening is
    learned from its own pair. The TF-IDF features (word 1–2-grams and character 2–4-grams)
    are fitted once on all passages (no labels: the vocabulary and document frequencies only);
    ``repeats`` times, the pairs are dealt into ``folds`` folds at random (seeded) and each fold
    is scored by a logistic regression fitted on the others.

    Returns:
        ``{"auc"`` (mean over repeats of the AUC of all out-of-fold scores), ``"ci"`` (95%
        percentile interval from ``resamples`` bootstrap resamples of pairs, on the scores
        averaged over repeats), ``"fold_sd"`` (standard deviation of the single folds' AUCs),
        ``"pairs"``, ``"words"`` (median words per passage), ``"folds"``, ``"repeats"``,
        ``"tells"`` (:func:`_tells` of a classifier fitted on every pair: ``a``'s and ``b``'s
        strongest features)``}``; ``{"pairs": n, "auc": None, "note": …}`` with fewer than
        :data:`MIN_PAIRS` pairs.

    Raises:
        ValueError: ``a`` and ``b`` differ in length.
    """
    from threadpoolctl import threadpool_limits

    if len(a) != len(b):
        raise ValueError(f"distinguishability needs pairs: {len(a)} passages against {len(b)}")
    n = len(a)
    if n < MIN_PAIRS:
        return {"pairs": n, "auc": None, "note": f"{n} passage pairs of {MIN_PASSAGE_WORDS}+ words; at least {MIN_PAIRS} are needed"}
    texts, labels = list(a) + list(b), np.array([0] * n + [1] * n)
    folds = min(folds, n)
    rng = np.random.default_rng(seed)
    scores, aucs, fold_aucs = np.zeros((repeats, 2 * n)), [], []
    with threadpool_limits(1):  # tiny problems: BLAS threads only contend (10x slower on a busy 2-core machine)
        union = features()
        x = union.fit_transform(texts)
        for r in range(repeats):
            fold_of = np.tile(rng.permutation(n) % folds, 2)
            for k in range(folds):
                test, train = np.flatnonzero(fold_of == k), np.flatnonzero(fold_of != k)
                scores[r, test] = classifier().fit(x[train], labels[train]).decision_function(x[test])
                fold_aucs.append(auc(labels[test], scores[r, test]))
            aucs.append(auc(labels, scores[r]))
        full = classifier().fit(x, labels)
    mean = scores.mean(axis=0)
    picks = rng.integers(0, n, (resamples, n))
    boot = [auc(labels[np.concatenate([p, p + n])], mean[np.concatenate([p, p + n])]) for p in picks]
    return {
        "auc": float(np.mean(aucs)), "ci": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
        "fold_sd": float(np.std(fold_aucs)), "pairs": n, "words": int(np.median([len(t.split()) for t in texts])),
        "folds": folds, "repeats": repeats, "tells": _tells(union.get_feature_names_out(), x, full.coef_[0], labels, top),
    }


# ------------------------------------------------------------------------------ invented words


_TOKEN = re.compile(r"[\w'’-]+")
_LANGUAGE_SAMPLE = 20_000


@functools.cache
def lexicon(language: str) -> frozenset[str]:
    """The words of ``wordfreq``'s ``best`` list for ``language`` (lower-cased; English has about
    320,000), or an empty set when wordfreq does not have the language.

    Raises:
        ImportError: wordfreq is not installed (it is a dependency of mimetic).
    """
    import wordfreq

    if language not in wordfreq.available_languages(wordlist="best"):
        return frozenset()
    return frozenset(wordfreq.get_frequency_dict(language, wordlist="best"))


def writer_language(text: str) -> str | None:
    """The language of ``text`` (its first 20,000 characters) by py3langid (Lui & Baldwin 2012),
    or ``None`` when py3langid is missing or the text is empty."""
    try:
        import py3langid
    except ImportError:
        return None
    sample = text[:_LANGUAGE_SAMPLE]
    return py3langid.classify(sample)[0] if sample.strip() else None


def vocabulary(text: str) -> frozenset[str]:
    """Every word form of ``text`` lower-cased (curly apostrophes straightened), with the parts
    of its hyphenated and apostrophised words."""
    out: set[str] = set()
    for token in _TOKEN.findall(text.lower().replace("’", "'")):
        token = token.strip("'-")
        out.add(token)
        out.update(p for p in re.split(r"['-]", token) if p)
    return frozenset(out)


_PREFIXES = ("un", "in", "im", "dis", "non", "over", "out", "re")
_SUFFIXES = ("s", "es", "ies", "ed", "d", "ing", "ings", "ly", "ness", "nesses", "ment", "ments", "er", "ers", "est", "ful",
             "less", "able", "ably", "ity", "ities", "eth", "st")


def _known(word: str, known: frozenset[str]) -> bool:
    """``word`` (lower-cased) or, when it is not, its stem after one common English prefix or
    suffix (``tremblings`` → ``trembling``, ``undiscerned`` → ``discerned``, the archaic
    ``sleepeth`` → ``sleep`` and ``ledst`` → ``led``; a stem of three or
    more letters; ``-ies`` also as ``-y``), is in ``known``. Archaic and derived forms a writer
    uses are not invented; a made-up stem stays made up (``cheeklets`` → ``cheeklet``)."""
    if word in known:
        return True
    stems = [word[len(p):] for p in _PREFIXES if word.startswith(p)]
    stems += [word[: -len(x)] for x in _SUFFIXES if word.endswith(x)] + ([word[:-3] + "y"] if word.endswith("ies") else [])
    return any(len(st) >= 3 and st in known for st in stems)


def invented_words(text: str, known: Iterable[str] | frozenset[str], examples: int = 12) -> dict[str, Any]:
    """The words of ``text`` found neither in ``known`` (the writer's vocabulary and the lexicon,
    lower-cased: :func:`vocabulary`, :func:`lexicon`) nor made of known parts.

    A token is a run of letters, apostrophes and hyphens (leading and trailing ones stripped);
    tokens with a digit or underscore, and single letters, are not words here. A word is known
    when it, or every one of its hyphen- and apostrophe-separated parts of two or more letters,
    is known (``sea-captain``, ``don't``, ``Pickwick's``), each alone or by its stem after one
    common English affix (:func:`_known`). An unknown word that starts with a
    capital is counted as a *new name*, not an invented word: writers invent names, and a name
    the writer used is in their vocabulary.

    Returns:
        ``{"words"`` (tokens counted), ``"invented"`` (count), ``"per_1000"``, ``"examples"``
        (``[[word, count]]``, commonest first), ``"new_names"``, ``"new_names_per_1000"``,
        ``"name_examples"}``.
    """
    known = known if isinstance(known, (set, frozenset)) else frozenset(known)
    invented, names = Counter(), Counter()
    total = 0
    for token in _TOKEN.findall(text.replace("’", "'")):
        token = token.strip("'-")
        if len(token) < 2 or any(ch.isdigit() or ch == "_" for ch in token):
            continue
        total += 1
        low = token.lower()
        if _known(low, known) or all(_known(p, known) for p in re.split(r"['-]", low) if len(p) >= 2):
            continue
        (names if token[0].isupper() else invented)[token if token[0].isupper() else low] += 1
    per_k = lambda c: 1000 * sum(c.values()) / max(1, total)  # noqa: E731
    return {"words": total, "invented": sum(invented.values()), "per_1000": per_k(invented),
            "examples": [[w, c] for w, c in invented.most_common(examples)], "new_names": sum(names.values()),
            "new_names_per_1000": per_k(names), "name_examples": [[w, c] for w, c in names.most_common(examples)]}


# ------------------------------------------------------------------------------ together


def calibration(nll_of_samples: float | None, nll_of_writer: float | None) -> dict[str, Any]:
    """The voice's NLL (nats/token) of its own samples and of the writer's continuations of the
    same openings, and their difference ``samples - writer``: above 0 its samples are more
    surprising to it than real text (sampled hotter than the writer, the first sign of
    incoherence), below 0 more predictable (blander). ``{}`` when either is unknown."""
    if nll_of_samples is None or nll_of_writer is None:
        return {}
    return {"voice_nll_of_samples": nll_of_samples, "voice_nll_of_writer": nll_of_writer, "difference": nll_of_samples - nll_of_writer}


def flags(r: dict[str, Any]) -> dict[str, bool | None]:
    """``{"distinguishable", "invents_words"}`` of a :func:`measure` result (``None``: not
    measured); thresholds :data:`DISTINGUISHABLE_MARGIN`, :data:`INVENTED_MARGIN` (and a
    significant difference, :func:`_more_often`)."""
    d, inv = r.get("distinguishability", {}), r.get("invented_words", {})
    voice, control = d.get("voice", {}), d.get("writer_halves", {})
    told = None
    if voice.get("auc") is not None:
        floor = max(0.5, control.get("auc") or 0.5)
        told = voice["auc"] - floor >= DISTINGUISHABLE_MARGIN and voice["ci"][0] > floor
    invents = None
    if inv.get("voice") and inv.get("writer"):
        invents = inv["voice"]["per_1000"] - inv["writer"]["per_1000"] > INVENTED_MARGIN and _more_often(inv["voice"], inv["writer"])
    return {"distinguishable": told, "invents_words": invents}


def _more_often(a: dict[str, Any], b: dict[str, Any], alpha: float = 0.01) -> bool:
    """Whether ``a`` invents words more often than ``b`` beyond chance: a one-sided exact test
    of two Poisson rates (the binomial test of ``a``'s share of all invented words against its
    share of the words, Przyborowski & Wilenski 1940) at level ``alpha``."""
    from scipy.stats import binomtest

    k, n = a["invented"], a["invented"] + b["invented"]
    if not n or not a["words"]:
        return False
    return bool(binomtest(k, n, a["words"] / (a["words"] + b["words"]), alternative="greater").pvalue < alpha)


def continuity(samples: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    """Does a continuation keep the people and places of its opening? Of the openings that name
    someone (:func:`mimetic.text.stylometry.proper_names` of the opening), the share whose
    continuation by ``key`` (``voice``, ``base``, ``writer``) names one of them again.

    Returns:
        ``{"openings": openings with a name, "kept": share (None when no opening names anyone)}``.
    """
    from mimetic.text.stylometry import proper_names

    named, kept = 0, 0
    for s in samples:
        names = set(proper_names([s.get("prefix", "")]))
        text = s.get(key, "")
        if not names or not text:
            continue
        named += 1
        kept += any(re.search(rf"\b{re.escape(n)}\b", text) for n in names)
    return {"openings": named, "kept": kept / named if named else None}


def measure(training: str, held_out: str, samples: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Distinguishability and invented words of the voice and the base model, with the writer's
    controls.

    Args:
        training: the training text (the writer's vocabulary; its language picks a second lexicon
            beside English).
        held_out: the held-out text (the writer-against-writer control's passages).
        samples: dicts with ``writer`` (the writer's continuation), ``voice`` and ``base``
            (``""`` when not sampled) for the same openings.

    Returns:
        ``{"distinguishability": {"voice", "base", "writer_halves"}`` (each
        :func:`distinguishability`, ``passages``: what was compared), ``"invented_words":
        {"voice", "base", "writer"}`` (each :func:`invented_words`), ``"lexicon"`` (languages),
        ``"continuity"``: ``{"voice", "base", "writer"}`` (each :func:`continuity`), ``"flags"``
        (:func:`flags`)``}``.
    """
    writer = [s.get("writer", "") for s in samples]
    out: dict[str, Any] = {"distinguishability": {}, "invented_words": {}}
    words_each = PASSAGE_WORDS
    for key in ("voice", "base"):
        if not any(s.get(key) for s in samples):
            continue
        a, b = paired_passages(writer, [s[key] for s in samples])
        out["distinguishability"][key] = {**distinguishability(a, b, seed=seed), "passages": "your continuations against the "
                                          + ("voice's" if key == "voice" else "base model's") + " of the same openings"}
        if key == "voice" and a:
            words_each = int(np.median([len(t.split()) for t in a]))
    n = out["distinguishability"].get("voice", {}).get("pairs") or len(samples)
    a, b = halves(held_out, n, max(MIN_PASSAGE_WORDS, words_each), seed)
    out["distinguishability"]["writer_halves"] = {**distinguishability(a, b, seed=seed),
                                                  "passages": "two random halves of your held-out writing"}
    languages = ["en"] + [x for x in [writer_language(training)] if x and x != "en"]
    known = vocabulary(training).union(*(lexicon(x) for x in languages))
    for key, texts in (("voice", [s.get("voice", "") for s in samples]), ("base", [s.get("base", "") for s in samples]), ("writer", writer)):
        if any(texts):
            out["invented_words"][key] = invented_words("\n\n".join(texts), known)
    out["lexicon"] = languages
    out["continuity"] = {key: continuity(samples, key) for key in ("voice", "base", "writer") if any(s.get(key) for s in samples)}
    out["flags"] = flags(out)
    return out


__all__ = ["normalise_typography", "paired_passages", "halves", "auc", "distinguishability", "lexicon", "writer_language",
           "vocabulary", "invented_words", "continuity", "calibration", "flags", "measure"]
