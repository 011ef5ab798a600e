"""The launch contract: a scheduler's environment -> ``jax.distributed.initialize`` + the run's identity.

Every host of a run executes the same ``videopoet train ...`` (or ``videopoet pipeline run ...``)
command; :func:`detect` reads where it runs from the environment the scheduler (or our own
launcher) gives that process, and :func:`initialize` joins the processes into one JAX program.

Schedulers, in order of precedence (the first whose variables are present wins):

1. ``local`` / ``ray`` - plain variables set by our own launchers (``videopoet submit --target local``,
   the Ray target): ``VIDEOPOET_COORDINATOR`` (host:port), ``VIDEOPOET_NUM_PROCESSES``,
   ``VIDEOPOET_PROCESS_ID``, ``VIDEOPOET_RUN_NAME``, ``VIDEOPOET_RESTART_COUNT``, and
   ``VIDEOPOET_SCHEDULER`` (``local``, the default, or ``ray``). Explicit beats inferred: a launcher
   that sets these inside a Slurm allocation or a pod means them.
2. ``jobset`` - a GKE JobSet: ``JOBSET_NAME``, ``REPLICATED_JOB_NAME``, ``JOB_INDEX`` (the slice),
   ``JOB_COMPLETION_INDEX`` (the host within the slice), ``VIDEOPOET_HOSTS_PER_SLICE``,
   ``VIDEOPOET_NUM_SLICES``; process id = slice * hosts_per_slice + host; the coordinator is worker 0
   of slice 0 on the JobSet's headless service, ``{jobset}-{rjob}-0-0.{jobset}:{port}``. It precedes
   ``tpu-vm`` because GKE also sets ``TPU_WORKER_ID`` / ``TPU_WORKER_HOSTNAMES`` in TPU pods, numbered
   within one slice only.
3. ``slurm`` - ``SLURM_PROCID``, ``SLURM_NTASKS``, the first host of ``SLURM_JOB_NODELIST``,
   ``SLURM_JOB_NAME``, ``SLURM_RESTART_COUNT``.
4. ``tpu-vm`` - a Cloud TPU VM slice: ``TPU_WORKER_ID``, ``TPU_WORKER_HOSTNAMES`` (comma separated;
   the coordinator is the first).
5. none of these: one process (``local``, no coordinator).

Coordinator port: ``VIDEOPOET_COORDINATOR_PORT`` when set. Otherwise 8476 (the port JAX's own TPU
cluster detection uses) for ``jobset`` / ``tpu-vm``, whose hosts run one job each; on Slurm, where
several jobs share nodes, ``SLURM_PORT_BASE + SLURM_JOB_ID % SLURM_PORT_SPAN`` (12000..31999, below
Linux's ephemeral range), so two jobs on one node do not clash and a requeued job keeps its port.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
from collections.abc import Mapping

from videopoet.schemas.errors import VideoPoetError

SCHEDULERS = ("local", "slurm", "jobset", "tpu-vm", "ray")
DEFAULT_PORT = 8476
SLURM_PORT_BASE = 12000
SLURM_PORT_SPAN = 20000


class LaunchError(VideoPoetError):
    """The scheduler's environment is incomplete or inconsistent."""


@dataclasses.dataclass(frozen=True)
class LaunchSpec:
    """Where this process runs: what ``jax.distributed.initialize`` needs plus the run's identity."""

    scheduler: str = "local"
    coordinator_address: str | None = None  # "host:port"; None for a single process
    num_processes: int = 1
    process_id: int = 0
    run_name: str | None = None
    restart_count: int = 0  # how many times the scheduler restarted / requeued this run
    slice_index: int = 0
    num_slices: int = 1

    def __post_init__(self):
        if self.scheduler not in SCHEDULERS:
            raise LaunchError(f"unknown scheduler {self.scheduler!r} (known: {', '.join(SCHEDULERS)})")
        if self.num_processes < 1:
            raise LaunchError(f"{self.scheduler}: the number of processes must be >= 1, got {self.num_processes}")
        if not 0 <= self.process_id < self.num_processes:
            raise LaunchError(f"{self.scheduler}: process id {self.process_id} is outside 0..{self.num_processes - 1}")
        if not 0 <= self.slice_index < self.num_slices:
            raise LaunchError(f"{self.scheduler}: slice index {self.slice_index} is outside 0..{self.num_slices - 1}")
        if self.restart_count < 0:
            raise LaunchError(f"{self.scheduler}: restart count must be >= 0, got {self.restart_count}")
        if self.num_processes > 1:
            if not self.coordinator_address:
                raise LaunchError(f"{self.scheduler}: {self.num_processes} processes need a coordinator address")
            _check_address(self.coordinator_address)

    @property
    def is_lead(self) -> bool:
        return self.process_id == 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_address(addr: str) -> None:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LaunchError(f"coordinator address {addr!r} is not host:port")


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        if default is None:
            raise LaunchError(f"{name} is not set")
        return default
    try:
        return int(raw)
    except ValueError:
        raise LaunchError(f"{name}={raw!r} is not an integer") from None


