"""Secrets stay out of what raypipe records, and what raypipe starts listens on 127.0.0.1 only.

* A real job (``jobs/run.py --method source_only``) runs with fake credentials in its environment
  (each a distinct random marker); no marker may appear in any MLflow param, tag or metric key of any
  run, in any artifact, in the sqlite store's bytes, in Ray Train's storage, on the job's terminal, or
  in its log file.
* Redaction at unit level: a config holding credentials in URIs and under secret-named keys gives
  params and ``config.yaml`` without them (and keeps what is not a secret).
* Listeners: the local Ray instance ``jobs/run.py`` starts, the S3 test server and the MLflow server
  helper listen on loopback only (psutil, LISTEN sockets of the started processes and their children).
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO

# Environment variables a user of raypipe typically has set on a cluster; each gets its own marker.
SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
              "HF_TOKEN", "RAY_AUTH_TOKEN")


def _marker(name: str) -> str:
    return f"leak{name.lower().replace('_', '')}{secrets.token_hex(12)}"


def _scan_tree(root: Path, markers: dict[str, str]) -> list[str]:
    """'<env var> in <file>' for every marker found in the bytes of every file under root."""
    found = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            data = p.read_bytes()
            found += [f"{name} in {p}" for name, m in markers.items() if m.encode() in data]
    return found


# -- end to end: a real job with secrets in its environment ---------------------------------------


# What jobs/run.py is to set for a local start (docs/reliability.md, "Listeners"): with it, Ray 2.60
# takes 127.0.0.1 as the node address and binds every server there. Set here too so the check holds
# before jobs/run.py sets it; remove it from here once jobs/run.py does, and the test covers jobs/run.py.
LOOPBACK_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _is_loopback(ip: str) -> bool:
    a = ipaddress.ip_address(ip.split("%")[0])
    if a.version == 6 and a.ipv4_mapped:
        a = a.ipv4_mapped
    return a.is_loopback


def _listeners(root_pid: int) -> set[tuple[str, int, str]]:
    """(ip, port, command) of every TCP LISTEN socket of ``root_pid`` and its descendants."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        procs = {root.pid: root, **{p.pid: p for p in root.children(recursive=True)}}
    except psutil.NoSuchProcess:
        return set()
    out = set()
    for c in psutil.net_connections(kind="inet"):
        if c.status == psutil.CONN_LISTEN and c.pid in procs and c.laddr:
            try:
                cmd = " ".join(procs[c.pid].cmdline())
            except psutil.Error:
                cmd = "?"
            out.add((c.laddr.ip, c.laddr.port, cmd))
    return out


