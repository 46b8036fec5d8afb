"""Briefs for every passage, the brief and mixed training formats, and the three modes (issue 14).

Real components throughout: the embedded tokenizer, Arrow files, a tiny Llama trained with
PEFT, SQLite, and for the server path ``mimetic serve``'s own server on 127.0.0.1 running the
embedded SmolLM2-135M-Instruct GGUF, asked through the ``openai`` client.
"""

from __future__ import annotations

import http.server
import json
import sqlite3
import threading
from pathlib import Path

import pytest

from conftest import prepared_voice, trained_voice

PASSAGE = (
    "I had called upon my friend Sherlock Holmes upon the second morning after Christmas. The letter lay open on the "
    "table, and Holmes was bent over it with his lens. \u201cYou see, Watson,\u201d said he, \u201cthe writer was in "
    "a hurry, and the paper is cheap.\u201d I took the letter and turned it to the window. The letter had come by the "
    "evening post, and the stamp was from Harwich."
)


# ------------------------------------------------------------------------------ text functions


def test_extractive_brief_names_form_and_subject_without_quoting():
    from mimetic.corpus.briefs import extractive_brief, key_terms

    brief = extractive_brief(PASSAGE)
    assert brief == extractive_brief(PASSAGE)  # deterministic
    assert brief.startswith("A passage of about 70 words, in the first person, with some dialogue")
    assert "letter" in key_terms(PASSAGE) and "Holmes" in key_terms(PASSAGE)
    assert "I had called upon" not in brief


def test_notes_keep_content_drop_style_and_are_idempotent():
    from mimetic.corpus.briefs import notes

    n = notes(PASSAGE)
    assert n.split(" / ")[0] == "called friend Sherlock Holmes second morning Christmas"
    assert "," not in n and "the " not in n.lower().split(" / ")[1]
    assert notes(n) == n
    assert notes("She never loved him. He did not go. I can't swim.") == "never loved / not go / can't swim"  # polarity kept


def test_split_opening_cuts_at_a_sentence():
    from mimetic.corpus.briefs import split_opening

    opening, rest = split_opening(PASSAGE)
    assert opening == "I had called upon my friend Sherlock Holmes upon the second morning after Christmas. The letter lay open on the table, and Holmes was bent over it with his lens."
    assert rest.startswith("\u201cYou see, Watson")
    assert split_opening("One sentence only.") == ("One sentence only.", "")
    said = "\u201cCome in,\u201d she said. \u201cSit down.\u201d He sat by the fire and waited for her to speak again, as he always did."
    assert split_opening(said) == ("\u201cCome in,\u201d she said. \u201cSit down.\u201d", "He sat by the fire and waited for her to speak again, as he always did.")
    assert split_opening("No. No. I will not go out tonight, whatever the weather does, and whoever calls.")[1].startswith("I will not")


def test_adherence_counts_the_briefs_content_words():
    from mimetic.corpus.briefs import adherence

    assert adherence("a storm over a harbour town, told by a child", "The storms came to the harbour; the town slept.") == 0.75  # no child
    assert adherence("a storm over a harbour town, told by a child", "The child watched the storms over the harbour town.") == 1.0
    assert adherence("a storm over a harbour town, told by a child", "The child saw a storm.") == pytest.approx(0.5)
    assert adherence("a storm over a harbour town", "Nothing of the kind.") == 0.0
    assert adherence("a passage, told in the first person", "anything") is None  # only describing-words