def _port(env: Mapping[str, str], default: int) -> int:
    port = _int(env, "VIDEOPOET_COORDINATOR_PORT", default)
    if not 0 < port < 65536:
        raise LaunchError(f"VIDEOPOET_COORDINATOR_PORT={port} is not a TCP port")
    return port


# ------------------------------------------------------------------------------ Slurm host lists
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def expand_hostlist(spec: str) -> list[str]:
    """Slurm's compressed host list -> host names, in order: ``"a[01-03,7],b5"`` -> a01 a02 a03 a7 b5.

    Several bracket groups in one name expand as a product (``"r[1-2]n[1-2]"`` -> r1n1 r1n2 r2n1 r2n2);
    a range keeps the zero padding of its lower bound.
    """
    spec = spec.strip()
    if not spec:
        raise LaunchError("empty Slurm host list")
    hosts: list[str] = []
    for item in _split_top(spec):
        hosts.extend(_expand_item(item, spec))
    return hosts


def _split_top(spec: str) -> list[str]:
    items, depth, cur = [], 0, []
    for ch in spec:
        if ch == "[":
            depth += 1
            if depth > 1:
                raise LaunchError(f"Slurm host list {spec!r}: nested brackets")
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise LaunchError(f"Slurm host list {spec!r}: unbalanced brackets")
        if ch == "," and depth == 0:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise LaunchError(f"Slurm host list {spec!r}: unbalanced brackets")
    items.append("".join(cur))
    if any(not i for i in items):
        raise LaunchError(f"Slurm host list {spec!r}: empty entry")
    return items


def _expand_item(item: str, spec: str) -> list[str]:
    parts = re.split(r"\[([^\]]*)\]", item)  # literal, ranges, literal, ranges, ..., literal
    choices: list[list[str]] = []
    for k, part in enumerate(parts):
        if k % 2 == 0:
            choices.append([part])
            continue
        values: list[str] = []
        for rng in part.split(","):
            m = _RANGE.match(rng.strip())
            if not m:
                raise LaunchError(f"Slurm host list {spec!r}: bad range {rng!r}")
            lo, hi = m.group(1), m.group(2) or m.group(1)
            if int(hi) < int(lo):
                raise LaunchError(f"Slurm host list {spec!r}: range {rng!r} runs backwards")
            values.extend(str(n).zfill(len(lo)) for n in range(int(lo), int(hi) + 1))
        choices.append(values)
    return ["".join(p) for p in itertools.product(*choices)]


# ------------------------------------------------------------------------------ detection
def _from_plain(env: Mapping[str, str]) -> LaunchSpec:
    scheduler = env.get("VIDEOPOET_SCHEDULER") or "local"
    if scheduler not in ("local", "ray"):
        raise LaunchError(f"VIDEOPOET_SCHEDULER={scheduler!r}: our own launchers are 'local' or 'ray'")
    n = _int(env, "VIDEOPOET_NUM_PROCESSES")
    return LaunchSpec(
        scheduler=scheduler,
        coordinator_address=env["VIDEOPOET_COORDINATOR"],
        num_processes=n,
        process_id=_int(env, "VIDEOPOET_PROCESS_ID"),
        run_name=env.get("VIDEOPOET_RUN_NAME") or None,
        restart_count=_int(env, "VIDEOPOET_RESTART_COUNT", 0),
    )


def _from_jobset(env: Mapping[str, str]) -> LaunchSpec:
    jobset = env["JOBSET_NAME"]
    rjob = env.get("REPLICATED_JOB_NAME") or ""
    if not rjob:
        raise LaunchError("JOBSET_NAME is set but REPLICATED_JOB_NAME is not")
    hosts = _int(env, "VIDEOPOET_HOSTS_PER_SLICE", 1)
    slices = _int(env, "VIDEOPOET_NUM_SLICES", 1)
    if hosts < 1 or slices < 1:
        raise LaunchError(f"VIDEOPOET_HOSTS_PER_SLICE={hosts} and VIDEOPOET_NUM_SLICES={slices} must be >= 1")
    slice_index = _int(env, "JOB_INDEX", 0)
    host = _int(env, "JOB_COMPLETION_INDEX", 0)
    if not 0 <= host < hosts:
        raise LaunchError(f"JOB_COMPLETION_INDEX={host} is outside 0..{hosts - 1} (VIDEOPOET_HOSTS_PER_SLICE={hosts})")
    port = _port(env, DEFAULT_PORT)
    return LaunchSpec(
        scheduler="jobset",
        coordinator_address=f"{jobset}-{rjob}-0-0.{jobset}:{port}",
        num_processes=hosts * slices,
        process_id=slice_index * hosts + host,
        run_name=env.get("VIDEOPOET_RUN_NAME") or jobset,
        restart_count=_int(env, "VIDEOPOET_RESTART_COUNT", 0),
        slice_index=slice_index,
        num_slices=slices,
    )


def slurm_port(env: Mapping[str, str]) -> int:
    """The coordinator port of a Slurm job (see the module docstring)."""
    job_id = _int(env, "SLURM_JOB_ID", 0)
    return _port(env, SLURM_PORT_BASE + job_id % SLURM_PORT_SPAN)


