"""Cores for the worker processes of a local multi-worker job, so that workers do not fight over them.

XLA:CPU gives every process an intra-op thread pool as large as the set of cores the process may run
on. W worker processes on an N-core machine therefore start W x N compute threads for N cores, and
the tokenizers' convolutions (almost all of a job's time on a CPU) lose to context switches and cache
thrashing what the extra workers should have gained. The rule applied here: worker ``i`` of ``W``
runs on cores ``[i * N // W, (i + 1) * N // W)`` (``N // W`` cores each, so XLA's pool is that size);
with more workers than cores, worker ``i`` runs on core ``i mod N``.

The runners do not tell a worker process its index, so each claims one: :func:`claim_cores` takes the
first free slot of ``W`` lock files (``fcntl.flock``, held for the life of the process and released
by the OS when it exits, also when it is killed) and pins the process with ``os.sched_setaffinity``,
before the tokenizers load (XLA sizes its pool when the first computation creates the CPU client).
Applied only where the job starts its own worker processes on this machine (Beam's DirectRunner in
``multi_processing`` mode, the local Ray cluster); Dataflow and other clusters place their own.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator

__all__ = ["available_cores", "claim_cores", "core_plan", "cores_for", "worker_slots"]

_CLAIMED: tuple[int, object] | None = None  # (slot, open lock file) of this process


def available_cores() -> list[int]:
    """The cores this process may run on, in order."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def cores_for(slot: int, workers: int, cores: list[int]) -> list[int]:
    """The cores of worker ``slot`` of ``workers`` on ``cores`` (the module's rule)."""
    n = len(cores)
    if workers >= n:
        return [cores[slot % n]]
    return cores[slot * n // workers : (slot + 1) * n // workers]


def core_plan(workers: int) -> list[list[int]]:
    """Every slot's cores on this machine (recorded in the job's runner information)."""
    cores = available_cores()
    return [cores_for(slot, workers, cores) for slot in range(workers)]


@contextlib.contextmanager
def worker_slots(workers: int) -> Iterator[dict | None]:
    """For a job that starts ``workers`` local worker processes: a fresh slots directory, as the
    ``{"dir", "workers"}`` that each worker passes to :func:`claim_cores`, removed when the job ends;
    None (nothing to claim) for one worker."""
    if workers <= 1:
        yield None
        return
    slots_dir = tempfile.mkdtemp(prefix="videopoet-cores-")
    try:
        yield {"dir": slots_dir, "workers": workers}
    finally:
        shutil.rmtree(slots_dir, ignore_errors=True)


def claim_cores(slots_dir: str, workers: int) -> list[int] | None:
    """Claim a free worker slot under ``slots_dir`` and pin this process to its cores; returns the cores,
    or None when pinning does not apply (one worker, no ``sched_setaffinity``, every slot taken by
    live processes). Idempotent within a process."""
    global _CLAIMED
    if workers <= 1 or not hasattr(os, "sched_setaffinity"):
        return None
    cores = available_cores()
    if _CLAIMED is not None:
        return cores
    os.makedirs(slots_dir, exist_ok=True)
    for slot in range(workers):
        f = open(os.path.join(slots_dir, f"slot-{slot}"), "a+")  # noqa: SIM115 - held for the process's life
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        mine = cores_for(slot, workers, cores)
        os.sched_setaffinity(0, set(mine))
        _CLAIMED = (slot, f)
        return mine
    return None
