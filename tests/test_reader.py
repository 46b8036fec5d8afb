"""What a reader sees (issue 33): the classifier that tells a voice's passages from the writer's,
invented words, calibration, and the warnings they raise — on the real components (scikit-learn,
wordfreq), with a small grammar of English as the writer."""

import json
import random

import numpy as np
import pytest

from conftest import SHARED
from mimetic.core.records import EvaluationMetrics
from mimetic.evaluation.reader import (
    auc,
    calibration,
    distinguishability,
    invented_words,
    lexicon,
    measure,
    normalise_typography,
    paired_passages,
    vocabulary,
)

NOUNS = "house river letter garden window morning carriage sister friend door evening road field church master servant".split()
ADJECTIVES = "old quiet little dark cold bright narrow green heavy gentle".split()
VERBS = "opened watched followed crossed remembered answered left found carried".split()
ADVERBS = "slowly again at once without a word in silence".split(" ")


def writer_text(seed: int, sentences: int = 400) -> str:
    """A writer made of a small English grammar: plain sentences, some dialogue, some dashes."""
    rng = random.Random(seed)
    out = []
    for i in range(sentences):
        n1, n2, a, v = rng.choice(NOUNS), rng.choice(NOUNS), rng.choice(ADJECTIVES), rng.choice(VERBS)
        kind = rng.random()
        if kind < 0.2:
            out.append(f"“The {n1} is {a},” said my {n2}.")
        elif kind < 0.35:
            out.append(f"The {a} {n1} {v} the {n2} — {rng.choice(ADVERBS)} — and we {rng.choice(VERBS)} it.")
        else:
            out.append(f"The {a} {n1} {v} the {n2}, and the {rng.choice(NOUNS)} {rng.choice(VERBS)} it {rng.choice(ADVERBS)}.")
        if i % 6 == 5:
            out.append("\n\n")
    return " ".join(out)


def passages(text: str, n: int, words: int = 120) -> list[str]:
    w = text.split()
    return [" ".join(w[i * words : (i + 1) * words]) for i in range(n)]


def samples_from(writer: list[str], voice: list[str]) -> list[dict]:
    return [{"prefix": "p", "writer": w, "voice": v, "base": ""} for w, v in zip(writer, voice)]


def shuffle_words(text: str, seed: int) -> str:
    w = text.split()
    random.Random(seed).shuffle(w)
    return " ".join(w)


