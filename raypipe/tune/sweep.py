"""A Ray Tune sweep of any registered method: each trial is the method's pipeline with the trial's
values under the same dotted paths as ``--set``.

    sweep = Sweep.build("mtts", load_space("configs/sweeps/mtts_filter.yaml"), trials=8)
    outcome = run_sweep(sweep)          # or run_sweep(sweep, resume=True) after the driver died
    print(outcome.best_values, outcome.best_yaml)

What happens, in order:

1. **Checked on the driver**: the space's paths and bounds against the method's configuration
   (:func:`raypipe.tune.space.check_space`), the search and scheduler.
2. **Shared stages first**: the stages whose key no swept value changes (found by planning the
   pipeline at a few values of each parameter) are trained, or reused, once, before any trial
   starts, so concurrent trials never race to train the same stage. A sweep over the stage-1
   threshold then trains stages 1 and 2 per trial; one over IRM's alpha, stage 2 only.
3. **Trials** (``Tuner`` with a function trainable): each runs the pipeline, nested under the sweep's
   MLflow run, reusing every stage whose key it does not change. Its stages are evaluated on **val**
   only. The last stage's Ray Train run reports each epoch's val metrics to Tune
   (``TuneReportCallback``), so ASHA can stop a bad trial early; the trial then reports the
   selected model's val metric once more as its result.
4. **The end**: the trial table (``trials.csv``), a plot of the val metric against each swept
   parameter, and ``best.yaml`` are logged to the sweep run. The best trial's pipeline is then run
   again with its configuration: every stage is reused and evaluated on **test**, once.

The metric is ``val_labels`` (target val accuracy: oracle, labelled so) or ``val_objective`` (the
last stage's own loss on val, label-free; comparable between trials only while the swept values do
not change what that loss is). Resume (``resume=True``) restores the Tune experiment
(``Tuner.restore``): finished trials are not rerun, and trials that were running start again, their
interrupted stages continuing from their latest Ray Train checkpoint (same MLflow run, same key).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from raypipe.errors import ConfigError
from raypipe.tune.space import SearchSpace, as_overrides, check_space

log = logging.getLogger(__name__)

METRICS = {"val_labels": ("val/oa", "max"), "val_objective": ("val/objective", "min")}
SEARCHES = ("random", "grid", "optuna")
SCHEDULERS = ("asha", "fifo")
STATE_FILE = "raypipe_sweep.json"


@dataclass
class Sweep:
    method: str
    space: SearchSpace
    config_file: str | None = None
    overrides: list[str] = field(default_factory=list)  # the base --set values
    extra: dict = field(default_factory=dict)  # CLI flags as config (tracking, ray, data)
    trials: int = 8
    search: str = "random"
    scheduler: str = "asha"
    concurrency: int = 0  # 0 = as many as the cluster's CPUs allow (see concurrency_for)
    metric: str = "val_labels"
    name: str = ""
    storage: str = ""  # where Tune keeps the experiment ("" = <cwd>/runs/tune)
    seed: int = 0  # the search's own seed
    grace_period: int = 2  # ASHA: epochs a trial gets before it can be stopped
    trial_cpus: float = 0.1  # CPUs a trial's driver holds (it mostly waits on its Ray Train run; Tune needs > 0)
    cwd: str = ""  # the driver's working directory: trials run there (Tune would put them in trial folders)
    run_id: str = ""  # the sweep's MLflow run (set by run_sweep)
    objective_stage: str = ""  # the stage whose val metric is the trial's (set by build)
    objective_prefix: str = ""  # its evaluation prefix on val (e.g. target_val)

    @classmethod
    def build(cls, method_name: str, space: SearchSpace, **kw) -> "Sweep":
        """A sweep, checked: the method, the space against its configuration, search, scheduler, metric."""
        from raypipe.engine.method import val_twin
        from raypipe.methods import get_method

        method = get_method(method_name)
        sweep = cls(method_name, space, **kw)
        sweep.cwd = os.getcwd()
        if sweep.config_file and "://" not in sweep.config_file:
            sweep.config_file = os.path.abspath(sweep.config_file)
        if sweep.search not in SEARCHES:
            raise ConfigError("--search", f"must be one of {', '.join(SEARCHES)}, not {sweep.search!r}")
        if sweep.scheduler not in SCHEDULERS:
            raise ConfigError("--scheduler", f"must be one of {', '.join(SCHEDULERS)}, not {sweep.scheduler!r}")
        if sweep.metric not in METRICS:
            raise ConfigError("--metric", f"must be one of {', '.join(METRICS)}, not {sweep.metric!r}")
        if sweep.trials < 1:
            raise ConfigError("--trials", "must be >= 1")
        if sweep.search == "optuna":
            try:
                import optuna  # noqa: F401
            except ImportError:
                raise ConfigError("--search", "optuna is not installed: pip install 'raypipe[optuna]' "
                                              "(or use --search random|grid)") from None
        space.tune_space(sweep.search)  # grid search over continuous values fails here
        rows = [r for r in method.table if not method.main_stage or r.stage == method.main_stage]
        row = rows[-1] if rows else None
        sweep.objective_stage = row.stage if row else method.stages[-1].name
        test_prefix = row.prefix if row else next(iter(method.stage(sweep.objective_stage).evaluate))
        sweep.objective_prefix = val_twin(test_prefix) if test_prefix.endswith("_test") else test_prefix
        if sweep.metric == "val_objective":  # the loop computes the val loss only for this selection
            sweep.overrides = [*sweep.overrides, f"stages.{sweep.objective_stage}.train.selection=val_objective"]
        sweep.name = sweep.name or f"{method_name}-{os.path.splitext(os.path.basename(space.source))[0]}"
        check_space(space, method, sweep.config_file, sweep.overrides, sweep.extra)
        sweep.base_config()  # the base configuration itself must resolve
        return sweep

    # -- configurations -------------------------------------------------------------------------

    @property
    def oracle(self) -> bool:
        return self.metric == "val_labels"

    @property
    def task_metric(self) -> str:
        """The val metric ``val_labels`` maximises: the method's task's (OA for scenes, mIoU for segmentation)."""
        from raypipe.engine.task import TASKS

        return TASKS.get(self.method_obj().task, "task").selection_metric

    @property
    def metric_key(self) -> str:
        return f"val/{self.task_metric}" if self.metric == "val_labels" else METRICS[self.metric][0]

    @property
    def mode(self) -> str:
        return METRICS[self.metric][1]

    def method_obj(self):
        from raypipe.methods import get_method

        return get_method(self.method)

    def config(self, values: dict[str, Any] | None = None, name: str = ""):
        from raypipe.engine import resolve

        sets = [*self.overrides, *as_overrides(values or {})]
        if name:
            sets.append(f"name={name}")
        return resolve(self.method_obj(), self.config_file, sets, self.extra)

    def base_config(self):
        return self.config()

    def best_config_dict(self, values: dict[str, Any]) -> dict:
        """``best.yaml``: the method, the base configuration's file and ``--set`` values and the best
        trial's values, as one nested mapping ``jobs/run.py --config`` accepts. ``tracking`` and
        ``ray`` (where it runs, not what it is) are left to the command line."""
        from raypipe.config import apply_overrides, deep_merge, load_yaml

        data: dict = load_yaml(self.config_file) if self.config_file else {}
        data.pop("method", None)
        data = deep_merge(data, {k: v for k, v in self.extra.items() if k not in ("tracking", "ray")})
        data = apply_overrides(data, [*self.overrides, *as_overrides(values)])
        for k in ("tracking", "ray"):
            data.pop(k, None)
        data["name"] = f"{self.name}-best"
        return {"method": self.method, **data}


def concurrency_for(sweep: Sweep, cluster_cpus: float) -> int:
    """Trials at once: each trial's Ray Train workers plus one CPU for its data tasks, so that trial
    drivers never starve their own workers (DESIGN §8)."""
    if sweep.concurrency > 0:
        return sweep.concurrency
    cfg = sweep.base_config()
    per_trial = cfg.ray.num_workers * cfg.ray.cpus_per_worker + 1.0 + sweep.trial_cpus
    return max(1, int(cluster_cpus // per_trial))


# --- which stages the trials share -------------------------------------------------------------------

def stage_keys(sweep: Sweep, values: dict[str, Any], data, lineage) -> dict[str, str]:
    from raypipe.engine.run import plan_stages

    cfg = sweep.config(values)
    return {p.name: p.key for p in plan_stages(sweep.method_obj(), cfg, data, lineage)}


def shared_stages(sweep: Sweep) -> list[str]:
    """Stages whose key is the same at every value tried for every swept parameter (a few per
    parameter: the bounds and the middle, or every choice): these the trials share."""
    from raypipe.engine.data import build_data
    from raypipe.tracking import Lineage

    base_cfg = sweep.base_config()
    lineage = Lineage(base_cfg.tracking.uri or None, base_cfg.tracking.experiment)
    base_data = build_data(base_cfg)
    base = stage_keys(sweep, {}, base_data, lineage)
    changed: set[str] = set()
    for param in sweep.space.params.values():
        for value in param.sample_values():
            values = {param.path: value, **{t: value for t, s in sweep.space.tied.items() if s == param.path}}
            data = build_data(sweep.config(values)) if param.path.startswith("data.") else base_data
            keys = stage_keys(sweep, values, data, lineage)
            changed |= {s for s, k in keys.items() if k != base[s]}
    return [s for s in base if s not in changed]


# --- one trial (runs in a Tune trial actor) ----------------------------------------------------------

def trial_fn(config: dict, sweep: Sweep) -> None:
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from raypipe.engine.run import run_method

    trial_id = tune.get_context().get_trial_id()
    if os.path.isdir(sweep.cwd):  # relative paths (the default MLflow store, data, Ray Train storage) as on the driver
        os.chdir(sweep.cwd)
    values = sweep.space.assignment(config)
    cfg = sweep.config(values, name=f"{sweep.name}-{trial_id}")
    result = run_method(sweep.method_obj(), cfg, evaluate_on="val", parent_run_id=sweep.run_id,
                        tags={"raypipe.sweep": sweep.name, "raypipe.trial_id": trial_id,
                              **{f"raypipe.trial.{k}": v for k, v in values.items()}},
                        fit_callbacks={sweep.objective_stage: [TuneReportCallback()]})
    value = trial_value(sweep, result)
    trained = [s for s, o in result.stages.items() if not o.reused]
    tune.report({sweep.metric_key: value, "raypipe_final": 1.0, "raypipe_pipeline_run": result.parent_run_id,
                 "raypipe_trained": ",".join(trained)})


def trial_value(sweep: Sweep, result) -> float:
    """The trial's metric for its selected model: val OA (mIoU for segmentation) from its val evaluation
    (``val_labels``), or
    the best val loss of its selection (``val_objective``: ``-selection/score``)."""
    outcome = result.stages[sweep.objective_stage]
    if sweep.metric == "val_labels":
        return float(outcome.evaluations[sweep.objective_prefix]["overall"][sweep.task_metric])
    from mlflow import MlflowClient

    run = MlflowClient(result.tracking_uri).get_run(outcome.run_id)
    return -float(run.data.metrics["selection/score"])


# --- the sweep ---------------------------------------------------------------------------------------

@dataclass
class SweepOutcome:
    sweep_run_id: str
    rows: list[dict]  # one per trial: trial_id, status, values, metric, pipeline run
    best: dict | None
    best_yaml: str
    best_table: str = ""
    default_table: str = ""
    shared: list[str] = field(default_factory=list)
    seconds: float = 0.0
    out_dir: str = ""
    timings: dict = field(default_factory=dict)  # shared_s (shared stages), trials_s (Tuner.fit), best_s (test)
    concurrency: int = 1


def _storage(sweep: Sweep) -> str:
    return os.path.abspath(sweep.storage or os.path.join("runs", "tune"))


def _tuner(sweep: Sweep, trainable, concurrency: int, storage: str, callbacks: list):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    epochs = getattr(sweep.base_config().stages, sweep.objective_stage).train.epochs
    if sweep.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=epochs + 1,
                                  grace_period=min(sweep.grace_period, epochs), reduction_factor=2)
    else:
        scheduler = FIFOScheduler()
    if sweep.search == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        search_alg = ConcurrencyLimiter(OptunaSearch(seed=sweep.seed), max_concurrent=concurrency)
    else:
        search_alg = BasicVariantGenerator(max_concurrent=concurrency, random_state=sweep.seed)
    num_samples = 1 if sweep.search == "grid" else sweep.trials
    return tune.Tuner(
        trainable,
        param_space=sweep.space.tune_space(sweep.search),
        tune_config=tune.TuneConfig(metric=sweep.metric_key, mode=sweep.mode, search_alg=search_alg,
                                    scheduler=scheduler, num_samples=num_samples),
        run_config=tune.RunConfig(name=sweep.name, storage_path=storage, verbose=0, callbacks=callbacks,
                                  failure_config=tune.FailureConfig(max_failures=1)),
    )


def local_runtime_env() -> dict:
    """For the local Ray instance this sweep starts: its GCS on a port chosen here, and that address in
    every worker's RAY_ADDRESS. Ray Train's placement-group cleaner (a detached actor) finds its
    cluster through the state API, which, with several Ray instances on one machine (a test session,
    another job), refuses to guess; without it a trial stopped by ASHA keeps its workers' placement
    group and the next trials starve. Also DDP's rendezvous store on loopback, as in jobs/run.py."""
    import socket

    if "RAY_GCS_SERVER_PORT" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["RAY_GCS_SERVER_PORT"] = str(s.getsockname()[1])
    return {"worker_process_setup_hook": "raypipe.engine.netguard.bind_store_to_loopback",
            "env_vars": {"RAY_ADDRESS": f"127.0.0.1:{os.environ['RAY_GCS_SERVER_PORT']}"}}


