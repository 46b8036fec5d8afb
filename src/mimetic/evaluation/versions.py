"""Versions of a voice: list them, compare them on the same prompts, and see the style drift.

A *version* is a finished training run (``runs/<id>/summary.json`` written), named or not; a
run trained with ``mimetic train --version NAME --where EXPR`` learned only from the documents
the selection picks (:mod:`mimetic.core.selection`), a polish or feedback run from its parent. One
version is *published* (:meth:`mimetic.core.workspace.Workspace.published_run`): the one ``write``,
``export``, ``serve`` and the app use.

The drift view (:func:`drift`) places the writer's own writing, era by era, on the
most-frequent-word map the evaluation draws, with each version's samples beside it, and
attributes each version's 1,000-word sets to the nearest era (Cosine Delta on z-scored
relative frequencies of the most frequent words: Burrows 2002; Smith & Aldridge 2011). The
writer's own held-out sets, attributed the same way to era centroids made from the training
split, are the control: how well eras can be told apart at all.
"""

from __future__ import annotations

import gc as _gc
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mimetic.corpus.briefs import default_mode, request
from mimetic.core.config import EvaluateConfig, GenerateConfig, VoiceConfig
from mimetic.models.engines import open_voice
from mimetic.errors import MimeticError
from mimetic.evaluation.evaluate import generate_samples
from mimetic.evaluation.report import COLORS, png, png_bytes, render_drift, render_versions
from mimetic.core.events import OnEvent, Progress, ignore
from mimetic.voice.generate import Generation, log_generation, rewrites_from_notes, system_prompt_for
from mimetic.models.sampling import SamplingParams
from mimetic.core.selection import parse as parse_where
from mimetic.text.stylometry import ZScorer, attribute, chunk_tokens, most_frequent_words, relative_frequencies, spread, words
from mimetic.core.workspace import Workspace, atomic_write_bytes, atomic_write_json, atomic_write_text

DRIFT_DIR = "drift"


@dataclass
class VersionInfo:
    """One finished run as a version, for ``mimetic versions`` and the app.

    Attributes:
        run: the run id. names: the names given to it. published: it is the voice in use.
        kind: ``train``, ``self-play`` (``mimetic polish``) or ``feedback``.
        parent: the run it was polished from, or ``None``.
        where: its selection of the corpus (``""``: all of it); selected: that selection in words;
            documents: how many documents it selects (``None`` without a manifest).
        finished_at: when its summary was written (local time, ISO 8601).
        base_model, lora_r, lora_alpha, learning_rate, epochs: its settings.
        steps, train_tokens: optimizer steps and tokens trained on.
        held_out_nll, held_out_nll_drop: best held-out NLL (nats/token) and its relative fall
            from the base model (or from the parent, for polish and feedback runs).
        attribution: share of the voice's 1,000-word sets attributed to the writer in its last
            evaluation, ``None`` if not evaluated; control: the same share for the writer's own
            held-out continuations; spread_ratio: the voice's spread over the writer's.
    """

    run: str
    names: list[str]
    published: bool
    kind: str
    parent: str | None
    where: str
    selected: str
    finished_at: str
    base_model: str
    lora_r: int
    lora_alpha: int
    learning_rate: float
    epochs: float
    steps: int
    train_tokens: int
    held_out_nll: float
    held_out_nll_drop: float
    attribution: float | None = None
    control: float | None = None
    spread_ratio: float | None = None
    documents: int | None = None

    @property
    def label(self) -> str:
        """The version's first name, or its run id."""
        return self.names[0] if self.names else self.run


