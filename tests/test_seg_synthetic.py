"""The generated segmentation benchmark (raypipe.synthetic.segmentation) in the M3M-CR and WHU-OPT-SAR layouts.

Checks the files (exact official paths, bands, dtypes, CRS, transforms), that the real readers
(``prepare`` + ``TilePipeline.read_rows``) read them with train / val / test splits that each hold
every class, the label codes (inside each dataset's code set, CloudSeg's ignore codes present),
determinism (same seed -> same bytes, whatever the worker count; another seed -> other bytes),
clouds on the optical only, thin WHU roads, s3:// output, argument checks, and what the benchmark
exists for: a per-pixel nearest-class-mean classifier does far better than chance on clear optical,
above chance but worse on SAR, and collapses on cloudy optical under clouds.

Expected values are computed here, from the files and from DESIGN §2 / §6 (the WorldCover ->
CloudSeg mapping, the official layouts, 10 optical px = 3 label px), not by the code under test.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from scipy import ndimage

from raypipe import raster, storage
from raypipe.config import from_dict
from raypipe.data.manifest import read_manifest
from raypipe.data.pipeline import DataConfig, TilePipeline
from raypipe.data.prepare import prepare
from raypipe.errors import ConfigError
from raypipe.synthetic import segmentation as seg
from raypipe.synthetic.segmentation import default_demo, generate_segmentation

# DESIGN §2 / §6: CloudSeg's level-1 mapping of ESA WorldCover; 0 (no data), 70, 95, 100 -> ignore.
DESIGN_WORLDCOVER = {10: 0, 20: 1, 30: 1, 40: 2, 50: 3, 60: 4, 80: 5, 90: 5}
WORLDCOVER_CODES = {0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100}
IGNORE_CODES = {0, 70, 95, 100}
WHU_CODES = {0, 10, 20, 30, 40, 50, 60, 70}
M3M_MODALITIES = {"planet_cloudfree": ("tif", 4, "uint16", "opt"), "planet_cloudy": ("tif", 4, "uint16", "opt"),
                  "S1": ("tif", 2, "float64", "aux"), "landcover": ("tif", 1, "uint8", "aux"),
                  "cloudmask": ("npy", None, "bool", "opt")}
SEASON_CYCLE = ("spring", "summer", "fall", "winter")
SMALL = dict(layout="m3m-cr", tiles=8, size=40, scene_size=4)  # 2 AOIs
SMALL_WHU = dict(layout="whu-opt-sar", scenes=5, scene_height=100, scene_width=120, tile_size=50)
MAX_DEMO_SECONDS = 20.0  # the default demo set on 2 cores (checked as CPU seconds in one process: see demo_m3m)


def m3m_path(root, rec: dict, mod: str) -> str:
    """The official M3M-CR path of a sample's modality, written out from the layout (DESIGN §2)."""
    ext = M3M_MODALITIES[mod][0]
    s, a, p, sp = rec["season"], rec["aoi"], rec["patch"], rec["split"]
    return storage.join(str(root), f"{sp}/{mod}_{s}/{mod}_{s}_{a}/{mod}_{s}_{a}_p_{p}.{ext}")


def read(uri: str):
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotGeoreferencedWarning)
        with rasterio.open(uri) as src:
            return src.read(), src.profile


def to_label_grid(x: np.ndarray) -> np.ndarray:
    """Exact area mean of (C, n, n) optical-grid values onto the (C, 3n/10, 3n/10) label grid: each optical
    pixel split into 3 x 3 one-metre cells, then 10 x 10 cell blocks (one 10 m label pixel) averaged."""
    c, n, _ = x.shape
    a = n * 3 // 10
    up = np.repeat(np.repeat(x, 3, axis=1), 3, axis=2)
    return up.reshape(c, a, 10, a, 10).mean(axis=(2, 4))


def cloudseg(codes: np.ndarray) -> np.ndarray:
    out = np.full(codes.shape, 255, dtype=np.int64)
    for code, cls in DESIGN_WORLDCOVER.items():
        out[codes == code] = cls
    return out


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != seg.METADATA_FILE}


