"""Target slurm against a real Slurm on 127.0.0.1: a 2-task tiny run, requeued mid-run, resumes in the same run
dir and ends with the losses of an uninterrupted run; status / logs / cancel through the CLI.

The fixture installs Debian's slurm-wlm + munge when missing (skips, saying why, only if that fails), starts a
private munged (its own socket) and slurmctld + slurmd from a generated slurm.conf in a temp dir, points
SLURM_CONF at it, and stops every daemon it started.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from ports import free_ports

from videopoet.cli.main import main
from videopoet.infra.targets import slurm as slurm_target
from videopoet.rundir.metrics import read_metrics
from videopoet.schemas import store
from videopoet.trainer import synthetic
from videopoet.trainer.config import load_train_config

OPT = os.environ.get("VIDEOPOET_TEST_XLA_OPT", "")
STEPS = 20
OVERRIDES = [f"steps={STEPS}", "log_every=1", "checkpoint_every=2", "data.mixture={t2v: 1.0, fp: 1.0}"]


def _install() -> str | None:
    """None when slurm + munge are there (installing them when missing), else why not."""
    if all(shutil.which(t) for t in ("slurmctld", "slurmd", "sbatch", "munged")):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "slurm-wlm/munge are missing and cannot be installed here (not root or no apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"]):
        out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
        if out.returncode != 0:
            return f"{' '.join(argv)} failed: {(out.stderr or out.stdout).strip().splitlines()[-1:]}"
    return None


def _wait(predicate, timeout: float, what: str, every: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _stop_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + 15
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read_pid(path: str) -> int | None:
    try:
        return int(open(path).read().strip())
    except (OSError, ValueError):
        return None


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    why = _install()
    if why:
        print(f"skipping the real-Slurm tests: {why}")
        pytest.skip(why)
    d = str(tmp_path_factory.mktemp("slurm"))
    for sub in ("state", "spool", "munge"):
        os.makedirs(os.path.join(d, sub))
    host = socket.gethostname()
    sock = os.path.join(d, "munge", "munge.socket")
    key = os.path.join(d, "munge", "munge.key")
    with open(key, "wb") as f:
        f.write(os.urandom(128))
    os.chmod(key, 0o400)
    started: list[int] = []
    munged = subprocess.run(
        [
            "munged",
            "--force",
            f"--socket={sock}",
            f"--key-file={key}",
            f"--pid-file={d}/munge/munged.pid",
            f"--log-file={d}/munge/munged.log",
            f"--seed-file={d}/munge/munged.seed",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert munged.returncode == 0, munged.stderr
    started.append(_wait(lambda: _read_pid(f"{d}/munge/munged.pid"), 10, "munged's pid file"))
    conf = os.path.join(d, "slurm.conf")
    ctld_port, slurmd_port = free_ports(2)
    with open(conf, "w") as f:
        f.write(
            "\n".join(
                [
                    "ClusterName=vptest",
                    f"SlurmctldHost={host}(127.0.0.1)",
                    "SlurmUser=root",
                    f"SlurmctldPort={ctld_port}",
                    f"SlurmdPort={slurmd_port}",
                    "AuthType=auth/munge",
                    f"AuthInfo=socket={sock}",
                    "CredType=cred/munge",
                    f"StateSaveLocation={d}/state",
                    f"SlurmdSpoolDir={d}/spool",
                    f"SlurmctldPidFile={d}/slurmctld.pid",
                    f"SlurmdPidFile={d}/slurmd.pid",
                    f"SlurmctldLogFile={d}/slurmctld.log",
                    f"SlurmdLogFile={d}/slurmd.log",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "MpiDefault=none",
                    "ReturnToService=2",
                    "KillWait=20",
                    "MinJobAge=600",
                    "SchedulerType=sched/backfill",
                    "SlurmctldTimeout=30",
                    f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN",
                    f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES",
                    "",
                ]
            )
        )
    mp = pytest.MonkeyPatch()
    mp.setenv("SLURM_CONF", conf)
    try:
        for daemon, pidfile in (("slurmctld", "slurmctld.pid"), ("slurmd", "slurmd.pid")):
            out = subprocess.run([daemon, "-f", conf], capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, f"{daemon}: {out.stderr}"
            started.append(_wait(lambda p=pidfile: _read_pid(os.path.join(d, p)), 30, f"{daemon}'s pid file"))
        _wait(
            lambda: "idle" in subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout,
            60,
            "the node to become idle",
            every=0.5,
        )
        yield {"dir": d, "conf": conf}
    finally:
        subprocess.run(["scancel", "--full", "--user=root"], capture_output=True, timeout=30)
        for pid in reversed(started):  # slurmd, slurmctld, munged
            _stop_pid(pid)
        mp.undo()


def _state(job: str) -> str:
    return slurm_target.status(job)["state"]


def _pids_of(run_dir: str) -> list[int]:
    """The trainer processes of this run (started by the Slurm job of this test)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if cmd[0] == sys.executable.encode() and b"train" in cmd and run_dir.encode() in cmd:
                pids.append(int(entry))
    return pids


