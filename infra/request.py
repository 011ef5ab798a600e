"""What a user asks ``videopoet submit`` for, the artifacts a target renders, and what it answers.

A :class:`SubmitRequest` names one run (``name``) with one run directory (``run_dir``): every host
runs the ordinary command :func:`host_argv` builds (``videopoet train --config ... --data ... --out
RUN_DIR [overrides]`` or ``videopoet pipeline run ...``), joins the others through
:mod:`videopoet.infra.launch`, and a restart or requeue lands in the same run dir, where the trainer
resumes from its latest checkpoint.

Two levels of checks, both before anything is submitted, both one-line :class:`RequestError`:

* :meth:`SubmitRequest.validate` - the request on its own (fields, names, counts);
* :func:`preflight` - against the world: the config loads with its overrides, the global batch
  splits over the processes (and the devices, when known), the run dir can be written, the dataset
  verifies.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

from videopoet.schemas.errors import VideoPoetError

KINDS = ("train", "pipeline")
RUNNERS = ("beam", "ray")
# Kubernetes object names (DNS-1123 labels) are the strictest of the schedulers; room for suffixes
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
SUBMIT_FILE = "submit.json"  # RUN_DIR/submit.json: the request and where it went (read into run.json)


class RequestError(VideoPoetError):
    """A submission request that cannot work; nothing was submitted."""


@dataclasses.dataclass(frozen=True)
class SubmitRequest:
    """One run to submit. ``nodes`` are hosts (per slice on TPU); processes = slices x nodes x processes_per_node."""

    kind: str  # train | pipeline
    target: str  # local | slurm | ray | gke | tpu-vm | dataflow | flink | spark
    name: str  # the run's name (job name on the scheduler)
    run_dir: str  # the run directory every host writes to (shared filesystem or bucket)
    config: str = "small"  # train / pipeline preset or YAML
    overrides: tuple[str, ...] = ()  # key=value config overrides
    data: str | None = None  # train: dataset NAME@VERSION to read; pipeline: NAME@VERSION to write
    root: str | None = None  # datasets root as the hosts see it
    input: str | None = None  # pipeline: input webdataset glob
    runner: str = "beam"  # pipeline runner
    workers: int = 1  # pipeline workers
    runner_args: tuple[str, ...] = ()  # pipeline: flags after '--' (Beam PipelineOptions)
    image: str | None = None  # container image (targets that run containers)
    accelerator: str | None = None  # e.g. v5p-128, h100-80gb (see infra.accelerators)
    nodes: int = 1
    processes_per_node: int = 1
    gpus_per_node: int = 0
    slices: int = 1
    queue: str | None = None  # Slurm partition, Kueue queue, Ray entrypoint resources
    max_restarts: int = 3
    signal_grace_s: int = 120  # SIGTERM this long before the scheduler kills (time to save a checkpoint)
    time_limit: str | None = None  # scheduler wall-clock limit, e.g. Slurm's "1:00:00"
    env: tuple[tuple[str, str], ...] = ()  # extra environment for every host
    extra_args: tuple[str, ...] = ()  # flags passed unchanged to the submitting tool (sbatch, kubectl, gcloud)
    program: tuple[str, ...] = ("videopoet",)  # how hosts invoke the CLI
    verify_data: bool = True  # preflight verifies the dataset (off when only the cluster can read it)
    dry_run: bool = False
    # train: compile the step ahead of time for this TPU slice before submitting, and refuse a step that
    # does not fit its HBM ("accelerator": the request's --accelerator)
    topology: str | None = None
    # train: start from a trained run's weights (``videopoet train --init-from``: task adaptation), as the
    # hosts see it; ``grow`` and ``allow_tokenizer_change`` as ``videopoet train``'s flags
    init_from: str | None = None
    grow: bool = False
    allow_tokenizer_change: bool = False

    @property
    def num_processes(self) -> int:
        return self.slices * self.nodes * self.processes_per_node

    def validate(self) -> None:
        """Raise :class:`RequestError` (one line) for a request that cannot work as written."""
        from videopoet.infra import targets

        if self.kind not in KINDS:
            raise RequestError(f"unknown kind {self.kind!r} (known: {', '.join(KINDS)})")
        targets.check_name(self.target)
        if not NAME_RE.match(self.name or ""):
            raise RequestError(
                f"run name {self.name!r} must be 1-40 lowercase letters, digits or '-', "
                "starting and ending with a letter or digit"
            )
        if not self.run_dir:
            raise RequestError("a run needs a run directory (--run-dir)")
        for field in ("nodes", "processes_per_node", "slices", "workers", "signal_grace_s"):
            if getattr(self, field) < 1:
                raise RequestError(f"{field.replace('_', '-')} must be >= 1, got {getattr(self, field)}")
        for field in ("gpus_per_node", "max_restarts"):
            if getattr(self, field) < 0:
                raise RequestError(f"{field.replace('_', '-')} must be >= 0, got {getattr(self, field)}")
        bad = [o for o in self.overrides if "=" not in o]
        if bad:
            raise RequestError(f"config override {bad[0]!r} is not key=value")
        bad_env = [k for k, _ in self.env if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k)]
        if bad_env:
            raise RequestError(f"environment variable name {bad_env[0]!r} is not valid")
        if not self.program:
            raise RequestError("program (how hosts run videopoet) is empty")
        if self.kind == "train":
            if not self.data:
                raise RequestError("a training run needs --data NAME@VERSION (or a version dir)")
            if self.topology and self.slices != 1:
                raise RequestError("--topology compiles for one slice; multi-slice runs (--slices > 1) are not covered")
            if (self.grow or self.allow_tokenizer_change) and not self.init_from:
                flag = "--grow" if self.grow else "--allow-tokenizer-change"
                raise RequestError(f"{flag} qualifies --init-from RUN_OR_DIR; give --init-from")
        elif self.topology:
            raise RequestError("--topology (the ahead-of-time compile of the train step) is for training runs")
        elif self.init_from or self.grow or self.allow_tokenizer_change:
            raise RequestError("--init-from (start from a trained run's weights) is for training runs")
        else:
            if self.runner not in RUNNERS:
                raise RequestError(f"unknown pipeline runner {self.runner!r} (known: {', '.join(RUNNERS)})")
            if not self.input:
                raise RequestError("a pipeline run needs --input GLOB")
            if not self.data or "@" not in self.data:
                raise RequestError("a pipeline run needs --data NAME@VERSION (the dataset it writes)")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["env"] = {k: v for k, v in self.env}
        d["num_processes"] = self.num_processes
        return d

    def resources(self) -> dict[str, Any]:
        """The resources asked for (recorded in run.json)."""
        keys = (
            "accelerator",
            "nodes",
            "processes_per_node",
            "gpus_per_node",
            "slices",
            "queue",
            "image",
            "max_restarts",
            "signal_grace_s",
            "time_limit",
        )
        return {**{k: getattr(self, k) for k in keys}, "num_processes": self.num_processes}


@dataclasses.dataclass(frozen=True)
class Artifact:
    """A file a target renders (an sbatch script, a manifest, a command list)."""

    name: str  # file name, no directories
    text: str
    executable: bool = False

    def write(self, directory: str) -> str:
        if os.sep in self.name or self.name in ("", ".", ".."):
            raise RequestError(f"artifact name {self.name!r} must be a plain file name")
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, self.name)
        with open(path, "w") as f:
            f.write(self.text)
        if self.executable:
            os.chmod(path, 0o755)
        return path


@dataclasses.dataclass(frozen=True)
class SubmitResult:
    """What a submission did: the scheduler's job id (None for a dry run), the artifacts written, the command."""

    target: str
    name: str
    run_dir: str
    job_id: str | None = None
    artifacts: tuple[str, ...] = ()  # paths written
    command: tuple[str, ...] = ()  # what each host runs
    submitted: bool = False
    status: str | None = None  # e.g. "completed" for a local run that ran to the end
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------ the host command
def train_argv(request: SubmitRequest) -> list[str]:
    """``videopoet train`` as every host of a training run executes it."""
    argv = [*request.program, "train", "--config", request.config, "--data", str(request.data)]
    if request.root:
        argv += ["--root", request.root]
    if request.init_from:
        argv += ["--init-from", request.init_from]
        argv += ["--grow"] if request.grow else []
        argv += ["--allow-tokenizer-change"] if request.allow_tokenizer_change else []
    return argv + ["--out", request.run_dir, "--no-progress", *request.overrides]


