"""Every kind of bad input gets an error naming the file or field, or a counted quarantine."""

from pathlib import Path

import numpy as np
import pytest

from data.sen12ms import make_sen12ms
from raypipe.config import from_dict
from raypipe.data.pipeline import DataConfig, TilePipeline
from raypipe.data.prepare import prepare
from raypipe.raster import write_geotiff
from raypipe.errors import BadTileError, ConfigError, ManifestError, StorageError

S2 = "ROIs1158_spring/s2_1/ROIs1158_spring_s2_1_p31.tif"
S1 = "ROIs1158_spring/s1_1/ROIs1158_spring_s1_1_p31.tif"


def dataset(tmp_path: Path) -> str:
    make_sen12ms(tmp_path / "s", size=16)
    prepare("sen12ms", str(tmp_path / "s"), str(tmp_path / "m.parquet"))
    return str(tmp_path / "m.parquet")


def pipeline(manifest, **cfg):
    return TilePipeline(from_dict(DataConfig, {"manifest": manifest, "optical": "clear", **cfg}, "data"))


def consume(pipe) -> int:
    return sum(len(b["sample_id"]) for b in pipe.iter_batches(batch_size=None))


def corrupt(p: Path):
    p.write_bytes(np.random.default_rng(0).bytes(4096))


def truncate(p: Path):
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])


def wrong_band_count(p: Path):
    write_geotiff(str(p), np.ones((12, 16, 16), np.uint16))


def wrong_dtype(p: Path):
    write_geotiff(str(p), np.ones((13, 16, 16), np.float32))


def wrong_size(p: Path):
    write_geotiff(str(p), np.ones((13, 20, 16), np.uint16))


def mostly_nodata(p: Path):
    arr = np.full((13, 16, 16), 500, np.uint16)
    arr[:, :8] = 0
    write_geotiff(str(p), arr, nodata=0)


def mostly_nan_sar(p: Path):
    arr = np.full((2, 16, 16), -12.0, np.float32)
    arr[:, 4:] = np.nan
    write_geotiff(str(p), arr)


CASES = [
    (S2, corrupt, "corrupt"),
    (S2, truncate, "corrupt"),
    (S2, wrong_band_count, "band_count"),
    (S2, wrong_dtype, "dtype"),
    (S2, wrong_size, "size"),
    (S2, mostly_nodata, "nodata"),
    (S1, mostly_nan_sar, "nan"),
]


@pytest.mark.parametrize("rel, damage, reason", CASES, ids=[c[1].__name__ for c in CASES])
def test_bad_tile_errors_name_the_file_or_are_quarantined(rel, damage, reason, tmp_path, ray_session):
    manifest = dataset(tmp_path)
    bad = tmp_path / "s" / rel
    damage(bad)
    with pytest.raises(BadTileError) as e:
        consume(pipeline(manifest))
    assert e.value.uri == str(bad) and e.value.reason == reason
    assert str(bad) in str(e.value)

    pipe = pipeline(manifest, on_bad_tile="skip")
    used = consume(pipe)
    rep = pipe.report(used)
    assert rep["samples_in"] == 4 and used == 3 and rep["samples_quarantined"] == 1 and rep["accounted"]
    assert rep["quarantined"][0]["uri"] == str(bad) and rep["quarantined"][0]["reason"] == reason


def test_a_few_nan_pixels_are_filled_not_fatal(tmp_path, ray_session):
    manifest = dataset(tmp_path)
    arr = np.full((2, 16, 16), -12.0, np.float32)
    arr[0, 0, 0] = np.nan  # 1 of 512 values: below the 1 % tolerated
    write_geotiff(str(tmp_path / "s" / S1), arr)
    pipe = pipeline(manifest)
    batches = list(pipe.iter_batches(batch_size=None))
    assert all(np.isfinite(b["sar"]).all() for b in batches)
    assert sum(len(b["sample_id"]) for b in batches) == 4


def test_missing_file_is_caught_before_the_run(tmp_path, ray_session):
    manifest = dataset(tmp_path)
    (tmp_path / "s" / S1).unlink()
    with pytest.raises(BadTileError) as e:
        pipeline(manifest)  # the constructor checks, before any pixel is read
    assert e.value.uri == str(tmp_path / "s" / S1) and e.value.reason == "missing"
    pipe = pipeline(manifest, on_bad_tile="skip")
    rep = pipe.report(consume(pipe))
    assert rep["samples_in"] == 4 and rep["samples_used"] == 3 and rep["samples_quarantined"] == 1


def test_bad_config_fails_up_front_naming_the_field(tmp_path, ray_session):
    manifest = dataset(tmp_path)
    with pytest.raises(ConfigError) as e:
        pipeline(manifest, optical_bands=["B2", "B13"])
    assert e.value.field == "data.optical_bands" and "B13" in str(e.value)
    with pytest.raises(ConfigError) as e:
        pipeline(manifest, optical="cloudy")  # SEN12MS has no cloudy acquisition
    assert e.value.field == "data.optical"
    with pytest.raises(ConfigError) as e:
        pipeline(manifest, normalise={"mode": "zscore"}, optical_bands=["B1", "B2"])
    assert e.value.field == "data.normalise.optical_mean"
    with pytest.raises(ConfigError) as e:
        pipeline(manifest, split="validation")
    assert e.value.field == "data.split"


def test_missing_or_broken_manifest(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        pipeline(str(tmp_path / "nope.parquet"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(ManifestError, match="not a readable Parquet"):
        pipeline(str(tmp_path / "bad.parquet"))


def test_unreachable_storage_names_the_uri(monkeypatch):
    from raypipe import storage

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    storage._fs_for_scheme.cache_clear()
    try:
        with pytest.raises(StorageError) as e:
            pipeline("s3://unreachable-bucket/manifests/m.parquet")
        assert "s3://unreachable-bucket/manifests/m.parquet" in str(e.value)
    finally:
        storage._fs_for_scheme.cache_clear()
