"""Target gke: the JobSet for TPU slices (v4, v5e, v5p, v6e, multislice) and GPU node pools, checked field by
field, its Job + pod template validated strictly against Kubernetes' schema (kubernetes-validate) and the
client's models; submit / status / cancel against a recording fake API server; bad requests in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from videopoet.infra import accelerators, images, launch, targets
from videopoet.infra.request import RequestError, SubmitRequest
from videopoet.infra.targets import gke

K8S_VERSION = "1.31"
# JobSet v1alpha2 field names (kubernetes-sigs/jobset api/jobset/v1alpha2/jobset_types.go)
JOBSET_SPEC = {
    "replicatedJobs",
    "network",
    "successPolicy",
    "failurePolicy",
    "startupPolicy",
    "suspend",
    "coordinator",
    "managedBy",
    "ttlSecondsAfterFinished",
    "volumeClaimPolicies",
}
NETWORK = {"enableDNSHostnames", "subdomain", "publishNotReadyAddresses"}
FAILURE_POLICY = {"maxRestarts", "restartStrategy", "rules"}
REPLICATED_JOB = {"name", "groupName", "template", "replicas", "dependsOn"}


def _request(tmp_path, accelerator: str, **kw) -> SubmitRequest:
    base = {
        "kind": "train",
        "target": "gke",
        "name": "vp-run",
        "run_dir": str(tmp_path / "run"),
        "config": "tiny",
        "overrides": ("batch_size=1024",),
        "data": "synth@v1",
        "accelerator": accelerator,
        "verify_data": False,
        "image": "us-docker.pkg.dev/p/r/videopoet:test",
    }
    base.update(kw)
    return SubmitRequest(**base)


def _strict_model(data, klass: str, path: str = "") -> None:
    """Every key of ``data`` is a field of the kubernetes client model ``klass``, recursively."""
    from kubernetes.client import models

    if klass.startswith("list["):
        for i, item in enumerate(data):
            _strict_model(item, klass[5:-1], f"{path}[{i}]")
        return
    if klass.startswith("dict("):
        inner = klass[5:-1].split(", ", 1)[1]
        for k, v in data.items():
            _strict_model(v, inner, f"{path}.{k}")
        return
    model = getattr(models, klass, None)
    if model is None:  # str, int, bool, object
        return
    by_json = {v: k for k, v in model.attribute_map.items()}
    assert isinstance(data, dict), f"{path}: {klass} expects an object"
    for key, value in data.items():
        assert key in by_json, f"{path}.{key}: not a field of {klass}"
        _strict_model(value, model.openapi_types[by_json[key]], f"{path}.{key}")


def _validate(doc: dict) -> None:
    """The JobSet's own fields by name, its Job strictly against Kubernetes' schema, the pod template against
    the client's models (deserialized into V1PodTemplateSpec)."""
    import kubernetes_validate
    from kubernetes import client

    assert set(doc["spec"]) <= JOBSET_SPEC and set(doc["spec"]["network"]) <= NETWORK
    assert set(doc["spec"]["failurePolicy"]) <= FAILURE_POLICY
    for rj in doc["spec"]["replicatedJobs"]:
        assert set(rj) <= REPLICATED_JOB
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": f"{doc['metadata']['name']}-{rj['name']}-0"},
            "spec": rj["template"]["spec"],
        }
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)
        pod = rj["template"]["spec"]["template"]
        _strict_model(pod, "V1PodTemplateSpec")
        model = client.ApiClient().deserialize(json.dumps(pod), "V1PodTemplateSpec", "application/json")
        assert model.spec.containers[0].name == gke.CONTAINER


