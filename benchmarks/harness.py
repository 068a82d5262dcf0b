"""The timing harness every benchmark in this folder shares (and ``tests/test_testing.py`` checks).

* :class:`Timer` / :func:`timed`: wall time of a block or a call (``time.perf_counter`` unless a
  clock is given).
* :func:`repeat_rotating`: call several methods ``rounds`` times each, round ``r`` in the order
  rotated by ``r`` (so both sides of a ratio are measured in the same run, under the same drift of
  machine load, none always first); per-method medians.
* :class:`CpuMeter`: CPU seconds of this process and all its descendants over a block, and the
  load other users put on the machine meanwhile; :class:`QuietGate`: wait (bounded) for that load
  to drop before a timed pass.
* :class:`MemorySampler`: peak summed RSS / PSS of this process tree, sampled by a thread.
* :func:`emit`: print the figures and write them as raw JSON (docs/benchmarks.md keeps the raw
  JSON beside each table); :func:`run_info` describes the run for that JSON.

Standard library only at import; psutil (a dev dependency) is imported by the classes that need it.
Import it as a sibling module: the benchmarks are run as ``python benchmarks/NAME.py``, which puts
this folder on ``sys.path``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from typing import Any, Callable, Mapping

Clock = Callable[[], float]


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds`` (wall time of the block)."""

    def __init__(self, clock: Clock = time.perf_counter):
        self.clock = clock
        self.start = self.seconds = None

    def __enter__(self) -> "Timer":
        self.start = self.clock()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = self.clock() - self.start


def timed(fn: Callable[..., Any], *args, clock: Clock = time.perf_counter, **kwargs) -> tuple[Any, float]:
    """``(fn(*args, **kwargs), seconds it took)``."""
    with Timer(clock) as t:
        out = fn(*args, **kwargs)
    return out, t.seconds


def rotated(names: list[str], r: int) -> list[str]:
    """``names`` rotated left by ``r``: the call order of round ``r`` in :func:`repeat_rotating`."""
    k = r % len(names) if names else 0
    return names[k:] + names[:k]


@dataclasses.dataclass
class Rotation:
    """What :func:`repeat_rotating` measured. Per method, in round order: ``seconds`` (wall time of
    each call), ``values`` (the figure the medians are of: ``seconds`` unless a ``value`` function
    was given) and ``results`` (what each call returned). ``calls``: (round, method) in call order."""

    names: list[str]
    calls: list[tuple[int, str]]
    seconds: dict[str, list[float]]
    values: dict[str, list[float]]
    results: dict[str, list[Any]]

    @property
    def medians(self) -> dict[str, float]:
        return {m: statistics.median(v) for m, v in self.values.items()}


def repeat_rotating(fns: Mapping[str, Callable[[], Any]], rounds: int, *, warmup: bool = False,
                    value: Callable[[Any, float], float] | None = None,
                    before: Callable[[int, str], None] | None = None,
                    after: Callable[[int, str, Any, float], None] | None = None,
                    clock: Clock = time.perf_counter) -> Rotation:
    """Call each of ``fns`` (name -> no-argument callable) ``rounds`` times, round ``r`` in the order
    of ``rotated(names, r)``, timing every call with ``clock``.

    ``warmup``: call each once, untimed and in order, first. ``before(round, name)`` runs before
    each call, outside its timing (e.g. a :class:`QuietGate`); ``after(round, name, result,
    seconds)`` after it (e.g. a progress line or a check). ``value(result, seconds)`` is the figure
    each call contributes to the medians (default: its seconds; e.g. samples per second from what
    the call returned). Returns a :class:`Rotation`; ``.medians`` are per method.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    names = list(fns)
    if warmup:
        for name in names:
            fns[name]()
    rot = Rotation(names, [], {m: [] for m in names}, {m: [] for m in names}, {m: [] for m in names})
    for r in range(rounds):
        for name in rotated(names, r):
            if before is not None:
                before(r, name)
            out, seconds = timed(fns[name], clock=clock)
            rot.calls.append((r, name))
            rot.seconds[name].append(seconds)
            rot.results[name].append(out)
            rot.values[name].append(seconds if value is None else value(out, seconds))
            if after is not None:
                after(r, name, out, seconds)
    return rot


def median_seconds(fn: Callable[[], Any], repeats: int, *, warmup: bool = True,
                   clock: Clock = time.perf_counter) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls (after one untimed call if ``warmup``)."""
    return repeat_rotating({"fn": fn}, repeats, warmup=warmup, clock=clock).medians["fn"]


# --------------------------------------------------------------------------------------
# CPU time of the process tree, other users' load
# --------------------------------------------------------------------------------------


def _machine_busy() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, wall seconds) from /proc/stat (0s if unreadable)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(v[:8]) - v[3] - v[4]) / hz, time.perf_counter()


class CpuMeter:
    """CPU seconds (user + system) used by this process and all its descendants (Ray, loader workers,
    a server subprocess) over a block: the work's cost, independent of other users' load on the
    machine. ``other_cores``: CPU used by everything else on the machine, in cores, during the block."""

    def __init__(self):
        import psutil

        self.psutil = psutil

    def _total(self) -> dict[int, float]:
        me = self.psutil.Process()
        out = {}
        for p in [me, *me.children(recursive=True)]:
            try:
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
            except self.psutil.Error:
                pass
        return out

    _machine_busy = staticmethod(_machine_busy)

    def __enter__(self) -> "CpuMeter":
        self.start = self._total()
        self.machine0 = self._machine_busy()
        return self

    def __exit__(self, *exc) -> None:
        end = self._total()
        machine1 = self._machine_busy()
        self.seconds = sum(v - self.start.get(pid, 0.0) for pid, v in end.items())
        wall = machine1[1] - self.machine0[1]
        self.other_cores = max(0.0, (machine1[0] - self.machine0[0] - self.seconds) / wall) if wall > 0 else 0.0


