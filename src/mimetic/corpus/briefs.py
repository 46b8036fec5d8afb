"""Briefs and paraphrases for every passage (instruction back-translation), and the three modes.

A voice trained only to continue text cannot be asked for "a storm over a harbour town, told by
a child". This module writes, for every training and held-out chunk, a short **brief** of what
the passage does (subject, form, tone, point of view) and, for rewrite training, a plain
**paraphrase** of it; :mod:`mimetic.corpus.prepare` then trains brief → passage (``--format brief``)
or three modes from one adapter (``--format mixed``). Producing instructions for existing text
with a model is *instruction back-translation* (Li et al. 2023, "Self-Alignment with
Instruction Backtranslation"); the writer-facing recipe is the one of the accounts this
project grew from (an LLM wrote "Write a passage that …" for each of 650 snippets).

**Where briefs come from** (:func:`resolve_source`), in order of what the writer has:

* an OpenAI-compatible server the writer names (Ollama, llama.cpp's server, LM Studio,
  ``mimetic serve``): :class:`ServerSource`, through the official ``openai`` client; only the
  address typed is ever contacted;
* a local GGUF file (llama.cpp) or a saved transformers instruct model: :class:`LlamaSource`,
  :class:`TransformersSource`;
* ``base``: the voice's base model when it is an instruct model (the embedded
  SmolLM2-135M-Instruct runs from its own GGUF: weak, but offline);
* ``extractive``: no model at all (:func:`extractive_brief`, :func:`notes`).

A model's reply that is not usable (empty, far too long, the passage copied back) is replaced
by the extractive brief for that passage, and the row says so. Briefs are cached by a SHA-256 of
the passage in ``data/briefs.jsonl``, appended as they are made (an interrupted run resumes
where it stopped), and the writer may edit that file before training: an edited brief is
used as it is. Each brief is made from its own passage alone, so a held-out passage's text
only ever reaches the held-out example built from it.

**Modes** (:func:`request`): *write* (brief → passage), *continue* (opening → the rest),
*rewrite* (a plain paraphrase → the writer's passage), each marked by a short prefix of the
user turn (``Write:``, ``Continue:``, ``Rewrite in my voice:``).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Protocol

from mimetic.errors import MimeticError
from mimetic.core.events import OnEvent, Progress, ignore
from mimetic.models.hardware import usable_cpus
from mimetic.text.stylometry import FUNCTION_WORDS, SENTENCE_END, proper_names, words

MODES = ("write", "continue", "rewrite")
MARKERS = {"write": "Write: ", "continue": "Continue: ", "rewrite": "Rewrite in my voice: "}
# What each training format teaches; chat voices answer any request as it is written.
FORMAT_MODES = {"completion": ("continue",), "chat": ("write", "continue", "rewrite"), "brief": ("write",),
                "mixed": ("write", "continue", "rewrite")}
BRIEFS_FILE = "briefs.jsonl"
MAX_BRIEF_WORDS = 60
MAX_REQUEST_WORDS = 300  # a brief longer than this is a draft: refused with the commands for drafts
MIN_BRIEF_WORDS = 3

# Words a brief uses to describe a passage rather than its content: not counted by adherence.
_META_WORDS = set(
    "passage passages write writing written words word piece text scene account narrative narrator narration told tell "
    "tells telling voice tone form style point view person first second third mostly short long about around opens "
    "opening begins beginning describes describing description mood register using uses use dialogue prose story "
    "reflective plain present past tense brief something someone".split()
)
_STOP = set(FUNCTION_WORDS) | set(
    "also just very much more most some any all each every own other such only one two like even still again ever "
    "never really quite rather well how why where whose its it's i'm i'd i've i'll don't didn't can't won't "
    "were isn't wasn't aren't there's that's what's let's upon yes oh said says say beyond towards toward across "
    "behind against near above below along around among within onto until though although because since unless "
    "whether perhaps nothing anything everything nobody anybody everybody somebody myself yourself himself herself "
    "itself ourselves themselves himself these those being having got get gets going went come came made make "
    "must shall might could would should yet ago away back down off out up entry".split()
)


# Kept in notes although they are function words: without them a draft's "did not go" becomes "go".
_NEGATIONS = set("not no nor never nothing nobody none neither nowhere without cannot".split())


def passage_hash(text: str) -> str:
    """The cache key of a passage: the first 16 hex digits of the SHA-256 of its UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def mode_of(text: str) -> str:
    """The mode a training passage teaches in the ``mixed`` format: one of :data:`MODES`, drawn
    from its hash, so about a third each and the same passage always gets the same mode."""
    return MODES[int(passage_hash(text)[:8], 16) % len(MODES)]