def _ray_env(short: Path, extra: dict[str, str]) -> dict[str, str]:
    """A clean environment for a local Ray start: own HOME (~/.ray/auth_token) and RAY_TMPDIR."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", *LOOPBACK_RAY_ENV)}
    env.update(extra)
    env.update({"HOME": str(short), "RAY_TMPDIR": str(short), "RAY_USAGE_STATS_ENABLED": "0",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    return env


def _run_sampling(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900):
    """Run ``cmd``; meanwhile sample the LISTEN sockets of it and its descendants every second."""
    out, err = cwd / "job.stdout", cwd / "job.stderr"
    listeners: set = set()
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fo, stderr=fe, text=True)
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                listeners |= _listeners(proc.pid)
                time.sleep(1.0)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, out.read_text(), err.read_text()), listeners


@pytest.fixture(scope="module")
def secret_job(tmp_path_factory):
    """jobs/run.py --method source_only, fake secrets in its environment; while it runs, the LISTEN
    sockets of it and every process it starts are sampled each second."""
    tmp = tmp_path_factory.mktemp("secret_job")
    markers = {name: _marker(name) for name in SECRET_ENV}
    assert len(set(markers.values())) == len(markers)
    cfg = {"data": {"benchmark": {"out": str(tmp / "bench"), "tiles": 40, "size": 16, "scene_size": 10}},
           "stages": {"source": {"model": {"kind": "resnet", "depth": 10, "width": 4, "stem": "small",
                                           "norm": "group"},
                                 "train": {"epochs": 1, "batch_size": 16}}},
           "tracking": {"uri": f"sqlite:///{tmp}/mlflow.db"}, "ray": {"storage_path": str(tmp / "runs"),
                  # a worker group, not the driver (auto's choice for one CPU worker): its DDP
                  # rendezvous store and RayTrainWorker listeners are what the loopback test checks
                  "training": "workers"}}
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    # Ray's session files go to a short folder of our own (unix socket paths must stay short), so the
    # test can look at them too and removes them afterwards.
    short = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))
    env = _ray_env(short, markers)  # jobs/run.py sets the loopback setting itself for a local start
    for attempt in (1, 2, 3):
        result, listeners = _run_sampling(
            [sys.executable, str(REPO / "jobs" / "run.py"), "--method", "source_only", "--config", "tiny.yaml",
             "--address", "local"], tmp, env)
        # A local Ray start fails with "timed out during startup" when its raylet does not register
        # within Ray's fixed 30 s: on a loaded machine, or when another local Ray instance holds the
        # dashboard agent's fixed port 52365 (ray.init cannot move it). Nothing has run yet: retry.
        if result.returncode != 0 and "timed out during startup" in result.stderr and attempt < 3:
            time.sleep(15)
            continue
        break
    yield tmp, short, markers, result, listeners
    shutil.rmtree(short, ignore_errors=True)


def _found(markers: dict[str, str], text: str) -> list[str]:
    return [name for name, m in markers.items() if m in text]


def test_job_with_secrets_in_env_succeeds(secret_job):
    _, _, _, proc, _ = secret_job
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "1 stages" in proc.stdout and "full log: " in proc.stdout


def test_no_secret_on_the_terminal_or_in_the_log_file(secret_job):
    tmp, _, markers, proc, _ = secret_job
    assert not _found(markers, proc.stdout), "stdout"
    assert not _found(markers, proc.stderr), "stderr"
    log = tmp / re.search(r"full log: (\S+)", proc.stdout).group(1)
    text = log.read_text(errors="replace")
    assert len(text) > 0
    assert not _found(markers, text), f"in {log}"


def test_no_secret_in_mlflow_runs_artifacts_or_store(secret_job, tmp_path):
    import mlflow

    tmp, _, markers, proc, _ = secret_job
    assert proc.returncode == 0
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments])
    assert {r.data.tags.get("raypipe.kind") for r in runs} >= {"pipeline", "stage"}
    n_artifacts = 0
    for run in runs:
        d = run.data
        record = "\n".join([*(f"{k}={v}" for k, v in d.params.items()), *(f"{k}={v}" for k, v in d.tags.items()),
                            *d.metrics, run.info.run_name or "", run.info.artifact_uri or ""])
        assert not _found(markers, record), f"run {run.info.run_id}: params/tags/metric keys"
        dst = tmp_path / run.info.run_id
        dst.mkdir()
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="", dst_path=str(dst),
                                            tracking_uri=uri)
        files = [p for p in dst.rglob("*") if p.is_file()]
        n_artifacts += len(files)
        assert not _scan_tree(dst, markers)
    assert n_artifacts >= 3  # config.yaml, the checkpoint, evaluations: the scan looked at real files
    db = (tmp / "mlflow.db").read_bytes()
    assert b"raypipe" in db and not [n for n, m in markers.items() if m.encode() in db], "sqlite store"


def test_no_secret_in_ray_train_storage(secret_job):
    tmp, _, markers, proc, _ = secret_job
    assert proc.returncode == 0
    assert any((tmp / "runs").rglob("*")), "nothing in the Ray Train storage path"
    assert not _scan_tree(tmp / "runs", markers)


def test_ray_session_files_hold_at_most_the_ray_token(secret_job):
    """Ray's own session folder (logs, GCS files): the Ray token may be there by design (it is the
    cluster's own credential), nothing else."""
    _, short, markers, proc, _ = secret_job
    assert proc.returncode == 0
    others = {k: v for k, v in markers.items() if k != "RAY_AUTH_TOKEN"}
    assert any(short.rglob("*.log")), "Ray did not write its session under RAY_TMPDIR"
    assert not _scan_tree(short, others)


# -- unit: redaction of a config -----------------------------------------------------------------


