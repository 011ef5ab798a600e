"""Submission targets: one module per scheduler, each with ``render(request) -> list[Artifact]`` and
``submit(request) -> SubmitResult`` (and, where the scheduler has jobs to ask about, ``status(job)``,
``logs(job)``, ``cancel(job)``).

:data:`TARGETS` is the one list of them (target name -> module); modules are imported only when
used, so a target's client libraries (ray, kubernetes, apache_beam) load only for that target.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from videopoet.schemas.errors import VideoPoetError

TARGETS: dict[str, str] = {
    "local": "videopoet.infra.targets.local",
    "slurm": "videopoet.infra.targets.slurm",
    "ray": "videopoet.infra.targets.ray",
    "gke": "videopoet.infra.targets.gke",
    "tpu-vm": "videopoet.infra.targets.tpu_vm",
    "dataflow": "videopoet.infra.targets.dataflow",
    "flink": "videopoet.infra.targets.flink",
    "spark": "videopoet.infra.targets.spark",
}


class UnknownTargetError(VideoPoetError):
    """A target name that is not in :data:`TARGETS`."""


def check_name(name: str) -> None:
    if name not in TARGETS:
        raise UnknownTargetError(f"unknown target {name!r} (known: {', '.join(TARGETS)})")


def get(name: str) -> ModuleType:
    """The module of target ``name``."""
    check_name(name)
    return importlib.import_module(TARGETS[name])


def artifacts_dir(request) -> str:
    """Where a submission's artifacts go by default: RUN_DIR/submit (./submit-NAME for a remote run dir)."""
    import os

    from videopoet.infra.request import _is_local

    if _is_local(request.run_dir):
        run_dir = request.run_dir[len("file://") :] if request.run_dir.startswith("file://") else request.run_dir
        return os.path.join(run_dir, "submit")
    return os.path.abspath(f"submit-{request.name}")


def preflight(request) -> dict:
    """Every check before anything is submitted: the request, the target's own ``check(request)`` when it has
    one (what the target can run: its errors say more than the generic ones), then the world
    (:func:`request.preflight`)."""
    from videopoet.infra import request as request_mod

    request.validate()
    module = get(request.target)
    check = getattr(module, "check", None)
    if check is not None:
        check(request)
    shaped = getattr(module, "preflight_args", None)  # targets that size the run from the accelerator catalogue
    if shaped is not None:
        request, devices = shaped(request)
    else:
        devices = request.slices * request.nodes * request.gpus_per_node if request.gpus_per_node else None
    return request_mod.preflight(request, devices=devices)


def dry_run(request, directory: str | None = None):
    """Check ``request``, render its target's artifacts into ``directory`` (default :func:`artifacts_dir`)."""
    from videopoet.infra.request import SubmitResult, host_argv

    resolved = preflight(request)
    directory = directory or artifacts_dir(request)
    module = get(request.target)
    paths = tuple(a.write(directory) for a in module.render(request))
    command = getattr(module, "command", host_argv)  # targets that add to the host command (Beam runner flags)
    return SubmitResult(
        target=request.target,
        name=request.name,
        run_dir=request.run_dir,
        artifacts=paths,
        command=tuple(command(request)),
        submitted=False,
        status="dry-run",
        detail=resolved,
    )


def submit(request):
    """Check ``request`` and hand it to its target (``request.dry_run`` renders only)."""
    if request.dry_run:
        return dry_run(request)
    preflight(request)
    return get(request.target).submit(request)


def job_command(target: str, action: str):
    """``status`` / ``logs`` / ``cancel`` of ``target``, or a one-line error when it has none."""
    module = get(target)
    fn = getattr(module, action, None)
    if fn is None:
        raise UnknownTargetError(f"target {target!r} has no '{action}' (its jobs are managed by its own tools)")
    return fn
