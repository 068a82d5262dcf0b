"""KDHN's rounds (a config value: round r + 1 learns from round r's student, each round keeps what its
teacher's logits pass) and TTL's intermediate domain, on the engine."""

from __future__ import annotations

import mlflow
import pytest
import torch
import torch.nn.functional as F

from raypipe.config import to_dict
from raypipe.engine import resolve
from raypipe.engine.run import run_method
from raypipe.errors import ConfigError
from raypipe.methods import get_method
from raypipe.models.multimodal import MultiModalOutput

TINY = {"depth": 10, "width": 4, "stem": "small", "norm": "group"}
TINY_MM = {"kind": "multimodal", "optical": TINY, "sar": TINY}
KDHN = get_method("kdhn")


def test_rounds_set_the_graph_each_round_learns_from_the_one_before():
    for rounds, names in ((1, ["student"]), (2, ["round_1", "student"]), (4, ["round_1", "round_2", "round_3", "student"])):
        cfg = resolve(KDHN, overrides=[f"stages.student.rounds={rounds}", "stages.student.filter.threshold=0.8",
                                       *(["stages.round_1.filter.threshold=0.4"] if rounds > 1 else [])])
        method, _ = KDHN.concrete(to_dict(cfg))
        assert [s.name for s in method.stages] == ["source", *names]
        assert [s.teachers for s in method.stages[1:]] == [(t,) for t in ["source", *names[:-1]]]
        assert all(s.inputs == "both" for s in method.stages[1:])  # heterogeneous: optical f_S -> optical + SAR
        for name in names:  # every round's section starts from stages.student; round_1 was set on its own
            section = getattr(cfg.stages, name)
            assert section.model["kind"] == "multimodal"
            assert section.filter.threshold == (0.4 if name == "round_1" else 0.8)
        assert method.table[-1].stage == "student" and f"round {rounds}" in method.table[-1].label
    with pytest.raises(ConfigError) as err:
        resolve(KDHN, overrides=["stages.student.rounds=0"])
    assert err.value.field == "stages.student.rounds"
    with pytest.raises(ConfigError) as err:  # a round that the rounds value does not make
        resolve(KDHN, overrides=["stages.student.rounds=2", "stages.round_2.filter.threshold=0.5"])
    assert err.value.field == "stages.round_2"


class _Fixed(torch.nn.Module):
    """A frozen optical + SAR teacher whose fused logits are given (the round before's student)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.seen = None

    def forward(self, optical, sar):
        self.seen = (optical.shape[1], sar.shape[1])
        z = torch.zeros(len(optical), 1)
        return MultiModalOutput(fused=self.logits, optical=self.logits, sar=self.logits, optical_features=z, sar_features=z)


def test_a_later_rounds_kept_set_is_its_teachers_confident_samples():
    cfg = resolve(KDHN, overrides=["stages.student.rounds=3", "stages.student.filter.threshold=0.7"])
    method, _ = KDHN.concrete(to_dict(cfg))
    stage = method.stage("round_2")
    obj = stage.objective_class()(cfg.stages.round_2, stage.inputs, {"round_1": "both"})
    obj.check("stages.round_2")
    teacher = torch.tensor([[3.0, 0.0, 0.0], [0.5, 0.4, 0.0], [0.0, 0.0, 0.9], [0.0, 2.0, 0.0]])
    # max-softmax by hand: 0.909, 0.412, 0.551, 0.787 -> kept at >= 0.7: samples 0 (class 0) and 3 (class 1)
    batch = {"optical": torch.randn(4, 4, 8, 8), "sar": torch.randn(4, 2, 8, 8)}
    fixed = _Fixed(teacher)
    labels, keep = obj.pseudo_labels({"round_1": fixed}, batch)
    assert fixed.seen == (4, 2)  # the teacher of round 2 reads optical and SAR
    assert keep.tolist() == [True, False, False, True] and labels[keep].tolist() == [0, 1]
    from raypipe.models import build_model

    student = build_model({**TINY_MM, "num_classes": 3, "optical": {**TINY, "in_channels": 4},
                           "sar": {**TINY, "in_channels": 2}})
    loss, parts = obj.loss(student, {"round_1": fixed}, batch)
    out = student(batch["optical"], batch["sar"]).fused
    assert torch.allclose(loss, F.cross_entropy(out[[0, 3]], torch.tensor([0, 1]))) and float(parts["kept"]) == 0.5


def test_ttl_intermediate_is_the_partly_cloudy_domain():
    m = get_method("ttl")
    cfg = resolve(m)
    assert [(s.name, s.teachers) for s in m.stages] == [("source", ()), ("intermediate", ("source",)),
                                                        ("student", ("intermediate",))]
    assert cfg.stages.intermediate.filter.max_cloud_fraction == 0.5 and cfg.stages.student.filter.max_cloud_fraction == 1.0
    stage = m.stage("intermediate")
    obj = stage.objective_class()(cfg.stages.intermediate, stage.inputs, {"source": "optical"})
    teacher = torch.tensor([[4.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])  # all confident
    labels, keep = obj.pseudo_labels({}, {"logits/source": teacher, "cloud_fraction": torch.tensor([0.0, 0.7, 0.49])})
    assert keep.tolist() == [True, False, True]  # the tile at 0.7 is outside the intermediate domain (< 0.5)


@pytest.fixture(scope="module")
def kdhn_runs(tmp_path_factory, ray_session):
    tmp = tmp_path_factory.mktemp("kdhn")
    train = {"epochs": 1, "batch_size": 16}
    extra = {"data": {"benchmark": {"out": str(tmp / "bench"), "tiles": 40, "size": 16, "scene_size": 10}},
             "tracking": {"uri": f"sqlite:///{tmp}/mlflow.db"}, "ray": {"storage_path": str(tmp / "runs")},
             "stages": {"source": {"model": {"kind": "resnet", **TINY}, "train": train},
                        "student": {"model": TINY_MM, "train": train, "filter": {"threshold": 0.0}}}}  # 1 epoch: near-uniform teachers
    two = run_method(KDHN, resolve(KDHN, extra=extra))
    three = run_method(KDHN, resolve(KDHN, extra=extra, overrides=["stages.student.rounds=3"]))
    return tmp, two, three


def test_kdhn_rounds_run_in_lineage_and_more_rounds_reuse_the_earlier(kdhn_runs):
    tmp, two, three = kdhn_runs
    assert list(two.stages) == ["source", "round_1", "student"]
    assert list(three.stages) == ["source", "round_1", "round_2", "student"]
    assert [s for s, o in three.stages.items() if o.reused] == ["source", "round_1"]
    client = mlflow.MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    for result, chain in ((two, ["source", "round_1", "student"]), (three, ["round_1", "round_2", "student"])):
        for teacher, student in zip(chain, chain[1:]):
            run = client.get_run(result.stages[student].run_id)
            assert run.data.tags[f"raypipe.input.{teacher}"] == result.stages[teacher].run_id
            assert 0 < run.data.metrics["pseudo/filter/kept"] <= run.data.metrics["pseudo/filter/n"]
    assert client.get_run(three.stages["student"].run_id).data.params["stages.student.rounds"] == "3"
    assert "KDHN student, round 3" in three.table and "KDHN round 2 student" in three.table
