"""Target ``ray``: training or pre-tokenization as a job on a running Ray cluster (the Jobs API).

* Training: the job's entrypoint is :mod:`videopoet.infra.ray_driver`, which places one worker per
  process (``num_gpus`` for GPU hosts, the ``TPU`` custom resource for TPU hosts), finds the JAX
  coordinator through Ray (worker 0's node IP and a free port there), runs ``videopoet train`` in each
  and fails the job fast when any of them dies. A resubmission resumes from the run dir.
* Pipeline: the entrypoint is ``videopoet pipeline run --runner ray ...``; inside a Ray job it joins the
  job's cluster (``RAY_ADDRESS`` is set by Ray).

The cluster is ``$RAY_ADDRESS`` (the dashboard, e.g. ``http://head:8265``), as for ``ray job submit``.
Stopping the job (``videopoet submit cancel JOB --target ray``, ``ray job stop``) SIGTERMs the driver,
which forwards it to every training process: they checkpoint at one agreed step and exit 143.
``render`` writes ``ray-job.json`` (exactly what ``submit`` sends) and ``rayjob.yaml``: a KubeRay
``RayJob`` (``ray.io/v1``) that creates a cluster of the run's shape on Kubernetes, runs the same
entrypoint, retries ``max_restarts`` times on a new cluster (resuming) and shuts the cluster down.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from typing import Any

from videopoet.infra import images
from videopoet.infra.request import (
    Artifact,
    RequestError,
    SubmitRequest,
    SubmitResult,
    host_argv,
    pipeline_argv,
    train_argv,
    write_submit_file,
)
from videopoet.infra.targets import shape

ADDRESS_ENV = "RAY_ADDRESS"
KUBERAY_API = "ray.io/v1"
CONNECT_RETRY_S = 60.0  # a freshly started head's job agent needs a moment
STOP_WAIT_ENV = "RAY_JOB_STOP_WAIT_TIME_S"  # read by the job's supervisor, which gets the job's env_vars
STOP_WAIT_MARGIN_S = 30

preflight_args = shape.preflight_args


def check(request: SubmitRequest) -> None:
    if request.kind == "pipeline" and request.runner != "ray":
        raise RequestError(
            "target ray runs the pipeline on Ray: use --runner ray (Beam runners: --target dataflow, flink or spark)"
        )
    shape.resolve(request)


def driver_spec(request: SubmitRequest) -> dict[str, Any]:
    """What :mod:`videopoet.infra.ray_driver` needs: the command, the processes and their resources."""
    s = shape.resolve(request)
    r = s.request
    spec: dict[str, Any] = {
        "name": r.name,
        "argv": train_argv(r),
        "num_processes": r.num_processes,
        "cpus_per_worker": 1,
        "env": dict(r.env),
        "signal_grace_s": r.signal_grace_s,
        "strategy": "STRICT_SPREAD" if s.is_tpu else "SPREAD",
    }
    if s.is_tpu:
        spec["resources_per_worker"] = {"TPU": s.devices_per_host}
    elif s.devices_per_host:
        spec["gpus_per_worker"] = s.devices_per_host // r.processes_per_node
    return spec


def entrypoint(request: SubmitRequest) -> str:
    """The job's shell entrypoint."""
    if request.kind == "pipeline":
        return shlex.join(pipeline_argv(request))
    spec = json.dumps(driver_spec(request), sort_keys=True, separators=(",", ":"))
    return shlex.join(["python", "-m", "videopoet.infra.ray_driver", "--spec", spec])


def job_request(request: SubmitRequest) -> dict[str, Any]:
    """The Jobs API submission (``JobSubmissionClient.submit_job`` keyword arguments, less the submission id)."""
    body: dict[str, Any] = {
        "entrypoint": entrypoint(request),
        "metadata": {"videopoet_run": request.name, "run_dir": request.run_dir, "kind": request.kind},
    }
    env = dict(request.env) if request.kind == "pipeline" else {}
    if request.kind == "train":  # `ray job stop` SIGKILLs the driver after this long (Ray's default: 3 s)
        env[STOP_WAIT_ENV] = str(request.signal_grace_s + STOP_WAIT_MARGIN_S)
    if env:
        body["runtime_env"] = {"env_vars": env}
    return body


# ------------------------------------------------------------------------------ KubeRay
def _container(name: str, image: str, limits: dict[str, str], ports: list[dict[str, Any]]) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": name,
        "image": image,
        "ports": ports,
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    if limits:
        c["resources"] = {"limits": limits}
    return c


def _pod(container: dict[str, Any], selector: dict[str, str], grace_s: int) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [container],
        "terminationGracePeriodSeconds": grace_s,
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
    }
    if selector:
        spec["nodeSelector"] = selector
    return {"spec": spec}


