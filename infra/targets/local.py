"""Target ``local``: the run's processes on this machine, joined through the launch contract.

The reference for every other target: ``nodes x processes_per_node`` processes each run the same
:func:`~videopoet.infra.request.host_argv` command with ``VIDEOPOET_COORDINATOR`` (127.0.0.1 and a
free port), ``VIDEOPOET_NUM_PROCESSES``, ``VIDEOPOET_PROCESS_ID``, ``VIDEOPOET_RUN_NAME`` and
``VIDEOPOET_RESTART_COUNT``. ``submit`` stays in the foreground like a scheduler's job:

* one process failing stops the others at once (SIGTERM, then SIGKILL after the grace period) -
  a multi-process JAX program cannot go on without a member, and must not hang;
* the whole group is then restarted, up to ``max_restarts`` times, into the same run dir (it resumes
  from its latest checkpoint) with ``VIDEOPOET_RESTART_COUNT`` counting up;
* SIGTERM / SIGINT to ``submit`` is forwarded to every process (they checkpoint and exit 143), and
  no restart follows.

Each process writes ``RUN_DIR/logs/local-<restart>-<process>.log`` (stdout and stderr).
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

from videopoet.infra.request import (
    Artifact,
    RequestError,
    SubmitRequest,
    SubmitResult,
    host_argv,
    write_submit_file,
)

PREEMPTED = 143  # 128 + SIGTERM: the trainer saved and stopped


def _program(request: SubmitRequest) -> SubmitRequest:
    """``videopoet`` on this machine means this very installation (the interpreter running us)."""
    import dataclasses

    if request.program == ("videopoet",):
        return dataclasses.replace(request, program=(sys.executable, "-m", "videopoet.cli.main"))
    return request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(request: SubmitRequest, process_id: int, port: int, restart: int) -> dict[str, str]:
    """The launch-contract variables of one local process (on top of this process's environment)."""
    env = {
        "VIDEOPOET_SCHEDULER": "local",
        "VIDEOPOET_RUN_NAME": request.name,
        "VIDEOPOET_RESTART_COUNT": str(restart),
    }
    if request.num_processes > 1:
        env.update(
            {
                "VIDEOPOET_COORDINATOR": f"127.0.0.1:{port}",
                "VIDEOPOET_NUM_PROCESSES": str(request.num_processes),
                "VIDEOPOET_PROCESS_ID": str(process_id),
            }
        )
    env.update(dict(request.env))
    return env


def check(request: SubmitRequest) -> None:
    if request.kind == "pipeline" and request.num_processes > 1:
        raise RequestError("a pipeline runs as one driver process (its runner spreads the work; see --workers)")
    if request.nodes != 1 or request.slices != 1:
        raise RequestError("target local runs on this one machine: use --processes-per-node, not --nodes/--slices")


def render(request: SubmitRequest) -> list[Artifact]:
    """``launch.sh``: the same processes started by hand (a shell script; the port from the environment or 29500)."""
    request = _program(request)
    argv = " ".join(shlex.quote(a) for a in host_argv(request))
    n = request.num_processes
    lines = [
        "#!/usr/bin/env bash",
        f"# videopoet local run {request.name}: {n} process(es) on this machine",
        "set -u",
        'port="${VIDEOPOET_COORDINATOR_PORT:-29500}"',
        f"mkdir -p {shlex.quote(os.path.join(request.run_dir, 'logs'))}",
        "pids=()",
        "trap 'kill -TERM \"${pids[@]}\" 2>/dev/null' TERM INT",
        f"for i in $(seq 0 {n - 1}); do",
    ]
    env = process_env(request, 0, 0, 0)
    env.pop("VIDEOPOET_PROCESS_ID", None)
    env.pop("VIDEOPOET_COORDINATOR", None)
    assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    if n > 1:
        assigns += ' VIDEOPOET_COORDINATOR="127.0.0.1:${port}" VIDEOPOET_PROCESS_ID="$i"'
    log = shlex.quote(os.path.join(request.run_dir, "logs")) + '/local-0-"$i".log'
    lines += [
        f"  env {assigns} {argv} >{log} 2>&1 &",
        '  pids+=("$!")',
        "done",
        "rc=0",
        'for p in "${pids[@]}"; do wait "$p" || rc=$?; done',
        "exit $rc",
        "",
    ]
    return [Artifact("launch.sh", "\n".join(lines), executable=True)]


class _Group:
    """The run's processes; SIGTERM forwarding and fail-fast."""

    def __init__(self, request: SubmitRequest, restart: int):
        self.request = request
        self.procs: list[subprocess.Popen] = []
        self.logs = []
        port = free_port()
        log_dir = os.path.join(request.run_dir, "logs")
        os.makedirs(log_dir, exist_ok=True)
        argv = host_argv(request)
        for i in range(request.num_processes):
            log = open(os.path.join(log_dir, f"local-{restart}-{i}.log"), "w")
            self.logs.append(log)
            env = {**os.environ, **process_env(request, i, port, restart)}
            self.procs.append(
                subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            )

    def signal(self, sig: int) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.send_signal(sig)
                except ProcessLookupError:
                    pass

    def wait(self, stopping) -> list[int]:
        """Wait for all; the first failure (or ``stopping()``) stops the rest. Returns exit codes."""
        grace_until = None
        while True:
            codes = [p.poll() for p in self.procs]
            if all(c is not None for c in codes):
                return codes
            failed = any(c not in (None, 0) for c in codes)
            if (failed or stopping()) and grace_until is None:
                self.signal(signal.SIGTERM)
                grace_until = time.monotonic() + self.request.signal_grace_s
            if grace_until is not None and time.monotonic() > grace_until:
                self.signal(signal.SIGKILL)
            time.sleep(0.1)

    def close(self) -> None:
        self.signal(signal.SIGKILL)
        for p in self.procs:
            p.wait()
        for log in self.logs:
            log.close()


def submit(request: SubmitRequest) -> SubmitResult:
    """Run the request here in the foreground (see the module docstring)."""
    request = _program(request)
    write_submit_file(request)
    stop = {"sig": None}

    def on_signal(sig, _frame):
        stop["sig"] = sig

    main_thread = threading.current_thread() is threading.main_thread()  # handlers only there (Python's rule)
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)} if main_thread else {}
    attempts = []
    try:
        for restart in range(request.max_restarts + 1):
            group = _Group(request, restart)
            try:
                codes = group.wait(lambda: stop["sig"] is not None)
            finally:
                group.close()
            attempts.append(codes)
            if all(c == 0 for c in codes) or stop["sig"] is not None:
                break
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    last = attempts[-1]
    if all(c == 0 for c in last):
        status = "completed"
    elif stop["sig"] is not None or all(c in (0, PREEMPTED) for c in last):
        status = "preempted"
    else:
        status = "failed"
    return SubmitResult(
        target="local",
        name=request.name,
        run_dir=request.run_dir,
        job_id=None,
        command=tuple(host_argv(request)),
        submitted=True,
        status=status,
        detail={"attempts": attempts, "restarts": len(attempts) - 1, "logs": os.path.join(request.run_dir, "logs")},
    )
