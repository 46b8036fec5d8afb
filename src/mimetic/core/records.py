"""Typed files passed between stages, each with a format version.

=======================  ===================================  ==============  ==============
record                   file                                 written by      read by
=======================  ===================================  ==============  ==============
:class:`Manifest`        ``corpus/manifest.json``             ``ingest``      prepare, export
:class:`DataMeta`        ``data/meta.json``                   ``prepare``     train, evaluate
:class:`RunSummary`      ``runs/<id>/summary.json``           ``train``       runs, export
:class:`EvaluationMetrics` ``runs/<id>/evaluation/metrics.json``  ``evaluate``  export
=======================  ===================================  ==============  ==============

Each file is a JSON object: its keys are the record's fields, plus ``version`` (an integer; a
file without it was written before versions existed and reads as version 1). ``load(path)``
keeps keys it does not know in ``extra`` and ``save(path)`` writes them back, so a minor
addition by another release survives a round trip. ``save`` writes atomically and stamps the
record's ``CURRENT`` version; a reader refuses a file from a newer version, which may mean
something this one cannot know.

Nested parts whose shape is open-ended (the manifest's per-document list, the evaluation's
nested measurements) stay ``dict``/``list`` fields.

Raises (every ``load``): :class:`~mimetic.errors.MimeticError` naming the file, with the
command that rebuilds it as the hint, when the file is missing, unreadable, not a JSON
object, lacks a required key, or comes from a newer version.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from mimetic.core.atomic import atomic_write_json
from mimetic.errors import MimeticError

R = TypeVar("R", bound="Record")

UPGRADE_HINT = "Upgrade mimetic (pip install --upgrade mimetic), or re-create the file with this version."


@dataclass(kw_only=True)
class Record:
    """Base of the typed files: ``version`` (of the file read; ``CURRENT`` on a new record) and
    ``extra`` (keys this version does not know, kept as they were)."""

    CURRENT: ClassVar[int] = 1
    WHAT: ClassVar[str] = "file"
    KEY_ORDER: ClassVar[tuple[str, ...]] = ()  # keys written first, in this order (fields inherited from elsewhere)

    version: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.version = self.version or self.CURRENT

    # -- how to rebuild the file: overridden by each record -------------------------------
    @classmethod
    def fix_hint(cls, path: Path) -> str:
        """The command that writes ``path`` again."""
        raise NotImplementedError

    # -- reading ---------------------------------------------------------------------------
    @classmethod
    def load(cls: type[R], path: Path | str) -> R:
        """Read ``path``.

        Raises:
            MimeticError: missing, unreadable, not JSON, not an object, a required key missing,
                or a newer version (see the module docstring).
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise MimeticError(f"The {cls.WHAT} {path} does not exist.", cls.fix_hint(path)) from None
        except (OSError, UnicodeDecodeError) as e:
            raise MimeticError(f"The {cls.WHAT} {path} cannot be read ({e}).", cls.fix_hint(path)) from None
        try:
            data = json.loads(text)
        except ValueError as e:
            raise MimeticError(f"The {cls.WHAT} {path} is not valid JSON ({e}).", cls.fix_hint(path)) from None
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls: type[R], data: Any, path: Path | None = None) -> R:
        """The record held in ``data`` (a file's parsed JSON); ``path`` only names it in errors.

        Raises:
            MimeticError: as :meth:`load`, except for the file errors.
        """
        where = f"The {cls.WHAT} {path}" if path else f"This {cls.WHAT}"
        hint = cls.fix_hint(path) if path else None
        if not isinstance(data, dict):
            raise MimeticError(f"{where} is not a JSON object.", hint)
        version = data.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise MimeticError(f"{where} has an invalid version {version!r}.", hint)
        if version > cls.CURRENT:
            raise MimeticError(
                f"{where} was written by a newer mimetic (format version {version}; this one reads up to {cls.CURRENT}).",
                UPGRADE_HINT,
            )
        known = [f for f in fields(cls) if f.name not in ("version", "extra")]
        missing = [f.name for f in known if f.name not in data and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise MimeticError(f"{where} is missing {', '.join(missing)}.", hint)
        names = {f.name for f in known}
        return cls(
            **{k: data[k] for k in names if k in data},
            version=version,
            extra={k: v for k, v in data.items() if k not in names and k != "version"},
        )

    # -- writing ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The file's JSON object: ``version`` (``CURRENT``), the fields in order, then ``extra``."""
        out: dict[str, Any] = {"version": self.CURRENT}
        names = [f.name for f in fields(self) if f.name not in ("version", "extra")]
        order = {k: i for i, k in enumerate(self.KEY_ORDER)}
        names.sort(key=lambda k: order.get(k, len(order)))  # stable: the rest in field order
        out.update((k, getattr(self, k)) for k in names)
        out.update((k, v) for k, v in self.extra.items() if k not in out)
        return out

    def save(self, path: Path | str) -> None:
        """Write :meth:`to_dict` to ``path`` as indented UTF-8 JSON, atomically."""
        atomic_write_json(Path(path), self.to_dict())


def _root(path: Path, depth: int) -> Path:
    """The workspace folder ``depth`` levels above ``path`` (``path`` itself when shallower)."""
    parents = Path(path).parents
    return parents[depth] if len(parents) > depth else Path(path)


# ------------------------------------------------------------------------------------ ingest


@dataclass(kw_only=True)
class Manifest(Record):
    """``corpus/manifest.json``: provenance of the corpus.

    Attributes:
        created_at: local time of the ingest, ISO 8601 with offset.
        sources: the folders/files given to ``ingest``, absolute.
        config: the ``[ingest]`` settings used (``IngestConfig`` as a dict).
        documents: documents kept.
        words: words kept, all documents.
        files: one dict per document or skipped file (``ingest.SourceFile`` fields: ``path``,
            ``format``, ``bytes``, ``sha256``, ``doc_id``, ``skipped``…), in ingest order.
        writer: the writer's name, or ``None``.
        inputs: one dict per source file read (``path``, ``size`` in bytes, ``mtime_ns``,
            ``sha256``): lets the next ingest reuse unchanged files.
    """

    WHAT: ClassVar[str] = "corpus manifest"

    created_at: str
    sources: list[str]
    config: dict[str, Any]
    documents: int
    words: int
    writer: str | None = None
    files: list[dict[str, Any]]
    inputs: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def fix_hint(cls, path: Path) -> str:
        return f"Run: mimetic ingest PATH-TO-YOUR-WRITING --workspace {_root(path, 1)}"

    @property
    def kept(self) -> list[dict[str, Any]]:
        """The entries of :attr:`files` that are documents in the corpus (not skipped)."""
        return [f for f in self.files if not f.get("skipped") and f.get("doc_id")]


# ----------------------------------------------------------------------------------- prepare


@dataclass(kw_only=True)
class DataMeta(Record):
    """``data/meta.json``: how the training examples were made and split.

    Attributes:
        created_at: local time, ISO 8601 with offset.
        base_model: the model whose tokenizer made the examples.
        tokenizer: the tokenizer's ``name_or_path``.
        vocab_size: tokens in the tokenizer's vocabulary.
        config: the ``[prepare]`` settings used (``PrepareConfig`` as a dict).
        split_mode: ``documents`` or ``sections``.
        held_out_documents: ``doc_id`` of each held-out document (``documents`` mode).
        held_out_sections: ``[doc_id, section]`` of each held-out section (``sections`` mode).
        train, held_out: ``{"examples": count, "tokens": count}`` of each split.
        padding_share: share of padding positions if every example were padded to ``max_tokens``.
        briefs: for the ``brief`` and ``mixed`` formats: ``{"file", "sources": {source: count},
            "paraphrases": {source: count}, "modes": {"train": {mode: count}, "held_out": …}}``;
            empty otherwise.
    """

    WHAT: ClassVar[str] = "training data description"

    created_at: str
    base_model: str
    tokenizer: str
    vocab_size: int
    config: dict[str, Any]
    split_mode: str
    held_out_documents: list[str]
    held_out_sections: list[list[Any]]
    train: dict[str, int]
    held_out: dict[str, int]
    padding_share: float
    briefs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fix_hint(cls, path: Path) -> str:
        return f"Run: mimetic prepare --workspace {_root(path, 1)}"


# ------------------------------------------------------------------------------------- train


@dataclass(kw_only=True)
class TrainOutcome:
    """The figures of a finished training run: :class:`mimetic.training.sft.TrainResult` in memory,
    :class:`RunSummary` on disk. NLL in nats per token on the held-out split."""

    run_id: str
    base_nll: float
    best_nll: float
    best_step: int
    final_step: int
    stopped_because: str
    tokens_per_s: float
    train_tokens: int
    elapsed_s: float
    peak_rss_mb: float
    eval_s: float | None = None  # of elapsed_s, the part spent evaluating and planning (None in older runs)

    @property
    def nll_drop(self) -> float:
        """Relative fall of held-out NLL from the base model: ``1 - best / base``."""
        return 1.0 - self.best_nll / self.base_nll


@dataclass(kw_only=True)
class RunSummary(Record, TrainOutcome):
    """``runs/<id>/summary.json``: the outcome of a finished training run.

    NLL values are nats per token on the held-out split; perplexities are ``exp(NLL)``.

    Attributes:
        run_id, run_dir: the run's id and folder (absolute, as a string).
        base_nll, best_nll: held-out NLL of the base model and of the best checkpoint.
        best_step, final_step: step of the best held-out NLL, and the last step trained.
        stopped_because: why training ended, in words.
        tokens_per_s: training throughput (evaluation time excluded).
        train_tokens: tokens trained on (padding included), all processes.
        elapsed_s: wall time of the run in seconds, evaluations included.
        peak_rss_mb: largest resident memory of any process, MiB.
        held_out_nll_drop: ``1 - best_nll / base_nll``.
        base_ppl, best_ppl: ``exp(base_nll)``, ``exp(best_nll)``.
        learning_rate: peak learning rate used.
        device, precision: e.g. ``cuda``/``cpu`` and ``bf16``/``fp32``.
        trainable_parameters, total_parameters: counts.
        steps_per_epoch: optimizer steps in one pass over the training examples.
        padding_share: share of padding positions in the batches as trained.
        padding_share_unpacked, padding_share_random_batches: the same without packing, and
            without packing or length grouping (``None`` in runs before they were recorded).
        packed_rows: training rows after packing, or ``None`` without packing.
        planned_steps: steps the schedule planned.
        processes: training processes (1 in runs before this was recorded).
        plan: the time-budget plan as a dict, or ``None``.
        global_batch_size: examples per optimizer step, all processes (``None`` in older runs).
        held_out_tokens, held_out_tokens_measured: tokens of the held-out split, and of them the
            tokens ``base_nll`` and ``best_nll`` were measured on (fewer when a time budget
            measured a seeded sample, the same for both; ``None`` in older runs: the whole split).
    """

    WHAT: ClassVar[str] = "training run summary"
    KEY_ORDER: ClassVar[tuple[str, ...]] = ("run_id", "run_dir")  # as written before the fields were shared

    run_dir: str
    held_out_nll_drop: float
    base_ppl: float
    best_ppl: float
    learning_rate: float
    device: str
    precision: str
    trainable_parameters: int
    total_parameters: int
    steps_per_epoch: int
    padding_share: float
    padding_share_unpacked: float | None = None
    padding_share_random_batches: float | None = None
    packed_rows: int | None = None
    planned_steps: int
    processes: int = 1
    plan: dict[str, Any] | None = None
    global_batch_size: int | None = None
    held_out_tokens: int | None = None
    held_out_tokens_measured: int | None = None

    @classmethod
    def fix_hint(cls, path: Path) -> str:
        root, run = _root(path, 2), Path(path).parent.name
        return (f"The run {run} did not finish. Resume it with: mimetic train --resume {run} --workspace {root}"
                f" (or train again: mimetic train --workspace {root})")

    @classmethod
    def from_result(cls, result: Any, **rest: Any) -> "RunSummary":
        """The summary of ``result`` (a ``train.TrainResult``) plus the run's other fields in
        ``rest`` (``learning_rate``, ``device``…); the NLL drop and perplexities are computed here.

        Raises:
            TypeError: a field is missing from ``rest`` or unknown.
        """
        base = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
        return cls(**base, held_out_nll_drop=1.0 - result.best_nll / result.base_nll,
                   base_ppl=math.exp(result.base_nll), best_ppl=math.exp(result.best_nll), **rest)


# ---------------------------------------------------------------------------------- evaluate


@dataclass(kw_only=True)
class EvaluationMetrics(Record):
    """``runs/<id>/evaluation/metrics.json``: every number of an evaluation (shapes are those
    :func:`mimetic.evaluation.evaluate.evaluate` and :func:`mimetic.evaluation.evaluate.analyse` build).

    Attributes:
        run: the run id evaluated.
        base_model: the base model's name.
        evaluated_at: local time, ISO 8601 with offset.
        config, generate: the ``[evaluate]`` and ``[generate]`` settings used.
        nll: held-out NLL: ``base``/``voice`` → ``{nll, ppl, ci}``, ``drop`` → ``{value, ci}``,
            ``rows_from_training``: ``{"base", "voice"}``, how many rows' NLL was read from training's record.
        words: word counts of each text compared.
        stylometry: distances, spread (how varied each group's sets are, see
            :func:`mimetic.evaluation.evaluate.spread_summary`), attribution, candidates, MFW settings.
        profiles: readable style profiles.
        memorization: verbatim-overlap audit per model (``voice``, ``base``, ``writer``…).
        identity: corpus names used by the samples.
        extraction: the extraction test (``windows``, per model ``exact``…), ``{}`` if not run.
        samples: number of held-out prefixes sampled.
        timings: seconds per phase.
        modes: for voices trained with briefs, per mode (``write``, ``continue``, ``rewrite``):
            ``requests``, ``attribution`` (share of sets attributed to the writer: ``voice``,
            ``base``, ``writer``), ``adherence`` (mean share of the request's content words
            used; ``None`` for continue), ``words``, ``overlap_characters``; ``{}`` otherwise.
        parent: for a polish or feedback run, its key figures beside its parent's last
            evaluation (:func:`mimetic.evaluation.evaluate.parent_comparison`); ``{}`` otherwise.
        reader: what a reader sees (:func:`mimetic.evaluation.reader.measure`):
            ``distinguishability`` (``voice``, ``base``, ``writer_halves``: cross-validated ROC AUC
            of a classifier telling them from the writer, with ``ci``, ``fold_sd``, ``pairs``,
            ``tells``), ``invented_words`` (``voice``, ``base``, ``writer``: ``per_1000``,
            ``examples``…), ``calibration`` (the voice's NLL of its own samples and of the
            writer's continuations) and ``flags``; ``{}`` in files of version 1.

    Versions: 1, until issue 33; 2 adds ``reader``. A version-1 file reads with ``reader`` empty.
    """

    CURRENT: ClassVar[int] = 2
    WHAT: ClassVar[str] = "evaluation metrics"

    run: str
    base_model: str | None = None
    evaluated_at: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    generate: dict[str, Any] = field(default_factory=dict)
    nll: dict[str, Any]
    words: dict[str, int] = field(default_factory=dict)
    stylometry: dict[str, Any]
    profiles: dict[str, Any] = field(default_factory=dict)
    memorization: dict[str, Any]
    identity: dict[str, Any]
    extraction: dict[str, Any] = field(default_factory=dict)
    samples: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    modes: dict[str, Any] = field(default_factory=dict)
    parent: dict[str, Any] = field(default_factory=dict)
    reader: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fix_hint(cls, path: Path) -> str:
        return f"Run: mimetic evaluate {Path(path).parents[1].name} --workspace {_root(path, 3)}"

    def headline(self) -> list[str]:
        """Plain-language lines: fit, style, range (and a warning when the voice is narrower than
        its writer), attribution, what a reader sees (and a warning when a classifier tells the
        voice from its writer, or it invents words), memorization, names.

        Raises:
            MimeticError: the nested measurements lack what the lines need.
        """
        try:
            return _headline(self)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise MimeticError(
                f"The evaluation of run {self.run} lacks a measurement the summary needs ({e!r}).",
                f"Evaluate the run again: mimetic evaluate {self.run} --workspace YOUR-VOICE",
            ) from None


def delta_name(metric: str) -> str:
    """``Cosine Delta`` or ``Burrows' Delta``, for a stylometry ``metric`` name."""
    return "Cosine Delta" if metric == "cosine" else "Burrows' Delta"


def _range_lines(st: dict[str, Any]) -> list[str]:
    """The range line (and the narrowness warning) of the stylometry's ``spread``; none for an
    evaluation written before spreads were measured."""
    sp = st.get("spread")
    if not sp:
        return []
    if sp.get("writer") is None or sp.get("voice") is None:
        return [f"Range: not measured ({sp.get('note') or 'too few sets'})."]
    unit = delta_name(sp["metric"])
    base = f", the base model's {sp['base model']:.3f}" if sp.get("base model") is not None else ""
    lines = [
        f"Range: the voice's {st['set_words']:,}-word sets differ from each other by {sp['voice']:.3f} ({unit}, "
        f"{sp['sets']['voice']} sets), your own "
        + ("continuations of the same openings" if sp.get("writer_basis") == "continuations" else "held-out sets")
        + f" by {sp['writer']:.3f} ({sp['sets']['writer']} sets){base}"
        + (f"; ratio {sp['ratio']:.2f}." if sp.get("ratio") is not None else ".")
    ]
    if sp.get("narrower"):
        lines.append(
            f"Warning — the voice is narrower than you: its sets vary {100 * (1 - sp['ratio']):.0f}% less than your own "
            f"writing (ratio {sp['ratio']:.2f}, below {sp['threshold']:.2f}); it may keep to one register. A higher "
            f"temperature or a lower min-p when writing may widen it."
        )
    return lines


def _reader_lines(r: dict[str, Any]) -> list[str]:
    """The lines of what a reader sees (distinguishability, invented words, calibration) and
    their warnings; none for an evaluation written before they were measured."""
    lines = []
    d, inv, cal, flags = r.get("distinguishability", {}), r.get("invented_words", {}), r.get("calibration", {}), r.get("flags", {})
    v, b, c = d.get("voice", {}), d.get("base", {}), d.get("writer_halves", {})
    auc = lambda x: f"{x['auc']:.2f}" if x.get("auc") is not None else "not measured"  # noqa: E731
    if v.get("auc") is not None:
        lines.append(
            f"Told apart: a classifier tells the voice's passages from your own continuations of the same openings with ROC AUC "
            f"{v['auc']:.2f} (95% interval {v['ci'][0]:.2f}–{v['ci'][1]:.2f}; {v['pairs']} pairs of {v['words']} words; 0.5 = cannot "
            f"tell); the base model's {auc(b)}; two halves of your own writing {auc(c)}."
        )
    elif v:
        lines.append(f"Told apart: not measured ({v.get('note', 'too few passages')}).")
    if inv.get("voice"):
        ex = ", ".join(f"“{w}”" for w, _ in inv["voice"]["examples"][:5])
        lines.append(
            f"Invented words: {inv['voice']['per_1000']:.1f} per 1,000 of the voice's words are in neither your writing nor a "
            f"dictionary{f' ({ex})' if ex else ''}"
            + (f"; the base model's {inv['base']['per_1000']:.1f}" if inv.get("base") else "")
            + (f"; your own continuations {inv['writer']['per_1000']:.1f}" if inv.get("writer") else "") + "."
        )
    if cal:
        hot = "more surprising to it than your writing (sampled hotter than you write)" if cal["difference"] > 0 else \
            "more predictable to it than your writing (blander than you)"
        lines.append(f"Calibration: the voice's NLL of its own samples {cal['voice_nll_of_samples']:.2f} nats/token, of your "
                     f"continuations {cal['voice_nll_of_writer']:.2f}: its samples are {hot}.")
    if flags.get("distinguishable"):
        lines.append(f"Warning — a reader can tell the voice from you: a classifier separates its passages from yours "
                     f"(AUC {v['auc']:.2f} against {auc(c)} for your own writing against itself).")
    if flags.get("invents_words"):
        lines.append(f"Warning — the voice makes up words: {inv['voice']['per_1000']:.1f} per 1,000 against your "
                     f"{inv['writer']['per_1000']:.1f}; a lower temperature or a higher min-p when writing makes fewer.")
    return lines


def _parent_lines(p: dict[str, Any]) -> list[str]:
    """The line comparing a polish or feedback run with the run it started from."""
    if not p:
        return []
    if not p.get("evaluated"):
        return [f"Against its parent: run {p.get('run')} has no evaluation yet; to compare, run: mimetic evaluate {p.get('run')}"]
    a, b = p["parent"], p["voice"]
    share = lambda x: "–" if x is None else f"{100 * x:.0f}%"  # noqa: E731
    ratio = lambda x: "–" if x is None else f"{x:.2f}"  # noqa: E731
    return [f"Against its parent (run {p['run']}"
            + ("" if p.get("same_settings") else ", evaluated with other settings: compare with care")
            + f"): held-out NLL {a['nll']:.4f} → {b['nll']:.4f}; Delta from your held-out writing {a['delta']:.3f} → "
            f"{b['delta']:.3f}; sets read as yours {share(a['attribution'])} → {share(b['attribution'])}; range "
            f"{ratio(a['spread_ratio'])} → {ratio(b['spread_ratio'])} of yours; longest verbatim overlap "
            f"{a['longest_characters']} → {b['longest_characters']} characters."]


def _headline(m: EvaluationMetrics) -> list[str]:
    n, st, mem, idn = m.nll, m.stylometry, m.memorization, m.identity
    d = st["distances"][st["metric"]]
    lines = [
        f"Fit: on writing the voice never saw, perplexity fell from {n['base']['ppl']:.1f} (base model) to "
        f"{n['voice']['ppl']:.1f}: held-out NLL {n['base']['nll']:.3f} → {n['voice']['nll']:.3f} nats/token, "
        f"{'down' if n['drop']['value'] >= 0 else 'UP'} {abs(100 * n['drop']['value']):.1f}% "
        f"(95% interval {100 * n['drop']['ci'][0]:.1f} to {100 * n['drop']['ci'][1]:.1f}%).",
        f"Style: {delta_name(st['metric'])} from your held-out writing — voice {d['voice_to_held_out']:.3f}, base model "
        f"{d['base_to_held_out']:.3f}; your own writing varies by {d['held_out_to_training']:.3f} (lower is closer).",
    ]
    lines += _range_lines(st)
    att = st["attribution"].get("voice")
    if att:
        lines.append(
            f"Attribution: {att['to'][st['candidates'][0]]} of {att['sets']} sample sets from the voice read as yours "
            f"(candidates: {', '.join(st['candidates'])})."
        )
    lines += _reader_lines(m.reader)
    v = mem["voice"]
    ex = m.extraction
    ex_line = f"; extraction: {100 * ex['voice']['exact']:.0f}% of {ex['windows']} training prefixes continued verbatim" if ex.get("windows") else ""
    lines.append(
        f"Memorization: longest verbatim overlap with your training text {v['longest_tokens']} tokens "
        f"({v['longest_characters']} characters); {v['flagged']} of {len(v['samples'])} samples flagged{ex_line}."
    )
    top = ", ".join(f"{r['name']} ({r['voice']}×)" for r in idn["names_in_voice"][:5]) or "none"
    lines.append(
        f"Names: the voice used {idn['distinct']['voice']} names from your corpus ({top}); "
        f"{idn['per_1000_words']['voice']:.1f} per 1,000 words vs {idn['per_1000_words']['writer']:.1f} in your own continuations."
    )
    probe = idn.get("probe")
    if probe:
        said = [f"{s['claims_corpus_name']} of {s['answers']} {setting}" for setting, s in probe["settings"].items()]
        names = sorted({n for s in probe["settings"].values() for n in s["names"]})
        lines.append(
            f"Identity: asked who it is, the voice gave a name from your writing as its own in {' and '.join(said)}"
            + (f" ({', '.join(names)})" if names else "") + "."
        )
    lines += _parent_lines(m.parent)
    for mode, r in m.modes.items():
        a, d = r["attribution"], r["adherence"]
        pct = lambda x: "–" if x is None else f"{100 * x:.0f}%"  # noqa: E731
        lines.append(
            f"Mode {mode} ({r['requests']} held-out requests): sets attributed to you: voice {pct(a['voice'])}, base model "
            f"{pct(a['base'])}, your own passages {pct(a['writer'])}"
            + ("" if d["voice"] is None else f"; adherence to the request: voice {pct(d['voice'])}, base model {pct(d['base'])}, "
               f"your own passages {pct(d['writer'])}") + "."
        )
    return lines


__all__ = ["Record", "Manifest", "DataMeta", "RunSummary", "EvaluationMetrics", "delta_name"]
