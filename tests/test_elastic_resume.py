"""Elastic resume: a run checkpointed on one shape resumes on another with the same global batches and losses.

Shapes: 2 jax.distributed processes x 4 fake CPU devices -> 1 process x 8 devices, and the same checkpoint
-> 1 process x 4 devices (8 devices -> 4). Tolerance: rtol 1e-5 on the loss (float32; the cross-device
reduction order changes with the mesh and between in-process and gloo collectives). Also: a checkpoint in the
older layout (with per-process Grain iterator states) still resumes.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from videopoet.rundir.metrics import read_metrics
from videopoet.schemas import store
from videopoet.trainer import synthetic
from videopoet.trainer.config import load_train_config

OPT = os.environ.get("VIDEOPOET_TEST_XLA_OPT", "")
STEPS, STOP = 6, 3
OVERRIDES = [
    f"steps={STEPS}",
    "batch_size=8",
    "log_every=1",
    "checkpoint_every=100",
    "data.mixture={t2v: 1.0, fp: 1.0}",
]
RTOL = 1e-5


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("root"))
    store.write_dataset(root, "syn", "1", {"a.tar": synthetic.make_records(16, load_train_config("tiny").model.vocab)})
    return root


def _train(root, out, devices, *extra, process=None):
    """Popen of `videopoet train` with ``devices`` fake CPU devices; ``process`` = (id, count, port)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDEOPOET_")}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {OPT}")
    if process is not None:
        pid, count, port = process
        env.update(
            VIDEOPOET_COORDINATOR=f"127.0.0.1:{port}", VIDEOPOET_NUM_PROCESSES=str(count), VIDEOPOET_PROCESS_ID=str(pid)
        )
    argv = [
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
        str(out),
        "--json",
        *extra,
        *OVERRIDES,
    ]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _done(procs) -> dict:
    outs = [p.communicate(timeout=500) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    out = outs[0][0]
    return json.loads(out[out.index("{") :])  # gloo may print a line first


def _losses(run_dir) -> list[float]:
    rows = read_metrics(str(run_dir))
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    return [r["loss"] for r in rows]


@pytest.mark.slow
def test_two_by_four_resumes_on_one_by_eight_and_on_four_devices(root, tmp_path):
    port = _port()
    ref = _train(root, tmp_path / "ref", 8)  # uninterrupted, 1 process x 8 devices
    part = [_train(root, tmp_path / "two", 4, "--stop-after-step", str(STOP), process=(i, 2, port)) for i in range(2)]
    res = _done(part)
    assert res["status"] == "stopped" and res["checkpoint"] == STOP
    meta = json.load(open(tmp_path / "two" / "checkpoints" / str(STOP) / "meta" / "metadata"))
    assert meta["processes"] == 2 and meta["devices"] == 8
    shutil.copytree(tmp_path / "two", tmp_path / "four")
    # 2 processes x 4 devices -> 1 process x 8 devices, and the same checkpoint -> 1 process x 4 devices
    on8, on4 = _train(root, tmp_path / "two", 8), _train(root, tmp_path / "four", 4)
    r8, r4 = _done([on8]), _done([on4])
    assert _done([ref])["status"] == "completed"
    want = _losses(tmp_path / "ref")
    for r, run, devices in ((r8, "two", 8), (r4, "four", 4)):
        assert r["status"] == "completed" and r["resumed_from"] == STOP and r["step"] == STEPS
        info = json.load(open(tmp_path / run / "run.json"))
        assert info["processes"] == 1 and info["devices"] == devices
        got = _losses(tmp_path / run)
        print(
            f"elastic resume -> {devices} devices: max relative loss difference "
            f"{np.max(np.abs(np.subtract(got, want)) / np.abs(want)):.2e}, exact steps {np.equal(got, want).tolist()}"
        )
        np.testing.assert_allclose(got, want, rtol=RTOL)
        # the same global batches: the logged task/group mix of every step equals the reference's
        ref_rows, rows = read_metrics(str(tmp_path / "ref")), read_metrics(str(tmp_path / run))
        assert [r["groups"] for r in rows] == [r["groups"] for r in ref_rows]
        assert [sorted(r["tasks"]) for r in rows] == [sorted(r["tasks"]) for r in ref_rows]


def test_old_checkpoint_with_grain_state_still_resumes(root, tmp_path):
    """A checkpoint laid out as before (state + meta + per-process Grain iterator state) resumes; the data
    position comes from the step."""
    from videopoet.rundir.loop import Hook
    from videopoet.trainer import checkpoint, train
    from videopoet.trainer import data as trainer_data

    cfg = load_train_config(
        "tiny", ["steps=4", "log_every=1", "checkpoint_every=100", "data.mixture={t2v: 1.0, fp: 1.0}"]
    )
    train.train(cfg, "syn@1", str(tmp_path / "full"), root=root)
    stop_at_2 = Hook(lambda info: info.run.request_stop() if info.step == 2 else None)
    part = train.train(cfg, "syn@1", str(tmp_path / "part"), root=root, hooks=[stop_at_2])
    assert part["checkpoint"] == 2
    old = tmp_path / "old"
    old.mkdir()
    for name in ("config.yaml", "run.json", "metrics.jsonl"):
        shutil.copy(tmp_path / "part" / name, old / name)
    with checkpoint.open_checkpoints(str(tmp_path / "part"), cfg) as src:
        state, meta = src.restore(2, train._trainer(cfg).abstract_state(), meta=True)
    _, mix = trainer_data.open_mixture("syn@1", cfg, root)
    it = iter(mix.dataset(0))
    next(it), next(it)  # the old code saved the iterator after the 2 batches it had served
    with checkpoint.open_checkpoints(str(old), cfg) as dst:
        dst.save(2, state, meta=meta, data_iter=it)  # the old layout: a "data" item beside state and meta
    assert "data" in os.listdir(old / "checkpoints" / "2")
    resumed = train.train(cfg, "syn@1", str(old), root=root)
    assert resumed["resumed_from"] == 2 and resumed["step"] == 4
    a = [r["loss"] for r in read_metrics(str(tmp_path / "full"))]
    b = [r["loss"] for r in read_metrics(str(old))]
    assert b == a  # same shape: bit for bit
