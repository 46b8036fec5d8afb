"""Stage 5 — evaluate: does the voice sound like the writer, and is it quoting them?

``evaluate(workspace, run)`` measures a trained run against the base model and writes
``runs/<id>/evaluation/report.html`` (self-contained, plots embedded) and ``metrics.json``:

1. **Held-out NLL and perplexity**, base vs voice, token-weighted over the held-out split, with
   95% intervals from a bootstrap over held-out documents (Efron & Tibshirani 1993; documents,
   not tokens, are the independent units).
2. **Samples**: continuations of held-out passages by the base model and the voice, same
   prefixes, seeds and settings, next to what the writer actually wrote; plus free generations
   from the writer's own prompts when given.
3. **Stylometry** (:mod:`mimetic.text.stylometry`): Cosine and Burrows' Delta on the training
   text's most-frequent words, sample sets ↔ held-out text, with the writer's own spread
   (held-out ↔ training) as the floor; attribution of the voice's sample sets among the writer,
   reference authors and the base model; readable style profiles.
4. **Memorization** (:mod:`mimetic.text.memorization`): longest verbatim overlap of every sample with
   the training text, 8-/13-gram shares, flagged samples quoted with their source, and
   Carlini-style extraction from training prefixes.
5. **Identity leakage**: the corpus's proper names that the samples use, ranked, next to their
   counts in the corpus and in the base model's samples.
6. **Modes** (voices prepared with ``--format brief`` or ``mixed``): for each mode the voice
   learned, held-out briefs, openings or paraphrases given to the voice and to the base model
   alike (:func:`mode_samples`); per mode, the attribution of each one's 1,000-word sets, and
   *adherence* (:func:`mimetic.corpus.briefs.adherence`: the share of the brief's content words the
   output uses; for rewrite, of the draft's), next to the writer's own passage for the same
   request. A voice that writes *its* voice over the brief shows here as attribution up and
   adherence down. The samples of a brief or mixed voice are these (continuing raw text is not
   what it learned).
7. **What a reader sees** (:mod:`mimetic.evaluation.reader`): whether a classifier tells the
   voice's passages from the writer's own continuations of the same openings (cross-validated
   ROC AUC; the base model's and two halves of the writer's own held-out writing beside it),
   the words it makes up (per 1,000, against the writer's own rate), and its calibration (its
   NLL of its own samples against its NLL of the writer's continuations); a voice that is told
   apart or makes up words is flagged in the summary.

The report is rendered by :mod:`mimetic.evaluation.report` from Jinja2 templates.

The base model's and the voice's held-out NLL are read from what training measured (before its
first step, ``data/base_nll.json``; at its end, ``runs/<id>/held_out_nll.json``) once a batch of
each, measured again, agrees (:func:`held_out_nll`);
samples are drawn in the engine's own group size (llama.cpp: 32 at once).

Model work (NLL, sampling, extraction, calibration, the identity probe) is cached in ``evaluation/cache.json``, so re-running
with other reference authors only redoes the analysis, which takes seconds
(:func:`analyse`; see ``benchmarks/evaluate_speed.py``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mimetic.corpus.briefs import FORMAT_MODES, adherence, default_mode, request
from mimetic.core.config import EvaluateConfig, GenerateConfig, VoiceConfig
from mimetic.models.engines import Voice, open_voice, prompt_ids
from mimetic.errors import MimeticError
from mimetic.core.events import Artifact, OnEvent, Progress, ignore
from mimetic.text.identity import QUESTIONS, score_probe, voice_system_prompt
from mimetic.models.nll import IGNORE_INDEX, per_example_nll
from mimetic.models.loading import autocast, bos_ids
from mimetic.text.memorization import TrainingIndex, audit
from mimetic.models.sampling import SamplingParams
from mimetic.core.records import EvaluationMetrics
from mimetic.text.stylometry import (
    ZScorer,
    attribute,
    chunk_tokens,
    mean_delta,
    most_frequent_words,
    profile,
    proper_names,
    relative_frequencies,
    spread,
    words,
)
from mimetic.core.workspace import Workspace, atomic_write_json, atomic_write_text
from mimetic.evaluation.reader import calibration, measure as reader_measure
from mimetic.evaluation.report import render_report

Status = Callable[[str], None]


@dataclass
class Evaluation:
    """What :func:`evaluate` measured and where it wrote it."""

    metrics: dict[str, Any]
    report: Path
    metrics_path: Path

    def summary(self) -> list[str]:
        """The report's first screen as plain-language lines."""
        return headline(self.metrics)


# ----------------------------------------------------------------------------------------- NLL


