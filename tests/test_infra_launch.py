"""The launch contract: each scheduler's recorded environment -> LaunchSpec; precedence; host lists; requests."""

import json
import os

import pytest

from videopoet.infra import launch, request, targets
from videopoet.infra.launch import LaunchError, LaunchSpec
from videopoet.infra.request import RequestError, SubmitRequest

# environments as the schedulers set them (trimmed to the variables that matter plus some noise)
SLURM_ENV = {  # srun task 1 of 2 in an sbatch job on two nodes (Slurm 22.05)
    "SLURM_JOB_ID": "4242",
    "SLURM_JOBID": "4242",
    "SLURM_JOB_NAME": "vp-tiny",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "1",
    "SLURM_NTASKS": "2",
    "SLURM_NPROCS": "2",
    "SLURM_JOB_NODELIST": "gpu[07-08]",
    "SLURM_NODELIST": "gpu[07-08]",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_RESTART_COUNT": "1",
    "SLURM_SUBMIT_DIR": "/home/u",
    "SLURM_CLUSTER_NAME": "c",
}
JOBSET_ENV = {  # pod 1 of slice 1 in a 2-slice TPU JobSet (GKE also sets the TPU_* variables, per slice)
    "JOBSET_NAME": "vp-8b",
    "REPLICATED_JOB_NAME": "slice",
    "JOB_INDEX": "1",
    "JOB_COMPLETION_INDEX": "1",
    "VIDEOPOET_HOSTS_PER_SLICE": "4",
    "VIDEOPOET_NUM_SLICES": "2",
    "VIDEOPOET_RESTART_COUNT": "2",
    "TPU_WORKER_ID": "1",
    "TPU_WORKER_HOSTNAMES": "vp-8b-slice-1-0.vp-8b,vp-8b-slice-1-1.vp-8b",
    "HOSTNAME": "vp-8b-slice-1-1",
    "KUBERNETES_SERVICE_HOST": "10.0.0.1",
}
TPU_VM_ENV = {  # worker 2 of a v5p-32 (4 hosts) Cloud TPU VM
    "TPU_WORKER_ID": "2",
    "TPU_WORKER_HOSTNAMES": "10.130.0.5,10.130.0.6,10.130.0.7,10.130.0.8",
    "TPU_ACCELERATOR_TYPE": "v5p-32",
    "TPU_SKIP_MDS_QUERY": "1",
}
LOCAL_ENV = {  # set by videopoet submit --target local
    "VIDEOPOET_SCHEDULER": "local",
    "VIDEOPOET_COORDINATOR": "127.0.0.1:41234",
    "VIDEOPOET_NUM_PROCESSES": "2",
    "VIDEOPOET_PROCESS_ID": "1",
    "VIDEOPOET_RUN_NAME": "tiny-run",
    "VIDEOPOET_RESTART_COUNT": "0",
}


def test_single_process_without_any_scheduler():
    spec = launch.detect({"HOME": "/root", "PATH": "/usr/bin"})
    assert spec == LaunchSpec()
    assert spec.num_processes == 1 and spec.coordinator_address is None and spec.is_lead
    assert launch.initialize(spec) is False  # nothing to join


def test_local_and_ray():
    assert launch.detect(LOCAL_ENV) == LaunchSpec("local", "127.0.0.1:41234", 2, 1, "tiny-run", 0, 0, 1)
    ray = {**LOCAL_ENV, "VIDEOPOET_SCHEDULER": "ray", "VIDEOPOET_RESTART_COUNT": "3"}
    assert launch.detect(ray) == LaunchSpec("ray", "127.0.0.1:41234", 2, 1, "tiny-run", 3, 0, 1)


def test_slurm():
    spec = launch.detect(SLURM_ENV)
    port = launch.SLURM_PORT_BASE + 4242 % launch.SLURM_PORT_SPAN
    assert spec == LaunchSpec("slurm", f"gpu07:{port}", 2, 1, "vp-tiny", 1, 0, 1)
    assert launch.detect({**SLURM_ENV, "VIDEOPOET_COORDINATOR_PORT": "5000"}).coordinator_address == "gpu07:5000"
    # a requeued job keeps its id, hence its port; another job gets another port
    other = launch.detect({**SLURM_ENV, "SLURM_JOB_ID": "4243", "SLURM_RESTART_COUNT": "0"})
    assert other.coordinator_address == f"gpu07:{port + 1}" and other.restart_count == 0


