"""Next-token NLL: the one place where a model's loss on text is computed.

Training (the loss), the plan's warm-up, the held-out evaluations during training and the
evaluation's per-example NLL all call :func:`token_losses`, so they cannot disagree. NLL is in
nats per token; perplexity is ``exp(NLL)``.

Rows are dicts with ``input_ids`` and ``labels`` (lists of int, the same length); a label of
:data:`IGNORE_INDEX` is not predicted (the prompt of a chat example, padding, the first token of
a packed example). Label ``i`` is predicted from tokens ``0..i-1`` (transformers' causal-LM
convention: logits are shifted by one against labels).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

IGNORE_INDEX = -100  # PyTorch's ``cross_entropy`` default ignore_index


def padded_length(n: int) -> int:
    """``n`` tokens rounded up to a multiple of an eighth of its power of two (at least 8):
    257–512 to multiples of 32, 513–1024 to multiples of 64, 1–64 to multiples of 8.

    So a batch is at most 12.5% padding more than its longest row needs (about 6% on average),
    and a run sees about eight distinct batch lengths per doubling instead of every length.
    With every length its own shape, a CPU training run's memory grew step after step (the
    allocator and oneDNN's per-shape caches; 3.0 → 4.7 GiB over 40 steps of Doyle); with lengths
    rounded to 32 it levels off (3.1 → 3.9 GiB over 60 steps) at the same real tokens per
    second (``benchmarks/RESULTS.md``, "Memory over a run"). The same idea as HF's
    ``pad_to_multiple_of``, scaled to the length.
    """
    if n <= 0:
        return 0
    step = max(8, 1 << max(0, (n - 1).bit_length() - 4))
    return -(-n // step) * step


def collate(rows: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Right-pad a list of examples into tensors ``input_ids``, ``attention_mask``, ``labels``
    of shape ``(batch, length)``, ``length`` the longest row rounded up by :func:`padded_length`;
    padded label positions are ``-100``.

    Packed rows (with ``position_ids``, see :func:`mimetic.training.sft.pack`) also get
    ``position_ids``; their padding is a segment of its own (positions restart at 0), so the
    model needs no attention mask, and ``attention_mask`` only marks real tokens for counting."""
    import torch

    n = padded_length(max(len(r["input_ids"]) for r in rows))
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    labels = torch.full((len(rows), n), IGNORE_INDEX, dtype=torch.long)
    packed = all("position_ids" in r for r in rows)
    pos = torch.zeros((len(rows), n), dtype=torch.long) if packed else None
    for i, r in enumerate(rows):
        k = len(r["input_ids"])
        ids[i, :k] = torch.tensor(r["input_ids"])
        mask[i, :k] = 1
        labels[i, :k] = torch.tensor(r["labels"])
        if pos is not None:
            pos[i, :k] = torch.tensor(r["position_ids"])
            pos[i, k:] = torch.arange(n - k)
    out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if pos is not None:
        out["position_ids"] = pos
    return out


# fp32 logits materialised at once by the fused loss: 2**23 values (32 MiB; 170 rows of SmolLM2's
# 49k vocabulary), so the softmax passes stay near the CPU's cache. 512 rows per chunk made the
# loss of a 4 × 512 batch 1.8× slower on this project's AMD EPYC (benchmarks/step_profile.py).
CHUNK_ELEMENTS = 2**23


