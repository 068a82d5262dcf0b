"""Checkpoints are tensors (``state.pt``, loaded with ``weights_only=True``) plus a JSON spec
(``spec.json``), against a real sqlite MLflow store in a temporary folder; and secrets never
reach MLflow params.

Every broken checkpoint must raise ``CheckpointError`` naming the run and the file: no fallback
to a full unpickle, no silent retraining.
"""

from __future__ import annotations

import json
import pickle
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from raypipe.errors import ConfigError, RaypipeError
from raypipe.tracking import CheckpointError, Lineage, config_params


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-ckpt")
    return root, f"sqlite:///{root}/mlflow.db"


@pytest.fixture
def lineage(store, request):
    root, uri = store
    name = f"{request.node.name}-{uuid.uuid4().hex[:6]}"
    return Lineage(uri, experiment=name, artifact_location=str(root / "artifacts" / name))


SPEC = {"kind": "mlp", "hidden": [4, 3]}


def _state():
    torch.manual_seed(0)
    return {"fc.weight": torch.randn(3, 4), "fc.bias": torch.randn(3), "bn.num_batches_tracked": torch.tensor(7)}


def _finished_run(lineage, body):
    """A FINISHED stage run of stage ``teacher``; ``body(run)`` fills it. Returns its run id."""
    with lineage.pipeline_run("p", {}) as parent:
        with lineage.stage_run(parent.run_id, "teacher", uuid.uuid4().hex[:8], {}) as st:
            body(st)
    return st.run_id


def _replace_artifact(lineage, run_id, local: Path, artifact_dir: str = "model") -> None:
    lineage.client.log_artifact(run_id, str(local), artifact_dir)


def _files(lineage, run_id, folder="model"):
    return {f.path for f in lineage.client.list_artifacts(run_id, folder)}


def _download(lineage, run_id, path, dst):
    from mlflow.artifacts import download_artifacts

    return Path(download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst),
                                   tracking_uri=lineage.tracking_uri))


# --- (a) round trip ----------------------------------------------------------------------------


def test_round_trip_state_spec_and_numpy_extra(lineage, tmp_path):
    state = _state()
    extra = {"epoch": np.int64(3), "val_oa": np.float32(0.5), "loss": np.float64(0.125),
             "confusion": np.array([[5, 1], [0, 4]], dtype=np.int32), "classes": ("forest", "water"),
             "ok": np.bool_(True), "evaluations": {"test": {"oa": np.float64(0.75), "kappa": None}},
             "ddp": torch.tensor([1.5, 2.5])}
    rid = _finished_run(lineage, lambda st: st.log_checkpoint(
        {f"module.{k}": v for k, v in state.items()}, SPEC, extra=extra))
    assert _files(lineage, rid) == {"model/state.pt", "model/spec.json"}

    # the files themselves: a flat tensor dict, and plain JSON (independent of load_checkpoint)
    raw = torch.load(_download(lineage, rid, "model/state.pt", tmp_path), weights_only=True)
    assert set(raw) == {"fc.weight", "fc.bias", "bn.num_batches_tracked"}     # "module." stripped
    spec = json.loads(_download(lineage, rid, "model/spec.json", tmp_path).read_text())
    assert spec["format"] == "raypipe.checkpoint/2" and spec["model_spec"] == {"kind": "mlp", "hidden": [4, 3]}

    ckpt = lineage.load_checkpoint(rid, field="stages.student.teacher_run", stage="teacher")
    assert set(ckpt) == {"state_dict", "model_spec", "extra"}
    for k, v in state.items():
        assert torch.equal(ckpt["state_dict"][k], v) and ckpt["state_dict"][k].dtype == v.dtype
    assert ckpt["model_spec"] == {"kind": "mlp", "hidden": [4, 3]}
    assert ckpt["extra"] == {"epoch": 3, "val_oa": 0.5, "loss": 0.125, "confusion": [[5, 1], [0, 4]],
                             "classes": ["forest", "water"], "ok": True,
                             "evaluations": {"test": {"oa": 0.75, "kappa": None}}, "ddp": [1.5, 2.5]}
    assert type(ckpt["extra"]["epoch"]) is int and type(ckpt["extra"]["ok"]) is bool
    assert type(ckpt["extra"]["confusion"][0][0]) is int


def test_not_json_serialisable_extra_names_the_key_and_uploads_nothing(lineage):
    class Opaque:
        pass

    def body(st):
        with pytest.raises(CheckpointError) as e:
            st.log_checkpoint(_state(), SPEC, extra={"evaluations": {"test": {"fn": Opaque()}}})
        assert "extra['evaluations']['test']['fn']" in str(e.value) and "Opaque" in str(e.value)
        assert e.value.file == "model/spec.json" and e.value.run_id == st.run_id
        with pytest.raises(CheckpointError, match=r"extra\[1\]"):
            st.log_checkpoint(_state(), SPEC, extra={1: "int key"})
        with pytest.raises(CheckpointError, match=r"state_dict\['opt'\].*not a tensor"):
            st.log_checkpoint({**_state(), "opt": {"lr": 0.1}}, SPEC)

    rid = _finished_run(lineage, body)
    assert _files(lineage, rid) == set()