def list_versions(workspace: Workspace) -> list[VersionInfo]:
    """Every finished run of the voice as a :class:`VersionInfo`, oldest first.

    Raises:
        MimeticError: ``versions.json`` is damaged.
    """
    published = workspace.published_run()
    files = workspace.read_manifest().files if workspace.manifest_path.exists() else []
    out = []
    for run_id in workspace.finished_runs():
        d = workspace.runs_dir / run_id
        try:
            summary = json.loads((d / "summary.json").read_text(encoding="utf-8"))
            tc = VoiceConfig.load(d / "config.toml").train
        except (OSError, ValueError, MimeticError):
            continue  # a damaged run is listed by `mimetic runs`, not offered as a version
        polish = json.loads((d / "polish.json").read_text(encoding="utf-8")) if (d / "polish.json").exists() else {}
        chosen = parse_where(tc.where)
        info = VersionInfo(
            run=run_id, names=workspace.names_of(run_id), published=run_id == published,
            kind=polish.get("source", "train") if polish else "train", parent=polish.get("parent_run_id"),
            where=tc.where, selected=chosen.describe(files) if files else "",
            documents=len(chosen.documents(files)) if files else None,
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime((d / "summary.json").stat().st_mtime)),
            base_model=tc.base_model, lora_r=tc.lora_r, lora_alpha=tc.lora_alpha,
            learning_rate=float(summary.get("learning_rate") or 0.0), epochs=tc.epochs,
            steps=int(summary.get("final_step") or 0), train_tokens=int(summary.get("train_tokens") or 0),
            held_out_nll=float(summary.get("best_nll") or 0.0), held_out_nll_drop=float(summary.get("held_out_nll_drop") or 0.0),
        )
        metrics = d / "evaluation" / "metrics.json"
        if metrics.exists():
            try:
                st = json.loads(metrics.read_text(encoding="utf-8"))["stylometry"]
                info.attribution = st["attribution"]["voice"]["writer_share"]
                info.control = st["attribution"].get("held_out", {}).get("writer_share")
                info.spread_ratio = (st.get("spread") or {}).get("ratio")
            except (OSError, ValueError, KeyError, TypeError):
                pass
        out.append(info)
    return out


def resolve(workspace: Workspace, versions: Sequence[str]) -> list[VersionInfo]:
    """The :class:`VersionInfo` of each name or run id in ``versions``, in that order.

    Raises:
        MimeticError: fewer than one, a repeated one, or one that is not a finished run.
    """
    if not versions:
        raise MimeticError("No versions to compare.", "Name them: --versions 2014-2016,2017-2020 (mimetic versions lists them).")
    known = {v.run: v for v in list_versions(workspace)}
    out = []
    for name in versions:
        run_id = workspace.run_dir(name).name
        if run_id not in known:
            raise MimeticError(f"Run {run_id} cannot be read as a version.", "mimetic versions lists the usable ones.")
        if any(v.run == run_id for v in out):
            raise MimeticError(f"{name!r} is named twice in --versions.", "Name each version once.")
        out.append(known[run_id])
    return out


# ---------------------------------------------------------------------------------- compare


@dataclass
class VersionComparison:
    """Each version's text for the same prompts and seeds, and where it was written."""

    versions: list[VersionInfo]
    prompts: list[str]
    outputs: list[list[Generation]]  # outputs[i][j]: prompt i, version j
    markdown: Path
    html: Path


def compare_versions(
    workspace: Workspace,
    versions: Sequence[str],
    prompts: list[str],
    config: GenerateConfig | None = None,
    on_text: Callable[[int, VersionInfo, Generation], None] | None = None,
) -> VersionComparison:
    """Write from every version on each prompt, with the same seed (``config.seed + i`` for
    prompt ``i``) and sampling settings, one version loaded at a time. Each voice is asked in
    its own default mode (:func:`mimetic.corpus.briefs.default_mode`). Writes
    ``compare/<time>-versions.md`` and ``.html`` (one column per version) and logs every text.

    Raises:
        MimeticError: no prompts, an unknown or unfinished version (see :func:`resolve`).
    """
    if not prompts:
        raise MimeticError("No prompts to compare on.", "Pass --prompts FILE with one prompt per paragraph.")
    infos = resolve(workspace, versions)
    config = config or workspace.load_config().generate
    params = SamplingParams.from_config(config)
    outputs: list[list[Generation]] = [[] for _ in prompts]
    for info in infos:
        voice = open_voice(workspace, info.run, engine=config.engine)
        mode = default_mode(voice.format)
        from_notes = mode == "rewrite" and rewrites_from_notes(workspace)
        system = system_prompt_for(workspace, voice, config)
        for i, prompt in enumerate(prompts):
            t = time.perf_counter()
            text, n = voice.generate(request(voice.format, mode, prompt, from_notes), params, config.seed + i, system_prompt=system)
            g = Generation(prompt, text, info.label, config.seed + i, n, time.perf_counter() - t)
            log_generation(workspace, voice, "compare-versions", g, config, version=info.label)
            outputs[i].append(g)
            if on_text:
                on_text(i, info, g)
        del voice
        _gc.collect()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    md, page = workspace.compare_dir / f"{stamp}-versions.md", workspace.compare_dir / f"{stamp}-versions.html"
    settings = (f"temperature {config.temperature} · top-p {config.top_p} · min-p {config.min_p} · "
                f"max new tokens {config.max_new_tokens} · seeds {config.seed}…{config.seed + len(prompts) - 1}")
    lines = ["# Versions of your voice, side by side", "", settings, ""]
    for info in infos:
        lines.append(f"- **{info.label}** (run {info.run}): {info.where or 'all your writing'}")
    for i, prompt in enumerate(prompts):
        lines += ["", f"## Prompt {i + 1} (seed {config.seed + i})", "", "> " + prompt.replace("\n", "\n> ")]
        for info, g in zip(infos, outputs[i]):
            lines += ["", f"**{info.label}**", "", g.output.strip()]
    atomic_write_text(md, "\n".join(lines) + "\n")
    atomic_write_text(page, render_versions(infos, prompts, outputs, settings, config.seed))
    return VersionComparison(infos, prompts, outputs, md, page)