def metadata(root: Path) -> dict:
    meta = json.loads((root / seg.METADATA_FILE).read_text())
    meta.pop("generation_seconds")
    return meta


# --------------------------------------------------------------------------------------
# Fixtures: the default demo sets, generated once
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_m3m(tmp_path_factory):
    root = tmp_path_factory.mktemp("m3m")
    # In this process (workers=1, the same files as any worker count), timed in CPU seconds: one core's work
    # bounds the 2-core wall time, and other jobs on the machine cannot make it flaky.
    started = time.process_time()
    meta = generate_segmentation(str(root), **default_demo("m3m-cr"), workers=1)
    elapsed = time.process_time() - started
    manifest = str(root.parent / "m3m.parquet")
    report = prepare("m3m-cr", str(root), manifest)
    return root, meta, manifest, report, elapsed


@pytest.fixture(scope="module")
def m3m_arrays(demo_m3m):
    """Every demo tile's arrays, by the split prepare gave it: label-grid optical (clear, cloudy), the cloud
    mask (optical grid and its label-grid mean), S1, CloudSeg labels, and the raw arrays of a few tiles."""
    root, meta, manifest, _, _ = demo_m3m
    split = dict(zip(*read_manifest(manifest)[["sample_id", "split"]].T.values))
    out = {s: [] for s in ("train", "val", "test")}
    for rec in meta["samples"]:
        clear = read(m3m_path(root, rec, "planet_cloudfree"))[0]
        cloudy = read(m3m_path(root, rec, "planet_cloudy"))[0]
        mask = np.load(m3m_path(root, rec, "cloudmask"))
        sar = read(m3m_path(root, rec, "S1"))[0]
        codes = read(m3m_path(root, rec, "landcover"))[0][0]
        out[split[rec["id"]]].append(dict(
            rec=rec, clear=clear, cloudy=cloudy, mask=mask, sar=sar, codes=codes, label=cloudseg(codes),
            clear_lab=to_label_grid(clear.astype(np.float64) / 10000),
            cloudy_lab=to_label_grid(cloudy.astype(np.float64) / 10000),
            mask_lab=to_label_grid(mask[None].astype(np.float64))[0]))
    return out


@pytest.fixture(scope="module")
def demo_whu(tmp_path_factory):
    root = tmp_path_factory.mktemp("whu")
    meta = generate_segmentation(str(root), **default_demo("whu-opt-sar"))
    manifest = str(root.parent / "whu.parquet")
    report = prepare("whu-opt-sar", str(root), manifest, tile_size=default_demo("whu-opt-sar")["tile_size"])
    return root, meta, manifest, report


# --------------------------------------------------------------------------------------
# M3M-CR layout
# --------------------------------------------------------------------------------------


def test_default_demo_values():
    assert default_demo("m3m-cr") == dict(layout="m3m-cr", tiles=240, size=100, scene_size=12, preset="thick", seed=0)
    assert default_demo("whu-opt-sar") == dict(layout="whu-opt-sar", scenes=10, scene_height=300, scene_width=400,
                                               tile_size=100, seed=0)
    with pytest.raises(ConfigError):
        default_demo("sen12ms")


def test_m3m_demo_is_fast_and_documented(demo_m3m):
    root, meta, _, _, elapsed = demo_m3m
    assert elapsed < MAX_DEMO_SECONDS
    assert meta == json.loads((root / "segmentation.json").read_text())
    assert "never the paper's numbers" in meta["note"]
    assert meta["layout"] == "m3m-cr" and meta["version"] >= 1
    assert meta["parameters"] == {k: v for k, v in default_demo("m3m-cr").items() if k != "layout"}
    assert meta["classes"] == ["Forest", "Rangeland", "Agriculture", "Urban", "Barren", "Water"]
    assert seg.__doc__ and "never the paper's numbers" in seg.__doc__.replace("\n", " ")