def test_requests_by_format_and_mode():
    from mimetic.corpus.briefs import request
    from mimetic.errors import MimeticError

    assert request("mixed", "write", "a storm") == "Write: a storm"
    assert request("mixed", "rewrite", "flat draft") == "Rewrite in my voice: flat draft"
    assert request("brief", "write", "  a storm ") == "Write: a storm"
    assert request("completion", "continue", "It was") == "It was"
    assert request("mixed", "rewrite", "She did not go. It rained.", from_notes=True) == "Rewrite in my voice: not go / rained"
    assert request("chat", None, "  as written ") == "  as written "
    with pytest.raises(MimeticError, match="trained to continue text, not to write") as e:
        request("completion", "write", "a storm")
    assert "--format brief" in e.value.hint
    with pytest.raises(MimeticError, match="not to rewrite") as e:
        request("brief", "rewrite", "a draft")
    assert "--format mixed" in e.value.hint
    with pytest.raises(MimeticError, match="brief is empty"):
        request("brief", "write", "   ")


def test_model_replies_that_cannot_be_briefs_are_refused():
    from mimetic.corpus.briefs import clean_brief, clean_paraphrase

    assert clean_brief("Here's a brief:\n\n**Brief:** \"A doctor's account of a strange letter, calm and exact.\"", PASSAGE) == \
        "A doctor's account of a strange letter, calm and exact."
    assert clean_brief("This passage is about the \"Sr.ht.Sr.ht.Sr.ht.Sr.ht.Sr.ht.Sr.ht.Sr.ht.Sr.ht.\"", PASSAGE) is None
    assert clean_brief("ok", PASSAGE) is None
    assert clean_brief("It says: I had called upon my friend Sherlock Holmes upon the second morning", PASSAGE) is None
    assert clean_paraphrase("Rewrite:\n\n" + PASSAGE, PASSAGE) is None  # copied back: the writer's style, not a paraphrase
    plain = ("Two days after Christmas I visited Holmes. He was studying a letter with a magnifying glass. He told Watson "
             "that the writer had been rushed and used cheap paper. I held it up to the light. It had arrived by the "
             "evening mail with a Harwich stamp.")
    assert clean_paraphrase("Here is a rewritten version of the passage:\n" + plain, PASSAGE) == plain


# ------------------------------------------------------------------------------ prepare


def _rows(ws, split):
    from mimetic.corpus.prepare import load_split

    return load_split(ws, split)


def _prompt(tokenizer, row) -> str:
    k = next(i for i, x in enumerate(row["labels"]) if x != -100)
    return tokenizer.decode(row["input_ids"][:k])


def test_brief_format_trains_brief_to_passage_and_keeps_held_out_briefs_apart(tmp_path, tiny_model, tokenizer):
    from mimetic import PrepareConfig
    from mimetic.corpus.briefs import passage_hash, read_briefs

    ws = prepared_voice(tmp_path, tiny_model, prepare_config=PrepareConfig(format="brief"))
    briefs = read_briefs(ws.data_dir / "briefs.jsonl")
    train, held = _rows(ws, "train"), _rows(ws, "held_out")
    assert len(briefs) == len(train) + len(held)
    assert ws.data_meta().briefs["sources"] == {"extractive": len(briefs)}  # the tiny model is no instruct model
    for rows, split in ((train, "train"), (held, "held_out")):
        for r in rows:
            b = briefs[passage_hash(r["text"])]
            assert b.split == split and r["mode"] == "write"
            prompt = _prompt(tokenizer, r)
            assert prompt.rstrip().endswith("assistant") and "Write: " + b.brief in prompt  # the brief is prompt, not loss
            assert tokenizer.decode([x for x in r["labels"] if x != -100]).startswith(r["text"][:40])
    held_text = {r["text"][:60] for r in held}
    assert not any(t in _prompt(tokenizer, r) for r in train for t in held_text)


def test_an_edited_brief_is_what_trains(tmp_path, tiny_model, tokenizer):
    from mimetic import PrepareConfig, prepare

    ws = prepared_voice(tmp_path, tiny_model, prepare_config=PrepareConfig(format="brief"))
    path = ws.data_dir / "briefs.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["brief"] = "A grandmother's biscuit tin of letters, remembered on a wet afternoon."
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prepare(ws, PrepareConfig(format="brief"), base_model=tiny_model)
    train = _rows(ws, "train")
    hit = [r for r in train if "biscuit tin of letters, remembered" in _prompt(tokenizer, r)]
    assert len(hit) == 1 and hit[0]["text"].startswith(rows[0]["passage_start"][:50])
    assert json.loads(path.read_text().splitlines()[0])["brief"] == rows[0]["brief"]


