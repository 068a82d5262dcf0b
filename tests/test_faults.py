"""Surviving faults (docs/reliability.md, "Faults"): (a) a node holding the training worker is lost
mid-stage; (b) the driver is SIGKILLed inside a stage and between stages, and the same command is
run again. Every test starts and stops its own Ray (a multi-node ``ray.cluster_utils.Cluster`` or the
``--address local`` instance of a ``jobs/run.py`` subprocess) and kills only its own processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO

# --- the run tree: an interrupted stage run is continued, never duplicated (no Ray) ---------------


def _dead_driver_tag() -> str:
    """A ``raypipe.driver`` tag naming a process of this host that has exited."""
    import socket

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return f"{socket.gethostname()}:{proc.pid}:1.00"


def test_interrupted_stage_run_is_continued_not_duplicated(tmp_path):
    from raypipe.tracking import Lineage
    from raypipe.tracking.lineage import TAG_DRIVER

    lineage = Lineage(f"sqlite:///{tmp_path}/mlflow.db", "faults")
    c = lineage.client
    # a driver that died inside a stage: its pipeline and stage runs stay RUNNING for ever
    dead = _dead_driver_tag()
    old_parent = c.create_run(lineage.experiment_id, tags={"raypipe.kind": "pipeline", TAG_DRIVER: dead}).info.run_id
    first = c.create_run(lineage.experiment_id, tags={
        "raypipe.kind": "stage", "raypipe.stage": "source", "raypipe.stage_key": "k1",
        "mlflow.parentRunId": old_parent, TAG_DRIVER: dead}).info.run_id
    c.log_param(first, "x", "1")
    assert c.get_run(first).info.status == "RUNNING"
    assert lineage.find_stage("source", "k1") is None
    assert lineage.find_interrupted_stage("source", "k1") == first
    assert lineage.find_interrupted_stage("source", "k2") is None

    # a RUNNING run whose driver lives on this host (this process) is never taken over
    with lineage.pipeline_run("live", {}) as live_parent:
        with lineage.stage_run(live_parent.run_id, "student", "k9", {"x": 1}):
            assert lineage.find_interrupted_stage("student", "k9") is None

    with lineage.pipeline_run("rerun", {}) as parent:
        resumed = lineage.find_interrupted_stage("source", "k1")
        with lineage.stage_run(parent.run_id, "source", "k1", {"x": 1}, resume=resumed) as run:
            assert run.run_id == first
            assert c.get_run(run.run_id).info.status == "RUNNING"
    run = c.get_run(first)
    assert run.info.status == "FINISHED"
    assert run.data.tags["raypipe.resumed"] == "true" and run.data.tags["raypipe.attempts"] == "2"
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert run.data.params == {"x": "1"}  # logged once, by the first attempt
    old = c.get_run(old_parent)
    assert old.info.status == "KILLED" and old.data.tags["raypipe.interrupted"] == "true"
    assert old.data.tags["raypipe.resumed_in"] == parent.run_id
    assert lineage.find_stage("source", "k1") == first
    assert _stage_runs(lineage, "source", "k1") == [first]

    # a FAILED run is continued too (its error kept as the previous error), and counts attempts
    with pytest.raises(ValueError):
        with lineage.pipeline_run("p3", {}) as p3:
            with lineage.stage_run(p3.run_id, "target", "k3", {"x": 1}):
                raise ValueError("boom")
    failed = lineage.find_interrupted_stage("target", "k3")
    with lineage.pipeline_run("p4", {}) as p4:
        with lineage.stage_run(p4.run_id, "target", "k3", {"x": 1}, resume=failed):
            pass
    tags = c.get_run(failed).data.tags
    assert tags["raypipe.attempts"] == "2" and tags["raypipe.previous_error"] == "ValueError: boom"
    assert "raypipe.error" not in tags
    assert _stage_runs(lineage, "target", "k3") == [failed]


def _stage_runs(lineage, stage: str, key: str) -> list[str]:
    """Ids of every training run (kind ``stage``, any status) of ``stage`` with ``key``."""
    flt = f"tags.`raypipe.kind` = 'stage' AND tags.`raypipe.stage` = '{stage}' AND tags.`raypipe.stage_key` = '{key}'"
    return [r.info.run_id for r in lineage.client.search_runs([lineage.experiment_id], flt)]


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    """A metric's (step, value) pairs in logging order (an epoch logged twice appears twice)."""
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp)]


# --- (a) node loss -----------------------------------------------------------------------------------

