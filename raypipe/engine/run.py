"""The engine: run a method's stage graph. It knows stages, never methods.

    result = run_method(METHODS.get("my_method"), resolve(METHODS.get("my_method")))
    print(result.table)

For each declared stage, in order:

1. **plan** (all stages, before anything trains): the model spec (class and band counts from the
   data), the model built once on the driver, the objective built from its config section and
   checked, referenced runs checked, and the stage key: a hash of the stage's configuration, its
   teachers' keys and the data hash;
2. **reuse or train**: a finished run with the same key (or the run named by ``from_run``) stands
   for the stage; otherwise the stage trains on Ray Train, its teachers loaded from their MLflow runs.
   A stage whose earlier driver died (or that failed) continues its interrupted MLflow run and its Ray
   Train run (same name, so it resumes from the latest checkpoint): see docs/reliability.md;
3. **evaluate** on each declared view by Ray Data batch inference;
4. **record**: config, data hash, per-epoch metrics, evaluation, checkpoint (weights + JSON spec, the
   model's inputs included) in an MLflow child run of one pipeline run.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Collection

from raypipe.config import to_dict
from raypipe.errors import ConfigError
from raypipe.engine import runner
from raypipe.engine.data import MethodData, build_data
from raypipe.engine.method import Method, Stage, View, val_twin
from raypipe.engine.report import Console
from raypipe.models import build_model, check_model_inputs
from raypipe.models.factory import TWO_INPUT_KINDS
from raypipe.tracking import Lineage, TrackedRun, stage_key

log = logging.getLogger(__name__)


@dataclass
class StagePlan:
    stage: Stage
    path: str  # the stage's config path, "stages.<name>"
    config: Any  # its config section (the objective's Config)
    spec: dict  # model spec, class and band counts filled in
    objective: Any
    key: str
    from_run: str = ""
    oracle: tuple[str, ...] = ()  # what information a real user lacks it used, its teachers' included
    cloud_sources: tuple[str, ...] = ()  # where its training-time cloud fractions come from
    views: dict = field(default_factory=dict)  # evaluation prefix -> View (the stage's, or their val twins)

    @property
    def name(self) -> str:
        return self.stage.name


@dataclass
class StageOutcome:
    name: str
    run_id: str
    key: str
    reused: bool
    evaluations: dict  # prefix -> evaluation result
    seconds: float
    oracle: tuple[str, ...] = ()


@dataclass
class RunResult:
    method: str
    parent_run_id: str
    stages: dict[str, StageOutcome] = field(default_factory=dict)
    table: str = ""
    tracking_uri: str = ""
    seconds: float = 0.0
    data_counts: dict = field(default_factory=dict)


@dataclass
class StageContext:
    """What an objective's ``diagnostics`` may use on the driver."""

    plan: StagePlan
    train_pipe: Any
    teachers: dict
    classes: list[str]
    task: str
    ray: Any
    task_config: Any = None

    def predict(self, teacher: str) -> dict:
        """A teacher's batch-inference columns over this stage's training split, sorted by sample id."""
        t = self.teachers[teacher]
        return runner.predict(self.train_pipe, t["spec"], t["state"], t["inputs"], self.task, len(self.classes),
                              self.ray.eval_concurrency, self.ray.use_gpu, where=self.ray.inference,
                              task_config=self.task_config)


# --- the loop ---------------------------------------------------------------------------------------

