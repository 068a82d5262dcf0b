"""MTTS end to end on a tiny generated benchmark: stages on Ray Train, lineage and reuse in MLflow,
configuration errors before any training."""

import time

import mlflow
import pytest

from raypipe.engine import resolve as resolve_method
from raypipe.engine.run import run_method
from raypipe.errors import ConfigError
from raypipe.methods import get_method

MTTS = get_method("mtts")


def resolve(**kw):
    return resolve_method(MTTS, **kw)


def run_mtts(cfg):
    return run_method(MTTS, cfg)

TINY_MODEL = {"kind": "resnet", "depth": 10, "width": 4, "stem": "small", "norm": "group"}
TINY_TRAIN = {"epochs": 1, "batch_size": 16, "deterministic": True}  # repeatable: the leakage guard compares runs


def tiny(tmp_path, **extra_stage):
    stages = {s: {"model": dict(TINY_MODEL), "train": dict(TINY_TRAIN)} for s in ("source", "aux_optical", "aux_sar")}
    stages["target"] = {"model": {"kind": "multimodal", "optical": {k: v for k, v in TINY_MODEL.items() if k != "kind"},
                                  "sar": {k: v for k, v in TINY_MODEL.items() if k != "kind"}},
                        "train": dict(TINY_TRAIN)}
    for k, v in extra_stage.items():
        stages[k].update(v)
    return {"data": {"benchmark": {"out": str(tmp_path / "bench"), "tiles": 60, "size": 16, "scene_size": 10}},
            "stages": stages,
            "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "test-mtts"},
            "ray": {"storage_path": str(tmp_path / "runs")}}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, ray_session):
    tmp = tmp_path_factory.mktemp("mtts")
    t0 = time.perf_counter()
    result = run_mtts(resolve(extra=tiny(tmp)))
    return tmp, result, time.perf_counter() - t0


def test_all_stages_train_and_nest_under_one_pipeline_run(first_run):
    tmp, result, _ = first_run
    assert list(result.stages) == ["source", "aux_optical", "aux_sar", "target"]
    assert not any(o.reused for o in result.stages.values())
    client = mlflow.MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    for name, outcome in result.stages.items():
        run = client.get_run(outcome.run_id)
        assert run.data.tags["mlflow.parentRunId"] == result.parent_run_id
        assert run.data.tags["raypipe.stage_key"] == outcome.key
        assert run.info.status == "FINISHED"
        assert "target_test/oa" in run.data.metrics
        params = run.data.params  # the stage's knobs under the same dotted paths as --set
        assert params and all(k.startswith(("method", "stage.", f"stages.{name}.", "data.")) for k in params), \
            sorted(params)[:5]
        assert f"stages.{name}.train.lr" in params and f"stages.{name}.model.num_classes" in params
        assert not [k for k in run.data.metrics if k.startswith("eval/")]  # nothing per-epoch on test
        history = client.get_metric_history(outcome.run_id, "val/oa")
        assert [m.step for m in history] == [0]  # per-epoch metrics logged by the rank-0 worker
    # teachers are recorded as inputs: the target stage points at the three runs it distilled from
    tags = client.get_run(result.stages["target"].run_id).data.tags
    assert tags["raypipe.input.source"] == result.stages["source"].run_id
    assert tags["raypipe.input.aux_sar"] == result.stages["aux_sar"].run_id
    aux = client.get_run(result.stages["aux_optical"].run_id).data.metrics
    assert any(k.startswith("pseudo/") for k in aux)  # pseudo-label pass statistics
    arts = [a.path for a in client.list_artifacts(result.stages["target"].run_id, "eval/target_test")]
    assert any(p.endswith("confusion.png") for p in arts)
    assert "source-only" in result.table and "target f_T" in result.table


def test_rerun_reuses_every_stage_and_force_retrains_one(first_run):
    tmp, first, first_seconds = first_run
    t0 = time.perf_counter()
    again = run_mtts(resolve(extra=tiny(tmp)))
    seconds = time.perf_counter() - t0
    assert all(o.reused for o in again.stages.values())
    assert {s: o.run_id for s, o in again.stages.items()} == {s: o.run_id for s, o in first.stages.items()}
    assert seconds < first_seconds / 3
    forced = run_mtts(resolve(extra={**tiny(tmp), "force_stages": ["target"]}))
    assert [s for s, o in forced.stages.items() if not o.reused] == ["target"]
    assert forced.stages["target"].run_id != first.stages["target"].run_id
    client = mlflow.MlflowClient(f"sqlite:///{tmp}/mlflow.db")  # and it really trained (epochs ran, from 0)
    assert [m.value for m in client.get_metric_history(forced.stages["target"].run_id, "start_epoch")] == [0.0]
    # a change in one stage's config retrains that stage and everything downstream of it; the target
    # stage here takes its teachers' logits precomputed by Ray Data batch inference instead of in the loop
    changed = run_mtts(resolve(extra=tiny(tmp, aux_sar={"filter": {"threshold": 0.3}},
                                          target={"train": {**TINY_TRAIN, "teacher_outputs": "precomputed"}})))
    assert [s for s, o in changed.stages.items() if not o.reused] == ["aux_sar", "target"]
    client = mlflow.MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    m = client.get_run(changed.stages["target"].run_id).data.metrics
    assert "target_test/oa" in m and m["train/w_opt_mean"] > 0  # IRM weights were computed from joined logits