def default_mode(fmt: str) -> str | None:
    """The mode a plain prompt asks of a voice trained in format ``fmt``: ``continue``
    (completion and mixed voices), ``write`` (brief voices), none for chat voices (the prompt
    is the request as written)."""
    return {"completion": "continue", "brief": "write", "mixed": "continue"}.get(fmt)


def request(fmt: str, mode: str | None, text: str, from_notes: bool = False) -> str:
    """The user turn (or, for a completion voice, the text) that asks a voice trained in format
    ``fmt`` for ``mode`` on ``text`` (a brief, an opening, or a draft). ``mode`` ``None`` (a
    chat voice's plain prompt, :func:`default_mode`) gives ``text`` as written. ``from_notes``:
    the voice learned to rewrite from :func:`notes`, so a draft is reduced to notes first, as
    its training paraphrases were.

    Raises:
        MimeticError: the voice was not trained for that mode (the hint says how to train it),
            ``text`` is empty or has no words, or a brief runs over :data:`MAX_REQUEST_WORDS`.
    """
    if mode is None:
        return text
    if mode not in MODES:
        raise MimeticError(f"Unknown mode {mode!r}.", f"Use one of: {', '.join(MODES)}.")
    if mode == "rewrite" and from_notes:
        text = notes(text)
    what = {"write": "brief", "continue": "opening", "rewrite": "draft"}[mode]
    if not text.strip():
        raise MimeticError(f"The {what} is empty.", f"Give a {what} to work from.")
    if mode != "continue" and not words(text):
        raise MimeticError(f"The {what} has no words in it ({text.strip()[:40]!r}).", f"Give a {what} in words.")
    if mode == "write" and len(text.split()) > MAX_REQUEST_WORDS:
        raise MimeticError(f"That brief is {len(text.split()):,} words long; a brief says in a sentence or two what to write.",
                           "Shorten it, or rewrite the text in the voice (mimetic rewrite FILE) or continue it (--continue-from FILE).")
    if mode not in FORMAT_MODES.get(fmt, ()):
        taught = {"completion": "to continue text", "brief": "to write from briefs"}.get(fmt, f"in the {fmt} format")
        how = "prepare --format mixed" if mode != "write" or fmt == "brief" else "prepare --format brief (or mixed)"
        raise MimeticError(f"This voice was trained {taught}, not to {mode}.",
                           f"Make briefs and train the mode: mimetic {how}, then mimetic train.")
    if fmt == "completion":
        return text
    if fmt == "chat":
        return text if mode != "rewrite" else MARKERS["rewrite"] + text
    return MARKERS[mode] + text.strip()


def split_opening(text: str, share: float = 0.3) -> tuple[str, str]:
    """Cut a passage into an opening (whole sentences, about ``share`` of its words, at least
    one sentence) and the rest, for *continue* examples. Returns ``(opening, rest)``; ``rest`` is
    empty when the passage is a single sentence."""
    text = text.strip()
    total = max(1, len(text.split()))
    for m in SENTENCE_END.finditer(text):  # boundaries: closing quotes stay with their sentence
        if len(text[: m.start()].split()) >= share * total:
            return text[: m.end()].strip(), text[m.end() :].strip()
    ends = list(SENTENCE_END.finditer(text))
    if not ends:
        return text, ""
    return text[: ends[-1].end()].strip(), text[ends[-1].end() :].strip()


def content_words(text: str) -> list[str]:
    """Lower-cased content words of ``text`` (no function words, no describing-words of briefs,
    at least three letters), crudely stemmed (plural ``s``, ``ed``, ``ing``, ``ly`` dropped), so
    *storms* matches *storm* and *walked* matches *walking*."""
    out = []
    for w in words(text):
        if len(w) < 3 or w in _STOP or w in _META_WORDS:
            continue
        out.append(_stem(w))
    return out


