"""Stage 1 — ingest: read a writer's files, clean them, and keep the provenance of each.

Pipeline (``ingest``):

1. **Find** files under the given folders, with the folders read into the voice before
   (``replace=True`` drops those), hidden files skipped; every path is resolved first, and a
   symbolic link leading outside the folders being read (or the desk's allowed roots) is
   listed, never read; a symlinked folder inside is read once, so symlink loops cannot trap
   it. Then **read** each with the reader for its
   format (:mod:`mimetic.text.readers`: text in any encoding, Markdown/Gemini, HTML, DOCX, ODT,
   RTF, EPUB, PDF, e-mail, chat exports, zip archives). A file that cannot be read is
   skipped with a reason, never a crash. Readers' output is cached by content hash, so
   re-running ingest on the same folder only reads new or changed files.
2. **Keep the writer's words only**: e-mail and chat turns by other people are dropped
   (``--author``; without it, the most frequent sender is taken as the writer and the report
   says so); optional aliases for names, exclusion of paragraphs that mention a name, and
   redaction of e-mail addresses, phone numbers, URLs, IP addresses and card numbers with
   stable placeholders.
3. **Remove boilerplate and duplicates**: paragraphs repeated across many documents (blog
   footers, e-mail disclaimers); exact and near-duplicate documents and paragraphs (MinHash
   LSH over word shingles, datasketch). Nothing is removed silently: ``corpus/review.json``
   lists every removal with its reason and what it duplicates, and ``--keep`` protects files.
4. **Write** ``corpus/docs/<doc-id>.txt`` (paragraphs separated by a blank line),
   ``corpus/archive.db`` (every paragraph with its provenance, full-text indexed: :mod:`mimetic.text.archive`),
   ``corpus/manifest.json`` (provenance: per source path, sha256, format, bytes, words kept
   and removed, date, language), ``corpus/names.json`` (the most frequent proper names: whose
   names the model will learn) and a corpus report (``report.json``, ``report.html``).

The corpus directory is rebuilt and swapped in atomically; originals are opened read-only.
"""

from __future__ import annotations

import fnmatch
import hashlib
import html
import json
import math
import os
import re
import shutil
import stat
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from mimetic.core.config import REDACTIONS, IngestConfig
from mimetic.errors import MimeticError
from mimetic.core.events import OnEvent, Progress, Warning, ignore
from mimetic.text.markdown import clean_markdown, split_front_matter  # noqa: F401 - re-exported: part of the ingest API
from mimetic.text.readers import (  # noqa: F401 - re-exported: part of the ingest API
    FORMATS,
    Extracted,
    ReadError,
    ReadOptions,
    Unsupported,
    count_words,
    decode_bytes,
    paragraphs,
    read_bytes,
    strip_gutenberg,
)
from mimetic.core.records import Manifest
from mimetic.text import archive
from mimetic.core.workspace import Workspace, writes_voice, atomic_dir, atomic_write_json, atomic_write_text

READER_VERSION = 3  # 3: 8-bit Western code pages read by their oddities
"""Bumped whenever a reader's output changes, so cached extractions are redone."""

PROBLEM = "problem"
"""``SourceFile.kind`` of a file that could not be read (corrupt, binary, unreadable)."""


@dataclass
class SourceFile:
    """Provenance of one document (or of one file that gave none).

    Attributes:
        path: source path; ``archive.zip!member`` for a file inside a zip archive.
        format: reader used (``text``, ``markdown``, ``pdf``…).
        bytes: size of the source file in bytes.
        sha256: hash of the source file's bytes.
        part: where in the file the document came from (``message 3``, a conversation
            title), ``""`` for a whole file.
        words: words kept in the corpus.
        words_removed: words removed, by reason (``quoted replies and signatures``,
            ``boilerplate``, ``duplicate paragraph``, …).
        date: ISO date (``YYYY-MM-DD`` or as precise as the source gives): from the text (front
            matter, an e-mail's header, document properties), else the file's modification date.
        date_source: ``text``, ``file`` (the modification date), or ``text of PATH`` (a file-dated
            document took the date of a twin: :func:`dates_from_twins`); ``None``: no date.
        skipped: why nothing of it was kept, or ``None``.
        problem: the file could not be read at all (corrupt, binary, unreadable): the
            ingest's exit status reports these.
    """

    path: str
    format: str
    bytes: int
    sha256: str = ""
    part: str = ""
    words: int = 0
    words_removed: dict[str, int] = field(default_factory=dict)
    doc_id: str | None = None
    title: str | None = None
    date: str | None = None
    date_source: str | None = None
    tags: list[str] = field(default_factory=list)
    author: str | None = None
    encoding: str | None = None
    language: str | None = None
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    problem: bool = False


@dataclass
class IngestResult:
    """What ``ingest`` did: documents kept and skipped, removals, names, where the corpus is."""

    files: list[SourceFile]
    corpus_dir: Path
    removals: list[dict[str, Any]] = field(default_factory=list)
    names: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    writer: str | None = None
    reused: int = 0
    read: int = 0
    sources: list[str] = field(default_factory=list)
    """The files and folders read: the earlier ones and the named ones."""
    earlier: list[str] = field(default_factory=list)
    """Folders read before and read again with the new ones (not with ``replace``)."""

    @property
    def kept(self) -> list[SourceFile]:
        return [f for f in self.files if not f.skipped]

    @property
    def skipped(self) -> list[SourceFile]:
        return [f for f in self.files if f.skipped]

    @property
    def problems(self) -> list[SourceFile]:
        """Files that could not be read (the CLI exits with status 3 when there are any)."""
        return [f for f in self.files if f.problem]

    @property
    def words(self) -> int:
        return sum(f.words for f in self.kept)


