"""MTTS + IRM end to end: source → auxiliary optical / SAR → multi-modal target, tracked in MLflow.

    result = run_mtts(resolve())          # the embedded default: a generated benchmark, local everything
    print(result.table)

Stage 0 (``source``): f_S, supervised on the source domain's cloud-free optical tiles.
Stage 1 (``aux_optical``, ``aux_sar``): f_T_Opt on target cloudy optical and f_T_SAR on target SAR,
trained from f_S's logit-filtered pseudo labels on the target training set (no target labels).
Stage 2 (``target``): f_T on optical + SAR, distilled from f_S and both auxiliary models through IRM.

Each stage is a Ray Train run and an MLflow child run of one pipeline run. A stage whose key (its
config, its teachers' keys and the data hash) matches a finished run is reused, not retrained.
Target labels are used for evaluation only.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass, field

from raypipe import storage
from raypipe.config import from_dict, to_dict
from raypipe.data.manifest import content_hash, read_manifest
from raypipe.data.pipeline import DataConfig, TilePipeline
from raypipe.errors import ConfigError
from raypipe.methods import filter_pseudo_labels, filter_scores, filter_stats
from raypipe.metrics import evaluate
from raypipe.models import check_model_inputs
from raypipe.stages import runner
from raypipe.stages.config import STAGES, MTTSConfig
from raypipe.tracking import Lineage, stage_key

log = logging.getLogger(__name__)

# Which student inputs, teachers and objective each stage has.
STAGE_INPUTS = {"source": "optical", "aux_optical": "optical", "aux_sar": "sar", "target": "both"}
STAGE_TEACHERS = {"source": (), "aux_optical": ("source",), "aux_sar": ("source",),
                  "target": ("source", "aux_optical", "aux_sar")}
TABLE_ROWS = (("source-only (f_S on target optical)", "source", "target_test"),
              ("aux optical f_T_Opt", "aux_optical", "target_test"),
              ("aux SAR f_T_SAR", "aux_sar", "target_test"),
              ("target f_T (IRM)", "target", "target_test"))


@dataclass
class StageOutcome:
    name: str
    run_id: str
    key: str
    reused: bool
    evaluations: dict  # prefix -> evaluation result
    seconds: float


@dataclass
class MTTSResult:
    parent_run_id: str
    stages: dict[str, StageOutcome] = field(default_factory=dict)
    table: str = ""
    tracking_uri: str = ""
    seconds: float = 0.0
    data_report: list = field(default_factory=list)


# --- data ------------------------------------------------------------------------------------------

def ensure_benchmark(cfg: MTTSConfig) -> str:
    """The generated benchmark's manifest, generating the tiles and the manifest if absent."""
    from raypipe.data.prepare import prepare
    from raypipe.synthetic import generate

    b = cfg.data.benchmark
    out = b.out if not storage.is_local(b.out) else os.path.abspath(b.out)
    manifest = storage.join(out, "manifest.parquet")
    if storage.exists(manifest):
        return manifest
    if not storage.exists(storage.join(out, "synthetic.json")):
        log.info("generating the benchmark (%d tiles per domain, %d px) in %s", b.tiles, b.size, out)
        generate(out, tiles=b.tiles, size=b.size, seed=b.seed, preset=b.preset, scene_size=b.scene_size)
    prepare("synthetic", out, manifest)
    return manifest


def _pipe(cfg: MTTSConfig, frame, domain: str, split: str, optical: str, use_sar: bool, clouds: dict | None = None):
    data = to_dict(cfg.data.pipeline)
    data.update(manifest="", domain=domain, split=split, optical=optical, use_sar=use_sar)
    if clouds is not None:
        data["clouds"] = clouds
    return TilePipeline(from_dict(DataConfig, data, "data.pipeline"), frame=frame)


@dataclass
class StageData:
    source_train: TilePipeline
    source_eval: TilePipeline
    target_train: TilePipeline
    target_eval: TilePipeline
    target_eval_optical: TilePipeline  # source-only evaluation: f_S on target cloudy optical
    data_hash: str
    classes: list[str]


