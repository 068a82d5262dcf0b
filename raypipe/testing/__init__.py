"""Test and benchmark helpers shared by ``tests/`` and ``benchmarks/`` (not used by the library itself).

Only the standard library is imported here; moto, s3fs and psutil are imported when first needed
(moto and psutil are dev dependencies: ``pip install -e .[dev]``).
"""

from raypipe.testing.s3 import AWS_ENV_KEYS, S3ServerError, S3TestServer, free_port, s3_env, use_s3_env

__all__ = ["AWS_ENV_KEYS", "S3ServerError", "S3TestServer", "free_port", "s3_env", "use_s3_env"]
