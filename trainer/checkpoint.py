"""Run directories and Orbax checkpoints (model + optimizer + data-iterator state).

Run directory layout::

    RUN/config.yaml             the TrainConfig (load_train_config(RUN/config.yaml) gives it back)
    RUN/run.json                dataset ref + fingerprint, vocabulary, text encoder + fingerprint, AGD plan
    RUN/checkpoints/<step>/     Orbax CheckpointManager items:
        state/                  {"params", "opt_state", "step"} (StandardSave; sharded arrays)
        data/                   the Grain iterator state of every process (grain.checkpoint)
        meta/                   JSON: step, dataset fingerprint, config fingerprint
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

import jax
import orbax.checkpoint as ocp

from videopoet.schemas.config import config_fingerprint, dump_yaml, to_dict
from videopoet.schemas.errors import VideoPoetError
from videopoet.trainer.config import TrainConfig, load_train_config

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
# fields that may change between a run and its resumption (they do not affect the numbers)
RESUMABLE_FIELDS = ("progress", "log_every", "checkpoint_every", "keep_checkpoints", "async_checkpoint", "peak_flops")


class RunError(VideoPoetError):
    """A run directory is missing, incomplete, or was made with a different config."""


def numeric_fingerprint(cfg: TrainConfig) -> str:
    d = to_dict(cfg)
    for k in RESUMABLE_FIELDS:
        d.pop(k, None)
    d["data"].pop("prefetch", None)
    d["data"].pop("num_threads", None)
    d["data"].pop("verify", None)
    return config_fingerprint(d)


def manager(run_dir: str, cfg: TrainConfig) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        os.path.abspath(os.path.join(run_dir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(max_to_keep=cfg.keep_checkpoints, create=True,
                                             enable_async_checkpointing=cfg.async_checkpoint),
    )


def save(mngr: ocp.CheckpointManager, step: int, state, data_iter, meta: dict[str, Any], force: bool = False) -> bool:
    import grain

    items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
    if data_iter is not None:
        items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    return mngr.save(step, args=ocp.args.Composite(**items), force=force)


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state, data_iter=None) -> tuple[Any, dict]:
    import grain

    items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
    if data_iter is not None:
        items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    out = mngr.restore(step, args=ocp.args.Composite(**items))
    return out["state"], out["meta"]


def write_run_files(run_dir: str, cfg: TrainConfig, info: dict[str, Any]) -> None:
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, CONFIG_FILE), "w") as f:
        f.write(dump_yaml(cfg))
    with open(os.path.join(run_dir, RUN_FILE), "w") as f:
        json.dump(info, f, indent=2, sort_keys=True, default=str)


def read_run_info(run_dir: str) -> dict[str, Any] | None:
    p = os.path.join(run_dir, RUN_FILE)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def check_resumable(run_dir: str, cfg: TrainConfig) -> None:
    p = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(p):
        return
    old = load_train_config(p)
    if numeric_fingerprint(old) != numeric_fingerprint(cfg):
        a, b = to_dict(old), to_dict(cfg)
        diff = _first_diff(a, b)
        raise RunError(f"{run_dir} holds a run with a different config ({diff}); resume with the same config or use a new --out")


def _first_diff(a, b, path="") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in RESUMABLE_FIELDS and not path:
                continue
            if a.get(k) != b.get(k):
                return _first_diff(a.get(k), b.get(k), f"{path}{k}.")
        return path.rstrip(".") or "?"
    return f"{path.rstrip('.')}: {a!r} -> {b!r}"


@dataclasses.dataclass
class Run:
    cfg: TrainConfig
    model: Any
    params: Any
    step: int
    info: dict[str, Any]
    run_dir: str


def load_run(run_dir: str, step: int | None = None) -> Run:
    """A trained run's config, model and float32 parameters (latest checkpoint unless ``step``)."""
    from videopoet.trainer import model as M

    cfg_path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(cfg_path):
        raise RunError(f"{run_dir} is not a training run directory (no {CONFIG_FILE})")
    cfg = load_train_config(cfg_path)
    mngr = ocp.CheckpointManager(os.path.abspath(os.path.join(run_dir, "checkpoints")))
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise RunError(f"{run_dir} has no checkpoint yet")
    if step not in mngr.all_steps():
        raise RunError(f"{run_dir} has no checkpoint at step {step} (has {sorted(mngr.all_steps())})")
    # params only (partial restore): the optimizer state (2x the params) never enters memory
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # whatever mesh saved it, load onto one device
    abstract = jax.eval_shape(lambda r: M.init_params(cfg.model, r), jax.random.PRNGKey(0))
    item = {"params": jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one), abstract)}
    restore = ocp.args.PyTreeRestore(item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                                     partial_restore=True)
    state = mngr.restore(step, args=ocp.args.Composite(state=restore))["state"]
    mngr.close()
    return Run(cfg=cfg, model=M.build(cfg.model), params=state["params"], step=int(step),
               info=read_run_info(run_dir) or {}, run_dir=run_dir)