def pipeline_argv(request: SubmitRequest) -> list[str]:
    """``videopoet pipeline run`` as the pipeline's driver executes it."""
    name, version = str(request.data).split("@", 1)
    argv = [
        *request.program,
        "pipeline",
        "run",
        "--runner",
        request.runner,
        "--input",
        str(request.input),
        "--name",
        name,
        "--version",
        version,
        "--workers",
        str(request.workers),
        "--config",
        request.config,
    ]
    if request.root:
        argv += ["--root", request.root]
    argv += ["--no-progress", *request.overrides]
    return argv + (["--", *request.runner_args] if request.runner_args else [])


def host_argv(request: SubmitRequest) -> list[str]:
    """The command for the request's kind; every target runs exactly this."""
    return train_argv(request) if request.kind == "train" else pipeline_argv(request)


# ------------------------------------------------------------------------------ checks against the world
def preflight(request: SubmitRequest, devices: int | None = None) -> dict[str, Any]:
    """Check ``request`` before submitting; returns what it resolved (config fingerprint, dataset fingerprint).

    ``devices``: the run's total device count when the target knows it (GPUs, TPU chips) - then the
    mesh must fit it and the global batch must split over its batch axes.
    """
    request.validate()
    out: dict[str, Any] = {}
    _check_writable(request.run_dir)
    if request.kind == "train":
        out.update(_check_train(request, devices))
    else:
        from videopoet.pipelines.config import load_pipeline_config
        from videopoet.schemas import store

        _load(load_pipeline_config, request)
        store.parse_ref(request.data)
    return out