def _print(line: str) -> None:
    print(line, flush=True)


def run_sweep(sweep: Sweep, resume: bool = False, out_dir: str = "", baseline: bool = False,
              printer=_print) -> SweepOutcome:
    """Run (or, with ``resume``, continue) the sweep; see the module docstring."""
    import ray
    from ray import tune

    from raypipe.config import to_dict
    from raypipe.engine.run import run_method
    from raypipe.tracking import Lineage

    t0 = time.perf_counter()
    storage = _storage(sweep)
    exp_dir = os.path.join(storage, sweep.name)
    state_path = os.path.join(exp_dir, STATE_FILE)
    if resume:
        if not (os.path.exists(state_path) and tune.Tuner.can_restore(exp_dir)):
            raise ConfigError("--resume", f"no sweep named {sweep.name!r} to resume under {storage}")
        with open(state_path) as f:
            sweep.run_id = json.load(f)["run_id"]
    elif os.path.exists(state_path):
        raise ConfigError("--name", f"a sweep named {sweep.name!r} exists under {storage}: pass --resume to "
                                    "continue it, or another --name")
    base = sweep.base_config()
    lineage = Lineage(base.tracking.uri or None, base.tracking.experiment)
    described = {"method": sweep.method, "space": sweep.space.source, "params": sorted(sweep.space.paths),
                 "trials": sweep.trials, "search": sweep.search, "scheduler": sweep.scheduler,
                 "metric": sweep.metric, "seed": sweep.seed, "base_overrides": sweep.overrides}
    tags = {"raypipe.sweep": sweep.name, "raypipe.oracle": "selection" if sweep.oracle else "none",
            "raypipe.method": sweep.method}
    with lineage.pipeline_run(sweep.name, {"sweep": described, "base": to_dict(base)}, tags=tags, kind="sweep",
                              run_id=sweep.run_id or None) as run:
        sweep.run_id = run.run_id
        os.makedirs(exp_dir, exist_ok=True)
        with open(state_path, "w") as f:
            json.dump({"run_id": run.run_id, "method": sweep.method, "space": sweep.space.source}, f)
        t_shared = time.perf_counter()
        shared = shared_stages(sweep)
        tied = "".join(f"; {t} = {src}" for t, src in sweep.space.tied.items())
        printer(f"sweep {sweep.name}: {sweep.method}, {len(sweep.space.params)} swept "
                f"({', '.join(sweep.space.params)}{tied}); shared stages trained once first: {', '.join(shared) or 'none'}")
        if shared:
            run_method(sweep.method_obj(), sweep.config(name=f"{sweep.name}-shared"), only=shared,
                       evaluate_on="val", parent_run_id=run.run_id, tags={"raypipe.sweep": sweep.name})
        concurrency = concurrency_for(sweep, ray.cluster_resources().get("CPU", 1))
        total = sweep.space.grid_size() if sweep.search == "grid" else sweep.trials
        printer(f"{total} trials, {concurrency} at a time, {sweep.search} search, {sweep.scheduler} scheduler, "
                f"metric {sweep.metric}{' (oracle: target val labels)' if sweep.oracle else ''}")
        trainable = tune.with_resources(tune.with_parameters(trial_fn, sweep=sweep), {"cpu": sweep.trial_cpus})
        callbacks = [_Progress(sweep, total, printer)]
        if resume:
            tuner = tune.Tuner.restore(exp_dir, trainable=trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = _tuner(sweep, trainable, concurrency, storage, callbacks)
        t_trials = time.perf_counter()
        grid = tuner.fit()
        t_best = time.perf_counter()
        rows = trial_rows(sweep, grid)
        best = pick_best(sweep, rows)
        out_dir = out_dir or exp_dir
        os.makedirs(out_dir, exist_ok=True)
        outcome = SweepOutcome(run.run_id, rows, best, os.path.join(out_dir, "best.yaml"), shared=shared,
                               out_dir=out_dir, concurrency=concurrency,
                               timings={"shared_s": t_trials - t_shared, "trials_s": t_best - t_trials})
        write_outputs(sweep, outcome, run)
        if best is not None:
            best_cfg = sweep.config(best["values"], name=f"{sweep.name}-best")
            r = run_method(sweep.method_obj(), best_cfg, parent_run_id=run.run_id,
                           tags={"raypipe.sweep": sweep.name, "raypipe.sweep_best": best["trial_id"]})
            outcome.best_table = r.table
            run.log_text(r.table, "best_test.txt")
            if baseline:
                d = run_method(sweep.method_obj(), sweep.config(name=f"{sweep.name}-default"),
                               parent_run_id=run.run_id, tags={"raypipe.sweep": sweep.name})
                outcome.default_table = d.table
                run.log_text(d.table, "default_test.txt")
            run.log_metrics({f"best/{sweep.metric_key}": best["metric"]})
        outcome.timings["best_s"] = time.perf_counter() - t_best
        run.log_metrics({f"time/{k}": v for k, v in outcome.timings.items()})
    outcome.seconds = time.perf_counter() - t0
    return outcome


def trial_rows(sweep: Sweep, grid) -> list[dict]:
    rows = []
    for r in grid:
        m = r.metrics or {}
        values = sweep.space.assignment(r.config)
        status = "error" if r.error else ("finished" if m.get("raypipe_final") else "stopped")
        rows.append({"trial_id": m.get("trial_id", ""), "status": status, "values": values,
                     "metric": m.get(sweep.metric_key), "epochs_reported": m.get("training_iteration"),
                     "pipeline_run": m.get("raypipe_pipeline_run", ""), "trained": m.get("raypipe_trained", "")})
    rows.sort(key=lambda row: row["trial_id"])
    return rows


def pick_best(sweep: Sweep, rows: list[dict]) -> dict | None:
    done = [r for r in rows if r["status"] == "finished" and r["metric"] is not None]
    if not done:
        return None
    return (max if sweep.mode == "max" else min)(done, key=lambda r: r["metric"])


def write_outputs(sweep: Sweep, outcome: SweepOutcome, run) -> None:
    """``trials.csv``, ``trials.png`` (val metric against each swept parameter) and ``best.yaml``,
    next to each other and logged to the sweep run."""
    import yaml

    paths = sweep.space.paths
    csv_path = os.path.join(outcome.out_dir, "trials.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial_id", "status", *paths, sweep.metric_key, "epochs_reported", "trained", "pipeline_run"])
        for r in outcome.rows:
            w.writerow([r["trial_id"], r["status"], *(r["values"].get(p, "") for p in paths), r["metric"],
                        r["epochs_reported"], r["trained"], r["pipeline_run"]])
    run.log_artifact(csv_path, "sweep")
    png = os.path.join(outcome.out_dir, "trials.png")
    plot_trials(sweep, outcome.rows, png)
    run.log_artifact(png, "sweep")
    if outcome.best is not None:
        b = outcome.best
        header = (f"# best trial {b['trial_id']} of sweep {sweep.name} (MLflow run {outcome.sweep_run_id}): "
                  f"{sweep.metric_key} = {b['metric']:.4f} on target val\n"
                  + ("# chosen by target val labels: oracle selection\n" if sweep.oracle else "")
                  + f"# rerun: python jobs/run.py --method {sweep.method} --config best.yaml "
                    "(with the sweep's --tracking-uri) reuses every stage\n")
        with open(outcome.best_yaml, "w") as f:
            f.write(header + yaml.safe_dump(sweep.best_config_dict(b["values"]), sort_keys=False))
        run.log_artifact(outcome.best_yaml, "sweep")
        run.set_tags({"raypipe.sweep_best_trial": b["trial_id"],
                      **{f"raypipe.best.{k}": v for k, v in b["values"].items()}})


