"""SPL (TGRS 2022, 10.1109/TGRS.2022.3157917; paper only, the GeoX-Lab/TPL repository is empty):
remove the clouds first, then classify the restored image with the source model.

* ``source``: f_S (shared with every method).
* ``declouder``: a cloud-removal network (U-Net residual generator + PatchGAN discriminator) trained on
  self-generated pairs: the *source* domain's cloud-free tiles under simulated clouds
  (``data.pipeline.clouds`` preset), since the target has no cloud-free reference. L1 + SSIM + a
  small adversarial term, self-paced: each batch's easiest samples by texture complexity first, all
  of them from half the epochs on (``stages.declouder.{ssim_weight, adv_weight, pace.*}``). Scored
  per epoch and on source test (simulated clouds) by L1, PSNR and SSIM (task ``restoration``).
* ``classify``: target cloudy optical → the remover → f_S, assembled from the two stages (no training).

raypipe's choices where the paper is silent: docs/methods.md.
"""

from __future__ import annotations

import copy
from typing import Mapping

from raypipe.engine.method import SOURCE_TRAIN, TARGET_TEST, TARGET_TRAIN, Method, Row, Stage, View
from raypipe.engine.registry import METHODS
from raypipe.methods.common import DATA_DEFAULTS, SOURCE, SOURCE_DEFAULTS, SOURCE_ROW
from raypipe.methods.spl.objective import AssembledRemoverThenSource, CloudRemoval  # registers spl_removal, spl_compose

PAIRS_TRAIN = View("source", SOURCE_TRAIN.split, "both", simulate=True)
PAIRS_TEST = View("source", "test", "both", simulate=True)
DECLOUDER = {"kind": "declouder", "generator": {"encoder": {"type": "resnet", "depth": 10, "width": 16},
                                                 "decoder_channels": [32, 16, 16, 16, 16], "norm": "group"}}


def expand(data: Mapping) -> tuple[Method, dict]:
    """The classify stage's model is the declouder's and the source's, whatever they are configured as."""
    data = copy.deepcopy(dict(data))
    stages = data.setdefault("stages", {})
    stages.setdefault("classify", {})["model"] = {
        "kind": "restore_classify", "restorer": copy.deepcopy(stages.get("declouder", {}).get("model", {})),
        "classifier": copy.deepcopy(stages.get("source", {}).get("model", {}))}
    return METHOD, data


METHOD = Method(
    name="spl",
    description="SPL: self-paced cloud removal (trained on simulated clouds over source tiles), then f_S on the restored target",
    stages=(SOURCE,
            Stage("declouder", objective="spl_removal", inputs="optical", train=PAIRS_TRAIN,
                  evaluate={"source_sim_test": PAIRS_TEST}, task="restoration",
                  description="cloud remover on simulated clouds over source cloud-free tiles"),
            Stage("classify", objective="spl_compose", inputs="optical", teachers=("source", "declouder"),
                  train=TARGET_TRAIN, evaluate={"target_test": TARGET_TEST},
                  description="target cloudy optical -> remover -> f_S (assembled, not trained)")),
    defaults={"data": DATA_DEFAULTS, "stages": {"source": SOURCE_DEFAULTS, "declouder": {"model": DECLOUDER}}},
    table=(SOURCE_ROW, Row("SPL: cloud removal, then f_S (optical)", "classify")),
    main_stage="classify",
    expand=expand,
)
METHODS.register(METHOD.name, METHOD)

__all__ = ["METHOD", "AssembledRemoverThenSource", "CloudRemoval"]
