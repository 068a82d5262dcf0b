"""``jobs/run.py`` as a user runs it: any registered method end to end from the command line, a
terminal for people (progress per stage and epoch, then the table; no Ray Train report reprs or
checkpoint paths), the full log in a file, and a rerun that reuses every stage."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from conftest import REPO

TINY_MODEL = {"kind": "resnet", "depth": 10, "width": 4, "stem": "small", "norm": "group"}
TINY_ENCODER = {k: v for k, v in TINY_MODEL.items() if k != "kind"}
TRAIN = {"epochs": 2, "batch_size": 16}


def run_job(args, cwd, timeout=900):
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "run.py"), *args, "--address", "local"], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def test_list_names_the_methods(tmp_path):
    rc, out, _ = run_job(["--list"], tmp_path, timeout=120)
    assert rc == 0
    for name in ("mtts", "source_only", "kd_s"):
        assert re.search(rf"^\s+{name}\s+\S", out, re.M), out


@pytest.fixture(scope="module")
def kd_s_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kd_s")
    cfg = {"data": {"benchmark": {"out": str(tmp / "bench"), "tiles": 40, "size": 16, "scene_size": 10}},
           "stages": {"source": {"model": TINY_MODEL, "train": TRAIN},
                      "student": {"model": {"kind": "multimodal", "optical": TINY_ENCODER, "sar": TINY_ENCODER},
                                  "train": TRAIN}},
           "tracking": {"uri": f"sqlite:///{tmp}/mlflow.db"}, "ray": {"storage_path": str(tmp / "runs")}}
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    first = run_job(["--method", "kd_s", "--config", "tiny.yaml"], tmp)
    second = run_job(["--method", "kd_s", "--config", "tiny.yaml"], tmp)
    return tmp, first, second


def test_kd_s_runs_end_to_end_and_the_terminal_is_for_people(kd_s_runs):
    tmp, (rc, out, err), _ = kd_s_runs
    assert rc == 0, err[-3000:]
    terminal = out + err
    assert "KD-S student (optical + SAR)" in out and "source-only (f_S on target optical)" in out
    assert re.search(r"\[1/2\] source: supervised on optical", out)
    assert re.search(r"\[2/2\] student: soft_kd on both from source", out)
    for stage in ("source", "student"):  # one progress line per stage and epoch
        assert re.search(rf"{stage} epoch +1/2 +loss \d", out) and re.search(rf"{stage} epoch +2/2 +loss \d", out)
    assert "TrainingReport(" not in terminal
    assert not re.search(r"checkpoint_\d{4}", terminal)  # no Ray Train checkpoint paths
    assert "Execution plan" not in terminal and "Starting execution of Dataset" not in terminal
    assert "DeprecationWarning" not in terminal  # libraries' warnings go to the log file
    log = re.search(r"full log: (\S+)", out).group(1)
    assert (tmp / log).is_file() and (tmp / log).stat().st_size > 0


def test_kd_s_rerun_reuses_every_stage(kd_s_runs):
    _, _, (rc, out, err) = kd_s_runs
    assert rc == 0, err[-3000:]
    assert "2 stages, 2 reused" in out
    assert out.count("reused run") == 2
