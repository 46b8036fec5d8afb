"""The one generation path (issue 32): ``open_voice`` picks llama.cpp on the base model's GGUF with
the run's adapter as a GGUF LoRA, or transformers when llama.cpp cannot run the voice, and says so in
one line; both engines are the same voice: greedy decoding gives the same tokens, on the embedded
model and on tiny random Llama / Qwen2 / Phi models from their real configuration classes."""

from __future__ import annotations

import builtins
import sys

import pytest

from conftest import needs_llama_cpp, trained_voice
from mimetic import GenerateConfig, MimeticError
from mimetic.core.events import Progress, Warning
from mimetic.models.sampling import TOP_K, SamplingParams

PROMPTS = [
    "The kettle had been singing for some minutes before I noticed it, and",
    "My grandmother kept her letters in a biscuit tin, tied with string, and",
    "In the spring the river rose so high that",
]

TIE = 1e-2
"""Two next tokens whose reference logits are this close are a tie for the tiny random models:
the base GGUF is stored in f16 (logit moves up to ~3·10⁻⁴ measured by export's verification,
:data:`mimetic.voice.export.TIE_LOGITS`), and a tiny random model's logits are nearly flat."""


def test_sampling_chain_follows_transformers_order():
    chain = SamplingParams(temperature=0.8, top_p=0.9, min_p=0.05, repetition_penalty=1.1).llama_cpp_chain()
    assert [name for name, _ in chain] == ["penalties", "temp", "top_k", "top_p", "min_p", "dist"]
    assert dict(chain)["temp"] == (0.8,) and dict(chain)["top_k"] == (TOP_K,) and dict(chain)["penalties"][2] == 1.1
    assert SamplingParams(temperature=1.2).transformers_kwargs()["top_k"] == TOP_K  # the same top-k in both engines
    # the defaults (temperature 1, top-p 0.95): no other truncation, no penalty
    assert [n for n, _ in SamplingParams().llama_cpp_chain()] == ["temp", "top_k", "top_p", "dist"]
    # greedy keeps the penalty (the greedy rule of mimetic.models.sampling), argmax has none
    assert [n for n, _ in SamplingParams(temperature=0, repetition_penalty=1.3).llama_cpp_chain()] == ["penalties", "greedy"]
    assert SamplingParams.argmax(10).llama_cpp_chain() == [("greedy", ())]


@pytest.fixture(scope="module")
def tiny_voice(tmp_path_factory, tiny_model):
    return trained_voice(tmp_path_factory.mktemp("engines"), tiny_model, max_steps=3, eval_every=10, learning_rate=5e-2,
                         lora_r=4, lora_alpha=8)


