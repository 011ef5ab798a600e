"""The Ray runner of the pre-tokenization pipeline; see :mod:`.job`."""

from videopoet.pipelines.ray.job import run_ray

__all__ = ["run_ray"]
