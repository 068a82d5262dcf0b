"""Cloud detection and simulation costs, and agreement of reduced-resolution s2cloudless with full resolution.

On the real SEN12MS-CR cloudy tiles (``<real>/SEN12MS-CR/GLF-CR/data/s2_cloudy``) it measures,
in one run and after a warm-up call of each detector (full and reduced resolution timed in rotating
order, ``benchmarks/harness.py``'s ``repeat_rotating``):

* ms per 256 x 256 tile of s2cloudless at full resolution (factor 1, the reference: 10 m,
  ``average_over=4, dilation_size=2``) and at ``--factor``, and the speed-up ratio;
* IoU of the two masks per tile (when their union is non-empty) and pooled over the pixels of
  all tiles; the cloud fraction of each mask;
* the same IoU on "spliced" tiles — the cloudy tile's pixels pasted into each place's cloud-free
  tile through simulated cloud masks — which have long real cloud edges (the real cloudy tiles
  are almost all-cloud and all-clear, so they say little about edges);
* ms per tile of the DSen2-CR rule detector, and of ``simulate_clouds`` per preset on a
  13 x 256 x 256 tile.

Times are medians over ``--repeats`` calls (at least 20 for the simulation), on one thread:
LightGBM gets one thread (the detector's setting) and BLAS is limited to one (as Ray does for a
one-CPU task). The model load is timed separately, from a cleared cache.

``--json PATH`` also writes every figure as raw JSON.

    .venv/bin/python benchmarks/cloud_detection.py --repeats 5
"""

from __future__ import annotations

import argparse
import itertools
import os
from pathlib import Path
from typing import Callable

import numpy as np
import rasterio
from threadpoolctl import threadpool_limits

from harness import Timer, emit, median_seconds, repeat_rotating, run_info
from raypipe.clouds.detect import DEFAULT_FACTOR, S2CloudlessDetector, load_s2cloudless, make_detector
from raypipe.clouds.simulate import PRESETS, simulate_clouds
from raypipe.bands import S2_SCALE