def test_without_llama_cpp_it_writes_with_transformers_and_says_so(tiny_voice, monkeypatch):
    from mimetic.models.engines import open_voice
    from mimetic.voice.generate import write

    real_import = builtins.__import__

    def no_llama(name, *args, **kwargs):
        if name == "llama_cpp" or name.startswith("llama_cpp."):
            raise ImportError("No module named 'llama_cpp'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "llama_cpp", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_llama)
    events = []
    voice = open_voice(tiny_voice, on_event=events.append)
    assert voice.engine == "transformers"
    assert [(type(e), e.message) for e in events] == [(Warning, "llama.cpp is not installed: writing with transformers (slower)")]
    events.clear()
    out = write(tiny_voice, "The kettle", GenerateConfig(max_new_tokens=8, seed=1), on_event=events.append)
    assert out[0].new_tokens >= 1 and len(events) == 1 and "writing with transformers" in events[0].message
    assert tiny_voice.generations(1)[0]["command"] == "write"
    with pytest.raises(MimeticError, match="not installed"):  # forced, it is not silently replaced
        open_voice(tiny_voice, engine="llama.cpp", on_event=events.append)
    with pytest.raises(MimeticError, match="Unknown engine"):
        open_voice(tiny_voice, engine="onnx")


@needs_llama_cpp
def test_a_finished_run_is_made_ready_for_llama_cpp(tiny_voice, monkeypatch):
    """What a run does as it finishes (``ready_to_write``, called by train and polish): the adapter
    becomes a GGUF LoRA at once, so the first write opens without converting; the test suite's
    switch (``MIMETIC_GGUF_AFTER_TRAINING=0``) leaves it to the first use."""
    from mimetic.models.engines import open_voice
    from mimetic.training.session import ready_to_write

    run_dir = tiny_voice.run_dir(None)
    base = tiny_voice.load_config().train.base_model
    (run_dir / "adapter.gguf").unlink(missing_ok=True)
    assert ready_to_write(run_dir, base, lambda e: None) is None and not (run_dir / "adapter.gguf").exists()
    monkeypatch.setenv("MIMETIC_GGUF_AFTER_TRAINING", "1")
    said = []
    assert ready_to_write(run_dir, base, said.append) >= 0 and "adapter converted" in said[0].message
    assert (run_dir / "adapter.gguf").stat().st_mtime >= (run_dir / "adapter" / "adapter_model.safetensors").stat().st_mtime
    events = []
    open_voice(tiny_voice, on_event=events.append)
    assert "adapter.gguf ready" in events[0].message


def test_forced_transformers_says_so(tiny_voice):
    from mimetic.models.engines import Voice, open_voice

    events = []
    voice = open_voice(tiny_voice, engine="transformers", on_event=events.append)
    assert isinstance(voice, Voice) and [type(e) for e in events] == [Progress] and "transformers" in events[0].message


def _agreement(ref, llama, prompts: list[str], n: int, tie: float) -> dict:
    """Greedy continuations of ``prompts`` (``n`` tokens, no penalty) in both engines, compared token
    by token; at the first difference, the reference's logit gap between the two engines' choices
    (after it, the texts may rightly differ). Returns ``same`` (tokens agreed before the first
    difference or the end, summed), ``total``, and ``gaps`` (the gap at each difference)."""
    import torch

    params = SamplingParams.argmax(n)
    same, total, gaps = 0, 0, []
    for p in prompts:
        ids = ref.encode_prompt(p)[0].tolist()
        a, b = ref.generate_ids(ids, params, 0), llama.generate_ids(ids, params, 0)
        k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        same += k
        total += max(len(a), len(b))
        if k < min(len(a), len(b)):
            with torch.no_grad():
                logits = ref.model(torch.tensor([ids + a[:k]])).logits[0, -1].float()
            gaps.append(float(logits[a[k]] - logits[b[k]]))
    return {"same": same, "total": total, "gaps": gaps}


def _check_same_voice(ws, n: int, tie: float, min_share: float, logits: tuple[float, float] | None = None) -> None:
    """Greedy agreement of both engines on ``ws``'s published run, adapter on and off: at least
    ``min_share`` of the tokens agree before the first difference, and every difference is at a
    near-tie of the reference (gap ≤ ``tie``). With ``logits`` ``(agreement, max difference)``,
    also next-token logits along the reference's greedy texts, as export's verification does:
    top-1 agreement (ties within :data:`mimetic.voice.export.TIE_LOGITS`) at least ``agreement``,
    no logit further than ``max difference``, and no more than 2 points below the base model's
    own agreement on the same texts (the control: what the base GGUF's quantization costs)."""
    from mimetic.models.engines import GGUFVoice, base_gguf, open_voice
    from mimetic.voice.export import compare_logits

    events = []
    llama = open_voice(ws, engine="auto", on_event=events.append)
    assert isinstance(llama, GGUFVoice) and llama.adapter.endswith("adapter.gguf")
    assert [type(e) for e in events] == [Progress] and events[0].message.startswith("writing with llama.cpp (adapter converted in")
    ref = open_voice(ws, engine="transformers", precision="fp32", on_event=events.append)
    voice = _agreement(ref, llama, PROMPTS, n, tie)
    with ref.base(), llama.base():  # the adapter switched off in both
        base = _agreement(ref, llama, PROMPTS, n, tie)
    for got in (voice, base):
        assert got["same"] >= min_share * got["total"], got
        assert all(abs(g) <= tie for g in got["gaps"]), got  # every difference is at a near-tie of the reference
    if logits:
        import torch

        texts = [ref.encode_prompt(p)[0].tolist() for p in PROMPTS]
        texts = [ids + ref.generate_ids(ids, SamplingParams.argmax(n), 0) for ids in texts]
        gguf = base_gguf(ref.base_model)[0]
        with torch.no_grad():
            row = compare_logits(gguf, ref.model, texts, lora=llama.adapter)
            with ref.base():  # the control: the base model alone in both engines, on the same texts
                control = compare_logits(gguf, ref.model, texts)
        assert row["argmax_agreement"] >= logits[0] and row["max_abs_diff"] <= logits[1], row
        assert row["argmax_agreement"] >= control["argmax_agreement"] - 0.02, (row, control)  # the adapter adds no difference
    # and the adapter is really applied, and really switched off: llama.cpp's next-token logits move
    # between voice and base model as transformers' do (a 2-step adapter may not change a greedy text)
    import numpy as np
    import torch

    p = SamplingParams.argmax(n)
    ids = ref.encode_prompt(PROMPTS[0])[0].tolist()

    def last_logits() -> np.ndarray:
        llama.llm.reset()
        llama.llm.eval(ids)
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llama.llm._ctx.ctx, -1), shape=(llama.llm.n_vocab(),)).copy()

    import llama_cpp

    with torch.no_grad():
        moved_ref = ref.model(torch.tensor([ids])).logits[0, -1].float().numpy()
        with ref.base():
            moved_ref = moved_ref - ref.model(torch.tensor([ids])).logits[0, -1].float().numpy()
    with llama.base():
        plain = last_logits()
    moved = last_logits() - plain
    assert np.abs(moved).max() > 1e-3 and np.corrcoef(moved, moved_ref[: len(moved)])[0, 1] > 0.5
    again = open_voice(ws, engine="llama.cpp", on_event=events.append)  # the converted adapter is reused
    assert events[-1].message.startswith("writing with llama.cpp (adapter.gguf ready")
    assert again.generate_ids(ids, p, 0) == llama.generate_ids(ids, p, 0)


