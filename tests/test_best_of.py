"""Best of N for the writer: the StyleProfile scorer, and write(best_of=N) ranking drafts."""

import json
import sqlite3

import pytest

from conftest import make_corpus, trained_voice
from mimetic import GenerateConfig, MimeticError, write
from mimetic.voice.generate import STYLE_PROFILE_FILE, Voice, style_profile
from mimetic.text.stylometry import STYLE_GROUPS, StyleProfile, passages
from test_evaluate import fake_text

TELEGRAM = "ARRIVED LONDON STOP SEND MONEY STOP HOTEL FULL STOP WILL WIRE TOMORROW STOP " * 12


@pytest.fixture(scope="module")
def writer(tmp_path_factory):
    docs = [f.read_text() for f in sorted(make_corpus(tmp_path_factory.mktemp("writer"), n_docs=12).iterdir())]
    return StyleProfile.fit(docs[:10]), docs[10:]


def test_the_writers_own_unseen_text_scores_closer_than_another_style(writer):
    profile, held = writer
    own = passages(held, profile.passage_words)
    assert len(own) >= 4 and profile.passages >= 10
    worst_own = max(profile.distance(p) for p in own)
    assert worst_own < profile.distance(TELEGRAM)  # all-caps telegraphic prose
    assert worst_own < profile.distance(fake_text(5, 150))  # another fake author: no punctuation, no sentences
    groups = profile.group_distances(TELEGRAM)
    assert set(groups) == set(STYLE_GROUPS)
    assert profile.distance(TELEGRAM) == pytest.approx(sum(groups.values()) / len(groups))


def test_style_profile_round_trips_and_needs_two_passages(writer):
    profile, held = writer
    again = StyleProfile.from_dict(json.loads(json.dumps(profile.to_dict())))
    assert again.distance(held[0]) == pytest.approx(profile.distance(held[0]))
    with pytest.raises(ValueError, match="two passages"):
        StyleProfile.fit(["Too short to profile."])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model):
    return trained_voice(tmp_path_factory.mktemp("best-of"), tiny_model)


def test_write_best_of_ranks_the_drafts_and_logs_them_all(trained):
    voice = Voice.load(trained)
    ranked = write(trained, "The kettle", GenerateConfig(max_new_tokens=24, seed=5), voice=voice, best_of=3)
    assert len(ranked) == 3 and sorted(g.seed for g in ranked) == [5, 6, 7]
    scores = [g.style_distance for g in ranked]
    assert all(isinstance(s, float) for s in scores) and scores == sorted(scores)
    rows = sqlite3.connect(trained.db_path).execute("SELECT seed, params FROM generations WHERE command='write'").fetchall()
    logged = {seed: json.loads(p) for seed, p in rows if "best_of" in json.loads(p)}
    assert len(rows) == len(logged) == 3
    assert all(logged[g.seed]["best_of"] == 3 and logged[g.seed]["style_distance"] == pytest.approx(g.style_distance)
               for g in ranked)
    # the same seeds without ranking: same texts, seed order, no scores
    plain = write(trained, "The kettle", GenerateConfig(max_new_tokens=24, seed=5, num_samples=3), voice=voice)
    assert [g.seed for g in plain] == [5, 6, 7] and all(g.style_distance is None for g in plain)
    assert {g.seed: g.output for g in plain} == {g.seed: g.output for g in ranked}
    # each draft knows its number in the log, which `mimetic rate` takes
    ids = dict(sqlite3.connect(trained.db_path).execute("SELECT id, output FROM generations WHERE command='write'").fetchall())
    assert all(ids[g.log_id] == g.output for g in ranked + plain) and len({g.log_id for g in ranked + plain}) == 6


def test_write_best_of_on_the_command_line_says_how_to_mark_the_best(trained):
    from typer.testing import CliRunner

    from mimetic.frontends.cli import app

    r = CliRunner().invoke(app, ["write", "The kettle", "-w", str(trained.root), "-n", "8", "--best-of", "2"])
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    import re

    best, other = re.search(r"mimetic rate (\d+) best --over (\d+)", out).groups()
    assert f"text {best} " in out and f"text {other} " in out


def test_the_style_profile_is_cached_in_the_workspace(trained):
    first = style_profile(trained)
    path = trained.data_dir / STYLE_PROFILE_FILE
    cached = json.loads(path.read_text())
    cached["profile"]["passages"] = -1  # a marker: read from the cache, not refitted
    path.write_text(json.dumps(cached))
    assert style_profile(trained).passages == -1
    cached["key"] = "stale"
    path.write_text(json.dumps(cached))
    assert style_profile(trained).passages == first.passages


def test_best_of_with_samples_is_refused(trained):
    with pytest.raises(MimeticError, match="not both"):
        write(trained, "The kettle", GenerateConfig(num_samples=2), best_of=3)


def test_best_of_ranks_by_the_evaluations_discriminator_once_there_is_one(trained, writer):
    from mimetic.voice.generate import discriminator

    voice = Voice.load(trained)
    cfg = GenerateConfig(max_new_tokens=24, seed=5)
    with pytest.raises(MimeticError, match="not been evaluated"):
        write(trained, "The kettle", cfg, voice=voice, best_of=2, rank_by="discriminator")
    assert write(trained, "The kettle", cfg, voice=voice, best_of=2)[0].writer_likeness is None  # style by default
    _, held = writer
    own = passages(held, 60)
    cache = trained.run_dir(None) / "evaluation" / "cache.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"samples": [{"writer": w, "voice": TELEGRAM[: 40 + 7 * i]} for i, w in enumerate(own[:8])]}))
    judge = discriminator(trained)
    assert judge.writer_likeness([own[-1]])[0] > 0.5 > judge.writer_likeness([TELEGRAM])[0]
    assert write(trained, "The kettle", cfg, voice=voice, best_of=2)[0].writer_likeness is None  # still style: asked for by name
    ranked = write(trained, "The kettle", cfg, voice=voice, best_of=3, rank_by="discriminator")
    likeness = [g.writer_likeness for g in ranked]
    assert likeness == sorted(likeness, reverse=True)
    assert likeness == pytest.approx([judge.writer_likeness([g.output])[0] for g in ranked])
    logged = [json.loads(p) for (p,) in sqlite3.connect(trained.db_path).execute("SELECT params FROM generations ORDER BY id DESC LIMIT 3")]
    assert sorted(x["writer_likeness"] for x in logged) == pytest.approx(sorted(likeness))
    by_style = write(trained, "The kettle", cfg, voice=voice, best_of=3, rank_by="style")
    assert by_style[0].writer_likeness is None and [g.style_distance for g in by_style] == sorted(g.style_distance for g in by_style)
    with pytest.raises(MimeticError, match="Unknown ranking"):
        write(trained, "The kettle", cfg, voice=voice, best_of=2, rank_by="vibes")
    cache.unlink()
