"""Leases: one holder at a time for a dataset version, on a local disk or an object store.

Publishing (and removing) ``name@version`` happens under a lease, so two jobs that finish the same
version at the same moment never interleave their copies: one publishes, the other then finds the
version published and compares fingerprints.

A lease is a chain of generation objects under ``<root>/<name>/.locks/<version>/``:
``00000000.json``, ``00000001.json``, ... Each holds ``{owner, by, host, pid, pid_space, acquired,
expires, released}``. To take the lease a process reads the newest generation; if that one is
released, expired, or held by a process of this host and pid namespace that no longer runs, it
*creates* the next generation with an exclusive write (local: a complete temporary file hard-linked
to the name, which fails if the name exists; S3: ``PutObject`` with ``If-None-Match: *``; GCS:
``ifGenerationMatch=0``). Exactly one contender creates a given generation, so exactly one wins; the
others wait and retry. Nothing is ever deleted to break a stale lease (a delete-then-create takeover
would let two contenders win).

The holder renews ``expires`` from a heartbeat thread, so a long copy keeps its lease while a killed
job's lease lapses after ``ttl_s``; hosts are assumed to agree on the time to well within ``ttl_s``.
Before its commit point the holder checks it is still the newest generation (:meth:`Lease.check`).
``videopoet data gc`` removes old generations.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from typing import Any

from videopoet.schemas.errors import DatasetError

__all__ = ["Lease", "acquire", "current", "is_live", "who"]

LOCKS_DIR = ".locks"
_GEN = re.compile(r"^(\d{8})\.json$")
DEFAULT_TTL_S = 120.0
DEFAULT_WAIT_S = 600.0


def who() -> str:
    """``user@host`` of this process, for leases and the dataset log."""
    try:
        import getpass

        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def _process_space() -> str:
    """Where a pid means something: this host and its pid namespace (containers on one host share a
    hostname, not their pids)."""
    try:
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        ns = 0
    return f"{socket.gethostname()}/{ns}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def is_live(rec: dict[str, Any] | None, now: float | None = None) -> bool:
    """Whether a generation record still holds its lease."""
    if not rec or rec.get("released"):
        return False
    if float(rec.get("expires", 0)) < (time.time() if now is None else now):
        return False
    if rec.get("pid_space") == _process_space() and isinstance(rec.get("pid"), int):
        return _pid_alive(rec["pid"]) and not (rec["pid"] == os.getpid() and rec.get("owner") not in _HELD)
    return True


_HELD: set[str] = set()  # owners held by this process (a same-pid record not in here was left by a dead thread)


def _lock_dir(fs, name: str, version: str) -> str:
    return fs.path(name, LOCKS_DIR, version)


def _generations(fs, d: str) -> list[int]:
    return sorted(int(m.group(1)) for fn in fs.listdir(d) if (m := _GEN.match(fn)))


def current(fs, name: str, version: str) -> tuple[int, dict[str, Any] | None] | None:
    """(generation, record) of the newest generation, or None when the version was never leased."""
    d = _lock_dir(fs, name, version)
    gens = _generations(fs, d)
    if not gens:
        return None
    try:
        return gens[-1], fs.read_json(fs.path(name, LOCKS_DIR, version, f"{gens[-1]:08d}.json"))
    except DatasetError:
        return gens[-1], None


class Lease:
    """A held lease (use :func:`acquire`); a context manager that releases on exit."""

    def __init__(self, fs, name: str, version: str, gen: int, rec: dict[str, Any], ttl_s: float):
        self.fs = fs
        self.name = name
        self.version = version
        self.gen = gen
        self.rec = rec
        self.ttl_s = ttl_s
        self.path = fs.path(name, LOCKS_DIR, version, f"{gen:08d}.json")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._heartbeat, name=f"lease-{name}@{version}", daemon=True)
        self._thread.start()

    def _write(self) -> None:
        self.fs.write_json_atomic(self.path, self.rec)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            with self._lock:
                if self._stop.is_set():
                    return
                try:
                    if _generations(self.fs, _lock_dir(self.fs, self.name, self.version))[-1:] != [self.gen]:
                        return  # taken over: check() reports it
                    self.rec = {**self.rec, "expires": time.time() + self.ttl_s}
                    self._write()
                except Exception:  # noqa: BLE001 - a failed renewal is retried; check() decides
                    continue

    def check(self) -> None:
        """Raise unless this is still the newest, unexpired generation (call before a commit point)."""
        gens = _generations(self.fs, _lock_dir(self.fs, self.name, self.version))
        if gens[-1:] != [self.gen] or float(self.rec["expires"]) < time.time():
            raise DatasetError(
                f"lost the publish lease on {self.name}@{self.version} (it expired and another job "
                f"took it over); nothing was published by this job, rerun it"
            )

    def release(self) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            self._stop.set()
        _HELD.discard(self.rec["owner"])
        try:
            gens = _generations(self.fs, _lock_dir(self.fs, self.name, self.version))
            if gens[-1:] == [self.gen]:
                self.rec = {**self.rec, "released": True}
                self._write()
        except OSError:
            pass  # the lease lapses at its expiry instead

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(
    fs, name: str, version: str, purpose: str = "publish", ttl_s: float = DEFAULT_TTL_S, wait_s: float | None = None
) -> Lease:
    """Take the lease on ``name@version``, waiting up to ``wait_s`` (default: ``$VIDEOPOET_LEASE_WAIT_S``,
    else 600) for a live holder; raises a one-line :class:`DatasetError` naming the holder after that."""
    if wait_s is None:
        wait_s = float(os.environ.get("VIDEOPOET_LEASE_WAIT_S", DEFAULT_WAIT_S))
    deadline = time.monotonic() + wait_s
    fs.makedirs(_lock_dir(fs, name, version))
    delay = 0.05
    while True:
        cur = current(fs, name, version)
        if cur is not None and is_live(cur[1]):
            if time.monotonic() >= deadline:
                r = cur[1]
                left = max(0, int(float(r["expires"]) - time.time()))
                raise DatasetError(
                    f"{name}@{version} is locked by {r.get('by')} (pid {r.get('pid')}, {r.get('purpose')}, "
                    f"since {r.get('acquired')}; lease runs {left}s more unless renewed); try again later"
                )
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
            continue
        gen = 0 if cur is None else cur[0] + 1
        owner = uuid.uuid4().hex
        rec = {
            "owner": owner,
            "by": who(),
            "host": socket.gethostname(),
            "pid_space": _process_space(),
            "pid": os.getpid(),
            "purpose": purpose,
            "acquired": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "expires": time.time() + ttl_s,
            "released": False,
        }
        blob = (json.dumps(rec, indent=2, sort_keys=True) + "\n").encode()
        if fs.create_exclusive(fs.path(name, LOCKS_DIR, version, f"{gen:08d}.json"), blob):
            _HELD.add(owner)
            return Lease(fs, name, version, gen, rec, ttl_s)
        delay = 0.05  # another contender created this generation first: look again
