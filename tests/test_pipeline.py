"""The Ray Data pipeline on real and generated tiles: shapes, dtypes, labels, clouds, local vs S3."""

import numpy as np
import pytest
import rasterio

from conftest import upload_tree
from data.sen12ms import make_sen12ms
from data.sen12ms_cr import layout_real_sen12ms_cr
from data.whu_opt_sar import make_whu
from raypipe.config import from_dict
from raypipe import bands as B
from raypipe.data.datasets.m3mcr import WORLDCOVER_TO_CLOUDSEG
from raypipe.data.pipeline import DataConfig, TilePipeline
from raypipe.data.prepare import prepare
from raypipe.errors import ConfigError


def run(manifest, **cfg):
    pipe = TilePipeline(from_dict(DataConfig, {"manifest": manifest, **cfg}, "data"))
    batches = list(pipe.dataset().iter_batches(batch_size=None, batch_format="numpy"))
    out = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    order = np.argsort(out["sample_id"])
    return pipe, {k: v[order] for k, v in out.items()}


def test_real_m3mcr_batches(real_data, tmp_path, ray_session):
    prepare("m3m-cr", str(real_data / "M3M-CR" / "M3R-CR"), str(tmp_path / "m.parquet"))
    pipe, out = run(str(tmp_path / "m.parquet"), optical="cloudy")
    assert list(out["sample_id"]) == ["fall_1_p_457", "summer_33_p_1"]
    assert out["optical"].shape == (2, 4, 300, 300) and out["optical"].dtype == np.float32
    assert out["sar"].shape == (2, 2, 90, 90) and out["label_map"].shape == (2, 90, 90)
    # the dataset's own masks are used as given
    for i, (split, season, aoi, p) in enumerate([("train", "fall", 1, 457), ("test", "summer", 33, 1)]):
        mask = np.load(real_data / f"M3M-CR/M3R-CR/{split}/cloudmask_{season}/cloudmask_{season}_{aoi}/"
                                   f"cloudmask_{season}_{aoi}_p_{p}.npy")
        assert out["cloud_fraction"][i] == pytest.approx(mask.mean(), abs=1e-6)
        with rasterio.open(real_data / f"M3M-CR/M3R-CR/{split}/landcover_{season}/landcover_{season}_{aoi}/"
                                       f"landcover_{season}_{aoi}_p_{p}.tif") as src:
            wc = src.read(1)
        expected = np.vectorize(lambda c: WORLDCOVER_TO_CLOUDSEG.get(int(c), 255))(wc)
        np.testing.assert_array_equal(out["label_map"][i], expected)
    # minmax normalisation (no published constants for PlanetScope): optical in [0, 1]
    assert 0 <= out["optical"].min() and out["optical"].max() <= 1
    assert pipe.report(len(out["sample_id"]))["accounted"]


def test_real_sen12mscr_detected_clouds_local_and_s3(real_data, tmp_path, ray_session):
    local = layout_real_sen12ms_cr(real_data, tmp_path / "cr")
    upload_tree(local, "s3://raypipe-test/cr-pipeline")
    prepare("sen12ms-cr", str(local), str(tmp_path / "m.parquet"), with_cloud_stats=True)
    prepare("sen12ms-cr", "s3://raypipe-test/cr-pipeline", "s3://raypipe-test/cr-pipeline.parquet")
    _, a = run(str(tmp_path / "m.parquet"), optical="cloudy")
    _, b = run("s3://raypipe-test/cr-pipeline.parquet", optical="cloudy")
    assert list(a["sample_id"]) == ["ROIs1970_fall_139_p839", "ROIs2017_winter_112_p797"]
    assert a["optical"].shape == (2, len(B.S2_LAND_BANDS), 256, 256) and a["sar"].shape == (2, 2, 256, 256)
    fall, winter = a["cloud_fraction"]
    assert fall > 0.3 and winter < 0.1  # default detector on real clouds, and a near-clear hard negative
    for k in ("optical", "sar", "cloud_mask", "cloud_fraction"):
        np.testing.assert_array_equal(a[k], b[k])
    # the manifest's cloud stats come from the same cloud stage
    from raypipe.data.manifest import read_manifest

    m = read_manifest(str(tmp_path / "m.parquet")).set_index("sample_id")
    assert m.loc["ROIs1970_fall_139_p839", "cloud_fraction"] == pytest.approx(fall, abs=1e-6)
    # z-score with SEN12MS's published constants on the land bands
    with rasterio.open(local / "ROIs1970_fall_s2_cloudy/s2_cloudy_139/ROIs1970_fall_s2_cloudy_139_p839.tif") as s:
        b2 = s.read(2).astype(np.float32)
    np.testing.assert_allclose(a["optical"][0, 0], (b2 - B.SEN12MS_S2_LAND_MEAN[0]) / B.SEN12MS_S2_LAND_STD[0],
                               rtol=1e-5, atol=1e-4)


