"""Target ``spark`` (pipeline only): the Beam pre-tokenization job on a Spark cluster (portable SparkRunner).

Options: ``--runner=SparkRunner``, ``--spark_master_url`` (required after ``--``, e.g.
``spark://spark-master:7077``), ``--job_name``, and the SDK harness in our image
(``--environment_type=DOCKER --environment_config=IMAGE``; CUDA with ``--gpus-per-node``, then one SDK
worker per harness, ``--sdk_worker_parallelism=1``). Other SparkRunner flags (``--spark_version``,
``--spark_rest_url``, ...) pass through.
"""

from __future__ import annotations

from videopoet.infra.request import Artifact, SubmitRequest, SubmitResult
from videopoet.infra.targets import beamjob

TARGET = "spark"


def check(request: SubmitRequest) -> None:
    beamjob.check(request, TARGET)
    beamjob.require(request, TARGET, "spark_master_url")
    job_flags(request)


def job_flags(request: SubmitRequest) -> list[str]:
    gpu = bool(request.gpus_per_node)
    image = beamjob.image(request, "cuda" if gpu else "cpu")
    ours = [
        "--runner=SparkRunner",
        f"--job_name={request.name}",
        "--environment_type=DOCKER",
        f"--environment_config={image}",
    ]
    if gpu:
        ours.append("--sdk_worker_parallelism=1")
    return beamjob.flags(request, TARGET, ours)


def command(request: SubmitRequest) -> list[str]:
    """The job's launcher command (``videopoet pipeline run ... -- FLAGS``)."""
    return beamjob.command(request, job_flags(request))


def render(request: SubmitRequest) -> list[Artifact]:
    check(request)
    return beamjob.render(request, TARGET, job_flags(request))


def submit(request: SubmitRequest) -> SubmitResult:
    check(request)
    return beamjob.run(request, TARGET, job_flags(request))
