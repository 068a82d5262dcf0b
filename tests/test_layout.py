"""The package layout: no import loops between raypipe's packages, an open dataset registry."""

import ast
from pathlib import Path

import pytest

import raypipe
from raypipe.data.datasets import DATASETS, SPECS, DatasetSpec, get_spec, register
from raypipe.errors import ConfigError

PKG = Path(raypipe.__file__).resolve().parent


def unit_of(module: str) -> str | None:
    """raypipe.data.pipeline -> raypipe.data; raypipe.storage -> raypipe.storage; other -> None."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "raypipe" and len(parts) > 1 else None


def is_unit(name: str) -> bool:
    path = PKG.parent / Path(*name.split("."))
    return path.is_dir() or path.with_suffix(".py").exists()


def imports_by_unit() -> dict[str, set[str]]:
    """Package / top-level module of raypipe -> the other raypipe units it imports (anywhere in its files)."""
    graph: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        unit = unit_of(module) or "raypipe"
        deps = graph.setdefault(unit, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                target = unit_of(name)
                if target and target != unit and is_unit(target):
                    deps.add(target)
    return graph


def test_no_package_imports_a_package_that_imports_it_back():
    graph = imports_by_unit()
    assert {"raypipe.data", "raypipe.clouds", "raypipe.synthetic", "raypipe.bands", "raypipe.raster"} <= set(graph)

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    loops = sorted(u for u in graph if u in reachable(u))
    assert loops == [], {u: sorted(graph[u]) for u in loops}
    # the bottom layer imports no package (only other bottom modules)
    bottom = {"raypipe.storage", "raypipe.raster", "raypipe.bands", "raypipe.errors", "raypipe.config"}
    for unit in bottom:
        assert graph[unit] <= bottom, (unit, graph[unit])
    # clouds sit below the data pipeline; the generated benchmarks' writers (synthetic) sit above the readers
    # whose layouts and label codes they write (data), and no reader depends on a generator
    assert "raypipe.data" not in reachable("raypipe.clouds") and "raypipe.synthetic" not in reachable("raypipe.data")


def test_registry_finds_every_dataset_by_name_and_is_open():
    assert list(SPECS) == ["sen12ms", "sen12ms-cr", "synthetic", "m3m-cr", "m3m-cr-generated", "whu-opt-sar"]
    assert SPECS is DATASETS
    assert [get_spec(n).windowed_reads for n in SPECS] == [False, False, False, False, False, True]
    assert [get_spec(n).task for n in SPECS] == ["classification"] * 3 + ["segmentation"] * 3
    # the generated M3M-CR layout differs from M3M-CR only in that its masks are the simulator's truth
    assert get_spec("m3m-cr-generated").masks_are_truth and not get_spec("m3m-cr").masks_are_truth
    with pytest.raises(ConfigError) as e:
        get_spec("sen13ms")
    assert e.value.field == "--dataset" and "sen12ms" in str(e.value)

    class Tiny(DatasetSpec):
        def manifest_rows(self, root, quarantine, options):
            return [dict(sample_id="a", dataset=self.name, split="train", optical_uri=f"{root}/a.tif",
                         height=4, width=4)], list(self.classes)

    spec = Tiny("tiny-test", "classification", ("B",), ("uint8",), 255.0, (), (), ("x", "y"))
    try:
        assert register(spec) is spec and get_spec("tiny-test") is spec and "tiny-test" in SPECS
        with pytest.raises(ConfigError):  # a name belongs to one dataset type
            register(type("Other", (DatasetSpec,), {})("tiny-test", "classification", (), (), 1.0, (), (), ()))
    finally:
        DATASETS.pop("tiny-test", None)