def run_method(method: Method, cfg, console: Console | None = None, *, only: Collection[str] | None = None,
               evaluate_on: str = "test", parent_run_id: str = "", tags: dict | None = None,
               fit_callbacks: dict | None = None) -> RunResult:
    """Run ``method``'s stages with ``cfg``.

    The keywords serve drivers that run many pipelines (``raypipe.tune``): ``only`` runs just these
    stages (with the teachers they need: the set must be closed under teachers); ``evaluate_on="val"``
    evaluates each stage on the val twins of its declared views (prefix ``…_test`` becomes ``…_val``)
    instead of test, so that choosing between runs never reads test; ``parent_run_id`` nests the
    pipeline run under another run (a sweep's); ``tags`` go on the pipeline run; ``fit_callbacks``
    maps a stage name to extra Ray Train callbacks for its ``fit`` (e.g. Tune's report callback)."""
    t0 = time.perf_counter()
    method, _ = method.concrete(to_dict(cfg))  # the graph ``cfg`` was resolved for (KDHN's rounds)
    console = console or Console(enabled=False)
    lineage = Lineage(cfg.tracking.uri or None, cfg.tracking.experiment)
    data = build_data(cfg)
    plans = plan_stages(method, cfg, data, lineage, evaluate_on)
    if only is not None:
        only = set(only)
        plans = [p for p in plans if p.name in only]
        for p in plans:
            missing = [t for t in p.stage.teachers if t not in only]
            if missing:
                raise ValueError(f"stage {p.name} needs its teachers {missing}, which are not among {sorted(only)}")
    result = RunResult(method.name, parent_run_id="", tracking_uri=lineage.tracking_uri)
    console.start(method, cfg, data, plans)
    with lineage.pipeline_run(cfg.name or method.name, to_dict(cfg), parent_run_id=parent_run_id,
                              tags={"raypipe.data_hash": data.data_hash, "raypipe.method": method.name,
                                    **(tags or {})}) as parent:
        result.parent_run_id = parent.run_id
        for i, plan in enumerate(plans):
            console.stage_start(i, len(plans), plan)
            outcome = reuse_stage(plan, method, cfg, data, lineage, parent.run_id) or \
                train_stage(plan, method, cfg, data, lineage, parent.run_id, result.stages, console,
                            (fit_callbacks or {}).get(plan.name, ()))
            result.stages[plan.name] = outcome
            console.stage_done(outcome)
        result.table = task_of(method, cfg, data).table(method, result.stages, evaluate_on)
        parent.log_text(result.table, "results.txt")
        parent.log_dict({s: {"run_id": o.run_id, "key": o.key, "reused": o.reused, "evaluations": o.evaluations}
                         for s, o in result.stages.items()}, "results.json")
    result.seconds = time.perf_counter() - t0
    return result


# --- 1. plan: everything validated before any stage trains -------------------------------------------

def plan_stages(method: Method, cfg, data: MethodData, lineage: Lineage, evaluate_on: str = "test") -> list[StagePlan]:
    method, _ = method.concrete(to_dict(cfg))
    bands = _bands(method, data)
    plans: dict[str, StagePlan] = {}
    for stage in method.stages:
        path = f"stages.{stage.name}"
        section = getattr(cfg.stages, stage.name)
        spec = model_spec(section.model, stage.inputs, len(data.classes), bands)
        check_model_inputs(spec, bands if stage.inputs == "both" else {"input": bands[stage.inputs]}, f"{path}.model")
        build_model(spec, f"{path}.model")  # every key and value of the spec checked now, not on a worker
        objective = stage.objective_class()(section, stage.inputs,
                                            {t: method.stage(t).inputs for t in stage.teachers})
        objective.check(path)
        train_pipe = data.pipe(stage.train, sar=_needs_sar(method, stage))
        oracle = set().union(*(plans[t].oracle for t in stage.teachers))
        if stage.train.domain == "target":
            if section.train.selection == "val_labels":
                oracle.add("selection")
            if getattr(objective, "uses_labels", False):
                oracle.add("labels")
        if train_pipe.oracle_masks and getattr(objective, "uses_cloud_mask", True):
            oracle.add("masks")
        if section.from_run:
            lineage.check_run(section.from_run, f"{path}.from_run", stage.name)
            key = lineage.client.get_run(section.from_run).data.tags.get("raypipe.stage_key", section.from_run)
        else:
            key = stage_key(stage.name, stage_definition(stage, section, spec, cfg, method.task_of(stage)),
                            {t: plans[t].key for t in stage.teachers}, data.data_hash)
        plans[stage.name] = StagePlan(stage, path, section, spec, objective, key, section.from_run,
                                      tuple(sorted(oracle)), tuple(train_pipe.cloud_sources),
                                      evaluation_views(stage, evaluate_on))
    return list(plans.values())