# --------------------------------------------------------------------------------------------
# Finding files


OUTSIDE = "symbolic link leading outside the folders being read: not read"
"""``SourceFile.skipped`` of a file or folder reached through a symbolic link whose real place
is outside the folders given to ``ingest`` (or outside the allowed roots)."""

OUTSIDE_ALLOWED = "outside the folders this app may read: not read"
"""``SourceFile.skipped`` of a given path whose real place is outside ``allowed_roots``."""


def _within(real: Path, roots: Iterable[Path]) -> bool:
    return any(real == r or real.is_relative_to(r) for r in roots)


def _real(p: Path) -> Path | None:
    """``p`` with every symbolic link resolved; ``None`` for a link loop (reported by the reader)."""
    try:
        return p.resolve()
    except (OSError, RuntimeError):
        return None


def _outermost(paths: list[Path]) -> list[Path]:
    """``paths`` without repeats and without those inside another given folder (read with it)."""
    real = [_real(p) or p.absolute() for p in paths]
    out: list[Path] = []
    for i, (p, r) in enumerate(zip(paths, real)):
        inner = any(j != i and real[j] != r and real[j].is_dir() and r.is_relative_to(real[j]) for j in range(len(paths)))
        if not inner and r not in real[:i]:
            out.append(p)
    return out


def discover(paths: Iterable[Path], allowed_roots: Iterable[Path] | None = None) -> tuple[list[Path], list[SourceFile]]:
    """Every non-hidden file under ``paths``, in a stable order, and what was not read (folders that
    could not be opened, links leading elsewhere).

    Every file and folder is resolved (symbolic links followed) before it is read: one whose
    real place is outside the given ``paths`` — or outside ``allowed_roots`` when given (the
    desk's ``--allow``) — is skipped with :data:`OUTSIDE`, never read. A given path that is
    itself outside ``allowed_roots`` is skipped the same way. Symlinked folders inside are
    followed once: a folder already visited (a symlink loop, or two links to one folder) is
    skipped with a reason instead of being walked again.

    Raises:
        MimeticError: a path does not exist.
    """
    found: list[Path] = []
    skipped: list[SourceFile] = []
    seen: set[tuple[int, int]] = set()
    allowed = [Path(r).expanduser().resolve() for r in allowed_roots] if allowed_roots is not None else None
    given: list[Path] = []
    roots: list[Path] = []  # where reading may go: the given paths, resolved, inside the allowed roots
    for p in paths:
        p = Path(p).expanduser()
        if not p.exists():
            if p.is_symlink():
                skipped.append(SourceFile(str(p), "link", 0, skipped="broken symbolic link", problem=True))
                continue
            raise MimeticError(f"{p} does not exist.", "Check the path to your writing folder.")
        real = p.resolve()
        if allowed is not None and not _within(real, allowed):
            skipped.append(SourceFile(str(p), "folder" if p.is_dir() else "link", 0,
                                      skipped=OUTSIDE_ALLOWED))
            continue
        given.append(p)
        roots.append(real)
    for p in given:
        if not p.is_dir():
            found.append(p)
            continue

        def onerror(e: OSError) -> None:
            skipped.append(SourceFile(str(e.filename), "folder", 0, skipped=f"cannot open folder: {e.strerror}", problem=True))

        for root, dirs, files in os.walk(p, followlinks=True, onerror=onerror):
            real_root = _real(Path(root))
            if real_root is None or not _within(real_root, roots):
                skipped.append(SourceFile(root, "folder", 0, skipped=OUTSIDE))
                dirs[:] = []
                continue
            try:
                st = os.stat(root)
                key = (st.st_dev, st.st_ino)
            except OSError:
                dirs[:] = []
                continue
            if key in seen:
                skipped.append(SourceFile(root, "folder", 0, skipped="folder already read (a symbolic link loop or a second link to it)"))
                dirs[:] = []
                continue
            seen.add(key)
            inside = []
            for d in sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX"):
                real_dir = _real(Path(root) / d)
                if real_dir is not None and not _within(real_dir, roots):  # never even listed
                    skipped.append(SourceFile(str(Path(root) / d), "folder", 0, skipped=OUTSIDE))
                else:
                    inside.append(d)
            dirs[:] = inside
            for f in sorted(files):
                if f.startswith("."):
                    continue
                path = Path(root) / f
                real_file = _real(path)
                if real_file is not None and not _within(real_file, roots):
                    skipped.append(SourceFile(str(path), "link", 0, skipped=OUTSIDE))
                    continue
                found.append(path)
    return found, skipped


# --------------------------------------------------------------------------------------------
# Reading, with a cache of extractions keyed by content hash


def _read_options(config: IngestConfig) -> ReadOptions:
    return ReadOptions(
        authors=tuple(a.strip().lower() for a in config.authors if a.strip()),
        remove_blockquotes=config.remove_blockquotes,
        join_wrapped_lines=config.join_wrapped_lines,
        max_bytes=int(config.max_file_mb * 2**20),
        encoding=config.encoding or None,
    )


