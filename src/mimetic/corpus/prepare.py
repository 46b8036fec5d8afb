"""Stage 2 — prepare: cut the cleaned corpus into training examples and a held-out split.

* **Held-out split by document**: seeded, whole documents making up ``held_out_fraction`` of the
  words (default 10%, met to within a point) never enter training; the held-out NLL measured
  on them is how mimetic knows the voice generalises rather than memorises. With few
  documents (e.g. four novels) the documents are cut into contiguous sections of about
  ``section_words`` words and whole sections are held out, so no held-out text sits inside a
  training chunk.
* **Token-aware chunks**: consecutive paragraphs are packed into chunks of at most
  ``max_tokens`` tokens of the base model's tokenizer, cut at paragraph boundaries; a longer
  paragraph is cut at sentence boundaries, and a longer sentence at token boundaries.
* **Formats**: ``completion`` (the text itself; EOS only where a document really ends),
  ``chat`` (the chunk is the assistant's reply to a short request, through the model's chat
  template; loss only on the reply), ``brief`` (the reply to a brief of the chunk) and
  ``mixed`` (a third each of write, continue and rewrite examples, chosen by the chunk's
  hash; :mod:`mimetic.corpus.briefs` makes the briefs and paraphrases, kept in ``data/briefs.jsonl``).

Examples are saved with HF datasets as Arrow in ``data/train`` and ``data/held_out``, with
``data/meta.json`` describing the split.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import dataclass
from typing import Any

from mimetic.corpus.briefs import BRIEFS_FILE, Brief, make_briefs, mode_of, passage_hash, request, resolve_source, split_opening
from mimetic.core.config import PrepareConfig
from mimetic.errors import MimeticError
from mimetic.core.events import OnEvent, ignore
from mimetic.corpus.ingest import count_words, load_corpus
from mimetic.models.loading import bos_ids
from mimetic.models.nll import IGNORE_INDEX
from mimetic.core.records import DataMeta
from mimetic.text.stylometry import SENTENCE_END as _SENTENCE
from mimetic.core.selection import parse as parse_where
from mimetic.core.workspace import Workspace, writes_voice, atomic_dir

MIN_CORPUS_WORDS = 2000


@dataclass
class PrepareResult:
    """Counts of what ``prepare`` wrote."""

    split_mode: str
    train_examples: int
    held_out_examples: int
    train_tokens: int
    held_out_tokens: int
    held_out_documents: list[str]
    meta: dict[str, Any]


def split_held_out(docs: list[dict[str, Any]], config: PrepareConfig) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """Split documents into training and held-out *units* (documents, or sections of them).

    The held-out units are drawn in a seeded random order and kept while they bring the
    held-out words closer to ``held_out_fraction`` of the corpus, so the share is met to
    within a unit's size rather than rounded per document (six documents split by sections
    once held out 37% for a fraction of 10%). Whole documents are the units when at least
    ``min_held_out_documents`` of them make the share within a point; otherwise contiguous
    sections of about ``section_words`` words (at most about 1% of the corpus, so a small corpus
    still reaches its share), one of each document first, so no held-out text sits inside a
    training chunk and every long document (each novel of a writer) is measured.

    Returns ``(mode, train_units, held_out_units)``; each unit is a dict with ``doc_id``,
    ``section`` (``None`` in document mode), ``title`` and ``paragraphs``. The split depends
    only on the documents' ids, order and text, ``held_out_fraction``, ``section_words`` and
    ``seed``.

    Raises:
        MimeticError: the corpus is too small to hold anything out.
    """
    counts = [[count_words(p) for p in d["paragraphs"]] for d in docs]  # words per paragraph, counted once
    sizes = [sum(c) for c in counts]
    words = sum(sizes)
    if words < MIN_CORPUS_WORDS:
        raise MimeticError(
            f"The corpus has {words:,} words; mimetic needs at least {MIN_CORPUS_WORDS:,} to keep a fair held-out "
            "test set (20,000 or more gives a recognisable voice).",
            "Add more of your writing to the folder and run ingest again.",
        )
    target = config.held_out_fraction * words
    rng = random.Random(config.seed)
    if int(len(docs) * config.held_out_fraction) >= config.min_held_out_documents:
        order = sorted(range(len(docs)), key=lambda i: docs[i]["doc_id"])
        rng.shuffle(order)
        held = _closest_share(order, sizes, target)
        if len(held) >= config.min_held_out_documents and abs(sum(sizes[i] for i in held) - target) <= 0.01 * words:
            units = [{"doc_id": d["doc_id"], "section": None, "title": d.get("title"), "paragraphs": d["paragraphs"]} for d in docs]
            return "documents", [u for i, u in enumerate(units) if i not in held], [u for i, u in enumerate(units) if i in held]

    section_words = max(20, min(config.section_words, words // 80))
    units, unit_sizes = [], []
    for j in sorted(range(len(docs)), key=lambda j: docs[j]["doc_id"]):
        d = docs[j]
        sections: list[list[str]] = [[]]
        section_sizes = [0]
        for p, k in zip(d["paragraphs"], counts[j]):
            if section_sizes[-1] >= section_words and sections[-1]:
                sections.append([])
                section_sizes.append(0)
            sections[-1].append(p)
            section_sizes[-1] += k
        if len(sections) > 1 and section_sizes[-1] < section_words / 4:  # fold a short tail into its neighbour
            sections[-2].extend(sections.pop())
            tail = section_sizes.pop()
            section_sizes[-1] += tail
        units += [{"doc_id": d["doc_id"], "section": i, "title": d.get("title"), "paragraphs": paras}
                  for i, paras in enumerate(sections)]
        unit_sizes += section_sizes
    order = list(range(len(units)))
    rng.shuffle(order)
    firsts = {}  # one section of every document first, so that each contributes while the share allows
    for i in order:
        firsts.setdefault(units[i]["doc_id"], i)
    first = set(firsts.values())
    order = list(firsts.values()) + [i for i in order if i not in first]
    held = _closest_share(order, unit_sizes, target)
    train = [u for i, u in enumerate(units) if i not in held]
    held_out = [u for i, u in enumerate(units) if i in held]
    if not held_out or not train:
        raise MimeticError(
            f"The corpus ({words:,} words in {len(docs)} document(s)) is too small to split into training and held-out parts.",
            f"Add writing (at least {MIN_CORPUS_WORDS:,} words in all), or lower prepare.section_words.",
        )
    return "sections", train, held_out


def _closest_share(order: list[int], sizes: list[int], target: float) -> set[int]:
    """Units taken in ``order`` while each brings the total closer to ``target`` words; at
    least one unit, never all of them."""
    held: set[int] = set()
    total = 0
    for i in order:
        if len(held) == len(order) - 1:
            break
        if abs(total + sizes[i] - target) < abs(total - target):
            held.add(i)
            total += sizes[i]
    return held or {min(order, key=lambda i: sizes[i])}


def _pieces(paragraph: str, tokenizer: Any, max_tokens: int) -> list[str]:
    """Cut a paragraph longer than ``max_tokens`` at sentences, then at token boundaries."""
    out: list[str] = []
    for sentence in _SENTENCE.split(paragraph):
        ids = tokenizer(sentence, add_special_tokens=False)["input_ids"]
        if len(ids) <= max_tokens:
            out.append(sentence)
        else:
            out.extend(tokenizer.decode(ids[i : i + max_tokens]) for i in range(0, len(ids), max_tokens))
    return out


def chunk_paragraphs(paragraphs: list[str], tokenizer: Any, max_tokens: int) -> list[str]:
    """Pack consecutive paragraphs into chunks of at most ``max_tokens`` tokens.

    Chunks end at paragraph boundaries; paragraphs (or sentences) that alone exceed the
    limit are cut first (see module doc). Paragraphs inside a chunk are joined by a blank line.

    Args:
        paragraphs: the unit's paragraphs, in order.
        tokenizer: a Hugging Face tokenizer.
        max_tokens: the chunk size limit, counted without special tokens.

    Returns:
        The chunk texts, in order; each tokenizes to at most ``max_tokens`` tokens.
    """
    sep = len(tokenizer("\n\n", add_special_tokens=False)["input_ids"])
    lengths = [len(x) for x in tokenizer(paragraphs, add_special_tokens=False)["input_ids"]] if paragraphs else []
    parts: list[tuple[str, int]] = []
    for p, n in zip(paragraphs, lengths):
        if n <= max_tokens:
            parts.append((p, n))
        else:
            parts.extend((q, len(tokenizer(q, add_special_tokens=False)["input_ids"])) for q in _pieces(p, tokenizer, max_tokens))
    def n_tokens(parts_: list[str]) -> int:
        return len(tokenizer("\n\n".join(parts_), add_special_tokens=False)["input_ids"])

    chunks: list[str] = []
    cur: list[str] = []
    cur_n = 0
    i = 0
    while i < len(parts):
        p, n = parts[i]
        if cur and cur_n + sep + n > max_tokens:
            chunks.append("\n\n".join(cur))
            cur, cur_n = [], 0
        cur.append(p)
        cur_n += n + (sep if len(cur) > 1 else 0)
        i += 1
        # The tokens of a join can differ from the sum of its parts: check, and if the chunk
        # is over the limit, hand its last part back to start the next chunk.
        if len(cur) > 1 and (i == len(parts) or cur_n + sep + parts[i][1] > max_tokens) and n_tokens(cur) > max_tokens:
            cur.pop()
            i -= 1
            chunks.append("\n\n".join(cur))
            cur, cur_n = [], 0
    if cur:
        chunks.append("\n\n".join(cur))
    return chunks


def _chat_request(unit: dict[str, Any]) -> str:
    title = unit.get("title")
    return f"Write a passage of “{title}” in my voice." if title else "Write a passage in my voice."


def example_mode(text: str, config: PrepareConfig, brief: Brief | None) -> str:
    """The mode a chunk's example teaches: ``continue`` (completion), ``chat``, ``write``
    (brief) or, in the mixed format, the chunk's :func:`mimetic.corpus.briefs.mode_of` — ``write``
    instead where the chunk is one sentence (nothing to continue) or has no paraphrase."""
    if config.format in ("completion", "chat"):
        return {"completion": "continue", "chat": "chat"}[config.format]
    mode = "write" if config.format == "brief" else mode_of(text)
    if mode == "continue" and not split_opening(text)[1]:
        return "write"
    if mode == "rewrite" and not (brief and brief.paraphrase):
        return "write"
    return mode


def encode_example(text: str, tokenizer: Any, config: PrepareConfig, unit: dict[str, Any], ends_document: bool,
                   brief: Brief | None = None) -> dict[str, Any]:
    """Tokenize one chunk in the configured format.

    Returns a dict with ``input_ids``, ``labels`` (``-100`` where no loss is taken: the chat
    prompt, or a brief, opening or paraphrase) and ``mode`` (:func:`example_mode`). In
    completion format the EOS token is appended only if the chunk ends its document, so the
    model does not learn to stop mid-text, and it starts with the beginning-of-sequence token
    where the model expects one (:func:`mimetic.models.loading.bos_ids`; not a label). The ``brief`` and ``mixed`` formats need the chunk's
    ``brief`` (:func:`mimetic.corpus.briefs.make_briefs`).
    """
    mode = example_mode(text, config, brief)
    if config.format == "completion":
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if ends_document and tokenizer.eos_token_id is not None:
            ids = ids + [tokenizer.eos_token_id]
        bos = bos_ids(tokenizer)
        return {"input_ids": bos + ids, "labels": [IGNORE_INDEX] * len(bos) + list(ids), "mode": mode}
    if config.format == "chat":
        user = _chat_request(unit)
    elif mode == "continue":
        user, text = split_opening(text)
        user = request(config.format, "continue", user)
    else:
        user = request(config.format, mode, (brief.brief if mode == "write" else brief.paraphrase) if brief else "…")
    messages = ([{"role": "system", "content": config.system_prompt}] if config.system_prompt else []) + [
        {"role": "user", "content": user}
    ]
    prompt = _template_ids(tokenizer, messages, add_generation_prompt=True)
    full = _template_ids(tokenizer, messages + [{"role": "assistant", "content": text}], add_generation_prompt=False)
    if full[: len(prompt)] != prompt:  # templates that rewrite earlier turns: mask nothing rather than guess
        return {"input_ids": full, "labels": list(full), "mode": mode}
    return {"input_ids": full, "labels": [IGNORE_INDEX] * len(prompt) + full[len(prompt) :], "mode": mode}


def _template_ids(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> list[int]:
    if not getattr(tokenizer, "chat_template", None):
        raise MimeticError(
            "This base model has no chat template, so the chat format cannot be used.",
            "Use --format completion, or an instruct/chat base model.",
        )
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    return list(out)


BRIEF_ALLOWANCE = 64  # tokens kept free in a brief-format example for the brief itself


@writes_voice("prepared")
def prepare(workspace: Workspace, config: PrepareConfig | None = None, base_model: str | None = None,
            on_event: OnEvent = ignore) -> PrepareResult:
    """Make ``data/train`` and ``data/held_out`` from the workspace's corpus.

    Args:
        workspace: a workspace that has been ingested.
        config: prepare settings (default :class:`PrepareConfig`).
        base_model: the model whose tokenizer counts tokens (default: the workspace's
            ``train.base_model``). Training checks that it uses the same model.
        on_event: receives the briefs' :class:`~mimetic.core.events.Progress` (``brief`` and
            ``mixed`` formats).

    In the ``brief`` and ``mixed`` formats a chunk holds at most ``max_tokens`` minus the chat
    template and :data:`BRIEF_ALLOWANCE` tokens; a rewrite example (paraphrase + passage) may
    then be up to about twice ``max_tokens``. Briefs are made or reused (``data/briefs.jsonl``,
    edits kept) before the examples, and written with them.

    Raises:
        MimeticError: no corpus, corpus too small, model not found, no chat template, the brief
            model failed (the briefs made so far are kept; run again to resume).
    """
    from datasets import Dataset

    from mimetic.models.loading import load_tokenizer

    vc = workspace.load_config()
    config = config or vc.prepare
    base_model = base_model or vc.train.base_model
    docs = load_corpus(workspace)
    mode, train_units, held_units = split_held_out(docs, config)
    tokenizer = load_tokenizer(base_model)
    budget = config.max_tokens
    if config.format != "completion":
        probe = Brief("", "", "", "", "x", "", "")
        overhead = len(encode_example("", tokenizer, config, {"title": "x" * 40}, False, probe)["input_ids"])
        budget = config.max_tokens - overhead - (BRIEF_ALLOWANCE if config.format in ("brief", "mixed") else 0)
        if budget < 32:
            raise MimeticError("prepare.max_tokens is too small for the chat template.", "Raise --max-tokens.")

    last_unit = {}
    for u in train_units + held_units:
        key = u["doc_id"]
        last_unit[key] = max(last_unit.get(key, -1), u["section"] if u["section"] is not None else 0)

    def chunks_of(units: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str, bool]]:
        out = []
        for u in units:
            chunks = chunk_paragraphs(u["paragraphs"], tokenizer, budget)
            for j, text in enumerate(chunks):
                ends = j == len(chunks) - 1 and (u["section"] is None or u["section"] == last_unit[u["doc_id"]])
                out.append((u, text, ends))
        return out

    train_chunks, held_chunks = chunks_of(train_units), chunks_of(held_units)
    briefs: dict[str, Brief] = {}
    briefs_path = workspace.data_dir / BRIEFS_FILE
    if config.format in ("brief", "mixed"):
        import os

        source = resolve_source(config.brief_model, base_model, config.brief_model_name, os.environ.get("MIMETIC_BRIEF_API_KEY", ""))
        passages = [("train", u["doc_id"], t) for u, t, _ in train_chunks] + [("held_out", u["doc_id"], t) for u, t, _ in held_chunks]
        briefs = make_briefs(passages, briefs_path, source, on_event=on_event,
                             paraphrase=lambda split, text: config.format == "mixed" and (split == "held_out" or mode_of(text) == "rewrite"))

    def build(chunks: list[tuple[dict[str, Any], str, bool]]) -> dict[str, list[Any]]:
        cols: dict[str, list[Any]] = {k: [] for k in ("text", "input_ids", "labels", "doc_id", "section", "n_tokens", "mode")}
        for u, text, ends in chunks:
            ex = encode_example(text, tokenizer, config, u, ends, briefs.get(passage_hash(text)))
            if sum(1 for x in ex["labels"] if x != IGNORE_INDEX) < config.min_tokens:
                continue
            cols["text"].append(text)
            cols["input_ids"].append(ex["input_ids"])
            cols["labels"].append(ex["labels"])
            cols["doc_id"].append(u["doc_id"])
            cols["section"].append(-1 if u["section"] is None else u["section"])
            cols["n_tokens"].append(len(ex["input_ids"]))
            cols["mode"].append(ex["mode"])
        return cols

    train_cols, held_cols = build(train_chunks), build(held_chunks)
    if not train_cols["text"] or not held_cols["text"]:
        raise MimeticError("After chunking, the training or held-out set is empty.", "Add more writing, or lower --max-tokens.")
    held_docs = sorted({u["doc_id"] for u in held_units}) if mode == "documents" else []
    meta = DataMeta(
        created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        base_model=base_model,
        tokenizer=getattr(tokenizer, "name_or_path", ""),
        vocab_size=len(tokenizer),
        config=config.__dict__,
        split_mode=mode,
        held_out_documents=held_docs,
        held_out_sections=[[u["doc_id"], u["section"]] for u in held_units] if mode == "sections" else [],
        train={"examples": len(train_cols["text"]), "tokens": sum(train_cols["n_tokens"])},
        held_out={"examples": len(held_cols["text"]), "tokens": sum(held_cols["n_tokens"])},
        padding_share=_padding_share(train_cols["n_tokens"], config.max_tokens),
        briefs=_briefs_summary(briefs, train_cols, held_cols) if briefs else {},
    )
    with atomic_dir(workspace.data_dir) as tmp:
        Dataset.from_dict(train_cols).save_to_disk(str(tmp / "train"))
        Dataset.from_dict(held_cols).save_to_disk(str(tmp / "held_out"))
        meta.save(tmp / "meta.json")
        if briefs:  # one row per passage of this split, in corpus order: what the writer reviews and edits
            rows = [briefs[h] for h in dict.fromkeys(passage_hash(t) for _, t, _ in train_chunks + held_chunks)]
            (tmp / BRIEFS_FILE).write_text("".join(json.dumps(b.__dict__, ensure_ascii=False) + "\n" for b in rows), encoding="utf-8")
        elif briefs_path.exists():  # another format now: the briefs (and the writer's edits) are kept for later
            shutil.copy2(briefs_path, tmp / BRIEFS_FILE)
    vc.prepare = config
    vc.train.base_model = base_model
    workspace.save_config(vc)
    return PrepareResult(
        mode,
        meta.train["examples"],
        meta.held_out["examples"],
        meta.train["tokens"],
        meta.held_out["tokens"],
        held_docs,
        meta.to_dict(),
    )


def _briefs_summary(briefs: dict[str, Brief], train: dict[str, list[Any]], held: dict[str, list[Any]]) -> dict[str, Any]:
    """What :class:`~mimetic.core.records.DataMeta` records of the briefs: where they came from, and
    how many examples of each mode each split holds."""
    from collections import Counter

    return {
        "file": BRIEFS_FILE,
        "sources": dict(Counter(b.source for b in briefs.values())),
        "paraphrases": dict(Counter(b.paraphrase_source for b in briefs.values() if b.paraphrase)),
        "modes": {"train": dict(Counter(train["mode"])), "held_out": dict(Counter(held["mode"]))},
    }


def _padding_share(lengths: list[int], max_tokens: int) -> float:
    """Share of positions that would be padding if every example were padded to ``max_tokens``."""
    if not lengths:
        return 0.0
    return 1.0 - sum(lengths) / (len(lengths) * max(max_tokens, max(lengths)))


def load_split(workspace: Workspace, split: str, where: str = "") -> Any:
    """Load ``data/<split>`` (``train`` or ``held_out``) as a HF ``Dataset``; with ``where`` (a
    version's selection, :mod:`mimetic.core.selection`) only the examples of the selected documents.

    Raises:
        MimeticError: no examples yet, the split's folder is missing or damaged, or ``where``
            cannot be read or selects no example of this split.
    """
    from datasets import load_from_disk

    workspace.data_meta()  # a clear error when there are no examples yet
    try:
        rows = load_from_disk(str(workspace.data_dir / split))
    except Exception as e:  # missing folder, damaged Arrow file or state.json: one message for all
        raise MimeticError(f"The {split.replace('_', '-')} examples in {workspace.data_dir / split} are missing or damaged "
                           f"({type(e).__name__}).", f"Make them again: mimetic prepare --workspace {workspace.root}") from None
    if not where:
        return rows
    chosen = parse_where(where)
    files = workspace.read_manifest().files
    ids = chosen.documents(files)
    keep = [i for i, d in enumerate(rows["doc_id"]) if d in ids]
    if not keep:
        what = "training" if split == "train" else "held-out"
        raise MimeticError(f"--where {where!r} selects {chosen.describe(files)}, with no {what} examples among them.",
                           "Widen the selection (mimetic versions --where EXPR shows what it selects)"
                           + ("." if split == "train" else ", or hold out more: mimetic prepare --held-out-fraction 0.15."))
    return rows.select(keep)


__all__ = ["prepare", "PrepareResult", "split_held_out", "chunk_paragraphs", "encode_example", "load_split"]