def test_m3m_files_are_the_official_layout(demo_m3m):
    root, meta, _, _, _ = demo_m3m
    recs = meta["samples"]
    assert len(recs) == 240
    expected = {m3m_path(root, r, m) for r in recs for m in M3M_MODALITIES}
    on_disk = {str(p) for p in root.rglob("*") if p.is_file() and p.name != "segmentation.json"}
    assert on_disk == expected  # five files per sample, nothing else
    for i, r in enumerate(recs):  # numbering: tile i is patch i % 12 + 1 of AOI i // 12 + 1
        assert (r["aoi"], r["patch"]) == (i // 12 + 1, i % 12 + 1)
        assert r["season"] == SEASON_CYCLE[(r["aoi"] - 1) % 4]
        assert r["id"] == f"{r['season']}_{r['aoi']}_p_{r['patch']}"
    for r in recs[::37]:
        geo = {}
        for mod, (ext, bands, dtype, grid) in M3M_MODALITIES.items():
            if ext == "npy":
                arr = np.load(m3m_path(root, r, mod))
                assert arr.dtype == np.bool_ and arr.shape == (100, 100)
                continue
            arr, prof = read(m3m_path(root, r, mod))
            side, res = (100, 3.0) if grid == "opt" else (30, 10.0)
            assert arr.shape == (bands, side, side) and arr.dtype == np.dtype(dtype), mod
            assert re.fullmatch(r"EPSG:32[67]\d\d", prof["crs"].to_string()), prof["crs"]
            t = prof["transform"]
            assert (t.a, t.e, t.b, t.d) == (res, -res, 0.0, 0.0)
            geo[grid] = (prof["crs"], t.c, t.f)
            if mod.startswith("planet"):
                assert prof["nodata"] == 0 and arr.min() >= 1 and arr.max() <= 10000
        assert geo["opt"] == geo["aux"]  # the 3 m and 10 m grids share the tile's corner
    # patches of one AOI are adjacent tiles of one UTM zone
    first = [r for r in recs if r["aoi"] == 1][:2]
    (_, p0), (_, p1) = (read(m3m_path(root, r, "landcover")) for r in first)
    assert p0["crs"] == p1["crs"] and p1["transform"].c - p0["transform"].c == pytest.approx(300.0)


def test_m3m_prepare_splits_classes_and_codes(demo_m3m, m3m_arrays):
    root, meta, manifest, report, _ = demo_m3m
    df = read_manifest(manifest)
    assert report.samples_written == 240 and not report.quarantined
    assert set(report.splits) == {"train", "val", "test"} and min(report.splits.values()) > 0
    assert (df["domain"] == "").all()  # neither reader writes a domain: one group for carve_val
    aois = {s: set(df.loc[df["split"] == s, "scene"]) for s in ("train", "val", "test")}
    assert not (aois["train"] & aois["val"]) and not (aois["train"] & aois["test"]) and not (aois["val"] & aois["test"])
    assert len(aois["test"]) == 4  # about 20 % of the 20 AOIs
    assert report.splits == {s: meta["tiles_per_split"][s] for s in ("train", "val", "test")}
    assert (df["height"] == 100).all() and (df["optical_bands"] == 4).all() and (df["sar_bands"] == 2).all()
    all_codes = set()
    for split, tiles in m3m_arrays.items():
        codes = np.concatenate([t["codes"].ravel() for t in tiles])
        assert set(np.unique(codes)) <= WORLDCOVER_CODES
        all_codes |= set(np.unique(codes).tolist())
        labels = cloudseg(codes)
        assert set(range(6)) <= set(np.unique(labels)), f"a class is missing from {split}"
        counts = np.bincount(codes, minlength=256)
        assert {str(c): int(n) for c, n in enumerate(counts) if n} == meta["pixel_counts"][split]["codes"]
    assert IGNORE_CODES <= all_codes
    ignored = sum(meta["pixel_counts"][s]["classes"]["ignore"] for s in ("train", "val", "test"))
    assert 0.005 < ignored / (240 * 30 * 30) < 0.04


def test_m3m_pipeline_reads_the_pair(demo_m3m, m3m_arrays, ray_session):
    _, _, manifest, _, _ = demo_m3m
    pipe = TilePipeline(from_dict(DataConfig, {"manifest": manifest, "split": "test", "optical": "both"}, "data"))
    rows = pipe.frame.iloc[:6]
    batch = pipe.read_rows(rows)
    assert batch["optical"].shape == (6, 4, 100, 100) and batch["optical_clear"].shape == (6, 4, 100, 100)
    assert batch["sar"].shape == (6, 2, 30, 30) and batch["label_map"].shape == (6, 30, 30)
    assert set(np.unique(batch["label_map"])) <= set(range(6)) | {255}
    tiles = {t["rec"]["id"]: t for t in m3m_arrays["test"]}
    for i, sid in enumerate(batch["sample_id"]):
        t = tiles[sid]
        np.testing.assert_allclose(batch["optical_clear"][i], t["clear"] / 10000.0, rtol=1e-6)
        np.testing.assert_allclose(batch["optical"][i], t["cloudy"] / 10000.0, rtol=1e-6)
        np.testing.assert_array_equal(batch["label_map"][i], t["label"])
        np.testing.assert_array_equal(batch["cloud_mask"][i], t["mask"])
        assert batch["cloud_fraction"][i] == pytest.approx(t["rec"]["cloud_fraction"], abs=1e-6)


# --------------------------------------------------------------------------------------
# Clouds
# --------------------------------------------------------------------------------------


def test_clouds_are_on_the_cloudy_optical_only(m3m_arrays):
    tiles = [t for s in m3m_arrays.values() for t in s]
    # the simulator leaves opacity <= 5 % (its mask threshold) x band factor <= 1.03 outside the mask, over
    # a cloud no brighter than reflectance 1: at most ~515 DN
    tol = 0.05 * 1.03 * 10000 + 1
    fractions = []
    for t in tiles:
        clear, cloudy, mask = t["clear"].astype(np.int64), t["cloudy"].astype(np.int64), t["mask"]
        diff = cloudy - clear
        assert t["mask"].mean() == pytest.approx(t["rec"]["cloud_fraction"], abs=1e-6)
        fractions.append(mask.mean())
        if (~mask).any():
            assert np.abs(diff[:, ~mask]).max() <= tol
        if mask.any():
            inside = diff[:, mask]
            assert (np.abs(inside).max(axis=0) > 0).mean() > 0.99  # every cloudy pixel changed
            assert inside.mean() > 0  # clouds brighten the ground
        assert cloudy.max() <= 10000
    fractions = np.array(fractions)
    # plausible thick-cloud reflectance: the cores of fully cloudy tiles, not white (10000)
    full = [t for t, f in zip(tiles, fractions) if f > 0.9]
    core = np.concatenate([t["cloudy"][:, t["mask"]].ravel() for t in full])
    assert 3000 < np.median(core) < 7500 and np.percentile(core, 99) < 8500
    # coverage spread over the evaluation buckets (about a third each)
    for share in ((fractions < 0.1).mean(), ((fractions >= 0.1) & (fractions <= 0.9)).mean(), (fractions > 0.9).mean()):
        assert 0.2 < share < 0.47


def test_cloud_preset_changes_nothing_but_the_cloudy_optical(tmp_path):
    a, b = tmp_path / "thick", tmp_path / "thin"
    generate_segmentation(str(a), **SMALL, seed=3, preset="thick", workers=1)
    generate_segmentation(str(b), **SMALL, seed=3, preset="thin", workers=1)
    da, db = tree_digest(a), tree_digest(b)
    assert sorted(da) == sorted(db)
    for path in da:
        if "/planet_cloudy_" in path or "/cloudmask_" in path:
            continue
        assert da[path] == db[path], path  # SAR, labels and the cloud-free optical do not see the clouds
    cloudy = [p for p in da if "/planet_cloudy_" in p]
    assert sum(da[p] != db[p] for p in cloudy) >= len(cloudy) // 2


# --------------------------------------------------------------------------------------
# Learnability: per-pixel nearest class mean at the label grid
# --------------------------------------------------------------------------------------


def _nearest_mean(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    """Fit class means on z-scored (features, n) train pixels (labels 0..5); predict test pixels."""
    mu, sd = train_x.mean(axis=1, keepdims=True), train_x.std(axis=1, keepdims=True)
    z = (train_x - mu) / sd
    means = np.stack([z[:, train_y == k].mean(axis=1) for k in range(6)])
    zt = (test_x - mu) / sd
    return np.argmin(((zt.T[:, None, :] - means[None]) ** 2).sum(axis=-1), axis=1)


def test_optical_beats_sar_beats_chance_and_clouds_destroy_optical(m3m_arrays):
    def flat(split, key):
        return np.concatenate([t[key].ravel() for t in m3m_arrays[split]])

    y_tr, y_te = flat("train", "label"), flat("test", "label")
    m_tr, m_te = flat("train", "mask_lab"), flat("test", "mask_lab")

    def feats(split, key):
        return np.concatenate([t[key].reshape(t[key].shape[0], -1) for t in m3m_arrays[split]], axis=1)

    keep_tr, keep_te = y_tr != 255, y_te != 255
    chance = max(np.mean(y_te[keep_te] == k) for k in range(6))  # always predicting the commonest class

    def accuracy(key_tr, key_te, tr_sel, te_sel):
        pred = _nearest_mean(feats("train", key_tr)[:, tr_sel], y_tr[tr_sel], feats("test", key_te)[:, te_sel])
        return float(np.mean(pred == y_te[te_sel]))

    cloudy_te, cloudy_tr = keep_te & (m_te > 0.5), keep_tr & (m_tr > 0.5)
    optical = accuracy("clear_lab", "clear_lab", keep_tr, keep_te)
    sar = accuracy("sar", "sar", keep_tr, keep_te)
    optical_on_cloudy_px = accuracy("clear_lab", "clear_lab", keep_tr, cloudy_te)
    sar_on_cloudy_px = accuracy("sar", "sar", keep_tr, cloudy_te)
    cloudy_fit_clear = accuracy("clear_lab", "cloudy_lab", keep_tr, cloudy_te)  # clear-trained model on clouds
    cloudy_fit_cloudy = accuracy("cloudy_lab", "cloudy_lab", cloudy_tr, cloudy_te)  # trained on cloudy pixels
    print(f"\nnearest class mean on test pixels: chance {chance:.3f}, optical clear {optical:.3f}, SAR {sar:.3f}; "
          f"cloudy pixels: clear optical {optical_on_cloudy_px:.3f}, SAR {sar_on_cloudy_px:.3f}, cloudy optical "
          f"{cloudy_fit_clear:.3f} (clear-fitted) / {cloudy_fit_cloudy:.3f} (cloudy-fitted)")
    assert optical > chance + 0.35
    assert chance + 0.12 < sar < optical - 0.15
    for cloudy in (cloudy_fit_clear, cloudy_fit_cloudy):
        assert cloudy < optical_on_cloudy_px - 0.4
        assert cloudy < sar_on_cloudy_px - 0.15  # under clouds SAR is the better modality
    assert abs(sar_on_cloudy_px - sar) < 0.05  # SAR does not see the clouds


# --------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------


def test_m3m_is_deterministic_and_independent_of_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(seg, "POOL_MIN_PIXELS", 0)  # use worker processes even for this small set
    one, two, other = tmp_path / "w1", tmp_path / "w2", tmp_path / "seed2"
    generate_segmentation(str(one), **SMALL, seed=1, workers=1)
    generate_segmentation(str(two), **SMALL, seed=1, workers=2)
    generate_segmentation(str(other), **SMALL, seed=2, workers=1)
    d1, d2, d3 = tree_digest(one), tree_digest(two), tree_digest(other)
    assert len(d1) == 8 * 5 and d1 == d2
    assert metadata(one) == metadata(two)
    tile = "train/planet_cloudfree_spring/planet_cloudfree_spring_1/planet_cloudfree_spring_1_p_1.tif"
    tile = tile if tile in d1 else tile.replace("train/", "test/")
    assert (one / tile).read_bytes() == (two / tile).read_bytes()
    same_name = set(d1) & set(d3)
    assert sum(d1[p] != d3[p] for p in same_name) == len(same_name) and metadata(one) != metadata(other)


def test_whu_is_deterministic_and_independent_of_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(seg, "POOL_MIN_PIXELS", 0)
    one, two, other = tmp_path / "w1", tmp_path / "w2", tmp_path / "seed2"
    generate_segmentation(str(one), **SMALL_WHU, seed=1, workers=1)
    generate_segmentation(str(two), **SMALL_WHU, seed=1, workers=2)
    generate_segmentation(str(other), **SMALL_WHU, seed=2, workers=1)
    d1, d2, d3 = tree_digest(one), tree_digest(two), tree_digest(other)
    assert len(d1) == 5 * 3 and d1 == d2 and metadata(one) == metadata(two)
    assert all(d1[p] != d3[p] for p in d1)


# --------------------------------------------------------------------------------------
# WHU-OPT-SAR layout
# --------------------------------------------------------------------------------------


def test_whu_files_prepare_and_splits(demo_whu):
    root, meta, manifest, report = demo_whu
    names = [f"NH49E0010{i:02d}" for i in range(1, 11)]
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.tif"))
    assert on_disk == sorted(f"{m}/{n}.tif" for m in ("optical", "sar", "lbl") for n in names)
    for n in names:
        opt, prof = read(str(root / "optical" / f"{n}.tif"))
        sar, sprof = read(str(root / "sar" / f"{n}.tif"))
        lbl, lprof = read(str(root / "lbl" / f"{n}.tif"))
        assert opt.shape == (4, 300, 400) and sar.shape == (1, 300, 400) and lbl.shape == (1, 300, 400)
        assert opt.dtype == sar.dtype == lbl.dtype == np.uint8
        for p in (prof, sprof, lprof):
            assert p["crs"].to_string() == "EPSG:32649" and (p["transform"].a, p["transform"].e) == (5.0, -5.0)
        assert prof["transform"] == sprof["transform"] == lprof["transform"]
        assert set(np.unique(lbl)) == WHU_CODES  # every class in every scene
    # the reader's default split: every fifth sorted scene is test; carve_val takes val scenes from train
    df = read_manifest(manifest)
    assert report.samples_written == 10 * 12  # 3 x 4 windows of 100 px per 300 x 400 scene
    scenes = {s: set(df.loc[df["split"] == s, "scene"]) for s in ("train", "val", "test")}
    assert scenes["test"] == {names[4], names[9]} and len(scenes["val"]) == 2 and len(scenes["train"]) == 6
    assert report.splits == {s: meta["tiles_per_split"][s] for s in ("train", "val", "test")}
    assert (df["domain"] == "").all()
    for split, members in scenes.items():
        codes = set()
        for n in members:
            codes |= set(np.unique(read(str(root / "lbl" / f"{n}.tif"))[0]).tolist())
        assert codes == WHU_CODES, split
    assert meta["prepare"] == {"dataset": "whu-opt-sar", "kwargs": {"tile_size": 100}}


def test_whu_roads_are_thin_lines(demo_whu):
    root, _, _, _ = demo_whu
    for path in sorted((root / "lbl").glob("*.tif"))[:4]:
        lbl = read(str(path))[0][0]
        road = lbl == 60
        assert 0.005 < road.mean() < 0.08
        # a 5 x 5 (25 m) square fits almost nowhere inside a road: they are lines 2-4 px wide
        core = ndimage.binary_erosion(road, np.ones((5, 5), bool))
        assert core.sum() < 0.05 * road.sum()
        # and they are long: the largest connected road spans most of the scene
        parts, n = ndimage.label(road, np.ones((3, 3)))
        sizes = ndimage.find_objects(parts)
        longest = max(max(s[0].stop - s[0].start, s[1].stop - s[1].start) for s in sizes)
        assert longest > 0.6 * min(lbl.shape)


def test_whu_pipeline_reads_tiles_with_simulated_clouds(demo_whu, ray_session):
    root, _, manifest, _ = demo_whu
    cfg = {"manifest": manifest, "split": "val", "optical": "clear", "clouds": {"mode": "simulate"}}
    pipe = TilePipeline(from_dict(DataConfig, cfg, "data"))
    rows = pipe.frame.iloc[:5]
    batch = pipe.read_rows(rows)
    assert batch["optical"].shape == (5, 4, 100, 100) and batch["sar"].shape == (5, 1, 100, 100)
    assert batch["label_map"].shape == (5, 100, 100) and set(np.unique(batch["label_map"])) <= set(range(8))
    for i, row in enumerate(rows.to_dict("records")):
        lbl = read(row["label_uri"])[0][0]
        window = lbl[row["row"]:row["row"] + 100, row["col"]:row["col"] + 100]
        np.testing.assert_array_equal(batch["label_map"][i], window // 10)
        sar = read(row["sar_uri"])[0][0][row["row"]:row["row"] + 100, row["col"]:row["col"] + 100]
        np.testing.assert_allclose(batch["sar"][i][0], sar / 255.0, rtol=1e-6)
    assert batch["cloud_fraction"].max() > 0  # the pipeline's simulator made clouds; the files have none


# --------------------------------------------------------------------------------------
# Object storage and argument checks
# --------------------------------------------------------------------------------------


def test_writes_to_s3(s3_server, tmp_path):
    uri = "s3://raypipe-test/seg/m3m"
    small = dict(SMALL, tiles=4, scene_size=2, seed=4)
    generate_segmentation(uri, **small, workers=1)
    local = tmp_path / "local"
    generate_segmentation(str(local), **small, workers=1)
    meta = json.loads(storage.read_bytes(f"{uri}/segmentation.json"))
    assert meta["tiles_per_split"]["generated"] == {"train": 2, "test": 2}  # 2 AOIs: one of them test
    rep = prepare("m3m-cr", uri, f"{uri}.parquet")
    assert rep.samples_written == 4
    df = read_manifest(f"{uri}.parquet")
    assert df["optical_cloudy_uri"].str.startswith("s3://raypipe-test/seg/m3m/").all()
    for rel, digest in tree_digest(local).items():  # the same bytes as a local generation
        assert hashlib.sha256(storage.read_bytes(f"{uri}/{rel}")).hexdigest() == digest, rel
    arr = raster.read(df["sar_uri"].iloc[0], raster.Expect(bands=2, dtypes=("float64",), size=(12, 12)))
    assert arr.shape == (2, 12, 12)
    whu = "s3://raypipe-test/seg/whu"
    generate_segmentation(whu, layout="whu-opt-sar", scenes=5, scene_height=64, scene_width=96, tile_size=32,
                          workers=1)
    rep = prepare("whu-opt-sar", whu, f"{whu}.parquet", tile_size=32)
    assert rep.samples_written == 5 * 2 * 3 and rep.splits["test"] == 6


@pytest.mark.parametrize("kwargs, flag", [
    (dict(size=45), "--size"),
    (dict(size=30), "--size"),
    (dict(tiles=10, scene_size=12), "--scene-size"),
    (dict(preset="storm"), "--cloud-preset"),
    (dict(scenes=10), "--scenes"),
    (dict(layout="whu-opt-sar", tiles=10), "--tiles"),
    (dict(layout="whu-opt-sar", scenes=4), "--scenes"),
    (dict(layout="whu-opt-sar", scene_height=80, tile_size=100), "--scene-height"),
    (dict(layout="mystery"), "--layout"),
    (dict(seed=-1), "--seed"),
    (dict(workers=0), "--workers"),
])
def test_bad_arguments_name_their_flag(tmp_path, kwargs, flag):
    with pytest.raises(ConfigError) as e:
        generate_segmentation(str(tmp_path / "x"), **kwargs)
    assert flag in str(e.value)
    assert not (tmp_path / "x").exists()
