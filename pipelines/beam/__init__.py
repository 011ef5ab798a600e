"""videopoet.pipelines.beam: the Apache Beam runner of the pre-tokenization pipeline.

    from videopoet.pipelines.beam import run_beam
    summary = run_beam("corpus/*.tar", "synth", "v1", "./datasets", load_pipeline_config("tiny"), workers=2)

See :mod:`.job`; the per-shard work lives in :mod:`videopoet.pipelines.stages` (shared with Ray).
"""

from videopoet.pipelines.beam.job import TokenizeShard, build_options, run_beam

__all__ = ["TokenizeShard", "build_options", "run_beam"]