def evaluation_views(stage: Stage, evaluate_on: str = "test") -> dict[str, View]:
    """The views a stage is evaluated on: those it declares (``test``), or their val twins (``val``:
    same domain and optical, the val split; prefix ``…_test`` renamed ``…_val``)."""
    if evaluate_on == "test":
        return dict(stage.evaluate)
    if evaluate_on != "val":
        raise ValueError(f"evaluate_on must be 'test' or 'val', not {evaluate_on!r}")
    out = {}
    for prefix, view in stage.evaluate.items():
        if view.split == "test":
            prefix, view = val_twin(prefix), View(view.domain, "val", view.optical, view.simulate)
        out[prefix] = view
    return out


def _bands(method: Method, data: MethodData) -> dict[str, int]:
    """Band counts of the data the stages read (checked equal across the views that feed them)."""
    bands: dict[str, int] = {}
    for stage in method.stages:
        pipe = data.pipe(stage.train, sar=_needs_sar(method, stage))
        for modality, n in (("optical", pipe.num_optical_bands), ("sar", pipe.num_sar_bands or None)):
            if n is None:
                continue
            if bands.setdefault(modality, n) != n:
                field_ = "data.pipeline.optical_bands" if modality == "optical" else "data.source_manifest"
                raise ConfigError(field_, f"{modality} band counts differ between the domains ({bands[modality]} vs {n})")
    return bands


def _needs_sar(method: Method, stage: Stage) -> bool:
    models = [stage.inputs, *(method.stage(t).inputs for t in stage.teachers)]
    return any(m in ("sar", "both") for m in models)


def model_spec(model: dict, inputs: str, num_classes: int, bands: dict[str, int]) -> dict:
    """A stage's model spec with class and band counts filled in from the data where not given
    (where given, planning checks them against the data)."""
    spec = copy.deepcopy(model)
    spec.setdefault("num_classes", num_classes)
    if spec.get("kind") in TWO_INPUT_KINDS:  # per-modality band counts
        for modality in ("optical", "sar"):
            spec.setdefault(modality, {}).setdefault("in_channels", bands.get(modality, 0))
    else:
        spec.setdefault("in_channels", bands.get("optical" if inputs == "both" else inputs, 0))
    return spec


def stage_definition(stage: Stage, section, spec: dict, cfg, task: str) -> dict:
    """What defines a stage's result: its key is a hash of this, its teachers' keys and the data hash."""
    knobs = {k: v for k, v in to_dict(section).items() if k not in ("model", "from_run")}
    task_config = to_dict(cfg.task)  # classification has none: its keys stay as they were
    return {"objective": stage.objective, "inputs": stage.inputs, "task": task,
            **({"task_config": task_config} if task_config else {}), "model": spec, "config": knobs,
            "train_view": _view(stage.train), "data": _data_key(cfg.data.pipeline),
            "splits": [cfg.data.train_split, cfg.data.val_split, cfg.data.test_split],
            "domains": [cfg.data.source_domain, cfg.data.target_domain]}


def stage_params(plan: StagePlan, method: Method, cfg) -> dict:
    """A stage run's MLflow params: its knobs under the same dotted paths as ``--set`` and Tune spaces
    (``stages.<name>.…``, the resolved model spec included), the data section, and what it is."""
    section = {**to_dict(plan.config), "model": plan.spec}
    return {"method": method.name, "stage": {"objective": plan.stage.objective, "inputs": plan.stage.inputs,
                                             "teachers": list(plan.stage.teachers)},
            "stages": {plan.name: section}, "data": to_dict(cfg.data)}


