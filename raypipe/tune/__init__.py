"""Ray Tune sweeps of any method (``jobs/tune.py``): search spaces in YAML under the dotted config
paths of ``--set``, upstream stages trained once, trials nested in MLflow, resume with ``Tuner.restore``."""

from raypipe.tune.space import SearchSpace, check_space, load_space
from raypipe.tune.sweep import Sweep, SweepOutcome, run_sweep, shared_stages

__all__ = ["SearchSpace", "load_space", "check_space", "Sweep", "SweepOutcome", "run_sweep", "shared_stages"]
