import pytest

from conftest import make_corpus
from mimetic import MimeticError, PrepareConfig, Workspace, ingest, prepare
from mimetic.corpus.ingest import load_corpus
from mimetic.corpus.prepare import IGNORE_INDEX, chunk_paragraphs, load_split, split_held_out


@pytest.fixture
def ws(tmp_path, tiny_model):
    ws = Workspace.open(tmp_path / "voice")
    ingest([make_corpus(tmp_path / "writing", n_docs=40, paragraphs=10)], ws)
    return ws


def test_chunks_respect_token_limit_and_paragraph_boundaries(tokenizer):
    paras = [f"Paragraph {i}. " + "The river rose and the bridge went under. " * (i % 4 + 1) for i in range(40)]
    paras.append("A very long paragraph. " * 200)  # longer than the limit: cut at sentences
    chunks = chunk_paragraphs(paras, tokenizer, 64)
    assert all(len(tokenizer(c, add_special_tokens=False)["input_ids"]) <= 64 for c in chunks)
    whole = [p for c in chunks for p in c.split("\n\n")]
    assert whole[: len(paras) - 1] == paras[:-1]  # every paragraph intact and in order
    assert "".join(whole[len(paras) - 1 :]).replace(" ", "") == paras[-1].replace(" ", "")


def test_split_by_documents_is_seeded_and_reproducible(ws, tiny_model):
    a = prepare(ws, PrepareConfig(seed=7), tiny_model)
    b = prepare(ws, PrepareConfig(seed=7), tiny_model)
    c = prepare(ws, PrepareConfig(seed=8), tiny_model)
    assert a.split_mode == "documents" and len(a.held_out_documents) == 4
    assert a.held_out_documents == b.held_out_documents != c.held_out_documents
    train, held = load_split(ws, "train"), load_split(ws, "held_out")
    assert not set(train["doc_id"]) & set(held["doc_id"])
    assert max(train["n_tokens"]) <= 512
    assert ws.load_config().train.base_model == tiny_model


def test_few_documents_are_split_into_held_out_sections(tmp_path, tiny_model):
    ws = Workspace.open(tmp_path / "voice")
    ingest([make_corpus(tmp_path / "novels", n_docs=3, paragraphs=120)], ws)
    r = prepare(ws, PrepareConfig(section_words=800, max_tokens=128), tiny_model)
    assert r.split_mode == "sections"
    held_secs = {tuple(x) for x in r.meta["held_out_sections"]}
    assert {d for d, _ in held_secs} == {d["doc_id"] for d in load_corpus(ws)}  # every novel contributes
    train, held = load_split(ws, "train"), load_split(ws, "held_out")
    assert not {(d, s) for d, s in zip(train["doc_id"], train["section"])} & held_secs
    train_text = "\n".join(train["text"])
    for t in held["text"]:  # no held-out paragraph sits inside a training chunk
        for p in t.split("\n\n"):
            assert p not in train_text


def test_too_small_corpus_says_how_many_words(tmp_path, tiny_model):
    ws = Workspace.open(tmp_path / "voice")
    ingest([make_corpus(tmp_path / "w", n_docs=1, paragraphs=3)], ws)
    with pytest.raises(MimeticError, match=r"needs at least 2,000"):
        prepare(ws, base_model=tiny_model)


def test_chat_format_masks_the_prompt(ws, tiny_model, tokenizer):
    prepare(ws, PrepareConfig(format="chat", system_prompt="You write like me.", max_tokens=256), tiny_model)
    row = load_split(ws, "train")[0]
    labels = row["labels"]
    n_masked = sum(1 for x in labels if x == IGNORE_INDEX)
    assert 0 < n_masked < len(labels) and len(row["input_ids"]) <= 256
    prompt = tokenizer.decode(row["input_ids"][:n_masked])
    assert "You write like me." in prompt and "Write a passage" in prompt
    reply = tokenizer.decode([x for x in labels if x != IGNORE_INDEX], skip_special_tokens=True)
    assert row["text"][:40] in reply


def test_split_needs_ingest_first(tmp_path):
    with pytest.raises(MimeticError, match="no corpus"):
        prepare(Workspace.open(tmp_path / "empty"))


def test_unit_split_units_cover_corpus(ws):
    docs = load_corpus(ws)
    mode, train, held = split_held_out(docs, PrepareConfig())
    assert mode == "documents" and len(train) + len(held) == len(docs)


def test_a_model_that_expects_a_beginning_of_sequence_token_gets_it_in_examples_and_prompts(ws, tiny_model, tmp_path):
    """Gemma and Llama 3 tokenizers start every text with BOS; mimetic's own tokenizing must too
    (Gemma 3 270M without it: 5.21 nats/token on Dickens, with it 3.77)."""
    import shutil

    from tokenizers import processors
    from transformers import AutoTokenizer

    from mimetic.evaluation.evaluate import _continuation_prompts
    from mimetic.core.config import EvaluateConfig
    from mimetic.models.engines import prompt_ids
    from mimetic.models.loading import bos_ids

    plain = AutoTokenizer.from_pretrained(tiny_model)
    assert bos_ids(plain) == [] and prompt_ids(plain, "completion", "The harbour") == plain("The harbour")["input_ids"]
    model = tmp_path / "bos-model"
    shutil.copytree(tiny_model, model)
    tok = AutoTokenizer.from_pretrained(model)
    bos = tok.bos_token_id
    tok._tokenizer.post_processor = processors.TemplateProcessing(single=f"{tok.bos_token} $A", special_tokens=[(tok.bos_token, bos)])
    tok.save_pretrained(model)
    tok = AutoTokenizer.from_pretrained(model)
    assert bos_ids(tok) == [bos] and prompt_ids(tok, "completion", "The harbour") == [bos] + plain("The harbour")["input_ids"]

    prepare(ws, PrepareConfig(max_tokens=128), str(model))
    for split in ("train", "held_out"):
        rows = load_split(ws, split)
        assert all(r["input_ids"][0] == bos and r["labels"][0] == IGNORE_INDEX for r in rows)
        assert all(r["input_ids"][1:] == r["labels"][1:] and bos not in r["labels"] for r in rows)
    openings = _continuation_prompts(load_split(ws, "held_out"), tok, EvaluateConfig(prefix_tokens=16), 3)
    assert all(o["prefix_ids"][0] == bos and len(o["prefix_ids"]) == 17 for o in openings)
    prepare(ws, PrepareConfig(max_tokens=128), tiny_model)  # the embedded model's tokenizer: text alone, as before
    assert all(r["input_ids"][0] != bos and r["input_ids"] == r["labels"] for r in load_split(ws, "train"))
