"""Target ray: the Jobs API submission and the KubeRay RayJob rendered and checked; then, on a real two-node
Ray cluster on 127.0.0.1, two processes train through the Jobs API, a training worker SIGKILLed mid-run
fails the job fast (the other process is stopped, nothing hangs), a resubmission resumes from the run dir's
checkpoint, stopping the job makes both trainers save (SIGTERM) and a last resubmission runs to the end.
(The pipeline through the Jobs API on a two-node cluster: tests/test_ray_pipeline.py.)

Every Ray process binds to 127.0.0.1 and is stopped by the fixture that started it.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import yaml

from videopoet.infra import ray_driver, targets
from videopoet.infra.request import RequestError, SubmitRequest, pipeline_argv
from videopoet.infra.targets import ray as ray_target
from videopoet.rundir.metrics import read_metrics
from videopoet.schemas import store
from videopoet.trainer import synthetic
from videopoet.trainer.config import load_train_config

BIN = os.path.dirname(sys.executable)
STEPS = 24
OVERRIDES = (f"steps={STEPS}", "log_every=1", "checkpoint_every=2", "data.mixture={t2v: 1.0, fp: 1.0}")
# KubeRay ray.io/v1 field names (ray-project/kuberay ray-operator/apis/ray/v1/rayjob_types.go, raycluster_types.go)
RAYJOB_SPEC = {
    "activeDeadlineSeconds",
    "backoffLimit",
    "rayClusterSpec",
    "submitterPodTemplate",
    "metadata",
    "clusterSelector",
    "submitterConfig",
    "managedBy",
    "deletionStrategy",
    "entrypoint",
    "runtimeEnvYAML",
    "jobId",
    "submissionMode",
    "entrypointResources",
    "entrypointNumCpus",
    "entrypointNumGpus",
    "ttlSecondsAfterFinished",
    "shutdownAfterJobFinishes",
    "suspend",
    "schedule",
}
WORKER_GROUP = {
    "groupName",
    "replicas",
    "minReplicas",
    "maxReplicas",
    "idleTimeoutSeconds",
    "numOfHosts",
    "rayStartParams",
    "template",
    "scaleStrategy",
    "suspend",
}


def _request(tmp_path, **kw) -> SubmitRequest:
    base = {
        "kind": "train",
        "target": "ray",
        "name": "vp-ray",
        "run_dir": str(tmp_path / "run"),
        "config": "tiny",
        "overrides": ("batch_size=64",),
        "data": "synth@v1",
        "nodes": 2,
        "verify_data": False,
        "image": "img:1",
    }
    base.update(kw)
    return SubmitRequest(**base)


def _validate_pod(template: dict) -> None:
    import kubernetes_validate

    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": template["spec"]}
    kubernetes_validate.validate(pod, "1.31", strict=True)


def test_rendered_job_and_rayjob(tmp_path):
    req = _request(tmp_path, accelerator="v5e-16", nodes=1, slices=2, overrides=("batch_size=256",), max_restarts=2)
    targets.preflight(req)
    art = {a.name: a.text for a in ray_target.render(req)}
    job = json.loads(art["ray-job.json"])
    argv = shlex.split(job["entrypoint"])
    assert argv[:4] == ["python", "-m", "videopoet.infra.ray_driver", "--spec"]
    spec = json.loads(argv[4])
    assert spec["num_processes"] == 8 and spec["strategy"] == "STRICT_SPREAD"  # 2 slices x 4 hosts
    assert spec["resources_per_worker"] == {"TPU": 4}
    assert ray_driver.bundles(spec) == [{"CPU": 1.0, "TPU": 4.0}] * 8
    assert spec["argv"][:2] == ["videopoet", "train"] and spec["argv"][spec["argv"].index("--out") + 1] == req.run_dir
    assert job["runtime_env"]["env_vars"] == {"RAY_JOB_STOP_WAIT_TIME_S": str(req.signal_grace_s + 30)}
    env = ray_driver.worker_env(spec, "10.0.0.2:1234", 7)
    assert env["VIDEOPOET_COORDINATOR"] == "10.0.0.2:1234" and env["VIDEOPOET_PROCESS_ID"] == "7"
    assert env["VIDEOPOET_NUM_PROCESSES"] == "8" and env["VIDEOPOET_SCHEDULER"] == "ray"
    from videopoet.infra import launch

    assert launch.detect(env).num_processes == 8 and launch.detect(env).scheduler == "ray"

    doc = yaml.safe_load(art["rayjob.yaml"])
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob"
    assert set(doc["spec"]) <= RAYJOB_SPEC
    assert doc["spec"]["entrypoint"] == job["entrypoint"] and doc["spec"]["backoffLimit"] == 2
    assert doc["spec"]["shutdownAfterJobFinishes"] is True
    cluster = doc["spec"]["rayClusterSpec"]
    (wg,) = cluster["workerGroupSpecs"]
    assert set(wg) <= WORKER_GROUP
    assert wg["replicas"] == wg["minReplicas"] == wg["maxReplicas"] == 2 and wg["numOfHosts"] == 4
    pod = wg["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"google.com/tpu": "4"}
    assert pod["nodeSelector"]["cloud.google.com/gke-tpu-topology"] == "4x4"
    _validate_pod(wg["template"])
    _validate_pod(cluster["headGroupSpec"]["template"])

    pipe = _request(tmp_path, kind="pipeline", runner="ray", input="gs://b/wds/*.tar", data="synth@v2", workers=8)
    assert ray_target.entrypoint(pipe) == shlex.join(pipeline_argv(pipe))  # the pipeline: the same command
    assert "--runner ray" in ray_target.entrypoint(pipe)

    gpu = _request(tmp_path, accelerator="h100-80gb", nodes=2, processes_per_node=8)
    spec = json.loads(shlex.split(ray_target.entrypoint(gpu))[4])
    assert spec["num_processes"] == 16 and spec["gpus_per_worker"] == 1 and spec["strategy"] == "SPREAD"


def test_bad_ray_requests(tmp_path, monkeypatch):
    with pytest.raises(RequestError, match="--runner ray"):
        targets.preflight(_request(tmp_path, kind="pipeline", input="x/*.tar", runner="beam"))
    with pytest.raises(RequestError, match="does not split over 3 processes"):
        targets.preflight(_request(tmp_path, nodes=3))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(RequestError, match="set \\$RAY_ADDRESS"):
        targets.submit(_request(tmp_path))


# ------------------------------------------------------------------------------ a real two-node cluster
@pytest.fixture
def cluster(ray_cluster_session):
    """The session's two-node cluster on 127.0.0.1 (tests/ray_cluster.py), 2 CPUs per node."""
    return ray_cluster_session


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("root"))
    store.write_dataset(root, "syn", "1", {"a.tar": synthetic.make_records(16, load_train_config("tiny").model.vocab)})
    return root


