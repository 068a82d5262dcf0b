"""Compare methods on the same data, backbones, epochs and selection rule (``jobs/compare.py``).

    outcome = compare(["source_only", "kd_s", "mtts"], seeds=[0, 1, 2], preset="small")
    print(outcome.markdown)

Every method runs once per seed with the same overrides (the preset's data and epochs, the seed in
every stage's ``train.seed``, the selection rule in every stage's ``train.selection``), each pipeline a
nested run under one MLflow comparison run. Stages with the same key are trained once and reused:
f_S, declared identically by every transfer method, trains once per seed. A rerun after an
interruption trains only what is missing (stage reuse, and interrupted stages continue). Methods run
one after another; their stages use the cluster through Ray Train.

Outputs, next to each other and logged to the comparison run: ``comparison.csv`` and
``comparison.md`` (OA, AA, macro-F1, κ and OA per cloud bucket, mean ± std over seeds, each row marked
``oracle`` where it used information a real user lacks), ``buckets.png`` (accuracy per cloud bucket per
row) and ``coverage.png`` (accuracy against cloud coverage, ten bins of the cloud fraction, one line
per row).
"""

from __future__ import annotations

import csv
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from raypipe.errors import ConfigError

BUCKETS = ("clear", "partly", "cloudy")
METRICS = ("oa", "aa", "macro_f1", "kappa")

# Presets: the generated benchmark's size and every stage's epochs (models stay the methods' defaults,
# except ``tiny``, which shrinks every backbone for tests).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"data": {"benchmark": {"tiles": 40, "size": 16, "scene_size": 10}}, "epochs": 1, "batch_size": 16,
             "width": 4, "depth": 10},
    "small": {"data": {"benchmark": {"tiles": 480, "size": 32}}, "epochs": 12},
    "medium": {"data": {"benchmark": {"tiles": 1200, "size": 32}}, "epochs": 12},
}


@dataclass
class CompareOutcome:
    run_id: str
    rows: list[dict]  # one per table row: method, label, stage, oracle, seeds, mean/std per metric, coverage
    markdown: str
    out_dir: str
    seconds: float = 0.0
    trained: dict = field(default_factory=dict)  # (method, seed) -> stages trained


def _shrink(spec: dict, width: int, depth: int) -> dict:
    """A model spec with every ResNet backbone at ``width`` / ``depth`` and group norm (tiny preset)."""
    small = {"width": width, "depth": depth, "norm": "group", "stem": "small"}
    kind = spec.get("kind")
    if kind == "multimodal":
        return {**spec, "optical": {**spec.get("optical", {}), **small}, "sar": {**spec.get("sar", {}), **small}}
    if kind == "early_fusion":
        return {**spec, "encoder": {**spec.get("encoder", {}), **small}}
    if kind == "declouder":  # its U-Net generator's ResNet encoder
        gen = spec.get("generator", {})
        enc = {**gen.get("encoder", {}), "type": "resnet", "width": width, "depth": depth}
        return {**spec, "generator": {**gen, "encoder": enc, "norm": "group"}}
    if kind == "restore_classify":  # assembled from other stages' models (SPL): shrunk through them
        return spec
    return {**spec, **small}


def method_overrides(method, preset: str, seed: int, selection: str) -> dict:
    """The comparison's settings for one method and seed, as a config mapping (``extra`` of resolve)."""
    from raypipe.config import deep_merge
    from raypipe.engine import resolve

    if preset not in PRESETS:
        raise ConfigError("--preset", f"must be one of {', '.join(PRESETS)}, not {preset!r}")
    p = PRESETS[preset]
    defaults = resolve(method)
    stages = {}
    for s in method.stages:
        train = {"seed": seed, "selection": selection, "epochs": p["epochs"]}
        if "batch_size" in p:
            train["batch_size"] = p["batch_size"]
        stages[s.name] = {"train": train}
        if "width" in p:
            stages[s.name]["model"] = _shrink(getattr(defaults.stages, s.name).model, p["width"], p["depth"])
    return deep_merge({"data": p["data"]}, {"stages": stages})


