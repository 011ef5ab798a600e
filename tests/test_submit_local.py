"""Target local: 2 processes joined through the launch contract train like 1 process; dry run; a bad request
fails before anything starts; a killed process stops the other at once and the group resumes."""

import json
import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

from videopoet.cli.main import main
from videopoet.rundir.metrics import read_metrics
from videopoet.schemas import store
from videopoet.trainer import synthetic
from videopoet.trainer.config import load_train_config

OPT = os.environ.get("VIDEOPOET_TEST_XLA_OPT", "")
STEPS = 10
OVERRIDES = [f"steps={STEPS}", "log_every=1", "checkpoint_every=2", "data.mixture={t2v: 1.0, fp: 1.0}"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("root"))
    store.write_dataset(root, "syn", "1", {"a.tar": synthetic.make_records(16, load_train_config("tiny").model.vocab)})
    return root


def _submit(root, run_dir, processes, devices, *extra):
    argv = "submit train --target local --config tiny --data syn@1 --json".split()
    xla = f"XLA_FLAGS=--xla_force_host_platform_device_count={devices} {OPT}"
    argv += ["--run-dir", str(run_dir), "--root", root, "--processes-per-node", str(processes), "--env", xla]
    return main([*argv, *extra, *OVERRIDES])


@pytest.fixture(scope="module")
def reference(root, tmp_path_factory):
    """Losses of an uninterrupted 1-process x 2-device run."""
    run_dir = tmp_path_factory.mktemp("one") / "run"
    assert _submit(root, run_dir, 1, 2, "--max-restarts", "0") == 0
    return [r["loss"] for r in read_metrics(str(run_dir))]


def test_dry_run_writes_launch_script(root, tmp_path, capsys):
    rc = _submit(root, tmp_path / "run", 2, 1, "--dry-run", "--artifacts-dir", str(tmp_path / "art"))
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["submitted"] is False and res["artifacts"] == [str(tmp_path / "art" / "launch.sh")]
    script = open(tmp_path / "art" / "launch.sh").read()
    assert os.access(tmp_path / "art" / "launch.sh", os.X_OK)
    assert "VIDEOPOET_NUM_PROCESSES=2" in script and 'VIDEOPOET_PROCESS_ID="$i"' in script
    assert "seq 0 1" in script and "videopoet.cli.main train --config tiny" in script
    assert subprocess.run(["bash", "-n", str(tmp_path / "art" / "launch.sh")]).returncode == 0
    assert not os.path.exists(tmp_path / "run" / "checkpoints")  # nothing ran


def test_bad_request_fails_before_anything_starts(root, tmp_path, capsys):
    rc = _submit(root, tmp_path / "run", 3, 1)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "batch_size 4 does not split over 3 processes" in err
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.slow
def test_two_local_processes_match_one(root, reference, tmp_path, capsys):
    capsys.readouterr()
    assert _submit(root, tmp_path / "two", 2, 1, "--max-restarts", "0") == 0
    two = json.loads(capsys.readouterr().out)
    assert two["status"] == "completed" and two["detail"]["attempts"] == [[0, 0]]
    info = json.load(open(tmp_path / "two" / "run.json"))
    assert info["processes"] == 2 and info["devices"] == 2
    ident = info["identity"]
    assert ident["target"] == "local" and ident["resources"]["num_processes"] == 2
    assert ident["launch"]["scheduler"] == "local" and ident["launch"]["num_processes"] == 2
    assert ident["launch"]["run_name"] == "two" and info["config"]["steps"] == STEPS
    assert len(ident["packages"]["sha256"]) == 64 and ident["package_version"]
    got = [r["loss"] for r in read_metrics(str(tmp_path / "two"))]
    assert len(got) == STEPS
    np.testing.assert_allclose(got, reference, rtol=1e-5)  # same global batches; gloo's sum vs in-process
    assert sorted(os.listdir(tmp_path / "two" / "logs")) == ["local-0-0.log", "local-0-1.log"]


def _trainers(run_dir: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if b"train" in cmd and run_dir.encode() in cmd:
                pids.append(int(entry))
    return pids


@pytest.mark.slow
def test_a_killed_process_stops_the_group_which_restarts_and_resumes(root, reference, tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    box = {}
    thread = threading.Thread(
        target=lambda: box.update(rc=_submit(root, run_dir, 2, 1, "--max-restarts", "1", "--signal-grace", "5"))
    )
    thread.start()
    end = time.monotonic() + 300
    while not any(r["step"] >= 3 for r in read_metrics(run_dir)):
        assert time.monotonic() < end and thread.is_alive(), "the run did not reach step 3"
        time.sleep(0.02)
    pids = _trainers(run_dir)
    assert len(pids) == 2
    os.kill(max(pids), signal.SIGKILL)  # one member dies mid-run: the other must not hang in its collectives
    thread.join(timeout=400)
    assert not thread.is_alive() and box["rc"] == 0
    res = json.loads(capsys.readouterr().out)
    assert res["status"] == "completed" and res["detail"]["restarts"] == 1
    first, second = res["detail"]["attempts"]
    assert sorted(first)[-1] != 0 and second == [0, 0]
    info = json.load(open(os.path.join(run_dir, "run.json")))
    assert info["identity"]["launch"]["restart_count"] == 1
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # rows past the checkpoint were redone once
    np.testing.assert_allclose([r["loss"] for r in rows], reference, rtol=1e-5)
