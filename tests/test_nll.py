"""The one NLL function: the fused chunked loss equals the model's own logits, values and gradients."""

import pytest
import torch

from mimetic import TrainConfig
from mimetic.models.loading import autocast
from mimetic.models.nll import IGNORE_INDEX, collate, fused_head, linear_cross_entropy, token_losses


def _rows(n, length, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        ids = torch.randint(0, vocab, (length - 3 * i,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [IGNORE_INDEX] * 4 + ids[4:]})  # a prompt that is not predicted
    return rows


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fused_loss_matches_full_logits_in_value_and_gradient(tiny_model, precision, monkeypatch):
    from mimetic.training.sft import lora_model

    model, params = lora_model(TrainConfig(base_model=tiny_model, lora_r=4, lora_alpha=8, lora_dropout=0.0), "cpu", precision)
    assert fused_head(model) is not None  # the path under test is taken
    batch = collate(_rows(3, 40, model.config.vocab_size), 0)
    amp = autocast("cpu", precision)
    with torch.no_grad():  # make the LoRA update non-zero so gradients reach lora_A too
        for p in params:
            p.normal_(0, 0.05)

    def run():
        for p in params:
            p.grad = None
        losses, mask = token_losses(model, batch, "cpu", amp)
        (losses.sum() / mask.sum()).backward()
        return losses.detach(), mask, [p.grad.clone() for p in params]

    fused, mask, fused_grads = run()
    monkeypatch.setattr("mimetic.models.nll.fused_head", lambda m: None)  # the model's own full logits
    full, mask_full, full_grads = run()
    tol = 1e-5 if precision == "fp32" else 2e-2
    assert torch.equal(mask, mask_full) and not mask[:, :3].any()
    assert torch.allclose(fused, full, atol=tol, rtol=tol)
    assert (fused[~mask] == 0).all()
    for a, b in zip(fused_grads, full_grads):
        assert torch.allclose(a, b, atol=tol * 10, rtol=tol * 10)
    assert any(g.abs().sum() > 0 for g in fused_grads)


def test_linear_cross_entropy_chunks_agree_and_skip_ignored_rows():
    torch.manual_seed(0)
    h = torch.randn(37, 8, requires_grad=True)
    w = torch.randn(50, 8)
    labels = torch.randint(0, 50, (37,))
    labels[5:9] = IGNORE_INDEX
    ref = torch.nn.functional.cross_entropy(h @ w.T, labels, ignore_index=IGNORE_INDEX, reduction="none")
    ref.sum().backward()
    ref_grad = h.grad.clone()
    h.grad = None
    for chunk in (1, 7, 64, None):  # None: the default size, by elements
        out = linear_cross_entropy(h, w, labels, None, chunk)
        assert torch.allclose(out, ref, atol=1e-5)
        (out * 2).sum().backward()  # backward scales the stored per-row gradient
        assert torch.allclose(h.grad, 2 * ref_grad, atol=1e-5)
        assert (h.grad[5:9] == 0).all()
        h.grad = None
