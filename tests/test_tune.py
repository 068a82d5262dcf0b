"""Ray Tune sweeps (``jobs/tune.py``, ``raypipe.tune``): search-space files checked against the method's
configuration, the stages a sweep shares found from stage keys, and a real sweep whose driver is killed
mid-way and resumed: finished trials are not rerun, the shared stage is trained once, every trial is a
nested MLflow run, and ``best.yaml`` reruns with ``jobs/run.py`` reusing every stage."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import REPO
from raypipe.errors import ConfigError
from raypipe.tune import Sweep, load_space, shared_stages
from raypipe.tune.space import as_overrides

TINY_MODEL = {"kind": "resnet", "depth": 10, "width": 4, "stem": "small", "norm": "group"}
TINY_ENCODER = {k: v for k, v in TINY_MODEL.items() if k != "kind"}


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


# --- search-space files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("body, field, words", [
    ("params:\n  stages.target.irm.alpha: {gaussian: [0, 1]}\n", "params.stages.target.irm.alpha", "unknown distribution"),
    ("params:\n  stages.target.irm.alpha: {uniform: [2, 1]}\n", "params.stages.target.irm.alpha", "low < high"),
    ("params:\n  stages.target.irm.alpha: {loguniform: [0, 1]}\n", "params.stages.target.irm.alpha", "low > 0"),
    ("params:\n  stages.aux_sar.filter.threshold: {same_as: stages.aux_optical.filter.threshold}\n",
     "params.stages.aux_sar.filter.threshold.same_as", "not a swept parameter"),
    ("space:\n  x: 1\n", "space", "unknown key"),
    ("description: nothing\n", "params", "must map dotted config paths"),
])
def test_space_file_errors_name_the_file_and_the_entry(tmp_path, body, field, words):
    path = write(tmp_path / "space.yaml", body)
    with pytest.raises(ConfigError) as err:
        load_space(path)
    assert err.value.field == f"{path}: {field}" and words in err.value.problem


def test_space_paths_and_values_are_checked_against_the_method_before_anything_runs(tmp_path):
    typo = write(tmp_path / "typo.yaml", "params:\n  stages.target.irm.alhpa: {uniform: [0.1, 2]}\n")
    with pytest.raises(ConfigError) as err:
        Sweep.build("mtts", load_space(typo))
    assert err.value.field == f"{typo}: params.stages.target.irm.alhpa"
    out_of_range = write(tmp_path / "range.yaml", "params:\n  stages.aux_optical.filter.threshold: {uniform: [0.5, 1.5]}\n")
    with pytest.raises(ConfigError) as err:
        Sweep.build("mtts", load_space(out_of_range))
    assert "1.5" in err.value.problem and "stages.aux_optical.filter.threshold" in err.value.problem
    continuous = write(tmp_path / "c.yaml", "params:\n  stages.target.irm.alpha: {uniform: [0.1, 2]}\n")
    with pytest.raises(ConfigError) as err:
        Sweep.build("mtts", load_space(continuous), search="grid")
    assert err.value.field == "--search"
    with pytest.raises(ConfigError) as err:
        Sweep.build("mtts", load_space(continuous), metric="test_oa")
    assert err.value.field == "--metric"


def test_optuna_search_without_optuna_installed_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    space = write(tmp_path / "a.yaml", "params:\n  stages.target.irm.alpha: {uniform: [0.1, 2]}\n")
    with pytest.raises(ConfigError) as err:
        Sweep.build("mtts", load_space(space), search="optuna")
    assert err.value.field == "--search" and "raypipe[optuna]" in err.value.problem


def test_tied_paths_take_the_drawn_value_and_overrides_parse_back_to_the_same_values():
    space = load_space(str(REPO / "configs" / "sweeps" / "mtts_filter.yaml"))
    values = space.assignment({"stages.aux_optical.filter.rule": "margin", "stages.aux_optical.filter.threshold": 0.73,
                               "stages.aux_optical.filter.max_cloud_fraction": 0.1})
    assert values["stages.aux_sar.filter.threshold"] == 0.73 and values["stages.aux_sar.filter.rule"] == "margin"
    sweep = Sweep.build("mtts", space)
    cfg = sweep.config(values)
    for stage in ("aux_optical", "aux_sar"):
        f = getattr(cfg.stages, stage).filter
        assert (f.rule, f.threshold, f.max_cloud_fraction) == ("margin", 0.73, 0.1)
    assert as_overrides({"a.b": True, "c": 1e-4, "d": "x"}) == ["a.b=true", "c=0.0001", "d=x"]


def test_every_shipped_space_is_valid_for_its_method():
    for path in sorted(glob.glob(str(REPO / "configs" / "sweeps" / "*.yaml"))):
        name = os.path.basename(path)
        method = next((m for m in ("kd_s", "cloudseg") if name.startswith(m)), "mtts")
        Sweep.build(method, load_space(path))


def test_shared_stages_are_the_ones_no_swept_value_changes(tmp_path):
    """A sweep over the stage-1 threshold shares f_S only; one over IRM's alpha shares stages 0 and 1
    (found by planning, i.e. from the stage keys, not from the names)."""
    extra = {"data": {"benchmark": {"out": str(tmp_path / "bench"), "tiles": 20, "size": 16, "scene_size": 10}},
             "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"}}
    threshold = write(tmp_path / "t.yaml", "params:\n  stages.aux_optical.filter.threshold: {uniform: [0.4, 0.9]}\n"
                                           "  stages.aux_sar.filter.threshold: {same_as: stages.aux_optical.filter.threshold}\n")
    alpha = write(tmp_path / "a.yaml", "params:\n  stages.target.irm.alpha: {loguniform: [0.2, 5.0]}\n")
    optical_only = write(tmp_path / "o.yaml", "params:\n  stages.aux_optical.filter.threshold: {uniform: [0.4, 0.9]}\n")
    clouds = write(tmp_path / "c.yaml", "params:\n  data.pipeline.clouds.detector: {choice: [s2cloudless, rule]}\n")
    assert shared_stages(Sweep.build("mtts", load_space(threshold), extra=extra)) == ["source"]
    assert shared_stages(Sweep.build("mtts", load_space(alpha), extra=extra)) == ["source", "aux_optical", "aux_sar"]
    assert shared_stages(Sweep.build("mtts", load_space(optical_only), extra=extra)) == ["source", "aux_sar"]
    # the cloud detector feeds every target view; f_S trains on clear source tiles but its key holds the data settings
    assert shared_stages(Sweep.build("mtts", load_space(clouds), extra=extra)) == []


def test_best_yaml_holds_the_method_the_base_settings_and_the_trial_values(tmp_path):
    base = write(tmp_path / "base.yaml", yaml.safe_dump({"stages": {"target": {"train": {"epochs": 3}}}}))
    space = write(tmp_path / "a.yaml", "params:\n  stages.target.irm.alpha: {loguniform: [0.2, 5.0]}\n")
    sweep = Sweep.build("mtts", load_space(space), config_file=base, overrides=["stages.target.irm.w_min=0.2"],
                        extra={"tracking": {"uri": "sqlite:///x.db"}, "ray": {"num_workers": 2}})
    best = sweep.best_config_dict({"stages.target.irm.alpha": 2.5})
    assert best["method"] == "mtts" and "tracking" not in best and "ray" not in best
    assert best["stages"]["target"]["train"]["epochs"] == 3
    assert best["stages"]["target"]["irm"] == {"w_min": 0.2, "alpha": 2.5}
    from raypipe.engine import resolve
    from raypipe.methods import get_method

    path = write(tmp_path / "best.yaml", yaml.safe_dump(best))
    cfg = resolve(get_method("mtts"), path)
    assert (cfg.stages.target.irm.alpha, cfg.stages.target.irm.w_min, cfg.stages.target.train.epochs) == (2.5, 0.2, 3)
    with pytest.raises(ConfigError) as err:
        resolve(get_method("kd_s"), path)
    assert err.value.field == "method"


# --- a real sweep, killed and resumed -------------------------------------------------------------------

def _terminated(exp_dir: str) -> set[str]:
    done = set()
    for f in glob.glob(os.path.join(exp_dir, "experiment_state-*.json")):
        try:
            with open(f) as fh:
                state = json.load(fh)
        except (OSError, ValueError):
            continue  # being written
        for item in state.get("trial_data", []):
            t = json.loads(item[0])
            if t.get("status") == "TERMINATED":
                done.add(t["trial_id"])
    return done


def _runs(tracking_uri: str, flt: str):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("raypipe")
    return client.search_runs([exp.experiment_id], filter_string=flt, max_results=1000)


@pytest.mark.timeout(1500)  # two sweep drivers, five stage trainings, a jobs/run.py rerun
def test_a_sweep_whose_driver_died_resumes_without_rerunning_finished_trials(tmp_path):
    cfg = {"data": {"benchmark": {"out": str(tmp_path / "bench"), "tiles": 40, "size": 16, "scene_size": 10}},
           "stages": {"source": {"model": TINY_MODEL, "train": {"epochs": 1, "batch_size": 16}},
                      "student": {"model": {"kind": "multimodal", "optical": TINY_ENCODER, "sar": TINY_ENCODER},
                                  "train": {"epochs": 2, "batch_size": 16}}},
           "ray": {"storage_path": str(tmp_path / "runs")}}
    write(tmp_path / "tiny.yaml", yaml.safe_dump(cfg))
    write(tmp_path / "space.yaml", "params:\n  stages.student.temperature: {choice: [1.0, 2.0, 4.0, 8.0]}\n"
                                   "  stages.student.train.lr: {loguniform: [0.0005, 0.01]}\n")
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    args = [sys.executable, str(REPO / "jobs" / "tune.py"), "--method", "kd_s", "--space", "space.yaml",
            "--config", "tiny.yaml", "--trials", "3", "--concurrency", "1", "--scheduler", "fifo",
            "--name", "resume-test", "--tune-storage", str(tmp_path / "tune"), "--tracking-uri", tracking,
            "--address", "local"]
    exp_dir = str(tmp_path / "tune" / "resume-test")
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(args, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 600
    try:
        while len(_terminated(exp_dir)) < 2:
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "two trials did not finish in 10 minutes"
            time.sleep(0.5)
        done_before = _terminated(exp_dir)
        os.kill(first.pid, signal.SIGKILL)  # the sweep's driver dies
        first.wait(30)
    finally:
        time.sleep(2)
        try:
            os.killpg(first.pid, signal.SIGKILL)  # and whatever it had started (its local Ray)
        except ProcessLookupError:
            pass
        log.close()
    assert len(done_before) in (2, 3)

    second = subprocess.run([*args, "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "3 trials: 3 finished" in second.stdout, second.stdout

    sweep_runs = _runs(tracking, "tags.`raypipe.kind` = 'sweep'")
    assert len(sweep_runs) == 1 and sweep_runs[0].info.status == "FINISHED"  # one sweep run, continued
    sweep_id = sweep_runs[0].info.run_id
    trials = _runs(tracking, f"tags.`mlflow.parentRunId` = '{sweep_id}' AND tags.`raypipe.kind` = 'pipeline'")
    by_trial: dict[str, list] = {}
    for r in trials:
        if "raypipe.trial_id" in r.data.tags:
            by_trial.setdefault(r.data.tags["raypipe.trial_id"], []).append(r)
    assert len(by_trial) == 3  # every trial is a pipeline run nested under the sweep run
    for trial_id in done_before:  # trials finished before the kill were not run again
        assert len(by_trial[trial_id]) == 1 and by_trial[trial_id][0].info.status == "FINISHED"
    assert all(any(r.info.status == "FINISHED" for r in runs) for runs in by_trial.values())
    source_trainings = _runs(tracking, "tags.`raypipe.kind` = 'stage' AND tags.`raypipe.stage` = 'source'")
    assert len(source_trainings) == 1  # the shared stage was trained once, before the trials, and reused after
    students = _runs(tracking, "tags.`raypipe.kind` = 'stage' AND tags.`raypipe.stage` = 'student'")
    assert len({r.data.tags["raypipe.stage_key"] for r in students}) == 3
    # trials evaluated val only; the best one's stages were evaluated on test at the end, once
    with_test = [r for r in students if "target_test/oa" in r.data.metrics]
    assert len(with_test) == 1 and all("target_val/oa" in r.data.metrics for r in students)

    rows = list(__import__("csv").DictReader(open(os.path.join(exp_dir, "trials.csv"))))
    best_row = max(rows, key=lambda r: float(r["val/oa"]))
    best = yaml.safe_load(open(os.path.join(exp_dir, "best.yaml")))
    assert best["stages"]["student"]["temperature"] == float(best_row["stages.student.temperature"])
    assert with_test[0].data.tags["raypipe.stage_key"] in {
        r.data.tags["raypipe.stage_key"] for r in students if r.data.tags.get("mlflow.parentRunId") in
        {t.info.run_id for t in by_trial[best_row["trial_id"]]}}

    rerun = subprocess.run([sys.executable, str(REPO / "jobs" / "run.py"), "--method", "kd_s", "--config",
                            os.path.join(exp_dir, "best.yaml"), "--tracking-uri", tracking, "--address", "local"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "2 stages, 2 reused" in rerun.stdout, rerun.stdout