class QuietGate:
    """Before each timed pass, wait until other users' load on this shared machine is low.

    Other users' load = busy CPU of the whole machine minus the CPU of this benchmark's own
    processes, over ``window`` seconds. Waits at most ``max_wait`` s per pass and ``budget`` s in
    all (then passes go ahead whatever the load); the load measured *during* each pass is reported
    with it either way. The same rule applies to every method. ``threshold`` <= 0: never wait.
    """

    def __init__(self, threshold: float, window: float = 3.0, max_wait: float = 120.0, budget: float = 360.0):
        self.threshold, self.window, self.max_wait, self.budget = threshold, window, max_wait, budget

    def wait(self) -> tuple[float, float]:
        """(seconds waited, last measured other-users load in cores)."""
        if self.threshold <= 0:
            return 0.0, float("nan")
        start = time.perf_counter()
        while True:
            with CpuMeter() as meter:
                time.sleep(self.window)
            waited = time.perf_counter() - start
            if meter.other_cores < self.threshold or waited >= min(self.max_wait, self.budget):
                self.budget = max(0.0, self.budget - waited)
                return waited, meter.other_cores


# --------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------


def smaps_rollup(pid: int) -> dict[str, int]:
    """Pss and the shared-memory part of RSS of a process, in bytes (Linux ``smaps_rollup``)."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Pss", "Pss_Shmem"):
                    out[key] = int(rest.split()[0]) * 1024
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssShmem:"):
                    out["Rss_Shmem"] = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return out


class MemorySampler:
    """Samples, every ``period`` s on a thread, the summed RSS of this process and its descendants
    (except ``exclude_pids`` and their descendants), and keeps the peaks: ``peak_rss``, ``peak_pss``
    (a page shared by k processes counts 1/k in each), ``peak_shmem`` (RSS that is shared memory).
    ``store_probe``: an optional callable returning some other used-bytes figure (None if unknown),
    sampled alongside into ``peak_store`` (e.g. Ray's object store). ``samples``: samples taken."""

    def __init__(self, exclude_pids: set[int], period: float = 0.2,
                 store_probe: Callable[[], int | None] | None = None):
        import psutil

        self.psutil = psutil
        self.me = psutil.Process()
        self.exclude = set(exclude_pids)
        self.period = period
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_shmem = 0
        self.peak_store = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._store = store_probe

    def _procs(self):
        out = [self.me]
        for p in self.me.children(recursive=True):
            if p.pid in self.exclude:
                continue
            try:
                if any(p.pid == q.pid for q in p.parents() if q.pid in self.exclude):
                    continue
            except self.psutil.Error:
                continue
            out.append(p)
        return out

    def sample(self) -> None:
        total = pss = shmem = 0
        for p in self._procs():
            try:
                total += p.memory_info().rss
            except self.psutil.Error:
                continue
            roll = smaps_rollup(p.pid)
            pss += roll.get("Pss", 0)
            shmem += roll.get("Rss_Shmem", 0)
        self.peak_rss = max(self.peak_rss, total)
        self.peak_pss = max(self.peak_pss, pss)
        self.peak_shmem = max(self.peak_shmem, shmem)
        if self._store is not None:
            used = self._store()
            if used is not None:
                self.peak_store = max(self.peak_store or 0, used)
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period)

    def __enter__(self) -> "MemorySampler":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


def run_info() -> dict[str, Any]:
    """Where and how this run happened, for the raw JSON: command line, time, machine."""
    return {"argv": list(sys.argv), "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values: numpy scalars and arrays as numbers and lists, tuples and sets
    as lists, dataclasses as dicts, keys as strings, NaN and infinities as null."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "tolist"):  # numpy scalar or array, torch tensor
        return jsonable(obj.tolist())
    try:
        return jsonable(float(obj))
    except (TypeError, ValueError):
        return str(obj)


def format_results(results: Mapping[str, Any], prefix: str = "") -> str:
    """A plain ``key: value`` listing of (nested) results, one figure per line."""
    lines = []
    for k, v in results.items():
        if isinstance(v, Mapping):
            lines.append(format_results(v, f"{prefix}{k}."))
        else:
            lines.append(f"{prefix}{k}: {v:.4g}" if isinstance(v, float) else f"{prefix}{k}: {v}")
    return "\n".join(x for x in lines if x)


def emit(results: Mapping[str, Any], path: str | os.PathLike | None = None, *, text: str | None = None,
         stream=None, indent: int = 1) -> dict[str, Any]:
    """Print the figures (``text`` when given, else :func:`format_results`) and, when ``path`` is
    given, write ``results`` there as raw JSON (see :func:`jsonable`). Returns the JSON values."""
    data = jsonable(results)
    if path:  # written first: a long run's figures survive whatever happens to the printing
        path = os.fspath(path)
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(data, f, indent=indent)
            f.write("\n")
    print(format_results(results) if text is None else text, file=stream or sys.stdout, flush=True)
    return data