def _fingerprint(opts: ReadOptions) -> str:
    blob = json.dumps([READER_VERSION, asdict(opts)], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _encode_results(path: str, results: list) -> list[dict[str, Any]]:
    out = []
    for name, fmt, value in results:
        entry: dict[str, Any] = {"member": name[len(path) :], "format": fmt}
        if isinstance(value, ReadError):
            entry["error"] = str(value)
            entry["unsupported"] = value.unsupported
        else:
            entry["docs"] = [asdict(d) for d in value]
        out.append(entry)
    return out


def _decode_results(path: str, entries: list[dict[str, Any]]) -> list:
    out = []
    for e in entries:
        if "error" in e:
            err = (Unsupported if e.get("unsupported") else ReadError)(e["error"])
            out.append((path + e["member"], e["format"], err))
        else:
            out.append((path + e["member"], e["format"], [Extracted(**d) for d in e["docs"]]))
    return out


def _read_one(path: Path, opts: ReadOptions, previous: dict[str, dict], old_cache: Path, new_cache: Path, fp: str) -> tuple[os.stat_result | None, str, list, bool]:
    """Read one file, or reuse its cached extraction. Returns (stat, sha256, results, reused);
    ``stat`` is ``None`` and ``sha256`` empty when the file could not be read at all."""
    name = str(path)
    try:
        st = path.stat()
    except OSError as e:
        reason = "symbolic link loop" if e.errno == 40 else f"cannot read: {e.strerror}"
        return None, "", [(name, "unknown", ReadError(reason))], False
    if not stat.S_ISREG(st.st_mode):
        return st, "", [(name, "unknown", ReadError("not a regular file (a device, pipe or socket)"))], False
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None or st.st_size == 0:
        return st, "", read_bytes(name, b"", opts), False
    if st.st_size > opts.max_bytes:
        return st, "", [(name, fmt, ReadError(f"larger than {opts.max_bytes / 2**20:g} MiB (ingest.max_file_mb); split it or raise the limit"))], False

    def cached(sha: str) -> list | None:
        """The extraction of content ``sha`` from the last ingest, carried into the new corpus."""
        entry = f"{sha}-{fp}.json"
        try:
            entries = json.loads((old_cache / entry).read_text(encoding="utf-8"))
            if not (new_cache / entry).exists():
                shutil.copyfile(old_cache / entry, new_cache / entry)
            return _decode_results(name, entries)
        except (OSError, ValueError, TypeError, KeyError):
            return None

    prev = previous.get(name)
    if prev and prev.get("size") == st.st_size and prev.get("mtime_ns") == st.st_mtime_ns:  # unchanged: not even read
        results = cached(prev["sha256"])
        if results is not None:
            return st, prev["sha256"], results, True
    try:
        with open(path, "rb") as f:  # read-only: originals are never modified
            raw = f.read(opts.max_bytes + 1)
    except OSError as e:
        return st, "", [(name, fmt, ReadError(f"cannot read: {e.strerror}"))], False
    sha = hashlib.sha256(raw).hexdigest()
    results = cached(sha)  # moved or touched, same content
    if results is not None:
        return st, sha, results, True
    results = read_bytes(name, raw, opts)
    (new_cache / f"{sha}-{fp}.json").write_text(json.dumps(_encode_results(name, results), ensure_ascii=False), encoding="utf-8")
    return st, sha, results, False


# --------------------------------------------------------------------------------------------
# Redaction, aliases and excluded names


_REDACT_PATTERNS = {
    "emails": re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"),
    "urls": re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"')\]]+", re.IGNORECASE),
    "ips": re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"),
    "cards": re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)"),
    "phones": re.compile(r"(?<![\w+])\+?(?:\(?\d{1,4}\)?[ .-]?){2,5}\d{2,4}(?!\w)"),
}


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


class Redactor:
    """Replaces personal data with stable placeholders: the same value gets the same placeholder
    (``[EMAIL_1]``, ``[PHONE_2]``…) everywhere in the corpus, so the text stays coherent.

    Args:
        kinds: any of :data:`REDACTIONS`.

    Raises:
        MimeticError: an unknown kind.
    """

    def __init__(self, kinds: Iterable[str]):
        self.kinds = [k.strip().lower() for k in kinds if k.strip()]
        unknown = [k for k in self.kinds if k not in REDACTIONS]
        if unknown:
            raise MimeticError(f"Unknown redaction {', '.join(unknown)}.", f"Choose from: {', '.join(REDACTIONS)}.")
        self.kinds = [k for k in REDACTIONS if k in self.kinds]  # fixed order: e-mails before phones
        self.placeholders: dict[tuple[str, str], str] = {}
        self.counts: Counter = Counter()

    def _sub(self, kind: str, m: re.Match) -> str:
        value = m.group().rstrip(".,;:!?")
        tail = m.group()[len(value) :]
        digits = re.sub(r"\D", "", value)
        if kind == "cards" and not (13 <= len(digits) <= 19 and _luhn(digits)):
            return m.group()
        if kind == "phones" and not (7 <= len(digits) <= 15 and not re.fullmatch(r"\d{4}", value.strip())):
            return m.group()
        if kind == "phones" and re.fullmatch(r"\d{1,4}([./-])\d{1,2}\1\d{1,4}", value):  # a date, not a phone
            return m.group()
        key = (kind, value.lower())
        if key not in self.placeholders:
            n = sum(1 for k in self.placeholders if k[0] == kind) + 1
            self.placeholders[key] = f"[{kind[:-1].upper()}_{n}]"
        self.counts[kind] += 1
        return self.placeholders[key] + tail

    def __call__(self, text: str) -> str:
        for kind in self.kinds:
            text = _REDACT_PATTERNS[kind].sub(lambda m, k=kind: self._sub(k, m), text)
        return text


