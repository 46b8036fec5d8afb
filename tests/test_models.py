import pytest

from mimetic import MimeticError
from mimetic.models.loading import load_model, load_tokenizer, resolve


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


def test_lora_layers_take_their_input_in_the_compute_precision(tiny_model):
    """Under bf16 autocast the LoRA adapters get the bf16 activations as they are (no fp32 copy
    of the input in every layer), and compute the same output as with PEFT's casts; in fp32
    PEFT's own behaviour is kept."""
    import torch

    from mimetic.core.config import TrainConfig
    from mimetic.models.loading import autocast
    from mimetic.training.sft import lora_model

    cfg = TrainConfig(base_model=tiny_model, lora_r=4, lora_alpha=8)
    model, params = lora_model(cfg, "cpu", "bf16")
    with torch.no_grad():
        for p in params:
            p.normal_(0, 0.05)  # a non-zero adapter, so its path changes the output
    ids = torch.randint(0, model.config.vocab_size, (2, 16))
    with torch.no_grad(), autocast("cpu", "bf16")():
        fused = model(input_ids=ids).logits.float()  # training mode: mimetic.models.lora's fused step
    model.eval()  # PEFT's own forward (generation, NLL)
    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].dtype))
             for name, m in model.named_modules() if name.endswith("lora_A.default")]
    with torch.no_grad(), autocast("cpu", "bf16")():
        fast = model(input_ids=ids).logits.float()
    for h in hooks:
        h.remove()
    assert seen and set(seen) == {torch.bfloat16}
    assert torch.allclose(fused, fast, atol=2e-2, rtol=2e-2)
    for m in model.modules():
        if hasattr(m, "cast_input_dtype_enabled"):
            m.cast_input_dtype_enabled = True  # PEFT's default: the input cast to the fp32 adapter
    with torch.no_grad(), autocast("cpu", "bf16")():
        cast = model(input_ids=ids).logits.float()
    assert torch.allclose(fast, cast, atol=2e-2, rtol=2e-2)
    fp32, _ = lora_model(cfg, "cpu", "fp32")
    assert all(m.cast_input_dtype_enabled for m in fp32.modules() if hasattr(m, "cast_input_dtype_enabled"))
