"""Every preset's architecture end to end (issue 18): Phi (``PhiForCausalLM``), Qwen2 and Llama,
each a tiny random model built from its real configuration class with its family's real tokenizer
(from llama.cpp's vocabulary files, which ``make install`` keeps: GPT-2's BPE for Phi-2, Qwen2's,
Llama 3's), through ingest → prepare → train (LoRA) → the same greedy tokens in llama.cpp as in
transformers → write → evaluate → export (adapter, merged, GGUF f16 / q8_0 / q4_k_m, LoRA-GGUF),
every GGUF checked in llama.cpp."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import has_llama_cpp, needs_llama_cpp, trained_voice

ARCHS = {  # architecture → (config class, model class, vocabulary file, llama.cpp's arch, its pre-tokenizer)
    "phi": ("PhiConfig", "PhiForCausalLM", "ggml-vocab-gpt-2.gguf", "phi2", {"gpt-2"}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", "ggml-vocab-qwen2.gguf", "qwen2", {"qwen2"}),
    # Llama 3's tokenizer as transformers rebuilds it from the GGUF hashes as Smaug's (a Llama 3 model): same rules
    "llama": ("LlamaConfig", "LlamaForCausalLM", "ggml-vocab-llama-bpe.gguf", "llama", {"llama-bpe", "smaug-bpe"}),
}


def _vocab_dir() -> Path | None:
    if not has_llama_cpp():
        return None
    from mimetic.voice.export import llama_cpp_tools

    d = llama_cpp_tools() / "models"
    return d if d.is_dir() else None


def tiny(arch: str, root: Path) -> str:
    """Save a tiny random ``arch`` model (2 layers, hidden size 32) with its real tokenizer under ``root``."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    config_cls, model_cls, vocab, _, _ = ARCHS[arch]
    tok = AutoTokenizer.from_pretrained(str(_vocab_dir()), gguf_file=vocab)
    special = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    sizes = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=1024)
    if arch == "phi":  # llama.cpp's phi2 takes the MLP width as 4 × hidden, as in Phi-2
        config = transformers.PhiConfig(**sizes, **special, intermediate_size=128, partial_rotary_factor=0.5)
    else:
        config = getattr(transformers, config_cls)(**sizes, **special, intermediate_size=64, num_key_value_heads=2,
                                                    tie_word_embeddings=True)
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(config)
    path = root / f"tiny-{arch}"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@needs_llama_cpp
@pytest.mark.parametrize("arch", list(ARCHS))
def test_each_presets_architecture_runs_end_to_end_and_exports_to_llama_cpp(arch, tmp_path):
    from mimetic import EvaluateConfig, ExportConfig, GenerateConfig
    from mimetic.models.engines import open_gguf
    from mimetic.evaluation.evaluate import evaluate
    from mimetic.voice.export import export
    from mimetic.voice.generate import write
    from mimetic.models.loading import load_tokenizer

    if _vocab_dir() is None:
        pytest.fail("llama.cpp's vocabulary files are missing: run `make install` again")
    model = tiny(arch, tmp_path)
    ws = trained_voice(tmp_path, model, max_steps=3, eval_every=10, learning_rate=5e-2, lora_r=4, lora_alpha=8)
    summary = json.loads(next((ws.root / "runs").glob("*/summary.json")).read_text())
    assert summary["final_step"] == 3 and math.isfinite(summary["best_nll"]) and summary["best_nll"] < summary["base_nll"]
    assert json.loads((ws.root / "data" / "meta.json").read_text())["base_model"] == model

    # the same voice in both engines: greedy tokens agree (issue 32; on the voice the rest of this test writes with)
    from test_engines import TIE, _check_same_voice

    _check_same_voice(ws, n=24, tie=TIE, min_share=0.9)

    out = write(ws, "The kettle had been singing", GenerateConfig(max_new_tokens=12, seed=1))
    assert out and out[0].new_tokens > 0 and out[0].output.strip()

    ev = evaluate(ws, config=EvaluateConfig(sample_words=200, set_words=100, n_mfw=20, new_tokens=32, prefix_tokens=16,
                                            bootstrap=100, extraction_prefixes=2))
    assert ev.report.exists() and math.isfinite(ev.metrics["nll"]["voice"]["nll"])

    result = export(ws, config=ExportConfig(verify_examples=2, verify_tokens=16))
    rows = {r["file"]: r for r in result.verification}
    assert set(rows) == {"voice-f16.gguf", "voice-q8_0.gguf", "voice-q4_k_m.gguf", "base-f16.gguf + adapter.gguf"}
    assert rows["voice-f16.gguf"]["argmax_agreement"] >= 0.99 and rows["voice-f16.gguf"]["max_abs_diff"] < 0.05
    assert rows["base-f16.gguf + adapter.gguf"]["argmax_agreement"] >= 0.99
    assert (result.out_dir / "merged" / "config.json").exists() and (result.out_dir / "adapter.gguf").exists()

    # llama.cpp reads the file as this architecture, with this family's pre-tokenizer, and cuts text as transformers does
    llm = open_gguf(result.out_dir / "voice-q8_0.gguf", n_ctx=256, verbose=False, vocab_only=True)
    _, _, _, gguf_arch, pre = ARCHS[arch]
    assert llm.metadata["general.architecture"] == gguf_arch and llm.metadata["tokenizer.ggml.pre"] in pre
    text = "My grandmother kept her letters in a biscuit tin — 1,204 of them, tied with string."
    assert llm.tokenize(text.encode(), add_bos=False, special=False) == load_tokenizer(model).encode(text, add_special_tokens=False)
