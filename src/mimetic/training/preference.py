"""Stage 3b — polish: a preference stage after supervised fine-tuning that aims at the voice itself.

Self-play fine-tuning (Chen et al. 2024, "Self-Play Fine-Tuning Converts Weak Language Models
to Strong Language Models", SPIN) with the DPO loss (Rafailov et al. 2023, "Direct Preference
Optimization: Your Language Model is Secretly a Reward Model"):

* **pairs** come from the *training* split only: the prompt is the opening of one of the
  writer's training passages (``prompt_tokens``), *chosen* is the writer's real continuation
  (the next ``continuation_tokens``), *rejected* is the fine-tuned voice's own sample from that
  opening (``[generate]`` sampling, seeded, ``continuation_tokens`` new tokens). They are
  cached in ``runs/<id>/pairs.jsonl`` as they are made, so a resume never makes them again;
* **the reference** π_ref is the fine-tuned (SFT) adapter, frozen. Its log-probabilities of
  every chosen and rejected continuation are computed once, without gradients, right after
  the pair is sampled, and stored with the pair: they never change, so no second model is
  needed;
* **the policy** starts from the SFT adapter (LoRA dropout off, so at step 0 it *is* the
  reference and the loss is log 2) and is trained with :func:`mimetic.training.loop.fit`;
* **the loss** per pair: ``-log σ(β[(log π(y_w|x) - log π_ref(y_w|x)) - (log π(y_l|x) - log π_ref(y_l|x))])``
  where a sequence's log-probability is the sum of its continuation tokens' log-probabilities
  (the prompt masked), from :func:`mimetic.models.nll.token_losses` (negated): one NLL function;
* **the score** is the held-out NLL, as in supervised training (lower is better): early
  stopping and keeping the best adapter work unchanged. Each evaluation also logs DPO's reward
  accuracy and margin on the training pairs.

The new run (``runs/<id>``) has an ``adapter`` that ``write``, ``evaluate`` and ``export`` use
by run id, a ``summary.json`` (:class:`mimetic.core.records.RunSummary`) and ``polish.json`` (the
parent run, the ``[polish]`` settings and, when finished, the figures before and after).
"""

from __future__ import annotations

import json
import math
import random
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from mimetic.core.config import PolishConfig, VoiceConfig, default_learning_rate, replace
from mimetic.core.events import Artifact, Finished, Metric, MetricsFile, OnEvent, Progress, Started, Warning, fan_out, ignore
from mimetic.core.records import RunSummary
from mimetic.core.workspace import Workspace, atomic_write_text, writes_voice
from mimetic.errors import MimeticError, TrainingInterrupted
from mimetic.models.nll import IGNORE_INDEX, collate, nll_sums, token_losses
from mimetic.models.sampling import SamplingParams
from mimetic.training.loop import Run, RunState, RuntimeOptions
from mimetic.training.session import (Compute, Session, check_data_for, check_version, epoch_batches, pad_id, padding_share,
                                      ready_to_write, record_version, resume_run, seed_all, stop_requested)

PAIRS_FILE = "pairs.jsonl"
POLISH_FILE = "polish.json"
POLISH_VERSION = 1
MARGIN_PAIRS = 32  # training pairs whose DPO reward margin and accuracy each evaluation logs


@dataclass
class PolishResult:
    """Outcome of a polish run. NLL values are nats per token on the held-out split.

    Attributes:
        nll_before: held-out NLL of the fine-tuned voice (the parent run's adapter, step 0).
        nll_after: held-out NLL at the last evaluation; ``best_nll``/``best_step``: the best
            one, whose adapter is kept in ``runs/<id>/adapter``.
        margin_before, margin_after: mean DPO reward margin
            ``β[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))]`` on the first
            training pairs (0 at step 0), at the first and the last evaluation.
        accuracy_before, accuracy_after: share of those pairs with a positive margin.
    """

    run_id: str
    run_dir: Path
    parent_run_id: str
    pairs: int
    nll_before: float
    nll_after: float
    best_nll: float
    best_step: int
    final_step: int
    stopped_because: str
    margin_before: float
    margin_after: float
    accuracy_before: float
    accuracy_after: float
    learning_rate: float
    beta: float
    elapsed_s: float


# ------------------------------------------------------------------------------------ the loss


def dpo_loss(policy_chosen: Any, policy_rejected: Any, ref_chosen: Any, ref_rejected: Any, beta: float) -> Any:
    """DPO's loss of every pair (Rafailov et al. 2023, eq. 7), a tensor of shape ``(pairs,)``:
    ``-log σ(β[(π_w − ref_w) − (π_l − ref_l)])`` from sequence log-probabilities (nats).
    When the policy equals the reference it is ``log 2`` for every pair."""
    import torch.nn.functional as F

    return -F.logsigmoid(beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)))


