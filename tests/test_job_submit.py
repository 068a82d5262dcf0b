"""jobs/mtts.py runs unchanged under `ray job submit --working-dir .` against a running head that this
test starts itself (`ray start --head`, Ray 2.60 token authentication) and stops."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from conftest import REPO, free_port

TINY = {"stages": {s: {"model": {"kind": "resnet", "depth": 10, "width": 4, "stem": "small"}, "train": {"epochs": 1}}
                   for s in ("source", "aux_optical", "aux_sar")}}
TINY["stages"]["target"] = {"model": {"kind": "multimodal", "optical": {"depth": 10, "width": 4, "stem": "small"},
                                      "sar": {"depth": 10, "width": 4, "stem": "small"}}, "train": {"epochs": 1}}


@pytest.fixture
def ray_head():
    short = Path(tempfile.mkdtemp(prefix="rj", dir="/tmp"))  # unix socket paths must stay short
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "HOME": str(short), "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    subprocess.run([str(bin_dir / "ray"), "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    gcs, dash, agent_http, agent_grpc, runtime_env, metrics = (free_port() for _ in range(6))
    # Every port explicit: the session's own ray.init (conftest) already holds the agent's default 52365,
    # and a second agent on that port never registers, so the head would refuse every job.
    head = subprocess.Popen([str(bin_dir / "ray"), "start", "--head", "--block", f"--port={gcs}",
                             f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1", "--num-cpus=4",
                             f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
                             f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
                             f"--temp-dir={short / 'ray'}", "--include-dashboard=true"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 360
    while time.time() < deadline:  # ready = a trivial job goes through (the job agent starts after the dashboard)
        r = subprocess.run([str(bin_dir / "ray"), "job", "submit", "--address", address, "--", "true"],
                           env=env, capture_output=True, timeout=120)
        if r.returncode == 0:
            break
        time.sleep(3)
    else:
        os.killpg(head.pid, signal.SIGKILL)
        agent_logs = "".join(p.read_text(errors="replace")[-1500:] for p in (short / "ray").rglob("dashboard_agent*.log"))
        pytest.fail(f"ray head did not accept a job within 6 minutes: {(r.stdout + r.stderr)[-800:]!r}\n"
                    f"dashboard agent log:\n{agent_logs}")
    yield address, env, short
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
    shutil.rmtree(short, ignore_errors=True)


def test_mtts_under_ray_job_submit(ray_head, tmp_path):
    address, env, short = ray_head
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "data": {"benchmark": {"out": str(tmp_path / "bench"), "tiles": 40,
                                                                   "size": 16, "scene_size": 10}}}))
    db = tmp_path / "mlflow.db"
    cmd = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", address,
           "--working-dir", str(REPO), "--", "python", "jobs/mtts.py", "--config", str(cfg),
           "--tracking-uri", f"sqlite:///{db}", "--storage-path", str(tmp_path / "runs")]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "target f_T (IRM)" in out.stdout and "succeeded" in out.stdout
    runs = mlflow.MlflowClient(f"sqlite:///{db}").search_runs(
        [mlflow.MlflowClient(f"sqlite:///{db}").get_experiment_by_name("raypipe").experiment_id],
        "tags.`raypipe.kind` = 'stage'")
    assert sorted(r.data.tags["raypipe.stage"] for r in runs) == ["aux_optical", "aux_sar", "source", "target"]
    assert all(r.info.status == "FINISHED" for r in runs)
    # without the token, the cluster refuses the submission
    no_token = {k: v for k, v in env.items()}
    no_token["HOME"] = str(tmp_path)  # no ~/.ray/auth_token there
    denied = subprocess.run(cmd[:4] + ["--", "true"], env=no_token, capture_output=True, text=True, timeout=120)
    assert denied.returncode != 0