def token_losses(model: Any, batch: dict[str, Any], device: str, autocast: Callable[[], Any]) -> tuple[Any, Any]:
    """Next-token NLL (nats) at every position of a collated batch.

    Where the model allows it (a causal LM whose output layer is a frozen, bias-free linear map,
    in one process and not compiled), the logits are never materialised for the whole batch:
    the decoder's hidden states go through :func:`linear_cross_entropy`, which computes the loss
    and its gradient chunk by chunk (the fused linear cross-entropy of Liger-Kernel and Unsloth,
    here in plain PyTorch for any device). Otherwise the model's full logits are used. Both give
    the same values (the logits are rounded to the compute precision either way).

    Args:
        model: a causal LM (transformers / PEFT).
        batch: from :func:`collate`: ``input_ids``, ``attention_mask``, ``labels`` and, for packed
            rows, ``position_ids``; all ``(batch, length)``.
        device: where the model is.
        autocast: a factory of the compute-precision context (:func:`mimetic.models.loading.autocast`).

    Returns:
        ``(losses, mask)``, both ``(batch, length - 1)``: fp32 NLL of label ``t + 1`` given tokens
        ``0..t`` (0 where the label is ignored), and a bool mask of the labelled positions.
    """
    import torch
    import torch.nn.functional as F

    batch = {k: v.to(device) for k, v in batch.items()}
    # use_cache=False: no KV cache is needed to score text, and transformers only reads packed
    # sequences from position ids when there is no cache
    # Rows are right-padded, so under causal attention a real token never sees padding: no mask
    # is needed for any labelled position, and without one the attention kernels take their
    # causal fast path (padding positions see what they see; their labels are ignored).
    if "position_ids" in batch:  # packed: attention kept inside each example by position ids
        kwargs = {"position_ids": batch["position_ids"]}
    else:
        kwargs = {}
    labels = batch["labels"][:, 1:]
    head = fused_head(model)
    with autocast():
        if head is not None:
            decoder, weight = head
            hidden = decoder(input_ids=batch["input_ids"], use_cache=False, **kwargs).last_hidden_state
            dtype = torch.get_autocast_dtype(hidden.device.type) if torch.is_autocast_enabled(hidden.device.type) else None
        else:
            logits = model(input_ids=batch["input_ids"], use_cache=False, **kwargs).logits
    if head is not None:
        b, t = labels.shape
        losses = linear_cross_entropy(hidden[:, :-1].reshape(b * t, -1), weight, labels.reshape(-1), dtype).view(b, t)
    else:
        logits = logits[:, :-1].float()
        losses = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    return losses, labels != IGNORE_INDEX


def fused_head(model: Any) -> tuple[Any, Any] | None:
    """``(decoder, output weight)`` of a causal LM whose logits are ``decoder(x) @ weightᵀ``
    exactly — a frozen, bias-free ``nn.Linear`` output layer, no logit scaling or soft-capping —
    or ``None`` (then the model's own forward is used). ``None`` too for a model wrapped by
    DDP (its forward must run for gradients to be synchronised) or by ``torch.compile``."""
    import torch

    if isinstance(model, torch.nn.parallel.DistributedDataParallel) or hasattr(model, "_orig_mod"):
        return None
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    if type(head) is not torch.nn.Linear or head.bias is not None or head.weight.requires_grad:
        return None
    config = getattr(lm, "config", None)
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None) not in (None, 1, 1.0):
        return None
    decoder = getattr(lm, getattr(lm, "base_model_prefix", ""), None)
    return (decoder, head.weight) if decoder is not None and decoder is not lm else None


def linear_cross_entropy(hidden: Any, weight: Any, labels: Any, dtype: Any = None, chunk: int | None = None) -> Any:
    """Cross-entropy of ``softmax(hidden @ weightᵀ)`` against ``labels``, chunk by chunk.

    The logits of ``chunk`` rows at a time are computed (in ``dtype``, then fp32 for the
    log-sum-exp), and in the same pass the gradient of each row's loss with respect to its hidden
    state, ``(softmax − one-hot) @ weight``; backward only scales it. So no ``(rows × vocabulary)``
    tensor outlives its chunk: for SmolLM2 at 4 × 512 tokens that is 400 MB of fp32 logits, their
    log-softmax and their gradient not kept (Hsu et al. 2024, "Liger Kernel": fused linear
    cross-entropy; the same idea as Unsloth's chunked loss). ``weight`` gets no gradient.

    Args:
        hidden: ``(rows, hidden size)``.
        weight: ``(vocabulary, hidden size)``, frozen.
        labels: ``(rows,)`` int; :data:`IGNORE_INDEX` rows get loss 0 and no gradient.
        dtype: compute dtype of the matmuls (the autocast dtype), or ``None`` for ``hidden``'s.
        chunk: rows per chunk; ``None``: :data:`CHUNK_ELEMENTS` logits (at least 16 rows).

    Returns:
        ``(rows,)`` fp32 NLL in nats.
    """
    if chunk is None:
        chunk = max(16, CHUNK_ELEMENTS // weight.shape[0])
    return _LinearCrossEntropy.apply(hidden, weight, labels, dtype, chunk)


def _linear_cross_entropy_function() -> Any:
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, labels: Any, dtype: Any, chunk: int) -> Any:
            dt = dtype or hidden.dtype
            w = weight.to(dt)
            need_grad = ctx.needs_input_grad[0]  # grad mode is off inside forward; this says if backward will come
            losses = torch.zeros(hidden.shape[0], dtype=torch.float32, device=hidden.device)
            grad = torch.zeros_like(hidden) if need_grad else None
            # one buffer for every chunk's logits (and one in the compute dtype), not a fresh
            # 32 MiB allocation per chunk: glibc maps and unmaps blocks that large from the system
            # each time; in one profile the copies into fresh blocks took 13% of a step, in another
            # 2% (benchmarks/RESULTS.md; not measured apart from the attention change)
            rows = min(chunk, hidden.shape[0])
            full = torch.empty(rows, w.shape[0], dtype=torch.float32, device=hidden.device)
            low = None if dt == torch.float32 else torch.empty(rows, w.shape[0], dtype=dt, device=hidden.device)
            with torch.autocast(device_type=hidden.device.type, enabled=False):
                for s in range(0, hidden.shape[0], chunk):
                    lab = labels[s : s + chunk]
                    n = len(lab)
                    valid = lab != IGNORE_INDEX
                    if not bool(valid.any()):
                        continue
                    logits = full[:n]
                    if low is None:
                        torch.mm(hidden[s : s + n].to(dt), w.T, out=logits)
                    else:
                        logits.copy_(torch.mm(hidden[s : s + n].to(dt), w.T, out=low[:n]))
                    target = lab.clamp(min=0)
                    picked = logits.gather(1, target[:, None])[:, 0]
                    # one exp over the chunk, in place: softmax numerator, then its sum
                    top = logits.amax(dim=-1, keepdim=True)
                    exps = logits.sub_(top).exp_()
                    total = exps.sum(dim=-1, keepdim=True)
                    lse = top[:, 0] + total[:, 0].log()
                    losses[s : s + n] = torch.where(valid, lse - picked, 0.0)
                    if grad is not None:
                        # (softmax − one-hot) of the valid rows, 0 for ignored ones
                        probs = exps.mul_(valid[:, None] / total)
                        probs[torch.arange(n, device=lab.device), target] -= valid.float()
                        if low is not None:
                            probs = low[:n].copy_(probs)
                        if grad.dtype == dt:
                            torch.mm(probs, w, out=grad[s : s + n])
                        else:
                            grad[s : s + n] = (probs @ w).to(grad.dtype)
            ctx.save_for_backward(grad if grad is not None else hidden.new_zeros(0))
            return losses

        @staticmethod
        def backward(ctx: Any, grad_losses: Any) -> Any:
            (grad,) = ctx.saved_tensors
            return grad * grad_losses[:, None].to(grad.dtype), None, None, None, None

    return LinearCrossEntropy