@pytest.fixture
def cluster():
    """Head (0 CPUs: the driver, Ray Train's controller) + 2 worker nodes of 2 CPUs. Any Ray of this
    process (the session's ``ray_session``) is shut down first and started again afterwards."""
    import ray
    from ray.cluster_utils import Cluster

    had_session = ray.is_initialized()
    if had_session:
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [c.add_node(num_cpus=2) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False, configure_logging=False)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    try:
        yield c, nodes
    finally:
        ray.shutdown()
        c.shutdown()
        if had_session:  # as conftest's ray_session started it, for the tests that follow
            env = {k: os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                              "AWS_DEFAULT_REGION") if k in os.environ}
            ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     runtime_env={"env_vars": env})


def _train_worker_node() -> str:
    """Node id of the (one) live Ray Train worker actor."""
    import ray._private.state

    for info in ray._private.state.actors().values():
        if info.get("ActorClassName", "").endswith("RayTrainWorker") and info.get("State") == "ALIVE":
            return info["Address"]["NodeID"]
    return ""


def _registered(run_dir: Path) -> list[int]:
    """Epochs of the checkpoints saved for a run: from Ray Train's checkpoint manager snapshot (a
    worker group; written once a reported checkpoint is safely in storage, the newest 2 kept), or the
    complete ``checkpoint_epoch_<n>/state.pt`` of an in-process run (``ray.training: driver``)."""
    epochs = [int(p.name.rsplit("_", 1)[1]) for p in run_dir.glob("checkpoint_epoch_*") if (p / "state.pt").exists()]
    try:
        snap = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, ValueError):
        snap = {}
    epochs += [int(r["metrics"]["epoch"]) for r in snap.get("checkpoint_results", [])]
    return sorted(set(epochs))


def test_node_loss_mid_stage_resumes_from_last_checkpoint(tmp_path, cluster):
    """One deterministic worker; once a first checkpoint is registered, the worker node hosting it
    is removed (its raylet and worker processes killed, as a lost machine). The stage finishes on the surviving nodes, resumed from the checkpoint (start_epoch 1 or
    later; at most the epoch in progress is redone), sees every sample every epoch, and ends with the
    model an uninterrupted run of the same seed gives."""
    import threading

    from test_distributed import tiny_job

    from raypipe.engine.config import RayConfig, TrainConfig
    from raypipe.engine.runner import fit
    from raypipe.tracking import Lineage, RunHandle

    c, nodes = cluster
    # enough epochs that the node goes mid-run: with the decoded-split cache an epoch of this job
    # takes well under a second, less than the killer needs to find the worker's node
    epochs = 8
    train = TrainConfig(epochs=epochs, batch_size=4, deterministic=True, shuffle_buffer=16, max_failures=2)
    job, _ = tiny_job(tmp_path, train)
    ray_cfg = RayConfig(num_workers=1, storage_path=str(tmp_path / "runs"))
    lineage = Lineage(f"sqlite:///{tmp_path}/mlflow.db", "faults")

    def handle(name):
        return RunHandle(lineage.tracking_uri, lineage.client.create_run(lineage.experiment_id, run_name=name).info.run_id)

    t0 = time.perf_counter()
    ref_handle = handle("reference")
    reference, ref_metrics = fit(job, ray_cfg, "node-loss-reference", ref_handle)
    ref_s = time.perf_counter() - t0

    run_dir = tmp_path / "runs" / "node-loss"
    by_id = {n.node_id: n for n in nodes}
    fault = {}

    def kill_the_workers_node():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not _registered(run_dir):
            time.sleep(0.05)
        node_id = _train_worker_node()
        fault["registered"] = _registered(run_dir)
        fault["node"] = node_id
        if node_id in by_id:
            fault["at"] = time.perf_counter()
            # the surviving node (2 CPUs) fits the new worker and Ray Data; no replacement node is
            # added: Cluster.add_node installs signal handlers, so it only works from the main thread
            c.remove_node(by_id[node_id], allow_graceful=False)

    killer = threading.Thread(target=kill_the_workers_node, daemon=True)
    t1 = time.perf_counter()
    faulty_handle = handle("node-loss")
    killer.start()
    state, metrics = fit(job, ray_cfg, "node-loss", faulty_handle)
    faulty_s = time.perf_counter() - t1
    killer.join(timeout=60)

    assert fault.get("node") in by_id, f"no training worker found on a worker node: {fault}"
    assert fault["registered"], fault
    last = max(fault["registered"])  # the newest registered checkpoint when the node went
    assert last < epochs - 1, f"the node went after the last epoch was checkpointed, too late to test: {fault}"
    assert not any(n.node_id == fault["node"] for n in c.list_all_nodes())  # the node really is gone
    # resumed from its last checkpoint (or a later one registered meanwhile), not from scratch
    assert metrics["epoch"] == epochs - 1 and metrics["start_epoch"] >= last + 1
    reported = [step for step, _ in _history(lineage.client, faulty_handle.run_id, "epoch")]
    redone = len(reported) - len(set(reported))  # whole epochs reported twice
    assert sorted(set(reported)) == list(range(epochs))
    # the lost worker logged epochs 0..k-1; the new one resumed from the newest checkpoint the
    # controller had registered and logged start_epoch..end: no gap, and only epochs after that
    # checkpoint redone (the one in progress, and any whose report the controller had not yet
    # registered: it polls every 0.5 s, longer than an epoch of this job)
    cut = next(i for i in range(1, len(reported)) if reported[i] <= reported[i - 1]) if redone else len(reported)
    first, second = reported[:cut], reported[cut:]
    start = metrics["start_epoch"]
    assert first == list(range(len(first))), reported
    if second:
        assert second == list(range(start, epochs)), reported
    assert start <= len(first), reported  # no epoch skipped
    # no sample lost: every epoch trained on as many samples as the uninterrupted run
    samples = dict(_history(lineage.client, faulty_handle.run_id, "train/samples"))
    ref_samples = dict(_history(lineage.client, ref_handle.run_id, "train/samples"))
    assert samples == ref_samples and all(v > 0 for v in samples.values())
    assert job.train_data.samples_in > 0 and job.train_data.quarantined() == []
    # the final model: one worker, same seed, same per-epoch shuffle seeds and block order, optimiser
    # and schedule restored from the checkpoint: the resumed run replays exactly the same steps
    diff = max(float((state[k].double() - reference[k].double()).abs().max()) for k in reference)
    for k in reference:
        torch.testing.assert_close(state[k], reference[k], rtol=1e-5, atol=1e-6, msg=f"{k} differs")
    report = {"reference_s": round(ref_s, 1), "faulty_s": round(faulty_s, 1), "time_lost_s": round(faulty_s - ref_s, 1),
              "start_epoch": metrics["start_epoch"], "epochs_reported": reported, "whole_epochs_redone": redone,
              "samples_per_epoch": samples, "samples_in": job.train_data.samples_in,
              "quarantined": len(job.train_data.quarantined()), "max_abs_weight_diff": diff,
              "bit_identical": all(torch.equal(state[k], reference[k]) for k in reference)}
    print("node-loss figures:", json.dumps(report))
    (tmp_path / "node_loss.json").write_text(json.dumps(report))


