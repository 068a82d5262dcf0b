"""Data-parallel training: 2 workers give the model 1 worker gives; ranks stay identical; a killed
worker is replaced and training resumes from the latest checkpoint."""

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raypipe.config import from_dict
from raypipe.models import build_model
from raypipe.objectives import Supervised

SPEC = {"kind": "resnet", "depth": 10, "width": 4, "in_channels": 3, "num_classes": 5, "stem": "small",
        "norm": "group"}
GLOBAL_BATCH = 8


def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(GLOBAL_BATCH, 3, 12, 12, generator=g), torch.randint(0, 5, (GLOBAL_BATCH,), generator=g)


def one_step(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss, _ = Supervised(None, inputs="optical").loss(model, {}, {"optical": x, "label": y})
    opt.zero_grad()
    loss.backward()
    opt.step()


def _worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(build_model(SPEC))
    x, y = data()
    share = GLOBAL_BATCH // world
    one_step(model, x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share])
    torch.save(model.module.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_two_workers_equal_one_worker_and_ranks_stay_identical(tmp_path):
    torch.manual_seed(0)
    single = build_model(SPEC)
    one_step(single, *data())
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    for name, p in single.state_dict().items():
        assert torch.equal(r0[name], r1[name]), f"{name} differs across ranks"
        torch.testing.assert_close(r0[name], p, rtol=1e-5, atol=1e-6, msg=f"{name}: 2 workers != 1 worker")
    moved = sum(float((r0[n] - p).abs().sum()) for n, p in build_model(SPEC).state_dict().items())
    assert moved > 0  # the step did change the model


def test_ray_train_two_workers_survive_a_killed_worker(tmp_path, ray_session):
    """2 DDP workers on Ray Train; rank 0's process dies at epoch 1; Ray Train restarts the group,
    which resumes from the epoch-0 checkpoint, keeps ranks identical and finishes."""
    from raypipe.engine.config import RayConfig, TrainConfig
    from raypipe.engine.runner import fit

    train = TrainConfig(epochs=2, batch_size=8, fail_once_at_epoch=1, max_failures=1)
    job, spec = tiny_job(tmp_path, train)
    ray_cfg = RayConfig(num_workers=2, storage_path=str(tmp_path / "runs"))
    state, metrics = fit(job, ray_cfg, "recovery-test")
    assert os.path.exists(tmp_path / "runs" / "recovery-test.failed-once")  # the failure did happen
    assert metrics["epoch"] == 1 and metrics["start_epoch"] == 1  # resumed after epoch 0, not from scratch
    assert metrics["ddp/param_spread"] == 0.0
    model = build_model(spec)
    model.load_state_dict(state)
    assert np.isfinite(metrics["train/loss"])


def tiny_job(tmp_path, train):
    """A supervised stage on a 40-tile generated benchmark (source domain, clear optical)."""
    from raypipe.data.pipeline import DataConfig, TilePipeline
    from raypipe.data.prepare import prepare
    from raypipe.engine.runner import StageJob
    from raypipe.synthetic import generate

    if not (tmp_path / "m.parquet").exists():
        generate(str(tmp_path / "b"), tiles=40, size=16, seed=0, scene_size=10, quiet=True)
        prepare("synthetic", str(tmp_path / "b"), str(tmp_path / "m.parquet"))

    def pipe(split):
        cfg = {"manifest": str(tmp_path / "m.parquet"), "domain": "source", "split": split, "optical": "clear",
               "use_sar": False, "clouds": {"mode": "none"}, "rows_per_block": 4}
        return TilePipeline(from_dict(DataConfig, cfg, "data"))

    spec = {**SPEC, "in_channels": 10, "num_classes": 10}
    job = StageJob("source", Supervised(None, inputs="optical"), spec, train, pipe("train"), pipe("val"), {},
                   "classification", 10, [str(i) for i in range(10)])
    return job, spec


def test_deterministic_runs_repeat_exactly_and_shuffling_reorders(tmp_path, ray_session):
    """``train.deterministic``: Ray Data keeps the block order and the per-epoch shuffle is seeded, so
    the same seed gives the same model; a run without the shuffle buffer sees another order, so its
    model differs (the shuffle is really applied)."""
    from dataclasses import replace

    from raypipe.engine.config import RayConfig, TrainConfig
    from raypipe.engine.runner import fit

    train = TrainConfig(epochs=2, batch_size=4, deterministic=True, shuffle_buffer=16)
    job, _ = tiny_job(tmp_path, train)
    ray_cfg = RayConfig(num_workers=1, storage_path=str(tmp_path / "runs"))
    a, _ = fit(job, ray_cfg, "det-a")
    b, _ = fit(job, ray_cfg, "det-b")
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs between two deterministic runs"
    unshuffled, _ = fit(replace(job, train=replace(train, shuffle_buffer=0)), ray_cfg, "det-unshuffled")
    assert any(not torch.equal(a[n], unshuffled[n]) for n in a if a[n].is_floating_point())


def test_in_process_training_equals_a_worker_group_checkpoints_and_resumes(tmp_path, ray_session):
    """``ray.training: driver`` (the loop in this process, without Ray Train) trains the model a one-worker group trains,
    persists each epoch's checkpoint under the run's folder (the newest 2), calls the user callbacks
    after every report, and a second fit of the same run name resumes after the last saved epoch."""
    from dataclasses import replace

    import ray.train

    from raypipe.engine.config import RayConfig, TrainConfig
    from raypipe.engine.runner import fit, training_on

    train = TrainConfig(epochs=3, batch_size=4, deterministic=True, shuffle_buffer=16)
    job, _ = tiny_job(tmp_path, train)
    workers = RayConfig(num_workers=1, storage_path=str(tmp_path / "runs"), training="workers")
    driver = RayConfig(num_workers=1, storage_path=str(tmp_path / "runs"), training="driver")
    assert training_on(RayConfig(num_workers=1), train) == "driver"  # auto: one CPU worker, one node
    assert training_on(RayConfig(num_workers=2), train) == "workers"
    assert training_on(RayConfig(num_workers=1), replace(train, fail_once_at_epoch=0)) == "workers"

    seen = []

    class Record(ray.train.UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            seen.append(metrics[0]["epoch"])

    a, ma = fit(job, workers, "group")
    b, mb = fit(job, driver, "local", callbacks=[Record()])
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=f"{name}: in-process != worker group")
    assert ma["epoch"] == mb["epoch"] == 2 and seen == [0, 1, 2]
    saved = sorted(p.name for p in (tmp_path / "runs" / "local").glob("checkpoint_epoch_*") if (p / "state.pt").exists())
    assert saved == ["checkpoint_epoch_000001", "checkpoint_epoch_000002"]

    # the same run name again, two more epochs: it continues after epoch 2 (a driver that died in the stage)
    c, mc = fit(replace(job, train=replace(train, epochs=5)), driver, "local")
    assert mc["start_epoch"] == 3 and mc["epoch"] == 4
    assert any(not torch.equal(c[n], b[n]) for n in b if b[n].is_floating_point())

    # a truncated latest checkpoint: an error naming it, never a silent restart from epoch 0
    latest = tmp_path / "runs" / "local" / "checkpoint_epoch_000004" / "state.pt"
    latest.write_bytes(latest.read_bytes()[:100])
    with pytest.raises(Exception, match="checkpoint_epoch_000004"):
        fit(replace(job, train=replace(train, epochs=6)), driver, "local")


def test_in_process_training_needs_one_cpu_worker():
    from raypipe.engine.config import RayConfig
    from raypipe.errors import ConfigError

    with pytest.raises(ConfigError, match=r"ray\.training"):
        from_dict(RayConfig, {"training": "driver", "num_workers": 2}, "ray")
    with pytest.raises(ConfigError, match=r"ray\.training"):
        from_dict(RayConfig, {"training": "driver", "use_gpu": True}, "ray")
    assert from_dict(RayConfig, {"training": "workers", "num_workers": 2}, "ray").training == "workers"
