"""MLflow lineage against a real sqlite store in a temporary folder (no server).

One store per module (creating a sqlite MLflow database runs its migrations, ~1-2 s), one
experiment per test so tests do not see each other's runs.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from raypipe.errors import ConfigError
from raypipe.metrics import evaluate
from raypipe.models import build_model
from raypipe.tracking import Lineage, RunHandle, config_params, resolve_tracking_uri, stage_key
from raypipe.tracking.lineage import PARAM_VALUE_LIMIT, TRUNCATION_MARKER

SPEC = {"kind": "resnet", "depth": 10, "width": 4, "in_channels": 3, "num_classes": 5, "stem": "small"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sqlite store created the default way (no URI, cwd = a temp folder)."""
    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.chdir(root)
        lin = Lineage(None, experiment="default-location")
    # MLflow's default for a sqlite store: <cwd>/mlruns/<experiment id>, stored absolute
    exp = lin.client.get_experiment(lin.experiment_id)
    assert lin.tracking_uri == f"sqlite:///{root}/mlflow.db"
    assert exp.artifact_location == str(root / "mlruns" / lin.experiment_id)  # a path, not file://
    return root, lin.tracking_uri


@pytest.fixture
def lineage(store, request):
    root, uri = store
    name = f"{request.node.name}-{uuid.uuid4().hex[:6]}"
    return Lineage(uri, experiment=name, artifact_location=str(root / "artifacts" / name))


def _artifact_text(lin: Lineage, run_id: str, path: str) -> str:
    from mlflow.artifacts import download_artifacts

    return Path(download_artifacts(run_id=run_id, artifact_path=path, tracking_uri=lin.tracking_uri)).read_text()


# --- pure functions ---------------------------------------------------------------------------


def test_stage_key_is_stable_and_sensitive():
    cfg = {"lr": 0.1, "model": {"depth": 18, "width": 64}, "epochs": 3, "bands": [1, 2]}
    same = {"bands": [1, 2], "epochs": 3, "model": {"width": 64, "depth": 18}, "lr": 0.1}
    k = stage_key("teacher", cfg, {"a": "k1", "b": "k2"}, "d0")
    assert len(k) == 16 and int(k, 16) >= 0
    assert k == stage_key("teacher", same, {"b": "k2", "a": "k1"}, "d0")
    assert k == stage_key("teacher", tuple_cfg := {**same, "bands": (1, 2)}, {"a": "k1", "b": "k2"}, "d0")
    assert tuple_cfg["bands"] == (1, 2)
    variants = [
        stage_key("student", cfg, {"a": "k1", "b": "k2"}, "d0"),
        stage_key("teacher", {**cfg, "lr": 0.2}, {"a": "k1", "b": "k2"}, "d0"),
        stage_key("teacher", {**cfg, "model": {"depth": 18, "width": 32}}, {"a": "k1", "b": "k2"}, "d0"),
        stage_key("teacher", {**cfg, "bands": [2, 1]}, {"a": "k1", "b": "k2"}, "d0"),
        stage_key("teacher", cfg, {"a": "k1", "b": "k3"}, "d0"),
        stage_key("teacher", cfg, {"a": "k1"}, "d0"),
        stage_key("teacher", cfg, {"a": "k1", "b": "k2"}, "d1"),
    ]
    assert len(set(variants + [k])) == len(variants) + 1


def test_resolve_tracking_uri(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path}/mlflow.db"
    assert resolve_tracking_uri("sqlite:///rel/x.db") == f"sqlite:///{tmp_path}/rel/x.db"
    assert resolve_tracking_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert resolve_tracking_uri("runs.sqlite") == f"sqlite:///{tmp_path}/runs.sqlite"
    assert resolve_tracking_uri("store") == f"sqlite:///{tmp_path}/store/mlflow.db"
    assert resolve_tracking_uri("mlruns") == (tmp_path / "mlruns").as_uri()
    assert resolve_tracking_uri("file:old") == (tmp_path / "old").as_uri()
    for uri in ("http://127.0.0.1:5001", "https://mlflow.example.org", "databricks", "databricks://prof",
                "postgresql://u@h/db"):
        assert resolve_tracking_uri(uri) == uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path}/env.db"
    with pytest.raises(ConfigError) as e:
        resolve_tracking_uri("sqlite://", field="tracking.uri")
    assert e.value.field == "tracking.uri"