@pytest.mark.parametrize(
    "accelerator, slices, hosts, chips_per_host, topology, label",
    [
        ("v4-8", 1, 1, 4, "2x2x1", "tpu-v4-podslice"),
        ("v5e-16", 1, 4, 4, "4x4", "tpu-v5-lite-podslice"),
        ("v5p-128", 2, 16, 4, "4x4x4", "tpu-v5p-slice"),
        ("v6e-256", 4, 64, 4, "16x16", "tpu-v6e-slice"),
    ],
)
def test_tpu_jobset_fields(tmp_path, accelerator, slices, hosts, chips_per_host, topology, label):
    acc = accelerators.lookup(accelerator, slices)
    assert (acc.hosts, acc.chips_per_host, acc.topology, acc.gke_accelerator) == (
        hosts,
        chips_per_host,
        topology,
        label,
    )
    req = _request(tmp_path, accelerator, slices=slices, max_restarts=5, signal_grace_s=300, queue="team-a")
    targets.preflight(req)  # the mesh and the batch fit the slice(s)
    (art,) = gke.render(req)
    assert art.name == "jobset.yaml"
    doc = yaml.safe_load(art.text)
    _validate(doc)
    assert doc["apiVersion"] == "jobset.x-k8s.io/v1alpha2" and doc["kind"] == "JobSet"
    assert doc["metadata"]["name"] == "vp-run"
    assert doc["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    exclusive = doc["metadata"].get("annotations", {}).get("alpha.jobset.sigs.k8s.io/exclusive-topology")
    assert exclusive == ("cloud.google.com/gke-nodepool" if slices > 1 else None)
    spec = doc["spec"]
    assert spec["failurePolicy"] == {"maxRestarts": 5}
    assert spec["network"]["enableDNSHostnames"] is True and spec["network"]["subdomain"] == "vp-run"
    (rj,) = spec["replicatedJobs"]
    assert rj["replicas"] == slices
    job = rj["template"]["spec"]
    assert job["parallelism"] == job["completions"] == hosts
    assert job["completionMode"] == "Indexed" and job["backoffLimit"] == 0
    pod = job["template"]["spec"]
    assert pod["nodeSelector"] == {
        "cloud.google.com/gke-tpu-accelerator": label,
        "cloud.google.com/gke-tpu-topology": topology,
    }
    assert pod["terminationGracePeriodSeconds"] == 300 and pod["restartPolicy"] == "Never"
    (c,) = pod["containers"]
    assert c["resources"]["limits"] == {"google.com/tpu": str(chips_per_host)}
    assert c["image"] == "us-docker.pkg.dev/p/r/videopoet:test"
    assert c["command"][:2] == ["videopoet", "train"] and c["command"][c["command"].index("--out") + 1] == req.run_dir
    env = {e["name"]: e for e in c["env"]}
    assert env["VIDEOPOET_HOSTS_PER_SLICE"]["value"] == str(hosts)
    assert env["VIDEOPOET_NUM_SLICES"]["value"] == str(slices)
    for var, ann in gke.DOWNWARD.items():
        assert env[var]["valueFrom"]["fieldRef"]["fieldPath"] == f"metadata.annotations['{ann}']"
    assert ("MEGASCALE_NUM_SLICES" in env) == (slices > 1)
    # what the launch contract makes of this pod's environment, for the last host of the last slice
    pod_env = {k: v["value"] for k, v in env.items() if "value" in v}
    pod_env.update(
        {
            "JOBSET_NAME": "vp-run",
            "REPLICATED_JOB_NAME": gke.REPLICATED_JOB,
            "JOB_INDEX": str(slices - 1),
            "JOB_COMPLETION_INDEX": str(hosts - 1),
        }
    )
    spec_ = launch.detect(pod_env)
    assert spec_.num_processes == slices * hosts and spec_.process_id == slices * hosts - 1
    assert spec_.coordinator_address == f"{gke.coordinator_host('vp-run')}:{launch.DEFAULT_PORT}"
    assert gke.coordinator_host("vp-run") == "vp-run-slice-0-0.vp-run"  # <jobset>-<rjob>-<job>-<pod>.<subdomain>


@pytest.mark.parametrize(
    "accelerator, nodes, gpus, label",
    [("h100-80gb", 2, 8, "nvidia-h100-80gb"), ("h200-141gb", 4, 8, "nvidia-h200-141gb")],
)
def test_gpu_jobset_fields(tmp_path, accelerator, nodes, gpus, label):
    req = _request(tmp_path, accelerator, nodes=nodes, image=None)
    targets.preflight(req)
    doc = yaml.safe_load(gke.render(req)[0].text)
    _validate(doc)
    (rj,) = doc["spec"]["replicatedJobs"]
    assert rj["replicas"] == 1
    job = rj["template"]["spec"]
    assert job["parallelism"] == job["completions"] == nodes
    pod = job["template"]["spec"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": label}
    (c,) = pod["containers"]
    assert c["resources"]["limits"] == {"nvidia.com/gpu": str(gpus)}
    assert c["image"] == images.image_ref(images.content_tag("cuda"))  # the content-tagged CUDA image
    assert doc["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == gke.DEFAULT_QUEUE
    assert "hostNetwork" not in pod


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"accelerator": "v7x-9"}, "unknown accelerator 'v7x-9'"),
        ({"accelerator": "v5p-3x3x3"}, "v5p has no 3x3x3 slice"),
        ({"accelerator": "v5e-16", "nodes": 3}, "4 host(s) per slice; --nodes 3"),
        ({"accelerator": "h100-80gb", "gpus_per_node": 16}, "have 8 GPUs"),
        ({"accelerator": "v5e-16", "overrides": ("batch_size=1024", "mesh.data=1", "mesh.tensor=3")}, "devices"),
        ({"accelerator": "v5e-16", "overrides": ("batch_size=24",)}, "does not split over the 16 devices"),
        ({"accelerator": None}, "needs --accelerator"),
        ({"accelerator": "h100-80gb", "processes_per_node": 8}, "one process per pod"),
        ({"accelerator": "v5e-16", "kind": "pipeline", "input": "x/*.tar"}, "runs training"),
    ],
)
def test_bad_requests_fail_before_anything_is_submitted(tmp_path, kw, message):
    req = _request(tmp_path, **{"accelerator": "v5e-16", **kw})
    with pytest.raises(RequestError) as e:
        targets.dry_run(req, str(tmp_path / "out"))
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ the API
class _FakeApiServer:
    """Records the requests a Kubernetes client makes; answers JobSet create / get / delete."""

    def __init__(self):
        self.calls: list[tuple[str, str, dict | None]] = []
        self.objects: dict[str, dict] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _reply(self, code: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n)) if n else None

            def do_POST(self):
                body = self._body()
                outer.calls.append(("POST", self.path, body))
                name = body["metadata"]["name"]
                if name in outer.objects:
                    return self._reply(409, {"kind": "Status", "message": f'jobsets "{name}" already exists'})
                outer.objects[name] = body
                self._reply(201, body)

            def do_GET(self):
                outer.calls.append(("GET", self.path, None))
                if self.path.startswith("/api/v1/namespaces/research/pods?"):
                    items = [
                        {
                            "metadata": {
                                "name": f"vp-run-slice-0-{i}-x",
                                "labels": {
                                    "jobset.sigs.k8s.io/jobset-name": "vp-run",
                                    "jobset.sigs.k8s.io/job-index": "0",
                                    "batch.kubernetes.io/job-completion-index": str(i),
                                },
                            }
                        }
                        for i in (2, 0, 1)
                    ]
                    return self._reply(200, {"kind": "PodList", "apiVersion": "v1", "items": items})
                if "/log?" in self.path:
                    data = f"log of {self.path.split('/')[-2]}\n".encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    return self.wfile.write(data)
                name = self.path.rsplit("/", 1)[-1]
                if name not in outer.objects:
                    return self._reply(404, {"kind": "Status", "message": f'jobsets "{name}" not found'})
                self._reply(200, {**outer.objects[name], "status": {"terminalState": "Failed", "restarts": 2}})

            def do_DELETE(self):
                outer.calls.append(("DELETE", self.path, self._body()))
                self._reply(200, {"kind": "Status", "status": "Success"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _kubeconfig(path, url: str, namespace: str) -> str:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "test",
        "clusters": [{"name": "c", "cluster": {"server": url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "test", "context": {"cluster": "c", "user": "u", "namespace": namespace}}],
    }
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_submit_status_logs_cancel_through_the_kubernetes_client(tmp_path, monkeypatch):
    req = _request(tmp_path, "v5e-16")
    with _FakeApiServer() as api:
        monkeypatch.setenv("KUBECONFIG", _kubeconfig(tmp_path / "kubeconfig", api.url, "research"))
        monkeypatch.delenv(gke.NAMESPACE_ENV, raising=False)
        res = targets.submit(req)
        assert res.submitted and res.job_id == "research/vp-run"
        method, path, body = api.calls[0]
        assert (method, path) == ("POST", "/apis/jobset.x-k8s.io/v1alpha2/namespaces/research/jobsets")
        assert body == gke.manifest(req)
        with open(os.path.join(req.run_dir, "submit.json")) as f:
            assert json.load(f)["job_id"] == "research/vp-run"
        with pytest.raises(RequestError, match='409 jobsets "vp-run" already exists'):
            targets.submit(req)
        assert gke.status("research/vp-run") == {"job": "research/vp-run", "state": "Failed", "restarts": 2}
        with pytest.raises(RequestError, match="404"):
            gke.status("research/other")
        assert gke.logs("vp-run", tail=5) == "log of vp-run-slice-0-0-x\n"  # host 0 of slice 0
        pods_call, log_call = api.calls[-2][1], api.calls[-1][1]
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(pods_call).query)
        assert query["labelSelector"] == ["jobset.sigs.k8s.io/jobset-name=vp-run"]
        assert log_call.startswith("/api/v1/namespaces/research/pods/vp-run-slice-0-0-x/log?")
        assert "container=videopoet" in log_call and "tailLines=5" in log_call
        gke.cancel("vp-run")
        assert api.calls[-1][:2] == (
            "DELETE",
            "/apis/jobset.x-k8s.io/v1alpha2/namespaces/research/jobsets/vp-run?propagationPolicy=Foreground",
        )


def test_no_kubeconfig_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update(KUBECONFIG=str(tmp_path / "missing"), HOME=str(tmp_path))
    argv = [
        sys.executable,
        "-m",
        "videopoet.cli.main",
        "submit",
        "train",
        "--target",
        "gke",
        "--run-dir",
        str(tmp_path / "run"),
        "--config",
        "tiny",
        "--data",
        "synth@v1",
        "--accelerator",
        "v5e-16",
        "--image",
        "x:y",
        "--no-verify-data",
        "batch_size=64",
    ]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "no kubeconfig" in out.stderr
    dry = subprocess.run(
        argv + ["--dry-run", "--json"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert dry.returncode == 0, dry.stderr
    (path,) = json.loads(dry.stdout)["artifacts"]
    with open(path) as f:
        doc = yaml.safe_load(f)
    assert doc["spec"]["replicatedJobs"][0]["template"]["spec"]["parallelism"] == 4
