"""Render tiles and write the benchmark: per-tile rendering, the parallel writer, ``generate``.

Public entry points:

* :func:`generate` — the whole benchmark (both domains and ``synthetic.json``), what
  ``jobs/make_synthetic.py`` runs.
* :func:`render_tiles` — only the tiles of some domains, without ``synthetic.json`` (e.g. the
  source domain for a data-throughput benchmark); the same files, byte for byte, that
  :func:`generate` writes for the same arguments.
* :func:`write_tiles` — render and write given :class:`~raypipe.synthetic.scene.TileSpec` s
  (from :func:`~raypipe.synthetic.scene.plan`) with a :class:`RenderConfig` (from
  :func:`render_config`) in this process; picklable, so it can be handed to a process pool.
  :func:`render_tile` returns one tile's arrays without writing anything.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import numbers
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from raypipe import storage
from raypipe.bands import S1_BANDS, S2_BANDS, S2_SCALE
from raypipe.clouds.simulate import (CLEAR_MAX, FULL_MIN, PRESETS, CoverageDistribution, resolve_preset,
                                     simulate_clouds)
from raypipe.errors import ConfigError
from raypipe.raster import write_geotiff
from raypipe.synthetic.layout import (
    _DOMAIN_CODE,
    _STREAM_TILE,
    DEFAULT_SCENE_SIZE,
    DOMAINS,
    LAYOUT,
    METADATA_FILE,
    MIN_SCENES,
    PIXEL_SIZE_M,
    ROIS,
    SAMPLE_ID_FORMAT,
    SYNTHETIC_VERSION,
)
from raypipe.synthetic.sar import render_sar
from raypipe.synthetic.scene import (
    CLASS_TO_IGBP,
    CLASS_TO_LCCS,
    CLASSES,
    LC_BANDS,
    TARGET_PRIOR_RATIO,
    TileSpec,
    class_map,
    class_prior,
    held_out_scenes,
    plan,
    render_lc,
    scene_count,
)
from raypipe.synthetic.spectra import DomainGap, render_cloud_cover, render_optical, to_uint16

CLOUD_PRESETS: tuple[str, ...] = tuple(PRESETS)  # thin, thick, fog, shadow
CLEAR_BELOW = CLEAR_MAX  # cloud-fraction buckets (DESIGN §3): clear < 0.1 <= partly <= 0.9 < full
FULL_ABOVE = FULL_MIN
MIN_TILES = 10
MIN_SIZE = 16
CHUNK_TILES = 16  # tiles rendered and written per task
PROGRESS_EVERY_S = 5.0


@dataclass(frozen=True)
class RenderConfig:
    out: str
    size: int
    seed: int
    preset: str
    with_reference: bool
    gap: DomainGap
    cloud_salt: str


@dataclass
class RenderedTile:
    """Arrays of one tile (what gets written), before encoding."""

    spec: TileSpec
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    dominant_fraction: float = 0.0
    cloud_fraction: float | None = None


def cloud_salt(seed: int) -> str:
    return f"synthetic-seed{seed}"


def simulator_opacity(shape: tuple[int, ...], sample_id: str, preset: str, salt: str, coverage: float):
    """The cloud simulator's per-band opacity and ground transmission for one tile, without its colour.

    :func:`~raypipe.clouds.simulate.simulate_clouds` is affine in its input image,
    ``out = image * T + A`` with ``T = (1 - c_b) * shade`` and ``A = c_b * (c_b + colour (1 - c_b))``
    (its documented blend). Two calls, on zeros and on ones (the same seeded draws: the clouds
    depend on the sample id, salt, preset, coverage and shape only), give ``A`` and ``T``; ``c_b``
    is the root in [0, 1] of ``(1 - colour) c^2 + colour c = A``. Returns
    ``(opacity (C, H, W), transmission (C, H, W), mask (H, W) bool, fraction)``."""
    zeros = simulate_clouds(np.zeros(shape, np.float32), sample_id, preset=preset, salt=salt, coverage=coverage)
    ones = simulate_clouds(np.ones(shape, np.float32), sample_id, preset=preset, salt=salt, coverage=coverage)
    base = np.clip(zeros.image.astype(np.float64), 0.0, 1.0)
    transmission = np.clip(ones.image - zeros.image, 0.0, 1.0).astype(np.float32)
    colour = resolve_preset(preset).colour
    if colour >= 1.0:
        opacity = base
    else:
        a = 1.0 - colour
        opacity = (-colour + np.sqrt(colour * colour + 4.0 * a * base)) / (2.0 * a)
    mask = np.asarray(zeros.mask, dtype=bool)
    return np.clip(opacity, 0.0, 1.0).astype(np.float32), transmission, mask, float(mask.mean())


def render_tile(spec: TileSpec, cfg: RenderConfig) -> RenderedTile:
    """A pure function of (seed, domain, tile index) and the layout parameters."""
    rng = np.random.default_rng([cfg.seed, _STREAM_TILE, _DOMAIN_CODE[spec.domain], spec.index])
    gap = cfg.gap if spec.domain == "target" else None
    cmap = class_map(rng, spec.label, cfg.size)
    s2 = to_uint16(render_optical(rng, cmap, gap))
    tile = RenderedTile(spec, dominant_fraction=float(np.mean(cmap == spec.label)))
    tile.arrays["s1"] = render_sar(rng, cmap, gap)
    tile.arrays["lc"] = render_lc(cmap)
    if spec.domain == "source":
        tile.arrays["s2"] = s2
        return tile
    # Clouds: where and how opaque from the simulator (seeded by the sample id), their reflectance
    # from the generator's cloud spectrum (spectra.CLOUD_SPECTRUM), not the simulator's white.
    coverage = CoverageDistribution().draw(spec.sample_id, salt=cfg.cloud_salt)
    opacity, transmission, mask, fraction = simulator_opacity(s2.shape, spec.sample_id, cfg.preset,
                                                              cfg.cloud_salt, coverage)
    cloudy = render_cloud_cover(rng, s2.astype(np.float32) / np.float32(S2_SCALE), opacity, transmission)
    tile.arrays["s2_cloudy"] = to_uint16(cloudy)
    tile.arrays["cloudmask"] = mask.astype(np.uint8)[None]
    tile.cloud_fraction = fraction
    if cfg.with_reference:
        tile.arrays["s2"] = s2
    return tile


def write_tiles(specs: list[TileSpec], cfg: RenderConfig) -> list[dict]:
    """Render and write ``specs`` under ``cfg.out`` in this process; returns one record per tile.

    A record is what ``synthetic.json`` lists per tile (id, domain, index, scene, patch, split,
    label name, dominant fraction and, for the target, cloud fraction). A picklable top-level
    function: :func:`render_tiles` hands chunks of specs to worker processes through it."""
    records = []
    for spec in specs:
        tile = render_tile(spec, cfg)
        for modality, array in tile.arrays.items():
            write_geotiff(storage.join(cfg.out, spec.path(modality)), array, crs=spec.crs,
                          transform=spec.transform)
        rec = {"id": spec.sample_id, "domain": spec.domain, "index": spec.index, "scene": spec.scene,
               "patch": spec.patch, "split": spec.split, "label": CLASSES[spec.label],
               "dominant_fraction": round(tile.dominant_fraction, 4)}
        if tile.cloud_fraction is not None:
            rec["cloud_fraction"] = round(tile.cloud_fraction, 4)
        records.append(rec)
    return records


def render_config(out: str, size: int, seed: int, preset: str = "thick", with_reference: bool = False) -> RenderConfig:
    """The :class:`RenderConfig` that :func:`generate` uses for these parameters (the domain gap and
    the cloud salt are drawn from ``seed``)."""
    return RenderConfig(storage.normalize(out), size, seed, preset, with_reference, DomainGap.draw(seed),
                        cloud_salt(seed))




# --------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------


def default_workers() -> int:
    """Usable cores of this process (respects CPU affinity / container limits when visible)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _integer(value, flag: str, minimum: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(flag, f"must be an integer >= {minimum} ({what}), got {value!r}")
    return int(value)


def default_scene_size(tiles: int) -> int:
    """Patches per scene when none is given: :data:`DEFAULT_SCENE_SIZE` (50) when that leaves at least
    :data:`MIN_SCENES` (5) scenes per domain, else ``tiles // MIN_SCENES``, so that the ~20 % test
    fraction can be held out and every split gets scenes (10 tiles -> 2 per scene, 5 scenes)."""
    return min(DEFAULT_SCENE_SIZE, max(1, tiles // MIN_SCENES))


def validate(tiles: int, size: int, seed: int, workers: int | None, preset: str,
             scene_size: int | None = None) -> tuple[int, int, int, int | None, int]:
    """Check the parameters (ConfigError naming the command-line flag); returns them as plain ints.
    ``scene_size=None`` is replaced by :func:`default_scene_size` of ``tiles``."""
    tiles = _integer(tiles, "--tiles", MIN_TILES, "tiles per domain")
    size = _integer(size, "--size", MIN_SIZE, "tile side in pixels")
    seed = _integer(seed, "--seed", 0, "random seed")
    if workers is not None:
        workers = _integer(workers, "--workers", 1, "worker processes")
    if preset not in CLOUD_PRESETS:
        raise ConfigError("--cloud-preset", f"unknown preset {preset!r}; known: {', '.join(CLOUD_PRESETS)}")
    if scene_size is None:
        scene_size = default_scene_size(tiles)
    scene_size = _integer(scene_size, "--scene-size", 1, "patches per scene")
    if scene_count(tiles, scene_size) < 2:
        raise ConfigError("--scene-size", f"{scene_size} patches per scene gives a single scene for {tiles} tiles; "
                          f"at least 2 scenes are needed to hold out test scenes (use --scene-size <= {tiles // 2})")
    return tiles, size, seed, workers, scene_size


def _bucket(fraction: float) -> str:
    if fraction < CLEAR_BELOW:
        return "clear"
    return "full" if fraction > FULL_ABOVE else "partly"


def _cloud_summary(records: Iterable[dict]) -> dict:
    out = {s: {"clear": 0, "partly": 0, "full": 0} for s in ("all", "train", "test")}
    fractions = []
    for r in records:
        b = _bucket(r["cloud_fraction"])
        out["all"][b] += 1
        out[r["split"]][b] += 1
        fractions.append(r["cloud_fraction"])
    out["mean_fraction"] = round(float(np.mean(fractions)), 4) if fractions else None
    return out


def _class_counts(records: list[dict]) -> dict:
    return {split: {c: sum(1 for r in records if r["split"] == split and r["label"] == c) for c in CLASSES}
            for split in ("train", "test")}


def _chunks(items: list, n: int) -> list[list]:
    return [items[i:i + n] for i in range(0, len(items), n)]


def render_tiles(out: str, tiles: int, size: int, seed: int, *, domains: Iterable[str] = DOMAINS,
                 scene_size: int | None = None, preset: str = "thick", with_reference: bool = False,
                 workers: int | None = None, quiet: bool = True) -> list[dict]:
    """Write the tiles of ``domains`` (default both) under ``out``, without ``synthetic.json``.

    The files are the ones :func:`generate` writes for the same arguments, byte for byte (each tile
    is a pure function of the seed, its domain and index, and the layout parameters), at the same
    paths (``<out>/source/ROIs1158_spring/...``, ``<out>/target/...``). Returns the per-tile records
    (with their ``domain``), sorted by domain then index. ``workers`` processes (default: all
    usable cores; 1 = in this process); progress is printed unless ``quiet``.

        records = render_tiles("s3://bench/synthetic", tiles=512, size=256, seed=0, domains=("source",))
        prepare("sen12ms", "s3://bench/synthetic/source", "s3://bench/source.parquet")
    """
    domains = tuple(domains)
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown or not domains:
        raise ConfigError("domains", f"unknown domain(s) {unknown} (known: {list(DOMAINS)})" if unknown
                          else "no domain given")
    tiles, size, seed, workers, scene_size = validate(tiles, size, seed, workers, preset, scene_size)
    workers = workers or default_workers()
    specs = plan(tiles, size, seed, scene_size)
    cfg = render_config(out, size, seed, preset, with_reference)
    all_specs = [s for d in DOMAINS if d in domains for s in specs[d]]
    chunk = max(1, min(CHUNK_TILES, math.ceil(len(all_specs) / (4 * workers))))
    chunks = _chunks(all_specs, chunk)
    total = len(all_specs)
    started = last_print = time.monotonic()
    done = 0
    records: list[dict] = []

    def report(n: int, final: bool = False) -> None:
        nonlocal done, last_print
        done += n
        now = time.monotonic()
        if not quiet and (final or now - last_print >= PROGRESS_EVERY_S):
            last_print = now
            rate = done / max(now - started, 1e-9)
            print(f"[synthetic] {done}/{total} tiles ({rate:.1f} tiles/s, {workers} worker(s))", flush=True)

    if not quiet:
        what = " + ".join(f"{tiles} {d}" for d in DOMAINS if d in domains)
        print(f"[synthetic] writing {what} tiles of {size}x{size} "
              f"to {storage.redact(cfg.out)} with {workers} worker(s)", flush=True)
    if workers == 1:
        for c in chunks:
            records += write_tiles(c, cfg)
            report(len(c))
    else:
        # spawn: workers start clean (no inherited event loops, locks or Ray state).
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=ctx) as pool:
            pending = {pool.submit(write_tiles, c, cfg) for c in chunks}
            try:
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        part = fut.result()
                        records += part
                        report(len(part))
            except BaseException:
                for fut in pending:
                    fut.cancel()
                raise
    report(0, final=True)
    records.sort(key=lambda r: (DOMAINS.index(r["domain"]), r["index"]))
    return records


def generate(out: str, tiles: int, size: int, seed: int, workers: int | None = None, preset: str = "thick",
             scene_size: int | None = None, with_reference: bool = False, *, quiet: bool = False) -> dict:
    """Generate the benchmark under ``out`` (path or URI); returns the ``synthetic.json`` content.

    ``tiles`` tiles per domain (source and target each), ``size`` x ``size`` pixels, fully
    determined by ``seed``. ``workers`` processes (default: all usable cores; 1 = in this
    process). ``scene_size`` patches per scene (default :func:`default_scene_size` of ``tiles``).
    Progress (tiles done / total, tiles/s) is printed unless ``quiet``.
    """
    tiles, size, seed, workers, scene_size = validate(tiles, size, seed, workers, preset, scene_size)
    started = time.monotonic()
    cfg = render_config(out, size, seed, preset, with_reference)
    records = render_tiles(cfg.out, tiles, size, seed, scene_size=scene_size, preset=preset,
                           with_reference=with_reference, workers=workers, quiet=quiet)
    total = len(records)
    by_domain = {d: [r for r in records if r["domain"] == d] for d in DOMAINS}
    for d in DOMAINS:
        for r in by_domain[d]:
            del r["domain"]
    meta = {
        "version": SYNTHETIC_VERSION,
        "generator": "raypipe.synthetic",
        "note": "Generated benchmark (DESIGN 7b). Results on it are results on this synthetic "
                "benchmark, never the paper's numbers.",
        "tiles": tiles,
        "tiles_per": "domain",
        "size": size,
        "seed": seed,
        "preset": preset,
        "scene_size": scene_size,
        "with_reference": with_reference,
        "pixel_size_m": PIXEL_SIZE_M,
        "classes": list(CLASSES),
        "class_to_igbp": dict(CLASS_TO_IGBP),
        "class_to_lccs": {c: list(v) for c, v in CLASS_TO_LCCS.items()},
        "rois": dict(ROIS),
        "bands": {"s1": list(S1_BANDS), "s2": list(S2_BANDS), "lc": list(LC_BANDS), "cloudmask": ["cloud"]},
        "layout": LAYOUT,
        "sample_id_format": SAMPLE_ID_FORMAT,
        "numbering": "tile i of a domain is scene i // scene_size + 1, patch i % scene_size (patches start at 0)",
        "scenes": {d: scene_count(tiles, scene_size) for d in DOMAINS},
        "test_scenes": {d: held_out_scenes(seed, d, scene_count(tiles, scene_size)) for d in DOMAINS},
        "class_counts": {d: _class_counts(by_domain[d]) for d in DOMAINS},
        "class_prior": {d: dict(zip(CLASSES, map(float, class_prior(seed, d)))) for d in DOMAINS},
        "class_prior_rule": f"source uniform; target p_k ~ {TARGET_PRIOR_RATIO} ** (-rank_k / 9), ranks drawn "
                            "from the seed; every class at least once in every split of >= 10 tiles",
        "clouds": {
            "domain": "target",
            "simulator": "raypipe.clouds.simulate.simulate_clouds",
            "preset": preset,
            "salt": cfg.cloud_salt,
            "coverage": "raypipe.clouds.simulate.CoverageDistribution().draw(sample_id, salt)",
            "buckets": {"clear_below": CLEAR_BELOW, "full_above": FULL_ABOVE},
            "summary": _cloud_summary(by_domain["target"]),
        },
        "domain_gap": cfg.gap.to_json(),
        "samples": by_domain,
    }
    storage.write_bytes(storage.join(cfg.out, METADATA_FILE), json.dumps(meta, indent=1).encode())
    if not quiet:
        elapsed = time.monotonic() - started
        print(f"[synthetic] done: {total} tiles in {elapsed:.1f} s; target clouds "
              f"{meta['clouds']['summary']['all']}; wrote {storage.redact(storage.join(cfg.out, METADATA_FILE))}",
              flush=True)
    return meta