def test_config_params_and_config_yaml_hold_no_credentials():
    from raypipe.tracking.keys import REDACTED, config_params, redact

    s = {k: secrets.token_hex(8) for k in ("uri_key", "uri_secret", "mlflow_pw", "aws_secret", "password", "token",
                                            "api_token", "query_token", "signature", "credential", "nested")}
    cfg = {
        "data": {"source_manifest": f"s3://{s['uri_key']}:{s['uri_secret']}@bucket/manifests/m.parquet",
                 "target_manifest": "s3://bucket/manifests/cr.parquet",
                 "presigned": f"https://bucket.s3.amazonaws.com/m.parquet?X-Amz-Signature={s['signature']}&x=1",
                 "list": [f"https://host/a?token={s['query_token']}", "plain"]},
        "tracking": {"uri": f"https://admin:{s['mlflow_pw']}@mlflow.internal:5000", "password": s["password"]},
        "storage": {"aws_secret": s["aws_secret"], "AWS_SECRET_ACCESS_KEY": s["aws_secret"],
                    "api_token": s["api_token"], "token": s["token"], "credentials": {"inner": s["credential"]},
                    "deep": [{"hf_token": s["nested"]}]},
        "stages": {"source": {"train": {"epochs": 3, "lr": 0.01}}},
    }
    params = config_params(cfg)
    dumped = yaml.safe_dump(redact(cfg))
    for where, text in (("params", "\n".join(f"{k}={v}" for k, v in params.items())), ("config.yaml", dumped)):
        leaked = [name for name, v in s.items() if v in text]
        assert not leaked, f"{where}: {leaked}"
    # what is not a secret is kept, so the run stays readable and comparable
    assert params["stages.source.train.epochs"] == "3" and params["stages.source.train.lr"] == "0.01"
    assert params["data.target_manifest"] == "s3://bucket/manifests/cr.parquet"
    assert params["data.source_manifest"] == f"s3://{REDACTED}@bucket/manifests/m.parquet"
    assert params["tracking.uri"] == f"https://{REDACTED}@mlflow.internal:5000"
    assert params["tracking.password"] == REDACTED and params["storage.api_token"] == REDACTED
    assert "x=1" in params["data.presigned"]


def test_resolved_config_of_a_method_is_redacted_in_params():
    """Through the engine's own resolution (as ``--data``/``--tracking-uri`` would give it)."""
    from raypipe.engine import resolve
    from raypipe.methods import load_methods
    from raypipe.tracking.keys import config_params

    key, secret, pw = (secrets.token_hex(8) for _ in range(3))
    m = load_methods().get("source_only", "--method")
    cfg = resolve(m, None, [], {"data": {"source_manifest": f"s3://{key}:{secret}@bucket/m.parquet"},
                                "tracking": {"uri": f"https://u:{pw}@mlflow:5000"}})
    text = "\n".join(f"{k}={v}" for k, v in config_params(cfg).items())
    assert "bucket/m.parquet" in text and "mlflow:5000" in text
    assert key not in text and secret not in text and pw not in text


# -- listeners: what raypipe starts by default binds 127.0.0.1 ---------------------------------------


def _show(listeners) -> str:
    return "\n".join(f"  {ip}:{port}  {cmd[:110]}" for ip, port, cmd in sorted(listeners))


def test_job_listens_on_loopback_only(secret_job):
    """Every TCP listener of jobs/run.py's local Ray (GCS, raylet, object manager, core workers,
    dashboard, dashboard and runtime-env agents) and of the training workers is on loopback, torch's
    TCPStore on rank 0 included (raypipe.engine.netguard binds it; torch alone would take ``::``)."""
    _, _, _, proc, listeners = secret_job
    assert proc.returncode == 0
    assert len({port for _, port, _ in listeners}) >= 5, f"too few listeners seen:\n{_show(listeners)}"
    dashboard = [ip for ip, _, cmd in listeners if "dashboard/dashboard.py" in cmd]
    assert dashboard and all(ip == "127.0.0.1" for ip in dashboard), _show(listeners)
    assert any(cmd.startswith("ray::RayTrainWorker") for _, _, cmd in listeners), _show(listeners)  # seen training
    exposed = {x for x in listeners if not _is_loopback(x[0])}
    assert not exposed, f"listening beyond loopback:\n{_show(exposed)}"


def test_rendezvous_store_binds_loopback_with_the_guard(tmp_path):
    """torch alone serves the DDP rendezvous store on every interface; with the guard jobs/run.py
    installs in Ray's workers, on 127.0.0.1 only (two real runs of a one-process gloo group)."""
    code = """
import datetime, os, socket, sys, psutil, torch, torch.distributed as dist
if sys.argv[1] == "guard":
    from raypipe.engine.netguard import bind_store_to_loopback
    assert bind_store_to_loopback()
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
dist.init_process_group("gloo", init_method="env://", rank=0, world_size=1, timeout=datetime.timedelta(seconds=60))
t = torch.ones(1); dist.all_reduce(t); assert t.item() == 1.0
print(sorted({c.laddr.ip for c in psutil.Process().net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}))
dist.destroy_process_group()
"""
    out = {}
    for mode in ("plain", "guard"):
        proc = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert proc.returncode == 0, proc.stderr[-2000:]
        out[mode] = proc.stdout.strip().splitlines()[-1]
    assert "'::'" in out["plain"] or "'0.0.0.0'" in out["plain"], out  # torch alone: every interface
    assert out["guard"] == "['127.0.0.1']", out


