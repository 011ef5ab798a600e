"""Target ``gke``: a JobSet (``jobset.x-k8s.io/v1alpha2``) for TPU slices or GPU node pools, as xpk lays it out.

* One replicated job, ``slice``, whose replicas are the TPU slices (one replica for a GPU node pool);
  each is an Indexed Job with parallelism = completions = hosts per slice and ``backoffLimit: 0`` (a
  failed host fails its job; JobSet then restarts the whole set, up to ``failurePolicy.maxRestarts``,
  into the same run dir, where the trainer resumes).
* TPU pods select ``cloud.google.com/gke-tpu-accelerator`` and ``cloud.google.com/gke-tpu-topology``
  and ask for ``google.com/tpu`` = chips per host; GPU pods select ``cloud.google.com/gke-accelerator``
  and ask for ``nvidia.com/gpu``. Multislice adds the exclusive-topology annotation (one slice per node
  pool) and libtpu's ``MEGASCALE_*`` variables.
* The Kueue queue label (``kueue.x-k8s.io/queue-name``; xpk's ``multislice-queue`` by default).
* The coordinator is host 0 of slice 0 on the JobSet's headless service
  (``network.enableDNSHostnames``): every pod gets the launch contract's JobSet variables from the
  downward API (:mod:`videopoet.infra.launch` reads them) and the pod's termination grace period is
  the request's ``signal_grace_s``: Kubernetes' SIGTERM gives the trainer that long to save.

``render`` writes ``jobset.yaml``; ``submit`` creates it with the Kubernetes client where a kubeconfig
(or an in-cluster service account) exists; ``status`` and ``cancel`` read and delete it, ``logs`` reads the
lead pod's (host 0 of slice 0).
"""

from __future__ import annotations

import os
from typing import Any

from videopoet.infra import images
from videopoet.infra.launch import DEFAULT_PORT
from videopoet.infra.request import Artifact, RequestError, SubmitRequest, SubmitResult, train_argv, write_submit_file
from videopoet.infra.targets import shape

GROUP, VERSION, PLURAL = "jobset.x-k8s.io", "v1alpha2", "jobsets"
API_VERSION = f"{GROUP}/{VERSION}"
REPLICATED_JOB = "slice"
CONTAINER = "videopoet"
DEFAULT_QUEUE = "multislice-queue"  # the LocalQueue xpk creates
MEGASCALE_PORT = 8080
TPU_RUNTIME_PORT = 8471
EXCLUSIVE_TOPOLOGY = "alpha.jobset.sigs.k8s.io/exclusive-topology"
NAMESPACE_ENV = "VIDEOPOET_K8S_NAMESPACE"

# launch-contract variable -> the pod annotation JobSet / the Job controller set on every pod
DOWNWARD = {
    "JOBSET_NAME": "jobset.sigs.k8s.io/jobset-name",
    "REPLICATED_JOB_NAME": "jobset.sigs.k8s.io/replicatedjob-name",
    "JOB_INDEX": "jobset.sigs.k8s.io/job-index",
    "JOB_COMPLETION_INDEX": "batch.kubernetes.io/job-completion-index",
    "VIDEOPOET_RESTART_COUNT": "jobset.sigs.k8s.io/restart-attempt",
}


preflight_args = shape.preflight_args


def check(request: SubmitRequest) -> None:
    """GKE runs training on a named accelerator."""
    if request.kind != "train":
        raise RequestError("target gke runs training; a pipeline goes to --target dataflow, flink, spark or ray")
    if not request.accelerator:
        raise RequestError(
            "target gke needs --accelerator (a TPU slice such as v5p-128, or a GPU node type such as h100-80gb)"
        )
    if request.processes_per_node != 1:
        raise RequestError(
            "target gke runs one process per pod (it drives all of the host's chips or GPUs); "
            f"--processes-per-node {request.processes_per_node}"
        )
    shape.resolve(request)


def coordinator_host(name: str) -> str:
    """Host 0 of slice 0 on the JobSet's headless service (its subdomain is the JobSet's name)."""
    return f"{name}-{REPLICATED_JOB}-0-0.{name}"


