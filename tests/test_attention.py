"""The CPU training attention (mimetic.models.attention): the same values and gradients as PyTorch's SDPA,
used only where it should be, and the unmasked right-padded batches it relies on."""

import pytest
import torch
import torch.nn.functional as F

from mimetic import TrainConfig
from mimetic.models import attention
from mimetic.models.loading import autocast
from mimetic.models.nll import IGNORE_INDEX, collate, token_losses


def _qkv(dtype, b=2, h=6, kv=2, t=33, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, n, t, d, generator=g).to(dtype).requires_grad_() for n in (h, kv, kv)]


def _reference(q, k, v, grad_out):
    """SDPA in fp64 with the key/value heads repeated: output and the three gradients."""
    q64, k64, v64 = [x.detach().double().requires_grad_() for x in (q, k, v)]
    group = q.shape[1] // k.shape[1]
    out = F.scaled_dot_product_attention(q64, k64.repeat_interleave(group, 1), v64.repeat_interleave(group, 1), is_causal=True)
    out.backward(grad_out.double())
    return out, q64.grad, k64.grad, v64.grad


@pytest.mark.parametrize("t", [33, 301])  # one query block, and four uneven ones
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 4e-2)])
def test_causal_attention_matches_sdpa_in_value_and_gradient(dtype, tol, t):
    assert len(attention.blocks_for(t)) == (1 if t < attention.BLOCK_FROM else attention.BLOCKS)
    q, k, v = _qkv(dtype, t=t)
    grad_out = torch.randn(q.shape).to(dtype)
    out = attention.causal_attention(q, k, v, q.shape[-1] ** -0.5)
    out.backward(grad_out)
    ref = _reference(q, k, v, grad_out)
    for mine, theirs in zip((out, q.grad, k.grad, v.grad), ref):
        assert mine.dtype == dtype
        assert (mine.double() - theirs).abs().max() < tol
    # causal: the first token's output is its own value vector, whatever comes after it
    assert torch.allclose(out[:, :, 0].float(), v.repeat_interleave(3, 1)[:, :, 0].float(), atol=tol)


def _count_calls(monkeypatch):
    calls = []
    inner = attention.causal_attention
    monkeypatch.setattr(attention, "causal_attention", lambda *a: calls.append(a[0].shape) or inner(*a))
    return calls


def test_a_bf16_training_model_on_cpu_uses_it_with_the_same_loss_and_gradients(tiny_model, monkeypatch):
    from mimetic.training.sft import lora_model

    cfg = TrainConfig(base_model=tiny_model, lora_r=4, lora_alpha=8, lora_dropout=0.0)
    model, params = lora_model(cfg, "cpu", "bf16")
    config = model.get_base_model().config
    assert config._attn_implementation == attention.NAME
    fp32_model, _ = lora_model(cfg, "cpu", "fp32")
    assert fp32_model.get_base_model().config._attn_implementation == "sdpa"  # fp32: the flash kernel is faster
    with torch.no_grad():
        for p in params:
            p.normal_(0, 0.05)
    g = torch.Generator().manual_seed(1)
    rows = [{"input_ids": ids, "labels": ids} for ids in (torch.randint(0, 500, (n,), generator=g).tolist() for n in (48, 31))]
    batch = collate(rows, 0)
    amp = autocast("cpu", "bf16")
    calls = _count_calls(monkeypatch)

    def run():
        for p in params:
            p.grad = None
        losses, mask = token_losses(model, batch, "cpu", amp)
        (losses.sum() / mask.sum()).backward()
        return losses.detach(), [p.grad.clone() for p in params]

    mine, mine_grads = run()
    assert len(calls) == 2  # both layers, padded batch included (no mask passed)
    config._attn_implementation = "sdpa"
    theirs, their_grads = run()
    assert len(calls) == 2
    # tight bounds: the tiny random model's losses sit near ln(vocabulary) whatever it attends to
    # (without the causal mask the losses moved by 0.15 and a gradient by 1.6× its largest value)
    assert (mine - theirs).abs().max() < 1e-2
    for a, b in zip(mine_grads, their_grads):
        assert (a - b).abs().max() <= 0.05 * b.abs().max()  # bf16 rounding: 0.012 of it
    assert any(gr.abs().sum() > 0 for gr in mine_grads)


def test_anything_but_plain_causal_attention_goes_to_sdpa(monkeypatch):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    class Module(torch.nn.Module):
        is_causal = True
        num_key_value_groups = 3

    module = Module()
    q, k, v = [x.detach() for x in _qkv(torch.bfloat16)]
    calls = _count_calls(monkeypatch)
    out, _ = attention.attention_forward(module, q, k, v, None)
    assert len(calls) == 1 and out.shape == (2, 33, 6, 16)
    mask = torch.ones(2, 1, 33, 33, dtype=torch.bool).tril()
    mask[1, :, :, :5] = False  # left padding: a mask the fast path cannot ignore
    for kwargs in ({"attention_mask": mask}, {"attention_mask": None, "softcap": 30.0}, {"attention_mask": None, "sliding_window": 8}):
        if "softcap" in kwargs:  # SDPA refuses soft-capping itself: the point is that it was asked
            with pytest.raises(ValueError, match="softcap"):
                attention.attention_forward(module, q, k, v, **kwargs)
            continue
        out, _ = attention.attention_forward(module, q, k, v, **kwargs)
        ref, _ = sdpa_attention_forward(module, q, k, v, **kwargs)
        assert torch.equal(out, ref)
    monkeypatch.setattr(attention, "MAX_SCORE_BYTES", 2 * 2 * 6 * 33 * 33 - 1)  # one byte short
    attention.attention_forward(module, q, k, v, None)
    attention.attention_forward(module, q.float(), k.float(), v.float(), None)  # fp32: not this kernel
    assert len(calls) == 1


