"""The engine without Ray: registries are open, the loop's per-batch step honours the objective's
optimisers and after_backward hook, the task scores predictions, methods declare valid graphs, and the
import graph keeps the engine free of methods and every package free of loops."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from raypipe.engine import METHODS, OBJECTIVES, Method, Objective, Row, Stage, resolve
from raypipe.engine.config import StageConfig, TrainConfig
from raypipe.engine.loop import train_step
from raypipe.engine.method import SOURCE_TRAIN, TARGET_TEST, TARGET_TRAIN
from raypipe.engine.registry import Registry
from raypipe.engine.task import ClassificationTask
from raypipe.errors import ConfigError
from raypipe.methods import load_methods

REPO = Path(__file__).resolve().parents[1]


def test_registry_is_open_and_names_the_field_on_a_miss():
    reg = Registry("widget")

    @reg.register("a")
    class A:
        pass

    reg.register("b", 42)
    assert reg.get("a") is A and reg.get("b") == 42 and reg.names() == ["a", "b"]
    with pytest.raises(ConfigError) as e:
        reg.get("c", "stages.x.widget")
    assert e.value.field == "stages.x.widget" and "['a', 'b']" in str(e.value)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("b", 43)


def test_a_new_method_registers_itself_and_gets_a_config_with_its_stage_names():
    """A method declared outside raypipe (as a user's plugin would be) needs no edit elsewhere."""

    @dataclass
    class ToyConfig(StageConfig):
        weight: float = 1.0

        def validate(self, path):
            if self.weight < 0:
                raise ConfigError(f"{path}.weight", "must be >= 0")

    @OBJECTIVES.register("toy_objective")
    class Toy(Objective):
        Config = ToyConfig

    toy = Method("toy_method", "a toy", stages=(
        Stage("first", "supervised", "optical", SOURCE_TRAIN),
        Stage("second", "toy_objective", "both", TARGET_TRAIN, {"target_test": TARGET_TEST}, teachers=("first",))),
        table=(Row("second", "second"),))
    METHODS.register(toy.name, toy)
    assert "toy_method" in load_methods().names()
    cfg = resolve(toy, overrides=["stages.second.weight=2.5", "stages.first.train.epochs=3"])
    assert cfg.stages.second.weight == 2.5 and cfg.stages.first.train.epochs == 3
    with pytest.raises(ConfigError) as e:
        resolve(toy, overrides=["stages.second.weight=-1"])
    assert e.value.field == "stages.second.weight"
    with pytest.raises(ConfigError) as e:
        resolve(toy, overrides=["stages.third.weight=1"])
    assert e.value.field == "stages.third"
    with pytest.raises(ConfigError) as e:
        resolve(toy, extra={"force_stages": ["nope"]})
    assert e.value.field == "force_stages"


def test_method_declarations_are_checked():
    with pytest.raises(ValueError, match="not an earlier stage"):
        Method("bad", "", stages=(Stage("a", "supervised", "optical", SOURCE_TRAIN, teachers=("b",)),))
    with pytest.raises(ValueError, match="declared twice"):
        Method("bad", "", stages=(Stage("a", "supervised", "optical", SOURCE_TRAIN),) * 2)
    with pytest.raises(ValueError, match="unknown stage"):
        Method("bad", "", stages=(Stage("a", "supervised", "optical", SOURCE_TRAIN),), table=(Row("x", "zz"),))


def test_registered_methods_include_the_three_and_describe_themselves():
    methods = load_methods()
    for name in ("mtts", "source_only", "kd_s"):
        m = methods.get(name)
        assert m.description and m.stages and m.table
        resolve(m)  # the embedded default resolves and validates


class _TwoOptimisers(Objective):
    """A toy adversarial objective: a 'generator' (w) and a 'critic' (v), each its own optimiser; the
    after_backward hook halves the generator's gradient (as OGM-GE scales an encoder's)."""

    def __init__(self):
        super().__init__(None, "optical")
        self.calls = []

    def configure_optimizers(self, model, train):
        return {"generator": torch.optim.SGD([model.w], lr=1.0), "critic": torch.optim.SGD([model.v], lr=1.0)}

    def after_backward(self, model, optimizer):
        self.calls.append((optimizer, None if model.w.grad is None else model.w.grad.clone()))
        if optimizer == "generator":
            model.w.grad *= 0.5


def test_train_step_runs_each_optimiser_with_its_loss_and_the_hook_in_between():
    model = torch.nn.Module()
    model.w = torch.nn.Parameter(torch.tensor(2.0))
    model.v = torch.nn.Parameter(torch.tensor(3.0))
    obj = _TwoOptimisers()
    opts = obj.configure_optimizers(model, TrainConfig())
    # generator loss w*v (d/dw = v = 3, d/dv = w = 2); critic loss v^2 (d/dv = 2v = 6)
    losses = {"generator": model.w * model.v, "critic": model.v ** 2}
    total = train_step(obj, model, opts, losses)
    assert total.item() == pytest.approx(2 * 3 + 9)
    assert [c[0] for c in losses and obj.calls] == ["generator", "critic"]
    assert obj.calls[0][1].item() == pytest.approx(3.0)  # the hook saw the raw gradient
    # w stepped by the halved gradient: 2 - 1.0 * 1.5; the critic's zero_grad dropped the generator's
    # gradient on v before its own backward, so v stepped by 2v only: 3 - 6
    assert model.w.item() == pytest.approx(0.5)
    assert model.v.item() == pytest.approx(-3.0)
    with pytest.raises(ValueError, match="no loss for optimisers"):
        train_step(obj, model, opts, {"generator": model.w * 1.0})
    with pytest.raises(ValueError, match="one loss for 2 optimisers"):
        train_step(obj, model, opts, model.w * 1.0)


def test_default_optimiser_follows_train_config():
    model = torch.nn.Linear(2, 2)
    opt = Objective(None, "optical").configure_optimizers(model, TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9,
                                                                            nesterov=True))["main"]
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"] and opt.defaults["lr"] == 0.1


