"""The pre-tokenization Beam job on a managed runner (the ``dataflow``, ``flink`` and ``spark`` targets).

Each of those targets only decides the runner's ``PipelineOptions`` flags (:func:`run` takes them); this
module does the rest the same way for all three: the request must be a pipeline on the Beam runner, the
user's flags after ``--`` come after ours (a single-valued flag given there wins; list flags such as
``--experiments`` add up) except ``--runner``, which the target owns, and every flag must parse with
Beam's own ``PipelineOptions``. The job is the ordinary ``videopoet pipeline run --runner beam ... --
FLAGS`` (:func:`videopoet.infra.request.pipeline_argv`), run on this machine as Beam's launcher: it
stages the job, waits for it and publishes the dataset. ``render`` writes it as ``<target>-job.sh`` plus
``<target>-options.json`` (the flags and the options Beam makes of them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shlex
import subprocess
import sys
from typing import Any

from videopoet.infra import images
from videopoet.infra.request import (
    Artifact,
    RequestError,
    SubmitRequest,
    SubmitResult,
    pipeline_argv,
    write_submit_file,
)


def check(request: SubmitRequest, target: str) -> None:
    if request.kind != "pipeline":
        raise RequestError(
            f"target {target} runs the pre-tokenization pipeline (videopoet submit pipeline); "
            "training goes to --target gke, tpu-vm, ray, slurm or local"
        )
    if request.runner != "beam":
        raise RequestError(f"target {target} runs the Beam pipeline: use --runner beam (or --target ray)")


def flag(args: tuple[str, ...] | list[str], name: str) -> str | None:
    """The last value of ``--name=V`` / ``--name V`` in ``args``."""
    value = None
    for i, a in enumerate(args):
        if a.startswith(f"--{name}="):
            value = a.split("=", 1)[1]
        elif a == f"--{name}" and i + 1 < len(args):
            value = args[i + 1]
    return value


def require(request: SubmitRequest, target: str, *names: str) -> None:
    missing = [n for n in names if not flag(request.runner_args, n)]
    if missing:
        shown = " ".join(f"--{n}=..." for n in missing)
        raise RequestError(f"target {target} needs {shown} after '--' (Beam runner flags)")


def image(request: SubmitRequest, variant: str) -> str:
    """The workers' SDK container: ``--image``, else the content-tagged image, whose Beam must be this one."""
    if request.image:
        return request.image
    from videopoet.pipelines.beam import quiet

    quiet.install_log_filter()
    import apache_beam

    from videopoet.infra.images import dockerfile, dockerfile_instructions

    pinned = dict(
        rest.split("=", 1)
        for word, rest in dockerfile_instructions(dockerfile(variant).read_text())
        if word == "ARG" and "=" in rest
    ).get("BEAM_VERSION")
    if pinned != apache_beam.__version__:
        raise RequestError(
            f"the {variant} image pins Beam {pinned}, this machine runs {apache_beam.__version__}: the "
            "launcher and the workers need the same Beam SDK (rebuild the image or pass --image)"
        )
    return images.resolve(variant).ref


def flags(request: SubmitRequest, target: str, ours: list[str]) -> list[str]:
    """Our flags, then the user's (less ``--runner``), checked by Beam's ``PipelineOptions``."""
    runner = flag(ours, "runner")
    chosen = flag(request.runner_args, "runner")
    if chosen is not None and chosen != runner:
        raise RequestError(f"target {target} runs on {runner}; drop --runner={chosen} from the runner flags")
    user = [a for a in request.runner_args if not a.startswith("--runner")]
    out = ours + user
    options(out)
    return out


def options(args: list[str]) -> dict[str, Any]:
    """What Beam makes of ``args`` (non-default options); an unknown or malformed flag is a one-line error."""
    from videopoet.pipelines.beam import quiet  # Beam's GCP modules note at import that optional clients are missing

    quiet.install_log_filter()
    from apache_beam.options.pipeline_options import PipelineOptions

    usage = io.StringIO()  # argparse's usage wall: keep its last line for the one-line error
    try:
        with contextlib.redirect_stderr(usage):
            parsed = PipelineOptions(args)
            unknown = parsed.get_all_options(retain_unknown_options=True, drop_default=True)
            known = parsed.get_all_options(drop_default=True)
    except (SystemExit, ValueError) as e:
        why = (usage.getvalue().strip().splitlines() or [str(e)])[-1].split("error: ", 1)[-1]
        raise RequestError(f"runner flags do not parse as Beam PipelineOptions: {why}") from None
    extra = sorted(set(unknown) - set(known))
    if extra:
        raise RequestError(f"unknown Beam runner flag(s): {', '.join('--' + k for k in extra)}")
    return known


def job_request(request: SubmitRequest, job_flags: list[str]) -> SubmitRequest:
    return dataclasses.replace(request, runner="beam", runner_args=tuple(job_flags))


def command(request: SubmitRequest, job_flags: list[str]) -> list[str]:
    return pipeline_argv(job_request(request, job_flags))


def render(request: SubmitRequest, target: str, job_flags: list[str]) -> list[Artifact]:
    argv = command(request, job_flags)
    script = f"#!/usr/bin/env bash\n# videopoet pipeline {request.name} on {target}\nset -euo pipefail\n"
    script += shlex.join(argv) + "\n"
    opts = {"flags": job_flags, "options": options(job_flags)}
    return [
        Artifact(f"{target}-job.sh", script, executable=True),
        Artifact(f"{target}-options.json", json.dumps(opts, indent=2, sort_keys=True, default=str) + "\n"),
    ]


def run(request: SubmitRequest, target: str, job_flags: list[str]) -> SubmitResult:
    """Launch the job from here (Beam's launcher stays in the foreground until the job ends)."""
    req = job_request(request, job_flags)
    if req.program == ("videopoet",):  # this very installation
        req = dataclasses.replace(req, program=(sys.executable, "-m", "videopoet.cli.main"))
    argv = pipeline_argv(req)
    write_submit_file(request)
    rc = subprocess.run(argv, check=False).returncode
    return SubmitResult(
        target=target,
        name=request.name,
        run_dir=request.run_dir,
        job_id=None,
        command=tuple(argv),
        submitted=True,
        status="completed" if rc == 0 else "failed",
        detail={"exit_status": rc},
    )
