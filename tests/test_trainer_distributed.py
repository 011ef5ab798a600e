"""Two real processes joined with jax.distributed on 127.0.0.1 train like one process with 2 devices."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from videopoet.rundir.metrics import read_metrics
from videopoet.schemas import store
from videopoet.trainer import synthetic
from videopoet.trainer.config import load_train_config


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cmd(root, out):
    return [
        sys.executable,
        "-m",
        "videopoet.cli.main",
        "train",
        "--config",
        "tiny",
        "--data",
        "syn@1",
        "--root",
        root,
        "--out",
        out,
        "--json",
        "steps=4",
        "log_every=1",
        "checkpoint_every=2",
        "mesh.data=-1",
        "data.mixture={t2v: 1.0, fp: 1.0}",
    ]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    root = str(tmp_path / "root")
    store.write_dataset(root, "syn", "1", {"a.tar": synthetic.make_records(16, load_train_config("tiny").model.vocab)})
    base = {k: v for k, v in os.environ.items() if not k.startswith("VIDEOPOET_")}
    base["JAX_PLATFORMS"] = "cpu"
    opt = os.environ.get("VIDEOPOET_TEST_XLA_OPT", "")  # conftest's compile-speed flag (VIDEOPOET_* is dropped above)
    # reference: one process, 2 local devices
    one = subprocess.run(
        _cmd(root, str(tmp_path / "one")),
        capture_output=True,
        text=True,
        timeout=500,
        env={**base, "XLA_FLAGS": f"--xla_force_host_platform_device_count=2 {opt}"},
    )
    assert one.returncode == 0, one.stderr[-3000:]
    port = _port()
    procs = []
    for pid in range(2):
        env = {
            **base,
            "XLA_FLAGS": f"--xla_force_host_platform_device_count=1 {opt}",
            "VIDEOPOET_COORDINATOR": f"127.0.0.1:{port}",
            "VIDEOPOET_NUM_PROCESSES": "2",
            "VIDEOPOET_PROCESS_ID": str(pid),
        }
        procs.append(
            subprocess.Popen(
                _cmd(root, str(tmp_path / "two")), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
        )
    outs = [p.communicate(timeout=500) for p in procs]
    for p, (_, e) in zip(procs, outs, strict=True):
        assert p.returncode == 0, e[-3000:]
    stdout = outs[0][0]
    res = json.loads(stdout[stdout.index("\n{") + 1 :] if not stdout.startswith("{") else stdout)  # gloo prints a line
    assert res["status"] == "completed" and res["step"] == 4
    info = json.load(open(tmp_path / "two" / "run.json"))
    assert info["processes"] == 2 and info["devices"] == 2
    a = [r["loss"] for r in read_metrics(str(tmp_path / "one"))]
    b = [r["loss"] for r in read_metrics(str(tmp_path / "two"))]
    assert len(a) == len(b) == 4
    np.testing.assert_allclose(b, a, rtol=1e-5)
    # no per-process iterator state: the checkpoint does not tie the run to 2 processes (tests/test_elastic_resume.py)
    assert set(os.listdir(tmp_path / "two" / "checkpoints" / "4")) >= {"state", "meta"}
    assert "data" not in os.listdir(tmp_path / "two" / "checkpoints" / "4")