def test_mixed_format_teaches_three_modes(tmp_path, tiny_model, tokenizer):
    from mimetic import PrepareConfig
    from mimetic.corpus.briefs import passage_hash, read_briefs, split_opening

    ws = prepared_voice(tmp_path, tiny_model, prepare_config=PrepareConfig(format="mixed"))
    train = _rows(ws, "train")
    briefs = read_briefs(ws.data_dir / "briefs.jsonl")
    modes = ws.data_meta().briefs["modes"]["train"]
    assert set(modes) == {"write", "continue", "rewrite"} and min(modes.values()) >= len(train) / 6
    for r in train:
        prompt, b = _prompt(tokenizer, r), briefs[passage_hash(r["text"])]
        loss_on = tokenizer.decode([x for x in r["labels"] if x != -100])
        if r["mode"] == "continue":
            opening, rest = split_opening(r["text"])
            assert "Continue: " + opening in prompt and loss_on.startswith(rest[:30])
        elif r["mode"] == "rewrite":
            assert "Rewrite in my voice: " + b.paraphrase in prompt and b.paraphrase_source == "notes"
            assert loss_on.startswith(r["text"][:30])
        else:
            assert "Write: " + b.brief in prompt
    assert all(b.paraphrase for b in briefs.values() if b.split == "held_out")  # every held-out passage can test rewrite


# ------------------------------------------------------------------------------ sources


@pytest.fixture(scope="module")
def brief_server():
    """``mimetic serve``'s server on a free loopback port, offering the embedded model's GGUF."""
    from mimetic.models.loading import embedded_gguf_path
    from mimetic.frontends.serve import ServeConfig, ServedModel, Server

    base = ServedModel("smollm2-135m-instruct", "base", embedded_gguf_path(), "embedded", "chat")
    with Server([base], ServeConfig(port=0, threads=2)) as s:
        yield s


def test_briefs_from_a_real_openai_compatible_server_and_resume(tmp_path, brief_server):
    from mimetic.corpus.briefs import ServerSource, make_briefs, read_briefs

    class Counting(ServerSource):
        calls = 0

        def chat(self, system, user, max_tokens):
            Counting.calls += 1
            return super().chat(system, user, max_tokens)

    texts = [PASSAGE, PASSAGE.replace("Harwich", "Dover"), PASSAGE.replace("Christmas", "Easter")]
    passages = [("train", "d", t) for t in texts]
    path = tmp_path / "briefs.jsonl"
    src = Counting(brief_server.url, "")  # no model named: the first the server lists
    got = make_briefs(passages[:2], path, src, paraphrase=lambda split, text: True)
    assert src.model == "smollm2-135m-instruct" and Counting.calls == 4  # a brief and a paraphrase each
    for b in got.values():
        assert b.brief and b.source in ("smollm2-135m-instruct @ " + brief_server.url, "extractive (model reply unusable)")
        assert b.paraphrase and (b.paraphrase_source == "notes" or b.paraphrase_source == src.name)
    assert src.chat("You answer in a few words.", "Name a colour.", 8).strip()  # the server's own words came back
    Counting.calls -= 1
    make_briefs(passages, path, src, paraphrase=lambda split, text: True)
    assert Counting.calls == 6 and len(read_briefs(path)) == 3  # the first two were reused, not asked again