def _env(request: SubmitRequest, s: shape.Shape) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": var, "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{ann}']"}}}
        for var, ann in DOWNWARD.items()
    ]
    literal = {
        "VIDEOPOET_HOSTS_PER_SLICE": str(s.hosts_per_slice),
        "VIDEOPOET_NUM_SLICES": str(s.slices),
        "VIDEOPOET_COORDINATOR_PORT": str(DEFAULT_PORT),
        "VIDEOPOET_RUN_NAME": request.name,
        "PYTHONUNBUFFERED": "1",
    }
    if s.is_tpu and s.slices > 1:  # libtpu's DCN rendezvous between slices
        literal.update(
            {
                "MEGASCALE_COORDINATOR_ADDRESS": coordinator_host(request.name),
                "MEGASCALE_NUM_SLICES": str(s.slices),
                "MEGASCALE_PORT": str(MEGASCALE_PORT),
            }
        )
        env.append(
            {
                "name": "MEGASCALE_SLICE_ID",
                "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{DOWNWARD['JOB_INDEX']}']"}},
            }
        )
    literal.update(dict(request.env))
    env.extend({"name": k, "value": v} for k, v in literal.items())
    return env


def pod_template(request: SubmitRequest, s: shape.Shape, image: str) -> dict[str, Any]:
    """The pod template of every host (a ``V1PodTemplateSpec`` as a dict)."""
    acc = s.accelerator
    ports = [{"containerPort": DEFAULT_PORT, "name": "coordinator"}]
    if s.is_tpu:
        selector = {
            "cloud.google.com/gke-tpu-accelerator": acc.gke_accelerator,
            "cloud.google.com/gke-tpu-topology": acc.topology,
        }
        limits = {"google.com/tpu": str(acc.chips_per_host)}
        tolerations = [{"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"}]
        ports += [
            {"containerPort": TPU_RUNTIME_PORT, "name": "tpu-runtime"},
            {"containerPort": MEGASCALE_PORT, "name": "megascale"},
        ]
    else:
        selector = {"cloud.google.com/gke-accelerator": acc.gke_accelerator}
        limits = {"nvidia.com/gpu": str(s.devices_per_host)}
        tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "nodeSelector": selector,
        "tolerations": tolerations,
        "terminationGracePeriodSeconds": request.signal_grace_s,
        "containers": [
            {
                "name": CONTAINER,
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": train_argv(request),
                "env": _env(request, s),
                "ports": ports,
                "resources": {"limits": limits},
                "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
            }
        ],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
    }
    if s.is_tpu:  # xpk's TPU pods: host networking (DCN / ICI runtime ports), cluster DNS still resolves
        spec.update({"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"})
    return {
        "metadata": {"labels": {"app.kubernetes.io/name": "videopoet", "videopoet.run": request.name}},
        "spec": spec,
    }


def manifest(request: SubmitRequest) -> dict[str, Any]:
    """The JobSet for ``request`` (a dict ready for ``yaml.safe_dump`` or the Kubernetes API)."""
    check(request)
    s = shape.resolve(request)
    request = s.request
    image = images.resolve(s.image_variant, request.image).ref
    labels = {"kueue.x-k8s.io/queue-name": request.queue or DEFAULT_QUEUE, "videopoet.run": request.name}
    annotations = {EXCLUSIVE_TOPOLOGY: "cloud.google.com/gke-nodepool"} if s.slices > 1 else {}
    job = {
        "name": REPLICATED_JOB,
        "replicas": s.slices,
        "template": {
            "spec": {
                "parallelism": s.hosts_per_slice,
                "completions": s.hosts_per_slice,
                "completionMode": "Indexed",
                "backoffLimit": 0,
                "template": pod_template(request, s, image),
            }
        },
    }
    meta: dict[str, Any] = {"name": request.name, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": API_VERSION,
        "kind": "JobSet",
        "metadata": meta,
        "spec": {
            "failurePolicy": {"maxRestarts": request.max_restarts},
            "network": {"enableDNSHostnames": True, "subdomain": request.name, "publishNotReadyAddresses": True},
            "replicatedJobs": [job],
        },
    }


def render(request: SubmitRequest) -> list[Artifact]:
    import yaml

    return [Artifact("jobset.yaml", yaml.safe_dump(manifest(request), sort_keys=False))]