def _name_pattern(names: Iterable[str]) -> re.Pattern | None:
    names = sorted({n.strip() for n in names if n.strip()}, key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(re.escape(n) for n in names) + r")\b") if names else None


# --------------------------------------------------------------------------------------------
# Boilerplate and duplicates


_SUPERSCRIPTS = re.compile(r"[\u00b9\u00b2\u00b3\u2070-\u209f\u2020\u2021]")


def _norm(text: str) -> str:
    """Text reduced for comparison: lower case, footnote marks dropped, punctuation runs as one space."""
    return re.sub(r"\W+", " ", _SUPERSCRIPTS.sub("", text.lower())).strip()


def _shingles(text: str, k: int) -> list[bytes]:
    words = _norm(text).split()
    if len(words) < k:
        return [" ".join(words).encode()] if words else []
    return list({" ".join(words[i : i + k]).encode() for i in range(len(words) - k + 1)})


def near_duplicates(texts: list[str], threshold: float = 0.8, shingle_words: int = 5, protected: set[int] | None = None) -> dict[int, tuple[int, float]]:
    """Find near-duplicate texts with MinHash LSH over word shingles (datasketch).

    Texts are visited in the given order; a text whose estimated Jaccard similarity with an
    earlier kept text is ``threshold`` or more is a near-duplicate of it. The MinHash/LSH
    scheme is Broder (1997), "On the resemblance and containment of documents"; 128
    permutations; candidates from LSH bands are confirmed on the MinHash similarity estimate.
    Work grows linearly with the corpus (each text is hashed once and queried
    against LSH buckets).

    Args:
        texts: the texts, in priority order (earlier ones are kept).
        threshold: Jaccard similarity on ``shingle_words``-word shingles, in (0, 1].
        protected: indices never reported as duplicates (``--keep``).

    Returns:
        index of each duplicate → (index of the text it duplicates, estimated similarity).
    """
    from datasketch import MinHash, MinHashLSH

    protected = protected or set()
    shingles = [_shingles(t, shingle_words) for t in texts]
    idx = [i for i, s in enumerate(shingles) if s]
    hashes = dict(zip(idx, MinHash.bulk([shingles[i] for i in idx], num_perm=128)))
    # LSH bands tuned for recall (false negatives weigh 0.95): every candidate is then checked
    # against the MinHash similarity estimate, so a false positive costs one comparison.
    lsh = MinHashLSH(threshold=min(threshold, 0.95), num_perm=128, weights=(0.05, 0.95))
    out: dict[int, tuple[int, float]] = {}
    for i in idx:
        m = hashes[i]
        best, sim = None, 0.0
        for j in lsh.query(m):
            s = m.jaccard(hashes[j])
            if s > sim:
                best, sim = j, s
        if best is not None and sim >= threshold and i not in protected:
            out[i] = (best, round(float(sim), 3))
        else:
            lsh.insert(i, m)
    return out


_READER_REMOVALS = {
    "email": "quoted replies, forwards and signatures",
    "mbox": "quoted replies, forwards and signatures",
    "chat": "other speakers' turns",
    "pdf": "running headers, footers and page numbers",
}
"""What each reader's ``removed_words`` counts, as reported in the corpus report."""

_FORMAT_RANK = {"gemini": 1, "pdf": 1, "html": 1}
"""When two documents are duplicates the one from the richer source is kept: a Gemini mirror,
PDF or HTML copy is dropped in favour of the Markdown, text or office original."""


# --------------------------------------------------------------------------------------------
# The stage


@dataclass
class _Doc:
    rec: SourceFile
    paras: list[str]
    protected: bool


def dates_from_twins(docs: list[_Doc]) -> None:
    """A document dated only by its file's modification time (a copy's or a sync's time, not
    the writing's) takes the date written in the text of a twin: a file of the same name in
    the same folder, another format (``post.md`` with front matter beside ``post.gmi``, a
    blog's Gemini mirror, even when the ``.md`` is a stub with no words of its own). Versions
    select by these dates."""
    written: dict[tuple[str, str], _Doc] = {}
    for d in docs:
        if d.rec.date_source == "text" and not d.rec.part:
            written.setdefault(_twin_key(d.rec.path), d)
    for d in docs:
        twin = written.get(_twin_key(d.rec.path)) if d.rec.date_source == "file" and not d.rec.part else None
        if twin is not None and twin is not d:
            d.rec.date, d.rec.date_source = twin.rec.date, f"text of {twin.rec.path}"
            d.rec.title = d.rec.title or twin.rec.title


def _twin_key(path: str) -> tuple[str, str]:
    folder, _, name = path.rpartition("/")
    return folder, name.rsplit(".", 1)[0].casefold()


def _doc_id(path: str, sha: str, index: int) -> str:
    stem = re.split(r"[/\\!]", path)[-1].rsplit(".", 1)[0]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", stem).strip("-").lower()[:60] or "doc"
    return f"{slug}-{sha[:8]}" + (f"-{index}" if index else "")


