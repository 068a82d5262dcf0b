"""Build a dataset manifest from an official layout (what ``jobs/prepare_data.py`` runs).

``prepare(dataset, root, out)`` scans ``root`` (local path, file:// or s3://), pairs the modality
files of each sample, assigns the official split, derives labels, checks the headers of a few
tiles against the dataset spec up front, and writes a Parquet manifest to ``out``.

Incomplete samples (a modality file missing) are an error naming the file that should exist; with
``on_bad_tile="skip"`` they are quarantined: counted, listed in the report, and left out.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from raypipe import storage
from raypipe import raster
from raypipe.data import m3mcr, sen12ms, whu_opt_sar
from raypipe.data.datasets import DatasetSpec, get_spec
from raypipe.data.labels import read_label_table, resolve_label, simplified_igbp_majority
from raypipe.data.manifest import make_frame, write_manifest
from raypipe.errors import BadTileError, ConfigError, DatasetNotFoundError

log = logging.getLogger(__name__)
READ_THREADS = 16


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


class _Quarantine:
    def __init__(self, on_bad_tile: str):
        if on_bad_tile not in ("error", "skip"):
            raise ConfigError("on_bad_tile", f"must be 'error' or 'skip', got {on_bad_tile!r}")
        self.skip = on_bad_tile == "skip"
        self.items: list[dict] = []

    def bad(self, sample: str, uri: str, reason: str, detail: str) -> None:
        if not self.skip:
            raise BadTileError(uri, reason, f"{detail} (sample {sample})")
        self.items.append({"sample_id": sample, "uri": uri, "reason": reason, "detail": detail})


def _read_labels_parallel(uris: list[str], quarantine: _Quarantine, ids: list[str]) -> list[int]:
    def one(uri):
        try:
            return simplified_igbp_majority(raster.read(uri, raster.Expect(bands=4)))
        except BadTileError as exc:
            return exc

    with ThreadPoolExecutor(READ_THREADS) as pool:
        results = list(pool.map(one, uris))
    out = []
    for sid, res in zip(ids, results):
        if isinstance(res, BadTileError):
            quarantine.bad(sid, res.uri, res.reason, res.detail)
            out.append(None)
        else:
            out.append(res)
    return out


def _label_from_table(table, sid: str, uris: list[str], classes: list[str]) -> int | None:
    for key in (sid, *[u.rsplit("/", 1)[-1] for u in uris if u]):
        if key in table:
            return resolve_label(table[key], classes, f"--labels[{key}]")
    return None


def _sen12ms_rows(spec: DatasetSpec, root: str, quarantine: _Quarantine, cr: bool, labels: str | None,
                  labels_root: str | None, domain: str = "", test_scenes=None,
                  class_list: list[str] | None = None) -> tuple[list[dict], list[str]]:
    groups = sen12ms.scan_sen12ms_cr(root) if cr else sen12ms.scan_sen12ms(root)
    if not groups:
        layout = "ROIsXXXX_season_s1/s1_N/…_pK.tif" if cr else "ROIsXXXX_season/s1_N/…_pK.tif"
        raise DatasetNotFoundError(storage.redact(root), f"no {spec.name} tiles found (expected layout {layout})")
    required = ("s1", "s2_cloudy") if cr else ("s1", "s2")
    classes = list(spec.classes)
    table = None
    if labels:
        table, table_classes = read_label_table(labels, class_list)
        classes = list(table_classes or classes)
    rows, lc_uris, lc_rows = [], [], []
    for (roi, scene, patch), mods in sorted(groups.items()):
        sid = sen12ms.sample_id(roi, scene, patch)
        present = [m for m in required if m in mods]
        if len(present) < len(required):
            have = next(iter(mods.values()))
            for m in required:
                if m not in mods:
                    quarantine.bad(sid, _sibling(have, m, cr), "missing", f"{m} file of this sample is missing")
            continue
        row = dict(
            sample_id=sid, dataset=spec.name, domain=domain, region=roi, season=sen12ms.season_of(roi),
            scene=str(scene), patch=str(patch), sar_uri=mods["s1"],
            optical_uri=mods.get("s2", ""), optical_cloudy_uri=mods.get("s2_cloudy", ""),
            cloud_mask_uri=mods.get("cloudmask", ""),
            split="test" if sen12ms.is_holdout(roi, scene, test_scenes) else "train",
            optical_bands=len(spec.optical_bands), sar_bands=len(spec.sar_bands),
        )
        lc = mods.get("lc") or (sen12ms.sen12ms_lc_uri(labels_root, roi, scene, patch) if labels_root else "")
        row["label_uri"] = lc
        if table is not None:
            label = _label_from_table(table, sid, list(mods.values()), classes)
            row["label"] = -1 if label is None else label
        elif lc:
            lc_uris.append(lc)
            lc_rows.append(len(rows))
        rows.append(row)
    if lc_uris:
        labels_found = _read_labels_parallel(lc_uris, quarantine, [rows[i]["sample_id"] for i in lc_rows])
        drop = set()
        for i, label in zip(lc_rows, labels_found):
            if label is None:
                drop.add(i)
            else:
                rows[i]["label"] = label
        rows = [r for i, r in enumerate(rows) if i not in drop]
    for r in rows:
        lab = r.get("label", -1)
        r["label_name"] = classes[lab] if lab is not None and lab >= 0 else ""
    return rows, classes


def _sibling(uri: str, modality: str, cr: bool) -> str:
    """The path a missing modality file of the same sample should have (for the error message)."""
    m = (sen12ms._SEN12MSCR_RE if cr else sen12ms._SEN12MS_RE).search(uri)
    if not m:
        return uri
    roi, scene, patch = m["roi"], m["scene"], m["patch"]
    base = uri[: m.start()]
    if cr:
        return f"{base}{roi}_{modality}/{modality}_{scene}/{roi}_{modality}_{scene}_p{patch}.tif"
    return f"{base}{roi}/{modality}_{scene}/{roi}_{modality}_{scene}_p{patch}.tif"


def _synthetic_rows(spec, root, quarantine, labels, labels_root, class_list=None):
    meta_uri = storage.join(root, "synthetic.json")
    try:
        meta = json.loads(storage.read_bytes(meta_uri))
    except FileNotFoundError:
        raise DatasetNotFoundError(storage.redact(root), "no synthetic.json: not a generated benchmark "
                                   "(make one with jobs/make_synthetic.py)") from None
    tests = meta.get("test_scenes", {})
    src_tests = {"ROIs1158_spring": frozenset(tests.get("source", []))}
    tgt_tests = {"ROIs1970_fall": frozenset(tests.get("target", []))}
    src, classes = _sen12ms_rows(spec, storage.join(root, "source"), quarantine, False, labels, labels_root,
                                 "source", src_tests, class_list)
    tgt, _ = _sen12ms_rows(spec, storage.join(root, "target"), quarantine, True, labels, labels_root,
                           "target", tgt_tests, class_list)
    classes = meta.get("classes", classes)
    return src + tgt, classes


def _m3mcr_rows(spec, root, quarantine, labels, labels_root, class_list=None):
    groups = m3mcr.scan(root)
    if not groups:
        raise DatasetNotFoundError(storage.redact(root), "no M3M-CR files found (expected "
                                   "{train,test}/<modality>_<season>/<modality>_<season>_<aoi>/…_p_<n>.tif)")
    rows = []
    for (split, season, aoi, patch), mods in sorted(groups.items()):
        sid = f"{season}_{aoi}_p_{patch}"
        missing = [m for m in ("planet_cloudy", "S1", "landcover") if m not in mods]
        if missing:
            for m in missing:
                quarantine.bad(sid, f"{root}/{split}/{m}_{season}/{m}_{season}_{aoi}/{m}_{season}_{aoi}_p_{patch}.tif",
                               "missing", f"{m} file of this sample is missing")
            continue
        rows.append(dict(sample_id=sid, dataset=spec.name, split=split, region=str(aoi), season=season,
                         scene=str(aoi), patch=str(patch), optical_uri=mods.get("planet_cloudfree", ""),
                         optical_cloudy_uri=mods["planet_cloudy"], sar_uri=mods["S1"], label_uri=mods["landcover"],
                         cloud_mask_uri=mods.get("cloudmask", ""), optical_bands=4, sar_bands=2))
    return rows, list(spec.classes)


def _whu_rows(spec, root, quarantine, labels, labels_root, class_list=None, tile_size: int = 256,
             split_list: str | None = None):
    groups = whu_opt_sar.scan(root)
    if not groups:
        raise DatasetNotFoundError(storage.redact(root), "no WHU-OPT-SAR scenes found (expected optical/, sar/, lbl/)")
    if split_list:
        test = set(storage.read_bytes(split_list).decode().split())
    else:
        test = whu_opt_sar.default_test_scenes(list(groups))
    rows = []
    for name, mods in sorted(groups.items()):
        missing = [m for m in ("optical", "sar", "lbl") if m not in mods]
        if missing:
            for m in missing:
                quarantine.bad(name, f"{root}/{m}/{name}.tif", "missing", f"{m} scene file is missing")
            continue
        prof = raster.read_profile(mods["optical"])
        for r, c in whu_opt_sar.windows(prof.height, prof.width, tile_size):
            rows.append(dict(sample_id=f"{name}_r{r}_c{c}", dataset=spec.name, split="test" if name in test else "train",
                             region=name, scene=name, patch=f"r{r}_c{c}", optical_uri=mods["optical"],
                             sar_uri=mods["sar"], label_uri=mods["lbl"], row=r, col=c,
                             height=tile_size, width=tile_size, optical_bands=prof.bands, sar_bands=1))
    return rows, list(spec.classes)


_BUILDERS = {"sen12ms": lambda s, r, q, l, lr, c: _sen12ms_rows(s, r, q, False, l, lr, class_list=c),
             "sen12ms-cr": lambda s, r, q, l, lr, c: _sen12ms_rows(s, r, q, True, l, lr, class_list=c),
             "synthetic": _synthetic_rows, "m3m-cr": _m3mcr_rows, "whu-opt-sar": _whu_rows}


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


def prepare(dataset: str, root: str, out: str, *, labels: str | None = None, labels_root: str | None = None,
            on_bad_tile: str = "error", with_cloud_stats: bool = False, cloud_config: dict | None = None,
            tile_size: int = 256, classes: list[str] | None = None, split_list: str | None = None) -> PrepareReport:
    """Scan ``root`` and write the manifest to ``out``. ``classes`` fixes the class list (and its order)
    when a label table gives class names; ``split_list`` (WHU-OPT-SAR) names the test scenes."""
    spec = get_spec(dataset)
    storage.check_reachable(root)
    quarantine = _Quarantine(on_bad_tile)
    if dataset == "whu-opt-sar":
        rows, classes = _whu_rows(spec, root, quarantine, labels, labels_root, classes, tile_size, split_list)
    else:
        rows, classes = _BUILDERS[dataset](spec, root, quarantine, labels, labels_root, classes)
    found = len(rows) + len({q["sample_id"] for q in quarantine.items})
    _fill_sizes(rows, spec)
    meta = {"dataset": dataset, "task": spec.task, "classes": list(classes), "root": storage.redact(root)}
    df = make_frame(rows, meta)
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