def _load(loader, request: SubmitRequest):
    try:
        return loader(request.config, list(request.overrides))
    except VideoPoetError as e:
        raise RequestError(f"config {request.config!r}: {e}") from None
    except (ValueError, TypeError, KeyError) as e:
        raise RequestError(f"config {request.config!r}: {e}") from None


def _check_train(request: SubmitRequest, devices: int | None) -> dict[str, Any]:
    from videopoet.trainer import checkpoint
    from videopoet.trainer.config import load_train_config

    cfg = _load(load_train_config, request)
    n = request.num_processes
    if cfg.batch_size % n:
        raise RequestError(
            f"global batch_size {cfg.batch_size} does not split over {n} processes; use a multiple of {n}"
        )
    if devices:
        from videopoet.trainer import sharding

        try:
            data, fsdp, tensor = sharding.mesh_shape(cfg.mesh, devices)
        except VideoPoetError as e:
            raise RequestError(f"{devices} devices: {e}") from None
        axes = {"data": data, "fsdp": fsdp, "tensor": tensor}
        shards = 1
        for ax in tuple(cfg.mesh.rules.get("batch", ("data", "fsdp"))):
            shards *= axes[ax]
        if cfg.batch_size % shards:
            raise RequestError(
                f"global batch_size {cfg.batch_size} does not split over the {shards} devices of the "
                f"batch mesh axes (data={data}, fsdp={fsdp}); use a multiple of {shards}"
            )
        if devices % n:
            raise RequestError(f"{devices} devices do not split evenly over {n} processes")
    try:  # a run dir holding another run's config refuses it (resuming it needs the same numbers)
        if _is_local(request.run_dir):
            checkpoint.record_config(request.run_dir, cfg, write=False)
    except VideoPoetError as e:
        raise RequestError(str(e)) from None
    out: dict[str, Any] = {"config_fingerprint": checkpoint.numeric_fingerprint(cfg), "batch_size": cfg.batch_size}
    ds = None
    if request.verify_data:
        from videopoet.trainer import data

        try:
            opened = data.open_datasets(str(request.data), request.root, verify=True)
        except VideoPoetError as e:
            raise RequestError(str(e)) from None
        out["dataset"] = data.data_identity(opened)
        ds = opened[0][0]  # a mixture's datasets agree in vocabulary and tokenizers
    if request.init_from:
        out["init_from"] = _check_init_from(request, opened if ds is not None else None)
    if request.topology:
        out["aot"] = _check_aot(request, ds)
    return out