def test_simulated_clouds_are_identical_across_epochs(tmp_path, ray_session):
    make_sen12ms(tmp_path / "s", size=32)
    prepare("sen12ms", str(tmp_path / "s"), str(tmp_path / "m.parquet"))
    cfg = dict(optical="clear", clouds={"mode": "simulate", "preset": "thick", "coverage": {}})
    _, e1 = run(str(tmp_path / "m.parquet"), **cfg)
    _, e2 = run(str(tmp_path / "m.parquet"), **cfg)
    _, clear = run(str(tmp_path / "m.parquet"), optical="clear", clouds={"mode": "none"})
    np.testing.assert_array_equal(e1["cloud_mask"], e2["cloud_mask"])
    np.testing.assert_array_equal(e1["optical"], e2["optical"])
    assert (clear["cloud_fraction"] == 0).all()
    cloudy = e1["cloud_fraction"] > 0.1
    assert cloudy.any()
    assert not np.allclose(e1["optical"][cloudy], clear["optical"][cloudy])
    _, salted = run(str(tmp_path / "m.parquet"), **{**cfg, "clouds": {**cfg["clouds"], "salt": "other"}})
    assert not np.array_equal(salted["cloud_mask"], e1["cloud_mask"])
    assert list(e1["label"]) == list(clear["label"])