def kto_loss(policy: Any, reference: Any, desirable: Any, beta: float) -> Any:
    """KTO's loss of every marked text (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect
    Theoretic Optimization", eq. 8, λ_D = λ_U = 1), shape ``(texts,)``: with the reward
    ``r = β(log π(y|x) − log π_ref(y|x))``, ``1 − σ(r)`` for a text the writer kept and ``σ(r)``
    for one discarded. The reference point z₀ is 0 rather than estimated from mismatched pairs in
    the batch (TRL's ``KTOTrainer`` with ``loss_type="apo_zero_unpaired"``, D'Oosterlinck et al.
    2024): a writer's few dozen marks make batches too small for that estimate. At step 0
    (policy = reference) it is 0.5 for every text.

    Args:
        policy, reference: summed log-probabilities of each text given its prompt, nats, ``(n,)``.
        desirable: ``(n,)`` booleans, ``True`` for a kept text.
    """
    import torch

    reward = beta * (policy - reference)
    return torch.where(desirable, 1 - torch.sigmoid(reward), torch.sigmoid(reward))


def completion_logps(model: Any, items: list[dict[str, Any]], pad_id: int, device: str, autocast: Callable[[], Any]) -> Any:
    """Summed log-probabilities (nats) of each item's ``completion`` after its ``prompt``, ``(n,)``
    (the prompt masked; :func:`mimetic.models.nll.token_losses` negated)."""
    rows = [_continuation_row(i["prompt"], i["completion"]) for i in items]
    losses, _ = token_losses(model, collate(rows, pad_id), device, autocast)
    return -losses.sum(dim=1)


def feedback_loss(model: Any, rows: list[dict[str, Any]], beta: float, pad_id: int, device: str,
                  autocast: Callable[[], Any]) -> Any:
    """The summed loss of a batch of feedback rows: DPO for a pick among drafts (``kind`` ``pair``),
    KTO for a kept or discarded text (``kind`` ``single``), each with its stored reference
    log-probabilities."""
    import torch

    pairs = [r for r in rows if r.get("kind", "pair") == "pair"]
    singles = [r for r in rows if r.get("kind") == "single"]
    total = None
    if pairs:
        pc, pr = sequence_logps(model, pairs, pad_id, device, autocast)
        rc = torch.tensor([p["ref_chosen"] for p in pairs], device=pc.device)
        rr = torch.tensor([p["ref_rejected"] for p in pairs], device=pc.device)
        total = dpo_loss(pc, pr, rc, rr, beta).sum()
    if singles:
        lp = completion_logps(model, singles, pad_id, device, autocast)
        ref = torch.tensor([s["ref"] for s in singles], device=lp.device)
        good = torch.tensor([bool(s["desirable"]) for s in singles], device=lp.device)
        part = kto_loss(lp, ref, good, beta).sum()
        total = part if total is None else total + part
    return total


def _continuation_row(prompt: list[int], continuation: list[int]) -> dict[str, Any]:
    """A scored row: ``prompt`` then ``continuation``, labelled on the continuation only."""
    prompt, continuation = list(prompt), list(continuation)
    return {"input_ids": prompt + continuation, "labels": [IGNORE_INDEX] * len(prompt) + continuation}


def sequence_rows(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``2n`` scored rows of ``n`` pairs: every chosen, then every rejected continuation,
    each after its prompt, labelled on the continuation only (the prompt is masked)."""
    return [_continuation_row(p["prompt"], p[side]) for side in ("chosen", "rejected") for p in pairs]


def sequence_logps(model: Any, pairs: list[dict[str, Any]], pad_id: int, device: str, autocast: Callable[[], Any]) -> tuple[Any, Any]:
    """Summed log-probabilities (nats) of the chosen and of the rejected continuations of
    ``pairs`` given their prompts: two tensors of shape ``(n,)``, with gradient when enabled.
    The negated :func:`mimetic.models.nll.token_losses`, summed over the continuation's tokens."""
    losses, _ = token_losses(model, collate(sequence_rows(pairs), pad_id), device, autocast)
    logps = -losses.sum(dim=1)
    return logps[: len(pairs)], logps[len(pairs) :]


def _margins(model: Any, pairs: list[dict[str, Any]], beta: float, pad_id: int, device: str, autocast: Any,
             batch_size: int) -> tuple[float, float, float]:
    """Mean DPO reward margin, reward accuracy and DPO loss of ``model`` on ``pairs`` (no
    gradients, eval mode)."""
    import torch

    was = model.training
    model.eval()
    margins, losses = [], []
    with torch.no_grad():
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i : i + batch_size]
            pc, pr = sequence_logps(model, chunk, pad_id, device, autocast)
            rc = torch.tensor([p["ref_chosen"] for p in chunk], device=pc.device)
            rr = torch.tensor([p["ref_rejected"] for p in chunk], device=pc.device)
            margins += (beta * ((pc - rc) - (pr - rr))).float().cpu().tolist()
            losses += dpo_loss(pc, pr, rc, rr, beta).float().cpu().tolist()
    model.train(was)
    n = max(1, len(margins))
    return sum(margins) / n, sum(m > 0 for m in margins) / n, sum(losses) / n


def _preference_loss(model: Any, rows: list[dict[str, Any]], beta: float, pad_id: int, device: str, autocast: Any,
                     batch_size: int) -> float:
    """Mean :func:`feedback_loss` of ``model`` over all ``rows`` (no gradients, eval mode): how well
    the voice fits the writer's marks (DPO's log 2 and KTO's 0.5 at step 0; lower is better)."""
    import torch

    was = model.training
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            total += float(feedback_loss(model, rows[i : i + batch_size], beta, pad_id, device, autocast))
    model.train(was)
    return total / max(1, len(rows))