def compare(methods: list[str], seeds: list[int], preset: str = "small", selection: str = "last",
            extra: dict | None = None, overrides: list[str] | None = None, out_dir: str = "",
            name: str = "", printer=print, config_file: str | None = None) -> CompareOutcome:
    from raypipe.config import deep_merge, to_dict
    from raypipe.engine import resolve
    from raypipe.engine.report import Console
    from raypipe.engine.run import run_method
    from raypipe.methods import load_methods
    from raypipe.tracking import Lineage

    registry = load_methods()
    ms = [registry.get(m, "--methods") for m in methods]
    tasks = {m.task for m in ms}
    if len(tasks) > 1:
        raise ConfigError("--methods", "a comparison is of one task; these mix " +
                          ", ".join(f"{m.name} ({m.task})" for m in ms))
    if selection not in ("last", "val_labels", "val_objective"):
        raise ConfigError("--selection", f"must be last, val_labels or val_objective, not {selection!r}")
    extra = extra or {}
    configs = {(m.name, seed): resolve(m, config_file, overrides or [],
                                       deep_merge(method_overrides(m, preset, seed, selection), extra))
               for m in ms for seed in seeds}  # every configuration checked before anything trains
    t0 = time.perf_counter()
    first = next(iter(configs.values()))
    lineage = Lineage(first.tracking.uri or None, first.tracking.experiment)
    name = name or f"compare-{preset}"
    out_dir = os.path.abspath(out_dir or os.path.join("runs", "compare", name))
    os.makedirs(out_dir, exist_ok=True)
    results: dict[tuple[str, int], Any] = {}
    trained = {}
    described = {"methods": methods, "seeds": seeds, "preset": preset, "selection": selection,
                 "overrides": overrides or []}
    with lineage.pipeline_run(name, {"comparison": described, "data": to_dict(first.data)}, kind="comparison",
                              tags={"raypipe.comparison": name}) as run:
        for seed in seeds:
            for m in ms:
                printer(f"== {m.name}, seed {seed}")
                cfg = configs[(m.name, seed)]
                cfg.name = f"{name}-{m.name}-seed{seed}"
                r = run_method(m, cfg, Console(), parent_run_id=run.run_id,
                               tags={"raypipe.comparison": name, "raypipe.seed": seed})
                results[(m.name, seed)] = r
                trained[(m.name, seed)] = [s for s, o in r.stages.items() if not o.reused]
        # each method's graph as its configuration made it (KDHN's rounds), the same for every seed
        rows = aggregate([m.concrete(to_dict(configs[(m.name, seeds[0])]))[0] for m in ms], seeds, results)
        markdown = write_outputs(rows, seeds, preset, selection, out_dir)
        for f in ("comparison.csv", "comparison.md", "buckets.png", "coverage.png"):
            run.log_artifact(os.path.join(out_dir, f), "comparison")
    return CompareOutcome(run.run_id, rows, markdown, out_dir, time.perf_counter() - t0, trained)


def aggregate(methods, seeds, results) -> list[dict]:
    """One row per distinct (stage key set, table row): rows of different methods that are the same
    model (f_S, shared by key) are shown once, under the first method that declares them."""
    from raypipe.engine.report import oracle_mark

    rows: list[dict] = []
    seen: dict[tuple, dict] = {}
    for m in methods:
        for row in m.table:
            keys = tuple(results[(m.name, s)].stages[row.stage].key for s in seeds)
            ident = (keys, row.prefix)
            if ident in seen:
                seen[ident]["also_in"].append(m.name)
                continue
            evs = [results[(m.name, s)].stages[row.stage].evaluations[row.prefix] for s in seeds]
            mark = oracle_mark(row, results[(m.name, seeds[0])].stages[row.stage])
            entry = {"method": m.name, "label": row.label, "stage": row.stage, "oracle": mark.strip(" []"),
                     "also_in": [], "n": evs[0]["overall"]["n"], "per_seed": {}}
            for metric in METRICS:
                entry[metric] = _mean_std([e["overall"][metric] for e in evs])
            for b in BUCKETS:
                entry[b] = _mean_std([e["buckets"].get(b, {}).get("oa") for e in evs])
                entry[f"n_{b}"] = evs[0]["buckets"].get(b, {}).get("n", 0)
            entry["coverage"] = _coverage_mean([e.get("coverage", []) for e in evs])
            entry["per_seed"] = {str(s): e["overall"]["oa"] for s, e in zip(seeds, evs)}
            seen[ident] = entry
            rows.append(entry)
    return rows