def test_classification_task_scores_hand_made_predictions():
    task = ClassificationTask(3, ["a", "b", "c"])
    logits = torch.tensor([[3.0, 0, 0], [0, 2.0, 0], [0, 0, 1.0], [5.0, 0, 0]])
    batch = {"label": torch.tensor([0, 1, 1, 2]), "cloud_fraction": torch.tensor([0.0, 0.05, 0.5, 0.95])}
    acc = task.accumulator()
    acc.update(task.predict(logits), batch)
    m = task.epoch_metrics(acc.result())
    # correct: 1st, 2nd; clear bucket (c < 0.1): both correct; partly: 0/1; cloudy: 0/1
    assert m == {"oa": 0.5, "clear/oa": 1.0, "partly/oa": 0.0, "cloudy/oa": 0.0}


def test_kd_s_loss_matches_a_hand_computed_value():
    """T = 4, one sample, two classes: teacher logits (4, 0), student (0, 0).
    p = softmax((1, 0)) = (e/(1+e), 1/(1+e)); q = (1/2, 1/2); KL = sum p log(p/q); loss = 16 KL."""
    import math

    from raypipe.methods.kd_s.objective import SoftKD, SoftKDConfig

    e = math.e
    p = (e / (1 + e), 1 / (1 + e))
    expected = 16 * sum(pi * math.log(pi / 0.5) for pi in p)
    model = torch.nn.Linear(1, 2, bias=False)
    torch.nn.init.zeros_(model.weight)
    obj = SoftKD(SoftKDConfig(), "optical", {"source": "optical"})
    batch = {"optical": torch.ones(1, 1), "logits/source": torch.tensor([[4.0, 0.0]])}
    loss, parts = obj.loss(model, {}, batch)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ConfigError) as err:
        resolve(load_methods().get("kd_s"), overrides=["stages.student.temperature=0"])
    assert err.value.field == "stages.student.temperature"


# --- the import graph ----------------------------------------------------------------------------

def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in out if m.startswith("raypipe")}


def _package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def _unit(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return _package_of(".".join(parts))


def _is_real_unit(name: str) -> bool:
    return (REPO / name.replace(".", "/")).is_dir() or (REPO / (name.replace(".", "/") + ".py")).is_file()


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in (REPO / "raypipe").rglob("*.py"):
        unit = _unit(path)
        deps = {_package_of(m) for m in _imports(path)}
        graph.setdefault(unit, set()).update(d for d in deps if d != unit and _is_real_unit(d))
    return graph


def test_no_file_in_the_engine_imports_a_method():
    offenders = [f"{p.relative_to(REPO)} imports {m}" for p in (REPO / "raypipe" / "engine").rglob("*.py")
                 for m in _imports(p) if m.startswith("raypipe.methods")]
    assert not offenders, offenders
    # and no method name appears in the engine's code
    for p in (REPO / "raypipe" / "engine").rglob("*.py"):
        text = p.read_text()
        for name in ("mtts", "aux_optical", "aux_sar", "kd_s", "source_only"):
            assert f'"{name}"' not in text and f"'{name}'" not in text, f"{p.name} names {name}"


def test_no_import_loop_between_packages():
    graph = _graph()
    # every package's transitive dependencies must not contain itself
    for start in graph:
        seen, stack = set(), list(graph[start])
        while stack:
            node = stack.pop()
            if node == start:
                pytest.fail(f"import loop through {start}: it reaches itself via {sorted(graph[start])}")
            if node not in seen:
                seen.add(node)
                stack.extend(graph.get(node, ()))


def test_model_kinds_are_open():
    from raypipe.models import MODELS, build_model, register_model

    @register_model("tiny_linear")
    def _tiny(spec, field):
        return torch.nn.Linear(spec["in_channels"], spec["num_classes"])

    assert "tiny_linear" in MODELS.names()
    m = build_model({"kind": "tiny_linear", "in_channels": 3, "num_classes": 2})
    assert isinstance(m, torch.nn.Linear) and m.in_features == 3
    with pytest.raises(ConfigError) as e:
        build_model({"kind": "nope"}, "stages.x.model")
    assert e.value.field == "stages.x.model.kind" and "tiny_linear" in str(e.value)