def _data_key(pipeline) -> dict:
    """The data pipeline settings that can change a stage's result (its key): all of them but the
    storage retry policy and the decoded-split cache, which only change how long a read may take."""
    return {k: v for k, v in to_dict(pipeline).items() if k not in ("retries", "cache", "cache_fraction")}


def _view(v: View) -> dict:
    out = {"domain": v.domain, "split": v.split, "optical": v.optical}
    if v.simulate:  # only when set: the keys of every stage without it stay as they were
        out["simulate"] = True
    return out


# --- 2. reuse or train --------------------------------------------------------------------------------

def reuse_stage(plan: StagePlan, method: Method, cfg, data: MethodData, lineage: Lineage,
                parent_id: str) -> StageOutcome | None:
    t0 = time.perf_counter()
    existing = plan.from_run or (None if plan.name in cfg.force_stages else lineage.find_stage(plan.name, plan.key))
    if not existing:
        return None
    ckpt = lineage.load_checkpoint(existing, field=f"{plan.path}.from_run" if plan.from_run else plan.path)
    lineage.reuse_stage(parent_id, plan.name, plan.key, existing)
    log.info("stage %s: reusing run %s (key %s)", plan.name, existing, plan.key)
    evaluations = dict(ckpt["extra"].get("evaluations", {}))
    missing = [p for p in plan.views if p not in evaluations]
    if missing:  # e.g. a sweep's trial evaluated val only: load what was added later, evaluate the rest now
        evaluations.update(lineage.load_evaluations(existing, missing))
        todo = {p: plan.views[p] for p in missing if p not in evaluations}
        if todo:
            log.info("stage %s: evaluating reused run %s on %s", plan.name, existing, sorted(todo))
            figures: dict = {}
            added = evaluate_stage(plan, method, cfg, data, ckpt["state_dict"], todo, figures=figures)
            run, task = TrackedRun(lineage, existing), task_of(method, cfg, data, plan.stage)
            for prefix, res in added.items():
                task.log_evaluation(run, res, prefix, data.classes)
            log_figures(run, figures)
            evaluations.update(added)
    return StageOutcome(plan.name, existing, plan.key, True, evaluations, time.perf_counter() - t0, plan.oracle)


