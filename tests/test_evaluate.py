import json
import random
import re

import numpy as np
import pytest

from conftest import SHARED, trained_voice
from mimetic import EvaluateConfig, evaluate
from mimetic.evaluation.evaluate import analyse, bootstrap_nll
from mimetic.core.events import Artifact, Progress
from mimetic.text.memorization import TrainingIndex, audit
from mimetic.text.stylometry import (
    ZScorer,
    burrows_delta,
    cosine_delta,
    leave_one_work_out,
    mtld,
    profile,
    proper_names,
    relative_frequencies,
    words,
)

VOCAB = ["w" + "abcdefghijklmnopqrstuvwxyz"[i // 26] + "abcdefghijklmnopqrstuvwxyz"[i % 26] for i in range(400)]


def fake_text(seed: int, n: int = 4000, tilt: int = 0) -> str:
    """Zipf-like random words; ``tilt`` shifts which words an 'author' favours."""
    rng = random.Random(seed)
    weights = [1 / (1 + ((i + tilt) % len(VOCAB))) for i in range(len(VOCAB))]
    return " ".join(rng.choices(VOCAB, weights, k=n))


def test_burrows_delta_matches_faststylometry():
    fs = pytest.importorskip("faststylometry")
    from faststylometry.burrows_delta import calculate_burrows_delta

    train, test = fs.Corpus(), fs.Corpus()
    books = {"ann": [fake_text(1, tilt=0), fake_text(2, tilt=0)], "bob": [fake_text(3, tilt=3)], "cy": [fake_text(4, tilt=7)]}
    for a, texts in books.items():
        for k, t in enumerate(texts):
            train.add_book(a, f"b{k}", t)
    test.add_book("unknown", "x", fake_text(5, tilt=3))
    test.add_book("other", "y", fake_text(6, tilt=1))
    tokenise = lambda t: re.findall(r"\w+", t.lower())  # noqa: E731
    train.tokenise(tokenise)
    test.tokenise(tokenise)
    theirs = calculate_burrows_delta(train, test, vocab_size=50, tok_match_pattern=r"^w[a-z]+$")

    vocab = train.top_tokens
    authors = sorted(books)
    cand = np.stack([relative_frequencies([w for t in books[a] for w in tokenise(t)], vocab) for a in authors])
    z = ZScorer.fit(cand)
    for name, text in (("unknown - x", fake_text(5, tilt=3)), ("other - y", fake_text(6, tilt=1))):
        ours = burrows_delta(z(relative_frequencies(tokenise(text), vocab)), z(cand))
        np.testing.assert_allclose(ours, theirs[name].loc[authors].to_numpy(), atol=1e-6)
    assert theirs["unknown - x"].idxmin() == "bob"


def test_delta_properties():
    a, b = np.array([1.0, -1.0, 2.0]), np.array([2.0, -2.0, 4.0])
    assert cosine_delta(a, b) == pytest.approx(0.0)
    assert cosine_delta(a, -a) == pytest.approx(2.0)
    assert burrows_delta(a, b) == pytest.approx(np.mean([1, 1, 2]))
    assert burrows_delta(a, np.stack([a, b])).shape == (2,)


@pytest.mark.skipif(not (SHARED / "authors").exists(), reason="shared corpora not present")
def test_cosine_delta_attributes_shared_authors():
    works = {d.name: {f.stem: f.read_text(encoding="utf-8") for f in sorted(d.glob("*.txt"))}
             for d in sorted((SHARED / "authors").iterdir()) if d.is_dir()}
    r = leave_one_work_out(works, chunk_words=5000, n_mfw=300, metric="cosine")
    assert r["chunks"] > 200
    assert r["accuracy"] >= 0.9, r["per_author"]


def test_profiles_and_mtld():
    text = 'She said, "Come here." He did not; he ran! Why? Because the dog — a large one — barked.\n\nThen silence.'
    p = profile(text)
    assert p["sentences"] == 5 and p["words"] == len(words(text))
    assert p["punctuation"]["semicolon"] > 0 and p["punctuation"]["dash"] > 0
    assert 0 < p["dialogue_share"] < 0.3
    assert mtld(["the"] * 200) == 2 < 20 < mtld(words(fake_text(0, 2000)))


def test_proper_names_finds_people_not_sentence_starts():
    text = ("Holmes looked up. I said to Holmes that Watson was late. The door opened and Watson came in. "
            "The man said Mr Holmes was out. When it rained, Baker Street flooded. The the The.") * 3
    names = proper_names([text])
    assert {"Holmes", "Watson", "Baker", "Street"} <= set(names)
    assert not {"The", "When", "I", "Mr"} & set(names)


def test_bootstrap_interval_contains_estimate_and_is_paired():
    rng = np.random.default_rng(0)
    counts = rng.integers(100, 500, 40).astype(float)
    base = counts * 3.4 + rng.normal(0, 20, 40)
    tuned = base * 0.9
    r = bootstrap_nll(base, tuned, counts, [f"d{i // 2}" for i in range(40)], 500, 0)
    assert r["documents"] == 20 and r["tokens"] == int(counts.sum())
    for k in ("base", "voice"):
        lo, hi = r[k]["ci"]
        assert lo <= r[k]["nll"] <= hi
    assert r["drop"]["value"] == pytest.approx(0.1) and r["drop"]["ci"][0] == pytest.approx(0.1)  # paired: exact ratio
    assert bootstrap_nll(base, tuned, counts, [f"d{i // 2}" for i in range(40)], 500, 0) == r


def _training_docs():
    return [(f"doc{i}", fake_text(100 + i, 3000).replace("w1 ", "w1. ")) for i in range(5)]


def test_memorization_finds_planted_passage_and_its_source():
    docs = _training_docs()
    index = TrainingIndex(docs)
    src = docs[3][1]
    start = src.index(" ", 5000) + 1
    planted = src[start : start + 100].rsplit(" ", 1)[0]
    assert len(planted) >= 90
    sample = "zz " * 50 + planted + " zz" * 50
    o = index.overlap(sample)
    assert o.passage == planted and o.characters == len(planted) and o.document == "doc3"
    assert o.tokens == len(re.findall(r"\w+|[^\w\s]", planted))
    other = " ".join("x" + "abcdefgh"[i % 8] * (1 + i % 5) for i in range(500))
    r = audit(index, [sample, other], flag_tokens=10)
    assert r["samples"][0]["flagged"] and r["samples"][0]["share_13gram"] > 0
    assert r["samples"][1]["tokens"] == 0 and r["samples"][1]["share_8gram"] == 0 and not r["samples"][1]["flagged"]


@pytest.mark.skipif(not (SHARED / "authors").exists(), reason="shared corpora not present")
def test_memorization_of_another_author_is_nil_and_planted_copies_are_found():
    doyle = [(f.stem, f.read_text(encoding="utf-8")) for f in sorted((SHARED / "authors" / "doyle").glob("*.txt"))]
    emma = (SHARED / "authors" / "austen" / "emma.txt").read_text(encoding="utf-8")
    index = TrainingIndex(doyle)
    samples = [emma[i * 1500 : (i + 1) * 1500] for i in range(20)]
    r = audit(index, samples)
    assert r["flagged"] == 0 and r["mean_share_13gram"] == 0
    text = doyle[1][1]
    k = text.index(" ", 20000) + 1
    plant = text[k : k + 100]
    r = audit(index, [samples[0][:700] + " " + plant + " " + samples[0][700:]], flag_tokens=15)
    assert r["flagged"] == 1 and r["samples"][0]["characters"] >= 95 and r["samples"][0]["document"] == doyle[1][0]


def test_analyse_without_a_model():
    docs = _training_docs()
    held = fake_text(7, 3000)
    samples = [{"base": fake_text(50 + i, 300, tilt=9), "voice": fake_text(60 + i, 300), "writer": fake_text(70 + i, 300), "prefix": "p", "seed": i}
               for i in range(8)]
    metrics, plots = analyse(docs, held, samples, EvaluateConfig(set_words=500, n_mfw=100), {"other": fake_text(9, 6000, tilt=20)})
    d = metrics["stylometry"]["distances"]["cosine"]
    assert d["voice_to_held_out"] < d["base_to_held_out"]
    assert metrics["stylometry"]["attribution"]["voice"]["writer_share"] >= 0.75
    assert metrics["stylometry"]["candidates"] == ["you", "other", "base model"]
    assert plots["pca"][0].shape[1] == 2
    json.dumps(metrics)  # JSON-ready


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model):
    return trained_voice(tmp_path_factory.mktemp("eval"), tiny_model, paragraphs=8)


def test_evaluate_end_to_end_writes_report_and_reuses_samples(trained, tmp_path):
    refs = tmp_path / "refs"
    (refs / "zipf").mkdir(parents=True)
    (refs / "zipf" / "a.txt").write_text(fake_text(3, 3000))
    cfg = EvaluateConfig(sample_words=200, prefix_tokens=16, new_tokens=24, batch_size=4, set_words=100, n_mfw=50,
                         extraction_prefixes=4, bootstrap=200)
    lines = []
    ev = evaluate(trained, config=cfg, references=refs, prompts=["The harbour"], on_event=lines.append)
    m = json.loads(ev.metrics_path.read_text())
    assert m["nll"]["base"]["ci"][0] <= m["nll"]["base"]["nll"] <= m["nll"]["base"]["ci"][1]
    assert m["words"]["voice_samples"] >= 200 and m["samples"] % 4 == 0
    assert m["stylometry"]["candidates"] == ["you", "zipf", "base model"]
    assert m["extraction"]["windows"] >= 1 and 0 <= m["extraction"]["voice"]["exact"] <= 1
    assert "memorization" in m and "identity" in m
    page = ev.report.read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page and "<script" not in page
    assert "How close is the voice?" in page and "The harbour" in page
    assert len(ev.summary()) >= 4
    sp = m["stylometry"]["spread"]
    assert sp["sets"]["voice"] >= 2 and sp["voice"] is not None and sp["base model"] is not None
    assert "<h3>Range</h3>" in page and any(line.startswith("Range:") for line in ev.summary())
    assert [(e.kind, e.path) for e in lines if isinstance(e, Artifact)] == [("metrics", ev.metrics_path), ("report", ev.report)]
    r = m["reader"]  # what a reader sees: too few long passages here for the classifier, the rest measured
    assert m["version"] == 2 and set(r["distinguishability"]) == {"voice", "base", "writer_halves"}
    assert r["distinguishability"]["voice"]["auc"] is None and "at least" in r["distinguishability"]["voice"]["note"]
    assert {"voice", "base", "writer"} <= set(r["invented_words"]) and r["invented_words"]["voice"]["words"] > 0
    cal = r["calibration"]
    assert cal["voice_nll_of_samples"] > 0 and cal["voice_nll_of_writer"] > 0
    assert "3. What a reader sees" in page and "Invented words" in page and "4. Memorization" in page
    assert any(line.startswith("Told apart: not measured") for line in ev.summary())
    assert any(line.startswith("Calibration:") for line in ev.summary())
    lines.clear()
    # the archive: a sample that echoes a paragraph of the writer's is shown with where it comes from
    cache_path = ev.report.parent / "cache.json"
    cache = json.loads(cache_path.read_text())
    own = next((trained.corpus_dir / "docs").iterdir()).read_text().split("\n\n")[0]
    cache["samples"][0]["voice"] = own
    cache_path.write_text(json.dumps(cache))
    again = evaluate(trained, config=cfg, references=refs, prompts=["The harbour"], on_event=lines.append)
    assert any("reusing" in e.message for e in lines if isinstance(e, Progress))
    assert again.metrics["nll"] == m["nll"]
    page = again.report.read_text()
    assert "Nearest in your writing to the voice's text: <b>" in page and ", paragraph " in page


def test_held_out_nll_reads_what_training_measured_after_checking_it(trained, monkeypatch):
    from mimetic.corpus.prepare import load_split
    from mimetic.evaluation import evaluate as ev
    from mimetic.models.engines import Voice

    monkeypatch.setattr(ev, "CHECK_ROWS", 1)  # the tiny voice's split has only a few rows
    voice, held, run_dir = Voice.load(trained), load_split(trained, "held_out"), trained.run_dir()
    base_known, voice_known = ev.training_nll(trained, run_dir, voice, held)
    assert len(base_known) == len(voice_known) == len(held) >= 2  # before the first step, and the kept adapter at the end
    fresh_base, fresh_voice, counts, read = ev.held_out_nll(voice, held)
    assert read == (0, 0)
    base, tuned, counts2, read = ev.held_out_nll(voice, held, known=(base_known, voice_known))
    assert read == (len(held), len(held)) and np.array_equal(counts, counts2)
    assert np.allclose(base, fresh_base, rtol=1e-3) and np.allclose(tuned, fresh_voice, rtol=1e-3)
    assert not np.allclose(tuned, base, rtol=1e-3)
    wrong = {i: (a * 1.01, b) for i, (a, b) in base_known.items()}  # measured another way: not read
    base, tuned, _, read = ev.held_out_nll(voice, held, known=(wrong, voice_known))
    assert read == (0, len(held)) and np.allclose(base, fresh_base, rtol=1e-6)
    (run_dir / "adapter" / "adapter_model.safetensors").touch()  # an adapter written after the record
    assert ev.training_nll(trained, run_dir, voice, held)[1] == {}


def test_evaluate_bad_references_is_a_clear_error(trained, tmp_path):
    from mimetic import MimeticError

    with pytest.raises(MimeticError, match="does not exist"):
        evaluate(trained, references=tmp_path / "nope")


def test_claimed_names_reads_self_introductions_and_signatures():
    from mimetic.text.identity import claimed_names, score_probe

    assert claimed_names("Hello! I am Margaret Hale, and I live in Milton.") == ["Margaret Hale"]
    assert claimed_names("My name is Thornton. Call me John.") == ["Thornton", "John"]
    assert claimed_names("Thank you for the lovely evening.\n\nYours ever,\nFanny") == ["Fanny"]
    assert claimed_names("Thank you.\n— Edmund") == ["Edmund"]
    assert claimed_names("I am a language model trained to write in this voice.") == []
    assert claimed_names("I am Happy to help. I'm not sure who wrote it.") == []
    scored = score_probe([
        {"setting": "with its system prompt", "question": "Who are you?", "answer": "I am a model trained to write in this voice."},
        {"setting": "without one", "question": "Who are you?", "answer": "I'm Margaret, of course."},
        {"setting": "without one", "question": "Name?", "answer": "My name is Zeb."},
    ], ["Margaret Hale", "Thornton"])
    assert scored["settings"]["with its system prompt"] == {"answers": 1, "claims_corpus_name": 0, "claims_any_name": 0,
                                                           "says_it_is_a_model": 1, "names": {}}
    without = scored["settings"]["without one"]
    assert without["claims_corpus_name"] == 1 and without["claims_any_name"] == 2 and without["names"] == {"Margaret": 1}


def test_identity_probe_runs_for_a_chat_voice(tmp_path, tiny_model):
    from mimetic import PrepareConfig

    ws = trained_voice(tmp_path, tiny_model, name="anna", prepare_config=PrepareConfig(format="chat"), max_steps=2, eval_every=10)
    cfg = EvaluateConfig(sample_words=200, prefix_tokens=16, new_tokens=24, batch_size=4, set_words=100, n_mfw=50,
                         extraction_prefixes=2, bootstrap=200)
    ev = evaluate(ws, config=cfg)
    probe = ev.metrics["identity"]["probe"]
    from mimetic.text.identity import QUESTIONS

    assert set(probe["settings"]) == {"with its system prompt", "without one"}
    assert all(s["answers"] == len(QUESTIONS) for s in probe["settings"].values())
    assert len(probe["answers"]) == 2 * len(QUESTIONS) and all(isinstance(a["answer"], str) for a in probe["answers"])
    assert "Who does the voice say it is?" in ev.report.read_text()
    assert any(line.startswith("Identity:") for line in ev.summary())
    cached = json.loads((ev.metrics_path.parent / "cache.json").read_text())
    assert len(cached["identity_probe"]) == 2 * len(QUESTIONS)


def test_no_identity_probe_for_a_completion_voice(trained, tmp_path):
    cfg = EvaluateConfig(sample_words=200, prefix_tokens=16, new_tokens=24, batch_size=4, set_words=100, n_mfw=50,
                         extraction_prefixes=2, bootstrap=200)
    ev = evaluate(trained, config=cfg)
    assert "probe" not in ev.metrics["identity"] and not any(line.startswith("Identity:") for line in ev.summary())
