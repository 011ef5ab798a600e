"""The Ray job's driver for a training run: one ``videopoet train`` process per Ray worker, fail fast.

The Ray target submits ``python -m videopoet.infra.ray_driver --spec JSON`` through the Jobs API. On
the cluster this driver:

1. reserves one placement-group bundle per process (``CPU``, plus ``GPU`` or the ``TPU`` custom
   resource of a TPU host; ``STRICT_SPREAD`` for TPU hosts, one per VM) and waits until the cluster
   can hold them (a bounded wait, then a one-line failure instead of a pending job);
2. starts a :class:`TrainingWorker` actor in each bundle; worker 0 reports its node's IP address and
   a free port there: the JAX coordinator;
3. has every actor run the ordinary ``videopoet train ...`` as a child process with the launch
   contract (``VIDEOPOET_COORDINATOR``, ``VIDEOPOET_NUM_PROCESSES``, ``VIDEOPOET_PROCESS_ID``,
   ``VIDEOPOET_RUN_NAME``, ``VIDEOPOET_SCHEDULER=ray``);
4. watches all of them: when one exits non-zero or its actor dies (node lost, process killed), the
   others cannot go on (a multi-process JAX program hangs in its next collective without a
   member), so it stops them (SIGTERM, then SIGKILL after a short grace) and exits 1 at once;
5. on SIGTERM (``ray job stop``, a KubeRay shutdown) forwards SIGTERM to every training process,
   which saves a checkpoint and exits 143, and exits 143 itself.

A resubmitted job lands in the same run dir and resumes from its latest checkpoint. Children die
with their actor (``PR_SET_PDEATHSIG``), so a killed driver leaves no training process behind.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

PREEMPTED = 143
FAILURE_GRACE_S = 10.0  # a peer is gone: the survivors cannot save collectively; do not wait long
POLL_S = 0.5


def exec_with_parent_death_signal(argv: list[str]) -> None:
    """Become ``argv``, killed (SIGKILL) when the process that started us dies: ``PR_SET_PDEATHSIG``
    set in the child itself before exec (Linux), not through ``preexec_fn``, unsafe in Ray's threaded
    worker processes."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        print("videopoet ray driver: no prctl here; the training process may outlive its actor", file=sys.stderr)
    os.execvp(argv[0], argv)


class TrainingWorker:
    """A Ray actor that runs one training process (wrapped with ``ray.remote`` by :func:`run`)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def address(self) -> tuple[str, int]:
        """This node's IP and a port free on it (worker 0's: the coordinator's)."""
        import ray

        ip = ray.util.get_node_ip_address()
        with socket.socket() as s:
            s.bind((ip, 0))
            return ip, s.getsockname()[1]

    def start(self, argv: list[str], env: dict[str, str]) -> int:
        shim = [sys.executable, "-m", "videopoet.infra.ray_driver", "--exec", *argv]
        self.proc = subprocess.Popen(shim, env={**os.environ, **env})
        return self.proc.pid

    def poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, grace_s: float) -> int | None:
        """SIGTERM (the trainer saves and exits), SIGKILL after ``grace_s``; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def bundles(spec: dict[str, Any]) -> list[dict[str, float]]:
    """One placement-group bundle per process."""
    bundle: dict[str, float] = {"CPU": float(spec.get("cpus_per_worker", 1))}
    if spec.get("gpus_per_worker"):
        bundle["GPU"] = float(spec["gpus_per_worker"])
    bundle.update({k: float(v) for k, v in (spec.get("resources_per_worker") or {}).items()})
    return [dict(bundle) for _ in range(int(spec["num_processes"]))]


def worker_env(spec: dict[str, Any], coordinator: str, process_id: int) -> dict[str, str]:
    """The launch-contract variables of process ``process_id``."""
    env = {
        "VIDEOPOET_SCHEDULER": "ray",
        "VIDEOPOET_COORDINATOR": coordinator,
        "VIDEOPOET_NUM_PROCESSES": str(spec["num_processes"]),
        "VIDEOPOET_PROCESS_ID": str(process_id),
        "VIDEOPOET_RUN_NAME": spec["name"],
        "VIDEOPOET_RESTART_COUNT": str(spec.get("restart_count", 0)),
    }
    env.update(spec.get("env") or {})
    return env


def _fail(message: str) -> int:
    print(f"videopoet ray driver: {message}", file=sys.stderr, flush=True)
    return 1


def run(spec: dict[str, Any]) -> int:
    """Start the workers of ``spec`` on the cluster this job runs on and watch them; the job's exit status."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    n = int(spec["num_processes"])
    stop_requested: list[int] = []
    ray.init(address=os.environ.get("RAY_ADDRESS") or "auto", logging_level="WARNING")
    signal.signal(signal.SIGTERM, lambda signum, frame: stop_requested.append(signum))  # after Ray's own
    pg = placement_group(bundles(spec), strategy=spec.get("strategy", "SPREAD"), name=f"videopoet-{spec['name']}")
    try:
        ray.get(pg.ready(), timeout=float(spec.get("ready_timeout_s", 300)))
    except GetTimeoutError:
        remove_placement_group(pg)
        return _fail(
            f"the cluster cannot hold {n} worker(s) of {bundles(spec)[0]} "
            f"({spec.get('strategy', 'SPREAD')}) within {spec.get('ready_timeout_s', 300)} s"
        )
    actor = ray.remote(num_cpus=0)(TrainingWorker)
    workers = []
    for i, bundle in enumerate(bundles(spec)):
        opts = {
            "num_cpus": bundle["CPU"],
            "num_gpus": bundle.get("GPU", 0),
            "resources": {k: v for k, v in bundle.items() if k not in ("CPU", "GPU")},
            "scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i),
            "max_restarts": 0,
            "name": f"videopoet-{spec['name']}-{i}",
        }
        workers.append(actor.options(**opts).remote())
    host, port = ray.get(workers[0].address.remote())
    coordinator = f"{host}:{port}"
    ray.get([w.start.remote(list(spec["argv"]), worker_env(spec, coordinator, i)) for i, w in enumerate(workers)])
    print(f"videopoet ray driver: {n} training process(es), coordinator {coordinator}", flush=True)
    try:
        return _watch(workers, stop_requested, float(spec.get("signal_grace_s", 120)), ray, RayActorError)
    finally:
        for w in workers:
            ray.kill(w)
        remove_placement_group(pg)