def _submit(cluster, root, run_dir) -> str:
    argv = [
        os.path.join(BIN, "videopoet"),
        "submit",
        "train",
        "--target",
        "ray",
        "--run-dir",
        str(run_dir),
        "--config",
        "tiny",
        "--data",
        "syn@1",
        "--root",
        root,
        "--nodes",
        "2",
        "--json",
        *OVERRIDES,
    ]
    env = dict(cluster["env"], RAY_ADDRESS=cluster["dashboard"])
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout[out.stdout.index("{\n") :])
    assert res["submitted"] and res["target"] == "ray"
    return res["job_id"]


def _wait(job: str, limit_s: float) -> tuple[str, float]:
    t0 = time.time()
    while time.time() - t0 < limit_s:
        state = ray_target.status(job)["state"]
        if state in ("SUCCEEDED", "FAILED", "STOPPED"):
            return state, time.time() - t0
        time.sleep(0.5)
    raise AssertionError(f"job {job} still running after {limit_s} s:\n{ray_target.logs(job, tail=40)}")


def _trainers(run_dir) -> list[int]:
    """PIDs of the `videopoet train` processes writing to ``run_dir``."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"train" in argv and str(run_dir).encode() in argv and b"submit" not in argv:
            pids.append(int(pid))
    return pids


@pytest.mark.slow
def test_two_workers_train_fail_fast_and_resume(cluster, root, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", cluster["dashboard"])
    # two processes train; one of them SIGKILLed mid-run fails the job fast, with no training process left
    run = tmp_path / "run"
    job = _submit(cluster, root, run)
    deadline = time.time() + 300
    while time.time() < deadline and not (os.path.isdir(run / "checkpoints") and len(read_metrics(str(run))) >= 3):
        assert ray_target.status(job)["state"] in ("PENDING", "RUNNING"), ray_target.logs(job, tail=60)
        time.sleep(0.2)
    pids = _trainers(run)
    assert len(pids) == 2, pids
    os.kill(pids[1], signal.SIGKILL)
    state, took = _wait(job, 60)
    assert state == "FAILED" and took < 30, (state, took)
    log = ray_target.logs(job)
    assert "training worker 1 exited with status -9" in log and "stopped the other 1 worker(s)" in log
    time.sleep(1)
    assert _trainers(run) == []
    before = read_metrics(str(run))
    assert before[0]["step"] == 1 and before[-1]["step"] < STEPS

    # resubmitted, it resumes; stopping the job (ray job stop) SIGTERMs the trainers, which save and exit 143
    job = _submit(cluster, root, run)
    deadline = time.time() + 300
    while time.time() < deadline and len(read_metrics(str(run))) < before[-1]["step"] + 2:
        assert ray_target.status(job)["state"] in ("PENDING", "RUNNING"), ray_target.logs(job, tail=60)
        time.sleep(0.2)
    ray_target.cancel(job)
    state, _ = _wait(job, 120)
    log = ray_target.logs(job)
    assert state == "STOPPED" and "stopped on SIGTERM; exit statuses [143, 143]" in log, log[-3000:]
    saved = max(int(d) for d in os.listdir(run / "checkpoints") if d.isdigit())
    assert saved == read_metrics(str(run))[-1]["step"] < STEPS  # saved at the step it stopped at

    # resubmitted again, it resumes from that checkpoint (not from step 1) and runs to the end
    job = _submit(cluster, root, run)
    state, _ = _wait(job, 300)
    assert state == "SUCCEEDED", ray_target.logs(job, tail=60)
    after = read_metrics(str(run))
    assert [r["step"] for r in after] == list(range(1, STEPS + 1))  # each step logged once
    assert after[:2] == before[:2]  # the first steps' rows (wall times included) are the killed run's: not rerun
    with open(run / "run.json") as f:
        info = json.load(f)
    assert info["processes"] == 2 and info["identity"]["launch"]["scheduler"] == "ray"