def test_right_padded_rows_lose_nothing_without_an_attention_mask(tiny_model):
    from mimetic.training.sft import lora_model

    model, _ = lora_model(TrainConfig(base_model=tiny_model, lora_r=4, lora_alpha=8, lora_dropout=0.0), "cpu", "fp32")
    g = torch.Generator().manual_seed(2)
    rows = [{"input_ids": ids, "labels": [IGNORE_INDEX] * 3 + ids[3:]}
            for ids in (torch.randint(0, 500, (n,), generator=g).tolist() for n in (70, 21, 44))]
    amp = autocast("cpu", "fp32")
    with torch.no_grad():
        together, mask = token_losses(model, collate(rows, 0), "cpu", amp)
        for i, row in enumerate(rows):
            alone, alone_mask = token_losses(model, collate([row], 0), "cpu", amp)
            n = len(row["input_ids"]) - 1
            assert torch.equal(mask[i, :n], alone_mask[0, :n]) and not mask[i, n:].any()
            assert torch.allclose(together[i, :n], alone[0, :n], atol=1e-5)


def test_segments_are_read_from_position_ids_that_restart_at_zero():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5, 6, 7, 8]])
    assert attention.segments_of(pos, 2, 9) == [[(0, 3), (3, 5), (5, 9)], [(0, 9)]]
    for bad in ([[1, 2, 3]], [[0, 1, 3]], [[0, 0, 2]]):  # not examples counted up from 0
        assert attention.segments_of(torch.tensor(bad), 1, 3) is None
    assert attention.segments_of(None, 1, 3) is None and attention.segments_of(pos, 1, 9) is None


def test_packed_examples_have_their_padded_batchs_loss_and_gradients_attending_one_by_one(tiny_model, monkeypatch):
    from transformers.integrations import sdpa_attention

    from mimetic.training.sft import lora_model, pack

    model, params = lora_model(TrainConfig(base_model=tiny_model, lora_r=4, lora_alpha=8, lora_dropout=0.0), "cpu", "bf16")
    assert model.get_base_model().config._attn_implementation == attention.NAME
    model.train()
    with torch.no_grad():
        for p in params:
            p.normal_(0, 0.05)
    g = torch.Generator().manual_seed(3)
    rows = [{"input_ids": ids, "labels": ids} for ids in (torch.randint(0, 500, (n,), generator=g).tolist() for n in (300, 31, 48))]
    packed = pack(rows, 384)
    assert [len(r["input_ids"]) for r in packed] == [379]  # one row: 300, 48 and 31 tokens
    padded, flat = collate(rows, 0), collate(packed, 0)
    assert flat["input_ids"].shape == (1, 384) and padded["input_ids"].numel() == 3 * 320  # 5 positions of padding, not 581
    amp = autocast("cpu", "bf16")
    calls = _count_calls(monkeypatch)
    sdpa_calls = []
    inner = sdpa_attention.sdpa_attention_forward
    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward", lambda *a, **k: sdpa_calls.append(1) or inner(*a, **k))

    def run(batch):
        for p in params:
            p.grad = None
        losses, mask = token_losses(model, batch, "cpu", amp)
        (losses.sum() / mask.sum()).backward()
        return losses.detach()[mask], [p.grad.clone() for p in params]

    def by_example(losses):  # pack() lays out the 300-token example, then the 48, then the 31: back to rows' order
        return torch.cat([losses[:299], losses[299 + 47 :], losses[299 : 299 + 47]])

    mine, mine_grads = run(flat)
    assert len(calls) == 2 * 4 and not sdpa_calls  # each layer: the three examples and the padding, one by one
    theirs, their_grads = run(padded)
    assert mine.shape == theirs.shape == (sum(len(r["input_ids"]) - 1 for r in rows),)
    # the same tokens predicted from the same context; the tiny random model's losses sit near
    # ln(vocabulary) whatever they see, so the bounds are tight: with each example's attention
    # output put in another's place the losses moved by 0.22 and a gradient by 2× its largest value
    assert (by_example(mine) - theirs).abs().max() < 1e-2
    for a, b in zip(mine_grads, their_grads):
        assert (a - b).abs().max() <= 0.05 * b.abs().max()  # bf16 rounding: 0.0065 of it
    model.eval()  # not training: SDPA with transformers' block-diagonal mask, the same losses
    with torch.no_grad():
        evaluated, _ = token_losses(model, flat, "cpu", amp)
    evaluated = by_example(evaluated[flat["labels"][:, 1:] != IGNORE_INDEX])
    assert sdpa_calls and (evaluated - theirs).abs().max() < 1e-2
