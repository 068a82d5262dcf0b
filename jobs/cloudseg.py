"""CloudSeg end to end: the short form of ``python jobs/run.py --method cloudseg``.

With no arguments it runs the embedded default: a small generated benchmark in the M3M-CR layout (made
if absent) on local Ray, with a local MLflow store in the working directory; the teacher, the student
and the four references; then the table for all, cloud-free and cloudy pixels. A second run reuses
every stage.

    python jobs/cloudseg.py
    python jobs/cloudseg.py --config configs/cloudseg_whu.yaml              # generated WHU-OPT-SAR layout
    python jobs/cloudseg.py --data m3mcr.parquet --config configs/cloudseg_published.yaml --use-gpu
    ray job submit --working-dir . -- python jobs/cloudseg.py --tracking-uri http://mlflow:5000 \\
        --data s3://bucket/manifests/m3mcr.parquet --config configs/cloudseg_published.yaml --num-workers 4 --use-gpu
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(method="cloudseg"))
