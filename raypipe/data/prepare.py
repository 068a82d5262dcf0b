"""Build a dataset manifest from an official layout (what ``jobs/prepare_data.py`` runs).

``prepare(dataset, root, out)`` asks the dataset (:mod:`raypipe.data.datasets`) to scan ``root``
(local path, file:// or s3://): it pairs the modality files of each sample, assigns the official
split and derives labels. ``prepare`` then checks the headers of a few tiles against the dataset
spec up front, optionally adds cloud fractions, and writes a Parquet manifest to ``out``.

Incomplete samples (a modality file missing) are an error naming the file that should exist; with
``on_bad_tile="skip"`` they are quarantined: counted, listed in the report, and left out.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from raypipe import raster, storage
from raypipe.data.datasets import DatasetSpec, PrepareOptions, Quarantine, get_spec
from raypipe.data.manifest import make_frame, write_manifest
from raypipe.errors import BadTileError, ConfigError

log = logging.getLogger(__name__)


@dataclass
class PrepareReport:
    dataset: str
    manifest_uri: str
    samples_found: int = 0
    samples_written: int = 0
    quarantined: list[dict] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)
    manifest_hash: str = ""

    def summary(self) -> str:
        return (f"{self.dataset}: {self.samples_found} samples found = {self.samples_written} written + "
                f"{len(self.quarantined)} quarantined; splits {self.splits}; manifest {self.manifest_uri} "
                f"(hash {self.manifest_hash})")


def _fill_sizes(rows: list[dict], spec: DatasetSpec) -> None:
    """Tile size per row from one header per modality folder (not per tile), then checked at read time."""
    cache: dict[str, tuple[int, int]] = {}
    for r in rows:
        if r.get("height"):
            continue
        uri = r["optical_cloudy_uri"] or r["optical_uri"]
        folder = uri.rsplit("/", 1)[0]
        if folder not in cache:
            prof = raster.read_profile(uri)
            if prof.bands != len(spec.optical_bands):
                raise BadTileError(uri, "band_count", f"has {prof.bands} bands, a {spec.name} optical tile has "
                                   f"{len(spec.optical_bands)}")
            cache[folder] = (prof.height, prof.width)
        r["height"], r["width"] = cache[folder]


VAL_FRACTION = 0.15  # of each domain's training scenes, held out as the validation split


def carve_val(df, fraction: float = VAL_FRACTION):
    """Hold out whole training scenes as ``split = "val"``, per (dataset, domain), so that per-epoch
    metrics, early stopping and model selection never touch the test split (DESIGN §11).

    A scene is ``(region, scene)``. Scenes are ranked by a hash of their name (stable across runs and
    machines, independent of row order), and the first ``ceil(fraction · n)`` become val, at least one
    when there are two or more training scenes; the official test split is kept as it is."""
    import hashlib
    import math

    if not 0.0 <= fraction < 1.0:
        raise ConfigError("--val-fraction", f"must be within [0, 1), got {fraction}")
    df = df.copy()
    if fraction == 0 or df.empty:
        return df
    train = df["split"] == "train"
    keys = df["region"].astype(str) + "/" + df["scene"].astype(str)
    for _, group in df[train].groupby([df["dataset"], df["domain"]]):
        scenes = sorted(set(keys[group.index]), key=lambda k: hashlib.sha1(k.encode()).hexdigest())
        if len(scenes) < 2:
            continue
        n_val = min(len(scenes) - 1, max(1, math.ceil(fraction * len(scenes))))
        val = set(scenes[:n_val])
        df.loc[group.index[keys[group.index].isin(val)], "split"] = "val"
    return df


def prepare(dataset: str, root: str, out: str, *, labels: str | None = None, labels_root: str | None = None,
            on_bad_tile: str = "error", with_cloud_stats: bool = False, cloud_config: dict | None = None,
            tile_size: int = 256, classes: list[str] | None = None, split_list: str | None = None,
            val_fraction: float = VAL_FRACTION) -> PrepareReport:
    """Scan ``root`` and write the manifest to ``out``. ``classes`` fixes the class list (and its order)
    when a label table gives class names; ``split_list`` (WHU-OPT-SAR) names the test scenes;
    ``val_fraction`` of each domain's training scenes become the validation split (:func:`carve_val`)."""
    spec = get_spec(dataset)
    storage.check_reachable(root)
    quarantine = Quarantine(on_bad_tile)
    options = PrepareOptions(labels=labels, labels_root=labels_root, classes=classes, tile_size=tile_size,
                             split_list=split_list)
    rows, classes = spec.manifest_rows(root, quarantine, options)
    found = len(rows) + len({q["sample_id"] for q in quarantine.items})
    _fill_sizes(rows, spec)
    meta = {"dataset": dataset, "task": spec.task, "classes": list(classes), "root": storage.redact(root),
            "val_fraction": val_fraction}
    df = carve_val(make_frame(rows, meta), val_fraction)
    df.attrs["raypipe"] = meta
    if with_cloud_stats:
        from raypipe.data.pipeline import compute_cloud_fractions

        fractions, bad = compute_cloud_fractions(df, cloud_config or {}, on_bad_tile)
        for item in bad:
            quarantine.bad(item["sample_id"], item["uri"], item["reason"], item["detail"])
        bad_ids = {b["sample_id"] for b in bad}
        df = df[~df["sample_id"].isin(bad_ids)].reset_index(drop=True)
        df.attrs["raypipe"] = meta
        df["cloud_fraction"] = df["sample_id"].map(fractions).astype("float32")
    report = PrepareReport(dataset=dataset, manifest_uri=storage.redact(out), samples_found=found,
                           samples_written=len(df), quarantined=quarantine.items,
                           splits={k: int(v) for k, v in df["split"].value_counts().sort_index().items()})
    report.manifest_hash = write_manifest(df, out)
    if quarantine.items:
        storage.write_bytes(out + ".quarantine.json", json.dumps(quarantine.items, indent=1).encode())
    log.info(report.summary())
    return report