# ------------------------------------------------------------------------------ the cluster
def _api(core: bool = False):
    """(CustomObjectsApi or CoreV1Api, namespace) from the kubeconfig or the in-cluster service account; one line
    when neither."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    namespace = os.environ.get(NAMESPACE_ENV)
    path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")  # read now, not at import
    try:
        config.load_kube_config(config_file=path)
        if not namespace:
            _, active = config.list_kube_config_contexts(config_file=path)
            namespace = (active or {}).get("context", {}).get("namespace")
    except (ConfigException, FileNotFoundError, TypeError):
        try:
            config.load_incluster_config()
        except ConfigException:
            raise RequestError(
                "target gke: no kubeconfig ($KUBECONFIG or ~/.kube/config) and not inside a cluster; "
                "run 'gcloud container clusters get-credentials CLUSTER' or use --dry-run"
            ) from None
    return (client.CoreV1Api() if core else client.CustomObjectsApi()), namespace or "default"


def _api_error(e, what: str) -> RequestError:
    import json

    try:
        message = json.loads(e.body).get("message")
    except (TypeError, ValueError, AttributeError):
        message = None
    return RequestError(f"target gke: {what}: {e.status} {message or e.reason}")


def submit(request: SubmitRequest) -> SubmitResult:
    from kubernetes.client.exceptions import ApiException

    body = manifest(request)
    api, namespace = _api()
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    except ApiException as e:
        raise _api_error(e, f"creating JobSet {request.name} in {namespace}") from None
    job = f"{namespace}/{request.name}"
    res = SubmitResult(
        target="gke",
        name=request.name,
        run_dir=request.run_dir,
        job_id=job,
        command=tuple(train_argv(shape.resolve(request).request)),
        submitted=True,
        status="submitted",
        detail={
            "image": body["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0]["image"]
        },
    )
    write_submit_file(request, res)
    return res


def _split(job: str) -> tuple[str | None, str]:
    ns, sep, name = job.rpartition("/")
    return (ns or None) if sep else None, name


def status(job: str) -> dict[str, Any]:
    """``{"state": Completed | Failed | Suspended | Running, "restarts": N}`` of JobSet ``[namespace/]name``."""
    from kubernetes.client.exceptions import ApiException

    ns, name = _split(job)
    api, default_ns = _api()
    try:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, ns or default_ns, PLURAL, name)
    except ApiException as e:
        raise _api_error(e, f"reading JobSet {job}") from None
    st = obj.get("status") or {}
    state = st.get("terminalState") or next(
        (c["type"] for c in st.get("conditions", []) if c.get("status") == "True" and c.get("type") == "Suspended"),
        "Running",
    )
    return {"job": job, "state": state, "restarts": st.get("restarts", 0)}


def cancel(job: str) -> None:
    """Delete JobSet ``[namespace/]name`` (its pods get SIGTERM and the grace period to save)."""
    from kubernetes.client.exceptions import ApiException

    ns, name = _split(job)
    api, default_ns = _api()
    try:
        api.delete_namespaced_custom_object(
            GROUP, VERSION, ns or default_ns, PLURAL, name, propagation_policy="Foreground"
        )
    except ApiException as e:
        raise _api_error(e, f"deleting JobSet {job}") from None


def logs(job: str, tail: int = 0, errors: bool = False) -> str:
    """The output of host 0 of slice 0 (the lead process) of JobSet ``[namespace/]name``; Kubernetes keeps one
    stream per container, so ``errors`` reads the same one."""
    from kubernetes.client.exceptions import ApiException

    ns, name = _split(job)
    api, default_ns = _api(core=True)
    ns = ns or default_ns
    try:
        pods = api.list_namespaced_pod(ns, label_selector=f"{DOWNWARD['JOBSET_NAME']}={name}").items
    except ApiException as e:
        raise _api_error(e, f"listing the pods of JobSet {job}") from None
    if not pods:
        raise RequestError(f"target gke: JobSet {job} has no pods (not admitted or scheduled yet?)")

    def rank(pod) -> tuple[int, int, str]:
        labels = pod.metadata.labels or {}
        index = [labels.get(DOWNWARD[k], "") for k in ("JOB_INDEX", "JOB_COMPLETION_INDEX")]
        return (*(int(i) if i.isdigit() else 1 << 30 for i in index), pod.metadata.name)

    lead = min(pods, key=rank)
    try:
        return api.read_namespaced_pod_log(lead.metadata.name, ns, container=CONTAINER, tail_lines=tail or None)
    except ApiException as e:
        raise _api_error(e, f"reading the log of {lead.metadata.name}") from None