@needs_llama_cpp
@pytest.mark.parametrize("arch", ["llama", "qwen2", "phi"])
def test_greedy_tokens_agree_on_tiny_architectures(arch, tmp_path):
    from test_architectures import _vocab_dir, tiny

    if _vocab_dir() is None:
        pytest.fail("llama.cpp's vocabulary files are missing: run `make install` again")
    ws = trained_voice(tmp_path, tiny(arch, tmp_path), max_steps=3, eval_every=10, learning_rate=5e-2, lora_r=4, lora_alpha=8)
    _check_same_voice(ws, n=24, tie=TIE, min_share=0.9)


@needs_llama_cpp
def test_greedy_tokens_agree_on_the_embedded_model(tmp_path):
    ws = trained_voice(tmp_path, "embedded", max_steps=2, eval_every=10, learning_rate=1e-3, lora_r=4, lora_alpha=8, eval_tokens=1024)
    _check_same_voice(ws, n=32, tie=EMBEDDED_TIE, min_share=0.4, logits=(0.9, 1.5))


EMBEDDED_TIE = 0.5
"""The embedded base model is SmolLM2's Q4_1 GGUF; transformers runs its weights dequantized in fp32,
llama.cpp runs Q4_1 matmuls, which also quantize the activations to 8 bits (Q8_1): the same weights,
logits up to about half a logit apart (measured 0.51 on one prompt), so greedy texts part at the
first near-tie (measured: after 49 of 96 tokens, at reference gaps of 0.13 and 0.11 logits), and
teacher-forced next tokens agree 94.8% of the time, logits within 1.23 (135 positions) — which is
why the voice is held to the base model's own agreement in the same comparison, as export holds a
quantized voice to the base model quantized the same way."""


@needs_llama_cpp
def test_sampling_in_llama_cpp_is_seeded_and_streams(tiny_voice):
    from mimetic.models.engines import open_voice
    from mimetic.voice.generate import write

    voice = open_voice(tiny_voice, engine="llama.cpp", on_event=lambda e: None)
    cfg = GenerateConfig(max_new_tokens=16, seed=3, temperature=1.0, min_p=0.05, repetition_penalty=1.2)
    chunks = []
    first = write(tiny_voice, "The kettle", cfg, voice=voice, on_text=chunks.append)[0]
    again = write(tiny_voice, "The kettle", cfg, voice=voice)[0]
    other = write(tiny_voice, "The kettle", GenerateConfig(max_new_tokens=16, seed=4, temperature=1.0), voice=voice)[0]
    assert first.output == again.output and "".join(chunks) == first.output and other.output != first.output
    logged = tiny_voice.generations(1)[0]
    assert logged["command"] == "write" and __import__("json").loads(logged["params"])["engine"] == "llama.cpp"
    texts = voice.complete([[1, 2, 3], [4, 5]], SamplingParams(max_new_tokens=8), seed=0)
    assert len(texts) == 2 and texts == voice.complete([[1, 2, 3], [4, 5]], SamplingParams(max_new_tokens=8), seed=0)


def test_llama_cpp_threads_leave_out_the_cpus_others_keep_busy_now(monkeypatch):
    """Counted over a fraction of a second, not from the 1-minute load average (which still holds
    this process's own training of a minute ago)."""
    import os
    import subprocess

    from mimetic.models.engines import _busy_cpus, _threads

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)
        assert _busy_cpus(0.5) >= 0.6  # one process spinning keeps about one CPU busy
    finally:
        spinner.kill()
        spinner.wait()
    monkeypatch.setenv("MIMETIC_LLAMA_THREADS", "3")
    assert _threads() == 3
    monkeypatch.delenv("MIMETIC_LLAMA_THREADS")
    assert 1 <= _threads() <= len(os.sched_getaffinity(0))
