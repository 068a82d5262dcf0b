"""M3M-CR through the real reader (prepare + TilePipeline) on a generated fixture in the official layout.

Expected values are computed here from the fixture's own arrays and DESIGN §2's mapping, not by
the code under test.
"""

import numpy as np
import pytest
import rasterio

from data.m3mcr import make_m3mcr
from raypipe.config import from_dict
from raypipe.data.manifest import read_manifest
from raypipe.data.pipeline import DataConfig, TilePipeline
from raypipe.data.prepare import prepare
from raypipe.errors import BadTileError

# CloudSeg's level-1 mapping of ESA WorldCover codes, as DESIGN §2 states it; anything else -> 255.
DESIGN_WORLDCOVER = {10: 0, 20: 1, 30: 1, 40: 2, 50: 3, 60: 4, 80: 5, 90: 5}


def read(path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def run(manifest, **cfg):
    pipe = TilePipeline(from_dict(DataConfig, {"manifest": manifest, **cfg}, "data"))
    batch = pipe.read_rows()
    order = np.argsort(batch["sample_id"])
    return pipe, {k: v[order] for k, v in batch.items()}


def test_manifest_from_generated_layout(tmp_path):
    info = make_m3mcr(tmp_path / "m3m")
    rep = prepare("m3m-cr", str(tmp_path / "m3m"), str(tmp_path / "m.parquet"))
    df = read_manifest(str(tmp_path / "m.parquet")).set_index("sample_id")
    assert sorted(df.index) == ["fall_1_p_457", "fall_1_p_458", "summer_33_p_1"]
    assert rep.splits == {"test": 1, "train": 2}
    for sid, s in info.items():
        row = df.loc[sid]
        assert (row.split, row.season, row.scene, row.patch) == (s["split"], s["season"], str(s["aoi"]), str(s["patch"]))
        assert row.optical_cloudy_uri == str(s["paths"]["planet_cloudy"])
        assert row.optical_uri == str(s["paths"]["planet_cloudfree"])
        assert row.sar_uri == str(s["paths"]["S1"]) and row.label_uri == str(s["paths"]["landcover"])
        assert row.cloud_mask_uri == str(s["paths"].get("cloudmask", ""))
        assert (row.height, row.width, row.optical_bands, row.sar_bands) == (30, 30, 4, 2)
    assert df.attrs["raypipe"]["classes"] == ["Forest", "Rangeland", "Agriculture", "Urban", "Barren", "Water"]


def test_batches_labels_masks_and_minmax(tmp_path, ray_session):
    info = make_m3mcr(tmp_path / "m3m")
    prepare("m3m-cr", str(tmp_path / "m3m"), str(tmp_path / "m.parquet"))
    pipe, out = run(str(tmp_path / "m.parquet"), optical="cloudy")
    ids = list(out["sample_id"])
    assert ids == ["fall_1_p_457", "fall_1_p_458", "summer_33_p_1"]
    assert out["optical"].shape == (3, 4, 30, 30) and out["optical"].dtype == np.float32
    assert out["sar"].shape == (3, 2, 9, 9) and out["label_map"].shape == (3, 9, 9)
    for i, sid in enumerate(ids):
        s = info[sid]
        # optical: PlanetScope reflectance x 10000 -> min-max clip(0, 10000) / 10000
        raw = read(s["paths"]["planet_cloudy"]).astype(np.float64)
        np.testing.assert_allclose(out["optical"][i], np.clip(raw, 0, 10000) / 10000, rtol=1e-6)
        # SAR dB: clip(-25, 0) / 25 + 1
        sar = read(s["paths"]["S1"])
        np.testing.assert_allclose(out["sar"][i], np.clip(sar, -25, 0) / 25 + 1, rtol=1e-5, atol=1e-6)
        # labels: WorldCover -> CloudSeg, 70 / 95 / 100 / unknown codes ignored
        wc = read(s["paths"]["landcover"])[0]
        expected = np.vectorize(lambda c: DESIGN_WORLDCOVER.get(int(c), 255))(wc)
        np.testing.assert_array_equal(out["label_map"][i], expected)
        # the dataset's masks are used as given; no mask file -> all clear
        assert out["cloud_fraction"][i] == pytest.approx(s["cloud_fraction"], abs=1e-6)
    assert out["cloud_fraction"].tolist() == pytest.approx([0.4, 0.0, 1.0])
    assert set(np.unique(out["label_map"])) == {0, 1, 2, 3, 4, 5, 255}
    # the clear acquisition is the other file
    _, clear = run(str(tmp_path / "m.parquet"), optical="clear")
    raw = read(info["fall_1_p_457"]["paths"]["planet_cloudfree"]).astype(np.float64)
    np.testing.assert_allclose(clear["optical"][0], raw / 10000, rtol=1e-6)
    assert not np.allclose(clear["optical"][0], out["optical"][0])


def test_read_rows_and_sample_reader_give_the_pipelines_arrays(tmp_path, ray_session):
    make_m3mcr(tmp_path / "m3m")
    prepare("m3m-cr", str(tmp_path / "m3m"), str(tmp_path / "m.parquet"))
    pipe, direct = run(str(tmp_path / "m.parquet"), optical="cloudy")
    batches = list(pipe.dataset().iter_batches(batch_size=None, batch_format="numpy"))
    streamed = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    order = np.argsort(streamed["sample_id"])
    assert sorted(direct) == sorted(streamed)
    for k in direct:
        np.testing.assert_array_equal(direct[k], streamed[k][order])
    reader = pipe.sample_reader()
    rows = pipe.frame.to_dict("records")
    i = [r["sample_id"] for r in rows].index("summer_33_p_1")
    sample = reader.load(rows[i])
    assert sorted(sample) == ["bucket_fraction", "cloud_mask", "label_map", "optical", "sar"]
    j = list(direct["sample_id"]).index("summer_33_p_1")
    for k in ("optical", "sar", "label_map", "cloud_mask", "bucket_fraction"):
        np.testing.assert_array_equal(sample[k], direct[k][j])
    # M3M-CR ships its masks as a product: training reads them, and buckets use the same mask
    assert sample["bucket_fraction"] == np.float32(sample["cloud_mask"].mean())


def test_missing_sar_errors_or_is_quarantined(tmp_path):
    info = make_m3mcr(tmp_path / "m3m", skip=((458, "S1"),))
    expected = tmp_path / "m3m/train/S1_fall/S1_fall_1/S1_fall_1_p_458.tif"
    assert "S1" not in info["fall_1_p_458"]["paths"] and not expected.exists()
    with pytest.raises(BadTileError) as e:
        prepare("m3m-cr", str(tmp_path / "m3m"), str(tmp_path / "m.parquet"))
    assert e.value.uri == str(expected) and e.value.reason == "missing"
    rep = prepare("m3m-cr", str(tmp_path / "m3m"), str(tmp_path / "m.parquet"), on_bad_tile="skip")
    assert (rep.samples_found, rep.samples_written) == (3, 2)
    assert [q["sample_id"] for q in rep.quarantined] == ["fall_1_p_458"]
