"""MTTS + IRM end to end: the short form of ``python jobs/run.py --method mtts``.

With no arguments it runs the embedded default: a small generated benchmark (made if absent) on local
Ray, with a local MLflow store in the working directory, all four stages, then a results table.

    python jobs/mtts.py
    python jobs/mtts.py --config my.yaml --set stages.target.irm.mode=batch --num-workers 2
    ray job submit --working-dir . -- python jobs/mtts.py --tracking-uri http://mlflow:5000 \\
        --data s3://bucket/manifests/sen12ms.parquet --set data.target_manifest=s3://bucket/manifests/cr.parquet
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(method="mtts"))
