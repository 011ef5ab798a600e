"""Beam's start-up chatter is dropped; every other line (and progress-bar redraws) passes unchanged."""

import logging
import os
import threading

from videopoet.pipelines.beam import quiet


def _run_forward(chunks: list[bytes]) -> bytes:
    src_r, src_w = os.pipe()
    dst_r, dst_w = os.pipe()
    thread = threading.Thread(target=quiet._forward, args=(src_r, dst_w))
    thread.start()
    for chunk in chunks:
        os.write(src_w, chunk)
    os.close(src_w)
    thread.join(timeout=10)
    assert not thread.is_alive()
    os.close(dst_w)
    out = b""
    while True:
        block = os.read(dst_r, 65536)
        if not block:
            break
        out += block
    os.close(src_r)
    os.close(dst_r)
    return out


def test_forward_drops_exactly_the_noise_lines():
    chunks = [
        b"INFO:__main__:Logging handler created.\n",
        b"WARNING:__main__:No semi_persistent_directory found:  User registered objects\n",
        b"a real warning: shard x.tar has no video\nWARNING:apache_beam.options.pipeline_options:Discarding",
        b" unparseable args: ['--pipeline_type_check']\n",
        b"\rshards:  50%|#####     | 1/2",
        b"\rshards: 100%|##########| 2/2\n",
        b"WARNING:root:apitools not found, and bigquery client libraries are not available despite ...\n",
        b"last line without newline",
    ]
    out = _run_forward(chunks)
    assert out == (
        b"a real warning: shard x.tar has no video\n"
        b"\rshards:  50%|#####     | 1/2\rshards: 100%|##########| 2/2\n"
        b"last line without newline"
    )


def test_log_filter_drops_noise_and_keeps_real_warnings(caplog):
    quiet.install_log_filter()
    quiet.install_log_filter()  # idempotent
    assert logging.getLogger().filters.count(quiet._FILTER) == 1
    relay = logging.getLogger("apache_beam.runners.portability.local_job_service")
    with caplog.at_level(logging.WARNING):
        logging.getLogger().warning("apitools not found, and bigquery client libraries are not available despite it")
        relay.warning('Worker: severity: WARN message: "Discarding unparseable args: []"')
        relay.warning("Worker: severity: ERROR message: a DoFn failed")
    assert [r.getMessage() for r in caplog.records] == ["Worker: severity: ERROR message: a DoFn failed"]