class _Lazy:
    """Defers building the autograd Function until first use, so ``import mimetic`` needs no torch."""

    def __init__(self, build: Callable[[], Any]):
        self._build, self._fn = build, None

    def apply(self, *args: Any) -> Any:
        if self._fn is None:
            self._fn = self._build()
        return self._fn.apply(*args)


_LinearCrossEntropy = _Lazy(_linear_cross_entropy_function)


def token_nll_sum(model: Any, batch: dict[str, Any], device: str, autocast: Callable[[], Any]) -> tuple[Any, int]:
    """Sum of next-token NLL (nats, a 0-d tensor with gradient) over the batch's labelled
    positions, and their count: the training loss before it is divided by the step's tokens."""
    losses, mask = token_losses(model, batch, device, autocast)
    return losses.sum(), int(mask.sum())


def per_example_nll(model: Any, rows: Any, pad_id: int, device: str, autocast: Callable[[], Any],
                    batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Summed next-token NLL (nats) and labelled-token count of every row, without gradients.

    Rows are batched by length (less padding); the model is put in eval mode (no dropout) and
    back in the mode it was in.

    Returns:
        Two float arrays of shape ``(len(rows),)``, in the rows' order.
    """
    import torch

    sums, counts = np.zeros(len(rows)), np.zeros(len(rows))
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))  # similar lengths: less padding
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            losses, mask = token_losses(model, collate([rows[i] for i in idx], pad_id), device, autocast)
            sums[idx] = losses.sum(dim=1).double().cpu().numpy()
            counts[idx] = mask.sum(dim=1).cpu().numpy()
    model.train(was_training)
    return sums, counts


def nll_sums(model: Any, rows: Any, pad_id: int, device: str, autocast: Callable[[], Any], batch_size: int = 8) -> tuple[float, int]:
    """Summed next-token NLL (nats) of ``model`` over ``rows`` and the number of labelled
    tokens: the parts that several processes add up before dividing."""
    sums, counts = per_example_nll(model, rows, pad_id, device, autocast, batch_size)
    return float(sums.sum()), int(counts.sum())


def evaluate_nll(model: Any, rows: Any, pad_id: int, device: str, autocast: Callable[[], Any], batch_size: int = 8) -> float:
    """Token-weighted NLL (nats/token) of ``model`` on ``rows`` (a Dataset or a list)."""
    total, count = nll_sums(model, rows, pad_id, device, autocast, batch_size)
    return total / max(1, count)