def _latest_checkpoint(run_dir: str) -> int:
    path = os.path.join(run_dir, "checkpoints")
    return max((int(n) for n in os.listdir(path) if n.isdigit()), default=0) if os.path.isdir(path) else 0


def _pause(run_dir: str, after_step: int, not_pids: tuple[int, ...] = ()) -> tuple[list[int], int]:
    """Once ``after_step`` is logged while two trainer processes of this attempt (none of ``not_pids``, the
    previous attempt's) run, SIGSTOP them (so an interruption lands before the end of this short run); returns
    their pids and the last logged step."""

    def ready():
        pids = [pid for pid in _pids_of(run_dir) if pid not in not_pids]
        logged = any(r["step"] >= after_step for r in read_metrics(run_dir))
        return pids if len(pids) == 2 and logged else None

    pids = _wait(ready, 240, f"step {after_step} with two new trainer processes", every=0.02)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    at = max(r["step"] for r in read_metrics(run_dir))
    assert at < STEPS
    return pids, at


def _node_state() -> str:
    return subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=30).stdout.strip()


def _start_now(job: str, restarts: int) -> None:
    """A requeued job waits (BeginTime) for minutes; start it at once."""
    _wait(lambda: slurm_target.status(job)["restarts"] == restarts and _state(job) == "PENDING", 60, "the requeue")
    # the node must have finished the previous attempt (its batch shell exits after the requeue): started on a
    # node still completing it, slurmd refuses to launch the batch script ("already killed") and the job fails
    _wait(lambda: _node_state() == "idle", 120, "the node to finish the previous attempt", every=0.5)
    # slurmd revokes the previous attempt's credential as it cleans up, and compares times in whole seconds: a
    # credential issued within the same second reads as revoked ("Job credential revoked") and the job fails
    time.sleep(2)
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], check=True, capture_output=True, timeout=30)


