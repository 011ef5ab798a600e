"""Target ``tpu-vm``: a Cloud TPU slice through a queued resource, then the run on every worker over ssh.

The sequence (each an argv list; ``render`` writes them as ``tpu-vm.sh``, one ``shlex.join`` per line):

1. ``gcloud compute tpus queued-resources create NAME --node-id NAME --accelerator-type ... --runtime-version ...``
   (plus ``--extra-arg`` flags, e.g. ``--spot`` or ``--reserved``);
2. wait until ``gcloud compute tpus queued-resources describe NAME --format=value(state.state)`` is ACTIVE;
3. ``gcloud compute tpus tpu-vm ssh NAME --worker=all --command=...``: on each worker, the launch contract's
   ``TPU_WORKER_ID`` / ``TPU_WORKER_HOSTNAMES`` from the VM's metadata server (``agent-worker-number``,
   ``worker-network-endpoints``), then the ordinary ``videopoet train`` in the run's TPU image
   (``docker run --privileged --net=host``; the image's content-hash tag names it).

Zone and project: ``--extra-arg=--zone=Z`` / ``--extra-arg=--project=P`` (added to every command), else
gcloud's own ``CLOUDSDK_COMPUTE_ZONE`` / ``CLOUDSDK_CORE_PROJECT``. One slice per run (multislice: ``gke``).
``submit`` runs the sequence in the foreground with the installed ``gcloud``; ``status`` / ``cancel``
describe / delete the queued resource (in gcloud's configured zone).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from typing import Any

from videopoet.infra import images
from videopoet.infra.request import Artifact, RequestError, SubmitRequest, SubmitResult, train_argv, write_submit_file
from videopoet.infra.targets import shape

# the TPU VM software version per generation (Cloud TPU "TPU software versions"; --extra-arg overrides)
RUNTIME_VERSIONS = {
    "v4": "tpu-ubuntu2204-base",
    "v5e": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}
METADATA = "http://metadata.google.internal/computeMetadata/v1/instance/attributes"
GLOBAL_FLAGS = ("--zone", "--project")
POLL_S = 30
preflight_args = shape.preflight_args


def check(request: SubmitRequest) -> None:
    if request.kind != "train":
        raise RequestError("target tpu-vm runs training; a pipeline goes to --target dataflow, flink, spark or ray")
    s = shape.resolve(request)
    if not s.is_tpu:
        raise RequestError("target tpu-vm needs a TPU slice: --accelerator v5e-16, v5p-128, v6e-64, ...")
    if s.slices != 1:
        raise RequestError("target tpu-vm runs one slice; for multislice use --target gke")
    if not _flag(request, "--zone") and not os.environ.get("CLOUDSDK_COMPUTE_ZONE"):
        raise RequestError("target tpu-vm needs a zone: --extra-arg=--zone=ZONE or $CLOUDSDK_COMPUTE_ZONE")


def _flag(request: SubmitRequest, name: str) -> str | None:
    for i, a in enumerate(request.extra_args):
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
        if a == name and i + 1 < len(request.extra_args):
            return request.extra_args[i + 1]
    return None


def _global(request: SubmitRequest) -> list[str]:
    return [f"{f}={v}" for f in GLOBAL_FLAGS if (v := _flag(request, f))]


def _create_extra(request: SubmitRequest) -> list[str]:
    """``--extra-arg`` flags for the create command (zone / project go to every command instead)."""
    out, skip = [], False
    args = list(request.extra_args)
    for i, a in enumerate(args):
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in GLOBAL_FLAGS:
            skip = "=" not in a and i + 1 < len(args)
            continue
        out.append(a)
    return out


def worker_script(request: SubmitRequest, image: str) -> str:
    """The shell command every worker runs: the launch contract from the metadata server, then the container."""
    r = request
    env = {"VIDEOPOET_RUN_NAME": r.name, **dict(r.env)}
    docker = [
        "sudo",
        "docker",
        "run",
        "--rm",
        "--privileged",
        "--net=host",
        "--stop-timeout",
        str(r.signal_grace_s),
        "-e",
        "TPU_WORKER_ID",
        "-e",
        "TPU_WORKER_HOSTNAMES",
    ]
    for k, v in env.items():
        docker += ["-e", f"{k}={v}"]
    docker += ["--entrypoint", r.program[0], image, *train_argv(r)[1:]]
    lines = [
        "set -euo pipefail",
        f"md() {{ curl -sf -H Metadata-Flavor:Google {METADATA}/$1; }}",
        "export TPU_WORKER_ID=$(md agent-worker-number)",
        "export TPU_WORKER_HOSTNAMES=$(md worker-network-endpoints | tr , '\\n' | cut -d: -f3 | paste -sd, -)",
    ]
    registry = image.split("/", 1)[0] if "/" in image else ""
    if registry.endswith(("docker.pkg.dev", "gcr.io")):
        lines.append(shlex.join(["sudo", "gcloud", "auth", "configure-docker", registry, "--quiet"]))
    lines.append(shlex.join(docker))
    return "\n".join(lines)


def commands(request: SubmitRequest) -> dict[str, list[str]]:
    """The argv lists of the sequence: create, describe (polled until ACTIVE), ssh; and delete (cancel)."""
    check(request)
    s = shape.resolve(request)
    acc = s.accelerator
    image = images.resolve("tpu", request.image).ref
    g = _global(request)
    runtime = _flag(request, "--runtime-version") or RUNTIME_VERSIONS[acc.generation]
    create = [
        "gcloud",
        "compute",
        "tpus",
        "queued-resources",
        "create",
        request.name,
        f"--node-id={request.name}",
        f"--accelerator-type={acc.tpu_api_type}",
        *g,
    ]
    extra = _create_extra(request)
    if not _flag(request, "--runtime-version"):
        create.append(f"--runtime-version={runtime}")
    create += extra
    return {
        "create": create,
        "describe": [
            "gcloud",
            "compute",
            "tpus",
            "queued-resources",
            "describe",
            request.name,
            *g,
            "--format=value(state.state)",
        ],
        "ssh": [
            "gcloud",
            "compute",
            "tpus",
            "tpu-vm",
            "ssh",
            request.name,
            "--worker=all",
            *g,
            f"--command={worker_script(request, image)}",
        ],
        "delete": ["gcloud", "compute", "tpus", "queued-resources", "delete", request.name, *g, "--force", "--quiet"],
    }


def render(request: SubmitRequest) -> list[Artifact]:
    c = commands(request)
    script = "\n".join(
        [
            "#!/usr/bin/env bash",
            f"# videopoet run {request.name} on a TPU slice: queued resource, wait for ACTIVE, run on every worker",
            "set -euo pipefail",
            shlex.join(c["create"]),
            f'until [ "$({shlex.join(c["describe"])})" = ACTIVE ]; do sleep {POLL_S}; done',
            shlex.join(c["ssh"]),
            "",
        ]
    )
    return [Artifact("tpu-vm.sh", script, executable=True), Artifact("tpu-vm.json", json.dumps(c, indent=2) + "\n")]


def _gcloud(argv: list[str], what: str) -> str:
    if shutil.which(argv[0]) is None:
        raise RequestError("target tpu-vm: gcloud is not installed (https://cloud.google.com/sdk); or use --dry-run")
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]
        raise RequestError(f"target tpu-vm: {what}: {last}")
    return out.stdout


def submit(request: SubmitRequest, poll_s: float = POLL_S) -> SubmitResult:
    """Create the queued resource, wait for it, run the training on all workers (in the foreground)."""
    c = commands(request)
    write_submit_file(request)
    _gcloud(c["create"], f"creating queued resource {request.name}")
    while True:
        state = _gcloud(c["describe"], f"describing {request.name}").strip()
        if state == "ACTIVE":
            break
        if state in ("FAILED", "SUSPENDED"):
            raise RequestError(f"target tpu-vm: queued resource {request.name} is {state}")
        time.sleep(poll_s)
    rc = subprocess.run(c["ssh"], check=False).returncode
    return SubmitResult(
        target="tpu-vm",
        name=request.name,
        run_dir=request.run_dir,
        job_id=request.name,
        command=tuple(train_argv(shape.resolve(request).request)),
        submitted=True,
        status="completed" if rc == 0 else "failed",
        detail={"ssh_exit_status": rc},
    )


def status(job: str) -> dict[str, Any]:
    argv = ["gcloud", "compute", "tpus", "queued-resources", "describe", job, "--format=value(state.state)"]
    return {"job": job, "state": _gcloud(argv, f"describing {job}").strip()}


def cancel(job: str) -> None:
    _gcloud(
        ["gcloud", "compute", "tpus", "queued-resources", "delete", job, "--force", "--quiet", "--async"],
        f"deleting {job}",
    )