# ----------------------------------------------------------------------------------- the pairs


def select_openings(train_rows: Any, config: PolishConfig) -> list[dict[str, Any]]:
    """The prompts and chosen continuations: up to ``config.pairs`` training passages (seeded
    choice) long enough for ``prompt_tokens`` + ``continuation_tokens`` labelled tokens. The
    prompt is everything before the passage's labelled text (a chat template) plus its first
    ``prompt_tokens`` labelled tokens; chosen is the next ``continuation_tokens``."""
    need = config.prompt_tokens + config.continuation_tokens
    eligible = []
    for i, r in enumerate(train_rows):
        labels = r["labels"]
        start = next((k for k, x in enumerate(labels) if x != IGNORE_INDEX), None)
        if start is not None and len(r["input_ids"]) - start >= need:
            eligible.append((i, start))
    rng = random.Random(config.seed)
    rng.shuffle(eligible)
    out = []
    for i, start in eligible[: config.pairs]:
        r = train_rows[i]
        ids = list(r["input_ids"])
        cut = start + config.prompt_tokens
        out.append({"doc_id": r.get("doc_id"), "row": i, "prompt": ids[:cut], "chosen": ids[cut : cut + config.continuation_tokens]})
    return out


def _sample(model: Any, prompts: list[list[int]], params: SamplingParams, seed: int, pad_id: int, eos_id: int | None,
            device: str, autocast: Callable[[], Any]) -> list[list[int]]:
    """One sampled continuation of every prompt (left-padded into one batch), cut after the
    first end-of-text token."""
    import torch

    n = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), n), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, n - len(p) :] = torch.tensor(p)
        mask[i, n - len(p) :] = 1
    torch.manual_seed(seed)
    with torch.no_grad(), autocast():
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), pad_token_id=pad_id,
                             **params.transformers_kwargs())
    samples = []
    for row in out[:, n:].tolist():
        if eos_id is not None and eos_id in row:
            row = row[: row.index(eos_id) + 1]
        samples.append(row)
    return samples


def read_pairs(path: Path) -> list[dict[str, Any]]:
    """The pairs cached in ``pairs.jsonl`` (a damaged last line, from an interrupted write, is dropped)."""
    if not path.exists():
        return []
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            pairs.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return pairs