def bootstrap_nll(
    base: np.ndarray, tuned: np.ndarray, counts: np.ndarray, groups: Sequence[str], resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Token-weighted NLL of base and voice with percentile-bootstrap 95% intervals.

    Args:
        base, tuned: summed NLL per held-out example (nats), shape ``(n,)``.
        counts: labelled tokens per example, shape ``(n,)``.
        groups: the document of each example; whole documents are resampled (paired: base and
            voice see the same resample), so correlated chunks of one document count once.
        resamples: number of bootstrap resamples.

    Returns:
        ``{"base": {"nll", "ppl", "ci"}, "voice": {...}, "drop": {"value", "ci"}, "tokens",
        "documents"}``; ``drop`` is the relative fall of NLL, ``1 - voice / base``.
    """
    keys = sorted(set(groups))
    gi = np.array([keys.index(g) for g in groups])
    b = np.bincount(gi, base, len(keys))
    t = np.bincount(gi, tuned, len(keys))
    c = np.bincount(gi, counts, len(keys))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(keys), size=(resamples, len(keys)))
    w = np.stack([np.bincount(d, minlength=len(keys)) for d in draws])
    bs, ts = (w @ b) / (w @ c), (w @ t) / (w @ c)

    def ci(x: np.ndarray) -> list[float]:
        return [float(np.percentile(x, 2.5)), float(np.percentile(x, 97.5))]

    nb, nt = float(b.sum() / c.sum()), float(t.sum() / c.sum())
    return {
        "base": {"nll": nb, "ppl": math.exp(nb), "ci": ci(bs)},
        "voice": {"nll": nt, "ppl": math.exp(nt), "ci": ci(ts)},
        "drop": {"value": 1 - nt / nb, "ci": ci(1 - ts / bs)},
        "tokens": int(c.sum()),
        "documents": len(keys),
        "resamples": resamples,
    }


# ------------------------------------------------------------------------------------ sampling


def _generate_batch(voice: Voice, prefixes: list[list[int]], params: SamplingParams, seed: int) -> list[str]:
    """Continue token prefixes with ``params`` in ``voice``'s engine (:meth:`mimetic.models.engines.Engine.complete`:
    one padded batch in transformers, decoded in parallel in llama.cpp); returns the decoded continuations."""
    return voice.complete(prefixes, params, seed)


def _continuation_prompts(rows: Any, tokenizer: Any, config: EvaluateConfig, n: int) -> list[dict[str, Any]]:
    """``n`` held-out passages (evenly spread) cut into a ``prefix_tokens`` prefix and the writer's
    real continuation."""
    need = config.prefix_tokens + 32
    bos = bos_ids(tokenizer)
    cands = []
    for i in range(len(rows)):
        ids = tokenizer(rows[i]["text"], add_special_tokens=False)["input_ids"]
        if len(ids) >= need:
            cands.append((rows[i]["doc_id"], ids))
    if not cands:
        raise MimeticError(
            f"No held-out passage is longer than {need} tokens, so there is nothing to continue.",
            "Use a smaller --prefix-tokens, or prepare with a larger --max-tokens.",
        )
    step = len(cands) / n
    picks = [cands[int(k * step) % len(cands)] for k in range(n)]
    out = []
    for doc, ids in picks:
        p = config.prefix_tokens
        out.append({
            "document": doc,
            "prefix_ids": bos + ids[:p],
            "prefix": tokenizer.decode(ids[:p]),
            "writer": tokenizer.decode(ids[p : p + config.new_tokens]),
        })
    return out


def generate_samples(voice: Any, rows: Any, config: EvaluateConfig, gc: GenerateConfig, status: Status,
                     base: bool = True) -> list[dict[str, Any]]:
    """Continuations of held-out passages by the base model and the voice, same seeds.

    First the passages that should hold ``config.sample_words`` words (at ~0.7 words per new
    token), all in one call in llama.cpp (:meth:`mimetic.models.engines.GGUFVoice.generate_parallel`
    keeps its slots full) or in groups of ``config.batch_size`` (transformers' padded batch), then more in groups of
    ``config.batch_size`` until each model has written ``config.sample_words`` words. Returns one
    dict per passage: ``document``, ``prefix``, ``writer`` (the real continuation), ``base``
    (``""`` when ``base`` is false: the voice only), ``voice``, ``seed``. The passages depend
    only on ``rows``, the tokenizer and ``config``: two voices of one base model continue the
    same openings (and, in one engine, draw with the same seeds).
    """
    per_sample = max(20, int(config.new_tokens * 0.7))  # ~0.75 words per token in English prose
    first = max(config.batch_size, math.ceil(config.sample_words / per_sample))
    first = math.ceil(first / config.batch_size) * config.batch_size
    prompts = _continuation_prompts(rows, voice.tokenizer, config, first * 2)
    params = SamplingParams.from_config(gc, max_new_tokens=config.new_tokens)
    # llama.cpp takes them all at once (its slots refilled as passages end); transformers in padded batches
    size = first if voice.engine == "llama.cpp" else max(config.batch_size, voice.parallel)
    groups = math.ceil(first / size)
    bounds = [round(k * first / groups) for k in range(groups + 1)]  # the first passages in near-equal groups
    bounds += list(range(first + config.batch_size, len(prompts) + config.batch_size, config.batch_size))
    samples: list[dict[str, Any]] = []
    b = 0
    while True:
        batch = prompts[bounds[b] : bounds[b + 1]] if b + 1 < len(bounds) else []
        if not batch:
            break
        seed = config.seed + b
        prefixes = [p["prefix_ids"] for p in batch]
        if base:
            with voice.base():
                base_texts = _generate_batch(voice, prefixes, params, seed)
        else:
            base_texts = [""] * len(batch)
        tuned = _generate_batch(voice, prefixes, params, seed)
        for p, x, y in zip(batch, base_texts, tuned):
            samples.append({"document": p["document"], "prefix": p["prefix"], "writer": p["writer"], "base": x, "voice": y, "seed": seed})
        b += 1
        nb = sum(len(words(s["base"])) for s in samples) if base else config.sample_words
        nv = sum(len(words(s["voice"])) for s in samples)
        status(f"samples: {len(samples)} passages, {nv:,} words from the voice"
               + (f", {nb:,} from the base model" if base else ""))
        if min(nb, nv) >= config.sample_words:
            break
    return samples


def mode_samples(voice: Any, workspace: Workspace, modes: Sequence[str], config: EvaluateConfig, gc: GenerateConfig,
                 system_prompt: str, status: Status) -> dict[str, list[dict[str, Any]]]:
    """The voice and the base model asked in each of ``modes`` on held-out requests
    (:func:`mimetic.voice.generate.mode_prompts`: briefs, openings, paraphrases), same requests, seeds
    and settings. Per mode, ``max(config.mode_prompts, enough for sample_words / len(modes))``
    requests (as many as the held-out split has).

    Returns:
        ``{mode: [{"document", "prefix" (the request as the writer would type it), "writer" (the
        writer's passage for it), "base", "voice", "seed"}]}``.
    """
    from mimetic.voice.generate import mode_prompts, rewrites_from_notes

    per_sample = max(20, int(config.new_tokens * 0.7))
    n = max(config.mode_prompts, math.ceil(config.sample_words / per_sample / max(1, len(modes))))
    params = SamplingParams.from_config(gc, max_new_tokens=config.new_tokens)
    from_notes = rewrites_from_notes(workspace)
    out: dict[str, list[dict[str, Any]]] = {}
    for mode in modes:
        items = mode_prompts(workspace, mode, n)
        rows: list[dict[str, Any]] = []
        for b in range(0, len(items), config.batch_size):
            batch = items[b : b + config.batch_size]
            asked = [request(voice.format, mode, x["prompt"], from_notes) for x in batch]  # held-out notes stay as they are
            ids = [prompt_ids(voice.tokenizer, voice.format, a, system_prompt) for a in asked]
            seed = config.seed + b // config.batch_size
            with voice.base():
                base = _generate_batch(voice, ids, params, seed)
            tuned = _generate_batch(voice, ids, params, seed)
            rows += [{"document": x["doc_id"], "prefix": x["prompt"], "writer": x["passage"], "base": y, "voice": v, "seed": seed}
                     for x, y, v in zip(batch, base, tuned)]
            status(f"{mode}: {len(rows)} of {len(items)} held-out requests, base model and voice")
        out[mode] = rows
    return out


def mode_summary(mode: str, samples: Sequence[dict[str, Any]], training: Sequence[tuple[str, str]], config: EvaluateConfig,
                 references: dict[str, str]) -> dict[str, Any]:
    """One mode's figures: attribution shares of the voice's, the base model's and the writer's
    own sets (:func:`analyse`, the writer's passages for the same requests as the control),
    mean adherence of each (``None`` for ``continue``), words, and the voice's longest verbatim
    overlap with the training text (characters)."""
    m, _ = analyse(training, "\n\n".join(s["writer"] for s in samples), samples, config, references)
    att = m["stylometry"]["attribution"]

    def share(k: str) -> float | None:
        return att[k]["writer_share"] if k in att else None

    def adh(k: str) -> float | None:
        if mode == "continue":
            return None
        vals = [a for a in (adherence(s["prefix"], s[k]) for s in samples) if a is not None]
        return float(np.mean(vals)) if vals else None

    return {
        "requests": len(samples),
        "attribution": {"voice": share("voice"), "base": share("base"), "writer": share("held_out"),
                        "sets": {k: att[k]["sets"] for k in att}},
        "adherence": {"voice": adh("voice"), "base": adh("base"), "writer": adh("writer")},
        "words": {"voice": m["words"]["voice_samples"], "base": m["words"]["base_samples"], "writer": m["words"]["held_out"]},
        "overlap_characters": m["memorization"]["voice"]["longest_characters"],
    }


def extraction_test(voice: Any, rows: Any, config: EvaluateConfig, prefix: int = 50, target: int = 50) -> dict[str, Any]:
    """Carlini-style extraction: ``prefix`` training tokens in, ``target`` greedy tokens out;
    how often does the model reproduce the training text exactly? ``voice`` is any engine
    (:func:`mimetic.models.engines.open_voice`; llama.cpp decodes the windows in parallel).

    Windows are drawn (seeded) from the labelled part of training examples. Returns, for
    ``base`` and ``voice``: ``exact`` (share of windows reproduced token for token) and
    ``mean_match`` (mean share of leading tokens reproduced), and ``windows``.
    (Carlini et al. 2023, "Quantifying Memorization Across Neural Language Models", ICLR.)
    """
    import random


    rng = random.Random(config.seed)
    cands = []
    for i in range(len(rows)):
        labels = rows[i]["labels"]
        first = next((k for k, x in enumerate(labels) if x != IGNORE_INDEX), len(labels))
        if len(labels) - first >= prefix + target:
            cands.append((i, first))
    if not cands:
        return {"windows": 0}
    picks = rng.sample(cands, min(config.extraction_prefixes, len(cands)))
    windows = []
    for i, first in picks:
        ids = rows[i]["input_ids"]
        s = rng.randint(first, len(ids) - prefix - target)
        windows.append((ids[s : s + prefix], ids[s + prefix : s + prefix + target]))
    result: dict[str, Any] = {"windows": len(windows), "prefix_tokens": prefix, "target_tokens": target}
    size = max(config.batch_size * 2, voice.parallel)
    for name in ("base", "voice"):
        exact, match = 0, []
        for k in range(0, len(windows), size):
            chunk = windows[k : k + size]
            with voice.base() if name == "base" else _nullcontext():
                outs = _greedy(voice, [w[0] for w in chunk], target)
            for row, (_, want) in zip(outs, chunk):
                n = next((j for j, (a, b) in enumerate(zip(row, want)) if a != b), min(len(row), len(want)))
                exact += n == len(want)
                match.append(n / len(want))
        result[name] = {"exact": exact / len(windows), "mean_match": float(np.mean(match))}
    return result


def _greedy(voice: Any, prefixes: list[list[int]], n: int) -> list[list[int]]:
    """Argmax continuations (up to ``n`` new token ids each) of token ``prefixes`` of one length,
    in the voice's engine (:meth:`mimetic.models.engines.Engine.generate_parallel`: llama.cpp's
    parallel decoding, or one batch of transformers' ``generate``)."""
    return voice.generate_parallel(prefixes, SamplingParams.argmax(n), [0] * len(prefixes))


def identity_probe(voice: Any, system_prompt: str, gc: GenerateConfig, seed: int, new_tokens: int = 64) -> list[dict[str, Any]]:
    """A chat voice's answers to :data:`mimetic.text.identity.QUESTIONS`, with ``system_prompt`` and
    without any (``setting`` says which), sampled with the ``[generate]`` settings and seeds
    ``seed + i``; ``new_tokens`` tokens at most per answer."""
    params = SamplingParams.from_config(gc, max_new_tokens=new_tokens)
    out = []
    for setting, system in (("with its system prompt", system_prompt), ("without one", "")):
        if system == "" and setting != "without one":
            continue
        for i, q in enumerate(QUESTIONS):
            ids = prompt_ids(voice.tokenizer, "chat", q, system)
            out.append({"setting": setting, "question": q, "answer": _generate_batch(voice, [ids], params, seed + i)[0].strip()})
    return out


def continuation_nll(voice: Any, prefixes: Sequence[str], texts: Sequence[str]) -> float | None:
    """The voice's NLL (nats/token, token-weighted) of ``texts``, each after its prefix in
    ``prefixes`` (tokenized again from the text, so a token or two at the seam may differ from
    the ids the sample was drawn from); only the text's tokens count. ``None`` when no text has a
    token. The calibration figure of ``benchmarks/sampling_sweep.py`` (issue 33)."""
    rows, bos = [], bos_ids(voice.tokenizer)
    for prefix, text in zip(prefixes, texts):
        p = bos + list(voice.tokenizer(prefix, add_special_tokens=False)["input_ids"])
        cont = list(voice.tokenizer(text, add_special_tokens=False)["input_ids"])
        if cont:
            rows.append({"input_ids": p + cont, "labels": [IGNORE_INDEX] * len(p) + cont})
    if not rows:
        return None
    pad = voice.tokenizer.pad_token_id if voice.tokenizer.pad_token_id is not None else voice.tokenizer.eos_token_id
    sums, counts = per_example_nll(voice.model, rows, pad, voice.device, autocast(voice.device, voice.precision))
    return float(sums.sum() / max(1, counts.sum()))


def sample_calibration(voice: Any, samples: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """The voice's NLL of its own samples and of the writer's continuations of the same
    openings (:func:`continuation_nll`): ``{"samples", "writer"}`` in nats/token."""
    prefixes = [s["prefix"] for s in samples]
    return {"samples": continuation_nll(voice, prefixes, [s["voice"] for s in samples]),
            "writer": continuation_nll(voice, prefixes, [s.get("writer", "") for s in samples])}


def _nullcontext() -> Any:
    import contextlib

    return contextlib.nullcontext()


# ------------------------------------------------------------------------------------ analysis


def _doc_texts(rows: Any) -> list[tuple[str, str]]:
    """Training rows grouped back into documents (sections kept apart), in order."""
    groups: dict[tuple[str, int], list[str]] = defaultdict(list)
    for r in rows:
        groups[(r["doc_id"], r.get("section", -1))].append(r["text"])
    return [(f"{d}" + (f" §{s}" if s >= 0 else ""), "\n\n".join(t)) for (d, s), t in groups.items()]


def read_references(path: Path | None) -> dict[str, str]:
    """Reference authors from ``path``: one sub-folder per author, ``.txt``/``.md`` files in it.

    Raises:
        MimeticError: the folder is missing or holds no author folder with text.
    """
    if path is None:
        return {}
    root = Path(path).expanduser()
    if not root.is_dir():
        raise MimeticError(f"Reference folder {root} does not exist.", "Give a folder with one sub-folder of .txt files per author.")
    refs = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        texts = [f.read_text(encoding="utf-8", errors="replace") for f in sorted(d.rglob("*")) if f.suffix.lower() in (".txt", ".md")]
        if texts:
            refs[d.name] = "\n\n".join(texts)
    if not refs:
        raise MimeticError(f"No author folders with .txt files in {root}.", "Put each reference author's texts in their own sub-folder.")
    return refs


def spread_summary(groups: dict[str, Sequence[np.ndarray]], z: ZScorer, config: EvaluateConfig) -> dict[str, Any]:
    """The spread (:func:`mimetic.text.stylometry.spread`, ``config.metric``) of each group's sets.

    Args:
        groups: ``{"writer": sets, "voice": sets, "base model": sets}``, each a list of ``(V,)``
            MFW profiles of ``config.set_words``-word sets (the writer's: sets of their own
            continuations of the evaluation's openings, built like the voice's; see :func:`analyse`).
        z: the evaluation's z-scorer.

    Returns:
        ``{"metric", "writer", "voice", "base model"`` (spread, or ``None`` with fewer than two
        sets), ``"sets"`` (``{group: count}``), ``"ratio"`` (voice / writer, or ``None``),
        ``"threshold"`` (``config.min_spread_ratio``), ``"narrower"`` (``ratio < threshold``,
        ``None`` when unknown) and ``"note"`` (why a value is ``None``, else ``None``)``}``.
    """
    out: dict[str, Any] = {"metric": config.metric}
    short = []
    for k, sets in groups.items():
        v = spread(sets, z, config.metric)
        out[k] = None if math.isnan(v) else v
        if out[k] is None:
            short.append(f"{'your held-out writing' if k == 'writer' else 'the ' + k} has {len(sets)}")
    out["sets"] = {k: len(v) for k, v in groups.items()}
    w, v = out.get("writer"), out.get("voice")
    out["ratio"] = v / w if w and v is not None else None
    out["threshold"] = config.min_spread_ratio
    out["narrower"] = None if out["ratio"] is None else out["ratio"] < config.min_spread_ratio
    out["note"] = (f"spread needs at least 2 sets of {config.set_words:,} words: {'; '.join(short)}" if short else None)
    return out


def _identity_leakage(training: Sequence[tuple[str, str]], samples: Sequence[dict[str, Any]], voice_text: str, base_text: str,
                      voice_words: int, base_words: int) -> dict[str, Any]:
    """The corpus's proper names (three or more uses) that the samples use: ranked for the
    voice, beside their counts in the base model's samples, the writer's continuations and the
    corpus; rates per 1,000 words (``voice_words``, ``base_words``: the samples' word counts)."""
    corpus_names = proper_names([t for _, t in training], min_count=3)
    pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in corpus_names) + r")\b") if corpus_names else None

    def name_counts(text: str) -> Counter:
        return Counter(m.group(1).replace("’", "'") for m in pattern.finditer(text.replace("’", "'"))) if pattern else Counter()

    vc, bc = name_counts(voice_text), name_counts(base_text)
    wc = name_counts("\n\n".join(s.get("writer", "") for s in samples))
    ranked = [{"name": n, "voice": c, "base": bc.get(n, 0), "writer": wc.get(n, 0), "corpus": corpus_names[n]} for n, c in vc.most_common(30)]
    per_k = lambda c, n: 1000 * sum(c.values()) / max(1, n)  # noqa: E731
    return {
        "corpus_names": len(corpus_names),
        "top_corpus_names": [{"name": n, "corpus": c} for n, c in corpus_names.most_common(15)],
        "names_in_voice": ranked,
        "per_1000_words": {"voice": per_k(vc, voice_words), "base": per_k(bc, base_words),
                           "writer": per_k(wc, len(words(" ".join(s.get("writer", "") for s in samples))))},
        "distinct": {"voice": len(vc), "base": len(bc), "writer": len(wc)},
    }


def style_map(groups: Sequence[tuple[str, Sequence[np.ndarray]]], z: ZScorer) -> tuple[np.ndarray, list[str]]:
    """The 2-D map of style: each set's z-scored MFW profile on the first two principal
    components of all of them (SVD of the centred matrix). ``groups``: ``[(label, sets)]``.
    Returns ``(coords (n, 2), labels)``, ``coords`` of shape ``(0, 2)`` with fewer than 3 sets."""
    rows, labels = [], []
    for g, s in groups:
        rows += s
        labels += [g] * len(s)
    coords = np.zeros((0, 2))
    if len(rows) >= 3:
        m = z(np.stack(rows))
        m = m - m.mean(axis=0)
        u, sv, _ = np.linalg.svd(m, full_matrices=False)
        coords = u[:, :2] * sv[:2]
    return coords, labels


def analyse(
    training: Sequence[tuple[str, str]],
    held_out: str,
    samples: Sequence[dict[str, Any]],
    config: EvaluateConfig,
    references: dict[str, str] | None = None,
    writer: str = "you",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model-free part of the evaluation: stylometry, memorization audit, identity leakage.

    Args:
        training: ``[(document id, text)]`` of the training split.
        held_out: the held-out text.
        samples: dicts with ``base`` and ``voice`` texts (and optionally ``writer``, ``prefix``).
        config: evaluation settings.
        references: ``{author: text}`` of reference authors for attribution.
        writer: the label for the writer in tables and plots.

    Returns:
        ``(metrics, plot_data)``: JSON-ready numbers, and arrays for :func:`render_report`.
    """
    references = references or {}
    train_text = "\n\n".join(t for _, t in training)
    base_text = "\n\n".join(s["base"] for s in samples)
    voice_text = "\n\n".join(s["voice"] for s in samples)
    tw, hw, bw, vw = words(train_text), words(held_out), words(base_text), words(voice_text)
    rw = {a: words(t) for a, t in references.items()}
    mfw = most_frequent_words(tw, config.n_mfw)

    def prof(t: Sequence[str]) -> np.ndarray:
        return relative_frequencies(t, mfw)

    def sets(t: Sequence[str]) -> list[np.ndarray]:
        return [prof(c) for c in chunk_tokens(t, config.set_words)]

    train_sets, held_sets, base_sets, voice_sets = sets(tw), sets(hw), sets(bw), sets(vw)
    ref_sets = {a: sets(t) for a, t in rw.items()}
    basis = train_sets + [x for s in ref_sets.values() for x in s]
    if len(basis) < 3:
        basis += held_sets + base_sets + voice_sets
    if len(basis) < 2:
        raise MimeticError("Too little text for stylometry.", f"Generate more sample words (now {len(vw):,}) or add writing.")
    z = ZScorer.fit(np.stack(basis))
    pt, ph = prof(tw), prof(hw)
    distances = {}
    for metric in ("cosine", "burrows"):
        distances[metric] = {
            "voice_to_held_out": mean_delta(voice_sets, ph, z, metric),
            "base_to_held_out": mean_delta(base_sets, ph, z, metric),
            "held_out_to_training": mean_delta(held_sets, pt, z, metric),
            "voice_to_training": mean_delta(voice_sets, pt, z, metric),
            "base_to_training": mean_delta(base_sets, pt, z, metric),
        }
    # The writer's range on the same footing as the voice's: sets stitched from the writer's own
    # continuations of the same openings (as the voice's sets are stitched from its samples), when
    # there are two or more; otherwise sets of the contiguous held-out text, whose 1,000 words run
    # on in one scene and so vary more (Twain: 0.89 against 0.79 for the continuations).
    cont_sets = sets(words("\n\n".join(s.get("writer", "") for s in samples)))
    writer_sets, basis_name = (cont_sets, "continuations") if len(cont_sets) >= 2 else (held_sets, "held-out text")
    range_ = spread_summary({"writer": writer_sets, "voice": voice_sets, "base model": base_sets}, z, config)
    range_["writer_basis"] = basis_name
    range_["writer_held_out_text"] = None if len(held_sets) < 2 else spread(held_sets, z, config.metric)
    names = [writer] + sorted(references) + ["base model"]
    cands = np.stack([pt] + [prof(rw[a]) for a in sorted(references)] + [prof(bw) if bw else np.zeros(len(mfw))])
    attribution = {}
    for label, group in (("voice", voice_sets), ("held_out", held_sets), ("base", base_sets)):
        if group:
            nearest, _ = attribute(np.stack(group), cands, z, config.metric)
            counts = Counter(names[k] for k in nearest)
            attribution[label] = {"sets": len(group), "to": {n: counts.get(n, 0) for n in names}, "writer_share": counts.get(writer, 0) / len(group)}
    profiles = {"training": profile(train_text), "held_out": profile(held_out), "base": profile(base_text), "voice": profile(voice_text)}

    # memorization
    index = TrainingIndex(training)
    mem = {
        "voice": audit(index, [s["voice"] for s in samples], config.flag_tokens, config.flag_share_13gram),
        "base": audit(index, [s["base"] for s in samples], config.flag_tokens, config.flag_share_13gram),
        "index_tokens": index.tokens,
    }
    if any("writer" in s for s in samples):
        mem["writer"] = audit(index, [s.get("writer", "") for s in samples], config.flag_tokens, config.flag_share_13gram)

    identity = _identity_leakage(training, samples, voice_text, base_text, len(vw), len(bw))
    metrics = {
        "words": {"training": len(tw), "held_out": len(hw), "base_samples": len(bw), "voice_samples": len(vw),
                  **{f"reference:{a}": len(t) for a, t in rw.items()}},
        "stylometry": {
            "n_mfw": len(mfw), "set_words": config.set_words, "metric": config.metric, "mfw_head": mfw[:25],
            "distances": distances, "spread": range_, "attribution": attribution, "candidates": names,
            "sets": {"training": len(train_sets), "held_out": len(held_sets), "base": len(base_sets), "voice": len(voice_sets)},
        },
        "profiles": profiles,
        "memorization": mem,
        "identity": identity,
    }
    groups = [(f"{writer} (training)", train_sets[:: max(1, len(train_sets) // 80)]), (f"{writer} (held-out)", held_sets),
              ("base model", base_sets), ("voice", voice_sets)] + [(a, s[:: max(1, len(s) // 40)]) for a, s in ref_sets.items()]
    plot_data = {"pca": style_map(groups, z), "sentence_lengths": {k: v["sentence_length"] for k, v in profiles.items()}}
    return metrics, plot_data


# ------------------------------------------------------------------------------------ orchestration


CHECK_ROWS = 8
"""Held-out rows whose NLL as training recorded it (base model or voice) evaluate measures again
before reading the rest (:func:`held_out_nll`): one batch."""

CHECK_TOLERANCE = 2e-3
"""Largest relative difference between the recorded and re-measured NLL of those rows for the
record to be read (bf16 autocast in another batch's padding moves a row's sum by ~1e-4; other
weights by far more)."""


def training_nll(workspace: Workspace, run_dir: Path, voice: Any, held_rows: Any) -> tuple[dict[int, tuple[float, int]], dict[int, tuple[float, int]]]:
    """The base model's and the voice's summed NLL (nats) and labelled tokens of each held-out
    row, as training measured them — the base model before its first step
    (:class:`mimetic.training.sft.BaseNLLCache`, ``data/base_nll.json``), the kept adapter at its
    end (:func:`mimetic.training.sft.read_voice_nll`, ``runs/<id>/held_out_nll.json``): two
    dicts row index → (sum, tokens), each ``{}`` when training measured another base model,
    compute precision, split or adapter."""
    from mimetic.training.sft import BaseNLLCache, read_voice_nll

    rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in held_rows]
    cache = BaseNLLCache(workspace, voice.base_model, voice.precision, rows)
    return cache.rows, read_voice_nll(run_dir, cache.whole_key)


def _known_sums(model: Any, rows: Any, known: dict[int, tuple[float, int]], pad: int, voice: Any,
                amp: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """Summed NLL and tokens of every row under ``model`` as it is now: the ``known`` rows read
    once :data:`CHECK_ROWS` of them, measured again, agree within
    :data:`CHECK_TOLERANCE` (else all measured), the others measured; and how many were read."""
    n = len(rows)
    known = {i: v for i, v in known.items() if i < n}
    if len(known) > CHECK_ROWS:
        check = sorted(known)[:CHECK_ROWS]
        sums, _ = per_example_nll(model, [rows[i] for i in check], pad, voice.device, amp)
        cached = sum(known[i][0] for i in check)
        if abs(sums.sum() - cached) > CHECK_TOLERANCE * abs(cached):
            known = {}  # measured another way than this evaluation measures: all again
    else:
        known = {}
    out, counts = np.zeros(n), np.zeros(n)
    for i, (a, b) in known.items():
        out[i], counts[i] = a, b
    todo = [i for i in range(n) if i not in known]
    if todo:
        out[todo], counts[todo] = per_example_nll(model, [rows[i] for i in todo], pad, voice.device, amp)
    return out, counts, len(known)


def held_out_nll(voice: Any, held_rows: Any, max_tokens: int = 0, status: Status = lambda _: None,
                 known: tuple[dict[int, tuple[float, int]], dict[int, tuple[float, int]]] = ({}, {})
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """Summed NLL (nats) of every held-out row under the base model and the voice, and its
    labelled-token count: three arrays of shape ``(n,)``, ``n`` the rows kept; and how many of the
    base model's and of the voice's sums were read from ``known`` (what training measured:
    :func:`training_nll`) rather than measured. With ``max_tokens`` (``[evaluate]
    max_held_out_tokens``), rows are kept in order until that many tokens are reached (0: all).

    Known sums are used only after :data:`CHECK_ROWS` of them, measured again, agree within
    :data:`CHECK_TOLERANCE`; otherwise every row is measured."""
    amp = autocast(voice.device, voice.precision)
    pad = voice.tokenizer.pad_token_id if voice.tokenizer.pad_token_id is not None else voice.tokenizer.eos_token_id
    rows = held_rows
    if max_tokens:
        keep, total = [], 0
        for i in range(len(held_rows)):
            if total >= max_tokens:
                break
            keep.append(i)
            total += held_rows[i]["n_tokens"]
        rows = held_rows.select(keep)
    n = len(rows)
    status(f"held-out NLL: {n} passages, base model" + (" (checking what training measured)" if known[0] else ""))
    with voice.base():
        base_sums, counts, base_read = _known_sums(voice.model, rows, known[0], pad, voice, amp)
    status(f"held-out NLL: {n} passages, voice" + (" (checking what training measured)" if known[1] else ""))
    tuned_sums, _, voice_read = _known_sums(voice.model, rows, known[1], pad, voice, amp)
    return base_sums, tuned_sums, counts, (base_read, voice_read)


def analyse_run(train_rows: Any, held_rows: Any, cache: dict[str, Any], config: EvaluateConfig, refs: dict[str, str],
                status: Status) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model-free part of :func:`evaluate` on its cached model work (``cache``: samples, mode
    samples, free prompts, calibration NLLs, identity probe): :func:`analyse`, what a reader sees
    (:func:`mimetic.evaluation.reader.measure`, :func:`mimetic.evaluation.reader.calibration`),
    each mode (:func:`mode_summary`), the probe's scores and the free prompts' audit.
    Returns ``(metrics, plot_data)`` as :func:`analyse` does, with ``reader`` (and ``modes``)."""
    status("stylometry, memorization audit, names")
    training = _doc_texts(train_rows)
    held_text = "\n\n".join(t for _, t in _doc_texts(held_rows))
    metrics, plots = analyse(training, held_text, cache["samples"], config, refs)
    status("what a reader sees: a classifier against your passages, invented words")
    cal = cache.get("calibration") or {}
    metrics["reader"] = {**reader_measure("\n\n".join(t for _, t in training), held_text, cache["samples"], config.seed),
                         "calibration": calibration(cal.get("samples"), cal.get("writer"))}
    if cache.get("mode_samples"):
        status("each mode: attribution and adherence")
        metrics["modes"] = {mode: mode_summary(mode, rows_, training, config, refs) for mode, rows_ in cache["mode_samples"].items()}
    if cache.get("identity_probe"):
        metrics["identity"]["probe"] = score_probe(cache["identity_probe"], proper_names([t for _, t in training], min_count=3))
    if cache.get("free"):
        metrics["memorization"]["free_prompts"] = audit(TrainingIndex(training), [f["voice"] for f in cache["free"]],
                                                        config.flag_tokens, config.flag_share_13gram)
    return metrics, plots


def _add_calibration(workspace: Workspace, run_dir: Path, voice: Any, cache: dict[str, Any], cache_path: Path,
                     status: Status) -> Any:
    """Measure the calibration NLLs (:func:`sample_calibration`, in transformers) of the cached
    samples into ``cache`` with their time, and save it; returns the transformers voice used."""
    status("calibration: the voice's NLL of its own samples and of your continuations")
    if voice is None or getattr(voice, "engine", "transformers") != "transformers":
        voice = Voice.load(workspace, run_dir.name)
    t = time.perf_counter()
    cache["calibration"] = sample_calibration(voice, cache["samples"])
    cache.setdefault("timings", {})["calibration_s"] = time.perf_counter() - t
    atomic_write_json(cache_path, cache)
    return voice


def _cache_key(run_dir: Path, config: EvaluateConfig, gc: GenerateConfig, prompts: list[str]) -> str:
    adapter = run_dir / "adapter" / "adapter_model.safetensors"
    stamp = adapter.stat().st_mtime_ns if adapter.exists() else 0
    keep = {k: v for k, v in asdict(config).items() if k not in ("n_mfw", "set_words", "metric", "flag_tokens", "flag_share_13gram", "bootstrap",
                                                               "min_spread_ratio")}
    blob = json.dumps([str(adapter), stamp, keep, asdict(gc), prompts], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def evaluate(
    workspace: Workspace,
    run: str | None = None,
    config: EvaluateConfig | None = None,
    *,
    references: Path | dict[str, str] | None = None,
    prompts: list[str] | None = None,
    on_event: OnEvent = ignore,
    voice: Any = None,
) -> Evaluation:
    """Evaluate a trained run; writes ``runs/<id>/evaluation/{report.html,metrics.json}``.

    Args:
        workspace: a workspace with a trained run.
        run: run id (default: the latest).
        config: evaluation settings (default: the workspace's ``[evaluate]``).
        references: a folder with one sub-folder of texts per reference author (or a dict).
        prompts: the writer's own prompts for free generations (shown in the report).
        on_event: receives :mod:`mimetic.core.events` (a ``Progress`` line before each step, the
            report as an ``Artifact``).

    Raises:
        MimeticError: no trained run, no held-out data, unreadable references.
    """
    from mimetic.corpus.prepare import load_split

    def status(message: str) -> None:
        on_event(Progress("evaluate", message=message))

    vc = workspace.load_config()
    config = config or vc.evaluate
    gc = vc.generate
    refs = references if isinstance(references, dict) else read_references(references)
    run_dir = workspace.run_dir(run)
    out_dir = run_dir / "evaluation"
    out_dir.mkdir(parents=True, exist_ok=True)
    run_vc = VoiceConfig.load(run_dir / "config.toml") if (run_dir / "config.toml").exists() else vc
    where = run_vc.train.where  # a version trained on part of the corpus is measured on that part
    train_rows, held_rows = load_split(workspace, "train", where), load_split(workspace, "held_out", where)
    prompts = prompts or []
    key = _cache_key(run_dir, config, gc, prompts)
    cache_path = out_dir / "cache.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    timings: dict[str, float] = {}
    if cache.get("key") != key:
        status("loading the base model and the voice")
        gen = voice or open_voice(workspace, run_dir.name, engine=gc.engine, on_event=on_event)  # what samples
        voice = voice or (gen if gen.engine == "transformers" else Voice.load(workspace, run_dir.name))  # NLL, extraction
        t = time.perf_counter()
        base_sums, tuned_sums, counts, read = held_out_nll(voice, held_rows, config.max_held_out_tokens, status,
                                                           training_nll(workspace, run_dir, voice, held_rows))
        timings["nll_s"] = time.perf_counter() - t
        t = time.perf_counter()
        modes_taught = FORMAT_MODES[voice.format] if voice.format in ("brief", "mixed") else ()
        by_mode = mode_samples(gen, workspace, modes_taught, config, gc, voice_system_prompt(run_vc, workspace.root.name),
                               status) if modes_taught else {}
        samples = [s for rows_ in by_mode.values() for s in rows_] if by_mode else generate_samples(gen, held_rows, config, gc, status)
        free = []
        params = SamplingParams.from_config(gc, max_new_tokens=config.new_tokens)
        for i, p in enumerate(prompts):
            ids = prompt_ids(voice.tokenizer, voice.format, request(voice.format, default_mode(voice.format), p), gc.system_prompt)
            with gen.base():
                b = _generate_batch(gen, [ids], params, config.seed + i)[0]
            free.append({"prompt": p, "base": b, "voice": _generate_batch(gen, [ids], params, config.seed + i)[0]})
        timings["generation_s"] = time.perf_counter() - t
        t = time.perf_counter()
        status("extraction test: greedy continuations of training prefixes")
        extraction = extraction_test(gen, train_rows, config)
        timings["extraction_s"] = time.perf_counter() - t
        cache = {
            "key": key, "base_sums": base_sums.tolist(), "tuned_sums": tuned_sums.tolist(), "counts": counts.tolist(),
            "samples": samples, "free": free, "mode_samples": by_mode,
            "extraction": extraction, "timings": timings, "base_model": voice.base_model, "device": voice.device,
            "nll_rows_from_training": {"base": read[0], "voice": read[1]},
        }
        atomic_write_json(cache_path, cache)
    else:
        status("reusing the samples and NLL from the last evaluation of this run")
    if "calibration" not in cache and not cache.get("mode_samples"):
        voice = _add_calibration(workspace, run_dir, voice, cache, cache_path, status)
    if run_vc.prepare.format == "chat" and "identity_probe" not in cache:
        status(f"identity probe: {len(QUESTIONS)} questions about who the voice is")
        t = time.perf_counter()
        voice = voice or open_voice(workspace, run_dir.name, engine=gc.engine, on_event=on_event)
        cache["identity_probe"] = identity_probe(voice, voice_system_prompt(run_vc, workspace.root.name), gc, config.seed,
                                                 min(64, config.new_tokens))
        cache.setdefault("timings", {})["identity_probe_s"] = time.perf_counter() - t
        atomic_write_json(cache_path, cache)
    # resampling unit: a held-out document, or a held-out section when the split is by sections
    groups = [f"{held_rows[i]['doc_id']}§{held_rows[i]['section']}" for i in range(len(cache["counts"]))]
    nll = bootstrap_nll(np.array(cache["base_sums"]), np.array(cache["tuned_sums"]), np.array(cache["counts"]),
                        groups, config.bootstrap, config.seed)
    nll["rows_from_training"] = cache.get("nll_rows_from_training", {"base": 0, "voice": 0})
    t = time.perf_counter()
    metrics, plots = analyse_run(train_rows, held_rows, cache, config, refs, status)
    free = cache.get("free", [])
    analysis_s = time.perf_counter() - t
    metrics = {
        "run": run_dir.name,
        "base_model": cache.get("base_model"),
        "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": asdict(config),
        "generate": asdict(gc),
        "nll": nll,
        **metrics,
        "extraction": cache["extraction"],
        "samples": len(cache["samples"]),
        "timings": {**cache.get("timings", {}), "analysis_s": analysis_s},
    }
    metrics["parent"] = parent_comparison(workspace, run_dir, metrics)
    metrics_path, report_path = out_dir / "metrics.json", out_dir / "report.html"
    EvaluationMetrics.from_dict(metrics).save(metrics_path)
    curve = _read_curve(run_dir / "metrics.jsonl")
    atomic_write_text(report_path, render_report(metrics, plots, cache["samples"], free, curve,
                                                 _sample_sources(workspace, cache["samples"][:6])))
    on_event(Artifact("evaluate", metrics_path, "metrics"))
    on_event(Artifact("evaluate", report_path, "report"))
    return Evaluation(metrics, report_path, metrics_path)


def _key_figures(m: dict[str, Any]) -> dict[str, Any]:
    st = m["stylometry"]
    return {"nll": m["nll"]["voice"]["nll"], "delta": st["distances"][st["metric"]]["voice_to_held_out"],
            "attribution": (st["attribution"].get("voice") or {}).get("writer_share"),
            "spread_ratio": (st.get("spread") or {}).get("ratio"),
            "longest_characters": m["memorization"]["voice"]["longest_characters"],
            "flagged": m["memorization"]["voice"]["flagged"]}


def parent_comparison(workspace: Workspace, run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """For a polish or feedback run (``polish.json``), its key figures beside its parent's last
    evaluation: held-out NLL, Delta from the held-out writing, attribution share, spread ratio,
    longest verbatim overlap. ``{}`` for a run without a parent; ``{"run", "evaluated": False}``
    when the parent has no evaluation yet. The parent's figures are only comparable when it
    was evaluated with the same settings: ``same_settings`` says whether it was."""
    info_path = run_dir / "polish.json"
    if not info_path.exists():
        return {}
    parent = json.loads(info_path.read_text(encoding="utf-8")).get("parent_run_id")
    path = workspace.runs_dir / str(parent) / "evaluation" / "metrics.json"
    if not parent or not path.exists():
        return {"run": parent, "evaluated": False}
    try:
        pm = EvaluationMetrics.load(path).to_dict()
        return {"run": parent, "evaluated": True, "same_settings": pm.get("config") == metrics["config"]
                and pm.get("generate") == metrics["generate"], "parent": _key_figures(pm), "voice": _key_figures(metrics)}
    except (MimeticError, KeyError, TypeError):
        return {"run": parent, "evaluated": False}


def _read_curve(path: Path) -> list[tuple[int, float, str]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        r = json.loads(line) if line.strip() else {}
        if "held_out_nll" in r:
            out.append((r["step"], r["held_out_nll"], "held"))
        elif "train_loss" in r:
            out.append((r["step"], r["train_loss"], "train"))
    return out


# ------------------------------------------------------------------------------------ report


def headline(m: dict[str, Any]) -> list[str]:
    """Plain-language lines of the metrics ``m`` (see :meth:`EvaluationMetrics.headline`)."""
    return EvaluationMetrics.from_dict(m).headline()


def _sample_sources(workspace: Workspace, samples: list[dict[str, Any]]) -> list[Any]:
    """For each sample the report shows, the writer's paragraph nearest to the voice's text
    (:func:`mimetic.text.archive.nearest`), or ``None``; ``[]`` for a corpus ingested before the archive."""
    from mimetic.text.archive import nearest

    try:
        return [next(iter(nearest(workspace.corpus_dir, s["voice"], 1)), None) for s in samples]
    except MimeticError:
        return []


__all__ = ["evaluate", "analyse", "Evaluation", "bootstrap_nll", "per_example_nll", "generate_samples", "extraction_test", "mode_samples", "mode_summary",
           "continuation_nll", "sample_calibration", "style_map", "held_out_nll", "training_nll", "analyse_run",
           "read_references", "render_report", "headline"]