def garble(text: str, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join("".join(rng.sample(t, len(t))) if t.isalpha() and len(t) > 3 else t for t in text.split())


TRAINING, HELD = writer_text(1, 1500), writer_text(2, 600)


def test_typography_is_one_form_and_pairs_are_cut_to_one_length():
    assert normalise_typography("“Well”—‘no’… _yes_ -- *so*...  end") == '"Well" — "no"… yes — so… end'
    assert normalise_typography("'Don’t,' said Mr. O'Hara.") == normalise_typography("“Don't,” said Mr. O’Hara.") == '"Don\'t," said Mr. O\'Hara.'
    a, b = paired_passages(["one two three " * 20, "short"], ["x y " * 100, "also short"], max_words=50, min_words=5)
    assert len(a) == len(b) == 1 and len(a[0].split()) == len(b[0].split()) == 50
    a, b = paired_passages(["a b c d e f g"], ["h i j k l"], min_words=5)
    assert len(a[0].split()) == len(b[0].split()) == 5


def test_auc_counts_ties_half_and_is_nan_without_both_classes():
    labels = np.array([0, 0, 1, 1])
    assert auc(labels, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert auc(labels, np.array([0.4, 0.3, 0.2, 0.1])) == 0.0
    assert auc(labels, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert auc(labels, np.array([0.1, 0.3, 0.2, 0.4])) == 0.75
    assert np.isnan(auc(np.array([1, 1, 1]), np.array([0.1, 0.2, 0.3])))


def test_the_writers_own_text_as_the_voice_cannot_be_told_apart_and_invents_what_the_writer_does():
    writer, own = passages(HELD, 30), passages(writer_text(3, 600), 30)
    r = measure(TRAINING, HELD, samples_from(writer, own))
    d = r["distinguishability"]
    assert 0.3 <= d["voice"]["auc"] <= 0.7 and d["voice"]["ci"][0] < 0.5 < d["voice"]["ci"][1], d["voice"]
    assert d["voice"]["pairs"] == 30 and d["voice"]["words"] == 120
    assert 0.3 <= d["writer_halves"]["auc"] <= 0.7
    inv = r["invented_words"]
    assert inv["voice"]["per_1000"] == inv["writer"]["per_1000"] == 0.0
    assert r["flags"] == {"distinguishable": False, "invents_words": False}
    assert "base" not in d and "base" not in inv  # not sampled: not measured
    json.dumps(r)


@pytest.mark.parametrize("broken", ["shuffled", "garbled"])
def test_shuffled_or_garbled_text_is_flagged(broken):
    writer = passages(HELD, 30)
    voice = [shuffle_words(p, i) if broken == "shuffled" else garble(p, i) for i, p in enumerate(passages(writer_text(3, 600), 30))]
    r = measure(TRAINING, HELD, samples_from(writer, voice))
    v = r["distinguishability"]["voice"]
    assert v["auc"] >= 0.9 and r["flags"]["distinguishable"] is True, v
    assert v["tells"]["a"] and v["tells"]["b"]  # what gives it away, both ways
    if broken == "garbled":
        assert r["invented_words"]["voice"]["per_1000"] > 50 and r["flags"]["invents_words"] is True
        assert r["invented_words"]["voice"]["examples"]
    lines = EvaluationMetrics.from_dict({**_metrics(), "reader": r}).headline()
    assert any(line.startswith("Warning — a reader can tell the voice from you") for line in lines)
    assert any(line.startswith("Warning — the voice makes up words") for line in lines) == (broken == "garbled")


def test_typography_alone_does_not_tell():
    """The writer's passages with curly double quotes and spaced dashes, the voice's with straight
    single quotes (a British edition) and double hyphens: the same writing."""
    writer = passages(HELD, 24)
    straight = [p.replace("“", "'").replace("”", "'").replace(" — ", "--") for p in passages(writer_text(3, 600), 24)]
    assert distinguishability(*paired_passages(writer, straight))["auc"] <= 0.75


def test_too_few_passages_are_not_measured():
    r = distinguishability(["a b c"] * 3, ["d e f"] * 3)
    assert r["auc"] is None and "at least" in r["note"]
    with pytest.raises(ValueError):
        distinguishability(["a"], [])


def test_invented_words_know_compounds_contractions_names_and_numbers():
    known = vocabulary("The harbour-master's boat. Mr. Pickwick said so.") | lexicon("en")
    r = invented_words("The sea-captain didn't see Pickwick's gleafe, nor the brettfoot of 1852, nor Zanzibarrow; "
                       "cheeklets and cheeklets — 3rd time, Vromblethwaite.", known)
    assert dict((w, c) for w, c in r["examples"]) == {"cheeklets": 2, "gleafe": 1, "brettfoot": 1}
    assert r["invented"] == 4 and [w for w, _ in r["name_examples"]] == ["Zanzibarrow", "Vromblethwaite"]
    assert r["per_1000"] == pytest.approx(1000 * 4 / r["words"])
    assert invented_words("", known)["per_1000"] == 0.0


def test_calibration_says_which_way():
    assert calibration(2.0, 3.0)["difference"] == pytest.approx(-1.0)
    assert calibration(None, 3.0) == {}


def _metrics():
    nll = {"base": {"nll": 3.0, "ppl": 20.1, "ci": [2.9, 3.1]}, "voice": {"nll": 2.7, "ppl": 14.9, "ci": [2.6, 2.8]},
           "drop": {"value": 0.1, "ci": [0.08, 0.12]}}
    return {"run": "r", "nll": nll, "extraction": {},
            "stylometry": {"metric": "cosine", "candidates": ["you"], "distances": {"cosine": {"voice_to_held_out": 0.4, "base_to_held_out": 0.6,
                                                                                        "held_out_to_training": 0.3}}, "attribution": {}},
            "memorization": {"voice": {"longest_tokens": 9, "longest_characters": 40, "flagged": 0, "samples": []}},
            "identity": {"names_in_voice": [], "distinct": {"voice": 0}, "per_1000_words": {"voice": 0.0, "writer": 0.0}}}


def test_a_version_1_metrics_file_reads_without_the_readers_view(tmp_path):
    path = tmp_path / "runs" / "r" / "evaluation" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({**_metrics(), "version": 1}))
    m = EvaluationMetrics.load(path)
    assert m.version == 1 and m.reader == {}
    lines = m.headline()
    assert not any(line.startswith(("Told apart", "Invented words", "Calibration")) for line in lines)
    m.save(path)
    assert json.loads(path.read_text())["version"] == 2


@pytest.mark.skipif(not (SHARED / "authors").exists(), reason="shared corpora not present")
def test_on_real_novels_the_writer_is_not_told_from_themselves_but_another_novelist_is():
    emma = (SHARED / "authors" / "austen" / "emma.txt").read_text(encoding="utf-8")
    dickens = (SHARED / "authors" / "dickens" / "great_expectations.txt").read_text(encoding="utf-8")
    cut = len(emma) * 8 // 10
    training, held = emma[:cut], emma[cut:]
    w = held.split()
    writer = [" ".join(w[i : i + 150]) for i in range(0, 150 * 60, 300)]
    own = [" ".join(w[i : i + 150]) for i in range(150, 150 * 60, 300)]
    other = passages(" ".join(dickens.split()[20000:]), 30, 150)
    same = measure(training, held, samples_from(writer, own))
    assert same["distinguishability"]["voice"]["auc"] < 0.75 and same["flags"]["distinguishable"] is False
    assert same["invented_words"]["writer"]["per_1000"] < 0.5 and same["flags"]["invents_words"] is False
    apart = measure(training, held, samples_from(writer, other))
    assert apart["distinguishability"]["voice"]["auc"] > 0.9 and apart["flags"]["distinguishable"] is True


def test_the_report_shows_the_readers_view_and_escapes_every_text():
    from mimetic import EvaluateConfig
    from mimetic.evaluation.evaluate import analyse
    from mimetic.evaluation.report import render_report

    writer = passages(HELD, 24)
    voice = [garble(p, i) + " <script>alert(1)</script>" for i, p in enumerate(passages(writer_text(3, 600), 24))]
    samples = [{**s, "document": "d", "seed": 0, "base": s["voice"]} for s in samples_from(writer, voice)]
    m, plots = analyse([("doc", TRAINING)], HELD, samples, EvaluateConfig(set_words=500, n_mfw=50))
    nll = {"base": {"nll": 3.0, "ppl": 20.1, "ci": [2.9, 3.1]}, "voice": {"nll": 2.7, "ppl": 14.9, "ci": [2.6, 2.8]},
           "drop": {"value": 0.1, "ci": [0.08, 0.12]}, "tokens": 100, "documents": 2, "resamples": 100}
    m = {"run": "r", "base_model": "b", "evaluated_at": "now", "nll": nll, "extraction": {}, **m,
         "reader": {**measure(TRAINING, HELD, samples), "calibration": calibration(3.4, 2.9)}}
    page = render_report(m, plots, samples, [], [])
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "3. What a reader sees" in page and "What gives the voice away" in page and "4. Memorization" in page
    tells = m["reader"]["distinguishability"]["voice"]["tells"]
    shown = [t["feature"] if t["kind"] == "word" else "‹" + t["feature"].replace(" ", "␣") + "›" for t in tells["a"] + tells["b"]]
    from markupsafe import escape  # Jinja2's own escaping

    assert all(str(escape(f)) in page for f in shown)
    assert m["reader"]["invented_words"]["voice"]["examples"][0][0] in page
    assert "sampled hotter than you write" in " ".join(EvaluationMetrics.from_dict(m).headline())


def test_continuity_counts_the_openings_whose_people_come_back():
    from mimetic.evaluation.reader import continuity

    samples = [
        {"prefix": "When I came in, Estella was at the window and Joe by the fire.", "writer": "Estella did not turn.",
         "voice": "The rain went on all night."},
        {"prefix": "It was late, and the house was quiet.", "writer": "Nobody spoke.", "voice": "Nobody came."},
        {"prefix": "I had not seen Herbert since the spring.", "writer": "He looked older.", "voice": "Herbert laughed at me."},
    ]
    assert continuity(samples, "writer") == {"openings": 2, "kept": 0.5}
    assert continuity(samples, "voice") == {"openings": 2, "kept": 0.5}
    samples[0]["voice"] = "Joe looked up."
    assert continuity(samples, "voice")["kept"] == 1.0
    assert continuity(samples[1:2], "voice") == {"openings": 0, "kept": None}