TILES = ("ROIs1970_fall_139_p839", "ROIs2017_winter_112_p797")
CLOUDY_DIR = "SEN12MS-CR/GLF-CR/data/s2_cloudy"
CLEAR_DIR = "SEN12MS-CR/GLF-CR/data/s2_cloudfree"
SPLICE_COVERAGES = (0.3, 0.5, 0.7)
DEFAULT_REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` in ms over ``repeats`` calls, after one untimed warm-up call."""
    return 1000.0 * median_seconds(fn, repeats, warmup=True)


def paired_median_ms(fn_a: Callable[[], object], fn_b: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median ms of ``fn_a()`` and ``fn_b()`` timed in rotating order (both see the same machine load),
    after a warm-up call of each."""
    med = repeat_rotating({"a": fn_a, "b": fn_b}, repeats, warmup=True).medians
    return 1000.0 * med["a"], 1000.0 * med["b"]


def iou(a: np.ndarray, b: np.ndarray) -> float | None:
    """Intersection over union of two bool masks; ``None`` when both are empty."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else None


def read_tiles(real_root: str, folder: str) -> dict[str, np.ndarray]:
    """The two SEN12MS-CR places from ``folder``: (13, 256, 256) uint16 each, by name."""
    tiles = {}
    for name in TILES:
        with rasterio.open(Path(real_root) / folder / f"{name}.tif") as src:
            tiles[name] = src.read()
    return tiles


def spliced_tiles(cloudy: np.ndarray, clear: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The cloudy tile pasted into each cloud-free tile through thick simulated masks of several coverages."""
    out = {}
    for name, ground in clear.items():
        for coverage in SPLICE_COVERAGES:
            mask = simulate_clouds(ground[:1].astype(np.float32), f"splice/{name}", "thick",
                                   coverage=coverage).mask
            out[f"{name}@{coverage}"] = np.where(mask[None], cloudy, ground)
    return out


def compare_factors(tiles: dict[str, np.ndarray], full: S2CloudlessDetector, fast: S2CloudlessDetector,
                    repeats: int) -> dict:
    """Per-tile time, cloud fraction and IoU of ``fast`` against ``full``, plus pooled figures."""
    rows, masks_full, masks_fast = {}, [], []
    for name, tile in tiles.items():
        m_full, m_fast = full(tile)[1], fast(tile)[1]
        masks_full.append(m_full.ravel())
        masks_fast.append(m_fast.ravel())
        rows[name] = {"iou": iou(m_fast, m_full), "fraction_full": float(m_full.mean()),
                      "fraction_fast": float(m_fast.mean())}
        if repeats:
            rows[name]["ms_full"], rows[name]["ms_fast"] = paired_median_ms(lambda: full(tile), lambda: fast(tile),
                                                                            repeats)
    pooled = iou(np.concatenate(masks_fast), np.concatenate(masks_full))
    ious = [r["iou"] for r in rows.values() if r["iou"] is not None]
    return {"tiles": rows, "iou_pooled": pooled, "iou_mean": float(np.mean(ious)), "iou_min": float(np.min(ious))}


def run(real_root: str, repeats: int, factor: int = DEFAULT_FACTOR) -> dict:
    """All figures of this benchmark as a dict (see the module docstring)."""
    with threadpool_limits(limits=1, user_api="blas"):
        load_s2cloudless.cache_clear()
        with Timer() as load:
            load_s2cloudless()
        model_load_s = load.seconds

        cloudy = read_tiles(real_root, CLOUDY_DIR)
        clear = read_tiles(real_root, CLEAR_DIR)
        full, fast = S2CloudlessDetector(factor=1), S2CloudlessDetector(factor=factor)
        real = compare_factors(cloudy, full, fast, repeats)
        ms_full = float(np.mean([r["ms_full"] for r in real["tiles"].values()]))
        ms_fast = float(np.mean([r["ms_fast"] for r in real["tiles"].values()]))
        spliced = compare_factors(spliced_tiles(cloudy[TILES[0]], clear), full, fast, repeats=0)

        rule = make_detector("rule")
        rule_ms = float(np.mean([median_ms(lambda: rule(t), repeats) for t in cloudy.values()]))
        rule_fraction = {name: float(rule(t)[1].mean()) for name, t in cloudy.items()}

        image = clear[TILES[0]].astype(np.float32) / np.float32(S2_SCALE)
        simulate_ms = {}
        for preset in PRESETS:
            ids = itertools.count()  # a new sample id, hence a new cloud field, per call
            simulate_ms[preset] = median_ms(lambda: simulate_clouds(image, f"bench/{next(ids)}", preset,
                                                                    coverage=0.5), max(repeats, 20))
    return {
        "factor": factor, "repeats": repeats, "model_load_s": model_load_s,
        "s2cloudless": {"ms_full": ms_full, "ms_fast": ms_fast, "speedup": ms_full / ms_fast, **real},
        "spliced": spliced,
        "rule": {"ms": rule_ms, "fraction": rule_fraction},
        "simulate_ms": simulate_ms, "simulate_shape": list(image.shape),
    }


def _fmt_iou(value: float | None) -> str:
    return "n/a (both masks empty)" if value is None else f"{value:.3f}"


def report(res: dict) -> str:
    """The figures of :func:`run` as text."""
    s2c, f = res["s2cloudless"], res["factor"]
    lines = [f"s2cloudless model load (once per process): {res['model_load_s']:.2f} s",
             f"s2cloudless full resolution (factor 1): {s2c['ms_full']:.1f} ms/tile",
             f"s2cloudless factor {f}:                 {s2c['ms_fast']:.2f} ms/tile",
             f"speed-up factor {f} vs full:            {s2c['speedup']:.1f}x"]
    for name, row in s2c["tiles"].items():
        lines.append(f"  {name}: cloud fraction full {row['fraction_full']:.4f}, factor {f} "
                     f"{row['fraction_fast']:.4f}; IoU {_fmt_iou(row['iou'])}; "
                     f"{row['ms_full']:.1f} vs {row['ms_fast']:.2f} ms")
    lines.append(f"IoU pooled over the real tiles' pixels: {_fmt_iou(s2c['iou_pooled'])}")
    sp = res["spliced"]
    lines.append(f"IoU on {len(sp['tiles'])} spliced tiles (real cloud edges): pooled {sp['iou_pooled']:.3f}, "
                 f"mean {sp['iou_mean']:.3f}, min {sp['iou_min']:.3f}")
    rule = res["rule"]
    lines.append(f"DSen2-CR rule detector: {rule['ms']:.2f} ms/tile; cloud fraction "
                 + ", ".join(f"{n} {v:.4f}" for n, v in rule["fraction"].items()))
    shape = "x".join(map(str, res["simulate_shape"]))
    lines.append(f"simulate_clouds ms/tile on {shape} (coverage 0.5): "
                 + ", ".join(f"{p} {ms:.2f} ms" for p, ms in res["simulate_ms"].items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real-root", default=os.environ.get("RAYPIPE_REAL_DATA", str(DEFAULT_REAL)),
                        help="folder holding SEN12MS-CR/GLF-CR/data "
                             "(default: $RAYPIPE_REAL_DATA, else ../shared/data/real)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median reported)")
    parser.add_argument("--factor", type=int, default=DEFAULT_FACTOR, help="s2cloudless reduction factor to compare")
    parser.add_argument("--json", default="", help="also write every figure as raw JSON to this file")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    res = run(args.real_root, args.repeats, args.factor)
    emit({"benchmark": "cloud_detection", "args": vars(args), "run": run_info(), **res}, args.json or None,
         text=report(res))


if __name__ == "__main__":
    main()
