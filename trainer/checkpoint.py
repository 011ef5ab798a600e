"""The prefix LM's run directory: its config and identity records, its checkpoints, and :func:`load_run`.

Run directory layout (files written through :mod:`videopoet.rundir`)::

    RUN/config.yaml             the TrainConfig (load_train_config(RUN/config.yaml) gives it back)
    RUN/run.json                dataset ref + fingerprint, vocabulary, text encoder + fingerprint, AGD plan,
                                resolved config, identity (version, git commit, packages hash, launch, target);
                                for a mixture of datasets also dataset.mixture (each dataset, fingerprint,
                                weight) and dataset.schedule (the weights in force from each step)
    RUN/checkpoints/<step>/     Orbax CheckpointManager items:
        state/                  {"params", "opt_state", "step"} (StandardSave; sharded arrays, restored onto
                                whatever mesh the resuming run has)
        meta/                   JSON: step, dataset fingerprint, config fingerprint, processes, devices (and
                                for a mixture of datasets data_positions: steps drawn from each dataset)
        data/                   older checkpoints only: per-process Grain iterator states (never read: the
                                data position is the step, so a checkpoint does not tie a run to a process count)
    RUN/metrics.jsonl           one JSON row per logged step (loss, per-task loss/accuracy, tokens/s, MFU, ...)
    RUN/tb/                     TensorBoard events (when tensorboardX is installed)
    RUN/loss_curve.png

:func:`load_run` is what generation uses: ``run = load_run(RUN)`` -> ``run.cfg``, ``run.model``,
``run.params`` (float32, latest or given step), ``run.step``, ``run.info`` (run.json).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import fsspec
import jax

from videopoet.rundir import checkpoints, record
from videopoet.schemas import objstore
from videopoet.schemas.config import config_fingerprint, to_dict
from videopoet.schemas.errors import VideoPoetError
from videopoet.trainer.config import TrainConfig, load_train_config

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
# fields that may change between a run and its resumption (they do not affect the numbers)
RESUMABLE_FIELDS = (
    "progress",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "async_checkpoint",
    "peak_flops",
    "data.prefetch",
    "data.num_threads",
    "data.verify",
    "eval",  # evaluation during training reads the weights, never changes them
)


class RunError(VideoPoetError):
    """A run directory is missing, incomplete, or was made with a different config."""


# options added after runs were recorded, with the value that computes what those runs computed: at that
# value an option is left out of the fingerprint, so the runs resume and extend with their own checkpoints
NEUTRAL_DEFAULTS = {"change_weight": 0.0}


def numeric_fingerprint(cfg: TrainConfig, without: tuple[str, ...] = ()) -> str:
    """sha256 of the config without the RESUMABLE_FIELDS (and ``without``): equal for runs that compute the
    same numbers."""
    d = to_dict(cfg)
    dropped = [*RESUMABLE_FIELDS, *without, *(k for k, v in NEUTRAL_DEFAULTS.items() if _field(d, k) == v)]
    for name in dropped:
        *parents, leaf = name.split(".")
        node = d
        for p in parents:
            node = node[p]
        node.pop(leaf, None)
    return config_fingerprint(d)


def _field(d: dict, name: str):
    for part in name.split("."):
        d = d[part]
    return d


def open_checkpoints(run_dir: str, cfg: TrainConfig) -> checkpoints.Checkpoints:
    """The run's checkpoints; a wsd run keeps its decay-start checkpoint (what an extension goes back to)."""
    keep = [cfg.decay_start] if 0 < cfg.decay_start < cfg.steps else []
    return checkpoints.Checkpoints(
        run_dir, max_to_keep=cfg.keep_checkpoints, async_save=cfg.async_checkpoint, keep_steps=keep
    )


def record_config(run_dir: str, cfg: TrainConfig, *, write: bool = True, changeable=()) -> TrainConfig | None:
    """Write RUN/config.yaml (``write``: this process writes), or refuse a resume whose config computes
    other numbers (fields other than RESUMABLE_FIELDS and ``changeable``). Returns the recorded config
    (None for a new run)."""
    return record.record_config(
        run_dir,
        cfg,
        filename=CONFIG_FILE,
        load=load_train_config,
        changeable=(*RESUMABLE_FIELDS, *changeable),
        error=RunError,
        write=write,
    )


def write_run_info(run_dir: str, info: dict[str, Any]) -> None:
    """RUN/run.json (a local path or an fsspec URI; an object store replaces the object whole)."""
    fs, root = fsspec.core.url_to_fs(run_dir)
    fs.makedirs(root, exist_ok=True)
    blob = json.dumps(info, indent=2, sort_keys=True, default=str)
    if objstore.is_remote(run_dir):
        fs.pipe_file(f"{root}/{RUN_FILE}", blob.encode())
        return
    tmp = os.path.join(root, f".{RUN_FILE}.tmp-{os.getpid()}")  # readers never see a partial file
    with open(tmp, "w") as f:
        f.write(blob)
    os.replace(tmp, os.path.join(root, RUN_FILE))


def read_run_info(run_dir: str) -> dict[str, Any] | None:
    fs, root = fsspec.core.url_to_fs(run_dir)
    try:
        return json.loads(fs.cat_file(f"{root}/{RUN_FILE}"))
    except FileNotFoundError:
        return None


def run_dir_exists(run_dir: str) -> bool:
    """Whether the directory ``run_dir`` (a path, or a URI with objects under it) exists (``default``:
    whether the package ships its model)."""
    from videopoet.trainer import export

    if run_dir == export.DEFAULT_NAME:
        return export.is_model_dir(export.DEFAULT)
    fs, root = fsspec.core.url_to_fs(run_dir)
    if objstore.is_remote(run_dir):
        fs.invalidate_cache(root)
        return fs.exists(root)
    return os.path.isdir(root)


def is_run_dir(run_dir: str) -> bool:
    """Whether ``run_dir`` (a path or URI) holds a training run's config record."""
    fs, root = fsspec.core.url_to_fs(run_dir)
    if objstore.is_remote(run_dir):
        fs.invalidate_cache(root)
    return fs.exists(f"{root}/{CONFIG_FILE}")


@dataclasses.dataclass
class Run:
    cfg: TrainConfig
    model: Any
    params: Any
    step: int
    info: dict[str, Any]
    run_dir: str


def load_run(run_dir: str, step: int | None = None) -> Run:
    """A trained run's config, model and float32 parameters (latest checkpoint unless ``step``); also a
    model directory (:mod:`videopoet.trainer.export`), and ``default``, the shipped one."""
    from videopoet.trainer import export, model

    run_dir = export.resolve(run_dir)
    if export.is_model_dir(run_dir):
        if step is not None:
            raise RunError(f"{run_dir} is a model directory: it holds one step, give no --step")
        return export.load_model_dir(run_dir)

    if not is_run_dir(run_dir):
        raise RunError(f"{run_dir} is not a training run directory (no {CONFIG_FILE})")
    cfg = load_train_config(f"{run_dir.rstrip('/')}/{CONFIG_FILE}")
    # params only: the optimizer state (2x the params) never enters memory
    spec = jax.eval_shape(lambda r: model.init_params(cfg.model, r), jax.random.PRNGKey(0))
    try:
        step, state = checkpoints.read_subtree(run_dir, {"params": spec}, step)
    except FileNotFoundError as e:
        raise RunError(f"{run_dir} has no usable checkpoint: {e}") from None
    return Run(
        cfg=cfg,
        model=model.build(cfg.model),
        params=state["params"],
        step=int(step),
        info=read_run_info(run_dir) or {},
        run_dir=run_dir,
    )
