"""Target local: 2 processes joined through the launch contract train like 1 process; dry run; a bad request
fails before anything starts; a killed process stops the other at once and the group resumes; a task adaptation
(--init-from) is checked before submitting and trains from the source's weights."""

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


def _lineage(video_fingerprint: str) -> dict:
    bits = int(np.log2(load_train_config("tiny").model.vocab.visual_size))
    ref = {"kind": "visual", "spec": "x", "name": "magvit2-x", "config": {"lfq_bits": bits}}
    return {"tokenizers": {"video": {**ref, "fingerprint": video_fingerprint}}}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("root"))
    recs = synthetic.make_records(16, load_train_config("tiny").model.vocab)
    store.write_dataset(root, "syn", "1", {"a.tar": recs}, lineage=_lineage("a" * 64))
    store.write_dataset(root, "syn-retok", "1", {"a.tar": recs}, lineage=_lineage("b" * 64))  # re-tokenized
    return root


def _submit(root, run_dir, processes, devices, *extra):
    argv = "submit train --target local --config tiny --data syn@1 --json".split()
    xla = f"XLA_FLAGS=--xla_force_host_platform_device_count={devices} {OPT}"
    argv += ["--run-dir", str(run_dir), "--root", root, "--processes-per-node", str(processes), "--env", xla]
    return main([*argv, *extra, *OVERRIDES])


@pytest.fixture(scope="module")
def reference_run(root, tmp_path_factory):
    """An uninterrupted 1-process x 2-device run."""
    run_dir = tmp_path_factory.mktemp("one") / "run"
    assert _submit(root, run_dir, 1, 2, "--max-restarts", "0") == 0
    return str(run_dir)


@pytest.fixture(scope="module")
def reference(reference_run):
    """Losses of the uninterrupted run."""
    return [r["loss"] for r in read_metrics(reference_run)]


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


def _adapt_dry_run(root, tmp_path, source, *extra, data="syn@1"):
    argv = ["submit", "train", "--target", "local", "--config", "tiny", "--data", data, "--root", root, "--json"]
    argv += ["--run-dir", str(tmp_path / "adapted"), "--dry-run", "--artifacts-dir", str(tmp_path / "art")]
    return main([*argv, "--init-from", source, *extra, *OVERRIDES])


@pytest.mark.slow
def test_an_adaptation_is_checked_before_submitting_and_resumes_from_its_own_checkpoints(
    root, reference_run, reference, tmp_path, capsys, monkeypatch
):
    capsys.readouterr()
    monkeypatch.chdir(os.path.dirname(reference_run))  # a relative source goes to the hosts made absolute
    assert _adapt_dry_run(root, tmp_path, os.path.basename(reference_run)) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["detail"]["init_from"]["run"] == reference_run and res["detail"]["init_from"]["step"] == STEPS
    assert res["command"][res["command"].index("--init-from") + 1] == reference_run
    assert f"--init-from {reference_run} --out" in open(tmp_path / "art" / "launch.sh").read()
    # refused here, in one line, before anything is submitted: what the hosts' trainer would refuse later
    refusals = [
        ((str(tmp_path / "nope"),), {}, "not a training run directory"),
        ((reference_run, "model.layers=3"), {}, "model.layers 2 != 3"),
        ((reference_run,), {"data": "syn-retok@1"}, f"video {'a' * 12} -> {'b' * 12}"),
    ]
    for args, kw, message in refusals:
        assert _adapt_dry_run(root, tmp_path, *args, **kw) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    grow_alone = ["submit", "train", "--target", "local", "--data", "syn@1", "--run-dir", str(tmp_path / "g"), "--grow"]
    assert main(grow_alone) == 2
    assert "--grow qualifies --init-from" in capsys.readouterr().err
    assert _adapt_dry_run(root, tmp_path, reference_run, "--allow-tokenizer-change", data="syn-retok@1") == 0
    res = json.loads(capsys.readouterr().out)
    cmd = res["command"]
    assert cmd[cmd.index("--init-from") : cmd.index("--out")] == [
        "--init-from",
        reference_run,
        "--allow-tokenizer-change",
    ]
    assert res["detail"]["init_from"]["tokenizers_changed"]["video"] == {"from": "a" * 64, "to": "b" * 64}
    # submitted: the adapted run starts from the source's weights (below the source run's own loss on the
    # same batches at every step), and a resubmission resumes from its own checkpoint, the source unread
    adapted = str(tmp_path / "adapted")
    argv = ["submit", "train", "--target", "local", "--config", "tiny", "--data", "syn@1", "--root", root]
    argv += ["--run-dir", adapted, "--json", "--max-restarts", "0", "--init-from", reference_run]
    assert main([*argv, *OVERRIDES]) == 0
    capsys.readouterr()
    info = json.load(open(os.path.join(adapted, "run.json")))
    assert info["init_from"]["step"] == STEPS and info["init_from"]["tokenizers"] == {"video": "a" * 64}
    losses = [r["loss"] for r in read_metrics(adapted)]
    assert all(a < r - 0.3 for a, r in zip(losses, reference, strict=True))  # the same batches, step by step
    os.rename(reference_run, reference_run + "-moved")
    try:
        assert _adapt_dry_run(root, tmp_path, reference_run) == 0  # the run dir has a checkpoint: no source check
        assert json.loads(capsys.readouterr().out)["detail"]["init_from"] is None
    finally:
        os.rename(reference_run + "-moved", reference_run)


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
