import sqlite3

import pytest

from conftest import trained_voice
from mimetic import GenerateConfig, MimeticError, compare, held_out_prompts, read_prompts, write
from mimetic.voice.generate import Voice


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model):
    return trained_voice(tmp_path_factory.mktemp("gen"), tiny_model)


def test_write_streams_and_logs_to_sqlite(trained):
    pieces = []
    gens = write(trained, "The kettle", GenerateConfig(max_new_tokens=12, num_samples=2, seed=3), on_text=pieces.append)
    assert len(gens) == 2 and [g.seed for g in gens] == [3, 4]
    assert all(g.new_tokens >= 1 for g in gens)
    # streaming: the pieces, with "\n\n" between samples, are exactly the returned texts
    assert "".join(pieces) == "\n\n".join(g.output for g in gens) and "\n\n" in pieces
    rows = sqlite3.connect(trained.db_path).execute("SELECT command, prompt, base_model, adapter, seed FROM generations").fetchall()
    assert len(rows) >= 2 and rows[-1][0] == "write" and rows[-1][1] == "The kettle" and rows[-1][3].endswith(("adapter", "adapter.gguf"))


def test_same_seed_same_text(trained):
    voice = Voice.load(trained)
    c = GenerateConfig(max_new_tokens=10, seed=11)
    a = write(trained, "We walked", c, voice=voice)[0].output
    b = write(trained, "We walked", c, voice=voice)[0].output
    assert a == b


def test_continue_from_file(trained, tmp_path):
    f = tmp_path / "draft.txt"
    f.write_text("My grandmother kept her letters in a biscuit tin.")
    g = write(trained, config=GenerateConfig(max_new_tokens=5), continue_from=f)[0]
    assert g.prompt.startswith("My grandmother")
    with pytest.raises(MimeticError, match="Cannot read"):
        write(trained, config=GenerateConfig(max_new_tokens=5), continue_from=tmp_path / "missing.txt")
    with pytest.raises(MimeticError, match="prompt is empty"):
        write(trained, "   ")


def test_compare_writes_side_by_side_markdown_and_html(trained, tmp_path):
    pf = tmp_path / "prompts.txt"
    pf.write_text("# my prompts\nThe harbour wall\n\nIn the spring <the river> rose\n")
    prompts = read_prompts(pf)
    assert prompts == ["The harbour wall", "In the spring <the river> rose"]
    c = compare(trained, prompts, GenerateConfig(max_new_tokens=8, temperature=0))
    assert len(c.pairs) == 2
    assert all(b.model == "base" and v.model == "voice" and b.seed == v.seed for b, v in c.pairs)
    html = c.html.read_text()
    assert "Base model" in html and "Your voice" in html and "&lt;the river&gt;" in html and "<script" not in html
    assert "## Prompt 2" in c.markdown.read_text()
    n = sqlite3.connect(trained.db_path).execute("SELECT count(*) FROM generations WHERE command='compare'").fetchone()[0]
    assert n >= 4


def test_held_out_prompts_come_from_held_out_text(trained):
    from mimetic.corpus.prepare import load_split

    prompts = held_out_prompts(trained, n=3, words=10)
    held = " ".join(load_split(trained, "held_out")["text"])
    assert 1 <= len(prompts) <= 3 and all(" ".join(p.split()[:5]) in " ".join(held.split()) for p in prompts)