def _mean_std(values: list) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return (None, None)
    return (statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None)  # no spread from one seed


def _coverage_mean(per_seed: list[list[dict]]) -> list[dict]:
    if not per_seed or not per_seed[0]:
        return []
    out = []
    for i, b in enumerate(per_seed[0]):
        vals = [s[i]["oa"] for s in per_seed if s[i]["oa"] is not None]
        out.append({"lo": b["lo"], "hi": b["hi"], "n": b["n"], "oa": statistics.fmean(vals) if vals else None})
    return out


def _pct(ms: tuple) -> str:
    m, s = ms
    if m is None:
        return "–"
    return f"{100 * m:.1f}" if s is None else f"{100 * m:.1f} ± {100 * s:.1f}"


def write_outputs(rows: list[dict], seeds: list[int], preset: str, selection: str, out_dir: str) -> str:
    cols = ["OA", "AA", "F1", "κ", "clear", "partly", "cloudy"]
    keys = ["oa", "aa", "macro_f1", "kappa", *BUCKETS]
    with open(os.path.join(out_dir, "comparison.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "row", "oracle", *[f"{k}_{x}" for k in keys for x in ("mean", "std")], "n",
                    *[f"n_{b}" for b in BUCKETS], "also_in"])
        for r in rows:
            w.writerow([r["method"], r["label"], r["oracle"], *[v for k in keys for v in r[k]], r["n"],
                        *[r[f"n_{b}"] for b in BUCKETS], " ".join(r["also_in"])])
    over = f"mean ± std over seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else f"seed {seeds[0]} (one seed: no spread)"
    lines = [f"Accuracy % on the target test split, {over} "
             f"(preset {preset}, selection {selection}). Rows marked oracle used information a real user lacks.",
             "", "| method | model | " + " | ".join(cols) + " | oracle |", "|" + "---|" * (len(cols) + 3)]
    for r in rows:
        lines.append(f"| {r['method']} | {r['label']} | " + " | ".join(_pct(r[k]) for k in keys)
                     + f" | {r['oracle'] or ''} |")
    n = rows[0] if rows else {}
    lines += ["", f"Tiles per bucket (clear / partly / cloudy): {n.get('n_clear', 0)} / {n.get('n_partly', 0)} / "
                  f"{n.get('n_cloudy', 0)}, {n.get('n', 0)} in all."]
    md = "\n".join(lines) + "\n"
    with open(os.path.join(out_dir, "comparison.md"), "w") as f:
        f.write(md)
    plot_buckets(rows, os.path.join(out_dir, "buckets.png"))
    plot_coverage(rows, os.path.join(out_dir, "coverage.png"))
    return md


def _label(r: dict) -> str:
    return f"{r['method']}: {r['label']}" + (" [oracle]" if r["oracle"] else "")


def plot_buckets(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(BUCKETS) + 0.5 * len(rows)), 4))
    width = 0.8 / max(len(rows), 1)
    x = np.arange(len(BUCKETS) + 1)
    for i, r in enumerate(rows):
        vals = [r["oa"][0], *(r[b][0] for b in BUCKETS)]
        errs = [r["oa"][1] or 0.0, *((r[b][1] or 0.0) for b in BUCKETS)]
        ax.bar(x + i * width, [100 * (v or 0) for v in vals], width, yerr=[100 * (e or 0) for e in errs],
               label=_label(r), hatch="//" if r["oracle"] else None)
    ax.set_xticks(x + width * (len(rows) - 1) / 2, ["overall", *BUCKETS])
    ax.set_ylabel("accuracy % (target test)")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_coverage(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        pts = [((b["lo"] + b["hi"]) / 2, 100 * b["oa"]) for b in r["coverage"] if b["oa"] is not None]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", linestyle="--" if r["oracle"] else "-", label=_label(r))
    ax.set_xlabel("cloud coverage of the tile (fraction, ten bins)")
    ax.set_ylabel("accuracy % (target test)")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
