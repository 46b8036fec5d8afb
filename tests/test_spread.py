"""Range, not only centre: the spread of a group's sets (mean pairwise Delta) and how the
evaluation reports a voice narrower than its writer."""

import json
import math

import numpy as np
import pytest

from mimetic import EvaluateConfig
from mimetic.evaluation.evaluate import analyse
from mimetic.core.records import EvaluationMetrics
from mimetic.text.stylometry import ZScorer, chunk_tokens, most_frequent_words, relative_frequencies, spread, words
from test_evaluate import _training_docs, fake_text


def _sets(texts, vocab, size=500):
    return np.stack([relative_frequencies(c, vocab) for t in texts for c in chunk_tokens(words(t), size)])


@pytest.fixture(scope="module")
def basis():
    vocab = most_frequent_words(words(fake_text(1, 20000)), 100)
    return vocab, ZScorer.fit(_sets([fake_text(1, 10000), fake_text(2, 10000, tilt=20)], vocab))  # two authors


@pytest.mark.parametrize("metric", ["cosine", "burrows"])
def test_identical_sets_have_no_spread(basis, metric):
    vocab, z = basis
    one = relative_frequencies(words(fake_text(2, 500)), vocab)
    assert spread(np.stack([one] * 4), z, metric) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("metric", ["cosine", "burrows"])
def test_more_varied_sets_spread_more_and_order_does_not_matter(basis, metric):
    vocab, z = basis
    same = _sets([fake_text(10 + i, 3000) for i in range(6)], vocab, 3000)  # one author's sets
    other = _sets([fake_text(20 + i, 3000, tilt=20) for i in range(3)], vocab, 3000)
    mixed = np.concatenate([same[:3], other])  # two authors
    assert spread(mixed, z, metric) > 1.2 * spread(same, z, metric) > 0
    narrow = 0.5 * same + 0.5 * same.mean(axis=0)  # the same sets pulled halfway to their centre
    assert 0 < spread(narrow, z, metric) < 0.8 * spread(same, z, metric)
    order = np.random.default_rng(0).permutation(len(mixed))
    assert spread(mixed[order], z, metric) == pytest.approx(spread(mixed, z, metric))
    assert spread(list(mixed), z, metric) == pytest.approx(spread(mixed, z, metric))
    # the mean over all pairs, by hand
    pairs = [(i, j) for i in range(len(same)) for j in range(i + 1, len(same))]
    from mimetic.text.stylometry import DELTAS

    by_hand = np.mean([DELTAS[metric](z(same[i]), z(same[j])) for i, j in pairs])
    assert spread(same, z, metric) == pytest.approx(by_hand)


def test_spread_needs_two_sets(basis):
    vocab, z = basis
    assert math.isnan(spread(_sets([fake_text(3, 500)], vocab), z))
    assert math.isnan(spread([], z))


def _metrics(voice_texts, held=None):
    samples = [{"base": fake_text(50 + i, 300, tilt=9), "voice": v, "writer": "w", "prefix": "p", "seed": i}
               for i, v in enumerate(voice_texts)]
    m, _ = analyse(_training_docs(), held or fake_text(7, 3000), samples, EvaluateConfig(set_words=500, n_mfw=100))
    return m


def _headline(m):
    nll = {"base": {"nll": 3.0, "ppl": 20.1, "ci": [2.9, 3.1]}, "voice": {"nll": 2.7, "ppl": 14.9, "ci": [2.6, 2.8]},
           "drop": {"value": 0.1, "ci": [0.08, 0.12]}}
    return EvaluationMetrics.from_dict({"run": "r", "nll": nll, "extraction": {}, **m}).headline()


def test_evaluation_flags_a_voice_narrower_than_its_writer():
    varied = _metrics([fake_text(60 + i, 300) for i in range(10)])
    sp = varied["stylometry"]["spread"]
    assert sp["metric"] == "cosine" and sp["sets"] == {"writer": 6, "voice": 6, "base model": 6}
    assert sp["ratio"] == pytest.approx(sp["voice"] / sp["writer"]) and sp["threshold"] == 0.8
    assert sp["narrower"] is False and sp["note"] is None
    json.dumps(varied)
    lines = _headline(varied)
    assert any(line.startswith("Range:") for line in lines) and not any("narrower than you" in line for line in lines)

    # a voice that writes the same 300 words again and again: no range at all
    narrow = _metrics([fake_text(60, 300)] * 10)
    sp = narrow["stylometry"]["spread"]
    assert sp["voice"] < 0.5 * sp["writer"] and sp["ratio"] < 0.8 and sp["narrower"] is True
    assert any("the voice is narrower than you" in line for line in _headline(narrow))


def test_spread_is_null_with_a_reason_when_there_are_too_few_sets():
    m = _metrics([fake_text(60 + i, 300) for i in range(2)])  # 600 words: one 500-word set (the rest is too short)
    sp = m["stylometry"]["spread"]
    assert sp["voice"] is None and sp["ratio"] is None and sp["narrower"] is None
    assert "at least 2 sets" in sp["note"] and "the voice has 1" in sp["note"]
    assert any(line.startswith("Range: not measured") for line in _headline(m))


def test_the_writers_range_is_measured_like_the_voices_from_their_own_continuations():
    """The voice's sets are stitched from samples of many openings; the writer's are stitched
    the same way from their own continuations of those openings, not cut from whole passages."""
    texts = [fake_text(60 + i, 300) for i in range(10)]
    samples = [{"base": fake_text(50 + i, 300, tilt=9), "voice": v, "writer": fake_text(80 + i, 300), "prefix": "p", "seed": i}
               for i, v in enumerate(texts)]
    held = fake_text(7, 3000)
    m, _ = analyse(_training_docs(), held, samples, EvaluateConfig(set_words=500, n_mfw=100))
    sp = m["stylometry"]["spread"]
    assert sp["writer_basis"] == "continuations" and sp["sets"]["writer"] == 6
    whole, _ = analyse(_training_docs(), held, [{**s, "writer": ""} for s in samples], EvaluateConfig(set_words=500, n_mfw=100))
    assert whole["stylometry"]["spread"]["writer_basis"] == "held-out text"
    assert sp["writer_held_out_text"] == pytest.approx(whole["stylometry"]["spread"]["writer"])
    assert sp["writer"] != pytest.approx(sp["writer_held_out_text"])
    assert any("continuations of the same openings" in line for line in _headline(m))
