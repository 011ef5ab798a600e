"""Target ``slurm``: an sbatch script, one task per host, ``srun`` running the ordinary host command.

The script (``RUN_DIR/submit/<name>.sbatch``)::

    #SBATCH --job-name=NAME --nodes=N --ntasks-per-node=P --requeue --open-mode=append
    #SBATCH --signal=B:USR1@GRACE --output=RUN_DIR/logs/slurm-%j.out --error=RUN_DIR/logs/slurm-%j.err
    #SBATCH [--gpus-per-node=G | --gpus-per-task=G/P] [--partition=Q] [--time=T] [extra sbatch flags]
    srun --kill-on-bad-exit=1 videopoet train ... --out RUN_DIR

Each task finds the others through ``SLURM_PROCID`` / ``SLURM_NTASKS`` / ``SLURM_JOB_NODELIST``
(:mod:`videopoet.infra.launch`). Preemption and requeues:

* Slurm's own preemption, ``scontrol requeue`` and ``scancel`` send SIGTERM to every task (SIGKILL
  ``KillWait`` seconds later): the trainer saves a checkpoint at a step all processes agree on and
  exits 143. ``--requeue`` puts a preempted job back in the queue; it restarts in the same run dir
  (``SLURM_RESTART_COUNT`` counts up) and resumes from the checkpoint.
* ``GRACE`` seconds before the time limit Slurm sends USR1 to the batch shell, which sends SIGTERM
  to the job's steps (``scancel --signal=TERM``) and, once the trainer has saved and exited 143,
  requeues the job itself while fewer than ``max_restarts`` restarts have happened.

``status`` / ``logs`` / ``cancel`` use ``squeue`` / ``scontrol show job`` (``sacct`` when accounting is
on) / ``scancel``. Every Slurm command honours ``SLURM_CONF`` from the environment.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess

from videopoet.infra import targets
from videopoet.infra.request import Artifact, RequestError, SubmitRequest, SubmitResult, host_argv, write_submit_file
from videopoet.schemas.errors import VideoPoetError

TIME_RE = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$|^\d+-\d+$")  # Slurm --time forms: M, M:S, H:M:S, D-H, D-H:M[:S]
# launch-contract variables a submitting shell may carry that would override the Slurm detection
_CLEARED = (
    "VIDEOPOET_COORDINATOR",
    "VIDEOPOET_NUM_PROCESSES",
    "VIDEOPOET_PROCESS_ID",
    "VIDEOPOET_SCHEDULER",
    "VIDEOPOET_RESTART_COUNT",
)


class SlurmError(VideoPoetError):
    """A Slurm command failed or is missing."""


def check(request: SubmitRequest) -> None:
    if request.kind != "train" and request.num_processes > 1:
        raise RequestError("a pipeline on slurm runs as one task (its runner spreads the work): use --nodes 1")
    if request.slices != 1:
        raise RequestError("slurm has no slices: use --nodes")
    if request.gpus_per_node and request.gpus_per_node % request.processes_per_node:
        raise RequestError(
            f"--gpus-per-node {request.gpus_per_node} does not split over "
            f"{request.processes_per_node} processes per node"
        )
    if request.time_limit and not TIME_RE.match(request.time_limit):
        raise RequestError(f"--time {request.time_limit!r} is not a Slurm time (M, H:M:S, D-H:M:S, ...)")
    if request.signal_grace_s < 10:
        raise RequestError("--signal-grace below 10 s leaves the trainer no time to save")


def script_name(request: SubmitRequest) -> str:
    return f"{request.name}.sbatch"


def render(request: SubmitRequest) -> list[Artifact]:
    """The sbatch script (see the module docstring)."""
    check(request)
    logs = os.path.join(os.path.abspath(request.run_dir), "logs")
    directives = [
        f"--job-name={request.name}",
        f"--nodes={request.nodes}",
        f"--ntasks-per-node={request.processes_per_node}",
        "--requeue",
        "--open-mode=append",
        f"--signal=B:USR1@{request.signal_grace_s}",
        f"--output={logs}/slurm-%j.out",
        f"--error={logs}/slurm-%j.err",
    ]
    if request.gpus_per_node:
        if request.processes_per_node == 1:
            directives.append(f"--gpus-per-node={request.gpus_per_node}")
        else:
            directives.append(f"--gpus-per-task={request.gpus_per_node // request.processes_per_node}")
    if request.queue:
        directives.append(f"--partition={request.queue}")
    if request.time_limit:
        directives.append(f"--time={request.time_limit}")
    directives += list(request.extra_args)
    argv = " ".join(shlex.quote(a) for a in host_argv(request))
    lines = ["#!/bin/bash", f"# videopoet {request.kind} run {request.name}: {request.num_processes} task(s)"]
    lines += [f"#SBATCH {shlex.quote(d)}" for d in directives]
    lines += [
        "set -u",
        f"unset {' '.join(_CLEARED)}",
        *(f"export {k}={shlex.quote(v)}" for k, v in request.env),
        f"export VIDEOPOET_RUN_NAME={shlex.quote(request.name)}",
        f"mkdir -p {shlex.quote(logs)}",
        'echo "videopoet: job ${SLURM_JOB_ID} restart ${SLURM_RESTART_COUNT:-0} on ${SLURM_JOB_NODELIST}" >&2',
        "near_limit=0",
        # the time limit is near: let the trainer save (SIGTERM to the step), then requeue below
        "trap 'near_limit=1; scancel --signal=TERM \"$SLURM_JOB_ID\"' USR1  # the job's steps, not this shell",
        f"srun --kill-on-bad-exit=1 {argv} &",
        "step=$!",
        "while :; do",
        '  wait "$step"; rc=$?',
        '  kill -0 "$step" 2>/dev/null || break  # wait also returns when a trap ran: the step still runs',
        "done",
        'if [ "$near_limit" = 1 ] && [ "$rc" = 143 ] && '
        f'[ "${{SLURM_RESTART_COUNT:-0}}" -lt {request.max_restarts} ]; then',
        '  echo "videopoet: saved before the time limit; requeueing ${SLURM_JOB_ID}" >&2',
        '  scontrol requeue "$SLURM_JOB_ID"',
        "fi",
        'exit "$rc"',
        "",
    ]
    return [Artifact(script_name(request), "\n".join(lines), executable=True)]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SlurmError(f"{name} not found: this machine has no Slurm client (install slurm-client or use --dry-run)")
    return path


def _run(argv: list[str], what: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{what}: {os.path.basename(argv[0])} did not answer in 60 s") from None
    if out.returncode != 0:
        msg = (out.stderr or out.stdout).strip().splitlines()
        raise SlurmError(f"{what}: {msg[-1] if msg else f'exit {out.returncode}'}")
    return out.stdout


def submit(request: SubmitRequest) -> SubmitResult:
    """Write the script into RUN_DIR/submit and ``sbatch`` it; the job id goes into RUN_DIR/submit.json."""
    sbatch = _tool("sbatch")
    (artifact,) = render(request)
    os.makedirs(os.path.join(request.run_dir, "logs"), exist_ok=True)
    path = artifact.write(targets.artifacts_dir(request))
    out = _run([sbatch, "--parsable", path], "sbatch")
    job_id = out.strip().split(";")[0]
    if not job_id.isdigit():
        raise SlurmError(f"sbatch answered {out.strip()!r}, not a job id")
    result = SubmitResult(
        target="slurm",
        name=request.name,
        run_dir=request.run_dir,
        job_id=job_id,
        artifacts=(path,),
        command=tuple(host_argv(request)),
        submitted=True,
        status="submitted",
    )
    write_submit_file(request, result, script=path)
    return result


def show_job(job_id: str) -> dict[str, str]:
    """``scontrol show job -o`` as a dict (JobState, Restarts, StdOut, ...)."""
    out = _run([_tool("scontrol"), "show", "job", "-o", str(job_id)], f"job {job_id}")
    fields: dict[str, str] = {}
    for token in re.split(r"\s+(?=[A-Za-z:/]+=)", out.strip()):
        key, sep, value = token.partition("=")
        if sep:
            fields[key] = value
    return fields


def status(job_id: str) -> dict:
    """The job's state from the controller (``scontrol``), or from accounting (``sacct``) once it has left it."""
    try:
        f = show_job(job_id)
        reason = f.get("Reason", "None")
        return {
            "job": str(job_id),
            "state": f.get("JobState", "UNKNOWN"),
            "reason": None if reason == "None" else reason,
            "restarts": int(f.get("Restarts", "0") or 0),
            "exit_code": f.get("ExitCode"),
            "name": f.get("JobName"),
            "nodes": f.get("NodeList"),
            "stdout": f.get("StdOut"),
            "stderr": f.get("StdErr"),
            "source": "scontrol",
        }
    except SlurmError as e:
        if not shutil.which("sacct"):
            raise
        first = e
    out = subprocess.run(
        [_tool("sacct"), "-j", str(job_id), "-X", "-n", "-P", "--format=JobID,JobName,State,ExitCode"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    rows = [r.split("|") for r in out.stdout.strip().splitlines() if r.strip()] if out.returncode == 0 else []
    if not rows:
        raise first
    _, name, state, code = rows[-1][:4]
    return {
        "job": str(job_id),
        "state": state.split()[0],
        "reason": None,
        "restarts": None,
        "exit_code": code,
        "name": name,
        "source": "sacct",
    }


def logs(job_id: str, tail: int = 0, errors: bool = False) -> str:
    """The job's output (or error) file, whole or its last ``tail`` lines."""
    info = status(job_id)
    path = info.get("stderr" if errors else "stdout")
    if not path:
        raise SlurmError(f"job {job_id}: its log path is no longer known to the controller")
    if not os.path.exists(path):
        return ""
    with open(path, errors="replace") as f:
        lines = f.readlines()
    return "".join(lines[-tail:] if tail else lines)


def cancel(job_id: str) -> None:
    """``scancel``: SIGTERM to the tasks (the trainer saves), SIGKILL after the cluster's KillWait."""
    _run([_tool("scancel"), str(job_id)], f"cancel {job_id}")