def test_jobset_multislice():
    spec = launch.detect(JOBSET_ENV)
    assert spec == LaunchSpec("jobset", "vp-8b-slice-0-0.vp-8b:8476", 8, 1 * 4 + 1, "vp-8b", 2, 1, 2)
    first = launch.detect({**JOBSET_ENV, "JOB_INDEX": "0", "JOB_COMPLETION_INDEX": "0"})
    assert first.process_id == 0 and first.is_lead and first.slice_index == 0
    assert launch.detect({**JOBSET_ENV, "VIDEOPOET_COORDINATOR_PORT": "1234"}).coordinator_address.endswith(":1234")


def test_tpu_vm():
    spec = launch.detect(TPU_VM_ENV)
    assert spec == LaunchSpec("tpu-vm", "10.130.0.5:8476", 4, 2, None, 0, 0, 1)


def test_precedence():
    # explicit variables from our launchers beat everything; JobSet beats the per-slice TPU_* GKE also sets;
    # Slurm beats TPU_*; the order is the documented one
    assert launch.detect({**SLURM_ENV, **JOBSET_ENV, **TPU_VM_ENV, **LOCAL_ENV}).scheduler == "local"
    assert launch.detect({**SLURM_ENV, **JOBSET_ENV}).scheduler == "jobset"
    assert launch.detect(JOBSET_ENV).scheduler == "jobset"  # has TPU_WORKER_* too
    assert launch.detect({**TPU_VM_ENV, **SLURM_ENV}).scheduler == "slurm"
    assert [name for name, _, _ in launch._DETECTORS] == ["local", "jobset", "slurm", "tpu-vm"]