def test_whu_windows_match_the_scene(tmp_path, ray_session):
    make_whu(tmp_path / "whu", height=300, width=520, scenes=5)
    prepare("whu-opt-sar", str(tmp_path / "whu"), str(tmp_path / "m.parquet"), tile_size=256)
    _, out = run(str(tmp_path / "m.parquet"), split="test", normalise={"mode": "none"}, optical="clear")
    i = list(out["sample_id"]).index("NH49E001014_r44_c264")
    with rasterio.open(tmp_path / "whu/optical/NH49E001014.tif") as src:
        scene = src.read()
    np.testing.assert_array_equal(out["optical"][i], scene[:, 44:300, 264:520].astype(np.float32))
    with rasterio.open(tmp_path / "whu/lbl/NH49E001014.tif") as src:
        lbl = src.read(1)
    np.testing.assert_array_equal(out["label_map"][i], lbl[44:300, 264:520] // 10)


def test_batches_with_both_clear_and_cloudy_optical(tmp_path):
    """``optical="both"``: each sample carries its cloudy optical (through the cloud stage) as
    ``optical`` and the cloud-free optical of the same tile as ``optical_clear``; each equals what the
    single-acquisition pipelines give for the same rows (read in-process, no Ray needed)."""
    from raypipe.synthetic import generate

    generate(str(tmp_path / "b"), tiles=20, size=16, seed=1, scene_size=5, with_reference=True, quiet=True)
    prepare("synthetic", str(tmp_path / "b"), str(tmp_path / "m.parquet"))

    def pipe(optical):
        return TilePipeline(from_dict(DataConfig, {"manifest": str(tmp_path / "m.parquet"), "domain": "target",
                                                   "optical": optical, "use_sar": True}, "data"))

    both, cloudy, clear = pipe("both").read_rows(), pipe("cloudy").read_rows(), pipe("clear").read_rows()
    assert list(both["sample_id"]) == list(cloudy["sample_id"]) == list(clear["sample_id"])
    np.testing.assert_array_equal(both["optical"], cloudy["optical"])
    np.testing.assert_array_equal(both["optical_clear"], clear["optical"])
    np.testing.assert_array_equal(both["cloud_fraction"], cloudy["cloud_fraction"])
    assert both["cloud_fraction"].max() > 0.5  # the target has clouds, so the two acquisitions differ
    assert not np.array_equal(both["optical"], both["optical_clear"])
    assert "optical_clear" not in cloudy and both["sar"].shape[0] == len(both["sample_id"])
    # the source domain of the benchmark has no cloudy acquisition: a clear error naming the field
    with pytest.raises(ConfigError) as e:
        TilePipeline(from_dict(DataConfig, {"manifest": str(tmp_path / "m.parquet"), "domain": "source",
                                            "optical": "both"}, "data"))
    assert e.value.field == "data.optical" and "cloudy" in str(e.value)


def _gen(tmp_path, tiles=20):
    from raypipe.synthetic import generate

    generate(str(tmp_path / "b"), tiles=tiles, size=16, seed=1, scene_size=5, quiet=True)
    prepare("synthetic", str(tmp_path / "b"), str(tmp_path / "m.parquet"))
    return str(tmp_path / "m.parquet")


def _passes(pipe, n=2):
    out = []
    for _ in range(n):
        batches = list(pipe.dataset().iter_batches(batch_size=None, batch_format="numpy"))
        cat = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
        order = np.argsort(cat["sample_id"])
        out.append({k: v[order] for k, v in cat.items()})
    return out


def test_decoded_split_cache_reads_storage_once_and_gives_the_streamed_arrays(tmp_path, ray_session):
    """``cache: auto`` decodes the split once: after the first pass the tiles can be deleted and
    later passes still give every sample, identical to what streaming (``cache: off``) decoded from
    the files. A budget the split does not fit streams instead, and so fails on the deleted files."""
    import shutil

    from raypipe.errors import BadTileError

    manifest = _gen(tmp_path)
    base = {"manifest": manifest, "domain": "target", "optical": "cloudy", "use_sar": True, "rows_per_block": 4}
    streamed = TilePipeline(from_dict(DataConfig, {**base, "cache": "off"}, "data"))
    cached = TilePipeline(from_dict(DataConfig, base, "data"))
    tiny = TilePipeline(from_dict(DataConfig, {**base, "cache_fraction": 1e-9}, "data"))
    assert cached.cache_decision()["cache"] and not streamed.cache_decision()["cache"]
    assert not tiny.cache_decision()["cache"] and ">" in tiny.cache_decision()["why"]
    # the estimate is the decoded arrays' size: optical float32 × bands, SAR float32 × bands, mask uint8
    (ref,) = _passes(streamed, 1)
    per_sample = sum(ref[k][0].nbytes for k in ("optical", "sar", "cloud_mask"))
    assert cached.decoded_bytes() == per_sample * len(cached.frame)
    first = _passes(cached, 1)[0]
    shutil.rmtree(tmp_path / "b")  # storage gone: only the cache can answer now
    again = _passes(cached, 2)
    for out in (first, *again):
        assert list(out["sample_id"]) == list(ref["sample_id"]) and len(out["sample_id"]) == len(cached.frame)
        for k in ("optical", "sar", "cloud_mask", "label", "cloud_fraction"):
            np.testing.assert_array_equal(out[k], ref[k], err_msg=k)
    with pytest.raises(BadTileError) as e:  # the streaming pipeline really reads storage every pass
        list(tiny.iter_batches(batch_size=None))
    assert str(tmp_path / "b") in str(e.value)


def test_augmentation_is_drawn_anew_after_the_cache_and_only_on_training_views(tmp_path, ray_session):
    """With flips on, each pass over a cached split flips the same decoded tiles differently (the
    cache holds them unaugmented), every pass being a flip of the streamed tile; a method's val and
    test views are never augmented."""
    from raypipe.engine.config import RunConfig
    from raypipe.engine.data import MethodData
    from raypipe.engine.method import View

    manifest = _gen(tmp_path)
    base = {"manifest": manifest, "domain": "target", "optical": "cloudy", "use_sar": False, "rows_per_block": 4}
    (ref,) = _passes(TilePipeline(from_dict(DataConfig, {**base, "cache": "off"}, "data")), 1)
    aug = TilePipeline(from_dict(DataConfig, {**base, "augment": {"hflip": True}}, "data"))
    assert aug.cache_decision()["cache"]
    p1, p2 = _passes(aug, 2)
    flipped = ref["optical"][..., ::-1]
    for p in (p1, p2):
        same = [np.array_equal(p["optical"][i], ref["optical"][i]) for i in range(len(ref["sample_id"]))]
        flip = [np.array_equal(p["optical"][i], flipped[i]) for i in range(len(ref["sample_id"]))]
        assert all(s or f for s, f in zip(same, flip)) and any(flip) and any(same)
        np.testing.assert_array_equal(p["cloud_mask"][np.array(flip)], ref["cloud_mask"][np.array(flip)][..., ::-1])
    assert not np.array_equal(p1["optical"], p2["optical"])  # drawn anew per pass
    # a method's views: augmentation on the training split only
    cfg = from_dict(RunConfig, {"data": {"pipeline": {"augment": {"hflip": True}}}}, "")
    from raypipe.data.manifest import read_manifest

    frame = read_manifest(manifest)
    data = MethodData(cfg, {"source": frame, "target": frame}, [], "h")
    assert data.pipe(View("target", "train", "cloudy"), sar=False).cfg.augment.hflip
    for split in ("val", "test"):
        assert not data.pipe(View("target", split, "cloudy"), sar=False).cfg.augment.hflip


def test_driver_and_actor_pool_inference_give_the_same_predictions(tmp_path, ray_session):
    """``ray.inference``: the model in the driver and in a Ray Data actor pool give the same logits
    for every sample, in sample-id order; ``auto`` picks the driver for a small CPU split and actors
    for GPUs or past the size bound."""
    import torch

    from raypipe.engine.runner import DRIVER_INFERENCE_MAX_SAMPLES, inference_on, predict
    from raypipe.models import build_model

    manifest = _gen(tmp_path)
    pipe = TilePipeline(from_dict(DataConfig, {"manifest": manifest, "domain": "target", "optical": "cloudy",
                                               "use_sar": False, "rows_per_block": 4}, "data"))
    spec = {"kind": "resnet", "depth": 10, "width": 4, "stem": "small", "norm": "group",
            "in_channels": pipe.num_optical_bands, "num_classes": 10}
    torch.manual_seed(0)
    state = build_model(spec).state_dict()
    driver = predict(pipe, spec, state, "optical", where="driver", batch_size=8)
    actors = predict(pipe, spec, state, "optical", where="actors", batch_size=8)
    assert list(driver["sample_id"]) == sorted(pipe.frame["sample_id"]) == list(actors["sample_id"])
    np.testing.assert_allclose(driver["logits"], actors["logits"], rtol=1e-5, atol=1e-6)
    assert inference_on("auto", False, DRIVER_INFERENCE_MAX_SAMPLES) == "driver"
    assert inference_on("auto", False, DRIVER_INFERENCE_MAX_SAMPLES + 1) == "actors"
    assert inference_on("auto", True, 10) == "actors" and inference_on("driver", True, 10**6) == "driver"