DRIVER = """
import sys, time, ray
ctx = ray.init(configure_logging=False, log_to_driver=False)   # as jobs/run.py starts a local instance
assert ray.get(ray.remote(lambda: 1).remote()) == 1
print("ready", ctx.dashboard_url, flush=True)
sys.stdin.readline()
ray.shutdown()
"""


def _driver_listeners(extra_env: dict[str, str]) -> tuple[set, str]:
    """LISTEN sockets of a driver that starts a local Ray instance, and its dashboard's host:port."""
    short = Path(tempfile.mkdtemp(prefix="rl", dir="/tmp"))
    try:
        proc = subprocess.Popen([sys.executable, "-c", DRIVER], env=_ray_env(short, extra_env), cwd=short,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            ready, dashboard = proc.stdout.readline().split()
            assert ready == "ready"
            seen: set = set()
            for _ in range(10):  # the agents come up a few seconds after ray.init returns
                seen |= _listeners(proc.pid)
                if any("dashboard/agent.py" in cmd for *_, cmd in seen) and \
                        any("runtime_env/agent" in cmd for *_, cmd in seen):
                    break
                time.sleep(1.0)
            proc.stdin.write("\n")
            proc.stdin.flush()
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return seen, dashboard
    finally:
        shutil.rmtree(short, ignore_errors=True)


def test_ray_default_start_listens_beyond_loopback_and_the_setting_fixes_it():
    """Why jobs/run.py needs RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: a bare local ``ray.init()`` on
    Linux (Ray 2.60) keeps its dashboard UI on 127.0.0.1 but binds GCS, raylet, object manager and
    core workers on all interfaces (::), its agents and the metrics ports on 0.0.0.0 or the node's
    address."""
    default, dashboard = _driver_listeners({})
    host, port = dashboard.rsplit(":", 1)
    assert host == "127.0.0.1" and ("127.0.0.1", int(port)) in {(ip, p) for ip, p, _ in default}, _show(default)
    assert any(not _is_loopback(ip) for ip, _, _ in default), \
        f"Ray now binds loopback by default; the setting may no longer be needed:\n{_show(default)}"
    fixed, _ = _driver_listeners(LOOPBACK_RAY_ENV)
    assert len(fixed) >= 5 and all(_is_loopback(ip) for ip, _, _ in fixed), _show(fixed)


def test_s3_test_server_listens_on_loopback_only():
    from raypipe.testing import S3TestServer

    with S3TestServer() as server:
        seen = _listeners(server.pid)
        assert {port for _, port, _ in seen} == {server.port}, _show(seen)
        assert all(_is_loopback(ip) for ip, _, _ in seen), _show(seen)


def _manifest_allowed_hosts() -> str:
    docs = list(yaml.safe_load_all((REPO / "cluster" / "mlflow.yaml").read_text()))
    deploy = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "raypipe-mlflow")
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    return next(a.split("=", 1)[1] for a in args if a.startswith("--allowed-hosts="))


def test_mlflow_server_listens_on_loopback_and_refuses_foreign_host_headers(tmp_path):
    """The MLflow server helper binds 127.0.0.1; with cluster/mlflow.yaml's --allowed-hosts it
    serves its Service's name and a port-forward, and refuses any other Host (DNS rebinding)."""
    import urllib.error
    import urllib.request

    from raypipe.testing.mlflow_server import MLflowTestServer

    with MLflowTestServer(tmp_path / "mlflow.db", tmp_path / "artifacts", allowed_hosts=_manifest_allowed_hosts()) as s:
        seen = _listeners(s.pid)
        assert s.port in {port for _, port, _ in seen}
        assert all(_is_loopback(ip) for ip, _, _ in seen), _show(seen)
        # the backend store URI travels in the environment, not on the command line (ps shows argv)
        assert all(s.backend_store_uri not in cmd for *_, cmd in seen)

        def status(host: str) -> int:
            req = urllib.request.Request(f"{s.uri}/api/2.0/mlflow/experiments/search?max_results=1",
                                         headers={"Host": host})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code

        for ok in ("raypipe-mlflow:5000", "raypipe-mlflow.raypipe.svc:5000", "raypipe-mlflow.raypipe.svc.cluster.local:5000",
                   f"127.0.0.1:{s.port}",
                   f"localhost:{s.port}"):
            assert status(ok) == 200, ok
        for bad in ("evil.example:5000", "raypipe-mlflow.evil.example:5000", "10.0.0.5:5000"):
            assert status(bad) == 403, bad