# --- (b) driver loss -----------------------------------------------------------------------------------

TINY_MODEL = {"kind": "resnet", "depth": 10, "width": 4, "stem": "small", "norm": "group"}
TINY_ENCODER = {k: v for k, v in TINY_MODEL.items() if k != "kind"}
EPOCHS = 4
# batch 4 gives several steps per epoch, so an epoch lasts long enough to be killed inside
TRAIN = {"epochs": EPOCHS, "batch_size": 4, "deterministic": True}


class Driver:
    """``jobs/run.py`` in its own session (process group) with its own Ray temp dir, so that a
    SIGKILL of the group, plus a sweep of that session and of processes naming the temp dir, ends
    the driver and the local Ray it started (GCS, raylet, workers), and nothing else."""

    def __init__(self, args: list[str], cwd: Path, log: Path):
        self.ray_tmp = tempfile.mkdtemp(prefix="rf")  # short: Ray's socket paths must stay < 108 chars
        env = {**os.environ, "RAY_TMPDIR": self.ray_tmp, "PYTHONUNBUFFERED": "1"}
        self.log = log
        self._out = open(log, "w")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, str(REPO / "jobs" / "run.py"), *args, "--address", "local"],
                                     cwd=cwd, stdout=self._out, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the driver's process group, then whatever of its session or its Ray is left."""
        import psutil

        sid = self.proc.pid
        with _suppress():
            os.killpg(sid, signal.SIGKILL)
        with _suppress():
            self.proc.wait(timeout=30)
        for _ in range(50):
            left = []
            for p in psutil.process_iter(["pid", "cmdline"]):
                with _suppress():
                    if p.pid != os.getpid() and (os.getsid(p.pid) == sid or
                                                 self.ray_tmp in " ".join(p.info["cmdline"] or [])):
                        left.append(p)
            if not left:
                break
            for p in left:
                with _suppress():
                    p.kill()
            time.sleep(0.2)
        self._out.close()
        import shutil

        shutil.rmtree(self.ray_tmp, ignore_errors=True)


def _suppress():
    import contextlib

    return contextlib.suppress(ProcessLookupError, PermissionError, OSError, Exception)


