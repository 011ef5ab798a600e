"""Target ``dataflow`` (pipeline only): the Beam pre-tokenization job on Google Cloud Dataflow.

The DataflowRunner options it sets (the user's flags after ``--`` add to them; ``--project``,
``--region`` and ``--temp_location`` are required there):

* ``--sdk_container_image``: the run's image (CUDA for GPU workers, else CPU; content-hash tag), the
  same package and Beam SDK as the launcher; runner v2 (``--experiments=use_runner_v2``), which custom
  containers need;
* ``--job_name``: the run's name;
* autoscaling bounds: ``--num_workers`` = ``--workers``, ``--max_num_workers`` = ``max(--nodes, --workers)``
  (``THROUGHPUT_BASED`` between them, ``NONE`` when equal);
* GPU workers (``--accelerator`` a GPU node type from the catalogue, or a Dataflow GPU type such as
  ``nvidia-l4``): ``--dataflow_service_options=worker_accelerator=type:T;count:N;install-nvidia-driver``
  with ``--gpus-per-node`` GPUs (the catalogue's machine type when it names one), and one SDK process
  per VM (``--experiments=no_use_multiple_sdk_containers``) with ``2 x N`` harness threads
  (``--number_of_worker_harness_threads``): one copy of the tokenizers in GPU memory per VM instead of
  one per vCPU, while decoding on the CPU overlaps the GPU.
"""

from __future__ import annotations

from videopoet.infra import accelerators
from videopoet.infra.request import Artifact, RequestError, SubmitRequest, SubmitResult
from videopoet.infra.targets import beamjob

TARGET = "dataflow"
THREADS_PER_GPU = 2


def check(request: SubmitRequest) -> None:
    beamjob.check(request, TARGET)
    beamjob.require(request, TARGET, "project", "region", "temp_location")
    job_flags(request)


def _gpu(request: SubmitRequest) -> tuple[str, int, str | None] | None:
    """(Dataflow GPU type, GPUs per worker, machine type or None) for a GPU request, else None."""
    name = request.accelerator
    if not name:
        if request.gpus_per_node:
            raise RequestError("target dataflow: name the GPU type with --accelerator (e.g. nvidia-l4 or h100-80gb)")
        return None
    if name.startswith("nvidia-"):
        return name, request.gpus_per_node or 1, None
    try:
        acc = accelerators.lookup(name)
    except accelerators.UnknownAcceleratorError as e:
        raise RequestError(f"{e} (or a Dataflow GPU type such as nvidia-l4)") from None
    if acc.kind != "gpu":
        raise RequestError(f"target dataflow has no TPU workers ({name}); use a GPU type or none")
    count = request.gpus_per_node or acc.chips_per_host
    if count > acc.chips_per_host:
        raise RequestError(f"{acc.name} nodes have {acc.chips_per_host} GPUs; --gpus-per-node {count} is more")
    return acc.gke_accelerator, count, acc.machine_type if count == acc.chips_per_host else None


def job_flags(request: SubmitRequest) -> list[str]:
    gpu = _gpu(request)
    image = beamjob.image(request, "cuda" if gpu else "cpu")
    top = max(request.nodes, request.workers)
    ours = [
        "--runner=DataflowRunner",
        f"--job_name={request.name}",
        f"--sdk_container_image={image}",
        "--experiments=use_runner_v2",
        f"--num_workers={request.workers}",
        f"--max_num_workers={top}",
        f"--autoscaling_algorithm={'THROUGHPUT_BASED' if top > request.workers else 'NONE'}",
    ]
    if gpu:
        kind, count, machine = gpu
        ours.append(f"--dataflow_service_options=worker_accelerator=type:{kind};count:{count};install-nvidia-driver")
        ours += [
            "--experiments=no_use_multiple_sdk_containers",
            f"--number_of_worker_harness_threads={THREADS_PER_GPU * count}",
        ]
        if machine and not beamjob.flag(request.runner_args, "machine_type"):
            ours.append(f"--machine_type={machine}")
        elif not machine and not beamjob.flag(request.runner_args, "machine_type"):
            raise RequestError(f"target dataflow: {kind} x{count} needs a GPU machine type: -- --machine_type=...")
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