def test_config_params_flatten_stringify_truncate():
    p = config_params({"a": {"b": 1, "c": [1, 2]}, "long": "x" * 7000, "bad key!": None, "t": (1.5,)})
    assert p["a.b"] == "1" and p["a.c"] == "[1, 2]" and p["bad key_"] == "None" and p["t"] == "[1.5]"
    assert len(p["long"]) == PARAM_VALUE_LIMIT
    assert p["long"].endswith(TRUNCATION_MARKER.format(n=7000))


# --- runs ---------------------------------------------------------------------------------------


def test_pipeline_and_stage_runs_nest(lineage):
    cfg = {"name": "kd", "notes": "n" * 7000,                      # > 6000: truncated, not an error
           "wide": {f"p{i:03d}": i for i in range(130)},           # > 100 params: chunked
           "stages": {"teacher": {"epochs": 2, "lr": 0.1, "bands": [1, 2, 3]}}}
    with lineage.pipeline_run("kd-pipeline", cfg, tags={"team": "eo"}) as parent:
        with lineage.stage_run(parent.run_id, "teacher", "abc123", cfg["stages"]["teacher"],
                               inputs={"prior": "r0"}, data_hash="d" * 64) as st:
            st.log_metrics({"train/loss": 1.0, "skip": None}, step=0)
            st.log_dict({"kept": 10, "by_class": {"0": 4}}, "pseudo_labels/stats.json")
        assert parent.handle.run_id == parent.run_id

    c = lineage.client
    p, s = c.get_run(parent.run_id), c.get_run(st.run_id)
    assert p.info.status == "FINISHED" and s.info.status == "FINISHED"
    assert p.data.tags["raypipe.kind"] == "pipeline" and p.data.tags["team"] == "eo"
    assert p.data.tags["raypipe.stage_run.teacher"] == st.run_id
    assert lineage.stage_runs(parent.run_id) == {"teacher": st.run_id}
    assert p.data.params["wide.p129"] == "129" and len(p.data.params) == 2 + 130 + 3
    assert p.data.params["notes"].endswith(TRUNCATION_MARKER.format(n=7000))
    assert len(p.data.params["notes"]) == PARAM_VALUE_LIMIT
    full = yaml.safe_load(_artifact_text(lineage, parent.run_id, "config.yaml"))
    assert full["notes"] == "n" * 7000 and full["stages"]["teacher"]["bands"] == [1, 2, 3]

    t = s.data.tags
    assert t["mlflow.parentRunId"] == parent.run_id
    assert (t["raypipe.kind"], t["raypipe.stage"], t["raypipe.stage_key"]) == ("stage", "teacher", "abc123")
    assert t["raypipe.data_hash"] == "d" * 64 and t["raypipe.input.prior"] == "r0"
    assert s.data.params == {"epochs": "2", "lr": "0.1", "bands": "[1, 2, 3]"}
    assert s.data.metrics == {"train/loss": 1.0}
    assert json.loads(_artifact_text(lineage, st.run_id, "pseudo_labels/stats.json"))["kept"] == 10
    lin = json.loads(_artifact_text(lineage, st.run_id, "lineage.json"))
    assert lin["inputs"] == {"prior": "r0"} and lin["parent_run_id"] == parent.run_id
    # children are searchable by parent, the MLflow UI way
    kids = c.search_runs([lineage.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.run_id}'")
    assert [r.info.run_id for r in kids] == [st.run_id]


def test_exceptions_end_runs_failed(lineage):
    with pytest.raises(RuntimeError, match="boom"):
        with lineage.pipeline_run("p", {"a": 1}) as parent:
            with lineage.stage_run(parent.run_id, "teacher", "k1", {"a": 1}) as st:
                raise RuntimeError("boom")
    for rid in (parent.run_id, st.run_id):
        run = lineage.client.get_run(rid)
        assert run.info.status == "FAILED"
        assert run.data.tags["raypipe.error"] == "RuntimeError: boom"
    assert "raypipe.stage_run.teacher" not in lineage.client.get_run(parent.run_id).data.tags


def test_find_stage_reuses_only_finished_runs_with_the_key(lineage):
    assert lineage.find_stage("teacher", "k1") is None
    with lineage.pipeline_run("p1", {}) as parent:
        with lineage.stage_run(parent.run_id, "teacher", "k1", {"x": 1}):
            pass
        first = lineage.find_stage("teacher", "k1")
        assert first is not None
        with pytest.raises(ValueError):
            with lineage.stage_run(parent.run_id, "teacher", "k1", {"x": 1}):
                raise ValueError("crash")           # newer, FAILED: must not be reused
        with lineage.stage_run(parent.run_id, "teacher", "k2", {"x": 2}):
            pass                                    # other key
        with lineage.stage_run(parent.run_id, "student", "k1", {"x": 1}):
            pass                                    # other stage, same key
    assert lineage.find_stage("teacher", "k1") == first
    assert lineage.find_stage("teacher", "k3") is None

    with lineage.pipeline_run("p2", {}) as parent2:
        marker = lineage.reuse_stage(parent2.run_id, "teacher", "k1", first)
    tags = lineage.client.get_run(parent2.run_id).data.tags
    assert tags["raypipe.reused.teacher"] == first and tags["raypipe.stage_run.teacher"] == first
    m = lineage.client.get_run(marker)
    assert m.info.status == "FINISHED" and m.data.tags["raypipe.reused_from"] == first
    assert m.data.tags["mlflow.parentRunId"] == parent2.run_id
    assert lineage.find_stage("teacher", "k1") == first      # the marker is never a reuse source

    with lineage.pipeline_run("p3", {}) as parent3:          # --force-stage: a newer finished run wins
        with lineage.stage_run(parent3.run_id, "teacher", "k1", {"x": 1}) as again:
            pass
    assert lineage.find_stage("teacher", "k1") == again.run_id


def test_checkpoint_round_trip_rebuilds_the_model(lineage):
    torch.manual_seed(0)
    model = build_model(SPEC).eval()
    x = torch.randn(2, 3, 16, 16)
    with lineage.pipeline_run("p", {}) as parent:
        with lineage.stage_run(parent.run_id, "teacher", "k", {"model": SPEC}) as st:
            path = st.log_checkpoint(model.state_dict(), SPEC, extra={"epoch": 3, "val_oa": 0.9})
            # a DDP-wrapped state dict (Ray prepare_model) is stored without the "module." prefix
            ddp = {f"module.{k}": v for k, v in model.state_dict().items()}
            st.log_checkpoint(ddp, SPEC, name="ema")
    assert path == "model/state.pt"
    assert json.loads(_artifact_text(lineage, st.run_id, "model/spec.json"))["model_spec"] == SPEC
    lineage.check_run(st.run_id, "stages.student.teacher_run", stage="teacher")
    loaded, ckpt = lineage.load_model(st.run_id, field="stages.student.teacher_run")
    assert ckpt["extra"] == {"epoch": 3, "val_oa": 0.9} and ckpt["model_spec"] == SPEC
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        ema, _ = lineage.load_model(st.run_id, name="ema")
        assert torch.equal(ema(x), model(x))


def test_log_evaluation_writes_metrics_json_and_png(lineage):
    rng = np.random.default_rng(0)
    target = rng.integers(0, 3, 60)
    pred = np.where(rng.random(60) < 0.7, target, rng.integers(0, 3, 60))
    clouds = rng.random(60)
    result = evaluate(pred, target, clouds, 3, ["forest", "water", "urban area"])
    with lineage.pipeline_run("p", {}) as parent:
        with lineage.stage_run(parent.run_id, "student", "k", {}) as st:
            logged = st.log_evaluation(result, prefix="test")
    run = lineage.client.get_run(st.run_id)
    assert run.data.metrics["test/oa"] == pytest.approx(result["overall"]["oa"])
    assert run.data.metrics["test/kappa"] == pytest.approx(result["overall"]["kappa"])
    for bucket in ("clear", "partly", "cloudy"):
        assert run.data.metrics[f"test/{bucket}/n"] == result["buckets"][bucket]["n"]
    assert "test/f1/urban_area" in run.data.metrics
    assert set(logged) <= set(run.data.metrics)
    files = {f.path for f in lineage.client.list_artifacts(st.run_id, "eval/test")}
    assert files == {"eval/test/result.json", "eval/test/confusion.png"}
    back = json.loads(_artifact_text(lineage, st.run_id, "eval/test/result.json"))
    assert back["overall"]["confusion"] == result["overall"]["confusion"]
    from mlflow.artifacts import download_artifacts

    png = download_artifacts(run_id=st.run_id, artifact_path="eval/test/confusion.png",
                             tracking_uri=lineage.tracking_uri)
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_check_run_names_the_field(lineage):
    field = "stages.student.teacher_run"
    with lineage.pipeline_run("p", {}) as parent:
        with pytest.raises(RuntimeError):
            with lineage.stage_run(parent.run_id, "teacher", "k", {}) as failed:
                failed.log_checkpoint(build_model(SPEC).state_dict(), SPEC)
                raise RuntimeError("diverged")
        with lineage.stage_run(parent.run_id, "teacher", "k2", {}) as no_ckpt:
            pass
        marker = lineage.reuse_stage(parent.run_id, "teacher", "k2", no_ckpt.run_id)
    cases = {
        uuid.uuid4().hex: "does not exist",
        "not a run id": "does not exist",
        "": "must be an MLflow run id",
        failed.run_id: "FAILED",
        no_ckpt.run_id: "no checkpoint",
        marker: "only marks a reuse",
    }
    for run_id, problem in cases.items():
        with pytest.raises(ConfigError) as e:
            lineage.check_run(run_id, field)
        assert e.value.field == field and problem in e.value.problem, (run_id, e.value)
    with pytest.raises(ConfigError, match="expected 'student'") as e:
        lineage.check_run(no_ckpt.run_id, field, stage="student")
    with pytest.raises(ConfigError) as e:
        lineage.load_model(uuid.uuid4().hex, field=field)
    assert e.value.field == field


def test_run_handle_pickles_and_logs_from_another_process(lineage, tmp_path):
    with lineage.pipeline_run("p", {}) as parent:
        with lineage.stage_run(parent.run_id, "teacher", "k", {}) as st:
            handle = pickle.loads(pickle.dumps(st.handle))
            assert handle == RunHandle(lineage.tracking_uri, st.run_id)
            handle.log_metrics({"train/loss": torch.tensor(0.5), "train/acc": np.float32(0.25)}, step=1)
            # a worker in another working directory, given only the pickled handle
            code = ("import pickle, sys; h = pickle.loads(sys.stdin.buffer.read()); "
                    "[h.log_metrics({'train/loss': 1.0 / (e + 1)}, step=e) for e in (2, 3)]")
            env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
            subprocess.run([sys.executable, "-c", code], input=pickle.dumps(handle), cwd=tmp_path,
                           env=env, check=True, timeout=60)
    hist = lineage.client.get_metric_history(st.run_id, "train/loss")
    assert sorted((m.step, m.value) for m in hist) == [(1, 0.5), (2, pytest.approx(1 / 3)), (3, 0.25)]
    assert lineage.client.get_run(st.run_id).data.metrics["train/acc"] == 0.25
    assert not (tmp_path / "mlflow.db").exists()
