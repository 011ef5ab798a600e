"""Target tpu-vm: the queued-resource + ssh --worker=all sequence, field by field (parsed back with shlex), the
worker command's launch contract, submit running exactly that sequence through a recording fake gcloud, and
bad requests in one line."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess

import pytest

from videopoet.infra import images, launch, targets
from videopoet.infra.request import RequestError, SubmitRequest
from videopoet.infra.targets import tpu_vm

IMAGE = "us-docker.pkg.dev/proj/repo/videopoet:tpu-test"


def _request(tmp_path, **kw) -> SubmitRequest:
    base = {
        "kind": "train",
        "target": "tpu-vm",
        "name": "vp-tpu",
        "run_dir": "gs://bucket/runs/vp-tpu",
        "config": "tiny",
        "overrides": ("batch_size=64", "steps=8"),
        "data": "synth@v1",
        "root": "gs://bucket/ds",
        "accelerator": "v5e-16",
        "verify_data": False,
        "image": IMAGE,
        "signal_grace_s": 90,
        "extra_args": ("--zone=us-west4-a", "--project", "proj", "--spot"),
        "env": (("WANDB_MODE", "off"),),
    }
    base.update(kw)
    return SubmitRequest(**base)


def _flags(argv: list[str]) -> dict[str, str]:
    return dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)


@pytest.mark.parametrize(
    "accelerator, api_type, runtime",
    [
        ("v5e-16", "v5litepod-16", "v2-alpha-tpuv5-lite"),
        ("v5p-128", "v5p-128", "v2-alpha-tpuv5"),
        ("v4-8", "v4-8", "tpu-ubuntu2204-base"),
        ("v6e-64", "v6e-64", "v2-alpha-tpuv6e"),
    ],
)
def test_sequence_fields(tmp_path, accelerator, api_type, runtime):
    req = _request(tmp_path, accelerator=accelerator, overrides=("batch_size=512",))
    targets.preflight(req)
    arts = {a.name: a for a in tpu_vm.render(req)}
    assert arts["tpu-vm.sh"].executable
    lines = arts["tpu-vm.sh"].text.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    create, wait, ssh = shlex.split(lines[3]), lines[4], shlex.split("\n".join(lines[5:]))  # ssh's command: lines
    script = tmp_path / "tpu-vm.sh"
    script.write_text(arts["tpu-vm.sh"].text)
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    assert create[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "vp-tpu"]
    f = _flags(create)
    assert f == {
        "node-id": "vp-tpu",
        "accelerator-type": api_type,
        "zone": "us-west4-a",
        "project": "proj",
        "runtime-version": runtime,
    }
    assert "--spot" in create and create.count("proj") == 0  # '--project proj' became --project=proj
    assert "describe vp-tpu --zone=us-west4-a --project=proj '--format=value(state.state)'" in wait
    assert wait.startswith("until [ ") and "= ACTIVE ]" in wait
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "vp-tpu"]
    assert "--worker=all" in ssh and _flags(ssh)["zone"] == "us-west4-a"
    assert json.loads(arts["tpu-vm.json"].text)["create"] == create  # the same argv, as JSON


def test_worker_command_runs_the_contract_and_the_image(tmp_path):
    req = _request(tmp_path)
    command = _flags(tpu_vm.commands(req)["ssh"])["command"]
    assert subprocess.run(["bash", "-n", "-c", command], check=False).returncode == 0  # valid shell
    steps = command.split("\n")
    assert steps[0] == "set -euo pipefail"
    assert "computeMetadata/v1/instance/attributes/$1" in steps[1]
    assert steps[2] == "export TPU_WORKER_ID=$(md agent-worker-number)"
    assert "md worker-network-endpoints | tr , '\\n' | cut -d: -f3 | paste -sd, -" in steps[3]
    assert shlex.split(steps[4]) == ["sudo", "gcloud", "auth", "configure-docker", "us-docker.pkg.dev", "--quiet"]
    docker = shlex.split(steps[5])
    assert docker[:6] == ["sudo", "docker", "run", "--rm", "--privileged", "--net=host"]
    assert docker[docker.index("--stop-timeout") + 1] == "90"
    i = docker.index(IMAGE)
    assert docker[i - 2 : i] == ["--entrypoint", "videopoet"]
    assert docker[i + 1 :] == [
        "train",
        "--config",
        "tiny",
        "--data",
        "synth@v1",
        "--root",
        "gs://bucket/ds",
        "--out",
        "gs://bucket/runs/vp-tpu",
        "--no-progress",
        "batch_size=64",
        "steps=8",
    ]
    assert "WANDB_MODE=off" in docker and "VIDEOPOET_RUN_NAME=vp-tpu" in docker
    # the metadata pipeline turns worker-network-endpoints into the host list launch.detect reads
    endpoints = "a:b:10.0.0.11,a:b:10.0.0.12,a:b:10.0.0.13,a:b:10.0.0.14"
    hosts = subprocess.run(
        ["bash", "-c", f"echo {endpoints} | tr , '\\n' | cut -d: -f3 | paste -sd, -"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    spec = launch.detect({"TPU_WORKER_ID": "2", "TPU_WORKER_HOSTNAMES": hosts})
    assert (spec.scheduler, spec.num_processes, spec.process_id) == ("tpu-vm", 4, 2)
    assert spec.coordinator_address == f"10.0.0.11:{launch.DEFAULT_PORT}"
    # without --image, the content-tagged TPU image
    plain = _flags(tpu_vm.commands(_request(tmp_path, image=None))["ssh"])["command"]
    assert images.image_ref(images.content_tag("tpu")) in plain


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"accelerator": None}, "needs a TPU slice"),
        ({"accelerator": "h100-80gb"}, "needs a TPU slice"),
        ({"accelerator": "v5e-16", "slices": 2}, "runs one slice"),
        ({"accelerator": "v5e-7"}, "v5e names count chips"),
        ({"extra_args": ()}, "needs a zone"),
        ({"overrides": ("batch_size=20",)}, "does not split over the 16 devices"),
    ],
)
def test_bad_requests(tmp_path, monkeypatch, kw, message):
    monkeypatch.delenv("CLOUDSDK_COMPUTE_ZONE", raising=False)
    with pytest.raises(RequestError) as e:
        targets.dry_run(_request(tmp_path, **kw), str(tmp_path / "out"))
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_submit_runs_the_sequence(tmp_path, monkeypatch):
    """A fake gcloud on PATH records every call: create, describe until ACTIVE, ssh - the rendered argv lists."""
    log = tmp_path / "calls.jsonl"
    fake = tmp_path / "bin" / "gcloud"
    fake.parent.mkdir()
    fake.write_text(f"""#!/usr/bin/env python3
import json, os, sys
with open({str(log)!r}, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if "describe" in sys.argv:
    n = sum(1 for _ in open({str(log)!r}))
    print("ACTIVE" if n >= 3 else "WAITING_FOR_RESOURCES")
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    req = _request(tmp_path, run_dir=str(tmp_path / "run"))
    res = tpu_vm.submit(req, poll_s=0.01)
    assert res.status == "completed" and res.job_id == "vp-tpu"
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    c = tpu_vm.commands(req)
    assert calls == [c["create"][1:], c["describe"][1:], c["describe"][1:], c["ssh"][1:]]
    assert (tmp_path / "run" / "submit.json").exists()
    assert tpu_vm.status("vp-tpu")["state"] in ("ACTIVE", "WAITING_FOR_RESOURCES")
    tpu_vm.cancel("vp-tpu")
    assert json.loads(log.read_text().splitlines()[-1])[:5] == [
        "compute",
        "tpus",
        "queued-resources",
        "delete",
        "vp-tpu",
    ]
