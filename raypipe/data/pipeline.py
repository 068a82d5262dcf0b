"""The Ray Data pipeline: manifest → read → decode → cloud stage → normalise → augment → batches.

    pipe = TilePipeline(DataConfig(manifest="s3://bucket/sen12ms-cr.parquet", split="train"))
    for batch in pipe.iter_torch_batches(batch_size=32):   # or ray.train.get_dataset_shard(...)
        batch["optical"], batch["sar"], batch["label"], batch["cloud_fraction"], batch["sample_id"]
    print(pipe.report(used=n_seen))  # samples in = used + quarantined

* **Read** is parallel twice over: Ray runs blocks of ``rows_per_block`` manifest rows as tasks on
  every CPU of the cluster, and each task fetches its tiles with ``read_threads`` threads (object
  storage latency hides behind other fetches; GDAL decoding releases the GIL). Large scenes are read
  by window (range requests).
* **Memory** is bounded by Ray Data's streaming executor (a bounded number of blocks in flight),
  not by the dataset size: nothing is materialised.
* **Bad tiles** raise a :class:`~raypipe.errors.BadTileError` naming the file, or with
  ``on_bad_tile: skip`` are quarantined in a :mod:`~raypipe.data.quarantine` ledger and counted.
* Problems that can be seen before reading pixels (unknown keys, band selections, missing columns,
  missing files, unreachable storage) fail in the constructor, before any long run starts.
"""

from __future__ import annotations

import logging
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from raypipe import bands as B
from raypipe import raster, storage
from raypipe.clouds.stage import CloudConfig, CloudStage
from raypipe.data import quarantine
from raypipe.data.datasets import DatasetSpec, get_spec
from raypipe.data.manifest import check_files_exist, read_manifest
from raypipe.errors import BadTileError, ConfigError, RaypipeError

log = logging.getLogger(__name__)


@dataclass
class NormaliseConfig:
    """``zscore``: (x − mean) / std per band (SEN12MS's published constants unless given);
    ``minmax``: the SEN12MS reference scaling (optical clip 0…scale then /scale; SAR dB clip(−25, 0)/25 + 1);
    ``auto``: zscore where constants are known for every selected band, else minmax; ``none``: raw values."""

    mode: Literal["auto", "zscore", "minmax", "none"] = "auto"
    optical_mean: list[float] = field(default_factory=list)
    optical_std: list[float] = field(default_factory=list)
    sar_mean: list[float] = field(default_factory=list)
    sar_std: list[float] = field(default_factory=list)


@dataclass
class AugmentConfig:
    hflip: bool = False
    vflip: bool = False
    rot90: bool = False
    # random crop of crop × crop optical pixels (0 = the whole tile), drawn on the grid the optical,
    # SAR and label rasters share (M3M-CR: multiples of 10 optical px ↔ 3 label px, CloudSeg's 160 ↔ 48),
    # so every array of a sample is cut at the same place on the ground; training views only
    crop: int = 0


@dataclass
class RetryConfig:
    """Bounded retries of tile reads when the object store does not answer (connection refused or
    reset, timeouts, 5xx/SlowDown): ``attempts`` tries in all, waiting ``backoff_s`` then doubling,
    at most ``max_backoff_s`` between two. Missing or bad tiles are never retried. When the store
    stays down longer, the read fails with a :class:`~raypipe.errors.StorageError` naming the file and
    the endpoint (the tile is not quarantined)."""

    attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0

    def policy(self) -> storage.RetryPolicy:
        return storage.RetryPolicy(self.attempts, self.backoff_s, self.max_backoff_s)