# --- (b) a crafted pickle is refused and never runs --------------------------------------------


class _Exploit:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("via", ["torch.save", "pickle"])
def test_crafted_pickle_is_refused_without_running(lineage, tmp_path, via):
    evil = tmp_path / "evil" / "state.pt"
    evil.parent.mkdir()
    marker = tmp_path / "marker.txt"
    control, control_marker = tmp_path / "control.pt", tmp_path / "control.txt"
    for path, m in ((evil, marker), (control, control_marker)):
        if via == "torch.save":
            torch.save({"fc.weight": torch.zeros(1), "x": _Exploit(m)}, path)
        else:
            path.write_bytes(pickle.dumps({"x": _Exploit(m)}))
    # control: the same payload is live (a full unpickle does run it), so refusing it is the point
    if via == "torch.save":
        torch.load(control, weights_only=False)
    else:
        pickle.loads(control.read_bytes())
    assert control_marker.read_text() == "pwned" and not marker.exists()

    def body(st):
        st.log_checkpoint(_state(), SPEC)
        _replace_artifact(lineage, st.run_id, evil)              # the run's state file is now hostile

    rid = _finished_run(lineage, body)
    assert _download(lineage, rid, "model/state.pt", tmp_path / "dl").read_bytes() == evil.read_bytes()
    with pytest.raises(CheckpointError) as e:
        lineage.load_checkpoint(rid, field="stages.student.teacher_run")
    assert e.value.run_id == rid and e.value.file == "model/state.pt"
    assert rid in str(e.value) and "model/state.pt" in str(e.value)
    assert e.value.field == "stages.student.teacher_run" and isinstance(e.value, (ConfigError, RaypipeError))
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        lineage.load_model(rid)
    assert not marker.exists()


# --- (c) truncated / corrupt state file --------------------------------------------------------