# ------------------------------------------------------------------------------------ drift


@dataclass
class Drift:
    """The drift view's numbers (``drift/<time>.json``) and page (``drift/<time>.html``).

    Attributes:
        eras: era labels, oldest first (years, or runs of years merged to have enough text).
        era_words: words of the writer's own text in each era (training and held-out).
        table: ``{row: {era: sets attributed}}``, one row per version and ``your held-out
            writing`` (the control) and ``base model``.
        own_era_share: per version with a date selection, the share of its sets attributed
            to an era inside its selection.
        spread: each row's spread (mean Cosine Delta between its sets).
        distance: ``{row: {era: mean Delta of its sets to the era's centroid}}``: lower is
            nearer; the counts say where each set lands, this says by how much.
        control_share: share of the writer's own held-out sets attributed to their own era.
    """

    eras: list[str]
    era_words: dict[str, int]
    table: dict[str, dict[str, int]]
    own_era_share: dict[str, float | None]
    spread: dict[str, float]
    versions: list[dict[str, Any]] = field(default_factory=list)
    distance: dict[str, dict[str, float]] = field(default_factory=dict)
    control_share: float = 0.0
    json_path: Path | None = None
    html_path: Path | None = None
    png_path: Path | None = None


def group_eras(years: dict[str, int], min_words: int) -> list[list[str]]:
    """Consecutive years merged until each group has at least ``min_words`` words (a last
    short group joins the one before). ``years``: ``{"2014": words, …}``.

    >>> group_eras({"2013": 500, "2014": 4000, "2015": 3000}, 3000)
    [['2013', '2014'], ['2015']]
    """
    groups: list[list[str]] = []
    current: list[str] = []
    count = 0
    for year in sorted(years):
        current.append(year)
        count += years[year]
        if count >= min_words:
            groups.append(current)
            current, count = [], 0
    if current:
        if groups:
            groups[-1] += current
        else:
            groups.append(current)
    return groups


