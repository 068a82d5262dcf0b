"""CloudSeg on the engine: the student's loss curve under 2-worker DDP (gloo) equals 1 worker's, and the
real M3M-CR sample tiles go through every reader and the student's sliding-window evaluation."""

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raypipe.config import from_dict
from raypipe.methods.cloudseg.objective import CloudSegStudent, StudentConfig
from raypipe.models import build_model

NORM = "group"  # batch-independent normalisation: a half batch per worker sees what the whole batch sees
TEACHER = {"kind": "cloudseg", "num_classes": 4, "optical": {"in_channels": 4}, "sar": {"in_channels": 2},
           "encoder": {"type": "mit", "variant": "tiny"}, "student": False, "norm": NORM}
STUDENT = {**TEACHER, "student": True}
GLOBAL_BATCH, STEPS = 4, 4


def batches():
    g = torch.Generator().manual_seed(7)
    out = []
    for _ in range(STEPS):
        clear = torch.rand(GLOBAL_BATCH, 4, 40, 40, generator=g)
        mask = (torch.rand(GLOBAL_BATCH, 40, 40, generator=g) > 0.6).to(torch.uint8)
        cloudy = torch.where(mask.bool().unsqueeze(1), torch.full_like(clear, 0.9), clear)
        out.append({"optical": cloudy, "optical_clear": clear, "cloud_mask": mask,
                    "sar": torch.rand(GLOBAL_BATCH, 2, 12, 12, generator=g),
                    "label_map": torch.randint(0, 4, (GLOBAL_BATCH, 12, 12), generator=g)})
    return out


def objective():
    cfg = from_dict(StudentConfig, {"model": STUDENT}, "stages.student")
    obj = CloudSegStudent(cfg, "both", {"teacher": "both"})
    obj.check("stages.student")
    return obj


def teacher():
    torch.manual_seed(1)
    t = build_model(TEACHER).eval()
    for p in t.parameters():
        p.requires_grad_(False)
    return t


def train(model, shard):
    obj, t = objective(), teacher()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    curve = []
    for batch in batches():
        part = {k: shard(v) for k, v in batch.items()}
        loss, parts = obj.loss(model, {"teacher": t}, part)
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append([float(loss.detach()), *(float(parts[k]) for k in ("ce", "cr", "kd"))])
    return np.array(curve)


def _worker(rank, world, init_file, out_dir):
    torch.set_default_dtype(torch.float64)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(build_model(STUDENT))
    share = GLOBAL_BATCH // world
    curve = train(model, lambda v: v[rank * share:(rank + 1) * share])
    t = torch.tensor(curve)
    dist.all_reduce(t)  # the global batch's loss = mean of the equal halves' losses
    np.save(os.path.join(out_dir, f"curve{rank}.npy"), (t / world).numpy())
    torch.save(model.module.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_student_two_workers_give_one_workers_loss_curve(tmp_path):
    # float64 models, so that the comparison measures DDP's gradient averaging, not float32 rounding (which a few
    # steps amplify to ~1e-3 relative here: gradients of one batch agree to 5e-5 in float32)
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        single = build_model(STUDENT)
        one = train(single, lambda v: v)
    finally:
        torch.set_default_dtype(dtype)
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    two = np.load(tmp_path / "curve0.npy")
    assert one.shape == (STEPS, 4) and np.all(one[:, 2:] > 0)  # every term is there (cr, kd)
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6)  # the losses themselves are float32
    assert one[-1, 0] < one[0, 0]  # it learns
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for name, p in single.state_dict().items():
        assert torch.equal(r0[name], r1[name]), f"{name} differs across ranks"


def test_student_check_names_the_field():
    from raypipe.errors import ConfigError

    cfg = from_dict(StudentConfig, {"model": TEACHER}, "stages.student")
    with pytest.raises(ConfigError, match="stages.student.model.student"):
        CloudSegStudent(cfg, "both", {"teacher": "both"}).check("stages.student")


# --- the real M3M-CR sample tiles -------------------------------------------------------------------

DESIGN_WORLDCOVER = {10: 0, 20: 1, 30: 1, 40: 2, 50: 3, 60: 4, 80: 5, 90: 5}  # DESIGN §6; others -> ignore