def plot_trials(sweep: Sweep, rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = list(sweep.space.params)
    fig, axes = plt.subplots(1, len(params), figsize=(4 * len(params), 3.2), squeeze=False)
    for ax, p in zip(axes[0], params):
        for status, marker, label in (("finished", "o", "finished"), ("stopped", "x", "stopped early")):
            pts = [(r["values"][p], r["metric"]) for r in rows
                   if r["status"] == status and r["metric"] is not None and p in r["values"]]
            if pts:
                xs, ys = zip(*pts)
                if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
                    ax.scatter(xs, ys, marker=marker, label=label)
                else:
                    cats = sorted({str(x) for x in xs})
                    ax.scatter([cats.index(str(x)) for x in xs], ys, marker=marker, label=label)
                    ax.set_xticks(range(len(cats)), cats)
        if sweep.space.params[p].kind == "loguniform":
            ax.set_xscale("log")
        ax.set_xlabel(p.split(".", 1)[-1], fontsize=8)
        ax.set_ylabel(f"{sweep.metric_key}{' (oracle)' if sweep.oracle else ''}")
        ax.legend(fontsize=7)
    fig.suptitle(f"sweep {sweep.name}: {sweep.metric_key} on target val per trial", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class _Progress:
    """A line per finished trial on the console (Tune's own table is off: verbose=0)."""

    def __new__(cls, sweep: Sweep, total: int, printer):
        from ray.tune import Callback

        class Progress(Callback):
            def __init__(self):
                self.done = 0

            def on_trial_complete(self, iteration, trials, trial, **info):
                self._line(trial, "")

            def on_trial_error(self, iteration, trials, trial, **info):
                self._line(trial, "error")

            def _line(self, trial, status):
                self.done += 1
                m = trial.last_result or {}
                values = sweep.space.assignment(trial.config)
                shown = ", ".join(f"{k.rsplit('.', 2)[-2]}.{k.rsplit('.', 1)[-1]}={_fmt(v)}" for k, v in values.items()
                                  if k in sweep.space.params)
                value = m.get(sweep.metric_key)
                n = int(m.get("training_iteration", 0) or 0)
                how = status or ("" if m.get("raypipe_final") else f"stopped after {n} epoch{'s' if n != 1 else ''}")
                printer(f"  trial {self.done}/{total} {trial.trial_id}: {shown} -> "
                        f"{sweep.metric_key} {_fmt(value)}{' (' + how + ')' if how else ''}")

        return Progress()


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