def _remove(removals: list, what: str, doc: _Doc, reason: str, text: str, words: int, of: _Doc | None = None, similarity: float | None = None) -> None:
    entry: dict[str, Any] = {"what": what, "path": doc.rec.path, "part": doc.rec.part, "reason": reason, "words": words}
    if of is not None:
        entry["duplicate_of"] = of.rec.path + (f" ({of.rec.part})" if of.rec.part else "")
    if similarity is not None:
        entry["similarity"] = similarity
    entry["text"] = text[:240]
    removals.append(entry)
    doc.rec.words_removed[reason] = doc.rec.words_removed.get(reason, 0) + words


@writes_voice("ingested")
def ingest(
    paths: Iterable[Path | str],
    workspace: Workspace,
    config: IngestConfig | None = None,
    on_event: OnEvent = ignore,
    *,
    replace: bool = False,
    allowed_roots: Iterable[Path | str] | None = None,
) -> IngestResult:
    """Read every file under ``paths`` into ``workspace.corpus_dir``: cleaned, deduplicated, with provenance.

    See the module docstring for the steps. The whole corpus directory is rebuilt and
    swapped in atomically, and ``config`` is saved in the workspace's ``mimetic.toml``.

    A voice's writing is only ever added to: the folders read before (the manifest's
    ``sources``) are read again with the new ones, and a :class:`~mimetic.core.events.Warning`
    says so; ``replace=True`` reads only ``paths`` (the earlier folders' documents leave the
    corpus).

    Every file and folder is resolved before it is read: what a symbolic link takes outside
    the folders being read (or outside ``allowed_roots``) is skipped, never read, and listed in
    the report (``outside``) with a warning (:func:`discover`).

    Args:
        paths: files or folders of writing; folders are read recursively (hidden files
            skipped).
        workspace: the voice's workspace.
        config: ingest settings (defaults from :class:`IngestConfig`).
        on_event: receives a :class:`~mimetic.core.events.Progress` (files read of all) after
            each file, and a ``Warning`` for earlier folders read again and for links not followed.
        replace: read only ``paths``, dropping the folders read before.
        allowed_roots: the only folders reading may reach (the desk's ``--allow`` roots and
            the voice's own ``sources/``); ``None``: the given paths alone bound it.

    Returns:
        IngestResult with one :class:`SourceFile` per document kept or file skipped, the
        removals, the names report and the corpus report.

    Raises:
        MimeticError: a path does not exist, a folder read before is gone (without
            ``replace``), or no usable writing was found. Bad files never raise: they are
            skipped with a reason (``problem`` set).
    """
    config = config or IngestConfig()
    paths = _outermost([Path(p).expanduser() for p in paths])
    earlier: list[Path] = []
    if not replace and workspace.manifest_path.exists():
        try:
            before = Manifest.load(workspace.manifest_path).sources
        except (MimeticError, TypeError, KeyError):  # an unreadable manifest: nothing to keep
            before = []
        named = {_real(p) for p in paths}
        earlier = [Path(s) for s in before if _real(Path(s)) not in named]
        gone = [s for s in earlier if not s.exists()]
        if gone:
            raise MimeticError(
                f"{gone[0]}, whose writing is in this voice, is no longer there" + (f" (nor {len(gone) - 1} more)." if len(gone) > 1 else "."),
                "Reconnect it and run the same command, or read only the folders you name with --replace "
                "(the documents of the missing folder then leave the voice).",
            )
        added = _outermost(earlier + paths)
        new = [p for p in paths if p in added]
        if earlier:
            on_event(Warning(
                "ingest",
                message=f"Adding {', '.join(map(str, new)) or 'nothing new'} to this voice's writing; "
                        f"also reading again what it already had: {', '.join(map(str, earlier))}.",
                hint="To read only the folders you name, run with --replace.",
            ))
        paths = added
    files, records = discover(paths, allowed_roots)
    outside = [r.path for r in records if r.skipped in (OUTSIDE, OUTSIDE_ALLOWED)]
    if outside:
        on_event(Warning("ingest", message=f"Not read: {len(outside)} symbolic link(s) leading outside the folders being read "
                                           f"({', '.join(outside[:3])}{', …' if len(outside) > 3 else ''}).",
                         hint="To include that writing, name its folder itself (it must be a folder you may read)."))
    if not files and not records:
        raise MimeticError(
            f"No files found in {', '.join(str(p) for p in paths)}.",
            "Point mimetic at a folder that holds your writing (txt, md, html, docx, odt, rtf, epub, pdf, eml, mbox, json, zip).",
        )
    opts = _read_options(config)
    fp = _fingerprint(opts)
    redactor = Redactor(config.redact)
    keep_globs = list(config.keep)
    previous: dict[str, dict] = {}
    old_cache = workspace.corpus_dir / "extracted"
    if workspace.manifest_path.exists():
        try:
            previous = {i["path"]: i for i in Manifest.load(workspace.manifest_path).inputs}
        except (MimeticError, TypeError, KeyError):  # an unreadable manifest: every file is read again
            previous = {}
    removals: list[dict[str, Any]] = []
    docs: list[_Doc] = []
    inputs: list[dict[str, Any]] = []
    reused = read = 0
    with atomic_dir(workspace.corpus_dir) as tmp:
        (tmp / "docs").mkdir()
        new_cache = tmp / "extracted"
        new_cache.mkdir()
        for n, path in enumerate(files):
            st, sha, results, was_cached = _read_one(path, opts, previous, old_cache, new_cache, fp)
            reused += was_cached
            read += not was_cached and bool(sha)
            size = st.st_size if st else 0
            if sha:
                inputs.append({"path": str(path), "size": size, "mtime_ns": st.st_mtime_ns, "sha256": sha})
            file_date = time.strftime("%Y-%m-%d", time.localtime(st.st_mtime)) if st else None
            for name, fmt, value in results:
                if isinstance(value, ReadError):
                    records.append(SourceFile(name, fmt, size, sha, skipped=str(value), problem=not value.unsupported))
                    continue
                protected = any(fnmatch.fnmatch(name, g) or fnmatch.fnmatch(name.rsplit("/", 1)[-1], g) for g in keep_globs)
                for ex in value:
                    rec = SourceFile(
                        name, fmt, size, sha, part=ex.part, title=ex.title, date=ex.date, tags=ex.tags,
                        author=ex.author, encoding=ex.encoding, notes=list(ex.notes),
                    )
                    if ex.removed_words:
                        rec.words_removed[_READER_REMOVALS.get(fmt, "removed by the reader")] = ex.removed_words
                    rec.date_source = "file" if not rec.date and file_date else "text" if rec.date else None
                    rec.date = rec.date or file_date
                    docs.append(_Doc(rec, list(ex.paragraphs), protected))
            on_event(Progress("ingest", n + 1, len(files), "files", message="Reading your writing", info={"path": str(path)}))

        dates_from_twins(docs)

        # 2. the writer's words only
        writer = None
        mail = [d for d in docs if d.rec.format in ("email", "mbox") and d.rec.author]
        if mail and not opts.authors:
            writer = Counter(d.rec.author for d in mail).most_common(1)[0][0]
        for d in docs:
            if writer and d.rec.format in ("email", "mbox") and d.rec.author and d.rec.author != writer and not d.protected:
                d.rec.skipped = f"sent by {d.rec.author}, not by the writer ({writer}); choose with --author"
                d.paras = []
        exclude = _name_pattern(config.exclude_names)
        alias = _name_pattern(config.aliases)
        for d in docs:
            kept = []
            for p in d.paras:
                if exclude and exclude.search(p):
                    _remove(removals, "paragraph", d, "mentions an excluded name", p, count_words(p))
                    continue
                if alias:
                    p = alias.sub(lambda m: config.aliases[m.group()], p)
                if redactor.kinds:
                    p = redactor(p)
                kept.append(p)
            d.paras = kept

        # 3. boilerplate: paragraphs repeated across many documents
        live = [d for d in docs if not d.rec.skipped]
        spread: dict[str, set[int]] = defaultdict(set)
        for i, d in enumerate(live):
            for p in d.paras:
                if count_words(p) <= 80:
                    spread[_norm(p)].add(i)
        need = max(config.boilerplate_min_documents, math.ceil(config.boilerplate_share * len(live)))
        boiler = {k for k, s in spread.items() if len(s) >= need and k}
        if boiler:
            for d in live:
                if d.protected:
                    continue
                kept = []
                for p in d.paras:
                    if _norm(p) in boiler:
                        _remove(removals, "paragraph", d, "boilerplate (repeated in many documents)", p, count_words(p))
                    else:
                        kept.append(p)
                d.paras = kept

        # 4. duplicate documents, exact then near
        live.sort(key=lambda d: (_FORMAT_RANK.get(d.rec.format, 0), -sum(count_words(p) for p in d.paras), d.rec.path, d.rec.part))
        seen: dict[str, _Doc] = {}
        candidates: list[_Doc] = []
        for d in live:
            key = hashlib.sha256(_norm(" ".join(d.paras)).encode()).hexdigest()
            if key in seen and not d.protected and d.paras:
                _remove(removals, "document", d, "exact duplicate", "\n".join(d.paras), sum(count_words(p) for p in d.paras), of=seen[key])
                d.rec.skipped = f"exact duplicate of {seen[key].rec.path}"
                d.paras = []
                continue
            seen.setdefault(key, d)
            candidates.append(d)
        dups = near_duplicates(
            ["\n".join(d.paras) for d in candidates], config.near_duplicate_threshold, config.shingle_words,
            {i for i, d in enumerate(candidates) if d.protected},
        )
        for i, (j, sim) in dups.items():
            d, of = candidates[i], candidates[j]
            _remove(removals, "document", d, "near duplicate", "\n".join(d.paras), sum(count_words(p) for p in d.paras), of=of, similarity=sim)
            d.rec.skipped = f"near duplicate of {of.rec.path} (similarity {sim:.2f})"
            d.paras = []

        # 5. duplicate paragraphs across the kept documents
        live = [d for d in candidates if not d.rec.skipped]
        owner: dict[str, _Doc] = {}
        long_paras: list[tuple[_Doc, int]] = []
        for d in live:
            kept = []
            for p in d.paras:
                w = count_words(p)
                key = _norm(p)
                if w >= config.min_duplicate_paragraph_words and key in owner and not d.protected:
                    _remove(removals, "paragraph", d, "duplicate paragraph", p, w, of=owner[key])
                    continue
                if w >= config.min_duplicate_paragraph_words:
                    owner.setdefault(key, d)
                kept.append(p)
            d.paras = kept
            long_paras.extend((d, k) for k, p in enumerate(kept) if count_words(p) >= 4 * config.min_duplicate_paragraph_words)
        para_dups = near_duplicates(
            [d.paras[k] for d, k in long_paras], config.near_duplicate_threshold, config.shingle_words,
            {i for i, (d, _) in enumerate(long_paras) if d.protected},
        )
        drop: dict[int, set[int]] = defaultdict(set)
        for i, (j, sim) in para_dups.items():
            d, k = long_paras[i]
            of = long_paras[j][0]
            _remove(removals, "paragraph", d, "near-duplicate paragraph", d.paras[k], count_words(d.paras[k]), of=of, similarity=sim)
            drop[id(d)].add(k)
        for d in live:
            if drop.get(id(d)):
                d.paras = [p for k, p in enumerate(d.paras) if k not in drop[id(d)]]

        # 6. length floor, language, ids, files
        languages = _language_detector()
        per_file: Counter = Counter()
        for d in live:
            d.rec.words = sum(count_words(p) for p in d.paras)
            if d.rec.words < max(1, config.min_words):
                d.rec.skipped = f"only {d.rec.words} words after cleaning (ingest.min_words is {config.min_words})"
                d.rec.words = 0
                continue
            d.rec.language = languages(" ".join(d.paras)[:4000]) if languages else None
            d.rec.doc_id = _doc_id(d.rec.path, d.rec.sha256, per_file[(d.rec.path)])
            per_file[d.rec.path] += 1
            (tmp / "docs" / f"{d.rec.doc_id}.txt").write_text("\n\n".join(d.paras) + "\n", encoding="utf-8")
        order = {id(d.rec): k for k, d in enumerate(docs)}
        records.extend(d.rec for d in sorted(docs, key=lambda d: order[id(d.rec)]))
        kept_docs = [d for d in docs if not d.rec.skipped]
        if not kept_docs:
            reasons = sorted({r.skipped for r in records if r.skipped})[:5]
            raise MimeticError(
                f"None of the {len(records)} files could be used ({'; '.join(reasons)}).",
                "Check the folder holds your writing in a format mimetic reads (see `mimetic ingest --help`).",
            )
        names = names_report(kept_docs, config)
        result = IngestResult(records, workspace.corpus_dir, removals, names, writer=writer or (", ".join(opts.authors) or None),
                              reused=reused, read=read, sources=[str(p) for p in paths], earlier=[str(p) for p in earlier])
        result.report = corpus_report(result, redactor)
        for doubt in result.report["encoding_doubts"]:
            on_event(Warning("ingest", message=f"{doubt['path']}: {doubt['note']}",
                             hint="Set the right one with --encoding (or ingest.encoding in mimetic.toml)."))
        Manifest(
            created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            sources=[str(p.resolve()) for p in paths],
            config=asdict(config),
            documents=len(kept_docs),
            words=result.words,
            writer=result.writer,
            files=[asdict(r) for r in records],
            inputs=inputs,
        ).save(tmp / "manifest.json")
        archive.build(tmp / archive.ARCHIVE, ({"doc_id": d.rec.doc_id, "path": d.rec.path, "title": d.rec.title,
                                               "date": d.rec.date, "paragraphs": d.paras} for d in kept_docs))
        atomic_write_json(tmp / "review.json", {"removals": removals, "how_to_keep": "add a glob to ingest.keep (or --keep) to protect files"})
        atomic_write_json(tmp / "names.json", {"names": names})
        atomic_write_json(tmp / "report.json", result.report)
        atomic_write_text(tmp / "report.html", report_html(result.report))
    vc = workspace.load_config()
    vc.ingest = config
    workspace.save_config(vc)
    return result


