"""Keep a local Beam job's output to what concerns the job.

Beam prints start-up chatter that says nothing about the user's job: an import-time note that optional
GCP client libraries are missing, and, from every local SDK worker process, a logging-handler notice,
a "No semi_persistent_directory" note and "Discarding unparseable args" for options the DirectRunner
adds itself. The main process's lines (and the workers' lines it relays through the logging service)
are dropped by a logging filter. Worker processes write theirs straight to the stderr they inherit,
before any user code runs in them, so while a pipeline runs the process's stderr goes through a pipe
whose reader drops exactly those lines and passes everything else on at once (progress bars too).
Every other warning and error still shows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import sys
import threading
from collections.abc import Iterator

NOISE = (
    "apitools not found, and bigquery client libraries are not available",
    "No semi_persistent_directory found",
    "Discarding unparseable args",
    "Logging handler created.",
)
_LOGGERS = ("", "apache_beam.runners.portability.local_job_service", "apache_beam.options.pipeline_options")


class NoiseFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(pattern in message for pattern in NOISE)


_FILTER = NoiseFilter()


def install_log_filter() -> None:
    """Drop Beam's start-up chatter from this process's loggers (idempotent)."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def is_noise(line: bytes) -> bool:
    text = line.decode("utf-8", "replace")
    return any(pattern in text for pattern in NOISE)


def _forward(read_fd: int, write_fd: int) -> None:
    """Copy ``read_fd`` to ``write_fd`` until EOF, dropping noise lines. A partial line is held for at
    most 0.2 s (a noise line arrives whole in one write), so progress bars still redraw promptly."""
    pending = b""
    while True:
        ready, _, _ = select.select([read_fd], [], [], 0.2)
        if not ready:
            if pending:
                os.write(write_fd, pending)
                pending = b""
            continue
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        out = b"".join(line + b"\n" for line in lines if not is_noise(line))
        if pending and b"\r" in pending:  # a progress bar redrawing its line: never noise
            out += pending
            pending = b""
        if out:
            os.write(write_fd, out)
    if pending and not is_noise(pending):
        os.write(write_fd, pending)


@contextlib.contextmanager
def quiet_workers() -> Iterator[None]:
    """Within the block, this process's stderr (which local SDK workers inherit) drops Beam's noise."""
    install_log_filter()
    try:
        original = os.dup(2)
    except OSError:  # no stderr to filter
        yield
        return
    read_fd, write_fd = os.pipe()
    sys.stderr.flush()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    reader = threading.Thread(target=_forward, args=(read_fd, original), name="beam-stderr-filter", daemon=True)
    reader.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end once the workers have exited
        reader.join(timeout=5)
        os.close(original)
        if not reader.is_alive():
            os.close(read_fd)