def test_truncated_state_file_names_run_and_file(lineage, tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    torch.save(_state(), good / "state.pt")
    data = (good / "state.pt").read_bytes()
    bad = tmp_path / "bad" / "state.pt"
    bad.parent.mkdir()
    bad.write_bytes(data[: len(data) // 2])

    def body(st):
        st.log_checkpoint(_state(), SPEC)
        _replace_artifact(lineage, st.run_id, bad)

    rid = _finished_run(lineage, body)
    with pytest.raises(CheckpointError) as e:
        lineage.load_checkpoint(rid, field="--run-id")
    msg = str(e.value)
    assert rid in msg and "model/state.pt" in msg and "--run-id" in msg
    assert e.value.file == "model/state.pt"


def test_state_file_holding_non_tensors_is_refused(lineage, tmp_path):
    odd = tmp_path / "odd" / "state.pt"
    odd.parent.mkdir()
    torch.save({"fc.weight": torch.zeros(2), "note": "a string"}, odd)   # loads with weights_only

    def body(st):
        st.log_checkpoint(_state(), SPEC)
        _replace_artifact(lineage, st.run_id, odd)

    rid = _finished_run(lineage, body)
    with pytest.raises(CheckpointError, match="'note' is a str, not a tensor") as e:
        lineage.load_checkpoint(rid)
    assert e.value.run_id == rid and e.value.file == "model/state.pt"


# --- (d) missing / corrupt spec.json -----------------------------------------------------------


def test_missing_spec_names_run_and_file(lineage, tmp_path):
    only_state = tmp_path / "only" / "state.pt"
    only_state.parent.mkdir()
    torch.save(_state(), only_state)
    rid = _finished_run(lineage, lambda st: _replace_artifact(lineage, st.run_id, only_state))
    assert _files(lineage, rid) == {"model/state.pt"}
    for check in (True, False):           # check_run catches it; load alone does too
        with pytest.raises(CheckpointError) as e:
            lineage.load_checkpoint(rid, field="stages.x.from_run", check=check)
        assert e.value.run_id == rid and e.value.file == "model/spec.json", check
        assert rid in str(e.value) and "model/spec.json" in str(e.value) and "missing" in str(e.value)
        assert e.value.field == "stages.x.from_run"


def test_corrupt_spec_names_run_and_file(lineage, tmp_path):
    bad = tmp_path / "bad" / "spec.json"
    bad.parent.mkdir()
    bad.write_text('{"format": "raypipe.checkpoint/2", "model_spec": {')

    def body(st):
        st.log_checkpoint(_state(), SPEC)
        _replace_artifact(lineage, st.run_id, bad)

    rid = _finished_run(lineage, body)
    with pytest.raises(CheckpointError, match="not valid JSON") as e:
        lineage.load_checkpoint(rid)
    assert e.value.run_id == rid and e.value.file == "model/spec.json"


def test_no_checkpoint_at_all(lineage):
    rid = _finished_run(lineage, lambda st: None)
    with pytest.raises(CheckpointError, match="no checkpoint") as e:
        lineage.load_checkpoint(rid, field="f")
    assert e.value.file == "model/state.pt" and e.value.field == "f"


def test_error_survives_pickling():
    e = CheckpointError("r1", "model/state.pt", "truncated", field="stages.a.from_run")
    back = pickle.loads(pickle.dumps(e))
    assert (back.run_id, back.file, back.detail, back.field) == ("r1", "model/state.pt", "truncated",
                                                                 "stages.a.from_run")
    assert str(back) == str(e)


# --- legacy model.pt ---------------------------------------------------------------------------


def test_legacy_model_pt_is_read_safely_or_refused(lineage, tmp_path):
    state = _state()
    plain = tmp_path / "plain" / "model.pt"
    plain.parent.mkdir()
    torch.save({"state_dict": state, "model_spec": SPEC, "extra": {"epoch": 2}}, plain)
    rid = _finished_run(lineage, lambda st: _replace_artifact(lineage, st.run_id, plain))
    ckpt = lineage.load_checkpoint(rid)
    assert ckpt["model_spec"] == SPEC and ckpt["extra"] == {"epoch": 2}
    assert torch.equal(ckpt["state_dict"]["fc.weight"], state["fc.weight"])

    marker = tmp_path / "marker.txt"
    evil = tmp_path / "evil" / "model.pt"
    evil.parent.mkdir()
    torch.save({"state_dict": state, "model_spec": SPEC, "extra": {"x": _Exploit(marker)}}, evil)
    rid2 = _finished_run(lineage, lambda st: _replace_artifact(lineage, st.run_id, evil))
    with pytest.raises(CheckpointError, match="retrain") as e:
        lineage.load_checkpoint(rid2)
    assert e.value.run_id == rid2 and e.value.file == "model/model.pt"
    assert not marker.exists()


# --- secrets never become params ---------------------------------------------------------------


def test_config_params_redact_secrets():
    p = config_params({
        "storage": {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI", "aws_access_key_id": "AKIAIOSFODNN7",
                    "endpoint": "https://minio:9000"},
        "db_password": "hunter2", "api": {"Token": "ghp_abc"}, "region": "eu-west-1",
        "tracking": {"uri": "https://alice:s3cr3t@mlflow.example.org/"},
        "data": {"root": "s3://bucket/tiles?X-Amz-Signature=deadbeef&region=eu"},
        "mirrors": ["https://bob:pw@a.example/x", "https://c.example/y"],
        "nested": [{"client_secret": "zzz", "name": "n"}],
        "empty_token": None,
    })
    assert p["storage.AWS_SECRET_ACCESS_KEY"] == "***"
    assert p["storage.aws_access_key_id"] == "***"
    assert p["db_password"] == "***" and p["api.Token"] == "***"
    assert p["storage.endpoint"] == "https://minio:9000" and p["region"] == "eu-west-1"
    assert p["tracking.uri"] == "https://***@mlflow.example.org/"
    assert p["data.root"] == "s3://bucket/tiles?X-Amz-Signature=***&region=eu"
    assert json.loads(p["mirrors"]) == ["https://***@a.example/x", "https://c.example/y"]
    assert json.loads(p["nested"]) == [{"client_secret": "***", "name": "n"}]
    assert p["empty_token"] == "None"                    # nothing to hide: kept as is
    joined = " ".join(p.values())
    for secret in ("wJalrXUtnFEMI", "AKIAIOSFODNN7", "hunter2", "ghp_abc", "s3cr3t", "deadbeef", "zzz", ":pw@"):
        assert secret not in joined


def test_secrets_reach_neither_params_config_yaml_nor_tags(lineage):
    from mlflow.artifacts import download_artifacts

    cfg = {"storage": {"secret_key": "TOPSECRET", "endpoint": "http://u:PASSWD@minio:9000"}, "lr": 0.1}
    with lineage.pipeline_run("p", cfg, tags={"source_uri": "https://x:TAGPASS@h/"}) as parent:
        parent.log_params({"extra_password": "PARAMPASS", "bs": 8})
        with lineage.stage_run(parent.run_id, "teacher", "k", cfg) as st:
            pass
    for rid in (parent.run_id, st.run_id):
        run = lineage.client.get_run(rid)
        text = json.dumps(run.data.params) + json.dumps(run.data.tags)
        text += Path(download_artifacts(run_id=rid, artifact_path="config.yaml",
                                        tracking_uri=lineage.tracking_uri)).read_text()
        for secret in ("TOPSECRET", "PASSWD", "TAGPASS", "PARAMPASS"):
            assert secret not in text, (rid, secret)
        assert run.data.params["lr"] == "0.1" and run.data.params["storage.secret_key"] == "***"
    assert lineage.client.get_run(parent.run_id).data.params["bs"] == "8"
