"""What people see: one line per stage and epoch while a method runs, then its results table.

Framework output (Ray Train reports, checkpoint paths, Ray Data plans) goes to the log file set up by
:func:`setup_logging`, not here, unless ``--verbose``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from raypipe.engine.method import Method


def _pct(x) -> str:
    return f"{100 * x:6.1f}" if x is not None else "   n/a"


def table_rows(method: "Method", stages: Mapping, split: str = "test") -> tuple[list, dict]:
    """The method's table rows that have a result (``split="val"``: their val twins, ``…_val`` for
    ``…_test``), and each row's label with its oracle mark."""
    rows = list(method.table)
    if split == "val":
        from dataclasses import replace

        from raypipe.engine.method import val_twin

        rows = [replace(r, prefix=val_twin(r.prefix)) if r.prefix.endswith("_test") else r for r in rows]
    rows = [r for r in rows if r.stage in stages and r.prefix in stages[r.stage].evaluations]
    return rows, {r: r.label + oracle_mark(r, stages[r.stage]) for r in rows}


def results_table(method: "Method", stages: Mapping, split: str = "test") -> str:
    """Accuracy (%) per table row of the method, overall and per cloud bucket, with bucket sizes
    (``split="val"``: the rows' val twins, ``…_val`` for ``…_test``, as a sweep's trials evaluate)."""
    rows, labels = table_rows(method, stages, split)
    width = max([38, *(len(v) for v in labels.values())])
    head = (f"{'model':<{width}} {'OA':>6} {'AA':>6} {'F1':>6} {'kappa':>6} {'clear':>6} {'partly':>6} {'cloudy':>6}"
            f"  {'n clear/partly/cloudy':>22}")
    lines = [head, "-" * len(head)]
    for r in rows:
        res = stages[r.stage].evaluations[r.prefix]
        o, b = res["overall"], res["buckets"]
        ns = "/".join(str(b.get(k, {}).get("n", 0)) for k in ("clear", "partly", "cloudy"))
        label = labels[r]
        lines.append(f"{label:<{width}} {_pct(o['oa'])} {_pct(o['aa'])} {_pct(o.get('macro_f1'))} {_pct(o['kappa'])} "
                     f"{_pct(b.get('clear', {}).get('oa'))} {_pct(b.get('partly', {}).get('oa'))} "
                     f"{_pct(b.get('cloudy', {}).get('oa'))}  {ns:>22}")
    return "\n".join(lines)


def oracle_mark(row, outcome) -> str:
    """`` [oracle: …]`` for a row that used information a real user lacks (target labels in training,
    selection by target val labels, the simulator's true cloud masks), else ``""``."""
    reasons = set(getattr(outcome, "oracle", ()) or ())
    if isinstance(row.oracle, str) and row.oracle:
        reasons.add(row.oracle)
    elif row.oracle is True:
        reasons.add("labels")
    return f" [oracle: {', '.join(sorted(reasons))}]" if reasons else ""


def oracle_summary(method, stages) -> str:
    """One line: which rows of the table, if any, used oracle information."""
    marked = [r.label for r in method.table if r.stage in stages and oracle_mark(r, stages[r.stage])]
    return f"oracle information used by: {'; '.join(marked)}" if marked else "oracle information: none (no row " \
        "used target labels, selection by target labels or true cloud masks)"


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Console:
    """Progress lines for people. ``enabled=False`` keeps it silent (library use, tests)."""

    def __init__(self, stream=None, enabled: bool = True):
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self._stage_t0 = 0.0
        self._epoch_t0 = 0.0

    def _print(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.stream, flush=True)

    def start(self, method, cfg, data, plans) -> None:
        n = len(plans)
        self._print(f"{method.name}: {method.description}")
        self._print(f"data: {data.summary} ({len(data.classes)} classes); {n} stage{'s' if n != 1 else ''}; "
                    f"{cfg.ray.num_workers} worker{'s' if cfg.ray.num_workers != 1 else ''}"
                    f"{' with GPUs' if cfg.ray.use_gpu else ''}")

    def stage_start(self, index: int, total: int, plan) -> None:
        self._stage_t0 = self._epoch_t0 = time.perf_counter()
        teachers = f" from {', '.join(plan.stage.teachers)}" if plan.stage.teachers else ""
        self._print(f"[{index + 1}/{total}] {plan.name}: {plan.stage.objective} on {plan.stage.inputs}{teachers}")

    def epoch(self, plan, m: Mapping) -> None:
        now = time.perf_counter()
        done, total = int(m.get("epoch", 0)), int(m.get("epochs", 0))
        eta = (now - self._epoch_t0) * (total - done)  # the last epoch's duration (the first includes start-up)
        name, val = ("mIoU", m["val/miou"]) if "val/miou" in m else ("OA", m.get("val/oa"))
        val_s = f"  val {name} {100 * val:5.1f} %" if isinstance(val, float) and val == val else ""
        self._print(f"      {plan.name} epoch {done:>3}/{total}  loss {m.get('train/loss', float('nan')):.4f}{val_s}"
                    f"  {m.get('train/samples_per_s', 0.0):6.1f} samples/s  ETA {_clock(eta)}")
        self._epoch_t0 = now

    def stage_done(self, outcome) -> None:
        prefix = "target_test" if "target_test" in outcome.evaluations else next(iter(outcome.evaluations), "")
        test = outcome.evaluations.get(prefix)
        metric = "miou" if test and "miou" in test["overall"] else "oa"
        oa = (f"; {prefix.replace('_', ' ')} {'mIoU' if metric == 'miou' else 'OA'} {100 * test['overall'][metric]:.1f} %"
              if test and test["overall"].get(metric) is not None else "")
        how = "reused run" if outcome.reused else "trained, run"
        self._print(f"      {outcome.name}: {how} {outcome.run_id[:12]} in {_clock(outcome.seconds)}{oa}")


def setup_logging(log_dir: str, name: str, verbose: bool = False) -> str:
    """Everything (raypipe, Ray, MLflow) to ``<log_dir>/<name>-<time>.log``; the terminal gets only
    warnings from libraries, or everything with ``verbose``. Returns the log file's path."""
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")  # mlflow would add its own terminal handler
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.makedirs(log_dir, exist_ok=True)
    path = os.path.join(log_dir, f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.log")
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
    file_handler = logging.FileHandler(path)
    file_handler.setFormatter(fmt)
    root.addHandler(file_handler)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:
        console.addFilter(_only_own_warnings)
    root.addHandler(console)
    # Python warnings (a library's DeprecationWarning, e.g. Ray Data's in a driver-side training loop)
    # are records of the "py.warnings" logger: to the log file, and to the terminal only with verbose
    logging.captureWarnings(True)
    quiet_library_loggers(verbose)
    return path


def _only_own_warnings(record: logging.LogRecord) -> bool:
    """On the terminal: raypipe's warnings, and only errors from the libraries (the rest is in the log)."""
    return record.name.startswith("raypipe") or record.levelno >= logging.ERROR


def quiet_library_loggers(verbose: bool = False) -> None:
    """Ray and Ray Data install their own terminal handlers; route them through ours (the log file,
    and the terminal at WARNING unless ``verbose``)."""
    for name in ("ray", "ray.data", "ray.train", "ray.tune", "mlflow"):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                lg.removeHandler(h)
        lg.propagate = True
        if not verbose:
            lg.setLevel(logging.INFO)