@pytest.mark.parametrize(
    "spec, hosts",
    [
        ("a[01-03,7],b5", ["a01", "a02", "a03", "a7", "b5"]),
        ("node1", ["node1"]),
        ("gpu[007-010]", ["gpu007", "gpu008", "gpu009", "gpu010"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
        ("x[9-11]-ib,y", ["x9-ib", "x10-ib", "x11-ib", "y"]),
        ("h-[0]", ["h-0"]),
    ],
)
def test_hostlist(spec, hosts):
    assert launch.expand_hostlist(spec) == hosts


@pytest.mark.parametrize("bad", ["", "a[1-", "a]1[", "a[3-1]", "a[x]", "a,,b", "a[[1]]"])
def test_bad_hostlist(bad):
    with pytest.raises(LaunchError):
        launch.expand_hostlist(bad)


@pytest.mark.parametrize(
    "env, message",
    [
        ({**LOCAL_ENV, "VIDEOPOET_NUM_PROCESSES": "two"}, "not an integer"),
        ({**LOCAL_ENV, "VIDEOPOET_PROCESS_ID": "2"}, "outside 0..1"),
        ({k: v for k, v in LOCAL_ENV.items() if k != "VIDEOPOET_PROCESS_ID"}, "VIDEOPOET_PROCESS_ID is not set"),
        ({**LOCAL_ENV, "VIDEOPOET_COORDINATOR": "nohostport"}, "not host:port"),
        ({**LOCAL_ENV, "VIDEOPOET_SCHEDULER": "slurm"}, "'local' or 'ray'"),
        ({k: v for k, v in SLURM_ENV.items() if "NODELIST" not in k}, "SLURM_JOB_NODELIST is not"),
        ({**JOBSET_ENV, "JOB_COMPLETION_INDEX": "4"}, "outside 0..3"),
        ({k: v for k, v in JOBSET_ENV.items() if k != "REPLICATED_JOB_NAME"}, "REPLICATED_JOB_NAME"),
        ({**TPU_VM_ENV, "TPU_WORKER_HOSTNAMES": "a,,b"}, "empty entry"),
        ({**TPU_VM_ENV, "VIDEOPOET_COORDINATOR_PORT": "70000"}, "not a TCP port"),
    ],
)
def test_bad_environments_fail_in_one_line(env, message):
    with pytest.raises(LaunchError, match=message) as e:
        launch.detect(env)
    assert "\n" not in str(e.value)


def test_run_identity_records_version_git_packages(tmp_path):
    spec = launch.detect(LOCAL_ENV)
    ident = launch.run_identity(spec, str(tmp_path))
    assert ident["launch"] == spec.to_dict() and ident["target"] == "local" and ident["resources"] is None
    assert len(ident["packages"]["sha256"]) == 64 and ident["packages"]["count"] > 50
    assert ident["packages"] == launch.run_identity(spec, str(tmp_path))["packages"]  # stable
    if ident["git"] is not None:  # a git checkout (the dev install); a wheel has none
        assert len(ident["git"]["commit"]) == 40
    req = SubmitRequest(
        kind="train",
        target="slurm",
        name="r",
        run_dir=str(tmp_path),
        data="syn@1",
        nodes=2,
        gpus_per_node=8,
        queue="gpu",
    )
    request.write_submit_file(req, request.SubmitResult("slurm", "r", str(tmp_path), job_id="17"))
    ident = launch.run_identity(spec, str(tmp_path))
    assert ident["target"] == "slurm" and ident["job_id"] == "17"
    assert ident["resources"]["gpus_per_node"] == 8 and ident["resources"]["num_processes"] == 2
    assert json.load(open(tmp_path / "submit.json"))["command"][:2] == ["videopoet", "train"]


def test_submit_file_on_object_storage_reaches_run_identity():
    import uuid

    import fsspec

    run_dir = f"memory://runs/{uuid.uuid4().hex[:8]}"
    spec = launch.detect(LOCAL_ENV)
    assert launch.run_identity(spec, run_dir)["job_id"] is None  # not submitted: nothing to read
    req = SubmitRequest(kind="train", target="gke", name="r", run_dir=run_dir, data="syn@1", accelerator="v5p-16")
    path = request.write_submit_file(req, request.SubmitResult("gke", "r", run_dir, job_id="jobset/r"))
    assert path == f"{run_dir}/submit.json"
    body = json.loads(fsspec.filesystem("memory").cat_file(path[len("memory://") :]))
    assert body["target"] == "gke" and body["job_id"] == "jobset/r" and body["command"][:2] == ["videopoet", "train"]
    ident = launch.run_identity(spec, run_dir)
    assert ident["target"] == "gke" and ident["job_id"] == "jobset/r" and ident["resources"] == req.resources()


def _req(tmp_path, **kw):
    base = dict(kind="train", target="local", name="run", run_dir=str(tmp_path / "run"), config="tiny", data="syn@1")
    return SubmitRequest(**{**base, **kw})


def test_host_argv(tmp_path):
    r = _req(tmp_path, root="/data", overrides=("steps=4",))
    assert request.host_argv(r) == [
        "videopoet",
        "train",
        "--config",
        "tiny",
        "--data",
        "syn@1",
        "--root",
        "/data",
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
        "steps=4",
    ]
    p = _req(tmp_path, kind="pipeline", data="ds@2", input="gs://b/*.tar", runner_args=("--runner=DataflowRunner",))
    assert request.host_argv(p) == [
        "videopoet",
        "pipeline",
        "run",
        "--runner",
        "beam",
        "--input",
        "gs://b/*.tar",
        "--name",
        "ds",
        "--version",
        "2",
        "--workers",
        "1",
        "--config",
        "tiny",
        "--no-progress",
        "--",
        "--runner=DataflowRunner",
    ]


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"kind": "eval"}, "unknown kind"),
        ({"target": "k8s"}, "unknown target 'k8s' \\(known: local, slurm, ray, gke, tpu-vm, dataflow, flink, spark\\)"),
        ({"name": "Bad_Name"}, "run name"),
        ({"nodes": 0}, "nodes must be >= 1"),
        ({"gpus_per_node": -1}, "gpus-per-node must be >= 0"),
        ({"overrides": ("steps",)}, "not key=value"),
        ({"data": None}, "needs --data"),
        ({"kind": "pipeline", "input": None}, "needs --input"),
        ({"kind": "pipeline", "input": "x/*.tar", "data": "noversion"}, "NAME@VERSION"),
        ({"env": (("1BAD", "x"),)}, "environment variable name"),
    ],
)
def test_validate_one_line(tmp_path, kw, message):
    with pytest.raises(targets.UnknownTargetError if "target" in kw else RequestError, match=message) as e:
        _req(tmp_path, **kw).validate()
    assert "\n" not in str(e.value)


