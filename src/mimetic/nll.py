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


def collate(rows: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Right-pad a list of examples into tensors ``input_ids``, ``attention_mask``, ``labels``
    of shape ``(batch, longest)``; padded label positions are ``-100``.

    Packed rows (with ``position_ids``, see :func:`mimetic.train.pack`) also get
    ``position_ids``; their padding is a segment of its own (positions restart at 0), so the
    model needs no attention mask, and ``attention_mask`` only marks real tokens for counting."""
    import torch

    n = max(len(r["input_ids"]) for r in rows)
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


def token_losses(model: Any, batch: dict[str, Any], device: str, autocast: Callable[[], Any]) -> tuple[Any, Any]:
    """Next-token NLL (nats) at every position of a collated batch.

    Args:
        model: a causal LM (transformers / PEFT).
        batch: from :func:`collate`: ``input_ids``, ``attention_mask``, ``labels`` and, for packed
            rows, ``position_ids``; all ``(batch, length)``.
        device: where the model is.
        autocast: a factory of the compute-precision context (:func:`mimetic.models.autocast`).

    Returns:
        ``(losses, mask)``, both ``(batch, length - 1)``: fp32 NLL of label ``t + 1`` given tokens
        ``0..t`` (0 where the label is ignored), and a bool mask of the labelled positions.
    """
    import torch.nn.functional as F

    batch = {k: v.to(device) for k, v in batch.items()}
    with autocast():
        # use_cache=False: no KV cache is needed to score text, and transformers only reads packed
        # sequences from position ids when there is no cache
        if "position_ids" in batch:  # packed: attention kept inside each example by position ids
            logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        else:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    logits = logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    losses = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    return losses, labels != IGNORE_INDEX


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