def rayjob(request: SubmitRequest) -> dict[str, Any]:
    """A KubeRay ``RayJob``: a Ray cluster of the run's shape, the same entrypoint, shut down when it ends."""
    import ray

    s = shape.resolve(request)
    r = s.request
    image = images.resolve(s.image_variant, r.image).ref
    acc = s.accelerator
    limits: dict[str, str] = {}
    selector: dict[str, str] = {}
    if s.is_tpu:
        limits = {"google.com/tpu": str(s.devices_per_host)}
        selector = {
            "cloud.google.com/gke-tpu-accelerator": acc.gke_accelerator,
            "cloud.google.com/gke-tpu-topology": acc.topology,
        }
    elif s.devices_per_host:
        limits = {"nvidia.com/gpu": str(s.devices_per_host)}
        if acc is not None:
            selector = {"cloud.google.com/gke-accelerator": acc.gke_accelerator}
    head_ports = [
        {"containerPort": 6379, "name": "gcs"},
        {"containerPort": 8265, "name": "dashboard"},
        {"containerPort": 10001, "name": "client"},
    ]
    workers = {
        "groupName": "tpu-slice" if s.is_tpu else "workers",
        "replicas": s.slices if s.is_tpu else s.hosts,
        "minReplicas": s.slices if s.is_tpu else s.hosts,
        "maxReplicas": s.slices if s.is_tpu else s.hosts,
        "numOfHosts": s.hosts_per_slice if s.is_tpu else 1,
        "rayStartParams": {},
        "template": _pod(_container("ray-worker", image, limits, []), selector, r.signal_grace_s),
    }
    meta: dict[str, Any] = {"name": r.name, "labels": {"videopoet.run": r.name}}
    if r.queue:
        meta["labels"]["kueue.x-k8s.io/queue-name"] = r.queue
    return {
        "apiVersion": KUBERAY_API,
        "kind": "RayJob",
        "metadata": meta,
        "spec": {
            "entrypoint": entrypoint(r),
            "metadata": {k: str(v) for k, v in job_request(r)["metadata"].items()},
            "submissionMode": "K8sJobMode",
            "backoffLimit": r.max_restarts,  # each retry is a new cluster; the run resumes from its run dir
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 600,
            "rayClusterSpec": {
                "rayVersion": ray.__version__,
                "headGroupSpec": {
                    "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},  # the head only drives
                    "template": _pod(_container("ray-head", image, {}, head_ports), {}, r.signal_grace_s),
                },
                "workerGroupSpecs": [workers],
            },
        },
    }


def render(request: SubmitRequest) -> list[Artifact]:
    import yaml

    check(request)
    return [
        Artifact("ray-job.json", json.dumps(job_request(request), indent=2, sort_keys=True) + "\n"),
        Artifact("rayjob.yaml", yaml.safe_dump(rayjob(request), sort_keys=False)),
    ]


# ------------------------------------------------------------------------------ the Jobs API
def _client(address: str | None = None):
    from ray.job_submission import JobSubmissionClient

    address = address or os.environ.get(ADDRESS_ENV)
    if not address:
        raise RequestError(
            f"target ray: set ${ADDRESS_ENV} to the cluster's dashboard (http://HEAD:8265), or use --dry-run"
        )
    deadline = time.time() + CONNECT_RETRY_S
    while True:
        try:
            return JobSubmissionClient(address)
        except (ConnectionError, RuntimeError) as e:
            if time.time() > deadline:
                raise RequestError(
                    f"target ray: cannot reach the Ray dashboard at {address}: {str(e).splitlines()[0]}"
                ) from None
            time.sleep(2)


def submit(request: SubmitRequest) -> SubmitResult:
    import requests

    check(request)
    client = _client()
    body = job_request(request)
    submission_id = f"{request.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    deadline = time.time() + CONNECT_RETRY_S
    while True:
        try:
            job_id = client.submit_job(submission_id=submission_id, **body)
            break
        except (RuntimeError, requests.exceptions.ConnectionError) as e:
            if "already exists" in str(e):  # a lost reply: the first try went through
                job_id = submission_id
                break
            starting = isinstance(e, requests.exceptions.ConnectionError) or "No available agent" in str(e)
            if not starting or time.time() > deadline:
                raise RequestError(f"target ray: submitting {request.name}: {str(e).splitlines()[0]}") from None
            time.sleep(2)
    res = SubmitResult(
        target="ray",
        name=request.name,
        run_dir=request.run_dir,
        job_id=job_id,
        command=tuple(host_argv(shape.resolve(request).request)),
        submitted=True,
        status="submitted",
        detail={"entrypoint": body["entrypoint"], "address": os.environ.get(ADDRESS_ENV)},
    )
    write_submit_file(request, res)
    return res


def status(job: str) -> dict[str, Any]:
    """``{"state": PENDING | RUNNING | SUCCEEDED | FAILED | STOPPED, "reason": ...}`` of Ray job ``job``."""
    info = _client().get_job_info(job)
    out = {"job": job, "state": str(info.status.value if hasattr(info.status, "value") else info.status)}
    if info.message and out["state"] in ("FAILED", "STOPPED"):
        out["reason"] = info.message.strip().splitlines()[-1]
    return out


def logs(job: str, tail: int = 0, errors: bool = False) -> str:
    """The job's output (driver and workers; Ray interleaves stdout and stderr)."""
    text = _client().get_job_logs(job)
    return "\n".join(text.splitlines()[-tail:]) + "\n" if tail else text


def cancel(job: str) -> None:
    """``ray job stop``: SIGTERM to the driver, which forwards it to every training process (they save and exit
    143; the job ends STOPPED). The job's ``RAY_JOB_STOP_WAIT_TIME_S`` gives them ``signal_grace_s`` to do so."""
    _client().stop_job(job)