def _samples_key(workspace: Workspace, run: str, config: EvaluateConfig, gc: GenerateConfig) -> str:
    """What a version's drift samples depend on: its adapter (path and time), the sampling and
    sample settings, the held-out data."""
    import hashlib

    adapter = workspace.runs_dir / run / "adapter" / "adapter_model.safetensors"
    meta = workspace.data_dir / "meta.json"
    keep = {k: getattr(config, k) for k in ("sample_words", "prefix_tokens", "new_tokens", "batch_size", "seed")}
    blob = json.dumps([run, adapter.stat().st_mtime_ns if adapter.exists() else 0, keep, asdict(gc),
                       meta.stat().st_mtime_ns if meta.exists() else 0], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def era_inside(where: str, years: list[str]) -> bool:
    """Whether every year in ``years`` passes the date clauses of the selection ``where``
    (``False`` for a selection with no date clause: it picks no era).

    >>> era_inside("date < 2017", ["2015", "2016"]), era_inside("date < 2017", ["2016", "2017"])
    (True, False)
    """
    clauses = [c for c in parse_where(where).clauses if c.field == "date"]
    return bool(clauses) and all(c.test({"date": y}) for y in years for c in clauses)


def _era_label(years: list[str]) -> str:
    return years[0] if len(years) == 1 else f"{years[0]}–{years[-1]}"


def _version_samples(workspace: Workspace, infos: Sequence[VersionInfo], held_rows: Any, config: EvaluateConfig,
                     gc: GenerateConfig, on_event: OnEvent) -> dict[str, list[str]]:
    """Each version's continuations of the held-out openings (:func:`generate_samples`, same
    openings and seeds), and the base model's (with the first version), by label; kept in
    ``drift/samples.json`` by :func:`_samples_key`, so only versions not sampled yet load."""
    samples_by: dict[str, list[str]] = {}
    cache_path = workspace.root / DRIFT_DIR / "samples.json"
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8")) if cache_path.exists() else {}
    except (OSError, ValueError):
        cache = {}
    for k, info in enumerate(infos):
        key = _samples_key(workspace, info.run, config, gc)
        if key in cache and (k or "base" in cache[key]):
            samples_by[info.label] = cache[key]["voice"]
        else:
            on_event(Progress("drift", message=f"{info.label}: writing {config.sample_words:,} words from held-out openings"))
            voice = open_voice(workspace, info.run, engine=gc.engine, on_event=on_event)
            samples = generate_samples(voice, held_rows, config, gc, lambda m: on_event(Progress("drift", message=f"{info.label}: {m}")),
                                       base=k == 0)
            cache[key] = {"voice": [s["voice"] for s in samples], **({"base": [s["base"] for s in samples]} if k == 0 else {})}
            atomic_write_json(cache_path, cache)
            samples_by[info.label] = cache[key]["voice"]
            del voice
            _gc.collect()
        if k == 0:
            samples_by["base model"] = cache[key]["base"]
    return samples_by


def _attribute_rows(rows: dict[str, list[list[str]]], eras: list[str], centroids: np.ndarray, z: ZScorer,
                    profile: Callable[[list[list[str]]], np.ndarray], metric: str) -> tuple[dict, dict, dict, dict, dict]:
    """Each row's sets (word lists) attributed to the nearest era centroid (``metric`` Delta on
    ``z``-scores of ``profile``). Returns ``(table {row: {era: sets}}, distances {row: {era: mean
    Delta}}, spreads {row: spread, nan below two sets}, z-scored profiles {row: (n, V)}, nearest
    era index per set {row: (n,)})``; a row without sets has zeros in ``table`` only."""
    table: dict[str, dict[str, int]] = {}
    distances: dict[str, dict[str, float]] = {}
    spreads: dict[str, float] = {}
    coords_in: dict[str, np.ndarray] = {}
    nearest_of: dict[str, np.ndarray] = {}
    for label, sets in rows.items():
        if not sets:
            table[label] = {e: 0 for e in eras}
            continue
        p = profile(sets)
        nearest_of[label], dist = attribute(p, centroids, z, metric)
        counts = Counter(eras[i] for i in nearest_of[label])
        table[label] = {e: counts.get(e, 0) for e in eras}
        distances[label] = {e: float(dist[:, j].mean()) for j, e in enumerate(eras)}
        spreads[label] = float(spread(p, z, metric)) if len(sets) >= 2 else float("nan")
        coords_in[label] = z(p)
    return table, distances, spreads, coords_in, nearest_of


def _write_drift(workspace: Workspace, result: Drift, png_uri: str, n_mfw: int, config: EvaluateConfig, gc: GenerateConfig) -> None:
    """Write ``drift/<time>.png``, ``.json`` (the numbers and settings) and ``.html``
    (:func:`mimetic.evaluation.report.render_drift`), and set their paths on ``result``; a second
    view within one second gets ``<time>-2``."""
    out_dir = workspace.root / DRIFT_DIR
    stamp, n = time.strftime("%Y%m%d-%H%M%S"), 1
    while (out_dir / f"{stamp}.json").exists():  # two views within one second keep both
        n += 1
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{n}"
    result.png_path = out_dir / f"{stamp}.png"
    result.json_path, result.html_path = out_dir / f"{stamp}.json", out_dir / f"{stamp}.html"
    atomic_write_bytes(result.png_path, png_bytes(png_uri))
    data = {k: v for k, v in asdict(result).items() if not k.endswith("_path")}
    data.update(n_mfw=n_mfw, set_words=config.set_words, metric=config.metric,
                sample_words=config.sample_words, seed=config.seed, temperature=gc.temperature, min_p=gc.min_p)
    atomic_write_json(result.json_path, data)
    atomic_write_text(result.html_path, render_drift(result, png_uri, config.n_mfw, config.set_words))


def drift(
    workspace: Workspace,
    versions: Sequence[str],
    config: EvaluateConfig | None = None,
    gc: GenerateConfig | None = None,
    *,
    min_era_sets: int = 3,
    splits: Sequence[int] | None = None,
    on_event: OnEvent = ignore,
) -> Drift:
    """The style drift: the writer's eras and each version's samples on one map, and which era
    each version's samples are attributed to.

    Eras are the years of the documents' dates, consecutive years merged until each has at
    least ``min_era_sets`` sets of ``config.set_words`` words (:func:`group_eras`), or, with
    ``splits`` (first years of later eras: ``[2017]``), the years cut there, as era versions
    are made; undated documents are left out. Each version's samples are kept in
    ``drift/samples.json`` (by adapter and settings), so looking again with other eras
    writes nothing new. The most frequent words and z-scores come from the era sets of
    the training split; each era's centroid is the mean of its training sets. Every version
    continues the same held-out openings (all eras, same seeds, ``config.sample_words`` words),
    the base model once; their sets, and the writer's own held-out sets (the control), are
    attributed to the nearest era centroid by Cosine Delta.

    Returns:
        :class:`Drift`, also written to ``drift/<time>.json`` and ``.html`` (with the map as PNG).

    Raises:
        MimeticError: fewer than two eras with enough dated text, an unknown version.
    """
    from mimetic.corpus.prepare import load_split

    vc = workspace.load_config()
    config = config or vc.evaluate
    gc = gc or vc.generate
    infos = resolve(workspace, versions)
    files = workspace.read_manifest().files
    year_of = {f["doc_id"]: (f.get("date") or "")[:4] for f in files if f.get("doc_id")}
    train_rows, held_rows = load_split(workspace, "train"), load_split(workspace, "held_out")

    def texts_by_year(rows: Any) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for doc, text in zip(rows["doc_id"], rows["text"]):
            year = year_of.get(doc, "")
            if year.isdigit():
                out.setdefault(year, []).append(text)
        return out

    train_years, held_years = texts_by_year(train_rows), texts_by_year(held_rows)
    year_words = Counter({y: sum(len(words(t)) for t in ts) for y, ts in train_years.items()})
    if splits:
        bounds = sorted({int(y) for y in splits})
        groups = [g for g in ([y for y in sorted(year_words) if (lo is None or int(y) >= lo) and (hi is None or int(y) < hi)]
                              for lo, hi in zip([None] + bounds, bounds + [None])) if g]
    else:
        groups = group_eras(dict(year_words), min_era_sets * config.set_words)
    if len(groups) < 2 or any(sum(year_words[y] for y in g) < min_era_sets * config.set_words for g in groups):
        raise MimeticError(f"Your dated writing does not make two eras of {min_era_sets} × {config.set_words:,} words "
                           f"({sum(year_words.values()):,} dated training words over {len(year_words)} years).",
                           "The drift view needs dates (front matter, e-mail dates or file dates) spread over time.")
    eras = [_era_label(g) for g in groups]
    era_of_year = {y: _era_label(g) for g in groups for y in g}

    def era_sets(by_year: dict[str, list[str]]) -> dict[str, list[list[str]]]:
        out: dict[str, list[str]] = {}
        for y, ts in sorted(by_year.items()):
            if y in era_of_year:
                out.setdefault(era_of_year[y], []).extend(words(" ".join(ts)))
        return {e: chunk_tokens(toks, config.set_words) for e, toks in out.items()}

    train_sets, held_sets = era_sets(train_years), era_sets(held_years)
    all_train = [s for e in eras for s in train_sets.get(e, [])]
    vocab = most_frequent_words((w for s in all_train for w in s), config.n_mfw)
    profile = lambda sets: np.array([relative_frequencies(s, vocab) for s in sets]).reshape(len(sets), len(vocab))  # noqa: E731
    train_profiles = profile(all_train)
    z = ZScorer.fit(train_profiles)
    centroids = np.stack([profile(train_sets[e]).mean(axis=0) for e in eras])

    rows: dict[str, list[list[str]]] = {"your held-out writing": [s for e in eras for s in held_sets.get(e, [])]}
    held_truth = [e for e in eras for _ in held_sets.get(e, [])]
    samples_by = _version_samples(workspace, infos, held_rows, config, gc, on_event)
    for label, texts in samples_by.items():
        rows[label] = chunk_tokens(words(" ".join(texts)), config.set_words)

    table, distances, spreads, coords_in, nearest_of = _attribute_rows(rows, eras, centroids, z, profile, config.metric)
    control_hits = sum(1 for t, i in zip(held_truth, nearest_of.get("your held-out writing", [])) if eras[i] == t)
    own: dict[str, float | None] = {}
    for info in infos:
        inside = [e for e, g in zip(eras, groups) if era_inside(info.where, g)]
        n = sum(table[info.label].values())
        own[info.label] = (sum(table[info.label][e] for e in inside) / n) if inside and n else None
    result = Drift(eras, {e: sum(year_words[y] for y in g) + sum(len(words(" ".join(held_years.get(y, [])))) for y in g)
                          for e, g in zip(eras, groups)},
                   table, own, spreads,
                   versions=[{"label": v.label, "run": v.run, "where": v.where} for v in infos], distance=distances,
                   control_share=control_hits / max(1, len(held_truth)))

    # the map: the training era sets, their centroids, and every row's sets, on two principal components
    era_z = z(train_profiles)
    era_labels = [e for e in eras for _ in train_sets.get(e, [])]
    mean = era_z.mean(axis=0)
    _, _, vt = np.linalg.svd(era_z - mean, full_matrices=False)
    proj = lambda m: (m - mean) @ vt[:2].T  # noqa: E731
    png_uri = _drift_plot(proj(era_z), era_labels, eras, {k: proj(v) for k, v in coords_in.items() if k != "your held-out writing"},
                          config)
    _write_drift(workspace, result, png_uri, len(vocab), config, gc)
    return result


def _drift_plot(era_xy: np.ndarray, era_labels: list[str], eras: list[str], rows: dict[str, np.ndarray],
                config: EvaluateConfig) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    cmap = plt.get_cmap("viridis")
    for j, e in enumerate(eras):
        idx = [i for i, lab in enumerate(era_labels) if lab == e]
        color = cmap(j / max(1, len(eras) - 1))
        ax.scatter(era_xy[idx, 0], era_xy[idx, 1], s=14, color=color, alpha=0.45, label=f"your writing, {e}")
        cx, cy = era_xy[idx, 0].mean(), era_xy[idx, 1].mean()
        ax.scatter([cx], [cy], s=120, color=color, edgecolors="black", zorder=4)
        ax.annotate(e, (cx, cy), xytext=(4, 4), textcoords="offset points", fontsize=8, weight="bold")
    palette = ["#c0392b", "#ef6c00", "#8e24aa", "#00838f", "#ad1457", "#6d4c41"]
    for j, (label, xy) in enumerate(rows.items()):
        color = COLORS["base"] if label == "base model" else palette[j % len(palette)]
        ax.scatter(xy[:, 0], xy[:, 1], s=46, marker="^", color=color, edgecolors="black", zorder=3, label=label)
    ax.set_xlabel("PC 1"), ax.set_ylabel("PC 2"), ax.grid(alpha=0.3), ax.legend(fontsize=7, loc="best")
    ax.set_title(f"Style drift: {config.n_mfw} most-frequent words, {config.set_words}-word sets", fontsize=10)
    return png(fig)


__all__ = ["VersionInfo", "list_versions", "resolve", "VersionComparison", "compare_versions", "Drift", "drift", "group_eras", "era_inside"]
