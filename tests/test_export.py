"""Export round trips through llama.cpp on a tiny random Llama voice: adapter, merged, GGUF f16/q8_0/q4_k_m,
LoRA-GGUF, Ollama Modelfile and model card."""

import json

import pytest

from conftest import needs_llama_cpp, trained_voice
from mimetic import ExportConfig, MimeticError, Workspace


@pytest.fixture(scope="module")
def voice(tmp_path_factory, tiny_model):
    return trained_voice(tmp_path_factory.mktemp("export"), tiny_model, max_steps=3, eval_every=10, learning_rate=5e-2,
                         lora_r=4, lora_alpha=8)


@needs_llama_cpp
def test_export_every_format_and_verify_in_llama_cpp(voice):
    from mimetic.voice.export import export

    result = export(voice, config=ExportConfig(verify_examples=4, verify_tokens=32))
    out = result.out_dir
    for name in ("adapter", "merged", "voice-f16.gguf", "voice-q8_0.gguf", "voice-q4_k_m.gguf", "adapter.gguf",
                 "base-f16.gguf", "Modelfile", "README.md", "provenance.json", "verification.json"):
        assert (out / name).exists(), name
    assert (out / "merged" / "model.safetensors").exists() and (out / "merged" / "tokenizer.json").exists()
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert not list(out.glob(".*partial"))
    rows = {r["file"]: r for r in result.verification}
    assert set(rows) == {"voice-f16.gguf", "voice-q8_0.gguf", "voice-q4_k_m.gguf", "base-f16.gguf + adapter.gguf"}
    assert rows["voice-f16.gguf"]["argmax_agreement"] >= 0.99 and rows["voice-f16.gguf"]["max_abs_diff"] < 0.05
    for q in ("voice-q8_0.gguf", "voice-q4_k_m.gguf"):  # quantized: compared with the base model quantized alike
        assert 0 < rows[q]["base_model_agreement"] <= 1
    assert rows["voice-q8_0.gguf"]["argmax_agreement"] >= rows["voice-q8_0.gguf"]["base_model_agreement"] - 0.02
    assert rows["base-f16.gguf + adapter.gguf"]["argmax_agreement"] >= 0.99
    assert result.files["voice-q4_k_m.gguf"] < result.files["voice-q8_0.gguf"] < result.files["voice-f16.gguf"]
    modelfile = (out / "Modelfile").read_text()
    assert "FROM ./voice-q4_k_m.gguf" in modelfile and 'TEMPLATE """{{ .Prompt }}"""' in modelfile  # a completion voice
    assert "PARAMETER temperature 1\n" in modelfile and "PARAMETER top_p 0.95\n" in modelfile and result.ollama_command.endswith("-f Modelfile")
    card = (out / "README.md").read_text()
    assert "Consent" in card and "held-out NLL" in card and "sha256" in card and "voice-f16.gguf" in card
    prov = json.loads((out / "provenance.json").read_text())["documents"]
    assert len(prov) == 30 and all(len(d["sha256"]) == 64 and "/" not in d["file"] for d in prov)


@needs_llama_cpp
def test_write_with_llama_cpp_on_the_export(voice):
    from mimetic import GenerateConfig
    from mimetic.voice.generate import write

    cfg = GenerateConfig(max_new_tokens=12, seed=3)
    first = write(voice, "The kettle", cfg, engine="llama.cpp")[0]
    again = write(voice, "The kettle", cfg, engine="llama.cpp")[0]
    assert first.output == again.output and 1 <= first.new_tokens <= 12  # same seed, same text
    logged = voice.generations(1)[0]
    assert logged["command"] == "write" and __import__("json").loads(logged["params"])["engine"] == "llama.cpp" and logged["output"] == again.output
    with pytest.raises(MimeticError, match="Unknown engine"):
        write(voice, "The kettle", cfg, engine="onnx")


def test_chat_voice_modelfile_has_template_and_system_prompt(tokenizer):
    from mimetic.core.config import GenerateConfig
    from mimetic.voice.export import modelfile
    from mimetic.text.identity import default_system_prompt

    text = modelfile("voice-q4_k_m.gguf", tokenizer, "chat", GenerateConfig(), default_system_prompt("anna"))
    assert "<|im_start|>system" in text and 'PARAMETER stop "<|im_end|>"' in text
    assert "SYSTEM" in text and "not any person named" in text


def test_adapter_and_merged_export_without_llama_cpp(voice, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from mimetic.voice.export import export

    result = export(voice, config=ExportConfig(formats=["adapter", "merged"], merged_dtype="float32"), out_dir=tmp_path / "x")
    out = result.out_dir
    assert (out / "adapter" / "adapter_model.safetensors").exists() and (out / "adapter" / "tokenizer.json").exists()
    assert (out / "merged" / "model.safetensors").exists() and (out / "merged" / "tokenizer.json").exists()
    assert not list(out.glob("*.gguf")) and {"adapter", "merged"} <= set(result.files)
    # the merged model computes what base + adapter computes
    run = voice.run_dir()
    base_model = (run / "config.toml").read_text().split('base_model = "')[1].split('"')[0]
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model), str(run / "adapter")).eval()
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    ids = torch.tensor([[1, 400, 2500, 31, 9000, 77]])
    with torch.no_grad():
        a, b = tuned(input_ids=ids).logits, merged(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4)
    with torch.no_grad(), tuned.disable_adapter():
        assert not torch.allclose(tuned(input_ids=ids).logits, b, atol=1e-4)  # the adapter changed something


def test_dora_adapter_is_refused_for_lora_gguf(voice, tmp_path):
    from mimetic.voice.export import export

    cfg_path = voice.run_dir() / "adapter" / "adapter_config.json"
    original = cfg_path.read_text()
    try:
        cfg_path.write_text(json.dumps({**json.loads(original), "use_dora": True}))
        with pytest.raises(MimeticError, match="DoRA"):
            export(voice, config=ExportConfig(formats=["lora-gguf"]), out_dir=tmp_path / "x")
    finally:
        cfg_path.write_text(original)


def test_export_before_training_and_bad_format(tmp_path):
    from mimetic.voice.export import export

    ws = Workspace.open(tmp_path / "empty")
    with pytest.raises(MimeticError, match="no finished training run"):
        export(ws)
    with pytest.raises(MimeticError, match="export.formats"):
        ExportConfig(formats=["onnx"])
