import pytest

from mimetic import MimeticError
from mimetic.models import load_model, load_tokenizer, resolve


def test_embedded_model_converts_once_and_then_loads_fast(tokenizer, monkeypatch):
    import torch
    import transformers

    # converted from GGUF to safetensors by the tokenizer fixture: loading now must not read the GGUF again
    gguf_reads = []
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoConfig, transformers.AutoTokenizer):
        original = cls.from_pretrained.__func__

        def counting(klass, *args, _original=original, **kwargs):
            if kwargs.get("gguf_file"):
                gguf_reads.append(klass.__name__)
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(counting))
    model = load_model("embedded")
    assert gguf_reads == []
    assert model.config.model_type == "llama" and model.config.hidden_size == 576
    assert getattr(model.config, "quantization_config", None) is None  # a plain, trainable model
    ids = tokenizer("The sun has an influence on its surroundings.", return_tensors="pt")
    with torch.no_grad():
        out = model(**ids, labels=ids["input_ids"])
    assert out.loss.item() < 6.0  # real weights, not random (random would be about ln(49152) = 10.8)


def test_unknown_hub_model_offline_names_the_default(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MimeticError) as e:
        load_tokenizer("no-such-org/no-such-model-xyz")
    assert "smollm2-135m-instruct" in e.value.hint and "local path" in e.value.hint


def test_local_paths_are_checked(tmp_path):
    with pytest.raises(MimeticError, match="not found"):
        resolve(str(tmp_path / "missing.gguf"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(MimeticError, match="no config.json"):
        resolve(str(tmp_path / "folder"))
    assert resolve("Qwen/Qwen2.5-0.5B").kind == "hub"
    assert resolve("embedded").kind == "gguf"