def build_data(cfg: MTTSConfig) -> StageData:
    d = cfg.data
    src_uri = d.source_manifest or ensure_benchmark(cfg)
    tgt_uri = d.target_manifest or src_uri
    src = read_manifest(src_uri)
    tgt = src if tgt_uri == src_uri else read_manifest(tgt_uri)
    classes = list(src.attrs["raypipe"].get("classes", []))
    tgt_classes = list(tgt.attrs["raypipe"].get("classes", []))
    if classes != tgt_classes:
        raise ConfigError("data.target_manifest", f"class list {tgt_classes} differs from the source's {classes}")
    none = {"mode": "none"}
    return StageData(
        source_train=_pipe(cfg, src, d.source_domain, d.train_split, "clear", False, none),
        source_eval=_pipe(cfg, src, d.source_domain, d.eval_split, "clear", False, none),
        target_train=_pipe(cfg, tgt, d.target_domain, d.train_split, "cloudy", True),
        target_eval=_pipe(cfg, tgt, d.target_domain, d.eval_split, "cloudy", True),
        target_eval_optical=_pipe(cfg, tgt, d.target_domain, d.eval_split, "cloudy", False),
        data_hash=content_hash(src) + ("" if tgt is src else content_hash(tgt)),
        classes=classes,
    )


# --- validation before any training ----------------------------------------------------------------

def model_spec(cfg: MTTSConfig, stage: str, num_classes: int, bands: dict[str, int]) -> dict:
    """The stage's model spec with class and band counts filled in from the data where not given
    (where given, :func:`validate` checks them against the data)."""
    spec = copy.deepcopy(getattr(cfg.stages, stage).model)
    spec.setdefault("num_classes", num_classes)
    if spec.get("kind") == "multimodal":
        for modality in ("optical", "sar"):
            spec.setdefault(modality, {}).setdefault("in_channels", bands[modality])
    else:
        spec.setdefault("in_channels", bands[STAGE_INPUTS[stage]])
    return spec


def validate(cfg: MTTSConfig, data: StageData, lineage: Lineage) -> dict[str, dict]:
    """Model band counts against the data, referenced runs exist: fail now, naming the field."""
    bands = {"optical": data.target_train.num_optical_bands, "sar": data.target_train.num_sar_bands}
    specs = {}
    for stage in STAGES:
        spec = model_spec(cfg, stage, len(data.classes), bands)
        inputs = STAGE_INPUTS[stage]
        check_model_inputs(spec, bands if inputs == "both" else {"input": bands[inputs]}, f"stages.{stage}.model")
        if data.source_train.num_optical_bands != bands["optical"]:
            raise ConfigError("data.pipeline.optical_bands", "source and target optical band counts differ")
        run_id = getattr(cfg.stages, stage).from_run
        if run_id:
            lineage.check_run(run_id, f"stages.{stage}.from_run", stage)
        specs[stage] = spec
    return specs


# --- stages ----------------------------------------------------------------------------------------

def objective_for(cfg: MTTSConfig, stage: str) -> dict:
    s = getattr(cfg.stages, stage)
    if stage == "source":
        return {"kind": "supervised", "params": {"inputs": "optical"}}
    if stage in ("aux_optical", "aux_sar"):
        f = s.filter
        return {"kind": "pseudo_label", "params": {"inputs": STAGE_INPUTS[stage], "rule": f.rule,
                                                   "threshold": f.threshold, "temperature": f.temperature,
                                                   "enabled": f.enabled, "max_cloud_fraction": f.max_cloud_fraction}}
    irm = s.irm
    return {"kind": "distill", "params": {
        "temperature": s.temperature, "irm_mode": irm.mode, "lambda_src": s.lambda_src,
        "lambda_aux": s.lambda_aux, "lambda_uni": s.lambda_uni,
        "src_weighting": s.src_weighting,
        "irm_hp": {"alpha": irm.alpha, "w_min": irm.w_min, "T": irm.temperature, "reference": irm.reference,
                   "cloud_prior": irm.cloud_prior},
        "filter_enabled": s.filter.enabled, "filter_rule": s.filter.rule, "filter_threshold": s.filter.threshold,
        "filter_max_cloud_fraction": s.filter.max_cloud_fraction}}