def _from_slurm(env: Mapping[str, str]) -> LaunchSpec:
    n = _int(env, "SLURM_NTASKS") if env.get("SLURM_NTASKS") else _int(env, "SLURM_NPROCS")
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise LaunchError("SLURM_PROCID is set but SLURM_JOB_NODELIST is not")
    first = expand_hostlist(nodelist)[0]
    return LaunchSpec(
        scheduler="slurm",
        coordinator_address=f"{first}:{slurm_port(env)}",
        num_processes=n,
        process_id=_int(env, "SLURM_PROCID"),
        run_name=env.get("SLURM_JOB_NAME") or None,
        restart_count=_int(env, "SLURM_RESTART_COUNT", 0),
    )


def _from_tpu_vm(env: Mapping[str, str]) -> LaunchSpec:
    hosts = [h.strip() for h in env["TPU_WORKER_HOSTNAMES"].split(",")]
    if not all(hosts):
        raise LaunchError(f"TPU_WORKER_HOSTNAMES={env['TPU_WORKER_HOSTNAMES']!r} has an empty entry")
    return LaunchSpec(
        scheduler="tpu-vm",
        coordinator_address=f"{hosts[0]}:{_port(env, DEFAULT_PORT)}",
        num_processes=len(hosts),
        process_id=_int(env, "TPU_WORKER_ID"),
        run_name=env.get("VIDEOPOET_RUN_NAME") or None,
        restart_count=_int(env, "VIDEOPOET_RESTART_COUNT", 0),
    )


# (scheduler, the variable whose presence selects it, reader), in order of precedence
_DETECTORS = (
    ("local", "VIDEOPOET_COORDINATOR", _from_plain),
    ("jobset", "JOBSET_NAME", _from_jobset),
    ("slurm", "SLURM_PROCID", _from_slurm),
    ("tpu-vm", "TPU_WORKER_HOSTNAMES", _from_tpu_vm),
)


def detect(environ: Mapping[str, str] | None = None) -> LaunchSpec:
    """This process's :class:`LaunchSpec` from ``environ`` (default ``os.environ``); see the module docstring."""
    env = os.environ if environ is None else environ
    for _, var, reader in _DETECTORS:
        if env.get(var):
            return reader(env)
    return LaunchSpec(
        run_name=env.get("VIDEOPOET_RUN_NAME") or None, restart_count=_int(env, "VIDEOPOET_RESTART_COUNT", 0)
    )


_INITIALIZED: list[LaunchSpec] = []


def initialize(spec: LaunchSpec) -> bool:
    """Join the run's processes (``jax.distributed.initialize``) when there is more than one.

    Must run before anything touches the devices. CPU processes exchange collectives over gloo.
    Returns whether this call joined a multi-process run (a second call with the same spec is a no-op).
    """
    if spec.num_processes <= 1:
        return False
    if _INITIALIZED:
        if _INITIALIZED[0] != spec:
            raise LaunchError("jax.distributed is already initialized for another launch spec")
        return False
    import jax

    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:  # noqa: BLE001 - option absent in some jax versions; the default is used then
        pass
    jax.distributed.initialize(
        coordinator_address=spec.coordinator_address, num_processes=spec.num_processes, process_id=spec.process_id
    )
    _INITIALIZED.append(spec)
    return True


# ------------------------------------------------------------------------------ run identity
def packages_hash() -> tuple[str, int]:
    """sha256 over the installed distributions' sorted ``name==version`` lines, and how many there are:
    two hosts (or a run and its resumption) with the same hash ran the same software."""
    import hashlib
    from importlib import metadata

    lines = set()
    for dist in metadata.distributions():
        name = dist.metadata.get("Name") if dist.metadata else None
        if name:
            lines.add(f"{name.lower().replace('_', '-')}=={dist.version}")
    text = "\n".join(sorted(lines))
    return hashlib.sha256(text.encode()).hexdigest(), len(lines)


def git_commit(path: str | None = None) -> dict | None:
    """The commit (and whether the tree is dirty) of the git checkout holding ``path`` (default: this
    package's source), or None outside a checkout / without git."""
    import subprocess

    path = path or os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", path, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None}


def package_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("videopoet")
    except metadata.PackageNotFoundError:
        return "unknown"


def run_identity(spec: LaunchSpec, run_dir: str) -> dict:
    """What run.json records about where and with what a run ran: the package version, git commit,
    installed-packages hash, the launch spec, and the submission (target + resources) when the run was
    submitted with ``videopoet submit`` (RUN_DIR/submit.json)."""
    from videopoet.infra import request

    digest, count = packages_hash()
    submitted = request.read_submit_file(run_dir) if os.path.isdir(run_dir) or "://" in run_dir else None
    return {
        "package_version": package_version(),
        "git": git_commit(),
        "packages": {"sha256": digest, "count": count},
        "launch": spec.to_dict(),
        "target": (submitted or {}).get("target", spec.scheduler),
        "resources": (submitted or {}).get("resources"),
        "job_id": (submitted or {}).get("job_id"),
    }
