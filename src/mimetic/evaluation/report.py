"""The evaluation's pages: the report, the drift view and the versions side by side, rendered
from the Jinja2 templates in ``evaluation/templates/`` (the desk's engine, autoescaping on),
and the figures they embed (matplotlib, inlined as PNG ``data:`` URIs so that each page is one
self-contained file).

Nothing here measures: every number comes from :func:`mimetic.evaluation.evaluate.evaluate`'s
metrics (``metrics.json``, :class:`mimetic.core.records.EvaluationMetrics`) or
:func:`mimetic.evaluation.versions.drift`.
"""

from __future__ import annotations

import base64
import functools
import io
from typing import Any, Callable, Sequence

import numpy as np

from mimetic.core.records import EvaluationMetrics, delta_name

COLORS = {"voice": "#2e7d32", "base model": "#9e9e9e", "base": "#9e9e9e", "training": "#1565c0", "held_out": "#c0392b"}
"""The colour of each group in every figure (the voice green, the base model grey)."""


@functools.cache
def templates() -> Any:
    """The Jinja2 environment of ``evaluation/templates/`` (autoescaping on, so every text from
    the writer or a model is escaped), with the filters ``fmt`` (``format(value, spec)``) and
    ``pct`` (a share as ``"42%"``, ``"—"`` for ``None``)."""
    from jinja2 import Environment, PackageLoader

    env = Environment(loader=PackageLoader("mimetic.evaluation"), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = format
    env.filters["pct"] = lambda x: "—" if x is None else f"{100 * x:.0f}%"
    env.globals["delta_name"] = delta_name
    return env


def png(fig: Any) -> str:
    """A matplotlib figure as a ``data:image/png;base64,…`` URI (100 dpi, tight layout); the
    figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def png_bytes(uri: str) -> bytes:
    """The PNG bytes of a ``data:`` URI made by :func:`png`."""
    return base64.b64decode(uri.split(",", 1)[1])


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------------------ the report's figures


def _curve_figure(curve: Sequence[tuple[int, float, str]]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    tr = [(s, v) for s, v, k in curve if k == "train"]
    he = [(s, v) for s, v, k in curve if k == "held"]
    if tr:
        ax.plot(*zip(*tr), color="#8aa8c8", lw=1, label="training loss")
    if he:
        ax.plot(*zip(*he), color="#c0392b", marker="o", lw=2, label="held-out NLL")
    ax.set_xlabel("step"), ax.set_ylabel("nats / token"), ax.grid(alpha=0.3), ax.legend(fontsize=8)
    ax.set_title("Training run: loss and held-out NLL", fontsize=10)
    return png(fig)


def _sentences_figure(sl: dict[str, Any]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    bins = sl["held_out"]["bins"]
    x = np.arange(len(bins) - 1)
    for j, (k, label) in enumerate((("held_out", "your held-out writing"), ("base", "base model"), ("voice", "voice"))):
        h = np.array(sl[k]["histogram"], dtype=float)
        ax.bar(x + (j - 1) * 0.27, h / max(1, h.sum()), width=0.27, label=label, color=COLORS[k])
    ax.set_xticks(x, [f"{bins[i]}–{bins[i + 1]}" if bins[i + 1] < 10_000 else f"{bins[i]}+" for i in range(len(bins) - 1)], rotation=45, fontsize=7)
    ax.set_xlabel("sentence length (words)"), ax.set_ylabel("share of sentences"), ax.legend(fontsize=8)
    ax.set_title("Sentence lengths", fontsize=10)
    return png(fig)


def _map_figure(coords: np.ndarray, labels: list[str], st: dict[str, Any]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    palette = ["#1565c0", "#c0392b", "#9e9e9e", "#2e7d32", "#8e24aa", "#ef6c00", "#00838f", "#6d4c41", "#ad1457"]
    for j, g in enumerate(dict.fromkeys(labels)):
        idx = [i for i, lab in enumerate(labels) if lab == g]
        ax.scatter(coords[idx, 0], coords[idx, 1], s=22 if g != "voice" else 40, label=g, color=palette[j % len(palette)],
                   alpha=0.85, marker="o" if g not in ("voice", "base model") else "^",
                   zorder=3 if g in ("voice", "base model") else 2, edgecolors="black" if g == "voice" else "none")
    ax.set_xlabel("PC 1"), ax.set_ylabel("PC 2"), ax.legend(fontsize=7), ax.grid(alpha=0.3)
    ax.set_title(f"Style map: {st['n_mfw']} most-frequent words, {st['set_words']}-word sets", fontsize=10)
    return png(fig)


def _delta_figure(st: dict[str, Any]) -> str:
    plt = _pyplot()
    d = st["distances"][st["metric"]]
    fig, ax = plt.subplots(figsize=(6, 2.6))
    bars = [("your writing: held-out ↔ training", d["held_out_to_training"], COLORS["training"]),
            ("voice ↔ your held-out writing", d["voice_to_held_out"], COLORS["voice"]),
            ("base model ↔ your held-out writing", d["base_to_held_out"], COLORS["base"])]
    ax.barh([b[0] for b in bars], [b[1] for b in bars], color=[b[2] for b in bars])
    ax.invert_yaxis(), ax.set_xlabel(f"{delta_name(st['metric'])} (lower = closer)")
    return png(fig)


def _memorization_figure(mem: dict[str, Any]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    mx = max([r["tokens"] for k in ("voice", "base", "writer") if k in mem for r in mem[k]["samples"]] + [10])
    edges = np.arange(0, mx + 2)
    for k, label in (("writer", "your own continuations"), ("base", "base model"), ("voice", "voice")):
        if k in mem:
            ax.hist([r["tokens"] for r in mem[k]["samples"]], bins=edges, alpha=0.55, label=label, color=COLORS.get(k, "#1565c0"))
    ax.axvline(mem["voice"]["flag_tokens"], color="#c0392b", ls="--", lw=1, label="flag threshold")
    ax.set_xlabel("longest verbatim overlap with the training text (tokens)"), ax.set_ylabel("samples"), ax.legend(fontsize=8)
    return png(fig)


def plots(m: dict[str, Any], plot_data: dict[str, Any], curve: Sequence[tuple[int, float, str]]) -> dict[str, str]:
    """The report's figures as ``data:`` URIs: ``curve`` (training loss and held-out NLL; only
    with a ``curve``), ``sentences``, ``pca`` (only with three or more sets), ``delta``,
    ``memorization``.

    Args:
        m: the metrics (``metrics.json``'s shape).
        plot_data: :func:`mimetic.evaluation.evaluate.analyse`'s second value (``pca``:
            ``(coords (n, 2), labels)``; ``sentence_lengths``).
        curve: ``[(step, nats/token, "train" | "held")]`` from the run's ``metrics.jsonl``.
    """
    out = {}
    if curve:
        out["curve"] = _curve_figure(curve)
    out["sentences"] = _sentences_figure(plot_data["sentence_lengths"])
    coords, labels = plot_data["pca"]
    if len(coords):
        out["pca"] = _map_figure(coords, labels, m["stylometry"])
    out["delta"] = _delta_figure(m["stylometry"])
    out["memorization"] = _memorization_figure(m["memorization"])
    return out


# ------------------------------------------------------------------------------ the report


DISTANCE_ROWS = (("held_out_to_training", "your held-out writing ↔ your training text (your own spread)"),
                 ("voice_to_held_out", "voice samples ↔ your held-out writing"),
                 ("base_to_held_out", "base-model samples ↔ your held-out writing"),
                 ("voice_to_training", "voice samples ↔ your training text"),
                 ("base_to_training", "base-model samples ↔ your training text"))
ATTRIBUTION_ROWS = {"voice": "voice samples", "held_out": "your held-out writing", "base": "base model samples"}


def _profile_rows(pr: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The profile table: ``(label, [training, held-out, base, voice] formatted)`` per row."""
    rows: list[tuple[str, Callable[[dict[str, Any]], float], str]] = [
        ("sentence length, mean (words)", lambda p: p["sentence_length"]["mean"], "{:.1f}"),
        ("sentence length, spread (sd)", lambda p: p["sentence_length"]["sd"], "{:.1f}"),
        ("word length (letters)", lambda p: p["word_length"], "{:.2f}"),
        ("lexical diversity (MTLD)", lambda p: p["mtld"], "{:.1f}"),
        ("dialogue share", lambda p: 100 * p["dialogue_share"], "{:.0f}%"),
        *[(f"{name} per 1,000 words", (lambda k: lambda p: p["punctuation"][k])(name), "{:.1f}") for name in
          ("comma", "semicolon", "colon", "dash", "exclamation", "question", "parenthesis")],
        *[(f"“{w}” per 1,000 words", (lambda w: lambda p: p["function_words"][w])(w), "{:.1f}") for w in ("the", "and", "i", "of", "but")],
    ]
    return [(label, [fmt.format(get(pr[k])) for k in ("training", "held_out", "base", "voice")]) for label, get, fmt in rows]


