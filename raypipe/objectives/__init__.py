"""Objectives that several methods share, registered by name in ``raypipe.engine.OBJECTIVES``:

* ``supervised`` — cross-entropy with labels (a source model; the oracles on target labels);
* ``pseudo_label`` — cross-entropy with a teacher's pseudo labels, kept where the teacher's logits pass
  a filter (MTTS stage 1, KDHN).

A method's own objectives live in its folder (e.g. MTTS's IRM distillation).
"""

from raypipe.objectives.pseudo_label import FilterConfig, PseudoLabel, PseudoLabelConfig, apply_filter
from raypipe.objectives.supervised import Supervised

__all__ = ["Supervised", "PseudoLabel", "PseudoLabelConfig", "FilterConfig", "apply_filter"]
