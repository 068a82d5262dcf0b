"""prepare_data over generated official layouts and the real tiles, local and on S3."""

import numpy as np
import pandas as pd
import pytest

from conftest import upload_tree
from data.sen12ms import make_sen12ms
from data.sen12ms_cr import layout_real_sen12ms_cr, make_sen12ms_cr
from data.whu_opt_sar import make_whu
from raypipe.data.manifest import MANIFEST_COLUMNS, read_manifest
from raypipe.data.prepare import prepare
from raypipe.errors import BadTileError, ConfigError, DatasetNotFoundError


def test_sen12ms_labels_from_lc_majority_and_official_holdout(tmp_path):
    expected = make_sen12ms(tmp_path / "sen12ms")
    rep = prepare("sen12ms", str(tmp_path / "sen12ms"), str(tmp_path / "m.parquet"))
    df = read_manifest(str(tmp_path / "m.parquet"))
    assert list(df.columns) == list(MANIFEST_COLUMNS)
    assert dict(zip(df.sample_id, df.label)) == expected
    # scene 15 of ROIs1158_spring is an official hold-out scene, scene 1 is not
    assert set(df[df.scene == "15"].split) == {"test"} and set(df[df.scene == "1"].split) == {"train"}
    assert rep.samples_found == rep.samples_written == 4
    assert df.attrs["raypipe"]["classes"][0] == "Forest"
    assert (df.height == 16).all() and (df.optical_bands == 13).all() and (df.sar_bands == 2).all()


def test_label_table_overrides_class_scheme(tmp_path):
    ids = make_sen12ms_cr(tmp_path / "cr")
    table = tmp_path / "labels.csv"
    pd.DataFrame({"sample_id": ids, "class": ["Harbor", "Road", "Harbor", "Water"]}).to_csv(table, index=False)
    prepare("sen12ms-cr", str(tmp_path / "cr"), str(tmp_path / "m.parquet"), labels=str(table))
    df = read_manifest(str(tmp_path / "m.parquet"))
    classes = df.attrs["raypipe"]["classes"]
    assert classes == ["Harbor", "Road", "Water"]
    assert [classes[i] for i in df.label] == ["Harbor", "Road", "Harbor", "Water"]
    assert (df.label_name == ["Harbor", "Road", "Harbor", "Water"]).all()


def test_real_m3mcr_manifest(real_data, tmp_path):
    rep = prepare("m3m-cr", str(real_data / "M3M-CR" / "M3R-CR"), str(tmp_path / "m.parquet"))
    df = read_manifest(str(tmp_path / "m.parquet"))
    assert rep.splits == {"test": 1, "train": 1}
    row = df.set_index("sample_id").loc["summer_33_p_1"]
    assert row.split == "test" and row.season == "summer" and row.height == 300 and row.width == 300
    assert row.cloud_mask_uri.endswith("cloudmask_summer_33_p_1.npy")
    assert row.sar_uri.endswith("S1_summer_33_p_1.tif") and row.label_uri.endswith("landcover_summer_33_p_1.tif")


def test_whu_scenes_are_cut_into_windows(tmp_path):
    make_whu(tmp_path / "whu", height=300, width=520, scenes=5)
    prepare("whu-opt-sar", str(tmp_path / "whu"), str(tmp_path / "m.parquet"), tile_size=256)
    df = read_manifest(str(tmp_path / "m.parquet"))
    # 300x520 with 256 tiles: rows {0, 44}, cols {0, 256, 264} -> 6 windows per scene, last ones flush to the edge
    assert len(df) == 5 * 6
    assert set(zip(df.row, df.col)) == {(0, 0), (0, 256), (0, 264), (44, 0), (44, 256), (44, 264)}
    assert (df.groupby("scene").split.nunique() == 1).all()
    # 4 training scenes: ceil(0.15 * 4) = 1 becomes the val split, whole
    assert sorted(df.groupby("split").scene.nunique().items()) == [("test", 1), ("train", 3), ("val", 1)]


def test_same_manifest_from_local_folder_and_s3(real_data, tmp_path, s3_server):
    local = layout_real_sen12ms_cr(real_data, tmp_path / "cr")
    upload_tree(local, "s3://raypipe-test/cr-manifest")
    prepare("sen12ms-cr", str(local), str(tmp_path / "local.parquet"))
    prepare("sen12ms-cr", "s3://raypipe-test/cr-manifest", "s3://raypipe-test/manifests/cr.parquet")
    a = read_manifest(str(tmp_path / "local.parquet"))
    b = read_manifest("s3://raypipe-test/manifests/cr.parquet")
    uri_cols = [c for c in a.columns if c.endswith("_uri")]
    for c in uri_cols:
        a[c] = a[c].str.replace(str(local), "ROOT", regex=False)
        b[c] = b[c].str.replace("s3://raypipe-test/cr-manifest", "ROOT", regex=False)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 2 and (a.optical_cloudy_uri != "").all()


def test_unknown_dataset_and_empty_root(tmp_path):
    with pytest.raises(ConfigError) as e:
        prepare("sen13ms", str(tmp_path), str(tmp_path / "m.parquet"))
    assert e.value.field == "--dataset"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no sen12ms tiles"):
        prepare("sen12ms", str(tmp_path / "empty"), str(tmp_path / "m.parquet"))


def test_missing_modality_file_errors_or_is_quarantined(tmp_path):
    make_sen12ms(tmp_path / "s")
    gone = tmp_path / "s" / "ROIs1158_spring" / "s1_1" / "ROIs1158_spring_s1_1_p31.tif"
    gone.unlink()
    with pytest.raises(BadTileError) as e:
        prepare("sen12ms", str(tmp_path / "s"), str(tmp_path / "m.parquet"))
    assert e.value.uri == str(gone) and e.value.reason == "missing"
    rep = prepare("sen12ms", str(tmp_path / "s"), str(tmp_path / "m.parquet"), on_bad_tile="skip")
    assert rep.samples_found == 4 and rep.samples_written == 3 and len(rep.quarantined) == 1
    assert rep.quarantined[0]["uri"] == str(gone)