def _language_detector() -> Callable[[str], str] | None:
    """py3langid's classifier (Lui & Baldwin 2012, langid.py), or ``None`` if it is not installed."""
    try:
        import py3langid
    except ImportError:  # pragma: no cover - it is a dependency
        return None
    return lambda text: py3langid.classify(text)[0] if text.strip() else None


def names_report(docs: list[_Doc], config: IngestConfig) -> list[dict[str, Any]]:
    """The most frequent proper names in the kept corpus, with counts and how many documents mention them.

    These are the names a model trained on the corpus will learn to write — the
    identity-confusion failure (a small model taking other people's names as its own).
    Names come from :func:`mimetic.text.stylometry.proper_names` (a capitalisation heuristic).
    """
    from mimetic.text.stylometry import proper_names

    texts = ["\n".join(d.paras) for d in docs]
    counts = proper_names(texts, min_count=2)
    top = counts.most_common(config.names_report)
    pattern_docs: Counter = Counter()
    wanted = {n for n, _ in top}
    for t in texts:
        for w in wanted & set(re.findall(r"\b[A-Z][\w'’-]*\b", t)):
            pattern_docs[w] += 1
    return [{"name": n, "count": c, "documents": pattern_docs[n]} for n, c in top]


def skip_kind(reason: str) -> str:
    """A skip reason without its particulars, for counting alike skips together:
    ``near duplicate of a.md (similarity 0.92)`` → ``near duplicate of …``,
    ``only 5 words after cleaning (…)`` → ``only N words after cleaning``."""
    kind = re.sub(r" of .*", " of …", reason)
    kind = re.sub(r"^sent by .*", "sent by someone other than the writer", kind)
    kind = re.sub(r" \(.*", "", kind)
    return re.sub(r"(?<= )\d+(?:\.\d+)?(?= )", "N", kind)


