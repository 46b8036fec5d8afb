"""The fused LoRA training forward (mimetic.models.lora): PEFT's values and gradients on a real
PEFT model, and PEFT's own forward wherever the fused one does not apply."""

import pytest
import torch

from mimetic import TrainConfig
from mimetic.models import lora
from mimetic.models.loading import autocast
from mimetic.models.nll import collate, token_nll_sum


def _model(tiny_model, dropout=0.0):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # PEFT starts B at zero; a non-zero B makes every gradient path count
            torch.nn.init.normal_(p, std=0.2)
    return model


def _loss_and_grads(model, batch, precision):
    model.train()
    model.zero_grad(set_to_none=True)
    s, c = token_nll_sum(model, batch, "cpu", autocast("cpu", precision))
    (s / c).backward()
    return float(s / c), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _batch(tokenizer):
    rows = [{"input_ids": tokenizer(t)["input_ids"], "labels": tokenizer(t)["input_ids"]}
            for t in ("The kettle had been singing for some minutes.", "We walked along the harbour wall at night, slowly.")]
    return collate(rows, tokenizer.pad_token_id or 0)


def test_fused_forward_gives_peft_loss_and_gradients_in_fp32(tiny_model, tokenizer):
    batch = _batch(tokenizer)
    model = _model(tiny_model)
    ref_loss, ref_grads = _loss_and_grads(model, batch, "fp32")
    assert lora.fuse(model) == 14  # 7 projections × 2 layers
    loss, grads = _loss_and_grads(model, batch, "fp32")
    assert abs(loss - ref_loss) < 1e-6
    assert grads.keys() == ref_grads.keys() and len(grads) == 28
    for name, g in grads.items():
        assert g.dtype == torch.float32  # LoRA weights train in fp32
        scale = ref_grads[name].abs().max().item()
        assert scale > 0
        assert (g - ref_grads[name]).abs().max().item() <= 1e-5 * scale, name


def test_fused_forward_in_bf16_is_as_close_to_fp32_as_peft(tiny_model, tokenizer):
    """Under bf16 autocast both round differently; the fused step's gradients are no further from
    the fp32 ones than PEFT's own bf16 gradients are (summed over every LoRA weight)."""
    batch = _batch(tokenizer)
    model = _model(tiny_model)
    _, exact = _loss_and_grads(model, batch, "fp32")
    peft_loss, peft = _loss_and_grads(model, batch, "bf16")
    lora.fuse(model)
    loss, fused = _loss_and_grads(model, batch, "bf16")
    assert abs(loss - peft_loss) < 2e-2

    def error(grads):
        return sum(((g - exact[n]).norm() / exact[n].norm()).item() for n, g in grads.items()) / len(grads)

    assert all(g.dtype == torch.float32 for g in fused.values())
    assert error(fused) < 0.05  # bf16 rounding, not a wrong gradient (a dropped term is ~1)
    assert error(fused) <= 1.25 * error(peft)


def test_peft_forward_where_the_fused_one_does_not_apply(tiny_model):
    model = _model(tiny_model)
    lora.fuse(model)
    x = torch.randint(0, 100, (1, 8))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    calls = []
    real = lora._function

    def counting():
        calls.append(1)
        return real()

    lora._function = counting
    try:
        model.train()
        model(input_ids=x)
        assert calls, "training mode uses the fused step"
        calls.clear()
        model.eval()
        with torch.no_grad():
            evaluated = model(input_ids=x).logits
        assert not calls  # generation and NLL keep PEFT's forward
        with model.disable_adapter():
            model.train()
            plain = model(input_ids=x).logits
        assert not calls
        assert not torch.allclose(plain, evaluated)  # the adapter really was off there
    finally:
        lora._function = real
    assert "forward" in layer.__dict__


def test_dropout_keeps_peft_forward(tiny_model):
    assert lora.fuse(_model(tiny_model, dropout=0.1)) == 0


def test_training_model_is_fused(tiny_model):
    from mimetic.training.sft import lora_model

    model, _ = lora_model(TrainConfig(base_model=tiny_model), "cpu", "fp32")
    fused = [m for m in model.modules() if "forward" in m.__dict__]
    assert len(fused) == 14
    assert not lora_model(TrainConfig(base_model=tiny_model, compile=True), "cpu", "fp32")[0].base_model.model.model.layers[0].self_attn.q_proj.__dict__.get("forward")
