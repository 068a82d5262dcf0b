"""Baselines on the engine: the oracles (target labels, marked as such) and TLF (late fusion on f_S's
filtered pseudo labels). Losses and models against hand computations; both methods end to end."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from raypipe.engine import resolve
from raypipe.engine.run import run_method
from raypipe.errors import ConfigError
from raypipe.methods import get_method
from raypipe.models import build_model

TINY = {"depth": 10, "width": 4, "stem": "small", "norm": "group"}


def test_early_fusion_is_one_resnet_on_the_stacked_bands():
    spec = {"kind": "early_fusion", "num_classes": 3, "optical": {"in_channels": 4}, "sar": {"in_channels": 2},
            "encoder": TINY}
    net = build_model(spec).eval()
    plain = build_model({"kind": "resnet", "num_classes": 3, "in_channels": 6, **TINY}).eval()
    plain.load_state_dict(net.net.state_dict())
    opt, sar = torch.randn(2, 4, 8, 8), torch.randn(2, 2, 8, 8)
    assert torch.allclose(net(opt, sar), plain(torch.cat([opt, sar], 1)))
    small_sar = torch.randn(2, 2, 4, 4)  # coarser SAR grid (M3M-CR: 10 m vs 3 m) is resized to the optical one
    up = F.interpolate(small_sar, size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(net(opt, small_sar), plain(torch.cat([opt, up], 1)))
    with pytest.raises(ConfigError) as err:
        build_model({**spec, "encoder": {**TINY, "in_channels": 6}}, "stages.early_fusion.model")
    assert err.value.field == "stages.early_fusion.model.encoder.in_channels"


def _tlf_objective(fusion: str):
    m = get_method("tlf")
    cfg = resolve(m, overrides=[f"stages.late_fusion.model.fusion={fusion}"])
    stage = m.stage("late_fusion")
    return stage.objective_class()(cfg.stages.late_fusion, stage.inputs, {"source": "optical"})


def test_tlf_needs_late_fusion_and_says_where():
    _tlf_objective("late").check("stages.late_fusion")
    with pytest.raises(ConfigError) as err:
        _tlf_objective("concat").check("stages.late_fusion")
    assert err.value.field == "stages.late_fusion.model.fusion"


def test_tlf_trains_each_head_on_the_filtered_pseudo_labels_and_predicts_their_mean():
    torch.manual_seed(0)
    objective = _tlf_objective("late")  # filter: max-softmax >= 0.6 (the MTTS stage-1 default)
    model = build_model({"kind": "multimodal", "num_classes": 3, "fusion": "late",
                         "optical": {**TINY, "in_channels": 4}, "sar": {**TINY, "in_channels": 2}})
    teacher = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 3.0], [0.2, 0.0, 0.1]])
    # softmax maxima: 0.96 (kept, class 0), 0.36 (dropped), 0.91 (kept, class 2), 0.36 (dropped)
    batch = {"optical": torch.randn(4, 4, 8, 8), "sar": torch.randn(4, 2, 8, 8), "logits/source": teacher}
    loss, parts = objective.loss(model, {}, batch)
    out = model(batch["optical"], batch["sar"])
    kept, labels = torch.tensor([0, 2]), torch.tensor([0, 2])
    expected = F.cross_entropy(out.optical[kept], labels) + F.cross_entropy(out.sar[kept], labels)
    assert torch.allclose(loss, expected) and float(parts["kept"]) == 0.5
    assert torch.allclose(out.fused, 0.5 * (out.optical + out.sar))


@pytest.fixture(scope="module")
def baseline_runs(tmp_path_factory, ray_session):
    tmp = tmp_path_factory.mktemp("baselines")
    train = {"epochs": 1, "batch_size": 16}
    common = {"data": {"benchmark": {"out": str(tmp / "bench"), "tiles": 40, "size": 16, "scene_size": 10}},
              "tracking": {"uri": f"sqlite:///{tmp}/mlflow.db"}, "ray": {"storage_path": str(tmp / "runs")}}
    # the early-fusion oracle only (the single-modality ones are the same objective on one input)
    oracle = run_method(get_method("oracle"), resolve(get_method("oracle"), extra={**common, "stages": {
        "early_fusion": {"model": {"kind": "early_fusion", "encoder": TINY}, "train": train}}}),
        only=["early_fusion"])
    from raypipe.compare import compare

    first = compare(["source_only", "tlf"], seeds=[0, 1], preset="tiny", extra=common, out_dir=str(tmp / "cmp"),
                    name="cmp-test")
    again = compare(["source_only", "tlf"], seeds=[0, 1], preset="tiny", extra=common, out_dir=str(tmp / "cmp"),
                    name="cmp-test")
    return oracle, first, again, tmp


def test_oracles_train_on_target_labels_and_every_row_says_so(baseline_runs):
    oracle = baseline_runs[0]
    assert set(oracle.stages) == {"early_fusion"}
    for outcome in oracle.stages.values():
        assert not outcome.reused and "labels" in outcome.oracle
        assert outcome.evaluations["target_test"]["overall"]["n"] > 0
    rows = [line for line in oracle.table.splitlines() if "target labels" in line]
    assert len(rows) == 1 and all("[oracle: labels" in line for line in rows), oracle.table
    m = get_method("oracle")  # the other two rows are declared oracle too
    assert all(row.oracle for row in m.table) and len(m.table) == 3


def test_a_comparison_shares_f_s_aggregates_seeds_and_reruns_nothing(baseline_runs):
    import csv
    import statistics

    from mlflow import MlflowClient

    _, first, again, tmp = baseline_runs
    # f_S trained once per seed: by source_only, then reused by tlf (same stage key)
    assert first.trained == {("source_only", 0): ["source"], ("tlf", 0): ["late_fusion"],
                             ("source_only", 1): ["source"], ("tlf", 1): ["late_fusion"]}
    assert all(not v for v in again.trained.values())  # a rerun trains nothing
    rows = {r["label"]: r for r in first.rows}
    assert set(rows) == {"source-only (f_S on target optical)", "TLF late fusion (optical + SAR)"}
    assert rows["source-only (f_S on target optical)"]["also_in"] == ["tlf"]  # shown once
    assert all(r["oracle"] == "" for r in first.rows)
    # mean ± std over seeds, against the per-seed test OA logged to each seed's stage run
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    exp = client.get_experiment_by_name("raypipe")
    late = client.search_runs([exp.experiment_id], "tags.`raypipe.kind` = 'stage' AND tags.`raypipe.stage` = 'late_fusion'")
    per_seed = sorted(r.data.metrics["target_test/oa"] for r in late)
    mean, std = rows["TLF late fusion (optical + SAR)"]["oa"]
    assert len(per_seed) == 2 and abs(mean - sum(per_seed) / 2) < 1e-9
    assert abs(std - abs(per_seed[0] - per_seed[1]) / 2 ** 0.5) < 1e-9
    tlf = rows["TLF late fusion (optical + SAR)"]
    assert sum(b["n"] for b in tlf["coverage"]) == tlf["n"] and len(tlf["coverage"]) == 10
    with open(tmp / "cmp" / "comparison.csv") as f:
        table = list(csv.DictReader(f))
    assert [t["row"] for t in table] == [r["label"] for r in first.rows]
    assert abs(float(table[1]["oa_mean"]) - statistics.fmean(per_seed)) < 1e-9
    for name in ("comparison.md", "buckets.png", "coverage.png"):
        assert (tmp / "cmp" / name).stat().st_size > 0
    nested = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{first.run_id}'")
    assert len(nested) == 4  # one pipeline run per method and seed under the comparison run


def test_gdl_loss_matches_the_gdnet_formula_computed_independently():
    torch.manual_seed(1)
    m = get_method("gdl")
    cfg = resolve(m, overrides=["stages.student.beta=0.2"])
    objective = m.stage("student").objective_class()(cfg.stages.student, "both", {"source": "optical"})
    objective.check("stages.student")
    model = build_model({"kind": "multimodal", "num_classes": 3, "variational": True,
                         "optical": {**TINY, "in_channels": 4}, "sar": {**TINY, "in_channels": 2}}).eval()  # z = mu
    teacher = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 3.0]])  # kept, dropped, kept (>= 0.6)
    batch = {"optical": torch.randn(3, 4, 8, 8), "sar": torch.randn(3, 2, 8, 8), "logits/source": teacher}
    loss, _ = objective.loss(model, {}, batch)

    out = model(batch["optical"], batch["sar"])
    kept, y = torch.tensor([0, 2]), torch.tensor([0, 2])
    f_o, f_s = out.optical_features, out.sar_features
    uni = [model.fused_head(torch.cat([f_o, torch.zeros_like(f_s)], 1)),
           model.fused_head(torch.cat([torch.zeros_like(f_o), f_s], 1))]
    normal = torch.distributions.Normal
    kl = sum(torch.distributions.kl_divergence(normal(out.mu[k], (0.5 * out.logvar[k]).exp()), normal(0.0, 1.0))
             .sum(1).mean() for k in ("optical", "sar"))
    expected = (F.cross_entropy(out.fused[kept], y)
                + 0.2 * sum(F.cross_entropy(u[kept], y) + ((u - out.fused) ** 2).mean() for u in uni) + 1e-4 * kl)
    assert torch.allclose(loss, expected, atol=1e-6)
    with pytest.raises(ConfigError) as err:  # GDL without Gaussian embeddings is not GDL
        resolved = resolve(m, overrides=["stages.student.model.variational=false"]).stages.student
        m.stage("student").objective_class()(resolved, "both", {"source": "optical"}).check("stages.student")
    assert err.value.field == "stages.student.model"