def test_real_m3mcr_tile_through_the_students_sliding_window_evaluation(real_data, tmp_path, ray_session):
    from raypipe.data.manifest import read_manifest
    from raypipe.data.pipeline import DataConfig, TilePipeline
    from raypipe.data.prepare import prepare
    from raypipe.engine.runner import predict
    from raypipe.engine.task import build_task

    root = real_data / "M3M-CR" / "M3R-CR"
    prepare("m3m-cr", str(root), str(tmp_path / "m.parquet"))
    frame = read_manifest(str(tmp_path / "m.parquet"))
    pipe = TilePipeline(from_dict(DataConfig, {"split": "test", "optical": "cloudy", "clouds": {"mode": "auto"}},
                                  "data"), frame=frame)
    assert len(pipe.frame) == 1
    spec = {**STUDENT, "num_classes": 6, "norm": "batch"}
    torch.manual_seed(0)
    state = build_model(spec).state_dict()
    cols = predict(pipe, spec, state, "both", "segmentation", 6, task_config={"window": 160, "stride": 80},
                   where="driver")
    assert cols["pred"].shape == (1, 90, 90) and cols["pred"].max() < 6
    result = build_task("segmentation", 6, pipe.classes).evaluate(cols)

    # independent: the labelled pixels from the landcover file, the cloudy ones from the .npy mask
    row = pipe.frame.iloc[0]
    with rasterio.open(row["label_uri"]) as src:
        codes = src.read(1)
    labelled = np.isin(codes, list(DESIGN_WORLDCOVER))
    mask = np.load(row["cloud_mask_uri"])
    near = mask[np.arange(90) * 300 // 90][:, np.arange(90) * 300 // 90]
    assert result["overall"]["n"] == int(labelled.sum())
    assert result["pixels"]["cloudy"]["n"] == int((labelled & near).sum())
    assert result["pixels"]["clear"]["n"] == int((labelled & ~near).sum())
    assert result["overall"]["miou"] is not None and 0 <= result["overall"]["miou"] <= 1


# --- the method on the engine ------------------------------------------------------------------------

TINY_TRAIN = {"epochs": 2, "batch_size": 8, "val_every": 2}


def _tiny_cfg(tmp):
    from raypipe.engine import resolve
    from raypipe.methods import get_method

    method = get_method("cloudseg")
    extra = {"data": {"benchmark": {"out": str(tmp / "m3m"), "tiles": 60, "size": 60, "scene_size": 4}},
             "tracking": {"uri": f"sqlite:///{tmp}/mlflow.db"}, "ray": {"storage_path": str(tmp / "runs")},
             "task": {"window": 40, "stride": 20}, "stages": {s.name: {"train": TINY_TRAIN} for s in method.stages}}
    return method, resolve(method, extra=extra, overrides=["data.pipeline.augment.crop=40"])


def test_teacher_and_student_on_the_engine_then_reused(tmp_path, ray_session):
    import mlflow

    from raypipe.engine.run import run_method

    method, cfg = _tiny_cfg(tmp_path)
    first = run_method(method, cfg, only={"teacher", "student"})
    assert not any(o.reused for o in first.stages.values())
    student = first.stages["student"]
    res = student.evaluations["cloudy_test"]
    n = res["overall"]["n"]
    assert n == res["pixels"]["clear"]["n"] + res["pixels"]["cloudy"]["n"] > 0
    assert res["pixels"]["cloudy"]["n"] > 0 and res["overall"]["miou"] is not None
    assert n == sum(res["buckets"][b]["n"] for b in ("clear", "partly", "cloudy"))
    # the generated benchmark's masks are the simulator's: the student reads them (oracle), the teacher does not
    assert "masks" in student.oracle and "masks" not in first.stages["teacher"].oracle
    assert "[oracle: cloud-free input]" in first.table and "CloudSeg student" in first.table
    client = mlflow.tracking.MlflowClient(cfg.tracking.uri)
    files = [a.path for a in client.list_artifacts(student.run_id, "eval/cloudy_test")]
    assert "eval/cloudy_test/examples.png" in files
    metrics = client.get_run(student.run_id).data.metrics
    assert metrics["cloudy_test/pixels/cloudy/n"] == res["pixels"]["cloudy"]["n"] and "cloudy_test/miou" in metrics
    assert "train/kd" in metrics and "train/cr" in metrics

    again = run_method(method, cfg, only={"teacher", "student"})
    assert all(o.reused for o in again.stages.values())
    assert again.stages["student"].run_id == student.run_id


def test_whu_layout_student_view_simulates_clouds_on_the_clear_acquisition(tmp_path, ray_session):
    """WHU-OPT-SAR has one (clear) acquisition: with clouds.mode=simulate the student's "both" view gets the
    simulated cloudy image as optical and the scene's own pixels as optical_clear, equal outside the mask."""
    from raypipe.data.manifest import read_manifest
    from raypipe.data.pipeline import DataConfig, TilePipeline
    from raypipe.data.prepare import prepare
    from raypipe.synthetic.segmentation import generate_segmentation

    root = tmp_path / "whu"
    generate_segmentation(str(root), layout="whu-opt-sar", scenes=5, scene_height=100, scene_width=100, tile_size=50)
    prepare("whu-opt-sar", str(root), str(tmp_path / "w.parquet"), tile_size=50)
    frame = read_manifest(str(tmp_path / "w.parquet"))
    cfg = from_dict(DataConfig, {"optical": "both", "clouds": {"mode": "simulate", "preset": "thick"}}, "data")
    out = TilePipeline(cfg, frame=frame).read_rows()
    mask = out["cloud_mask"].astype(bool)
    assert out["optical"].shape == out["optical_clear"].shape == (len(frame), 4, 50, 50)
    assert out["sar"].shape == (len(frame), 1, 50, 50) and out["label_map"].shape == (len(frame), 50, 50)
    assert 0 < mask.mean() < 1
    diff = np.abs(out["optical"] - out["optical_clear"]).max(axis=1)
    assert diff[mask].mean() > 10 * max(diff[~mask].mean(), 1e-6)  # clouds inside the mask, (almost) none outside
    # the clear acquisition is the scene itself: GF-1 uint8 / 255
    row = frame.iloc[0]
    with rasterio.open(row["optical_uri"]) as src:
        raw = src.read(window=((int(row["row"]), int(row["row"]) + 50), (int(row["col"]), int(row["col"]) + 50)))
    i = int(np.flatnonzero(out["sample_id"] == row["sample_id"])[0])
    np.testing.assert_allclose(out["optical_clear"][i], raw / 255.0, atol=1e-6)


def test_a_cloudseg_sweep_optimises_the_students_val_miou():
    from raypipe.tune.space import load_space
    from raypipe.tune.sweep import Sweep

    sweep = Sweep.build("cloudseg", load_space(str(Path(__file__).resolve().parents[1] / "configs" / "sweeps" / "cloudseg_student.yaml")), metric="val_labels")
    assert sweep.objective_stage == "student"
    assert sweep.objective_prefix == "cloudy_val" and sweep.metric_key == "val/miou"