def test_preflight_refuses_before_submitting(tmp_path):
    from videopoet.schemas import store
    from videopoet.trainer import synthetic
    from videopoet.trainer.config import load_train_config

    root = str(tmp_path / "root")
    store.write_dataset(root, "syn", "1", {"a.tar": synthetic.make_records(4, load_train_config("tiny").model.vocab)})
    ok = _req(tmp_path, root=root, processes_per_node=2)
    out = request.preflight(ok)
    assert len(out["dataset"]["fingerprint"]) == 64 and out["batch_size"] == 4
    with pytest.raises(RequestError, match="batch_size 4 does not split over 3 processes"):
        request.preflight(_req(tmp_path, root=root, processes_per_node=3))
    with pytest.raises(RequestError, match="does not split over the 8 devices"):
        request.preflight(_req(tmp_path, root=root, nodes=2, gpus_per_node=4, overrides=("batch_size=6",)), devices=8)
    with pytest.raises(RequestError, match="not found|no dataset|does not exist"):
        request.preflight(_req(tmp_path, root=root, data="missing@1"))
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "file").write_text("x")
    with pytest.raises(RequestError, match="is not a directory"):
        request.preflight(_req(tmp_path, root=root, run_dir=str(ro / "file" / "run")))
    if os.geteuid() != 0:  # root writes anywhere
        ro.chmod(0o500)
        with pytest.raises(RequestError, match="not writable"):
            request.preflight(_req(tmp_path, root=root, run_dir=str(ro / "run")))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.yaml").write_text("preset: tiny\nsteps: 999\n")
    with pytest.raises(RequestError, match="holds a run with a different config"):
        request.preflight(_req(tmp_path, root=root, run_dir=str(tmp_path / "other")))
    with pytest.raises(RequestError, match="config 'tiny'"):
        request.preflight(_req(tmp_path, root=root, overrides=("nonsense=1",)))
    # a shard altered after publishing: verification fails, nothing is submitted
    shard = next(p for p in store.open_dataset("syn@1", root).shard_paths())
    with open(shard.removeprefix("file://"), "r+b") as f:
        f.seek(10)
        f.write(b"\x00\x01\x02")
    with pytest.raises(RequestError, match="failed verification"):
        request.preflight(ok)


def test_unknown_and_unbuilt_targets_from_the_cli(tmp_path, capsys):
    from videopoet.cli.main import main

    rc = main(["submit", "train", "--target", "nope", "--run-dir", str(tmp_path / "r"), "--data", "a@1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "known: local, slurm, ray" in err
    rc = main(["submit", "status", "1", "--target", "local"])
    err = capsys.readouterr().err
    assert rc == 2 and "target 'local' has no 'status'" in err


def test_target_checks_run_in_preflight(tmp_path):
    from videopoet.infra import targets as targets_mod

    with pytest.raises(RequestError, match="use --processes-per-node, not --nodes"):
        targets_mod.preflight(_req(tmp_path, nodes=2, verify_data=False))
    pipe = _req(tmp_path, kind="pipeline", input="x/*.tar", data="ds@1", processes_per_node=2)
    with pytest.raises(RequestError, match="one driver process"):
        targets_mod.preflight(pipe)
    with pytest.raises(RequestError, match="slurm has no slices"):
        targets_mod.preflight(_req(tmp_path, target="slurm", slices=2, verify_data=False))
