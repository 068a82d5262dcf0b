"""benchmarks/gpu_check.sh on a machine without a GPU (this one, CI): exit 0, one line saying "no GPU",
a JSON {"gpu": false, ...}, and nothing started (no Ray, no tile generation). Plus the helper's pure
parts (nvidia-smi sample parsing, epoch windows, the summary), which the GPU run relies on.

The full path on CPU (``bash benchmarks/gpu_check.sh --cpu-smoke``) takes minutes on 2 shared cores,
so it is not in the suite; docs/benchmarks-gpu.md says how to run it."""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def load_helper(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_gpu_check", REPO / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def no_gpu_env(tmp_path: Path, **extra) -> dict:
    """This environment with no nvidia-smi on PATH (whatever this machine has) and python3 = this Python."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python3").symlink_to(sys.executable)
    keep = [p for p in os.environ.get("PATH", "").split(os.pathsep)
            if p and not (Path(p) / "nvidia-smi").exists()]
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "PYTHON")}
    env["PATH"] = os.pathsep.join([str(bin_dir), *keep])
    env.update(extra)
    return env


def run_script(args, env, cwd) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(SCRIPT), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    return proc, time.monotonic() - t0


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_no_gpu_says_so_exits_0_and_writes_json_under_out(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc, seconds = run_script([], no_gpu_env(tmp_path, OUT=str(out)), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "no GPU" in lines[0], proc.stdout
    data = json.loads((out / "gpu_check.json").read_text())
    assert data["gpu"] is False and data["benchmark"] == "gpu_check"
    assert "nvidia-smi" in data["reason"]
    assert seconds < 30  # no Ray, no generated tiles
    assert not (tmp_path / "gpu_check.json").exists()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_no_gpu_without_out_writes_to_the_current_folder_and_starts_nothing(tmp_path):
    env = no_gpu_env(tmp_path)
    # If the script got past the GPU test it would start Python with ray; make that an error here.
    env["PYTHON"] = sys.executable
    env["RAY_ADDRESS"] = "127.0.0.1:1"  # any ray.init would fail on this
    proc, seconds = run_script(["--tiles", "1024", "--epochs", "3"], env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "no GPU" in proc.stdout and "nvidia-smi not found" in proc.stdout
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["gpu"] is False
    assert not list(tmp_path.glob("gpu-check-*")) and seconds < 30


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_a_gpu_listed_but_no_usable_environment_fails_fast_with_a_clear_error(tmp_path):
    """A fake nvidia-smi that lists a GPU, and PYTHON naming an environment without ray: exit 3 at
    once, saying what is missing, with a JSON that says so (the device machine's case)."""
    env = no_gpu_env(tmp_path)
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0000)'\n")
    fake.chmod(0o755)
    bare = tmp_path / "bare-python"  # a Python that finds no torch or ray
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -S -I \"$@\"\n")
    bare.chmod(0o755)
    env["PYTHON"] = str(bare)
    proc, seconds = run_script([], env, cwd=tmp_path)
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert "no usable Python environment" in proc.stderr and "missing" in proc.stderr
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["gpu"] is True and "ray" in data["error"]
    assert seconds < 30


def test_nvidia_smi_samples_parse(monkeypatch):
    mod = load_helper(monkeypatch)
    t = mod.parse_sample("2026/12/01 10:00:00.500, 87, 40960\n", arrival=0.0)
    assert t == (datetime.datetime(2026, 12, 1, 10, 0, 0, 500000).timestamp(), 87.0, 40960.0)
    assert mod.parse_sample("garbled, 87, 40960", arrival=5.0) == (5.0, 87.0, 40960.0)
    assert mod.parse_sample("2026/12/01 10:00:00.500, [N/A], 40960", arrival=0.0) is None
    assert mod.parse_sample("No devices were found", arrival=0.0) is None
    cmd = mod.GpuSampler(500).cmd
    assert cmd[:4] == ["nvidia-smi", "--query-gpu=timestamp,utilization.gpu,memory.used",
                       "--format=csv,noheader,nounits", "-lms"] and cmd[4] == "500"


def test_summary_matches_samples_to_each_epochs_training_steps(monkeypatch):
    mod = load_helper(monkeypatch)
    history = [{"epoch": e, "train/samples_per_s": sps, "train/epoch_s": 4.0, "train/data_wait_fraction": w,
                "train/samples": 512, "val/oa": 0.5, "_logged_at": logged}
               for e, sps, w, logged in [(0, 100.0, 0.5, 20.0), (1, 300.0, 0.2, 30.0), (2, 320.0, 0.1, 40.0)]]
    steps = [15.0, 17.0, 19.0, 25.0, 27.0, 29.0, 35.0, 37.0, 39.0]
    samples = [(10.0, 0.0, 1000.0), (16.0, 50.0, 9000.0), (22.0, 0.0, 9000.0), (26.0, 80.0, 20000.0),
               (28.0, 90.0, 20000.0), (36.0, 100.0, 21000.0), (45.0, 0.0, 30000.0)]
    rounds = [{"samples_per_s": 900.0}, {"samples_per_s": 1000.0}]
    s = mod.summarise(history, steps, samples, rounds)
    assert [e["steps_timed"] for e in s["epochs"]] == [3, 3, 3]
    assert s["gpu_util_pct"] == [50.0, 85.0, 100.0]
    assert s["steady_samples_per_s"] == 310.0  # median of epochs 2..3
    assert s["steady_data_wait_fraction"] == pytest.approx(0.15)
    assert s["mean_gpu_util_pct_training"] == pytest.approx((50 + 80 + 90 + 100) / 4)
    assert s["peak_gpu_mem_mib"] == 30000.0 and s["peak_gpu_mem_mib_training"] == 21000.0
    assert s["predict_samples_per_s"] == [900.0, 1000.0]
    # CPU smoke: no samples, one epoch -> figures from that epoch, GPU ones None
    one = mod.summarise(history[:1], steps[:3], [], rounds[:1])
    assert one["steady_samples_per_s"] == 100.0 and one["steady_gpu_util_pct"] is None
    assert one["peak_gpu_mem_mib"] is None


def test_helper_imports_only_the_standard_library():
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import gpu_check; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray', 'raypipe', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
