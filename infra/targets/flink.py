"""Target ``flink`` (pipeline only): the Beam pre-tokenization job on a Flink cluster (portable FlinkRunner).

Options: ``--runner=FlinkRunner``, ``--flink_master`` (required after ``--``: the cluster's REST address,
e.g. ``flink-jobmanager:8081``), ``--parallelism`` = ``--workers``, ``--job_name``, and the SDK harness in
our image (``--environment_type=DOCKER --environment_config=IMAGE``; CUDA with ``--gpus-per-node``, then
one SDK worker per harness, ``--sdk_worker_parallelism=1``, so the GPU's memory holds one copy of the
tokenizers). Other FlinkRunner flags (``--flink_version``, ``--max_parallelism``, ...) pass through.
"""

from __future__ import annotations

from videopoet.infra.request import Artifact, SubmitRequest, SubmitResult
from videopoet.infra.targets import beamjob

TARGET = "flink"


def check(request: SubmitRequest) -> None:
    beamjob.check(request, TARGET)
    beamjob.require(request, TARGET, "flink_master")
    job_flags(request)


def job_flags(request: SubmitRequest) -> list[str]:
    gpu = bool(request.gpus_per_node)
    image = beamjob.image(request, "cuda" if gpu else "cpu")
    ours = [
        "--runner=FlinkRunner",
        f"--job_name={request.name}",
        f"--parallelism={request.workers}",
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