def stage_config(cfg: MTTSConfig, stage: str, spec: dict) -> dict:
    """What defines a stage's result (its key is a hash of this, its teachers' keys and the data hash)."""
    s = getattr(cfg.stages, stage)
    return {"model": spec, "train": to_dict(s.train), "objective": objective_for(cfg, stage),
            "data": to_dict(cfg.data.pipeline), "splits": [cfg.data.train_split, cfg.data.eval_split],
            "domains": [cfg.data.source_domain, cfg.data.target_domain]}


def _pipes_for(stage: str, data: StageData):
    if stage == "source":
        return data.source_train, data.source_eval
    return data.target_train, data.target_eval


def run_stage(cfg, stage, spec, data, lineage, parent_id, done: dict[str, StageOutcome]) -> StageOutcome:
    t0 = time.perf_counter()
    teachers_keys = {t: done[t].key for t in STAGE_TEACHERS[stage]}
    scfg = stage_config(cfg, stage, spec)
    s = getattr(cfg.stages, stage)
    if s.from_run:  # a given run stands for this stage; its own key keeps downstream keys meaningful
        key = lineage.client.get_run(s.from_run).data.tags.get("raypipe.stage_key", s.from_run)
        existing = s.from_run
    else:
        key = stage_key(stage, scfg, teachers_keys, data.data_hash)
        existing = None if stage in cfg.force_stages else lineage.find_stage(stage, key)
    if existing:
        ckpt = lineage.load_checkpoint(existing, field=f"stages.{stage}.from_run")
        lineage.reuse_stage(parent_id, stage, key, existing)
        log.info("stage %s: reusing run %s (key %s)", stage, existing, key)
        return StageOutcome(stage, existing, key, True, ckpt["extra"].get("evaluations", {}),
                            time.perf_counter() - t0)

    teachers = {}
    for t in STAGE_TEACHERS[stage]:
        c = lineage.load_checkpoint(done[t].run_id, field=f"stages.{t}")
        teachers[t] = {"spec": c["model_spec"], "state": c["state_dict"]}
    train_pipe, eval_pipe = _pipes_for(stage, data)
    job = runner.StageJob(stage, objective_for(cfg, stage), spec, s.train, train_pipe, eval_pipe, teachers,
                          STAGE_INPUTS[stage], len(data.classes), data.classes)
    inputs = {t: done[t].run_id for t in STAGE_TEACHERS[stage]}
    with lineage.stage_run(parent_id, stage, key, scfg, inputs, data.data_hash) as run:
        if stage in ("aux_optical", "aux_sar"):
            run.log_metrics(pseudo_label_stats(cfg, stage, data, teachers["source"]))
        t_fit = time.perf_counter()
        state, last = runner.fit(job, cfg.ray, f"{cfg.name}-{stage}-{key}", run.handle)
        t_eval = time.perf_counter()
        evaluations = evaluate_stage(cfg, stage, spec, state, data)
        t_log = time.perf_counter()
        for prefix, result in evaluations.items():
            run.log_evaluation(result, prefix=prefix, class_names=data.classes)
        run.log_checkpoint(state, spec, extra={"inputs": STAGE_INPUTS[stage], "evaluations": evaluations,
                                               "classes": data.classes})
        counts = {"samples_in": train_pipe.samples_in, "quarantined": len(train_pipe.quarantined())}
        run.log_metrics({f"data/{k}": float(v) for k, v in counts.items()})
        timing = {"time/fit_s": t_eval - t_fit, "time/evaluate_s": t_log - t_eval,
                  "time/prepare_s": t_fit - t0, "time/track_s": time.perf_counter() - t_log}
        run.log_metrics(timing)
        log.info("stage %s: %s", stage, ", ".join(f"{k[5:]} {v:.1f}" for k, v in timing.items()))
        return StageOutcome(stage, run.run_id, key, False, evaluations, time.perf_counter() - t0)