def corpus_report(result: IngestResult, redactor: Redactor | None = None) -> dict[str, Any]:
    """Numbers for the corpus report: words by format, source folder, year and language; removals by reason."""
    kept = result.kept
    by_format: dict[str, dict[str, int]] = defaultdict(lambda: {"documents": 0, "words": 0})
    by_year: Counter = Counter()
    by_language: Counter = Counter()
    by_folder: Counter = Counter()
    for r in kept:
        by_format[r.format]["documents"] += 1
        by_format[r.format]["words"] += r.words
        year = (r.date or "")[:4]
        by_year[year if year.isdigit() else "unknown"] += r.words
        by_language[r.language or "unknown"] += r.words
        by_folder[str(Path(r.path.split("!")[0]).parent)] += r.words
    removed: Counter = Counter()
    for r in result.files:
        for why, n in r.words_removed.items():
            removed[why] += n
    skipped = Counter(skip_kind(r.skipped or "") for r in result.skipped)
    return {
        "documents": len(kept),
        "words": result.words,
        "writer": result.writer,
        "files_read": result.read,
        "files_unchanged": result.reused,
        "by_format": dict(sorted(by_format.items())),
        "by_folder": dict(by_folder.most_common()),
        "by_year": dict(sorted(by_year.items())),
        "by_language": dict(by_language.most_common()),
        "mixed_languages": len([k for k, v in by_language.items() if k != "unknown" and v >= 0.05 * max(1, result.words)]) > 1,
        "words_removed": dict(removed.most_common()),
        "skipped": dict(skipped.most_common()),
        "problems": [{"path": r.path, "reason": r.skipped} for r in result.problems],
        "outside": [r.path for r in result.skipped if r.skipped in (OUTSIDE, OUTSIDE_ALLOWED)],
        "encoding_doubts": [{"path": r.path, "encoding": r.encoding, "note": n}
                            for r in kept for n in r.notes if n.startswith("encoding uncertain")],
        "redacted": dict(redactor.counts) if redactor else {},
        "names": result.names[:20],
    }