def _check_init_from(request: SubmitRequest, opened: list | None) -> dict[str, Any] | None:
    """The source run of ``--init-from``, checked as the hosts' ``videopoet train`` will check it: a run
    directory with a checkpoint, the same architecture (or deeper with ``grow``) and, with the datasets
    readable here (``opened``), the same tokenizers unless ``allow_tokenizer_change``. A run dir that
    already has a checkpoint resumes and ignores the source, and a source only the cluster can read is
    left to the hosts: both answer None. The text encoder is left to the hosts (it loads the encoder)."""
    from videopoet.rundir import checkpoints
    from videopoet.trainer import adapt, data
    from videopoet.trainer.config import load_train_config

    if _is_local(request.run_dir) and os.path.isdir(request.run_dir):
        with checkpoints.Checkpoints(request.run_dir, read_only=True) as c:
            if c.latest_step() is not None:
                return None
    if not _is_local(request.init_from):
        return None
    try:
        src = adapt.resolve(request.init_from, grow=request.grow)
        if opened is None:  # without the datasets' vocabulary the architecture cannot be compared here
            return src.record()
        ds = opened[0][0]
        vocab = data.vocabulary_overrides(ds, request.config, request.overrides)
        cfg = load_train_config(request.config, [*vocab, *request.overrides])
        tokenizers = data.dataset_record(ds)["tokenizers"]
        return adapt.check(src, cfg, None, tokenizers, request.allow_tokenizer_change).record()
    except VideoPoetError as e:
        raise RequestError(str(e)) from None


def _check_aot(request: SubmitRequest, ds=None) -> dict[str, Any]:
    """Compile the train step for the request's TPU slice (:mod:`videopoet.trainer.aot`); refuse a step that
    does not fit. With the dataset readable here (``ds``), its vocabulary and clip geometry are used, as the
    hosts' ``videopoet train`` would."""
    from videopoet.trainer import aot, data
    from videopoet.trainer.config import load_train_config

    topology = request.topology
    if topology == "accelerator":
        if not request.accelerator:
            raise RequestError("--topology without a slice takes the TPU slice of --accelerator; there is none")
        topology = request.accelerator
    vocab = data.vocabulary_overrides(ds, request.config, request.overrides) if ds is not None else []
    try:
        cfg = load_train_config(request.config, [*vocab, *request.overrides])
        report = aot.compile_report(cfg, topology, manifest=ds.manifest if ds is not None else None)
    except VideoPoetError as e:
        raise RequestError(f"ahead-of-time compile for {topology}: {e}") from None
    if not report.fits:
        raise RequestError(
            f"the train step does not fit {report.topology}: {report.total_bytes / aot.GIB:.1f} GiB per chip "
            f"needed, {report.hbm_bytes / aot.GIB:.0f} GiB HBM (mesh {report.mesh}, batch {report.batch_size} x "
            f"{report.seq_len}); nothing was submitted"
        )
    return report.to_dict()


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _check_writable(run_dir: str) -> None:
    """The run dir (or its nearest existing parent) is a directory this user can write; remote URIs pass."""
    if not _is_local(run_dir):
        return
    path = os.path.abspath(run_dir[len("file://") :] if run_dir.startswith("file://") else run_dir)
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise RequestError(f"run dir {run_dir}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RequestError(f"run dir {run_dir}: {probe} is not writable")


def write_submit_file(request: SubmitRequest, result: SubmitResult | None = None, **extra: Any) -> str:
    """RUN_DIR/submit.json: the request, its resources and the job id; the trainer copies it into run.json.

    A local run dir gets it by rename, one on object storage by a single upload (both atomic)."""
    body = {
        "request": request.to_dict(),
        "target": request.target,
        "resources": request.resources(),
        "command": host_argv(request),
        **extra,
    }
    if result is not None:
        body["job_id"] = result.job_id
    text = json.dumps(body, indent=2, sort_keys=True, default=str)
    if not _is_local(request.run_dir):
        import fsspec

        from videopoet.schemas import objstore

        objstore.configure()
        path = f"{request.run_dir.rstrip('/')}/{SUBMIT_FILE}"
        fs, fs_path = fsspec.core.url_to_fs(path)
        fs.pipe_file(fs_path, text.encode("utf-8"))
        return path
    os.makedirs(request.run_dir, exist_ok=True)
    path = os.path.join(request.run_dir, SUBMIT_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def read_submit_file(run_dir: str) -> dict[str, Any] | None:
    """RUN_DIR/submit.json (local or on object storage), or ``None`` when the run was not submitted."""
    if not _is_local(run_dir):
        import fsspec

        fs, fs_path = fsspec.core.url_to_fs(f"{run_dir.rstrip('/')}/{SUBMIT_FILE}")
        try:
            return json.loads(fs.cat_file(fs_path))
        except FileNotFoundError:
            return None
    path = os.path.join(run_dir, SUBMIT_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
