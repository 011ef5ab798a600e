"""Local Ray clusters for the tests: one test file at a time on this machine, every process on 127.0.0.1.

``exclusive()`` holds a machine-wide lock: the suite runs files on several pytest-xdist workers, and two
Ray clusters at once would both be torn down by either one's ``ray stop --force`` (it ends every Ray
process on the machine) and would fight over the cores. ``two_node_cluster()`` starts a head (with the
dashboard, for the Jobs API) and a second node, returns once the Jobs API runs a job, and stops both.

``ray_cluster_session`` (a fixture made available by tests/conftest.py) is the one cluster every
Ray test of the session shares: starting a cluster costs tens of seconds, minutes on a loaded machine,
and the Ray files run on one xdist worker (their shared group), so one start serves them all.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest
from ports import free_ports

RAY = os.path.join(os.path.dirname(sys.executable), "ray")
LOCK = os.path.join(tempfile.gettempdir(), "videopoet-tests-ray.lock")


# ports a Ray node takes by default: the client server, the worker port range, the dashboard agent
RAY_DEFAULT_PORTS = {10001, 52365, *range(10002, 20000)}


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """Wait for, then hold, the machine-wide Ray lock."""
    with open(LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _ray(argv: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, *argv], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _start(argv: list[str], env: dict[str, str]) -> None:
    """`ray start`, failing the test with Ray's own last words (not just an exit status)."""
    out = _ray(["start", *argv], env)
    if out.returncode != 0:
        pytest.fail(f"ray start {argv[0]} exited {out.returncode}:\n{(out.stdout + out.stderr)[-3000:]}")


def wait_for_jobs_api(dashboard: str, env: dict[str, str], limit_s: float = 240) -> None:
    """Return once a trivial job submitted through the Jobs API has run: `ray start` returns before the
    dashboard's HTTP server and the head's job agent answer, later still on a loaded machine."""
    deadline = time.monotonic() + limit_s
    last = ""
    while time.monotonic() < deadline:
        left = max(deadline - time.monotonic(), 1)
        try:
            out = _ray(["job", "submit", f"--address={dashboard}", "--", "true"], env, timeout=left)
        except subprocess.TimeoutExpired:
            break
        if out.returncode == 0 and "succeeded" in (out.stdout + out.stderr).lower():
            return
        last = (out.stdout + out.stderr)[-1500:]
        time.sleep(2)
    pytest.fail(f"the Jobs API at {dashboard} did not run a job within {limit_s:.0f} s:\n{last}")


@contextlib.contextmanager
def two_node_cluster(env: dict[str, str], cpus_per_node: int = 2) -> Iterator[dict[str, str]]:
    """A head and a second node on 127.0.0.1; yields ``address``, ``dashboard`` (its URL) and ``env``.

    The temp dir is a short one under /tmp, not pytest's: Ray puts AF_UNIX sockets under
    <temp-dir>/session_<date>_<pid>/sockets/, and Linux caps a socket path at 107 bytes."""
    # the session's token (tests/conftest.py), also when the caller built env before it was set
    env.update({key: os.environ[key] for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN") if key in os.environ})
    yield from _two_node_cluster(env, cpus_per_node)


def _two_node_cluster(env: dict[str, str], cpus_per_node: int) -> Iterator[dict[str, str]]:
    port, dash = free_ports(2, avoid=RAY_DEFAULT_PORTS)
    tmp = tempfile.mkdtemp(prefix="vpray-", dir="/tmp")
    head = [
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        f"--num-cpus={cpus_per_node}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        "--disable-usage-stats",
        f"--temp-dir={tmp}",
    ]
    worker = [
        f"--address=127.0.0.1:{port}",
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={cpus_per_node}",
        "--disable-usage-stats",
    ]
    try:
        _start(head, env)
        _start(worker, env)
        dashboard = f"http://127.0.0.1:{dash}"
        wait_for_jobs_api(dashboard, env)
        yield {"address": f"127.0.0.1:{port}", "dashboard": dashboard, "env": env}
    finally:
        _ray(["stop", "--force"], env, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)


def cluster_env() -> dict[str, str]:
    """The environment of the shared cluster's processes (and of the CLIs the tests point at it): this
    session's, on the CPU at the suite's optimisation level, one device per process, no RAY_ADDRESS, and
    Ray's workers at the raylet's CPU priority: Ray starts them 15 nice levels lower by default, so beside
    the compute-bound tests on the other xdist workers a job's actors got a tenth of a core's share and
    the Ray tests ran 4-5x slower than alone (BENCHMARKS.md, "Test suite")."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.update(
        {
            "JAX_PLATFORMS": "cpu",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "PATH": os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
            "XLA_FLAGS": os.environ.get("VIDEOPOET_TEST_XLA_OPT", ""),
            "RAY_worker_niceness": "0",
        }
    )
    return env


_session = contextlib.ExitStack()
_session_info: dict[str, str] | None = None


@pytest.fixture
def ray_cluster_session() -> dict[str, str]:
    """The session's two-node cluster (``two_node_cluster``), started at first use under the machine-wide lock;
    tests/conftest.py stops it after the last test of the Ray group (``stop_session_cluster``)."""
    global _session_info
    if _session_info is None:
        _session.enter_context(exclusive())
        _session_info = _session.enter_context(two_node_cluster(cluster_env()))
    return _session_info


def stop_session_cluster() -> None:
    """Stop the shared cluster (if started) and release the lock."""
    global _session_info
    _session_info = None
    _session.close()


@contextlib.contextmanager
def joined(cluster: dict[str, str], env_vars: dict[str, str] | None = None) -> Iterator[None]:
    """This process as a Ray driver of ``cluster`` (``env_vars`` reach the job's workers), disconnected on exit."""
    import ray

    runtime_env = {"env_vars": dict(env_vars)} if env_vars else None
    ray.init(
        address=cluster["address"],
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        logging_level="WARNING",
        runtime_env=runtime_env,
    )
    try:
        yield
    finally:
        ray.shutdown()