def _stem(w: str) -> str:
    for suffix in ("ings", "ing", "edly", "ed", "ly", "es", "s"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            return w[: -len(suffix)]
    return w


def adherence(source: str, output: str) -> float | None:
    """Share of the distinct content words of ``source`` (a brief, or a draft to rewrite) that
    ``output`` uses (:func:`content_words`): 1.0 when the output addresses every subject the
    brief names, 0 when it ignores them. ``None`` when ``source`` has no content word.

    A lexical proxy in the spirit of keyword-coverage measures of instruction following (e.g.
    the keyword constraints of IFEval, Zhou et al. 2023): it counts what is named, not whether
    the tone or point of view was followed."""
    want = set(content_words(source))
    if not want:
        return None
    have = set(content_words(output))
    return len(want & have) / len(want)


# ------------------------------------------------------------------------------ extractive briefs


def _form(text: str) -> list[str]:
    ws = words(text)
    n = max(1, len(ws))
    c = Counter(ws)
    first = (c["i"] + c["me"] + c["my"] + c["we"] + c["our"]) / n
    second = (c["you"] + c["your"]) / n
    third = (c["he"] + c["she"] + c["his"] + c["her"] + c["they"] + c["him"]) / n
    quoted = sum(len(m) for m in re.findall(r"[\"“][^\"”]{2,}[\"”]", text)) / max(1, len(text))
    form = []
    if first >= 0.025 and first >= third / 2:
        form.append("in the first person")
    elif second >= 0.03:
        form.append("addressed to the reader")
    elif third >= 0.02:
        form.append("in the third person")
    if quoted >= 0.4:
        form.append("mostly dialogue")
    elif quoted >= 0.15:
        form.append("with some dialogue")
    if text.count("?") >= 3 and text.count("?") * 40 > n:
        form.append("full of questions")
    return form


def key_terms(text: str, k: int = 4) -> list[str]:
    """Up to ``k`` terms a passage is about: its most frequent proper names, then its most
    frequent content words (ties broken by first appearance)."""
    names = proper_names([text], min_count=1)
    first_seen = {w: i for i, w in reversed(list(enumerate(words(text))))}
    picked = [n for n, c in sorted(names.items(), key=lambda x: (-x[1], first_seen.get(x[0].lower(), 1 << 30))) if c >= 2][:2]
    taken = {p.lower() for p in picked}
    stems: Counter = Counter()
    shown: dict[str, str] = {}
    for w in words(text):
        if len(w) < 4 or w in _STOP or w in _META_WORDS or w in taken:
            continue
        s = _stem(w)
        stems[s] += 1
        shown.setdefault(s, w)
    for s, _ in sorted(stems.items(), key=lambda x: (-x[1], first_seen.get(shown[x[0]], 1 << 30))):
        if len(picked) >= k:
            break
        if shown[s] not in taken and stems[s] >= 2 or len(picked) < 2:
            picked.append(shown[s])
            taken.add(shown[s])
    return picked[:k]


def extractive_brief(text: str) -> str:
    """A brief made without any model: length, form (person, dialogue, questions), the terms
    the passage is most about, and how it opens (the first words of its first sentence).

    Deterministic; e.g. *"A passage of about 180 words, in the first person, with some dialogue,
    about Holmes, Watson, letter and door; it opens on called and friend."*"""
    n = len(text.split())
    about = key_terms(text)
    parts = [f"A passage of about {max(10, round(n, -1))} words"] + _form(text)
    brief = ", ".join(parts)
    if about:
        brief += ", about " + (", ".join(about[:-1]) + " and " + about[-1] if len(about) > 1 else about[0])
    first = SENTENCE_END.split(text.strip(), maxsplit=1)[0]
    subject = [w for w in words(first) if len(w) >= 3 and w not in _STOP and w not in _META_WORDS and w not in about][:2]
    if subject:
        brief += f"; it opens on {' and '.join(subject)}"
    return brief + "."


def notes(text: str) -> str:
    """A model-free stand-in for a paraphrase: the passage reduced to its content words, sentence
    by sentence (``" / "`` between sentences). The writer's function words, punctuation and
    rhythm — what stylometry measures — are gone; what happens is kept. A voice trained on
    these rewrites from notes; :func:`mimetic.voice.generate.rewrite` reduces a draft the same way.
    Idempotent: notes (no sentence punctuation, ``" / "`` between sentences) come back unchanged."""
    if " / " in text and not re.search(r"[.!?;,:]", text):
        return text.strip()
    out = []
    for s in SENTENCE_END.split(text.strip()):
        kept = [w for w in re.findall(r"[^\W_]+(?:['’][^\W_]+)*", s)
                if (low := w.lower().replace("’", "'")) not in _STOP or low in _NEGATIONS or low.endswith("n't")]
        if kept:
            out.append(" ".join(kept))
    return " / ".join(out)


# ------------------------------------------------------------------------------ model sources


BRIEF_SYSTEM = "You describe passages of prose as short writing briefs. You never quote the passage."
BRIEF_EXAMPLE = "A child's account of a storm over a harbour town, breathless and frightened, in the first person"
BRIEF_PROMPT = (
    "Passage:\n\n{text}\n\n"
    "In one sentence of at most 30 words, describe what this passage does: its subject, its form, its tone and its "
    "point of view, as a brief a writer could write it from (for example: \"" + BRIEF_EXAMPLE + "\"). Answer with "
    "the brief only."
)
PARAPHRASE_SYSTEM = "You rewrite prose in plain, neutral, everyday English."
PARAPHRASE_PROMPT = (
    "Rewrite this passage in plain, neutral prose. Keep every event, fact and name, but use your own words and "
    "simple sentences, and do not imitate the author's style. Answer with the rewrite only.\n\nPassage:\n\n{text}"
)


class BriefSource(Protocol):
    """Something that answers a chat request: ``name`` (shown in ``briefs.jsonl``) and
    :meth:`chat`, which returns the reply's text or raises :class:`MimeticError`."""

    name: str

    def chat(self, system: str, user: str, max_tokens: int) -> str: ...


class ServerSource:
    """An OpenAI-compatible server the writer named, through the official ``openai`` client
    (``POST {url}/chat/completions``, temperature 0). ``api_key`` is sent only if given."""

    def __init__(self, url: str, model: str, api_key: str = "", timeout_s: float = 120.0):
        import openai

        self.url, self.model = url.rstrip("/"), model
        self.name = f"{model or 'server'} @ {self.url}"
        self._client = openai.OpenAI(base_url=self.url, api_key=api_key or "not-needed", timeout=timeout_s, max_retries=1)

    def _pick_model(self) -> str:
        if self.model:
            return self.model
        try:
            listed = [m.id for m in self._client.models.list()]
        except Exception as e:  # noqa: BLE001 - the server's own error is in the message
            raise self._error(e) from None
        if not listed:
            raise MimeticError(f"The server at {self.url} lists no models.", "Name one with --brief-model-name.")
        self.model = listed[0]
        self.name = f"{self.model} @ {self.url}"
        return self.model

    def _error(self, e: Exception) -> MimeticError:
        import openai

        if isinstance(e, openai.APITimeoutError):
            what = "did not answer in time"
        elif isinstance(e, openai.APIConnectionError):
            what = "cannot be reached (is it running?)"
        elif isinstance(e, openai.APIStatusError):
            what = f"answered with an error ({e.status_code}: {str(e.message)[:160]})"
        else:
            what = f"sent a reply that is not an OpenAI-style answer ({type(e).__name__})"
        return MimeticError(f"The brief model's server at {self.url} {what}.",
                            "Start it (or check the address and --brief-model-name), then run the same command again: "
                            "the briefs made so far are kept.")

    def chat(self, system: str, user: str, max_tokens: int) -> str:
        model = self._pick_model()
        try:
            reply = self._client.chat.completions.create(
                model=model, messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                max_tokens=max_tokens, temperature=0.0)
            text = reply.choices[0].message.content
        except MimeticError:
            raise
        except Exception as e:  # noqa: BLE001 - connection, timeout, HTTP status, malformed JSON
            raise self._error(e) from None
        if not isinstance(text, str):
            raise self._error(TypeError("no message content"))
        return text


class LlamaSource:
    """A local GGUF instruct model run by llama.cpp (``llama_cpp.Llama.create_chat_completion``,
    the chat template stored in the GGUF, temperature 0)."""

    def __init__(self, path: str, name: str | None = None, n_ctx: int = 4096):
        try:
            import llama_cpp
        except ImportError as e:
            raise MimeticError("llama-cpp-python is not installed, so a GGUF brief model cannot run.",
                               "Run `make install`, or use --brief-model extractive.") from e
        self.name = name or Path(path).name
        try:
            self._llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, verbose=False, n_threads=usable_cpus())
        except Exception as e:  # noqa: BLE001 - llama.cpp raises ValueError on unreadable files
            raise MimeticError(f"llama.cpp cannot load {path} ({type(e).__name__}).", "Give a GGUF instruct model.") from None
        self.n_ctx = n_ctx

    def chat(self, system: str, user: str, max_tokens: int) -> str:
        self._llm.reset()
        try:
            out = self._llm.create_chat_completion(
                messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                max_tokens=min(max_tokens, self.n_ctx // 4), temperature=0.0, seed=0)
        except ValueError as e:  # llama.cpp: the prompt does not fit its context
            raise MimeticError(f"The brief model could not read a passage ({e}).",
                               "Lower prepare.max_tokens, or use --brief-model extractive.") from None
        return out["choices"][0]["message"]["content"] or ""


class TransformersSource:
    """A saved transformers instruct model (a folder, or a model id in the local cache), greedy."""

    def __init__(self, name: str):
        from mimetic.models.loading import load_model, load_tokenizer

        self.name = name
        self.tokenizer = load_tokenizer(name)
        if not getattr(self.tokenizer, "chat_template", None):
            raise MimeticError(f"{name} has no chat template, so it cannot be asked for briefs.",
                               "Name an instruct (chat) model, or use --brief-model extractive.")
        self.model = load_model(name)
        self.model.eval()

    def chat(self, system: str, user: str, max_tokens: int) -> str:
        import torch

        msgs = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        ids = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        x = torch.tensor([ids])
        with torch.no_grad():
            out = self.model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=max_tokens,
                                      pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        return self.tokenizer.decode(out[0, x.shape[1]:], skip_special_tokens=True)


def resolve_source(spec: str, base_model: str, model_name: str = "", api_key: str = "") -> BriefSource | None:
    """The brief source a writer named; ``None`` means extractive (no model).

    Args:
        spec: ``extractive``; ``base`` (the voice's base model, if it is an instruct model);
            ``auto`` (``base`` when the base model is an instruct model, else extractive); an
            ``http(s)://`` address of an OpenAI-compatible API (its ``/v1``); a ``.gguf`` file;
            or a transformers model folder or id.
        base_model: the voice's base model (``train.base_model``).
        model_name: the model to ask on a server (default: the first it lists).
        api_key: sent to the server as a Bearer token, only if given.

    Raises:
        MimeticError: the file or folder does not exist, llama-cpp-python is missing, or the
            model has no chat template.
    """
    from mimetic.models.loading import resolve

    spec = (spec or "auto").strip()
    if spec == "extractive":
        return None
    if spec.startswith(("http://", "https://")):
        return ServerSource(spec, model_name, api_key)
    if spec in ("auto", "base"):
        instruct = "instruct" in base_model.lower() or "chat" in base_model.lower() or resolve(base_model).kind == "gguf"
        if not instruct:
            if spec == "base":
                raise MimeticError(f"The base model {base_model} is not an instruct model, so it cannot write briefs.",
                                   "Name a brief model (--brief-model URL, GGUF file or folder) or use --brief-model extractive.")
            return None
        spec = base_model
    src = resolve(spec)
    if src.kind == "gguf":
        return LlamaSource(src.location, src.name)
    return TransformersSource(src.location)


# ------------------------------------------------------------------------------ making the briefs


@dataclass
class Brief:
    """One row of ``data/briefs.jsonl``.

    Attributes:
        hash: :func:`passage_hash` of the passage.
        split: ``train`` or ``held_out``.
        doc_id: the passage's document.
        passage_start: the passage's first 100 characters, to find it when reviewing.
        brief: what the passage does (edit freely; used as written).
        paraphrase: a plain rewrite, or :func:`notes` (``""`` when not needed).
        source: what wrote the brief (a model's name, ``extractive``, or ``extractive
            (model reply unusable)``).
        paraphrase_source: what wrote the paraphrase (a model's name, or ``notes``).
    """

    hash: str
    split: str
    doc_id: str
    passage_start: str
    brief: str
    paraphrase: str
    source: str
    paraphrase_source: str = ""


def read_briefs(path: Path) -> dict[str, Brief]:
    """The briefs in ``path`` by passage hash (the last row of a hash wins, so appended edits
    count); unreadable lines (a run stopped mid-line, a bad edit) are skipped.

    Raises:
        MimeticError: a line other than the last is not JSON, or lacks ``hash`` or ``brief``
            (names the line).
    """
    out: dict[str, Brief] = {}
    if not path.exists():
        return out
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    for k, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            if k == len(lines):  # the last line, unfinished: a run stopped while writing it
                continue
            raise MimeticError(f"Line {k} of {path} is not valid JSON (an edit went wrong?).",
                               "Fix the line (each line is one JSON object), or delete it to have that brief made again.") from None
        if not isinstance(row, dict) or not isinstance(row.get("hash"), str) or not isinstance(row.get("brief"), str):
            raise MimeticError(f"Line {k} of {path} has no 'hash' or 'brief'.", "Fix the line (or delete it to make it again).")
        fields = {f: str(row.get(f) or "") for f in Brief.__dataclass_fields__}
        out[row["hash"]] = Brief(**fields)
    return out


def _runs(ws: list[str], n: int) -> list[str]:
    """Every run of ``n`` consecutive words of ``ws``, each joined by spaces."""
    return [" ".join(ws[i : i + n]) for i in range(max(0, len(ws) - n + 1))]


def _degenerate(text: str) -> bool:
    """A reply that loops: a 'word' over 30 characters (``Sr.ht.Sr.ht.Sr.ht…``), or fewer than
    half of its words distinct (over 12 words)."""
    ws = text.split()
    return any(len(w) > 30 for w in ws) or (len(ws) > 12 and len(set(w.lower() for w in ws)) < len(ws) / 2)


def _strip_preamble(text: str) -> str:
    """Drop an assistant's framing lines ("Here's a rewritten version…:", "Rewrite:")."""
    lines = text.strip().split("\n")
    while lines and (re.match(r"^\s*(here('s| is)|sure|certainly|of course)\b.*:\s*$", lines[0], re.I)
                     or re.match(r"^\s*(\*\*)?(rewrite|rewritten (passage|version)|paraphrase|brief)\s*:?\s*(\*\*)?\s*$", lines[0], re.I)
                     or not lines[0].strip()):
        lines.pop(0)
    return "\n".join(lines).strip()


def clean_brief(reply: str, passage: str) -> str | None:
    """A model's reply made into a brief: framing lines, labels and quotes stripped, first
    paragraph, whole sentences up to :data:`MAX_BRIEF_WORDS` words. ``None`` when unusable: too
    short, looping, copying eight or more consecutive words of the passage or four of the
    prompt's example (a small model parrots it), or naming nothing the passage is about (no
    content word in common: "This passage is a brief summary of a story")."""
    text = _strip_preamble(reply).split("\n\n")[0].strip()
    text = re.sub(r"^\s*(\*\*)?(brief|writing brief|answer)\s*:?\s*(\*\*)?\s*:?\s*", "", text, flags=re.I).strip()
    text = text.strip("\"“”'‘’* ").strip()
    if len(text.split()) < MIN_BRIEF_WORDS or _degenerate(text):
        return None
    kept: list[str] = []
    for s in SENTENCE_END.split(text):
        if kept and len(" ".join(kept + [s]).split()) > MAX_BRIEF_WORDS:
            break
        kept.append(s)
    text = " ".join(kept)
    ws = text.split()
    if len(ws) > MAX_BRIEF_WORDS:
        text = " ".join(ws[:MAX_BRIEF_WORDS]).rstrip(",;:") + "…"
    low, src, example = words(text), " ".join(words(passage)), " ".join(words(BRIEF_EXAMPLE))
    if any(r in src for r in _runs(low, 8)):
        return None
    if any(r in example and r not in src for r in _runs(low, 4)):
        return None
    if not set(content_words(text)) & set(content_words(passage)):
        return None
    return text


def clean_paraphrase(reply: str, passage: str) -> str | None:
    """A model's paraphrase, or ``None`` when unusable: under a third or over 2.5 times the
    passage's words, looping, or mostly copied (more than half of its 6-word runs are the
    passage's: then it is the writer's style, not a plain paraphrase)."""
    text = _strip_preamble(reply)
    n, m = len(text.split()), max(1, len(passage.split()))
    if n < m / 3 or n > 2.5 * m or _degenerate(text):
        return None
    a, b = words(text), words(passage)
    grams, runs = set(_runs(b, 6)), _runs(a, 6)
    if runs and sum(r in grams for r in runs) / len(runs) > 0.5:
        return None
    return text


def make_briefs(
    passages: Iterable[tuple[str, str, str]],
    path: Path,
    source: BriefSource | None,
    *,
    paraphrase: Callable[[str, str], bool] = lambda split, text: False,
    on_event: OnEvent = ignore,
) -> dict[str, Brief]:
    """Make (or reuse) a brief for every passage, appending new rows to ``path`` as they are made.

    Args:
        passages: ``(split, doc_id, text)`` of every chunk; ``split`` is ``train`` or ``held_out``.
        path: the briefs file (``data/briefs.jsonl``); rows already there are reused by hash, as
            written (edits included); a blanked brief, a missing paraphrase now needed, and an
            unedited extractive brief when a model is now named are made again.
        source: the model to ask, or ``None`` for extractive briefs and :func:`notes`.
        paraphrase: whether a passage needs a paraphrase (``mixed`` format: rewrite examples
            and every held-out passage).
        on_event: ``Progress("briefs", done, total, unit="passages")`` after each passage.

    Returns:
        ``{hash: Brief}`` for every passage given.

    Raises:
        MimeticError: the source failed (server down, slow or garbled); everything made before
            is in ``path``, so the same command resumes there.
    """
    todo = list(passages)
    have = read_briefs(path)
    out: dict[str, Brief] = {}
    made = 0
    t0 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        with open(path, "a", encoding="utf-8") as f:  # a run stopped mid-line: start the next row on its own line
            f.write("\n")
    with open(path, "a", encoding="utf-8") as f:
        for k, (split, doc_id, text) in enumerate(todo, 1):
            h = passage_hash(text)
            row = have.get(h) or out.get(h)
            needs_para = paraphrase(split, text)
            if row is not None and source is not None and row.source == "extractive" and row.brief == extractive_brief(text):
                row.brief = ""  # made without a model, never edited: a model is named now, so ask it
            if row is None or not row.brief or (needs_para and not row.paraphrase):
                row = row or Brief(h, split, doc_id, text[:100], "", "", "")
                if not row.brief:
                    row.brief, row.source = _brief(source, text)
                if needs_para and not row.paraphrase:
                    row.paraphrase, row.paraphrase_source = _paraphrase(source, text)
                f.write(json.dumps(row.__dict__, ensure_ascii=False) + "\n")
                f.flush()
                made += 1
            out[h] = row
            if made and (k % 5 == 0 or k == len(todo)):
                rate = made / max(1e-9, time.perf_counter() - t0)
                on_event(Progress("briefs", k, len(todo), unit="passages", eta_s=(len(todo) - k) / rate,
                                  message=f"briefs by {source.name if source else 'extraction'}"))
    return out


MAX_PASSAGE_WORDS = 1200  # what a brief model is shown of a passage (chunks are far shorter by default)


def _shown(text: str) -> str:
    ws = text.split(" ")
    return text if len(ws) <= MAX_PASSAGE_WORDS else " ".join(ws[:MAX_PASSAGE_WORDS]) + " …"


def _brief(source: BriefSource | None, text: str) -> tuple[str, str]:
    if source is None:
        return extractive_brief(text), "extractive"
    got = clean_brief(source.chat(BRIEF_SYSTEM, BRIEF_PROMPT.format(text=_shown(text)), 80), text)
    return (got, source.name) if got else (extractive_brief(text), "extractive (model reply unusable)")


def _paraphrase(source: BriefSource | None, text: str) -> tuple[str, str]:
    if source is None:
        return notes(text), "notes"
    n = len(text.split())
    got = clean_paraphrase(source.chat(PARAPHRASE_SYSTEM, PARAPHRASE_PROMPT.format(text=_shown(text)), min(2048, int(n * 2) + 32)), text)
    return (got, source.name) if got else (notes(text), "notes")


__all__ = [
    "MODES", "MARKERS", "FORMAT_MODES", "BRIEFS_FILE", "default_mode", "Brief", "BriefSource", "ServerSource", "LlamaSource",
    "TransformersSource", "resolve_source", "make_briefs", "read_briefs", "extractive_brief", "notes", "request",
    "mode_of", "split_opening", "content_words", "adherence", "passage_hash", "key_terms", "clean_brief",
    "clean_paraphrase",
]