@dataclass
class DataConfig:
    manifest: str = ""
    split: str = ""  # "" = every split
    domain: str = ""  # "" = every domain (the generated benchmark has "source" and "target")
    # which optical acquisition feeds the model; "both": the cloudy one as ``optical`` and the
    # cloud-free one of the same tile as ``optical_clear`` (datasets that have both: SEN12MS-CR,
    # M3M-CR, the generated benchmark), for methods that learn from the pair (SPL, CloudSeg's teacher)
    optical: Literal["clear", "cloudy", "both"] = "cloudy"
    optical_bands: list[str] = field(default_factory=list)  # [] = the dataset's default selection
    use_sar: bool = True
    clouds: CloudConfig = field(default_factory=CloudConfig)
    normalise: NormaliseConfig = field(default_factory=NormaliseConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    on_bad_tile: Literal["error", "skip"] = "error"
    max_invalid_fraction: float = 0.01
    read_threads: int = 16
    rows_per_block: int = 32
    check_files: bool = True
    limit: int = 0  # use only the first N samples (0 = all), for smoke runs
    retries: RetryConfig = field(default_factory=RetryConfig)
    # Decoded-split cache: "auto" decodes a split once (read, decode, cloud stage, normalise; every
    # step is deterministic, simulated clouds being seeded by sample id) into the Ray object store and
    # every later epoch, stage and evaluation that reads the same split with the same settings reuses
    # those blocks, as long as the decoded split fits in cache_fraction of the cluster's object store
    # memory (else it streams from storage every pass, as with "off"). Augmentation runs after the cache.
    cache: Literal["auto", "off"] = "auto"
    cache_fraction: float = 0.25

    def validate(self, path: str = "data") -> None:
        if self.augment.crop < 0:
            raise ConfigError(f"{path}.augment.crop", "must be >= 0 (0 = the whole tile)")
        if self.rows_per_block < 1:
            raise ConfigError(f"{path}.rows_per_block", "must be >= 1")
        if self.read_threads < 1:
            raise ConfigError(f"{path}.read_threads", "must be >= 1")
        if not 0 <= self.max_invalid_fraction <= 1:
            raise ConfigError(f"{path}.max_invalid_fraction", "must be within [0, 1]")
        if not 0 < self.cache_fraction <= 1:
            raise ConfigError(f"{path}.cache_fraction", "must be within (0, 1]")
        if self.retries.attempts < 1:
            raise ConfigError(f"{path}.retries.attempts", "must be >= 1 (1 = no retry)")
        if not self.retries.backoff_s >= 0:
            raise ConfigError(f"{path}.retries.backoff_s", "must be >= 0")
        if not self.retries.max_backoff_s >= self.retries.backoff_s:
            raise ConfigError(f"{path}.retries.max_backoff_s", "must be >= retries.backoff_s")


class Normaliser:
    """Per-band affine normalisation ``(x − offset) / scale``, resolved once from config + dataset."""

    def __init__(self, cfg: NormaliseConfig, spec: DatasetSpec, optical_bands: tuple[str, ...]):
        n_opt, n_sar = len(optical_bands), len(spec.sar_bands)
        known_opt = spec.optical_stats is not None and spec.optical_stats.covers(optical_bands)
        mode = cfg.mode
        if mode == "auto":
            mode = "zscore" if (cfg.optical_mean or known_opt) else "minmax"
        self.mode = mode
        if mode == "none":
            self.opt = (np.zeros(n_opt), np.ones(n_opt))
            self.sar = (np.zeros(n_sar), np.ones(n_sar))
            self.opt_clip = self.sar_clip = None
        elif mode == "minmax":
            self.opt = (np.zeros(n_opt), np.full(n_opt, spec.optical_scale))
            self.opt_clip = (0.0, spec.optical_scale)
            lo, hi = spec.sar_range  # S1 dB: clip(-25, 0) / 25 + 1  ==  (x + 25) / 25
            self.sar, self.sar_clip = (np.full(n_sar, lo), np.full(n_sar, hi - lo)), (lo, hi)
        else:  # zscore
            self.opt_clip = self.sar_clip = None
            if cfg.optical_mean:
                mean, std = cfg.optical_mean, cfg.optical_std
            elif known_opt:
                mean, std = spec.optical_stats.select(optical_bands)
            else:
                raise ConfigError("data.normalise.optical_mean", f"no published z-score constants for bands "
                                  f"{list(optical_bands)} of {spec.name}: give optical_mean/optical_std or use minmax")
            if len(mean) != n_opt or len(std) != n_opt:
                raise ConfigError("data.normalise.optical_std", f"needs {n_opt} values (one per selected band)")
            if cfg.sar_mean:
                smean, sstd = cfg.sar_mean, cfg.sar_std
            elif spec.sar_stats is not None:
                smean, sstd = spec.sar_stats.mean, spec.sar_stats.std
            else:
                raise ConfigError("data.normalise.sar_mean", f"no published constants for {spec.name} SAR")
            if len(smean) != n_sar or len(sstd) != n_sar:
                raise ConfigError("data.normalise.sar_std", f"needs {n_sar} values")
            self.opt = (np.asarray(mean, float), np.asarray(std, float))
            self.sar = (np.asarray(smean, float), np.asarray(sstd, float))

    @staticmethod
    def _apply(x, params, clip, bands=None):
        """float32 ``(clip(x[bands]) − offset) / scale``: one output array, filled band by band in place
        (the cast to float32 happens inside the first ufunc; no full-size temporaries)."""
        off, scale = params
        off, scale = off.astype(np.float32), scale.astype(np.float32)
        bands = range(x.shape[0]) if bands is None else bands
        out = np.empty((len(bands), *x.shape[1:]), dtype=np.float32)
        for i, b in enumerate(bands):
            o = out[i]
            if clip is None:
                np.subtract(x[b], off[i], out=o, dtype=np.float32)
            else:
                o[...] = x[b]
                np.clip(o, clip[0], clip[1], out=o)
                o -= off[i]
            o /= scale[i]
        return out

    def optical(self, x: np.ndarray, bands=None) -> np.ndarray:
        """Normalised float32 optical (C, H, W); ``bands`` picks and orders x's bands (default: all)."""
        return self._apply(x, self.opt, self.opt_clip, bands)

    def sar_(self, x: np.ndarray) -> np.ndarray:
        return self._apply(x, self.sar, self.sar_clip)


@dataclass
class _Plan:
    """Everything a worker needs, resolved on the driver (small and picklable)."""

    cfg: DataConfig
    spec: DatasetSpec
    optical_col: str
    band_idx: list[int]
    optical_bands: tuple[str, ...]
    ledger: str


def _resolve_bands(cfg: DataConfig, spec: DatasetSpec) -> tuple[tuple[str, ...], list[int]]:
    wanted = tuple(cfg.optical_bands) or spec.default_optical_selection or spec.optical_bands
    try:
        return wanted, B.band_indexes(spec.optical_bands, wanted)
    except KeyError as exc:
        raise ConfigError("data.optical_bands", f"{exc.args[0]} for dataset {spec.name}") from None


class SampleReader:
    """Turns one manifest row into one model-ready sample: the pipeline's per-sample work.

    ``load(row)`` = storage read → raster decode and check → cloud stage → normalise, returning
    ``{"optical", "cloud_mask"[, "sar"][, "label_map"]}`` as float32 / uint8 / int64 arrays, or
    raising a :class:`~raypipe.errors.BadTileError` naming the file. It holds the per-process state
    (cloud stage, normaliser, a ``read_threads`` thread pool), built from a :class:`TilePipeline`'s
    ``plan`` (small and picklable: build the reader in the process that reads)::

        reader = SampleReader(pipe.plan)           # or pipe.sample_reader()
        sample = reader.load(pipe.frame.iloc[0].to_dict())

    Ray Data tasks reuse one reader per pipeline per process (:meth:`get`).
    """

    _cache: dict[str, "SampleReader"] = {}

    def __init__(self, plan: _Plan):
        self.plan = plan
        spec, cfg = plan.spec, plan.cfg
        self.clouds = CloudStage(cfg.clouds, spec.optical_scale, spec.is_sentinel2,
                                 optical_is_cloudy=plan.optical_col == "optical_cloudy_uri",
                                 masks_are_truth=spec.masks_are_truth)
        self.norm = Normaliser(cfg.normalise, spec, plan.optical_bands)
        self.pool = ThreadPoolExecutor(cfg.read_threads)

    @classmethod
    def get(cls, plan: _Plan) -> "SampleReader":
        """One worker state per pipeline per process (the plan is unpickled anew for every task)."""
        key = plan.ledger
        if key not in cls._cache:
            for old in cls._cache.values():
                old.pool.shutdown(wait=False)
            cls._cache.clear()
            cls._cache[key] = cls(plan)
        return cls._cache[key]

    def _read(self, uri: str, bands: int, dtypes, size, row) -> np.ndarray:
        expect = raster.Expect(bands=bands, dtypes=dtypes, size=size,
                               max_invalid_fraction=self.plan.cfg.max_invalid_fraction)
        if self.plan.spec.windowed_reads:
            r, c = int(row["row"]), int(row["col"])
            return raster.read_window(uri, r, c, size[0], size[1], expect)
        return raster.read(uri, expect)

    def load(self, row) -> dict:
        plan, spec = self.plan, self.plan.spec
        h, w = int(row["height"]), int(row["width"])
        ah, aw = round(h * spec.aux_grid), round(w * spec.aux_grid)
        opt_uri = row[plan.optical_col]
        if not opt_uri:
            raise BadTileError(f"<{row['sample_id']}>", "missing", f"no {plan.optical_col} for this sample")
        optical = self._read(opt_uri, len(spec.optical_bands), spec.optical_dtypes, (h, w), row)
        optical, mask = self.clouds(row["sample_id"], optical, row["cloud_mask_uri"])
        out = {"optical": self.norm.optical(optical, plan.band_idx), "cloud_mask": mask.astype(np.uint8),
               "bucket_fraction": np.float32(self.clouds.bucket_mask(mask, row["cloud_mask_uri"]).mean())}
        if plan.cfg.optical == "both":
            if not row["optical_uri"]:
                raise BadTileError(f"<{row['sample_id']}>", "missing", "no optical_uri (clear) for this sample")
            clear = self._read(row["optical_uri"], len(spec.optical_bands), spec.optical_dtypes, (h, w), row)
            out["optical_clear"] = self.norm.optical(clear, plan.band_idx)
        if plan.cfg.use_sar:
            if not row["sar_uri"]:
                raise BadTileError(f"<{row['sample_id']}>", "missing", "no sar_uri for this sample")
            sar = self._read(row["sar_uri"], len(spec.sar_bands), spec.sar_dtypes, (ah, aw), row)
            out["sar"] = self.norm.sar_(sar)
        if spec.task == "segmentation":
            lab = self._read(row["label_uri"], 1, None, (ah, aw), row)
            out["label_map"] = spec.map_labels(lab).astype(np.int64)
        return out

    def augment(self, s: dict, rng: np.random.Generator) -> dict:
        a = self.plan.cfg.augment
        if a.crop:
            s = aligned_crop(s, a.crop, self.plan.spec.aux_grid, rng)
        flips = []
        if a.hflip and rng.random() < 0.5:
            flips.append(lambda x: x[..., ::-1])
        if a.vflip and rng.random() < 0.5:
            flips.append(lambda x: x[..., ::-1, :])
        k = int(rng.integers(4)) if a.rot90 else 0
        for key in ("optical", "optical_clear", "sar", "cloud_mask", "label_map"):
            if key in s:
                x = s[key]
                for f in flips:
                    x = f(x)
                if k and x.shape[-1] == x.shape[-2]:
                    x = np.rot90(x, k, axes=(-2, -1))
                s[key] = np.ascontiguousarray(x)
        return s


def _empty(plan: _Plan, h: int, w: int) -> dict:
    spec = plan.spec
    ah, aw = round(h * spec.aux_grid), round(w * spec.aux_grid)
    out = {"sample_id": np.array([], dtype=object), "index": np.zeros(0, np.int64),
           "optical": np.zeros((0, len(plan.band_idx), h, w), np.float32),
           "cloud_mask": np.zeros((0, h, w), np.uint8), "cloud_fraction": np.zeros(0, np.float32),
           "bucket_fraction": np.zeros(0, np.float32)}
    if plan.cfg.optical == "both":
        out["optical_clear"] = out["optical"].copy()
    if plan.cfg.use_sar:
        out["sar"] = np.zeros((0, len(spec.sar_bands), ah, aw), np.float32)
    if spec.task == "segmentation":
        out["label_map"] = np.zeros((0, ah, aw), np.int64)
    else:
        out["label"] = np.zeros(0, np.int64)
    return out




def grid_unit(aux_grid: float) -> int:
    """The smallest number of optical pixels that is a whole number of SAR / label pixels (M3M-CR's
    0.3: 10 optical px = 3 label px; 1 where the grids are the same)."""
    for k in range(1, 1001):
        if abs(k * aux_grid - round(k * aux_grid)) < 1e-6:
            return k
    raise ValueError(f"no common grid for aux_grid {aux_grid}")


def aligned_crop(s: dict, crop: int, aux_grid: float, rng: np.random.Generator) -> dict:
    """A random ``crop`` × ``crop`` window (optical px) of every array of a sample, its corner on the
    shared grid (:func:`grid_unit`); arrays on the aux grid (SAR, label maps) are cut at the same place."""
    unit = grid_unit(aux_grid)
    h, w = s["optical"].shape[-2:]
    if crop > h or crop > w:
        raise ConfigError("data.augment.crop", f"{crop} px is larger than the {h} x {w} tile")
    r = unit * int(rng.integers(0, (h - crop) // unit + 1))
    c = unit * int(rng.integers(0, (w - crop) // unit + 1))
    out = dict(s)
    for key in _PER_SAMPLE:
        if key not in s:
            continue
        x = s[key]
        if x.shape[-2:] == (h, w):
            out[key] = np.ascontiguousarray(x[..., r:r + crop, c:c + crop])
        else:  # the aux grid
            a = round(crop * aux_grid)
            ar, ac = round(r * aux_grid), round(c * aux_grid)
            out[key] = np.ascontiguousarray(x[..., ar:ar + a, ac:ac + a])
    return out


def decode_rows(rows: list[dict], plan: _Plan, reader: SampleReader | None = None, augment: bool = True) -> dict:
    """Manifest rows (dicts, with the pipeline's ``index`` column) → one batch of model-ready arrays.

    What every Ray Data task of the pipeline runs: each row through :meth:`SampleReader.load` on
    the reader's thread pool, bad tiles raised or quarantined (``on_bad_tile``), augmentation,
    then stacked, with ``sample_id``, ``index``, ``cloud_fraction`` and (classification)
    ``label``. ``reader`` defaults to this process's cached reader for ``plan``."""
    worker = reader or SampleReader.get(plan)
    policy = plan.cfg.retries.policy()
    retried: list[dict] = []  # list.append is atomic: the pool's threads share it

    def one(row):
        # Reads of an unreachable store are retried inside (storage.call_with_retries), then raise
        # StorageError, which is *not* caught here: an outage fails the job, it never quarantines.
        try:
            with storage.retry_policy(policy, retried):
                return worker.load(row)
        except BadTileError as exc:
            return exc

    try:
        results = list(worker.pool.map(one, rows))
    finally:
        _report_retries(plan, retried)
    good, bad = [], []
    for row, res in zip(rows, results):
        if isinstance(res, BadTileError):
            if plan.cfg.on_bad_tile == "error":
                raise res
            bad.append({"sample_id": row["sample_id"], "uri": res.uri, "reason": res.reason, "detail": res.detail})
        else:
            good.append((row, res))
    quarantine.report(plan.ledger, bad)
    if not good:
        return _empty(plan, int(rows[0]["height"]), int(rows[0]["width"]))
    if augment and _augments(plan):
        rng = np.random.default_rng()
        good = [(row, worker.augment(s, rng)) for row, s in good]
    out = {"sample_id": np.array([r["sample_id"] for r, _ in good], dtype=object),
           "index": np.array([r["index"] for r, _ in good], dtype=np.int64)}
    for key in good[0][1]:
        out[key] = np.stack([s[key] for _, s in good])
    out["cloud_fraction"] = out["cloud_mask"].reshape(len(good), -1).mean(axis=1).astype(np.float32)
    if plan.spec.task != "segmentation":
        out["label"] = np.array([r["label"] for r, _ in good], dtype=np.int64)
    return out


# Read retries travel to the driver through the pipeline's ledger actor, under ids that cannot be
# sample ids; :meth:`TilePipeline.quarantined` leaves them out, :meth:`TilePipeline.read_retries` reads them.
_RETRY_ID = "\x00read-retry:"


def _report_retries(plan: _Plan, events: list[dict]) -> None:
    if not events:
        return
    log.warning("%d tile read(s) retried in this block (the store did not answer)", len(events))
    try:
        quarantine.report(plan.ledger, [{**e, "sample_id": f"{_RETRY_ID}{uuid.uuid4().hex}"} for e in events])
    except Exception as exc:  # accounting must not hide the read's own outcome
        log.warning("could not record %d read retries in the pipeline's ledger: %s", len(events), exc)


def process_block(batch: pd.DataFrame, plan: _Plan) -> dict:
    """Ray Data map function: a block of manifest rows → a batch of model-ready arrays (not yet
    augmented: :func:`augment_block` follows, after the cache when there is one)."""
    return decode_rows(batch.to_dict("records"), plan, augment=False)


_PER_SAMPLE = ("optical", "optical_clear", "sar", "cloud_mask", "label_map")


def _augments(plan: _Plan) -> bool:
    return any(vars(plan.cfg.augment).values())


def augment_block(batch: dict, plan: _Plan) -> dict:
    """Ray Data map function: random flips / rotations of every sample of a decoded batch (the
    same draw for all of a sample's arrays), drawn anew on every pass."""
    worker, rng = SampleReader.get(plan), np.random.default_rng()
    keys = [k for k in _PER_SAMPLE if k in batch]
    samples = [worker.augment({k: batch[k][i] for k in keys}, rng) for i in range(len(batch["sample_id"]))]
    for k in keys:
        batch[k] = np.stack([s[k] for s in samples]) if samples else batch[k]
    return batch


_BAD_TILE_RE = re.compile(r"bad tile (?P<uri>.+?) \[(?P<reason>[a-z_]+)\]: (?P<detail>[^\n]*)")


def unwrap_error(exc: BaseException) -> BaseException:
    """The raypipe error behind a Ray task / Ray Data failure (Ray wraps user exceptions and may drop
    the cause chain when it crosses processes; the worker's message still names the tile)."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, RaypipeError) and not type(e).__module__.startswith("ray."):
            return e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    m = _BAD_TILE_RE.search(str(exc))
    if m:
        return BadTileError(m["uri"], m["reason"], m["detail"].strip())
    return exc


def iter_unwrapped(iterator):
    """Iterate, re-raising a wrapped raypipe error as itself (chained to the original)."""
    try:
        yield from iterator
    except Exception as exc:
        err = unwrap_error(exc)
        if err is exc:
            raise
        raise err from exc


def to_torch(batch: dict, device=None) -> dict:
    """Collate: numeric arrays → tensors (on ``device``), string columns stay lists."""
    import torch

    out = {}
    for k, v in batch.items():
        if isinstance(v, np.ndarray) and v.dtype != object and v.dtype.kind != "U":
            v = np.ascontiguousarray(v)
            t = torch.from_numpy(v if v.flags.writeable else v.copy())
            out[k] = t.to(device, non_blocking=True) if device is not None else t
        else:
            out[k] = list(v)
    return out


class TilePipeline:
    """A manifest selection turned into a streaming Ray Dataset, with up-front checks and accounting."""

    def __init__(self, cfg: DataConfig, frame: pd.DataFrame | None = None, ledger: str | None = None):
        self.cfg = cfg
        if frame is None:
            if not cfg.manifest:
                raise ConfigError("data.manifest", "no manifest given (run jobs/prepare_data.py to make one)")
            frame = read_manifest(cfg.manifest)
        meta = dict(frame.attrs.get("raypipe", {}))
        self.spec = get_spec(meta.get("dataset", frame["dataset"].iloc[0] if len(frame) else ""), "manifest dataset")
        self.classes = list(meta.get("classes", self.spec.classes))
        df = frame
        if cfg.split:
            df = df[df["split"] == cfg.split]
        if cfg.domain:
            df = df[df["domain"] == cfg.domain]
        if cfg.limit:
            df = df.iloc[: cfg.limit]
        if df.empty:
            raise ConfigError("data.split", f"no sample with split={cfg.split!r} domain={cfg.domain!r} in the manifest")
        self.frame = df.reset_index(drop=True).assign(index=lambda d: np.arange(len(d), dtype=np.int64))
        # simulated clouds are drawn on the cloud-free acquisition (WHU-OPT-SAR has no other)
        optical_col = "optical_uri" if cfg.optical == "clear" or cfg.clouds.mode == "simulate" else "optical_cloudy_uri"
        needed = [optical_col] + (["optical_uri"] if cfg.optical == "both" else [])
        for col in needed:
            empty = self.frame[self.frame[col] == ""]
            if len(empty):
                what = "clear" if col == "optical_uri" else "cloudy"
                raise ConfigError("data.optical", f"'{what}' optical (needed for optical={cfg.optical!r}) is not in "
                                  f"the manifest for {len(empty)} sample(s), e.g. {empty['sample_id'].iloc[0]}")
        if self.spec.task == "classification" and (self.frame["label"] < 0).any() and cfg.split != "unlabelled":
            self.unlabelled = int((self.frame["label"] < 0).sum())
        else:
            self.unlabelled = 0
        unit = grid_unit(self.spec.aux_grid)
        if cfg.augment.crop % unit:
            raise ConfigError("data.pipeline.augment.crop", f"{cfg.augment.crop} is not on the grid {self.spec.name}'s "
                              f"optical, SAR and label rasters share: use a multiple of {unit} optical px")
        bands, idx = _resolve_bands(cfg, self.spec)
        stage = CloudStage(cfg.clouds, self.spec.optical_scale, self.spec.is_sentinel2,
                           optical_col == "optical_cloudy_uri", self.spec.masks_are_truth)
        # where the training-time cloud fraction comes from, for rows with and rows without a mask file
        masks = self.frame["cloud_mask_uri"]
        kinds = ([masks[masks != ""].iloc[0]] if (masks != "").any() else []) + ([""] if (masks == "").any() else [])
        self.cloud_sources = sorted({stage.source(uri) for uri in kinds})
        Normaliser(cfg.normalise, self.spec, bands)  # fail now on bad constants, not in a worker
        self.pre_quarantined: list[dict] = []
        if cfg.check_files:
            self._check_files(optical_col)
        self.ledger, self._ledger_handle = quarantine.create_ledger(ledger)
        self.plan = _Plan(cfg, self.spec, optical_col, idx, bands, self.ledger)
        self._cached = None  # the decoded split, materialised on first use when cache_decision says so
        self._decision: dict | None = None

    @property
    def oracle_masks(self) -> bool:
        """Whether training-time cloud fractions read the simulator's true masks (an oracle)."""
        return any("[oracle]" in s for s in self.cloud_sources)

    def sample_reader(self) -> SampleReader:
        """A new :class:`SampleReader` for this pipeline, in this process (``reader.load(row)``)."""
        return SampleReader(self.plan)

    def read_rows(self, rows: list[dict] | pd.DataFrame | None = None) -> dict:
        """Decode manifest rows into one batch, in this process, without Ray Data: the same arrays
        the pipeline's tasks produce (``iter_batches`` with ``batch_size=None`` yields such batches).

        ``rows``: rows of :attr:`frame` (a DataFrame slice or its ``to_dict("records")``; default:
        the whole frame). Bad tiles raise or are quarantined as configured. For benchmarks, tests
        and debugging; training should stream :meth:`dataset`."""
        if rows is None:
            rows = self.frame
        if isinstance(rows, pd.DataFrame):
            rows = rows.to_dict("records")
        if not rows:
            raise ConfigError("rows", "no manifest rows to read")
        return decode_rows(list(rows), self.plan)

    @property
    def num_optical_bands(self) -> int:
        return len(self.plan.band_idx)

    @property
    def num_sar_bands(self) -> int:
        return len(self.spec.sar_bands) if self.cfg.use_sar else 0

    def _check_files(self, optical_col: str) -> None:
        cols = [optical_col] + (["optical_uri"] if self.cfg.optical == "both" else []) + \
            (["sar_uri"] if self.cfg.use_sar else [])
        if self.spec.task == "segmentation":
            cols.append("label_uri")
        storage.check_reachable(self.frame[optical_col].iloc[0])
        missing = check_files_exist(self.frame, tuple(cols))
        if not missing:
            return
        if self.cfg.on_bad_tile == "error":
            sid, col, uri = missing[0]
            raise BadTileError(uri, "missing", f"{col} of sample {sid} does not exist "
                               f"({len(missing)} missing file(s) in all)")
        bad_ids = {m[0] for m in missing}
        self.pre_quarantined = [{"sample_id": s, "uri": u, "reason": "missing", "detail": f"{c} does not exist"}
                                for s, c, u in missing]
        self.frame = self.frame[~self.frame["sample_id"].isin(bad_ids)].reset_index(drop=True)

    def dataset(self):
        """The Ray Dataset of model-ready batches (one row per sample): streamed from storage, or read
        from the decoded-split cache (``cache``), then augmented when asked."""
        ds = self._cached if self._cached is not None else self._decode()
        if self._cached is None and self.cache_decision()["cache"]:
            try:
                # one pass, in manifest order (deterministic runs read the cache as they would stream)
                ctx = ray_data_context()
                keep, ctx.execution_options.preserve_order = ctx.execution_options.preserve_order, True
                try:
                    self._cached = ds.materialize()
                finally:
                    ctx.execution_options.preserve_order = keep
            except Exception as exc:  # a bad tile / storage error, as it would surface while streaming
                raise unwrap_error(exc) from exc
            log.info("cached the decoded split (%s)", self.cache_decision()["why"])
            ds = self._cached
        if _augments(self.plan):
            ds = ds.map_batches(augment_block, fn_kwargs={"plan": self.plan}, batch_format="numpy",
                                batch_size=None)
        return ds

    def _decode(self):
        import ray

        k = self.cfg.rows_per_block
        blocks = [self.frame.iloc[i:i + k] for i in range(0, len(self.frame), k)]
        ds = ray.data.from_pandas(blocks)
        return ds.map_batches(process_block, fn_kwargs={"plan": self.plan}, batch_format="pandas",
                              batch_size=self.cfg.rows_per_block, zero_copy_batch=True)

    def decoded_bytes(self) -> int:
        """Size of the decoded split in memory (every array of every sample)."""
        h, w = self.frame["height"].astype(int), self.frame["width"].astype(int)
        aux = self.spec.aux_grid ** 2
        per_pixel = 4 * self.num_optical_bands * (2 if self.cfg.optical == "both" else 1) + 1 \
            + 4 * self.num_sar_bands * aux + (8 * aux if self.spec.task == "segmentation" else 0)
        return int((h * w * per_pixel).sum())

    def cache_decision(self) -> dict:
        """``{"cache": bool, "why": str}``: whether :meth:`dataset` reads the decoded-split cache."""
        if self._decision is None:
            import ray

            need = self.decoded_bytes()
            if self.cfg.cache == "off":
                self._decision = {"cache": False, "why": "data.pipeline.cache is off"}
            else:
                store = float(ray.cluster_resources().get("object_store_memory", 0))
                budget = self.cfg.cache_fraction * store
                fits = need <= budget
                self._decision = {"cache": fits, "why": f"{need / 2**20:.1f} MiB decoded "
                                  f"{'<=' if fits else '>'} {self.cfg.cache_fraction:g} of the object store "
                                  f"({store / 2**30:.1f} GiB)"}
        return self._decision

    def iter_batches(self, batch_size: int | None = 32, prefetch_batches: int = 2, drop_last: bool = False):
        """Numpy batches; a bad tile surfaces as the typed :class:`BadTileError` naming the file."""
        yield from iter_unwrapped(self.dataset().iter_batches(batch_size=batch_size, batch_format="numpy",
                                                              prefetch_batches=prefetch_batches, drop_last=drop_last))

    def iter_torch_batches(self, batch_size: int = 32, device=None, prefetch_batches: int = 2, drop_last=False):
        for batch in self.iter_batches(batch_size, prefetch_batches, drop_last):
            yield to_torch(batch, device)

    @property
    def samples_in(self) -> int:
        return len(self.frame) + len({q["sample_id"] for q in self.pre_quarantined})

    def quarantined(self) -> list[dict]:
        items = {q["sample_id"]: q for q in self.pre_quarantined}
        for q in quarantine.collect(self.ledger):
            if not q["sample_id"].startswith(_RETRY_ID):
                items.setdefault(q["sample_id"], q)
        return sorted(items.values(), key=lambda q: q["sample_id"])

    def read_retries(self) -> list[dict]:
        """Every retried tile read of this pipeline so far, in every process (``{"uri", "action",
        "attempt", "error", "wait_s"}``, one per retry wait): reads the store did not answer at once."""
        items = [{k: v for k, v in q.items() if k != "sample_id"} for q in quarantine.collect(self.ledger)
                 if q["sample_id"].startswith(_RETRY_ID)]
        return sorted(items, key=lambda e: (e["uri"], e["attempt"]))

    def report(self, used: int) -> dict:
        """``samples in = used + quarantined`` for one pass over the data; flags any sample unaccounted for.
        ``read_retries`` counts the reads retried because the store did not answer (not bad tiles)."""
        q = self.quarantined()
        retries = self.read_retries()
        rep = {"samples_in": self.samples_in, "samples_used": int(used), "samples_quarantined": len(q),
               "quarantined": q, "read_retries": len(retries),
               "reads_retried": sum(e["attempt"] == 1 for e in retries)}
        rep["accounted"] = rep["samples_in"] == rep["samples_used"] + rep["samples_quarantined"]
        msg = (f"samples in = {rep['samples_in']}, used = {used}, quarantined = {len(q)}"
               + (f", read retries = {len(retries)}" if retries else "")
               + ("" if rep["accounted"] else "  (MISMATCH: some samples are unaccounted for)"))
        (log.info if rep["accounted"] else log.warning)(msg)
        rep["message"] = msg
        return rep


def ray_data_context():
    import ray.data

    return ray.data.DataContext.get_current()


def compute_cloud_fractions(df: pd.DataFrame, cloud_config: dict, on_bad_tile: str = "error"):
    """sample_id → cloud fraction through the same cloud stage the training pipeline uses."""
    from raypipe.config import from_dict

    optical = "cloudy" if (df["optical_cloudy_uri"] != "").all() else "clear"
    cfg = from_dict(DataConfig, {"optical": optical, "use_sar": False, "on_bad_tile": on_bad_tile, "cache": "off",
                                 "normalise": {"mode": "none"}, "clouds": cloud_config})
    pipe = TilePipeline(cfg, frame=df)
    fractions = {}
    for batch in pipe.dataset().select_columns(["sample_id", "cloud_fraction"]).iter_batches(batch_format="numpy"):
        fractions.update(zip(batch["sample_id"], batch["cloud_fraction"].astype(float)))
    return fractions, pipe.quarantined()
