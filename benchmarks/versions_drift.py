"""Era versions of a dated corpus, compared and placed on the style-drift map (issue 16).

Trains three versions of one voice with the default recipe (each with its own held-out part):
``full`` (all dated writing up to ``--last-year``), ``before-<split>`` (``date < split``) and
``<split>-<last>`` (``date >= split and date <= last``); evaluates each (held-out NLL on its own
era's held-out text, attribution, memorization); compares them on the same held-out openings
and seeds; and runs the drift view (eras of the writer's own years, each version's samples,
which era they read as). Versions already trained in the workspace are reused, so an
interrupted benchmark goes on where it stopped.

    .venv/bin/python benchmarks/versions_drift.py ../shared/corpora/raw/blog --workspace /tmp/blog-eras

Writes ``<workspace>/versions_drift.json`` (every figure) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from mimetic import EvaluateConfig, Workspace, ingest, prepare, train
from mimetic.evaluation.evaluate import evaluate
from mimetic.voice.generate import held_out_prompts
from mimetic.evaluation.versions import compare_versions, drift, list_versions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--split", type=int, default=2017, help="first year of the later era")
    ap.add_argument("--last-year", type=int, default=2020, help="last year kept (files dated by their copy time fall after it)")
    ap.add_argument("--time-budget", type=float, default=15.0, help="minutes per version (the main job's default)")
    ap.add_argument("--sample-words", type=int, default=5000, help="words of samples per model in each evaluation")
    ap.add_argument("--drift-words", type=int, default=10000, help="words each version writes for the drift view")
    args = ap.parse_args()

    ws = Workspace.open(args.workspace)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    if not ws.manifest_path.exists():
        ingest([args.corpus], ws)
    if not (ws.data_dir / "meta.json").exists():
        prepare(ws)
    timings["ingest+prepare"] = time.perf_counter() - t
    last = f"date <= {args.last_year}"
    wanted = {"full": last, f"before-{args.split}": f"date < {args.split}",
              f"{args.split}-{args.last_year}": f"date >= {args.split} and {last}"}
    tc = ws.load_config().train
    for name, where in wanted.items():
        if name in ws.version_names():
            continue
        t = time.perf_counter()
        r = train(ws, replace(tc, version=name, where=where),
                  runtime={"time_budget_min": args.time_budget}, publish=name == "full")
        timings[f"train {name}"] = time.perf_counter() - t
        print(f"{name}: run {r.run_id}, {r.final_step} steps, held-out NLL {r.base_nll:.3f} -> {r.best_nll:.3f}", flush=True)
    ec = EvaluateConfig(sample_words=args.sample_words)
    for name in wanted:
        if not (ws.run_dir(name) / "evaluation" / "metrics.json").exists():
            t = time.perf_counter()
            evaluate(ws, name, ec)
            timings[f"evaluate {name}"] = time.perf_counter() - t
    infos = {v.label: v for v in list_versions(ws)}
    t = time.perf_counter()
    cmp = compare_versions(ws, list(wanted), held_out_prompts(ws, n=3), ws.load_config().generate)
    timings["compare"] = time.perf_counter() - t
    t = time.perf_counter()
    de = EvaluateConfig(sample_words=args.drift_words)
    d_years = drift(ws, list(wanted), de)
    timings["drift"] = time.perf_counter() - t
    d = drift(ws, list(wanted), de, splits=[args.split])  # the versions' own eras, from the same samples

    out = {"corpus": str(args.corpus), "versions": {}, "drift": json.loads(d.json_path.read_text()),
           "drift_by_year": json.loads(d_years.json_path.read_text()),
           "compare": str(cmp.html), "drift_page": str(d.html_path), "timings_s": timings}
    print(f"\n{'version':<14} {'selection':<34} {'docs':>5} {'steps':>6} {'NLL base→voice':>16} {'attribution':>12} {'spread':>7}")
    for name in wanted:
        v = infos[name]
        summary = json.loads((ws.run_dir(name) / "summary.json").read_text())
        out["versions"][name] = {"run": v.run, "where": v.where, "selected": v.selected, "steps": v.steps,
                                 "train_tokens": v.train_tokens, "base_nll": summary["base_nll"], "nll": v.held_out_nll,
                                 "drop": v.held_out_nll_drop, "attribution": v.attribution, "control": v.control,
                                 "spread_ratio": v.spread_ratio}
        print(f"{name:<14} {v.where:<34} {v.documents:>5} {v.steps:>6} "
              f"{summary['base_nll']:.3f}→{v.held_out_nll:.3f} {'' if v.attribution is None else f'{v.attribution:.0%}':>12} "
              f"{'' if v.spread_ratio is None else f'{v.spread_ratio:.2f}':>7}")
    for view in (d_years, d):
        data = json.loads(view.json_path.read_text())
        print(f"\nDrift ({view.json_path}): {data['set_words']:,}-word sets attributed to each era; control = your own "
              f"held-out sets ({data['control_share']:.0%} land in their own era)")
        print(f"{'':<24}" + "".join(f"{e:>12}" for e in view.eras) + f"{'own era':>10}{'spread':>8}")
        for label, counts in view.table.items():
            own = view.own_era_share.get(label)
            print(f"{label:<24}" + "".join(f"{counts[e]:>12}" for e in view.eras)
                  + f"{'' if own is None else f'{own:.0%}':>10}{view.spread.get(label, float('nan')):>8.2f}")
        print("mean Cosine Delta to each era's centroid (lower = nearer):")
        for label, row in view.distance.items():
            print(f"{label:<24}" + "".join(f"{row[e]:>12.3f}" for e in view.eras))
    print("timings (s):", {k: round(v) for k, v in timings.items()})
    (ws.root / "versions_drift.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
