"""The desk speaks to a writer (issue 31): names without titles, places and possessives; a plain
verdict before every measure; every error with the page that fixes it, never a command to type;
the job process's time left for stages that send none."""

from __future__ import annotations

from mimetic.frontends.app import plain
from mimetic.text.stylometry import proper_names


def test_names_leave_out_titles_peoples_and_places_and_fold_possessives():
    text = ("Jane met Rochester at Thornfield. She saw Rochester's horse fall near St Mary's church, and "
            "then Rochester walked with her to London. The English weather held, and Adele spoke French to "
            "Rochester; in London, Jane heard of Rochester's past. At St Paul's she thought of Thornfield. ") * 3
    names = proper_names([text], min_count=2)
    assert {"Jane", "Rochester", "Thornfield", "Adele"} <= set(names)
    assert not {"St", "English", "London", "French", "Rochester's"} & set(names)
    assert names["Rochester"] == 5 * 3  # the possessives counted with the name


def test_the_names_list_of_a_real_ingest_is_what_a_writer_would_alias(tmp_path):
    import json

    from mimetic import Workspace, ingest

    folder = tmp_path / "writing"
    folder.mkdir()
    for i in range(4):
        (folder / f"ch{i}.txt").write_text("\n\n".join(
            f"Chapter {i}, part {j}, in which Jane walked with Rochester to St Alban's, talking in English of London and of "
            f"Rochester's house, which stood {j + 2} miles from the road; the evening was long and the lamps were lit."
            for j in range(8)))
    ws = Workspace.open(tmp_path / "voice")
    ingest([folder], ws)
    names = [n["name"] for n in json.loads((ws.corpus_dir / "names.json").read_text())["names"]]
    assert "Jane" in names and "Rochester" in names
    assert not {"St", "English", "London", "Rochester's"} & set(names), names


def test_an_evaluation_farther_than_the_base_model_is_not_yet_close():
    m = {"stylometry": {"metric": "cosine", "candidates": ["you", "base"],
                        "distances": {"cosine": {"voice_to_held_out": 0.942, "base_to_held_out": 0.897}},
                        "attribution": {"voice": {"sets": 2, "to": {"you": 0, "base": 2}}}},
         "nll": {"drop": {"value": 0.092}}}
    v = plain.evaluation_verdict(m)
    assert v.startswith("Not yet close:") and "0.942" in v and "0 of 2" in v
    m["stylometry"]["distances"]["cosine"]["voice_to_held_out"] = 0.5
    m["stylometry"]["attribution"]["voice"]["to"] = {"you": 2, "base": 0}
    assert plain.evaluation_verdict(m).startswith("Close:")
    m["stylometry"]["attribution"]["voice"]["to"] = {"you": 0, "base": 2}
    assert plain.evaluation_verdict(m).startswith("Not yet close:")
    assert plain.evaluation_verdict({}).startswith("This evaluation lacks")
    assert plain.nll_verdict(-0.001).startswith("Not yet closer") and plain.nll_verdict(0.09).startswith("Closer")


def test_a_hint_with_a_command_becomes_a_button_to_the_page_that_does_it():
    said = plain.fix("The voice in /v has no finished training run yet (1 unfinished: resume with mimetic train --resume).",
                     "Run: mimetic train --workspace /v", "v")
    assert "mimetic" not in said["message"] + said["hint"]
    assert said["action"] == {"label": "Go to Train", "href": "/voices/v/train"}
    said = plain.fix("No corpus yet.", "Read it first. Run: mimetic ingest PATH --workspace /v", "v")
    assert said["hint"] == "Read it first." and said["action"]["href"] == "/voices/v/corpus"
    assert plain.fix("Bad.", "Type the minutes of training.", "v")["action"] is None


def test_stages_that_send_no_time_left_get_one():
    from mimetic.frontends.jobs import Estimates, Job

    now = [0.0]
    est = Estimates(Job("j", "evaluate", {"settings": {"sample_words": 1000}}), clock=lambda: now[0])
    seen = []
    for t, message in [(1, "loading the base model and the voice"), (5, "held-out NLL: 9 passages, base model"),
                       (10, "held-out NLL: 9 passages, voice"), (20, "samples: 3 passages, 200 words from the voice, 250 from the base model"),
                       (60, "samples: 9 passages, 1,000 words from the voice, 1,100 from the base model"),
                       (70, "extraction test: greedy continuations"), (75, "calibration: the voice's NLL of its own samples"),
                       (80, "stylometry, memorization audit, names"), (85, "what a reader sees: a classifier against your passages")]:
        now[0] = t
        seen.append(est({"event": "progress", "stage": "evaluate", "message": message, "done": 0, "total": None}))
    shares = [e["done"] for e in seen]
    assert all(a < b for a, b in zip(shares[5:], shares[6:]))  # every step after the samples moves the bar on
    assert shares == sorted(shares) and seen[-1]["total"] == 100 and 0 == shares[0] < shares[-1] < 100
    assert all(e.get("eta_s") is not None for e in seen[1:]) and seen[-1]["eta_s"] < seen[3]["eta_s"]
    ingest = Estimates(Job("k", "create", {}), clock=lambda: now[0])
    now[0] = 0
    ingest({"event": "progress", "stage": "ingest", "done": 1, "total": 11, "unit": "files"})
    now[0] = 2
    assert ingest({"event": "progress", "stage": "ingest", "done": 3, "total": 11, "unit": "files"})["eta_s"] == 8.0
    train = Estimates(Job("t", "train", {"time_budget_min": 2}), clock=lambda: now[0])
    now[0] = 32
    e = train({"event": "progress", "stage": "train", "message": "measuring the base model", "total": None})
    assert e["eta_s"] == 90 and e["info"]["at_most"]