@pytest.mark.slow
def test_slurm_requeue_resumes_with_the_same_losses(slurm, tmp_path, capsys):
    root = str(tmp_path / "root")
    store.write_dataset(root, "syn", "1", {"a.tar": synthetic.make_records(16, load_train_config("tiny").model.vocab)})
    base = {k: v for k, v in os.environ.items() if not k.startswith("VIDEOPOET_")}
    # the uninterrupted reference: one process with 2 devices, alongside the Slurm job
    cmd = f"{sys.executable} -m videopoet.cli.main train --config tiny --data syn@1 --json".split()
    ref = subprocess.Popen(
        [*cmd, "--root", root, "--out", str(tmp_path / "ref"), *OVERRIDES],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**base, "XLA_FLAGS": f"--xla_force_host_platform_device_count=2 {OPT}"},
    )
    run_dir = str(tmp_path / "run")
    argv = "submit train --target slurm --name vp-tiny --config tiny --data syn@1 --processes-per-node 2 --json"
    program = f"{sys.executable} -m videopoet.cli.main"
    xla = f"XLA_FLAGS=--xla_force_host_platform_device_count=1 {OPT}"
    rc = main([*argv.split(), "--run-dir", run_dir, "--root", root, "--program", program, "--env", xla, *OVERRIDES])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["submitted"] and res["job_id"].isdigit()
    job = res["job_id"]
    assert json.load(open(os.path.join(run_dir, "submit.json")))["job_id"] == job

    # 1. scontrol requeue mid-run: Slurm sends SIGCONT + SIGTERM to the tasks, the trainer saves at a step both
    # processes agree on, the job is requeued (--requeue) and resumes in the same run dir
    first, paused_1 = _pause(run_dir, 3)
    subprocess.run(["scontrol", "requeue", job], check=True, capture_output=True, timeout=30)
    _start_now(job, 1)
    # the stopped attempt may go on a few steps to the step both processes agree to save at: the requeued
    # attempt's own rows begin after that checkpoint
    resumed = _latest_checkpoint(run_dir)
    # 2. the time limit is near: Slurm's --signal=B:USR1 reaches the batch shell, which sends SIGTERM to the step,
    # and once the trainer has saved and exited 143 the script requeues the job itself
    pids, paused_2 = _pause(run_dir, resumed + 3, not_pids=tuple(first))
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True, capture_output=True, timeout=30)
    time.sleep(2)  # the trap's SIGTERM is pending on the stopped tasks
    for pid in pids:
        os.kill(pid, signal.SIGCONT)
    _start_now(job, 2)
    _wait(lambda: _state(job) in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), 240, "the job to end", every=1)
    st = slurm_target.status(job)
    out_log = open(os.path.join(run_dir, "logs", f"slurm-{job}.out")).read()
    err_log = open(os.path.join(run_dir, "logs", f"slurm-{job}.err")).read()
    assert st["state"] == "COMPLETED", (st, out_log[-2000:], err_log[-3000:])
    assert st["restarts"] == 2
    # the same run dir, resumed each time from the checkpoint the SIGTERM wrote (not from scratch)
    assert all(f"restart {n} " in err_log for n in range(3)) and "requeueing" in err_log
    # both tasks print their result: each interruption stopped the two processes at the same step
    saved = [int(part.split()[0]) for part in out_log.split("sigterm at step ")[1:]]
    assert len(saved) == 4 and saved[0] == saved[1] and saved[2] == saved[3], saved
    assert paused_1 <= saved[0] < paused_2 <= saved[2] < STEPS, (saved, paused_1, paused_2)
    assert f"completed at step {STEPS}" in out_log
    info = json.load(open(os.path.join(run_dir, "run.json")))
    launch = info["identity"]["launch"]
    assert launch["scheduler"] == "slurm" and launch["num_processes"] == 2 and launch["restart_count"] == 2
    assert launch["run_name"] == "vp-tiny" and info["identity"]["job_id"] == job
    assert info["identity"]["resources"]["processes_per_node"] == 2
    # losses: one row per step (each attempt went on from the saved step) equal to the reference's
    _, ref_err = ref.communicate(timeout=300)
    assert ref.returncode == 0, ref_err[-2000:]
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    want = [r["loss"] for r in read_metrics(str(tmp_path / "ref"))]
    np.testing.assert_allclose([r["loss"] for r in rows], want, rtol=1e-5)

    # the CLI's status / logs; cancel on a job that is still running
    assert main(["submit", "status", job, "--target", "slurm", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "COMPLETED"
    assert main(["submit", "logs", job, "--target", "slurm", "--tail", "3"]) == 0
    assert f"completed at step {STEPS}" in capsys.readouterr().out
    sleep = ["sbatch", "--parsable", "--wrap", "sleep 120", f"--output={tmp_path}/sleep.out"]
    sleeper = subprocess.run(sleep, capture_output=True, text=True, check=True).stdout.strip()
    _wait(lambda: _state(sleeper) == "RUNNING", 60, "the sleeper to run")
    assert main(["submit", "cancel", sleeper, "--target", "slurm"]) == 0
    _wait(lambda: _state(sleeper) == "CANCELLED", 60, "the sleeper to be cancelled")
    assert main(["submit", "status", "999999", "--target", "slurm"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "999999" in err


def test_sbatch_script_fields(tmp_path):
    from videopoet.infra.request import SubmitRequest

    req = SubmitRequest(
        kind="train",
        target="slurm",
        name="big",
        run_dir=str(tmp_path / "r"),
        config="tiny",
        data="syn@1",
        nodes=4,
        processes_per_node=2,
        gpus_per_node=8,
        queue="gpu",
        time_limit="2-00:00:00",
        signal_grace_s=300,
        max_restarts=5,
        extra_args=("--account=p",),
        env=(("NCCL_DEBUG", "WARN"),),
    )
    (art,) = slurm_target.render(req)
    lines = art.text.splitlines()
    directives = [line.split(" ", 1)[1] for line in lines if line.startswith("#SBATCH ")]
    logs = str(tmp_path / "r" / "logs")
    assert directives == [
        "--job-name=big",
        "--nodes=4",
        "--ntasks-per-node=2",
        "--requeue",
        "--open-mode=append",
        "--signal=B:USR1@300",
        f"--output={logs}/slurm-%j.out",
        f"--error={logs}/slurm-%j.err",
        "--gpus-per-task=4",
        "--partition=gpu",
        "--time=2-00:00:00",
        "--account=p",
    ]
    assert "export NCCL_DEBUG=WARN" in lines and "-lt 5 ]; then" in art.text
    srun = next(line for line in lines if line.startswith("srun "))
    assert srun.startswith("srun --kill-on-bad-exit=1 videopoet train --config tiny --data syn@1 --out ")
    assert subprocess.run(["bash", "-n"], input=art.text, text=True).returncode == 0
    with pytest.raises(Exception, match="does not split over 3 processes per node"):
        slurm_target.render(
            SubmitRequest(
                kind="train", target="slurm", name="x", run_dir="r", data="d@1", processes_per_node=3, gpus_per_node=8
            )
        )
    with pytest.raises(Exception, match="not a Slurm time"):
        slurm_target.check(
            SubmitRequest(kind="train", target="slurm", name="x", run_dir="r", data="d@1", time_limit="soon")
        )
