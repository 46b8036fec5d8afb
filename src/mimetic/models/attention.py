"""Causal self-attention for LoRA training on a CPU in bf16: plain matmuls instead of PyTorch's
CPU flash-attention kernel.

On this project's AMD EPYC (2 cores, AVX-512 BF16) PyTorch's CPU flash attention took 37% of a
SmolLM2-135M training step for about 12% of its arithmetic: forward and backward of one layer's
attention at 4 × 512 tokens took 44 ms in bf16 and 48 ms in fp32 — the kernel is bound by its
own bookkeeping, not by the matmuls, so bf16 does not help it. Written as four batched matmuls
and a softmax (the "standard attention" of Dao et al. 2022, section 2.2, with its backward
pass), the same layer takes 24 ms in bf16, and its gradients are closer to an fp64 reference
than the flash kernel's (max error 0.023 against 0.12 on random inputs;
``benchmarks/step_profile.py`` and ``tests/test_attention.py``). In fp32 it is slower (86 ms:
the score matrix is twice the bytes and fp32 matmuls a quarter the speed), so it is used only
where the compute precision is bf16 or fp16 — which the CPU probe picks only where the CPU has
fast bf16 (:func:`mimetic.models.loading.cpu_bf16_is_faster`).

What it costs: the softmax probabilities are kept for the backward pass, ``batch × heads ×
length²`` values in bf16 per layer (19 MB for SmolLM2 at 4 × 512; 0.57 GB over its 30 layers),
where flash attention keeps one value per row. Past :data:`MAX_SCORE_BYTES` per layer the flash
kernel is used instead, so a long sequence cannot run the machine out of memory.

Causal attention wastes half of a full score matrix on keys a query may not see. From
:data:`BLOCK_FROM` tokens on the queries are cut into :data:`BLOCKS` blocks, and each block is
scored against the keys up to its last position only — 5/8 of the arithmetic and of the stored
probabilities at four blocks (the block skipping of flash attention, Dao et al. 2022, at the
coarsest grain that keeps the matmuls large); the key and value gradients are summed over the
blocks in fp32. A 4 × 512 SmolLM2 step ran 1.02–1.09× as fast as with one block, in three
runs of ``benchmarks/step_profile.py``.

Grouped-query attention needs no copies: the query heads that share a key/value head are
stacked along the rows (``(batch, kv heads, group · length, head dim)``), so each key/value head
is read once per matmul.
"""

from __future__ import annotations

import functools
from typing import Any

NAME = "mimetic_cpu"
# bf16 bytes of one layer's softmax probabilities above which PyTorch's own kernel is used
MAX_SCORE_BYTES = 64 * 2**20
# sequences from this length on are cut into BLOCKS query blocks, each scored against the keys
# it may see only: (BLOCKS + 1) / (2 · BLOCKS) of the full score matrix's arithmetic (5/8 at 4)
BLOCK_FROM = 256
BLOCKS = 4

# keyword arguments of transformers' attention calls that change the scores: any of them set
# sends the call to SDPA (soft-capping, a sliding window, T5-style position bias, attention sinks)
_CHANGES_SCORES = ("softcap", "sliding_window", "position_bias", "s_aux", "sinks")

_REGISTERED = False
_CAUSAL: dict[tuple[int, int, str, str], Any] = {}  # (start, end, dtype, device) → causal bias


def register() -> None:
    """Register :data:`NAME` with transformers' attention and mask interfaces (idempotent).
    Masks are built as for ``sdpa``, so a causal batch without padding reaches
    :func:`attention_forward` with ``attention_mask=None``."""
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    _REGISTERED = True


