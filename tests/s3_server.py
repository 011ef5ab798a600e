"""A real S3 API on 127.0.0.1 for tests: moto's server mode in a subprocess.

Object-storage tests talk to it through the same clients a cluster job uses (s3fs / botocore), over
HTTP, from this process and from the subprocesses a test starts. Use it through the fixtures that
tests/conftest.py re-exports::

    def test_x(s3_server):                  # one server per test session (per xdist worker)
        root = s3_server.new_bucket()       # "s3://t-1a2b3c4d", a fresh empty bucket for this test
        subprocess.run([...], env=s3_server.subprocess_env(), check=True)

    def test_y(s3_root):                    # the same, as a fixture: a fresh bucket URL per test

While the session fixture is active, ``os.environ`` holds the client settings (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL`` for botocore and
``FSSPEC_S3_ENDPOINT_URL`` for fsspec), so subprocesses inherit them; fsspec's already-loaded config
and s3fs's instance cache are updated too. Everything is restored and the server stopped afterwards.
Outside pytest, ``with running() as server: ...`` does the same.

Outages: ``with server.flaky() as relay:`` points the clients (this process's and, through
``relay.env``, subprocesses') at a TCP relay in front of the server; ``relay.outage(seconds)`` takes
the endpoint down (open connections reset, new ones reset as they come: what a client sees when the
server stops) and brings it back after ``seconds``, in the background (``until_met=True``: ``seconds``
after the first connection it turns away). The server's state survives, which
restarting moto itself (an in-memory store) would not allow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from ports import free_ports

__all__ = ["Relay", "S3Server", "running", "s3_root", "s3_server"]

_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclasses.dataclass(frozen=True)
class S3Server:
    """A started server: where it listens and the environment its clients need."""

    endpoint: str  # http://127.0.0.1:PORT
    bucket: str  # a bucket created at start-up
    env: dict[str, str]

    @property
    def root(self) -> str:
        """``s3://<bucket>``, the start-up bucket."""
        return f"s3://{self.bucket}"

    def new_bucket(self) -> str:
        """Create a fresh, empty bucket; returns ``s3://<name>``."""
        name = f"t-{uuid.uuid4().hex[:8]}"
        _filesystem().mkdir(name)
        return f"s3://{name}"

    def subprocess_env(self) -> dict[str, str]:
        """``os.environ`` plus the client settings, for ``subprocess`` calls made outside the fixture."""
        return {**os.environ, **self.env}

    @contextlib.contextmanager
    def flaky(self) -> Iterator[Relay]:
        """Clients talk to the server through a :class:`Relay` that can go down (module docstring)."""
        port = int(self.endpoint.rsplit(":", 1)[1])
        relay = Relay(port)
        try:
            env = {**self.env, "AWS_ENDPOINT_URL": relay.endpoint, "FSSPEC_S3_ENDPOINT_URL": relay.endpoint}
            relay.env = env
            with _client_settings(env):
                yield relay
        finally:
            relay.close()


class Relay:
    """A TCP relay on 127.0.0.1 in front of ``target_port`` that can be taken down and brought back.

    While down, every connection a client opens is reset at once and counted in ``rejected`` (so a
    test can tell that its job really met the outage), and the connections open when it went down
    are reset too."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.env: dict[str, str] = {}
        self.outages = 0
        self.rejected = 0
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._down = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def up(self) -> None:
        """Relay connections again."""
        with self._lock:
            self._down = False

    def down(self) -> None:
        """Reset the open connections and every new one until :meth:`up`."""
        with self._lock:
            self._down = True
            conns, self._conns = self._conns, set()
        for c in conns:
            _reset(c)

    def outage(self, seconds: float, until_met: bool = False, cap_s: float = 120.0) -> threading.Thread:
        """:meth:`down` now, :meth:`up` after ``seconds`` (in the background); returns that thread.

        With ``until_met`` the ``seconds`` count from the first connection the outage rejects (at most
        ``cap_s`` after it began), so a client that is busy computing when the endpoint goes down still
        meets it on its next request, however slow the machine."""
        with self._lock:
            start_rejected = self.rejected
        self.down()
        self.outages += 1

        def restore() -> None:
            if until_met:
                deadline = time.monotonic() + cap_s
                while time.monotonic() < deadline:
                    with self._lock:
                        if self.rejected > start_rejected:
                            break
                    time.sleep(0.02)
            time.sleep(seconds)
            self.up()

        t = threading.Thread(target=restore, daemon=True)
        t.start()
        return t

    def close(self) -> None:
        self.down()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            with self._lock:
                down = self._down
                if down:
                    self.rejected += 1
            if down:
                _reset(client)
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                _reset(client)
                continue
            with self._lock:
                if self._down:  # went down meanwhile
                    self.rejected += 1
                    _reset(client)
                    _reset(server)
                    continue
                self._conns.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)
            for s in (src, dst):
                _reset(s)


def _reset(s: socket.socket) -> None:
    """Close with an RST (what a stopped server's peer gets), ignoring sockets already closed."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


def _filesystem():
    import s3fs

    return s3fs.S3FileSystem()


def _wait_ready(proc: subprocess.Popen, endpoint: str, log_path: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(log_path, encoding="utf-8", errors="replace") as f:
                tail = f.read()[-2000:]
            raise RuntimeError(f"moto server exited with code {proc.returncode} before it was ready:\n{tail}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers HTTP: ready
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto server at {endpoint} not ready after {timeout_s:.0f}s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def _client_settings(env: dict[str, str]) -> Iterator[None]:
    """Point this process's clients at the server, and put everything back afterwards."""
    import fsspec.config
    import s3fs

    mp = pytest.MonkeyPatch()
    try:
        for k, v in env.items():
            mp.setenv(k, v)
        # fsspec read FSSPEC_S3_* into its config when it was imported; update that copy too
        mp.setitem(
            fsspec.config.conf, "s3", {**fsspec.config.conf.get("s3", {}), "endpoint_url": env["AWS_ENDPOINT_URL"]}
        )
        s3fs.S3FileSystem.clear_instance_cache()  # instances made earlier know another endpoint
        yield
    finally:
        mp.undo()
        s3fs.S3FileSystem.clear_instance_cache()


@contextlib.contextmanager
def running(bucket: str = "videopoet-test", timeout_s: float = 60.0) -> Iterator[S3Server]:
    """Start ``python -m moto.server`` on a free 127.0.0.1 port, create ``bucket``, stop it on exit."""
    log = tempfile.NamedTemporaryFile(prefix="moto-server-", suffix=".log", delete=False)
    log.close()
    (port,) = free_ports(1)
    endpoint = f"http://127.0.0.1:{port}"
    with open(log.name, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        _wait_ready(proc, endpoint, log.name, timeout_s)
        env = {**_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "FSSPEC_S3_ENDPOINT_URL": endpoint}
        with _client_settings(env):
            _filesystem().mkdir(bucket)
            yield S3Server(endpoint=endpoint, bucket=bucket, env=env)
    finally:
        _stop(proc)
        os.unlink(log.name)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server for the test session (see the module docstring)."""
    with running() as server:
        yield server


@pytest.fixture
def s3_root(s3_server: S3Server) -> str:
    """A fresh, empty bucket for one test: ``s3://t-xxxxxxxx``."""
    return s3_server.new_bucket()