def _watch(workers, stop_requested: list[int], signal_grace_s: float, ray, actor_error) -> int:
    done: set[int] = set()
    while len(done) < len(workers):
        if stop_requested:
            codes = ray.get([w.stop.remote(signal_grace_s) for w in workers])
            print(f"videopoet ray driver: stopped on SIGTERM; exit statuses {codes}", flush=True)
            return PREEMPTED
        for i, w in enumerate(workers):
            if i in done:
                continue
            try:
                rc = ray.get(w.poll.remote())
            except actor_error as e:
                return _stop_rest(workers, i, f"its actor died ({type(e).__name__})", done, ray)
            if rc is None:
                continue
            if rc != 0:
                return _stop_rest(workers, i, f"exited with status {rc}", done, ray)
            done.add(i)
        time.sleep(POLL_S)
    print(f"videopoet ray driver: all {len(workers)} training process(es) finished", flush=True)
    return 0


def _stop_rest(workers, failed: int, why: str, done: set[int], ray) -> int:
    rest = [w for i, w in enumerate(workers) if i != failed and i not in done]
    refs = [w.stop.remote(FAILURE_GRACE_S) for w in rest]
    try:
        ray.get(refs, timeout=FAILURE_GRACE_S + 30)
    except Exception as e:  # noqa: BLE001 - an actor that died as well: ray.kill in run() ends it
        print(f"videopoet ray driver: stopping the other workers: {type(e).__name__}", file=sys.stderr)
    return _fail(
        f"training worker {failed} {why}; stopped the other {len(rest)} worker(s); resubmit to resume "
        "from the run dir's latest checkpoint"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m videopoet.infra.ray_driver", description=__doc__)
    p.add_argument("--spec", help="the run as JSON (written by the ray target)")
    p.add_argument("--exec", nargs=argparse.REMAINDER, help="internal: run this command, dying with the caller")
    args = p.parse_args(argv)
    if args.exec:
        exec_with_parent_death_signal(args.exec)
    if not args.spec:
        return _fail("--spec is required")
    try:
        spec = json.loads(args.spec)
    except ValueError as e:
        return _fail(f"--spec is not JSON: {e}")
    missing = [k for k in ("name", "argv", "num_processes") if k not in spec]
    if missing:
        return _fail(f"--spec lacks {', '.join(missing)}")
    return run(spec)


if __name__ == "__main__":
    sys.exit(main())