def make_pairs(model: Any, openings: list[dict[str, Any]], path: Path, params: SamplingParams, config: PolishConfig,
               tokenizer: Any, device: str, autocast: Callable[[], Any], *, on_event: OnEvent = ignore,
               should_stop: Callable[[], bool] | None = None,
               sampler: Callable[[list[list[int]], SamplingParams, int], list[list[int]]] | None = None) -> list[dict[str, Any]]:
    """Sample the rejected continuations and the reference log-probabilities for ``openings``,
    in batches of ``generate_batch_size``, appending each finished batch to ``path``; the pairs
    already in ``path`` are kept (a resume goes on where it stopped). Batch ``b`` is sampled
    with seed ``config.seed * 1000 + b``, so the pairs do not depend on where a session stopped.
    ``sampler(prompts, params, seed)`` samples them (default: ``model.generate``;
    :func:`_self_play_pairs` passes llama.cpp's parallel decoding of the same voice, several
    times faster on a CPU); each continuation ends with the end-of-text token when it stopped.

    Raises:
        TrainingInterrupted: ``should_stop()`` said so between batches (the pairs so far are kept).
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    pairs = read_pairs(path)
    bs = config.generate_batch_size
    done = len(pairs) - len(pairs) % bs  # whole batches only: a batch is sampled together
    pairs = pairs[:done]
    atomic_write_text(path, "".join(json.dumps(p) + "\n" for p in pairs))
    on_event(Started("polish", f"sampling the voice's own continuations of {len(openings)} openings", total=len(openings), unit="pairs"))
    on_event(Progress("polish", done, len(openings), "pairs"))
    t0, first = time.perf_counter(), done
    was = model.training
    model.eval()
    for b in range(done // bs, math.ceil(len(openings) / bs)):
        if should_stop and should_stop():
            model.train(was)
            raise TrainingInterrupted(f"Stopped while making preference pairs ({len(pairs)} of {len(openings)} kept).", "")
        batch = [dict(o) for o in openings[b * bs : (b + 1) * bs]]
        prompts = [o["prompt"] for o in batch]
        rejected = (sampler(prompts, params, config.seed * 1000 + b) if sampler else
                    _sample(model, prompts, params, config.seed * 1000 + b, pad_id, tokenizer.eos_token_id, device, autocast))
        for o, r in zip(batch, rejected):
            o["rejected"] = r
        import torch

        with torch.no_grad():  # the reference's log-probabilities: computed once, never again
            rc, rr = sequence_logps(model, batch, pad_id, device, autocast)
        for o, c, r in zip(batch, rc.float().cpu().tolist(), rr.float().cpu().tolist()):
            o["ref_chosen"], o["ref_rejected"] = c, r
        with path.open("a", encoding="utf-8") as f:
            f.write("".join(json.dumps(o) + "\n" for o in batch))
        pairs += batch
        left = (len(openings) - len(pairs)) * (time.perf_counter() - t0) / max(1, len(pairs) - first)
        on_event(Progress("polish", len(pairs), len(openings), "pairs", eta_s=left))
    model.train(was)
    return pairs


def feedback_rows(model: Any, feedback: dict[str, list[dict[str, Any]]], path: Path, pad_id: int, device: str,
                  autocast: Callable[[], Any], batch_size: int = 8) -> list[dict[str, Any]]:
    """The training rows of a feedback run, with the reference's log-probabilities (``model`` is
    the policy at step 0, which is the reference), written to ``path`` in one atomic write.

    Args:
        feedback: ``{"pairs": [{prompt, chosen, rejected}], "singles": [{prompt, completion,
            desirable}]}`` of token ids, as :func:`mimetic.voice.generate.feedback_examples` makes them.
    """
    import torch

    was = model.training
    model.eval()
    with torch.no_grad():
        pairs = [dict(p, kind="pair") for p in feedback.get("pairs", [])]
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i : i + batch_size]
            rc, rr = sequence_logps(model, chunk, pad_id, device, autocast)
            for p, c, r in zip(chunk, rc.float().cpu().tolist(), rr.float().cpu().tolist()):
                p["ref_chosen"], p["ref_rejected"] = c, r
        singles = [dict(s, kind="single") for s in feedback.get("singles", [])]
        for i in range(0, len(singles), batch_size):
            chunk = singles[i : i + batch_size]
            for s, r in zip(chunk, completion_logps(model, chunk, pad_id, device, autocast).float().cpu().tolist()):
                s["ref"] = r
        rows = pairs + singles
    model.train(was)
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


# ----------------------------------------------------------------------------------- the stage


def _policy(adapter: Path, config: Any, device: str, precision: str) -> tuple[Any, list[Any]]:
    """The base model with the SFT adapter loaded as trainable (LoRA dropout off, so at step 0
    the policy is exactly the reference); returns ``(model, trainable params)`` in fp32."""
    from peft import LoraConfig, PeftModel

    from mimetic.models.attention import use_for_training
    from mimetic.models.loading import load_model, skip_lora_input_casts
    from mimetic.models.lora import fuse

    model = load_model(config.base_model, device, precision, config.load_in_4bit, config.base_weights)
    use_for_training(model, device, precision)  # generation (cache, left padding) falls back to SDPA by itself
    lora = LoraConfig.from_pretrained(str(adapter))
    lora.lora_dropout, lora.inference_mode = 0.0, False
    model = skip_lora_input_casts(PeftModel.from_pretrained(model, str(adapter), is_trainable=True, config=lora), precision)
    fuse(model)  # the training forward only: the reference's log-probabilities and sampling (eval mode) keep PEFT's
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    return model, [p for p in model.parameters() if p.requires_grad]


def _stage_config(parent: Any, config: PolishConfig, lr: float) -> Any:
    """The polish run's frozen ``[train]`` table: the parent's model and LoRA shape with the
    ``[polish]`` optimisation settings."""
    return replace(parent, learning_rate=lr, batch_size=config.batch_size, grad_accum=1, epochs=config.epochs,
                   max_steps=config.max_steps, eval_every=config.eval_every, seed=config.seed, lora_dropout=0.0,
                   packing=False, time_budget_min=None, compile=False)


def _self_play_pairs(workspace: Workspace, model: Any, config: PolishConfig, gen: Any, pairs_file: Path, run_: Run,
                     tokenizer: Any, dev: str, autocast: Any, emit: OnEvent, stop: Callable[[], bool],
                     resume_hint: str, where: str = "", parent: str | None = None) -> list[dict[str, Any]]:
    """Self-play pairs of the training split (of the version's selection ``where``): cached in
    ``pairs_file``, the missing ones made — sampled from the ``parent`` run in the engine
    ``[generate] engine`` picks (:func:`_llama_sampler`), the model in training otherwise."""
    from mimetic.corpus.prepare import load_split

    train_rows = load_split(workspace, "train", where)
    openings = select_openings(train_rows, config)
    if not openings:
        raise MimeticError(
            f"No training passage has {config.prompt_tokens + config.continuation_tokens} tokens for a preference pair.",
            "Lower polish.prompt_tokens / polish.continuation_tokens, or prepare longer examples (prepare.max_tokens).")
    if len(openings) < config.pairs:
        emit(Warning("polish", f"Only {len(openings)} training passages are long enough: {len(openings)} pairs, not {config.pairs}."))
    params_gen = SamplingParams.from_config(gen, max_new_tokens=config.continuation_tokens)
    cached = read_pairs(pairs_file)
    if len(cached) >= len(openings):
        pairs = cached[: len(openings)]
    else:
        if run_.resumed:
            raise MimeticError(f"Run {run_.id}'s {PAIRS_FILE} is incomplete.", "Start a new polish run: mimetic polish")
        try:
            pairs = make_pairs(model, openings, pairs_file, params_gen, config, tokenizer, dev, autocast, on_event=emit,
                               should_stop=stop, sampler=_llama_sampler(workspace, parent, gen, dev, tokenizer, emit))
        except TrainingInterrupted as e:
            run_.stop_file().unlink(missing_ok=True)
            raise TrainingInterrupted(e.message, resume_hint) from None
    return pairs


def _llama_sampler(workspace: Workspace, parent: str | None, gen: Any, device: str, tokenizer: Any,
                   emit: OnEvent) -> Callable[[list[list[int]], SamplingParams, int], list[list[int]]] | None:
    """The parent voice in llama.cpp (:func:`mimetic.models.engines.open_voice`), as a sampler
    for :func:`make_pairs`: prompt ``k`` of a batch drawn with seed ``seed * 1000003 + k``, the
    end-of-text token appended where a continuation stopped. ``None`` (sample with the model in
    training) on a GPU, when ``[generate] engine`` is ``transformers``, or when llama.cpp cannot
    run the voice."""
    if parent is None or device != "cpu" or getattr(gen, "engine", "auto") == "transformers":
        return None
    from mimetic.models.engines import open_voice

    try:
        voice = open_voice(workspace, parent, engine="auto", on_event=emit)
    except MimeticError:
        return None
    if voice.engine != "llama.cpp":  # transformers: the model in training samples as well, without a second copy
        return None
    eos = tokenizer.eos_token_id

    def sample(prompts: list[list[int]], params: SamplingParams, seed: int) -> list[list[int]]:
        outs = voice.generate_parallel(prompts, params, [seed * 1_000_003 + k for k in range(len(prompts))])
        return [o + [eos] if eos is not None and len(o) < params.max_new_tokens else o for o in outs]

    return sample


def _feedback_pairs(model: Any, feedback: dict[str, list[dict[str, Any]]], pairs_file: Path, run_: Run, pad_id: int,
                    dev: str, autocast: Any) -> list[dict[str, Any]]:
    """The feedback run's rows: read back on resume, else made with the reference's log-probabilities."""
    cached = read_pairs(pairs_file)
    if cached or run_.resumed:
        if not cached:
            raise MimeticError(f"Run {run_.id}'s {PAIRS_FILE} is missing.", "Start a new run: mimetic polish --from-feedback")
        return cached
    return feedback_rows(model, feedback, pairs_file, pad_id, dev, autocast)


@writes_voice("trained")
def polish(
    workspace: Workspace,
    run: str | None = None,
    config: PolishConfig | None = None,
    *,
    resume: str | bool | None = None,
    device: str | None = None,
    on_event: OnEvent = ignore,
    should_stop: Callable[[Run], bool] | None = None,
    feedback: dict[str, list[dict[str, Any]]] | None = None,
    version: str = "",
    publish: bool | None = None,
) -> PolishResult:
    """Polish the voice of ``run`` (default: the latest run) into a new run: with self-play DPO,
    or with the writer's own marks (``feedback``).

    The training session (device, precision, optimizer, schedule, checkpoints, resume, the stop
    file) is :class:`mimetic.training.session.Session`'s, as supervised training's; what is the
    preference stage's own is here: the pairs, the loss (:func:`feedback_loss`) and the
    evaluation (:class:`_PolishScore`).

    Args:
        workspace: a prepared workspace with a trained run.
        run: the fine-tuned run to start from (its adapter is the policy's start and the
            frozen reference). Ignored on resume.
        config: the ``[polish]`` settings (default: the workspace's). Ignored on resume.
        resume: ``True`` for the latest run, or a polish run's id, to continue it: its pairs
            are read from ``pairs.jsonl`` (the missing ones made), training goes on from its
            checkpoint.
        device: ``auto``, ``cpu``, ``cuda``, ``mps`` (default: the run's ``[train]`` device).
        on_event: the stage's :mod:`mimetic.core.events` (pair progress, metrics, training progress);
            ``metrics.jsonl`` is written whatever it is.
        should_stop: called between pair batches and after every step; ``True`` checkpoints
            and raises :class:`TrainingInterrupted`. A file ``runs/<id>/stop`` does the same.
        feedback: train on the writer's marks instead of self-play pairs: DPO on picks among
            drafts, KTO on kept and discarded texts (:func:`feedback_loss`), token ids as
            :func:`mimetic.voice.generate.feedback_examples` makes them. Ignored on resume (the run's
            rows are in its ``pairs.jsonl``).
        version: the new version's name; default ``<parent's name>+feedback`` (or ``+polish``)
            when the parent is a named version and that name is free. It trains and is measured
            on the parent's selection of the corpus.
        publish: publish the new run when it finishes; ``None``: when it is unnamed and its
            parent is the published version (the voice's main line goes on).

    Returns:
        :class:`PolishResult` (held-out NLL and DPO margins before and after).

    Raises:
        MimeticError: no data, no such run, a run without adapter, too few long passages.
        TrainingInterrupted: ``should_stop`` or the stop file; the message says how to resume.
    """
    from mimetic.models.distributed import launched_processes
    from mimetic.models.loading import load_tokenizer

    if launched_processes() > 1:
        raise MimeticError("mimetic polish runs in one process.", "Run it without accelerate or --processes.")
    if not resume and feedback is not None and not feedback.get("pairs") and not feedback.get("singles"):
        raise MimeticError("There are no marks to learn from yet.",
                           "Mark what the voice writes: mimetic rate ID keep|discard, or mimetic rate ID best --over ID,ID")
    workspace.data_meta()
    o = _reopen(workspace, resume, device) if resume else _open(workspace, run, config, device, feedback, version, publish)
    config, feedback = o.config, o.feedback
    check_data_for(workspace, o.train.base_model)
    compute = Compute.pick(o.train)
    dev, autocast = compute.device, compute.autocast
    seed_all(config.seed)
    tokenizer = load_tokenizer(o.train.base_model)
    pad = pad_id(tokenizer)
    model, params = _policy(workspace.runs_dir / o.parent_id / "adapter", o.train, dev, compute.precision)
    r = o.run or _start(workspace, o, config.learning_rate or default_learning_rate(model.config.hidden_size) / 40)
    emit = fan_out(MetricsFile(r.dir / "metrics.jsonl"), on_event)
    resume_hint = f"Resume with: mimetic polish --resume {r.id} --workspace {workspace.root}"
    pairs_file = r.dir / PAIRS_FILE
    if feedback is not None:
        pairs = _feedback_pairs(model, feedback, pairs_file, r, pad, dev, autocast)
    else:
        pairs = _self_play_pairs(workspace, model, config, o.generate, pairs_file, r, tokenizer, dev, autocast, emit,
                                 lambda: stop_requested(r, should_stop), resume_hint, o.train.where, o.parent_id)
    for p in pairs:  # what fit counts as the step's tokens: every sequence that is run
        p["input_ids"] = (p["prompt"] + p["completion"] if p.get("kind") == "single"
                          else p["prompt"] + p["chosen"] + p["prompt"] + p["rejected"])
    held = _held_rows(workspace, config, o.train.where)
    tc = r.config
    steps_per_epoch = max(1, math.ceil(len(pairs) / tc.batch_size))
    r.plan_schedule(steps_per_epoch, config.epochs, config.max_steps, tc.warmup_ratio)
    ckpt = r.checkpoint or {}
    score = _PolishScore(model, pairs, held, config, feedback is not None, pad, compute, tc.eval_batch_size, emit,
                         dict(ckpt.get("nll_at", {})))
    session = Session(r, compute, model, params, learning_rate=tc.learning_rate, stage="polish", emit=emit,
                      should_stop=should_stop, extra_state=score.checkpoint_entries)
    if ckpt.get("margin_before") is not None:
        score.seen["margin"], score.seen["accuracy"] = ckpt["margin_before"], ckpt["accuracy_before"]
    lengths = [len(p["input_ids"]) for p in pairs]

    def batches(micro: int) -> list[dict[str, Any]]:
        epoch, index = divmod(micro, steps_per_epoch)
        return [pairs[i] for i in epoch_batches(lengths, tc, epoch)[index]]

    def loss_fn(m: Any, rows: list[dict[str, Any]]) -> tuple[Any, int]:
        return feedback_loss(m, rows, config.beta, pad, dev, autocast), len(rows)

    stopped = session.fit(loss_fn, batches, score, count=len, resume_hint=resume_hint,
                          score_name="held_out_nll" if feedback is None else "preference_loss")
    return _finish(workspace, session, o, score, pairs, stopped)


@dataclass
class _Opened:
    """A polish run to train: a new one (``run`` ``None``) or one resumed, with its settings."""

    config: PolishConfig
    parent_id: str
    train: Any  # the run's [train] table (TrainConfig)
    generate: Any  # the [generate] settings its pairs are sampled with
    feedback: dict[str, list[dict[str, Any]]] | None
    run: Run | None
    publish: bool | None


def _reopen(workspace: Workspace, resume: str | bool, device: str | None) -> _Opened:
    """A polish run to resume, from its folder: its ``polish.json``, ``config.toml`` and, when it
    trained, its checkpoint (stopped while making pairs, it starts training from step 0).

    Raises:
        MimeticError: no such run, or it is not a polish run.
    """
    run_dir = workspace.run_dir(None if resume is True else str(resume), finished=False)
    info_file = run_dir / POLISH_FILE
    if not info_file.exists():
        raise MimeticError(f"Run {run_dir.name} is not a polish run.", f"Resume it with: mimetic train --resume {run_dir.name}")
    info = json.loads(info_file.read_text())
    vc = VoiceConfig.load(run_dir / "config.toml")
    if (run_dir / "checkpoint" / "state.pt").exists():
        r = resume_run(workspace, run_dir.name, device=device)
    else:  # stopped while making the pairs: nothing trained yet
        r = Run(workspace, run_dir.name, vc.train, RuntimeOptions.from_config(vc.train, device=device), RunState())
    return _Opened(PolishConfig(**info["config"]), info["parent_run_id"], r.config, vc.generate,
                   {} if info.get("source") == "feedback" else None, r, None)


def _open(workspace: Workspace, run: str | None, config: PolishConfig | None, device: str | None,
          feedback: dict[str, list[dict[str, Any]]] | None, version: str, publish: bool | None) -> _Opened:
    """A new polish run of ``run``'s adapter: its ``[train]`` table, version name and publish rule.

    Raises:
        MimeticError: no such run, a run without adapter, an unusable or taken version name.
    """
    config = config or workspace.load_config().polish
    parent_dir = workspace.run_dir(run)
    parent_id = parent_dir.name
    if not (parent_dir / "adapter" / "adapter_config.json").exists():
        raise MimeticError(f"Run {parent_id} has no adapter yet.", f"Train first: mimetic train --workspace {workspace.root}")
    parent_vc = VoiceConfig.load(parent_dir / "config.toml")
    tc = _stage_config(replace(parent_vc.train, device=device), config, 1.0)  # the learning rate is set by _start
    parent_names = workspace.names_of(parent_id)
    if not version and parent_names:
        candidate = f"{parent_names[0]}+{'feedback' if feedback is not None else 'polish'}"
        version = candidate if candidate not in workspace.version_names() else ""
    tc = replace(tc, version=version)
    check_version(workspace, replace(tc, where=""))  # the parent's selection was checked when it trained
    if publish is None:
        publish = not version and workspace.published_run() == parent_id
    return _Opened(config, parent_id, tc, workspace.load_config().generate, feedback, None, publish)


def _start(workspace: Workspace, o: _Opened, learning_rate: float) -> Run:
    """Start the new polish run: its ``config.toml`` (with ``[polish]``), ``polish.json``, and the
    ``[polish]`` settings saved as the voice's."""
    tc = replace(o.train, learning_rate=learning_rate)
    r = Run.start(workspace, tc, RuntimeOptions.from_config(tc))
    vc = workspace.load_config()
    vc.polish = o.config
    workspace.save_config(vc)  # like every stage: the settings it ran with are the workspace's from now on
    atomic_write_text(r.dir / "config.toml", VoiceConfig(vc.ingest, vc.prepare, r.config, o.generate, vc.evaluate, vc.export,
                                                         o.config).dumps())
    atomic_write_text(r.dir / POLISH_FILE, json.dumps({"version": POLISH_VERSION, "parent_run_id": o.parent_id,
                                                       "source": "feedback" if o.feedback is not None else "self-play",
                                                       "config": asdict(o.config)}, indent=2))
    return r


def _held_rows(workspace: Workspace, config: PolishConfig, where: str) -> list[dict[str, Any]]:
    """The held-out examples each evaluation scores: ``held_out_examples`` of them (seeded), or all."""
    from mimetic.corpus.prepare import load_split

    held = list(load_split(workspace, "held_out", where))
    if config.held_out_examples and len(held) > config.held_out_examples:
        held = random.Random(config.seed).sample(held, config.held_out_examples)
    return [{"input_ids": h["input_ids"], "labels": h["labels"]} for h in held]


class _PolishScore:
    """A polish run's evaluation (``score(step)``, lower is better): the held-out NLL of a
    self-play run; for a feedback run, the preference loss on the writer's marks as long as the
    held-out NLL stays within ``max_nll_rise`` of the parent's (step 0), ``inf`` past it. Each
    evaluation also logs DPO's reward margin and accuracy on the first training pairs.

    Attributes:
        seen: the first and latest margin and accuracy (``margin``, ``accuracy``,
            ``margin_after``, ``accuracy_after``). ``nll_at``: a feedback run's held-out NLL at
            each evaluated step.
    """

    def __init__(self, model: Any, pairs: list[dict[str, Any]], held: list[dict[str, Any]], config: PolishConfig,
                 from_feedback: bool, pad: int, compute: Compute, batch_size: int, emit: OnEvent, nll_at: dict[int, float]):
        self.model, self.pairs, self.held, self.config = model, pairs, held, config
        self.from_feedback, self.pad, self.compute, self.batch_size, self.emit = from_feedback, pad, compute, batch_size, emit
        self.pair_rows = [p for p in pairs if p.get("kind", "pair") == "pair"]
        self.seen: dict[str, float] = {}
        self.nll_at = nll_at

    def checkpoint_entries(self) -> dict[str, Any]:
        """What a checkpoint keeps of the scores: the first margin and accuracy, the NLL per step."""
        return {"margin_before": self.seen.get("margin"), "accuracy_before": self.seen.get("accuracy"),
                "nll_at": dict(self.nll_at)}

    def __call__(self, step: int) -> float:
        model, config, dev, autocast = self.model, self.config, self.compute.device, self.compute.autocast
        margin, acc, loss = (_margins(model, self.pair_rows[:MARGIN_PAIRS], config.beta, self.pad, dev, autocast, self.batch_size)
                             if self.pair_rows else (0.0, 0.0, 0.0))  # marks with no picks: KTO only
        seen = self.seen
        seen.setdefault("margin", margin)
        seen.setdefault("accuracy", acc)
        seen["margin_after"], seen["accuracy_after"] = margin, acc
        self.emit(Metric("polish", step, {"reward_margin": margin, "reward_accuracy": acc, "dpo_loss": loss}))
        total, n = nll_sums(model, self.held, self.pad, dev, autocast, self.batch_size)
        nll = total / max(1, n)
        if not self.from_feedback:
            return nll
        # A feedback run is scored by how well it fits the marks, as long as the held-out NLL
        # stays within max_nll_rise of the parent's (step 0): past that it is not kept.
        nll_at = self.nll_at
        nll_at[step] = nll
        pref = _preference_loss(model, self.pairs, config.beta, self.pad, dev, autocast, self.batch_size)
        self.emit(Metric("polish", step, {"held_out_nll": nll, "held_out_ppl": math.exp(min(nll, 700))}))
        if nll > nll_at[min(nll_at)] * (1 + config.max_nll_rise):
            if not seen.get("warned"):
                seen["warned"] = 1.0
                self.emit(Warning("polish", f"Held-out NLL rose {100 * (nll / nll_at[min(nll_at)] - 1):.1f}% at step {step}: the "
                                            "voice is learning your marks more than your writing, so this adapter is not kept.",
                                  "Mark more texts, or allow more with polish.max_nll_rise (now "
                                  f"{100 * config.max_nll_rise:g}%)."))
            return math.inf
        return pref


def _finish(workspace: Workspace, session: Session, o: _Opened, score: _PolishScore, pairs: list[dict[str, Any]],
            stopped: str) -> PolishResult:
    """The end of a polish run: :class:`PolishResult`, ``polish.json`` with the figures,
    ``summary.json`` and the version (published by the rule of :func:`polish`)."""
    run, emit, compute = session.run, session.emit, session.compute
    st, tc, config = run.state, run.config, o.config
    nll_before, nll_after, best_nll = st.base_nll, st.last_nll, st.best_nll
    if o.feedback is not None:  # the scores were preference losses: report the held-out NLLs
        nll_at = score.nll_at
        nll_before, nll_after, best_nll = nll_at[min(nll_at)], nll_at[max(nll_at)], nll_at[st.best_step]
    seen, lr = score.seen, tc.learning_rate
    result = PolishResult(
        run_id=run.id, run_dir=run.dir, parent_run_id=o.parent_id, pairs=len(pairs), nll_before=nll_before,
        nll_after=nll_after, best_nll=best_nll, best_step=st.best_step, final_step=st.step, stopped_because=stopped,
        margin_before=seen.get("margin", 0.0), margin_after=seen.get("margin_after", 0.0),
        accuracy_before=seen.get("accuracy", 0.0), accuracy_after=seen.get("accuracy_after", 0.0),
        learning_rate=lr, beta=config.beta, elapsed_s=st.elapsed_s)
    info = {"version": POLISH_VERSION, "parent_run_id": o.parent_id, "config": asdict(config),
            "source": "feedback" if o.feedback is not None else "self-play",
            "result": {k: v for k, v in asdict(result).items() if k not in ("run_id", "run_dir", "parent_run_id")}}
    atomic_write_text(run.dir / POLISH_FILE, json.dumps(info, indent=2))
    lengths = [len(p["input_ids"]) for p in pairs]
    pair_batches = epoch_batches(lengths, tc, 0)
    if o.feedback is not None:  # rows of one or two sequences: their summed lengths
        seq_lengths = lengths
    else:
        seq_lengths = [len(p["prompt"]) + len(p["chosen"]) for p in pairs] + [len(p["prompt"]) + len(p["rejected"]) for p in pairs]
        pair_batches = [b + [i + len(pairs) for i in b] for b in pair_batches]
    RunSummary(
        run_id=run.id, run_dir=str(run.dir), base_nll=nll_before, best_nll=best_nll, best_step=st.best_step,
        final_step=st.step, stopped_because=stopped, tokens_per_s=st.tokens / max(1e-9, st.elapsed_s - st.eval_s),
        train_tokens=st.tokens, elapsed_s=st.elapsed_s, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        held_out_nll_drop=1.0 - best_nll / nll_before, base_ppl=math.exp(nll_before), best_ppl=math.exp(best_nll),
        learning_rate=lr, device=compute.device, precision=compute.precision, trainable_parameters=session.trainable,
        total_parameters=session.total_params, steps_per_epoch=st.steps_per_epoch,
        padding_share=padding_share(seq_lengths, pair_batches),
        planned_steps=st.total_steps, processes=1, global_batch_size=tc.batch_size,
    ).save(run.dir / "summary.json")
    emit(Artifact("polish", run.dir / "summary.json", "summary"))
    publish = o.publish
    if publish is None:  # resumed: the rule of a new run, from what was recorded
        publish = not tc.version and workspace.published_run() == o.parent_id
    record_version(workspace, run.id, tc.version, publish, emit, stage="polish")
    ready_to_write(run.dir, tc.base_model, emit, stage="polish")
    emit(Finished("polish", f"polished {o.parent_id} into {run.id}", {**asdict(result), "run_dir": str(run.dir)}))
    return result


__all__ = ["PolishResult", "dpo_loss", "kto_loss", "feedback_loss", "feedback_rows", "completion_logps", "make_pairs", "polish", "read_pairs", "select_openings", "sequence_logps", "sequence_rows"]