def pseudo_label_stats(cfg, stage, data: StageData, source_teacher: dict) -> dict[str, float]:
    """How many target training samples pass f_S's logit filter, per class and per cloud bucket."""
    import torch

    pred = runner.predict(data.target_train, source_teacher["spec"], source_teacher["state"], "optical",
                          cfg.ray.eval_concurrency, cfg.ray.use_gpu)
    f = getattr(cfg.stages, stage).filter
    logits = torch.from_numpy(pred["logits"])
    labels, keep = filter_pseudo_labels(logits, f.rule if f.enabled else "none", f.threshold, f.temperature,
                                        torch.from_numpy(pred["cloud_fraction"]), f.max_cloud_fraction)
    target = pred["label"] if (pred["label"] >= 0).all() else None
    stats = filter_stats(labels.numpy(), keep.numpy(), len(data.classes), data.classes, pred["cloud_fraction"],
                         target=target, scores=filter_scores(logits, f.rule, f.temperature).numpy())
    return {f"pseudo/{k}": float(v) for k, v in stats.items() if v is not None}


def evaluate_stage(cfg, stage, spec, state, data: StageData) -> dict:
    """Evaluation by Ray Data batch inference: on the target test split, and for f_S also on its own
    domain's test split (a check that the source model learned)."""
    inputs = STAGE_INPUTS[stage]
    pipes = {"target_test": data.target_eval_optical if stage == "source" else data.target_eval}
    if stage == "source":
        pipes["source_test"] = data.source_eval
    out = {}
    for prefix, pipe in pipes.items():
        p = runner.predict(pipe, spec, state, inputs, cfg.ray.eval_concurrency, cfg.ray.use_gpu)
        out[prefix] = evaluate(p["pred"], p["label"], p["cloud_fraction"], len(data.classes), data.classes)
    return out


# --- the pipeline ----------------------------------------------------------------------------------

def results_table(stages: dict[str, StageOutcome]) -> str:
    head = f"{'model':<38} {'OA':>6} {'AA':>6} {'kappa':>6} {'clear':>6} {'partly':>6} {'cloudy':>6}  {'n clear/partly/cloudy':>22}"
    lines = [head, "-" * len(head)]
    for label, stage, prefix in TABLE_ROWS:
        if stage not in stages or prefix not in stages[stage].evaluations:
            continue
        r = stages[stage].evaluations[prefix]
        o, b = r["overall"], r["buckets"]

        def pct(x):
            return f"{100 * x:6.1f}" if x is not None else "   n/a"

        ns = "/".join(str(b.get(k, {}).get("n", 0)) for k in ("clear", "partly", "cloudy"))
        lines.append(f"{label:<38} {pct(o['oa'])} {pct(o['aa'])} {pct(o['kappa'])} "
                     f"{pct(b.get('clear', {}).get('oa'))} {pct(b.get('partly', {}).get('oa'))} "
                     f"{pct(b.get('cloudy', {}).get('oa'))}  {ns:>22}")
    return "\n".join(lines)


def run_mtts(cfg: MTTSConfig) -> MTTSResult:
    t0 = time.perf_counter()
    lineage = Lineage(cfg.tracking.uri or None, cfg.tracking.experiment)
    data = build_data(cfg)
    specs = validate(cfg, data, lineage)
    result = MTTSResult(parent_run_id="", tracking_uri=lineage.tracking_uri)
    with lineage.pipeline_run(cfg.name, to_dict(cfg), tags={"raypipe.data_hash": data.data_hash}) as parent:
        result.parent_run_id = parent.run_id
        for stage in STAGES:
            result.stages[stage] = run_stage(cfg, stage, specs[stage], data, lineage, result.parent_run_id,
                                             result.stages)
            o = result.stages[stage]
            log.info("stage %s %s in %.1fs (run %s)", stage, "reused" if o.reused else "trained", o.seconds, o.run_id)
        result.table = results_table(result.stages)
        parent.log_text(result.table, "results.txt")
        parent.log_dict({s: {"run_id": o.run_id, "key": o.key, "reused": o.reused, "evaluations": o.evaluations}
                         for s, o in result.stages.items()}, "results.json")
    result.seconds = time.perf_counter() - t0
    return result
