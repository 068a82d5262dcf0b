"""The evaluation protocol (DESIGN §11): where each split's training-time cloud fraction comes from,
which information is an oracle, and that a model really learns."""

from __future__ import annotations

import numpy as np
import pytest

from raypipe.engine import SOURCE_TEST, SOURCE_TRAIN, TARGET_TEST, TARGET_TRAIN, View, resolve
from raypipe.engine.data import build_data
from raypipe.methods import get_method

MTTS = get_method("mtts")
TINY_MODEL = {"kind": "resnet", "depth": 10, "width": 4, "stem": "small", "norm": "group"}


def tiny(tmp_path, *overrides):
    enc = {k: v for k, v in TINY_MODEL.items() if k != "kind"}
    extra = {"data": {"benchmark": {"out": str(tmp_path / "bench"), "tiles": 40, "size": 16, "scene_size": 10}},
             "stages": {"source": {"model": TINY_MODEL}, "aux_optical": {"model": TINY_MODEL},
                        "aux_sar": {"model": TINY_MODEL},
                        "target": {"model": {"kind": "multimodal", "optical": enc, "sar": enc}}},
             "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "protocol"}}
    return resolve(MTTS, extra=extra, overrides=list(overrides))


@pytest.fixture(scope="module")
def default_data(tmp_path_factory, ray_session):
    tmp = tmp_path_factory.mktemp("protocol")
    cfg = tiny(tmp)
    return tmp, cfg, build_data(cfg)


def test_default_training_cloud_fraction_comes_from_a_detector_on_every_target_split(default_data):
    tmp, cfg, data = default_data
    assert cfg.data.pipeline.clouds.mode == "auto" and cfg.data.pipeline.clouds.detector == "s2cloudless"
    for split in ("train", "val", "test"):
        view = View("target", split, "cloudy")
        pipe = data.pipe(view, sar=True)
        assert pipe.cloud_sources == ["detector:s2cloudless"], (split, pipe.cloud_sources)
        assert not pipe.oracle_masks
        assert (pipe.frame["cloud_mask_uri"] != "").all()  # the simulator's truth is there, and not used
    for view in (SOURCE_TRAIN, SOURCE_TEST):
        assert data.pipe(view, sar=False).cloud_sources == ["none (clear)"]


def test_buckets_use_the_true_mask_while_training_sees_the_detector(default_data):
    """In a batch, ``cloud_fraction`` (what a method may read) is the detector's; ``bucket_fraction``
    (what the evaluation buckets use) is the simulator's mask, read independently here."""
    from raypipe.clouds.stage import read_mask

    _, _, data = default_data
    pipe = data.pipe(TARGET_TEST, sar=False)
    batch = pipe.read_rows()
    rows = pipe.frame.set_index("sample_id").loc[list(batch["sample_id"])]
    truth = np.array([read_mask(u, (16, 16)).mean() for u in rows["cloud_mask_uri"]], np.float32)
    np.testing.assert_allclose(batch["bucket_fraction"], truth, atol=1e-6)
    assert not np.allclose(batch["cloud_fraction"], truth)  # the detector is not the truth


def test_truth_masks_in_training_are_labelled_oracle_down_the_graph(default_data, tmp_path):
    from raypipe.engine.run import plan_stages
    from raypipe.tracking import Lineage

    tmp, _, _ = default_data
    cfg = tiny(tmp, "data.pipeline.clouds.mode=given")
    data = build_data(cfg)
    assert data.pipe(TARGET_TRAIN, sar=True).cloud_sources == ["simulator truth [oracle]"]
    lineage = Lineage(f"sqlite:///{tmp_path}/mlflow.db", "protocol-oracle")
    plans = {p.name: p for p in plan_stages(MTTS, cfg, data, lineage)}
    assert plans["source"].oracle == ()  # source: clear optical, no clouds read
    assert plans["aux_optical"].oracle == ("masks",) and plans["target"].oracle == ("masks",)
    # selection by target val labels is an oracle too, and it travels to the stages downstream
    cfg = tiny(tmp, "stages.aux_sar.train.selection=val_labels", "stages.source.train.selection=val_labels")
    plans = {p.name: p for p in plan_stages(MTTS, cfg, build_data(cfg), lineage)}
    assert plans["source"].oracle == ()  # the source's val labels are the source's: not an oracle
    assert plans["aux_sar"].oracle == ("selection",) and plans["aux_optical"].oracle == ()
    assert plans["target"].oracle == ("selection",)


def test_the_source_model_learns_well_above_chance(tmp_path, ray_session):
    """f_S trained a few epochs on the generated source domain classifies its test split far above the
    10-class chance level (10 %): the pipeline, the loop and the checkpoint carry a real model.
    (Sized from a plain-PyTorch run of the same model: 50 training tiles of 16 px give 20-30 % test
    accuracy, noisy; 200 give 42-50 % after 5-8 epochs.)"""
    from raypipe.engine import runner
    from raypipe.engine.config import RayConfig, TrainConfig
    from raypipe.engine.task import build_task
    from raypipe.objectives import Supervised

    cfg = resolve(get_method("source_only"), extra={
        "data": {"benchmark": {"out": str(tmp_path / "bench"), "tiles": 300, "size": 16, "scene_size": 10}}})
    data = build_data(cfg)
    train_pipe, val_pipe = data.pipe(SOURCE_TRAIN, sar=False), data.pipe(View("source", "val", "clear"), sar=False)
    test_pipe = data.pipe(SOURCE_TEST, sar=False)
    spec = {**TINY_MODEL, "width": 8, "in_channels": train_pipe.num_optical_bands, "num_classes": len(data.classes)}
    train = TrainConfig(epochs=8, batch_size=16, lr=3e-3)
    job = runner.StageJob("source", Supervised(None, "optical"), spec, train, train_pipe, val_pipe, {},
                          "classification", len(data.classes), data.classes)
    state, metrics = runner.fit(job, RayConfig(storage_path=str(tmp_path / "runs")), "learns-test")
    columns = runner.predict(test_pipe, spec, state, "optical", "classification", len(data.classes))
    oa = build_task("classification", len(data.classes), data.classes).evaluate(columns)["overall"]["oa"]
    assert len(columns["pred"]) == len(test_pipe.frame) and oa > 0.3, oa  # 3x chance
    assert metrics["val/oa"] > 0.2  # per-epoch validation is on val, and sees the learning too