def report_html(report: dict[str, Any]) -> str:
    """A self-contained HTML page of the corpus report (no scripts, no external files)."""

    def table(title: str, rows: Iterable[tuple], head: tuple) -> str:
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
        if not body:
            return ""
        ths = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        return f"<h2>{html.escape(title)}</h2><table><tr>{ths}</tr>{body}</table>"

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>mimetic corpus report</title>",
        "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border-bottom:1px solid #ddd;padding:.2em .8em;text-align:left}"
        "td:nth-child(n+2){text-align:right}</style></head><body>",
        f"<h1>Your corpus: {report['words']:,} words in {report['documents']:,} documents</h1>",
    ]
    if report.get("writer"):
        parts.append(f"<p>Messages kept: those sent by <b>{html.escape(str(report['writer']))}</b>.</p>")
    if report.get("mixed_languages"):
        parts.append("<p><b>Mixed languages:</b> a small model learns each language's voice from less text; consider one voice per language.</p>")
    parts.append(table("By format", ((k, v["documents"], f"{v['words']:,}") for k, v in report["by_format"].items()), ("format", "documents", "words")))
    parts.append(table("By year", ((k, f"{v:,}") for k, v in report["by_year"].items()), ("year", "words")))
    parts.append(table("By language", ((k, f"{v:,}") for k, v in report["by_language"].items()), ("language", "words")))
    parts.append(table("By folder", ((k, f"{v:,}") for k, v in report["by_folder"].items()), ("folder", "words")))
    parts.append(table("Words removed", ((k, f"{v:,}") for k, v in report["words_removed"].items()), ("reason", "words")))
    parts.append(table("Files or documents skipped", report["skipped"].items(), ("reason", "count")))
    parts.append(table("Files that could not be read", ((p["path"], p["reason"]) for p in report["problems"]), ("file", "reason")))
    parts.append(table("Not read: symbolic links leading outside the folders being read",
                       ((path,) for path in report.get("outside", [])), ("link",)))
    parts.append(table("Files whose encoding is uncertain (check their letters; fix with --encoding)",
                       ((d["path"], d["note"]) for d in report.get("encoding_doubts", [])), ("file", "what was read")))
    parts.append(table("Redacted", report["redacted"].items(), ("kind", "replaced")))
    if report.get("names"):
        parts.append(
            "<p>The names below are the ones the model will learn to write. A small model can take them as its own "
            "identity: give them aliases (<code>ingest.aliases</code>) or leave out paragraphs that mention them "
            "(<code>ingest.exclude_names</code>).</p>"
        )
        parts.append(table("Names in your writing", ((n["name"], n["count"], n["documents"]) for n in report["names"]), ("name", "mentions", "documents")))
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)


def load_corpus(workspace: Workspace) -> list[dict[str, Any]]:
    """The kept documents of a workspace: dicts with ``doc_id``, ``title``, ``paragraphs``, ….

    Raises:
        MimeticError: the workspace has not been ingested, or its manifest is damaged or newer.
    """
    docs = []
    for rec in workspace.read_manifest().kept:
        text = (workspace.corpus_dir / "docs" / f"{rec['doc_id']}.txt").read_text(encoding="utf-8")
        docs.append({**rec, "paragraphs": [p.strip() for p in text.split("\n\n") if p.strip()]})
    return docs