def test_a_server_that_is_down_slow_or_garbled_gives_a_clear_message_and_resumes(tmp_path):
    from mimetic.corpus.briefs import ServerSource, make_briefs, read_briefs
    from mimetic.errors import MimeticError

    class Handler(http.server.BaseHTTPRequestHandler):
        mode = "garbage"

        def do_POST(self):  # noqa: N802 - the stdlib's name
            if Handler.mode == "slow":
                threading.Event().wait(3)
            body = b"<html>not json</html>" if Handler.mode == "garbage" else json.dumps(
                {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": "A doctor's account of a letter from the coast, calm."}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    path = tmp_path / "briefs.jsonl"
    passages = [("train", "d", PASSAGE), ("train", "d", PASSAGE + " The end.")]
    try:
        with pytest.raises(MimeticError, match="not an OpenAI-style answer") as e:
            make_briefs(passages, path, ServerSource(url, "m"))
        assert "briefs made so far are kept" in e.value.hint
        Handler.mode = "slow"
        with pytest.raises(MimeticError, match="did not answer in time"):
            make_briefs(passages, path, ServerSource(url, "m", timeout_s=0.5))
        Handler.mode = "ok"
        got = make_briefs(passages, path, ServerSource(url, "m"))
        assert [b.brief for b in got.values()] == ["A doctor's account of a letter from the coast, calm."] * 2
    finally:
        httpd.shutdown()
        httpd.server_close()
    with pytest.raises(MimeticError, match="cannot be reached"):
        make_briefs([("train", "d", PASSAGE + " More.")], path, ServerSource(url, "m"))
    assert len(read_briefs(path)) == 2  # what was made before the server went down is kept


def test_brief_model_choices(tiny_model):
    from mimetic.corpus.briefs import LlamaSource, resolve_source
    from mimetic.errors import MimeticError

    assert resolve_source("extractive", "embedded") is None
    assert resolve_source("auto", tiny_model) is None  # not an instruct model: extractive
    assert isinstance(resolve_source("auto", "embedded"), LlamaSource)  # the embedded instruct model, from its GGUF
    with pytest.raises(MimeticError, match="not an instruct model"):
        resolve_source("base", tiny_model)
    with pytest.raises(MimeticError, match="not found"):
        resolve_source("/nowhere/model.gguf", "embedded")


# ------------------------------------------------------------------------------ writing and evaluating


@pytest.fixture(scope="module")
def mixed_voice(tmp_path_factory, tiny_model):
    from mimetic import PrepareConfig

    return trained_voice(tmp_path_factory.mktemp("mixed"), tiny_model, prepare_config=PrepareConfig(format="mixed"))


def _logged(ws) -> list[tuple[str, str, dict]]:
    with sqlite3.connect(ws.root / "mimetic.db") as db:
        return [(c, p, json.loads(params)) for c, p, params in db.execute("select command, prompt, params from generations")]


def test_three_modes_write_and_are_logged(mixed_voice):
    from mimetic import GenerateConfig
    from mimetic.corpus.briefs import notes
    from mimetic.voice.generate import rewrite, write

    gc = GenerateConfig(max_new_tokens=6)
    a = write(mixed_voice, "a storm over a harbour town, told by a child", gc, mode="write")[0]
    b = write(mixed_voice, "a storm over a harbour town, told by a child", gc, mode="write")[0]
    assert a.output == b.output and a.new_tokens == 6  # same seed, same text
    draft = "The man walked to the shop. It was raining, and he was sad."
    from mimetic.models.engines import Voice

    voice, asked = Voice.load(mixed_voice), []
    real = voice.generate
    voice.generate = lambda prompt, *a, **k: (asked.append(prompt), real(prompt, *a, **k))[1]
    r = rewrite(mixed_voice, draft, gc, voice=voice)[0]
    assert r.prompt == draft and asked == ["Rewrite in my voice: man walked shop / raining sad"]  # as it trained: from notes
    modes = [(c, p["mode"]) for c, _, p in _logged(mixed_voice)]
    assert modes[-3:] == [("write", "write"), ("write", "write"), ("write", "rewrite")]
    assert notes(draft) == "man walked shop / raining sad"


def test_cli_modes_and_their_errors(mixed_voice, tmp_path, tiny_model):
    from typer.testing import CliRunner

    from mimetic.frontends.cli import app

    runner = CliRunner()
    w = ["--workspace", str(mixed_voice.root)]
    r = runner.invoke(app, ["write", "--brief", "a lantern in an orchard", "-n", "4", *w])
    assert r.exit_code == 0, r.output
    assert "Brief: a lantern in an orchard" in r.output
    draft = tmp_path / "draft.txt"
    draft.write_text("The ferry was late. Everyone waited on the pier.", encoding="utf-8")
    assert runner.invoke(app, ["rewrite", str(draft), "-n", "4", *w]).exit_code == 0
    r = runner.invoke(app, ["compare", "--mode", "write", "-n", "4", *w])
    assert r.exit_code == 0, r.output
    md = sorted((mixed_voice.root / "compare").glob("*.md"))[-1].read_text()
    assert "mode **write**" in md and "## Brief 1" in md and "## Brief 5" in md
    assert runner.invoke(app, ["write", "--brief", "x", "an opening", *w]).exit_code == 1
    plain = trained_voice(tmp_path, tiny_model, name="plain")
    r = runner.invoke(app, ["write", "--brief", "a storm", "--workspace", str(plain.root)])
    assert r.exit_code == 1 and "trained to continue text" in r.output and "--format brief" in r.output
    r = runner.invoke(app, ["rewrite", str(draft), "--workspace", str(plain.root)])
    assert r.exit_code == 1 and "not to rewrite" in r.output


def test_evaluate_reports_each_mode_for_voice_and_base(mixed_voice):
    from mimetic import EvaluateConfig
    from mimetic.evaluation.evaluate import evaluate

    ev = evaluate(mixed_voice, config=EvaluateConfig(sample_words=200, new_tokens=16, mode_prompts=5, batch_size=3))
    modes = ev.metrics["modes"]
    assert list(modes) == ["write", "continue", "rewrite"]
    for mode, r in modes.items():
        assert r["requests"] == 5 and r["words"]["voice"] > 0 and r["words"]["base"] > 0
        if mode == "continue":
            assert r["adherence"]["voice"] is None
        else:
            assert 0 <= r["adherence"]["voice"] <= 1 and r["adherence"]["writer"] > 0.9  # the passage the brief describes
    assert any(line.startswith("Mode rewrite (5 held-out requests)") for line in ev.summary())
    assert "Modes: your voice, and what was asked" in ev.report.read_text()


def test_the_modelfile_of_a_brief_voice_takes_a_bare_brief(tokenizer):
    from mimetic import GenerateConfig
    from mimetic.voice.export import modelfile

    brief = modelfile("voice-q8_0.gguf", tokenizer, "brief", GenerateConfig(), "")
    assert "<|im_start|>user\nWrite: {{ .Prompt }}<|im_end|>" in brief
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in brief  # the template's own, as in training
    mixed = modelfile("voice-q8_0.gguf", tokenizer, "mixed", GenerateConfig(), "")
    assert "#   rewrite   Rewrite in my voice: …" in mixed and "user\n{{ .Prompt }}" in mixed


def test_absurd_briefs_are_refused_with_a_reason():
    from mimetic.corpus.briefs import request
    from mimetic.errors import MimeticError

    with pytest.raises(MimeticError, match="no words"):
        request("brief", "write", "!!! 1234 ???")
    with pytest.raises(MimeticError, match="400 words long") as e:
        request("mixed", "write", "word " * 400)
    assert "mimetic rewrite" in e.value.hint
    assert request("mixed", "rewrite", "word " * 400).startswith("Rewrite in my voice: word")  # a draft may be long


def test_served_brief_and_mixed_voices_read_a_message_as_a_brief(tokenizer):
    from mimetic.frontends.serve import BadRequest, ServeConfig, ServedModel, Voices

    voices = Voices([ServedModel("b", "voice", Path("b.gguf"), "embedded", "brief"),
                     ServedModel("m", "voice", Path("m.gguf"), "embedded", "mixed")], ServeConfig())
    b, m = voices.get("b"), voices.get("m")
    ids, logged = voices.prompt(b, tokenizer, [{"role": "user", "content": "a storm over a harbour town"}], None)
    assert "user\nWrite: a storm over a harbour town<|im_end|>" in tokenizer.decode(ids)
    ids, _ = voices.prompt(m, tokenizer, [{"role": "user", "content": "Rewrite in my voice: flat draft"}], None)
    assert "user\nRewrite in my voice: flat draft<|im_end|>" in tokenizer.decode(ids)  # a marker is kept, not doubled
    ids, _ = voices.prompt(m, tokenizer, None, "It was late when")
    assert "user\nContinue: It was late when<|im_end|>" in tokenizer.decode(ids)  # /v1/completions continues
    with pytest.raises(BadRequest, match="not to continue"):
        voices.prompt(b, tokenizer, [{"role": "user", "content": "Continue: It was late"}], None)
    with pytest.raises(BadRequest, match="brief is empty"):
        voices.prompt(b, tokenizer, [{"role": "user", "content": "Write:   "}], None)
    with pytest.raises(BadRequest, match="send the brief as a user message"):
        voices.prompt(b, tokenizer, [{"role": "system", "content": "hi"}], None)


def test_a_brief_that_parrots_the_example_or_names_nothing_is_refused():
    from mimetic.corpus.briefs import clean_brief

    assert clean_brief("This passage is a brief summary of a story about a child's account of a storm over a harbour "
                       "town, in the first person.", PASSAGE) is None
    assert clean_brief("This passage is a brief summary of a scene from a fictional story. It is written in a "
                       "conversational tone.", PASSAGE) is None
    long = ("This passage describes a doctor reading a letter with his friend in a cold room after Christmas. " * 2
            + "It is written in a conversational tone, with a mix of formal and informal language and many other features "
              "that a reader may notice when reading it slowly and with care.")
    assert clean_brief(long, PASSAGE) == ("This passage describes a doctor reading a letter with his friend in a cold room "
                                          "after Christmas. This passage describes a doctor reading a letter with his friend "
                                          "in a cold room after Christmas.")


def test_the_briefs_file_survives_edits_mistakes_stops_and_other_formats(tmp_path, tiny_model):
    from mimetic import PrepareConfig, prepare
    from mimetic.corpus.briefs import make_briefs, read_briefs
    from mimetic.errors import MimeticError

    ws = prepared_voice(tmp_path, tiny_model, prepare_config=PrepareConfig(format="brief"))
    path = ws.data_dir / "briefs.jsonl"
    good = path.read_text()
    lines = good.splitlines()
    path.write_text("\n".join([lines[0][:-1] + ",}", *lines[1:]]) + "\n")  # a hand edit that broke a line
    with pytest.raises(MimeticError, match="Line 1 of .* is not valid JSON"):
        prepare(ws, PrepareConfig(format="brief"), base_model=tiny_model)
    rows = [json.loads(x) for x in lines]
    rows[1]["brief"] = ""  # blanked: made again
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + lines[2][:40])  # and a run stopped mid-line
    prepare(ws, PrepareConfig(format="brief"), base_model=tiny_model)
    again = read_briefs(path)
    assert again[rows[1]["hash"]].brief.startswith("A passage of about") and len(again) == len(lines)
    prepare(ws, PrepareConfig(format="completion"), base_model=tiny_model)
    assert path.read_text() == good  # another format keeps the briefs for later
    assert make_briefs([("train", "d", PASSAGE)], tmp_path / "b.jsonl", None)  # a fresh file