def _spread_rows(sp: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """The range table: ``(sets of, sets, spread)`` per group, and the writer's whole passages
    for comparison when their sets are continuations."""
    fmt = lambda x: "—" if x is None else f"{x:.3f}"  # noqa: E731
    writer = "your own continuations of the same openings" if sp.get("writer_basis") == "continuations" else "your held-out writing"
    rows: list[tuple[str, Any, str]] = [(label, sp["sets"].get(k, 0), fmt(sp.get(k)))
                                        for k, label in (("writer", writer), ("voice", "voice samples"), ("base model", "base-model samples"))]
    if sp.get("writer_basis") == "continuations" and sp.get("writer_held_out_text") is not None:
        rows.append(("your held-out writing in whole passages (for comparison: sets that run on in one scene vary more)", "—",
                     fmt(sp["writer_held_out_text"])))
    return rows


def render_report(m: dict[str, Any], plot_data: dict[str, Any], samples: list[dict[str, Any]], free: list[dict[str, Any]],
                  curve: Sequence[tuple[int, float, str]], sources: list[Any] | None = None) -> str:
    """The evaluation as one self-contained HTML page (``templates/report.html``; figures from
    :func:`plots` inlined as PNG ``data:`` URIs).

    Args:
        m: the metrics (``metrics.json``'s shape, :class:`EvaluationMetrics`).
        plot_data, curve: see :func:`plots`.
        samples: the evaluation's samples (``prefix``, ``writer``, ``base``, ``voice``,
            ``document``, ``seed``); the first six are shown.
        free: the writer's own prompts with ``base`` and ``voice`` answers.
        sources: for each shown sample, the writer's nearest paragraph
            (:class:`mimetic.text.archive.Hit`) or ``None``.

    Raises:
        MimeticError: the metrics lack what the summary lines need (:meth:`EvaluationMetrics.headline`).
    """
    mem = m["memorization"]
    shown = list(zip(samples[:6], [*(sources or []), *[None] * 6]))
    return templates().get_template("report.html").render(
        m=m, st=m["stylometry"], n=m["nll"], mem=mem, idn=m["identity"], ex=m.get("extraction", {}), reader=m.get("reader") or {},
        img=plots(m, plot_data, curve), headline=EvaluationMetrics.from_dict(m).headline(),
        distance_rows=DISTANCE_ROWS, attribution_rows=ATTRIBUTION_ROWS, profile_rows=_profile_rows(m["profiles"]),
        spread_rows=_spread_rows(m["stylometry"].get("spread") or {}) if m["stylometry"].get("spread") else [],
        flagged=[(k, r) for k in ("voice", "base") for r in mem[k]["samples"] if r["flagged"]][:10],
        longest=sorted(mem["voice"]["samples"], key=lambda r: -r["tokens"])[:3],
        samples=shown, free=free,
    )


# ------------------------------------------------------------------------------ versions and drift


def render_versions(infos: Sequence[Any], prompts: Sequence[str], outputs: Sequence[Sequence[Any]], settings: str, seed: int) -> str:
    """The versions of a voice side by side (``templates/versions.html``): one column per
    version (:class:`mimetic.evaluation.versions.VersionInfo`), one row per prompt
    (``outputs[i][j]``: prompt ``i``, version ``j``, a :class:`mimetic.voice.generate.Generation`);
    prompt ``i`` was written with seed ``seed + i``."""
    return templates().get_template("versions.html").render(infos=infos, prompts=prompts, outputs=outputs, settings=settings, seed=seed)


def render_drift(d: Any, png_uri: str, n_mfw: int, set_words: int) -> str:
    """The drift view's page (``templates/drift.html``) of a :class:`mimetic.evaluation.versions.Drift`:
    the map (``png_uri``), which era each row's sets are attributed to (the most in each row
    marked), and each row's mean distance to each era (the nearest marked); ``n_mfw`` and
    ``set_words`` are the settings named in the text."""
    rows = []
    for label, counts in d.table.items():
        n = sum(counts.values())
        best = max(counts.values()) if n else -1
        rows.append({"label": label, "cells": [(v, v == best and v) for v in counts.values()], "sets": n,
                     "own": d.own_era_share.get(label), "spread": d.spread.get(label, float("nan"))})
    distance_rows = [(label, [(v, v == min(row.values())) for v in row.values()]) for label, row in d.distance.items()]
    return templates().get_template("drift.html").render(d=d, png=png_uri, n_mfw=n_mfw, set_words=set_words, rows=rows,
                                                         distance_rows=distance_rows)


__all__ = ["COLORS", "templates", "png", "png_bytes", "plots", "render_report", "render_versions", "render_drift"]