def _wait_for(predicate, driver: Driver, timeout: float = 600, every: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; fail if the driver exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if driver.proc.poll() is not None:
            pytest.fail(f"the driver exited ({driver.proc.returncode}) before the fault point:\n"
                        f"{driver.output()[-3000:]}")
        time.sleep(every)
    pytest.fail("timed out waiting for the fault point")


def _train_dirs(tmp: Path, stage: str) -> list[Path]:
    return sorted((tmp / "runs").glob(f"kd_s-{stage}-*"))


def _checkpoints(tmp: Path, stage: str) -> list[int]:
    """Epochs (indices) of the checkpoints Ray Train has registered for ``stage``."""
    return [epoch for d in _train_dirs(tmp, stage) for epoch in _registered(d)]


def _runs(lineage, **tags) -> list:
    flt = " AND ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return lineage.client.search_runs([lineage.experiment_id], flt)


@pytest.fixture(scope="module")
def driver_loss(tmp_path_factory):
    """kd_s (stages source → student), one command run three times on one store:
    1. SIGKILLed inside stage ``source`` once at least one epoch checkpoint is registered;
    2. the same command: ``source`` continues; SIGKILLed as soon as its MLflow run is FINISHED,
       before ``student`` has trained an epoch;
    3. the same command, to the end."""
    from raypipe.tracking import Lineage

    tmp = tmp_path_factory.mktemp("driver_loss")
    cfg = {"data": {"benchmark": {"out": str(tmp / "bench"), "tiles": 40, "size": 16, "scene_size": 10}},
           "stages": {"source": {"model": TINY_MODEL, "train": TRAIN},
                      "student": {"model": {"kind": "multimodal", "optical": TINY_ENCODER, "sar": TINY_ENCODER},
                                  "train": TRAIN}},
           "tracking": {"uri": f"sqlite:///{tmp}/mlflow.db", "experiment": "faults"},
           "ray": {"storage_path": str(tmp / "runs")}}
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    args = ["--method", "kd_s", "--config", "tiny.yaml"]
    lineage = None
    out: dict = {"tmp": tmp}

    # 1. inside stage source, after >= 1 registered epoch checkpoint and before its last epoch
    d1 = Driver(args, tmp, tmp / "driver1.log")
    try:
        _wait_for(lambda: _checkpoints(tmp, "source"), d1)
    finally:
        out["killed_1_at"] = time.perf_counter() - d1.t0
        d1.kill()
    out["registered_at_kill_1"] = _checkpoints(tmp, "source")
    out["log_1"] = d1.log.read_text()
    lineage = Lineage(cfg["tracking"]["uri"], "faults")
    out["lineage"] = lineage
    out["after_1"] = {r.info.run_id: r.info.status for r in _runs(lineage, **{"raypipe.stage": "source"})}

    # 2. the same command: resumes source; killed once source is FINISHED, before student trains
    d2 = Driver(args, tmp, tmp / "driver2.log")

    def source_finished():
        return [r for r in _runs(lineage, **{"raypipe.kind": "stage", "raypipe.stage": "source"})
                if r.info.status == "FINISHED"]

    try:
        _wait_for(source_finished, d2, every=0.02)
    finally:
        out["killed_2_at"] = time.perf_counter() - d2.t0
        d2.kill()
    out["student_checkpoints_at_kill_2"] = _checkpoints(tmp, "student")
    out["student_runs_at_kill_2"] = [(r.info.run_id, r.info.status)
                                     for r in _runs(lineage, **{"raypipe.stage": "student"})]
    out["log_2"] = d2.log.read_text()

    # 3. the same command, to the end
    d3 = Driver(args, tmp, tmp / "driver3.log")
    out["rc_3"] = d3.wait(timeout=900)
    out["seconds_3"] = time.perf_counter() - d3.t0
    out["log_3"] = d3.log.read_text()
    return out


def _stage(lineage, stage: str):
    runs = _runs(lineage, **{"raypipe.kind": "stage", "raypipe.stage": stage})
    return runs


def test_driver_killed_inside_a_stage_resumes_it_from_its_checkpoint(driver_loss):
    d = driver_loss
    lineage, c = d["lineage"], d["lineage"].client
    assert d["registered_at_kill_1"] and max(d["registered_at_kill_1"]) < EPOCHS - 1, d["registered_at_kill_1"]
    assert list(d["after_1"].values()) == ["RUNNING"]  # the dead driver could not end its run
    assert d["rc_3"] == 0, d["log_3"][-3000:]

    runs = _stage(lineage, "source")
    assert len(runs) == 1, [(r.info.run_id, r.info.status) for r in runs]  # continued, not duplicated
    run = runs[0]
    assert run.info.run_id in d["after_1"] and run.info.status == "FINISHED"
    assert run.data.tags["raypipe.resumed"] == "true" and run.data.tags["raypipe.attempts"] == "2"
    # resumed from the latest checkpoint of the killed driver, not from epoch 0
    last_ckpt = max(d["registered_at_kill_1"])
    start = [v for _, v in _history(c, run.info.run_id, "start_epoch")]
    assert start[-1] >= last_ckpt + 1 and start[-1] >= 1, start
    assert not any(f"source epoch {e + 1:>3}/{EPOCHS}" in d["log_2"] for e in range(last_ckpt + 1)), d["log_2"]
    epochs = [s for s, _ in _history(c, run.info.run_id, "epoch")]
    assert sorted(set(epochs)) == list(range(EPOCHS))
    assert len(epochs) - len(set(epochs)) <= 1, epochs  # at most the epoch in progress redone
    # no sample lost: every sample in, none quarantined, each epoch trained on as many samples
    m = run.data.metrics
    assert m["data/samples_in"] > 0 and m["data/quarantined"] == 0
    samples = {s: v for s, v in _history(c, run.info.run_id, "train/samples")}
    assert len(set(samples.values())) == 1 and min(samples.values()) > 0, samples
    # the killed driver's pipeline run is closed KILLED, pointing at the run that continued it
    first_parent = c.get_run(run.info.run_id).data.tags["mlflow.parentRunId"]
    pipelines = _runs(lineage, **{"raypipe.kind": "pipeline"})
    assert len(pipelines) == 3
    killed = [p for p in pipelines if p.info.status == "KILLED"]
    assert len(killed) == 2 and all(p.data.tags["raypipe.interrupted"] == "true" for p in killed)
    assert first_parent in {p.data.tags["raypipe.resumed_in"] for p in killed}
    figures = {"killed_after_s": round(d["killed_1_at"], 1), "checkpoints_at_kill": d["registered_at_kill_1"],
               "start_epoch_on_rerun": start[-1], "epochs_logged": epochs,
               "whole_epochs_redone": len(epochs) - len(set(epochs)), "samples_in": m["data/samples_in"],
               "quarantined": m["data/quarantined"], "train_samples_per_epoch": samples}
    print("driver-loss (inside a stage) figures:", json.dumps(figures))


def test_driver_killed_between_stages_reuses_the_finished_one(driver_loss):
    d = driver_loss
    lineage, c = d["lineage"], d["lineage"].client
    assert d["student_checkpoints_at_kill_2"] == [], "killed too late: student had already trained an epoch"
    assert d["rc_3"] == 0, d["log_3"][-3000:]
    out = d["log_3"]
    assert "2 stages, 1 reused ['source']" in out, out[-3000:]
    assert "source: reused run" in out
    assert f"student epoch   1/{EPOCHS}" in out  # student trains from its first epoch
    source, student = _stage(lineage, "source"), _stage(lineage, "student")
    assert len(source) == 1 and len(student) == 1, (source, student)  # one training run per stage
    st = student[0]
    assert st.info.status == "FINISHED"
    start = [v for _, v in _history(c, st.info.run_id, "start_epoch")]
    assert start and set(start) == {0.0}
    if d["student_runs_at_kill_2"]:  # the killed driver had opened the student run: continued
        assert [rid for rid, _ in d["student_runs_at_kill_2"]] == [st.info.run_id]
        assert st.data.tags["raypipe.attempts"] == "2"
    # the last pipeline run's tree: the reused source (a marker pointing at the one training run)
    # and the student run
    final = [p for p in _runs(lineage, **{"raypipe.kind": "pipeline"}) if p.info.status == "FINISHED"]
    assert len(final) == 1
    kids = c.search_runs([lineage.experiment_id], f"tags.`mlflow.parentRunId` = '{final[0].info.run_id}'")
    kinds = sorted((k.data.tags["raypipe.stage"], k.data.tags["raypipe.kind"]) for k in kids)
    assert kinds == [("source", "stage-reused"), ("student", "stage")]
    marker = next(k for k in kids if k.data.tags["raypipe.kind"] == "stage-reused")
    assert marker.data.tags["raypipe.reused_from"] == source[0].info.run_id
    print("driver-loss (between stages) figures:", json.dumps({
        "killed_after_s": round(d["killed_2_at"], 1), "student_run_open_at_kill": d["student_runs_at_kill_2"],
        "rerun_s": round(d["seconds_3"], 1)}))
