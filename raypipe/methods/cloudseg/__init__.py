"""CloudSeg (Xu et al., ISPRS J. 2024): teacher/student optical + SAR land-cover segmentation under clouds.

Stages (DESIGN §6):

1. ``teacher``: the three-stream network (optical, SAR, cross; fusion block after every encoder stage)
   on **cloud-free** optical + SAR, cross-entropy (ignore 255);
2. ``student``: the same network with the spatial gate and the cloud-removal head, on **cloudy** optical
   + SAR, guided by the frozen teacher (fed the cloud-free optical) through cross-stream decoder
   features on cloud-free pixels, while restoring the cloud-free image
   (:mod:`raypipe.methods.cloudseg.objective`);

and the segmentation references, on the same data, crops, epochs and selection rule: the teacher
architecture trained on cloudy input without distillation (``ref_three_stream``), early fusion
(``ref_early_fusion``), optical-only (``ref_optical``) and SAR-only (``ref_sar``) U-Nets.

Every stage is evaluated on the test split's cloudy optical (+ SAR) by sliding windows, for all,
cloud-free and cloudy pixels; the teacher also on the cloud-free optical, a row marked
"[oracle: cloud-free input]" (a user with cloudy imagery has no cloud-free image of that date).

The embedded default is small enough for 2 CPU cores: the generated M3M-CR-layout benchmark
(100 px optical ↔ 30 px labels; ``raypipe.synthetic.segmentation``), MiT "tiny" encoders, 60 px crops
and windows, a short step schedule. ``configs/cloudseg_published.yaml`` holds the published settings
(MiT-B4, 160 px crops ↔ 48 px, windows of 160 at stride 80, Adam 1e-4, batch 32, 30 epochs, lr halved
every 5 epochs from epoch 10, validation every 2 epochs, best val mIoU), ``configs/cloudseg_whu.yaml``
the generated WHU-OPT-SAR layout with simulated clouds.

    python jobs/cloudseg.py
    python jobs/run.py --method cloudseg --data s3://bucket/m3mcr.parquet --config configs/cloudseg_published.yaml
"""

from raypipe.engine.method import Method, Row, Stage, View
from raypipe.engine.registry import METHODS
from raypipe.methods.cloudseg import objective  # noqa: F401  (registers the objectives)

# One labelled domain: the engine's "source" role, resolved to data.source_domain ("" = every row).
TRAIN_CLEAR = View("source", "train", "clear")
TRAIN_CLOUDY = View("source", "train", "cloudy")
TRAIN_PAIR = View("source", "train", "both")
TEST_CLOUDY = View("source", "test", "cloudy")
TEST_CLEAR = View("source", "test", "clear")
EVAL = {"cloudy_test": TEST_CLOUDY}

STAGES = (
    Stage("teacher", objective="seg_supervised", inputs="both", train=TRAIN_CLEAR,
          evaluate={"cloudy_test": TEST_CLOUDY, "cloudfree_test": TEST_CLEAR},
          description="three-stream teacher on cloud-free optical + SAR"),
    Stage("student", objective="cloudseg_student", inputs="both", train=TRAIN_PAIR, teachers=("teacher",),
          evaluate=EVAL, description="student on cloudy optical + SAR, hint from the teacher, cloud removal"),
    Stage("ref_three_stream", objective="seg_supervised", inputs="both", train=TRAIN_CLOUDY, evaluate=EVAL,
          description="the teacher's architecture trained on cloudy optical + SAR, no distillation"),
    Stage("ref_early_fusion", objective="seg_supervised", inputs="both", train=TRAIN_CLOUDY, evaluate=EVAL,
          description="U-Net on stacked cloudy optical + SAR"),
    Stage("ref_optical", objective="seg_supervised", inputs="optical", train=TRAIN_CLOUDY, evaluate=EVAL,
          description="U-Net on cloudy optical"),
    Stage("ref_sar", objective="seg_supervised", inputs="sar", train=TRAIN_CLOUDY, evaluate=EVAL,
          description="U-Net on SAR"),
)

ENCODER = {"type": "mit", "variant": "tiny"}
TRAIN = {"epochs": 14, "batch_size": 8, "lr": 2e-3, "weight_decay": 0.0, "optimizer": "adamw", "schedule": "step",
         "step_start": 8, "step_every": 3, "step_gamma": 0.5, "val_every": 4, "selection": "val_labels",
         "shuffle_buffer": 64}
THREE_STREAM = {"kind": "cloudseg", "encoder": ENCODER, "student": False}


def _stage(model: dict) -> dict:
    return {"model": model, "train": dict(TRAIN)}


DEFAULTS = {
    "data": {"source_domain": "", "target_domain": "",
             "benchmark": {"kind": "m3m-cr", "out": "data/synthetic-m3mcr", "tiles": 240, "size": 100,
                           "scene_size": 12, "seed": 0, "preset": "thick"},
             "pipeline": {"clouds": {"mode": "auto"}, "augment": {"crop": 60}}},
    "task": {"window": 60, "stride": 40},
    "stages": {
        "teacher": _stage(THREE_STREAM),
        "student": _stage({**THREE_STREAM, "student": True}),
        "ref_three_stream": _stage(THREE_STREAM),
        "ref_early_fusion": _stage({"kind": "early_fusion_seg", "encoder": ENCODER}),
        "ref_optical": _stage({"kind": "segnet", "encoder": ENCODER}),
        "ref_sar": _stage({"kind": "segnet", "encoder": ENCODER}),
    },
}

METHOD = Method(
    name="cloudseg",
    description="CloudSeg: optical + SAR segmentation under clouds, teacher (cloud-free) → student (cloudy), "
                "with references",
    stages=STAGES,
    defaults=DEFAULTS,
    task="segmentation",
    main_stage="student",
    table=(
        Row("teacher on cloud-free optical + SAR", "teacher", "cloudfree_test", oracle="cloud-free input"),
        Row("teacher on cloudy optical + SAR", "teacher", "cloudy_test"),
        Row("CloudSeg student (cloudy optical + SAR)", "student", "cloudy_test"),
        Row("three-stream, trained on cloudy (no KD)", "ref_three_stream", "cloudy_test"),
        Row("early-fusion U-Net (cloudy opt + SAR)", "ref_early_fusion", "cloudy_test"),
        Row("optical-only U-Net (cloudy optical)", "ref_optical", "cloudy_test"),
        Row("SAR-only U-Net", "ref_sar", "cloudy_test"),
    ),
    default_note="generated M3M-CR-layout benchmark (240 tiles of 100 px), MiT-tiny, 14 epochs, 60 px crops",
)
METHODS.register(METHOD.name, METHOD)