def test_bad_config_fails_before_training(first_run):
    tmp, result, _ = first_run
    with pytest.raises(ConfigError) as e:
        resolve(extra=tiny(tmp), overrides=["stages.target.irm.mdoe=off"])
    assert e.value.field == "stages.target.irm.mdoe"
    cfg = resolve(extra=tiny(tmp, aux_optical={"from_run": "0123456789abcdef0123456789abcdef"}))
    with pytest.raises(ConfigError) as e:
        run_mtts(cfg)
    assert e.value.field == "stages.aux_optical.from_run"
    bad_bands = tiny(tmp, aux_sar={"model": {**TINY_MODEL, "in_channels": 3}})
    with pytest.raises(ConfigError) as e:
        run_mtts(resolve(extra=bad_bands))
    assert e.value.field == "stages.aux_sar.model.in_channels"
    # a from_run pointing at a real finished stage run is accepted and reused as that stage
    ok = run_mtts(resolve(extra=tiny(tmp, source={"from_run": result.stages["source"].run_id})))
    assert ok.stages["source"].reused and ok.stages["source"].run_id == result.stages["source"].run_id


def test_evaluate_job_on_any_manifest(first_run, capsys):
    import importlib.util

    from conftest import REPO

    tmp, result, _ = first_run
    spec = importlib.util.spec_from_file_location("evaluate_job", REPO / "jobs" / "evaluate.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    rc = job.main(["--run-id", result.stages["target"].run_id, "--manifest", str(tmp / "bench" / "manifest.parquet"),
                   "--domain", "target", "--split", "test", "--tracking-uri", f"sqlite:///{tmp}/mlflow.db",
                   "--experiment", "test-mtts", "--json", str(tmp / "eval.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "overall" in out and "cloudy" in out
    import json

    evaluated = json.load(open(tmp / "eval.json"))
    logged = result.stages["target"].evaluations["target_test"]
    assert evaluated["overall"]["oa"] == logged["overall"]["oa"]  # same checkpoint, same data, same metric
    rc = job.main(["--run-id", "0" * 32, "--manifest", str(tmp / "bench" / "manifest.parquet"),
                   "--tracking-uri", f"sqlite:///{tmp}/mlflow.db", "--experiment", "test-mtts"])
    assert rc == 2 and "--run-id" in capsys.readouterr().err


@pytest.mark.parametrize("override", [
    "stages.source.train.lr=0",
    "stages.aux_optical.filter.threshold=1.5",
    "stages.aux_sar.filter.temperature=0",
    "stages.target.irm.alpha=-1",
])
def test_one_bad_value_per_stage_fails_at_resolve_naming_its_path(override):
    """Every knob is validated on the driver as the config is built, before any data or Ray work."""
    with pytest.raises(ConfigError) as e:
        resolve(overrides=[override])
    assert e.value.field == override.split("=")[0]


def test_bad_value_exits_before_any_ray_train_run(tmp_path):
    """``jobs/mtts.py --set stages.target.irm.alpha=-1`` exits non-zero within 60 s, naming the field,
    before Ray starts (so no stage trains)."""
    import subprocess
    import sys

    from conftest import REPO

    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "mtts.py"), "--set", "stages.target.irm.alpha=-1",
                           "--log-dir", str(tmp_path / "logs")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "stages.target.irm.alpha" in proc.stderr
    assert time.perf_counter() - t0 < 60
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_no_target_labels_reach_training(first_run):
    """Leakage guard: permute the target training labels in the manifest and run again, deterministically.
    Every stage that trains on the target (the auxiliary models and the target model) must come out
    bit-identical: labels are read by evaluation only."""
    import numpy as np
    import torch

    from raypipe.data.manifest import read_manifest, write_manifest
    from raypipe.tracking import Lineage

    tmp, result, _ = first_run
    frame = read_manifest(str(tmp / "bench" / "manifest.parquet"))
    rows = (frame["domain"] == "target") & (frame["split"] == "train")
    permuted = frame.copy()
    labels = permuted.loc[rows, "label"].to_numpy()
    shuffled = np.random.default_rng(0).permutation(labels)
    assert (shuffled != labels).sum() >= len(labels) // 2  # really permuted
    permuted.loc[rows, "label"] = shuffled
    permuted.attrs = frame.attrs
    write_manifest(permuted, str(tmp / "permuted.parquet"))
    cfg = tiny(tmp, source={"from_run": result.stages["source"].run_id})  # source labels are untouched
    cfg["data"]["source_manifest"] = str(tmp / "permuted.parquet")
    other = run_mtts(resolve(extra=cfg))
    # the data hash changed: every target-side stage retrained
    assert [s for s, o in other.stages.items() if not o.reused] == ["aux_optical", "aux_sar", "target"]
    lineage = Lineage(f"sqlite:///{tmp}/mlflow.db", "test-mtts")
    for stage in ("aux_optical", "aux_sar", "target"):
        a = lineage.load_checkpoint(result.stages[stage].run_id)["state_dict"]
        b = lineage.load_checkpoint(other.stages[stage].run_id)["state_dict"]
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), f"{stage}.{name} depends on the target training labels"
