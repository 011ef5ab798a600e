"""videopoet.pipelines.beam: the Apache Beam runner of the pre-tokenization pipeline.

    from videopoet.pipelines.beam import run_beam
    summary = run_beam("corpus/*.tar", "synth", "v1", "./datasets", load_pipeline_config("tiny"), workers=2)

See :mod:`.job`; the per-shard work is :func:`videopoet.pipelines.shard.process_shard` (its end shared with Ray).
"""

from videopoet.pipelines.beam import quiet

quiet.install_log_filter()  # before Beam is first imported (by .job): its import-time notes are noise

from videopoet.pipelines.beam.job import TokenizeShard, build_options, run_beam  # noqa: E402

__all__ = ["TokenizeShard", "build_options", "run_beam"]