def train_stage(plan: StagePlan, method: Method, cfg, data: MethodData, lineage: Lineage, parent_id: str,
                done: dict[str, StageOutcome], console: Console, callbacks=()) -> StageOutcome:
    t0 = time.perf_counter()
    stage = plan.stage
    teachers = {}
    for t in stage.teachers:
        c = lineage.load_checkpoint(done[t].run_id, field=f"stages.{t}")
        teachers[t] = {"spec": c["model_spec"], "state": c["state_dict"], "inputs": method.stage(t).inputs}
    train_pipe = data.pipe(stage.train, sar=_needs_sar(method, stage))
    val_pipe = data.pipe(View(stage.train.domain, "val", stage.train.optical, stage.train.simulate),
                         sar=_needs_sar(method, stage))
    task = task_of(method, cfg, data, stage)
    job = runner.StageJob(stage.name, plan.objective, plan.spec, plan.config.train, train_pipe, val_pipe, teachers,
                          task.name, len(data.classes), data.classes, task.config)
    inputs = {t: done[t].run_id for t in stage.teachers}
    interrupted = lineage.find_interrupted_stage(stage.name, plan.key)  # its driver died, or it failed
    if interrupted:
        log.info("stage %s: continuing interrupted run %s (key %s)", stage.name, interrupted, plan.key)
    with lineage.stage_run(parent_id, stage.name, plan.key, stage_params(plan, method, cfg), inputs,
                           data.data_hash, resume=interrupted) as run:
        run.set_tags({"raypipe.oracle": ",".join(plan.oracle) or "none", "raypipe.selection": plan.config.train.selection,
                      "raypipe.cloud_source.train": "; ".join(plan.cloud_sources)})
        run.log_metrics(plan.objective.diagnostics(StageContext(plan, train_pipe, teachers, data.classes,
                                                                task.name, cfg.ray, task.config)))
        t_fit = time.perf_counter()
        # The Ray Train run is named after the MLflow run: a continued (interrupted) run restores its
        # latest checkpoint; a forced retrain is a new MLflow run, so it trains afresh.
        if plan.objective.assembles:  # a model put together from its teachers' (SPL: remover -> f_S)
            state = plan.objective.assemble(plan.spec, teachers)
        else:
            state, _ = runner.fit(job, cfg.ray, f"{cfg.name or method.name}-{stage.name}-{plan.key}-{run.run_id[:8]}",
                                  run.handle, on_epoch=lambda m: console.epoch(plan, m), callbacks=list(callbacks))
        t_eval = time.perf_counter()
        figures: dict = {}
        evaluations = evaluate_stage(plan, method, cfg, data, state, figures=figures)
        t_log = time.perf_counter()
        for prefix, res in evaluations.items():
            task.log_evaluation(run, res, prefix, data.classes)
        log_figures(run, figures)
        run.log_checkpoint(state, plan.spec, extra={"inputs": stage.inputs, "task": task.name,
                                                    "evaluations": evaluations, "classes": data.classes})
        counts = {"samples_in": train_pipe.samples_in, "quarantined": len(train_pipe.quarantined()),
                  "read_retries": len(train_pipe.read_retries())}
        run.log_metrics({f"data/{k}": float(v) for k, v in counts.items()})
        timing = {"time/fit_s": t_eval - t_fit, "time/evaluate_s": t_log - t_eval,
                  "time/prepare_s": t_fit - t0, "time/track_s": time.perf_counter() - t_log}
        run.log_metrics(timing)
        log.info("stage %s: %s", stage.name, ", ".join(f"{k[5:]} {v:.1f}" for k, v in timing.items()))
        return StageOutcome(stage.name, run.run_id, plan.key, False, evaluations, time.perf_counter() - t0,
                            plan.oracle)


# --- 3. evaluate ----------------------------------------------------------------------------------------

def task_of(method: Method, cfg, data: MethodData, stage: Stage | None = None):
    """The method's task (its table), or ``stage``'s own where it has one; the configuration's ``task``
    section is the method's task's settings, so a stage's own task gets its defaults."""
    from raypipe.engine.task import build_task

    name = method.task_of(stage) if stage is not None else method.task
    return build_task(name, len(data.classes), data.classes, cfg.task if name == method.task else None)


def evaluate_stage(plan: StagePlan, method: Method, cfg, data: MethodData, state: dict,
                   views: dict | None = None, figures: dict | None = None) -> dict:
    """Evaluation by Ray Data batch inference on the plan's views (or ``views``); the task's figures
    (``{prefix: {file: png bytes}}``) go into ``figures`` when it is given."""
    task = task_of(method, cfg, data, plan.stage)
    out = {}
    for prefix, view in (plan.views if views is None else views).items():
        pipe = data.pipe(view, sar=plan.stage.inputs != "optical")
        columns = runner.predict(pipe, plan.spec, state, plan.stage.inputs, task.name, len(data.classes),
                                 cfg.ray.eval_concurrency, cfg.ray.use_gpu, where=cfg.ray.inference,
                                 task_config=task.config)
        out[prefix] = task.evaluate(columns)
        if figures is not None:
            figures[prefix] = task.figures(columns)
    return out


def log_figures(run, figures: dict) -> None:
    """Log ``{prefix: {file: png bytes}}`` as ``eval/<prefix>/<file>`` artifacts of ``run``."""
    import os
    import tempfile

    for prefix, files in figures.items():
        if not files:
            continue
        with tempfile.TemporaryDirectory(prefix="raypipe-fig-") as tmp:
            for name, data in files.items():
                with open(os.path.join(tmp, name), "wb") as f:
                    f.write(data)
            run.client.log_artifacts(run.run_id, tmp, f"eval/{prefix}")