def use_for_training(model: Any, device: str, precision: str) -> bool:
    """Switch ``model`` (a transformers model, or a PEFT model around one) to this attention
    when it trains on a CPU in bf16 or fp16 and uses SDPA now; returns whether it did.

    Only models that train are switched (LoRA training and polish's policy). When a switched
    model generates, its cached and left-padded calls are not plain causal attention and go to
    SDPA by themselves (:func:`attention_forward`). The switch is not saved with an adapter
    (transformers does not write ``_attn_implementation`` into a config file)."""
    if device != "cpu" or precision not in ("bf16", "fp16"):
        return False
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(lm, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    register()
    config._attn_implementation = NAME
    return True


def attention_forward(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                      scaling: float | None = None, is_causal: bool | None = None, **kwargs: Any) -> tuple[Any, None]:
    """transformers' attention-function signature: ``query`` ``(batch, heads, length, head dim)``,
    ``key`` and ``value`` ``(batch, kv heads, length, head dim)``; returns ``(output (batch,
    length, heads, head dim), None)``.

    :func:`causal_attention` runs when the call is plain causal self-attention over the whole
    sequence (no mask — transformers passes none for a batch without padding — no cache offset,
    no dropout, nothing in :data:`_CHANGES_SCORES`, bf16/fp16 on a CPU, scores within
    :data:`MAX_SCORE_BYTES`), and in training for rows of packed examples too: position ids
    that restart at 0 for each example (:func:`segments_of`) make transformers build a
    block-diagonal causal mask, and each example then runs as its own causal attention, the
    masked-out blocks never computed. Anything else goes to transformers' SDPA function
    unchanged."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, h, t, _ = query.shape
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    # packed rows (training only): the mask transformers built from restarting position ids is
    # block-diagonal causal, so each example is its own plain causal attention
    segments = segments_of(kwargs.get("position_ids"), b, t) if attention_mask is not None and module.training else None
    score_values = h * (b * t * t if segments is None else sum((e - s) ** 2 for row in segments for s, e in row))
    plain = (
        (attention_mask is None or segments is not None) and causal and t > 1 and key.shape[2] == t
        and h % key.shape[1] == 0
        and (dropout == 0.0 or not module.training) and all(kwargs.get(k) is None for k in _CHANGES_SCORES)
        and query.device.type == "cpu"
        and query.dtype == key.dtype == value.dtype and str(query.dtype) in ("torch.bfloat16", "torch.float16")
        and 2 * score_values <= MAX_SCORE_BYTES
    )
    if not plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    if segments is None:
        out = causal_attention(query, key, value, scale)
    else:
        import torch

        out = torch.stack([
            torch.cat([causal_attention(query[i : i + 1, :, s:e], key[i : i + 1, :, s:e], value[i : i + 1, :, s:e], scale)
                       for s, e in row], dim=2)[0]
            for i, row in enumerate(segments)
        ])
    return out.transpose(1, 2).contiguous(), None


_SEGMENTS: list[Any] = [None, None]  # the last position ids seen and their segments (every layer asks)


def segments_of(position_ids: Any, b: int, t: int) -> list[list[tuple[int, int]]] | None:
    """The examples packed into each row, ``[[(start, end), …] per row]``, from position ids that
    restart at 0 for every example and count up by one within it (as
    :func:`mimetic.training.sft.pack` writes them); ``None``
    when ``position_ids`` is missing, of another shape, or not of that form. Computed once per
    forward pass: the layers share one position-id tensor."""
    import torch

    if position_ids is None or tuple(position_ids.shape) != (b, t):
        return None
    if _SEGMENTS[0] is position_ids:
        return _SEGMENTS[1]
    out: list[list[tuple[int, int]]] | None = []
    for row in position_ids:
        starts = (row == 0).nonzero().flatten().tolist()
        if not starts or starts[0] != 0:
            out = None
            break
        bounds = starts + [t]
        expected = torch.cat([torch.arange(e - s, device=row.device) for s, e in zip(bounds, bounds[1:])])
        if not torch.equal(row, expected):
            out = None
            break
        out.append(list(zip(bounds, bounds[1:])))
    _SEGMENTS[:] = [position_ids, out]
    return out


def causal_attention(query: Any, key: Any, value: Any, scale: float) -> Any:
    """``softmax(scale · Q Kᵀ + causal mask) V`` with its own backward pass.

    Args:
        query: ``(batch, heads, length, head dim)``.
        key, value: ``(batch, kv heads, length, head dim)``; ``heads`` a multiple of ``kv heads``
            (grouped-query attention, Ainslie et al. 2023).
        scale: multiplies the scores (``head dim ** -0.5`` in the Transformer).

    Returns:
        ``(batch, heads, length, head dim)`` in ``query``'s dtype. Scores and probabilities are
        rounded to that dtype between the matmuls (as transformers' eager attention does under
        bf16 autocast); the softmax itself is computed in fp32.
    """
    return _function().apply(query, key, value, scale)


def blocks_for(t: int) -> list[tuple[int, int]]:
    """Query blocks ``[(start, end), …]`` of a length-``t`` sequence: one block below
    :data:`BLOCK_FROM` tokens, else :data:`BLOCKS` blocks of (nearly) equal length."""
    n = 1 if t < BLOCK_FROM else BLOCKS
    edges = [round(i * t / n) for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _causal_bias(start: int, end: int, dtype: Any, device: Any) -> Any:
    """``(end − start, end)``: the additive mask of query positions ``start … end − 1`` over key
    positions ``0 … end − 1`` — 0 where a query may see the key (the key is not after it), −inf
    where it may not. Added to the scores rather than filled in with a boolean mask: the add is
    a plain vectorised pass, ``masked_fill_`` with a broadcast mask took 1.4–2× as long here."""
    import torch

    key = (start, end, str(dtype), str(device))
    bias = _CAUSAL.get(key)
    if bias is None:
        after = torch.ones(end - start, end, dtype=torch.bool, device=device).triu(start + 1)
        bias = _CAUSAL[key] = torch.zeros(end - start, end, dtype=dtype, device=device).masked_fill_(after, float("-inf"))
    return bias


@functools.cache
def _function() -> Any:
    """The autograd Function, built on first use so that importing mimetic needs no torch."""
    import torch

    def rows(x: Any, start: int, end: int) -> Any:
        """``(b, kv, g, t, d)`` → the block's rows as ``(b, kv, g · (end − start), d)`` (a copy)."""
        b, kv, g, _, d = x.shape
        return x[:, :, :, start:end].reshape(b, kv, g * (end - start), d)

    class CausalAttention(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, q: Any, k: Any, v: Any, scale: float) -> Any:
            b, h, t, d = q.shape
            kv = k.shape[1]
            g = h // kv
            qs = (q * scale).view(b, kv, g, t, d)  # the query heads of one kv head, stacked
            saved, outs = [], []
            for start, end in blocks_for(t):  # queries start…end−1 see keys 0…end−1 only
                qb = rows(qs, start, end)
                scores = torch.matmul(qb, k[:, :, :end].transpose(-1, -2)).view(b, kv, g, end - start, end)
                scores.add_(_causal_bias(start, end, scores.dtype, q.device))
                probs = torch.softmax(scores, dim=-1).view(b, kv, g * (end - start), end)  # fp32 inside, stored in q's dtype
                outs.append(torch.matmul(probs, v[:, :, :end]).view(b, kv, g, end - start, d))
                saved += [qb, probs]
            ctx.save_for_backward(k, v, *saved)
            ctx.scale = scale
            out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=3)
            return out.view(b, h, t, d)

        @staticmethod
        def backward(ctx: Any, grad_out: Any) -> Any:
            k, v, *saved = ctx.saved_tensors
            b, kv, t, d = k.shape
            g = grad_out.shape[1] // kv
            grad_out = grad_out.reshape(b, kv, g, t, d)
            blocks = blocks_for(t)
            # key and value gradients summed over the blocks in fp32, then rounded once
            grad_k = torch.zeros(b, kv, t, d, dtype=torch.float32 if len(blocks) > 1 else k.dtype, device=k.device)
            grad_v = torch.zeros_like(grad_k)
            grad_q = []
            for i, (start, end) in enumerate(blocks):
                qb, probs = saved[2 * i], saved[2 * i + 1]
                go = rows(grad_out, start, end)
                grad_v[:, :, :end] += torch.matmul(probs.transpose(-1, -2), go)
                grad_probs = torch.matmul(go, v[:, :, :end].transpose(-1, -2))
                # softmax backward: probs · (grad_probs − Σ probs · grad_probs), fp32 inside
                grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
                grad_q.append(torch.matmul(grad_scores, k[:, :, :end]).view(b, kv, g, end - start, d))
                grad_k[:, :, :end] += torch.matmul(grad_scores.transpose(-1, -2), qb)
            grad_q = (grad_q[0] if len(grad_q) == 1 else torch.cat(grad_q, dim=3)).mul_(ctx.scale)
            return grad_q.view(b, g * kv, t, d), grad_k.to(k.dtype), grad_v.to(v.dtype), None

    return CausalAttention
