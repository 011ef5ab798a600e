"""Masked-token training of the super-resolution transformer, and its run directory.

One step (:func:`make_train_step`), per example, with randomness from (seed, step) alone:

1. mask: a ratio ``cos(pi/2 * r)``, ``r ~ U(0, 1)`` (MaskGIT's cosine schedule, so training sees the
   ratios decoding goes through), at least one position; the masked positions get MASK;
2. noise augmentation: a level ``u ~ U(0, lowres_noise)``; each low-resolution code is replaced by a
   uniformly random code with probability ``u`` (the cascade feeds the LM's codes, not the
   tokenizer's, so the model must not trust every low-resolution code); with
   ``model.upsampled_input`` each code of the upsampled guess likewise, at the same level;
3. condition dropout: the text is dropped with probability ``drop_text`` and the low-resolution
   input with ``drop_lowres``, independently (what classifier-free guidance needs at sampling);
4. loss: the factorized cross-entropy (:func:`videopoet.trainer.superres.model.factorized_cross_entropy`)
   averaged over the masked positions. ``accuracy``: the fraction of masked positions whose most
   likely code (every factor's argmax) is right. With ``correction_weight`` W the objective counts
   the masked positions where the pair's upsampled guess is wrong 1 + W times (``loss`` stays the
   plain mean). A ``model.upsampled_input`` run also logs ``loss_guess_wrong`` and
   ``accuracy_guess_wrong``, measured on the masked positions where the guess is wrong.

Run directory (through :mod:`videopoet.rundir`)::

    RUN/superres.yaml          the SRTrainConfig (load_sr_config(RUN/superres.yaml) gives it back)
    RUN/superres.json          kind, pair-set fingerprint, the pairs' source (data: a dataset's ref, uri,
                               fingerprint and skipped counts), parameter count, the resolved config
    RUN/checkpoints/<step>/    Orbax: {"state": {"params", "opt_state", "step"}}
    RUN/metrics.jsonl, RUN/tb/, RUN/loss_curve.png

Initialisation from another run (``init_from``): a new run starts from the latest parameters of a trained
super-resolution run whose model, text encoder, text length and pair tokenizers (the dataset's video, audio
and text tokenizers, as ``superres.json`` records them) are the same, with a fresh optimizer and
its own schedule, steps and loss (task adaptation, as the LM's ``--init-from``); ``superres.json``
records the source run and step under ``init_from``. Its own checkpoints then resume it as any run.

Resume: a run directory with checkpoints continues from the latest step (the same config except
for the run length and logging cadence, and the same pairs); because batches and randomness are
functions of (seed, step), the resumed run's parameters equal an uninterrupted run's.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Sequence

import fsspec
import jax
import jax.numpy as jnp
import optax

from videopoet.rundir import checkpoints, record
from videopoet.rundir.loop import Hook, Run, StepInfo
from videopoet.rundir.metrics import Panel
from videopoet.schemas.config import to_dict
from videopoet.schemas.errors import VideoPoetError
from videopoet.trainer import adapt
from videopoet.trainer.superres import model as sr_model
from videopoet.trainer.superres.config import SRTrainConfig, load_sr_config
from videopoet.trainer.superres.data import DatasetPairs, PairSet

CONFIG_FILE = "superres.yaml"
INFO_FILE = "superres.json"
KIND = "superres"
RESUMABLE_FIELDS = ("steps", "progress", "log_every", "checkpoint_every", "keep_checkpoints")
LOSS_PANELS = (
    Panel("masked-token loss (nats)", ("loss",), log_y=True),
    Panel("accuracy on masked tokens", ("accuracy",)),
)


class SRRunError(VideoPoetError):
    """A super-resolution run directory is missing, incomplete, or was made with another config."""


# ---------------------------------------------------------------------------------------- step
def learning_rate(cfg: SRTrainConfig):
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` of the peak at ``steps``."""
    warm = max(cfg.warmup_steps, 1)
    total = max(cfg.steps, warm + 1)
    return optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, warm, total, cfg.learning_rate * cfg.min_lr_ratio)


def make_optimizer(cfg: SRTrainConfig):
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip) if cfg.grad_clip else optax.identity(),
        optax.adamw(learning_rate(cfg), b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay),
    )


def init_state(cfg: SRTrainConfig) -> dict:
    params = sr_model.init_params(cfg.model, jax.random.PRNGKey(cfg.seed))
    return {"params": params, "opt_state": make_optimizer(cfg).init(params), "step": jnp.zeros((), jnp.int32)}


def corrupt(cfg: SRTrainConfig, batch: dict, rng) -> dict:
    """The model's inputs for one training step (module docstring, 1-3): masked high-resolution codes
    ``tokens``, the positions ``masked``, noisy ``lowres``, ``lowres_keep`` and the ``text_mask`` after dropout."""
    mc = cfg.model
    high = batch["high"]
    b = high.shape[0]
    n = mc.tokens
    r_ratio, r_pos, r_level, r_noise, r_codes, r_text, r_low = jax.random.split(rng, 7)
    ratio = jnp.cos(0.5 * jnp.pi * jax.random.uniform(r_ratio, (b,)))
    n_mask = jnp.clip(jnp.ceil(ratio * n), 1, n).astype(jnp.int32)
    rank = jnp.argsort(jnp.argsort(jax.random.uniform(r_pos, (b, n)), axis=1), axis=1)
    masked = (rank < n_mask[:, None]).reshape(high.shape)
    level = jax.random.uniform(r_level, (b, 1, 1, 1), maxval=cfg.lowres_noise)
    noisy = jax.random.uniform(r_noise, batch["low"].shape) < level
    random_codes = jax.random.randint(r_codes, batch["low"].shape, 0, mc.codebook_size, jnp.int32)
    keep_text = jax.random.uniform(r_text, (b,)) >= cfg.drop_text
    out = {
        "tokens": jnp.where(masked, sr_model.MASK, high),
        "masked": masked,
        "lowres": jnp.where(noisy, random_codes, batch["low"]),
        "lowres_keep": jax.random.uniform(r_low, (b,)) >= cfg.drop_lowres,
        "text_mask": batch["text_mask"] & keep_text[:, None],
        "upsampled": None,
    }
    if mc.upsampled_input:  # the guess is made from the low-resolution tokens: noised at the same level
        r_up, r_up_codes = jax.random.split(jax.random.fold_in(rng, 1))
        noisy_up = jax.random.uniform(r_up, high.shape) < level
        up_codes = jax.random.randint(r_up_codes, high.shape, 0, mc.codebook_size, jnp.int32)
        out["upsampled"] = jnp.where(noisy_up, up_codes, batch["upsampled"])
    return out


def masked_loss(cfg: SRTrainConfig, params, batch: dict, rng) -> tuple[jax.Array, dict]:
    mc = cfg.model
    inp = corrupt(cfg, batch, rng)
    logits = sr_model.SuperResTransformer(mc).apply(
        {"params": params},
        inp["tokens"],
        inp["lowres"],
        inp["lowres_keep"],
        batch["text_emb"],
        inp["text_mask"],
        inp["upsampled"],
    )
    ce = sr_model.factorized_cross_entropy(logits, batch["high"], mc, cfg.label_smoothing)
    w = inp["masked"].astype(jnp.float32)
    count = jnp.maximum(jnp.sum(w), 1.0)
    loss = jnp.sum(ce * w) / count
    right = jnp.all(jnp.argmax(logits, -1) == sr_model.factorize(batch["high"], mc), axis=-1)
    metrics = {"loss": loss, "accuracy": jnp.sum(right * w) / count, "mask_fraction": jnp.mean(w)}
    objective = loss
    if mc.upsampled_input:  # the pair's own guess, before noise: where upsampling itself is wrong
        wrong = (batch["upsampled"] != batch["high"]).astype(jnp.float32) * w
        n_wrong = jnp.maximum(jnp.sum(wrong), 1.0)
        metrics |= {
            "loss_guess_wrong": jnp.sum(ce * wrong) / n_wrong,
            "accuracy_guess_wrong": jnp.sum(right * wrong) / n_wrong,
        }
        if cfg.correction_weight:
            weighted = w + cfg.correction_weight * wrong
            objective = jnp.sum(ce * weighted) / jnp.maximum(jnp.sum(weighted), 1.0)
    return objective, metrics


@functools.lru_cache(maxsize=4)
def make_train_step(cfg: SRTrainConfig):
    """The jit-compiled ``(state, batch) -> (state, metrics)`` (cached per config)."""
    opt = make_optimizer(cfg)
    sched = learning_rate(cfg)
    base = jax.random.PRNGKey(cfg.seed + 1)

    def step_fn(state, batch):
        rng = jax.random.fold_in(base, state["step"])
        (_, metrics), grads = jax.value_and_grad(functools.partial(masked_loss, cfg), has_aux=True)(
            state["params"], batch, rng
        )
        updates, opt_state = opt.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics = dict(metrics, grad_norm=optax.tree.norm(grads), lr=sched(state["step"]))
        return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, metrics

    return jax.jit(step_fn, donate_argnums=(0,))


# ---------------------------------------------------------------------------------------- run
def pairs_fingerprint(pairs: PairSet | DatasetPairs) -> str:
    """What a resumed run must see again: the arrays of a :class:`PairSet`, or a dataset's fingerprint
    and the pairs taken from it (:meth:`DatasetPairs.fingerprint`)."""
    return pairs.fingerprint()


def _load_recorded(path: str) -> SRTrainConfig:
    return load_sr_config(path)


def write_config(run_dir: str, cfg: SRTrainConfig) -> SRTrainConfig | None:
    """Write RUN/superres.yaml, or refuse a resume whose config differs beyond RESUMABLE_FIELDS."""
    return record.record_config(
        run_dir, cfg, filename=CONFIG_FILE, load=_load_recorded, changeable=RESUMABLE_FIELDS, error=SRRunError
    )


def read_info(run_dir: str) -> dict | None:
    """RUN/superres.json (None when the run directory has none)."""
    fs, root = fsspec.core.url_to_fs(run_dir)
    path = f"{root.rstrip('/')}/{INFO_FILE}"
    if not fs.exists(path):
        return None
    with fs.open(path, "r") as f:
        return json.load(f)


def _write_info(run_dir: str, info: dict) -> None:
    fs, root = fsspec.core.url_to_fs(run_dir)
    with fs.open(f"{root.rstrip('/')}/{INFO_FILE}", "w") as f:
        f.write(json.dumps(info, indent=2, sort_keys=True) + "\n")


# fields of a source run that a run initialised from it must share besides the model: what its
# parameters were trained to read
INIT_FROM_FIELDS = ("text_encoder", "text_len")


def init_from_source(source: str, cfg: SRTrainConfig, step: int | None = None, tokenizers: dict | None = None) -> dict:
    """The record (run_dir, step, config) of the super-resolution run ``source`` (its latest checkpoint
    unless ``step`` is given) for a run of ``cfg``, read from its config alone; refuses, naming the fields,
    a source whose architecture (as the LM's ``--init-from`` compares it), text encoder or text length
    differs, whose pairs were tokenized by other tokenizers than this run's (``tokenizers``, by modality:
    its codes mean other things), or that has no checkpoint."""
    src_cfg = load_run_config(source)
    differ = adapt.architecture_differences(src_cfg.model, cfg.model)
    for k in INIT_FROM_FIELDS:
        if getattr(src_cfg, k) != getattr(cfg, k):
            differ.append(f"{k} {getattr(src_cfg, k)!r} != {getattr(cfg, k)!r}")
    theirs = (((read_info(source) or {}).get("data") or {}).get("dataset") or {}).get("tokenizers")
    for m, c in adapt.tokenizer_changes(theirs, tokenizers).items():
        differ.append(f"tokenizers.{m} {c['from'][:12]} != {c['to'][:12]}")
    if differ:
        raise SRRunError(f"init_from {source}: {', '.join(differ)} (only the training may differ from the source run)")
    if step is None:
        with checkpoints.Checkpoints(source, read_only=True) as c:
            step = c.latest_step()
        if step is None:
            raise SRRunError(f"init_from {source}: the run has no checkpoint")
    return {"run_dir": source, "step": step, "config": src_cfg.name}


def train(
    cfg: SRTrainConfig,
    pairs: PairSet | DatasetPairs,
    out: str,
    *,
    hooks: Sequence[Hook] = (),
    init_from: str | None = None,
) -> dict:
    """Train (or resume) the super-resolution transformer on ``pairs`` into the run directory ``out``.

    ``hooks``: :class:`~videopoet.rundir.loop.Hook` s called every N steps after the step's row is logged
    and its checkpoint saved. ``init_from``: a trained super-resolution run to start from (module
    docstring); a resumed run must name the same one. Returns status, step, resumed_from, the last
    logged row and the loss curve."""
    pairs.check(cfg.model, cfg.text_len)
    fingerprint = pairs_fingerprint(pairs)
    old = read_info(out)
    if old is not None and old.get("pairs_fingerprint") != fingerprint:
        raise SRRunError(f"{out} holds a run trained on other pairs; resume with the same pairs or use a new --out")
    if init_from and "://" not in init_from:
        init_from = os.path.abspath(init_from)
    recorded_source = (old or {}).get("init_from", {}).get("run_dir")
    if old is not None and recorded_source != init_from:
        raise SRRunError(
            f"{out} was started from {recorded_source or 'its own initialisation'}, not from "
            f"{init_from or 'its own initialisation'}: resume it as it was started, or use a new --out"
        )
    source_record = None
    if init_from:  # a resumed run keeps the step it started from, not the source's latest
        tokenizers = (pairs.describe().get("dataset") or {}).get("tokenizers")
        step = old["init_from"]["step"] if old is not None else None
        source_record = init_from_source(init_from, cfg, step, tokenizers)
    write_config(out, cfg)
    _write_info(
        out,
        {
            "kind": KIND,
            "pairs_fingerprint": fingerprint,
            "pairs": len(pairs),
            "data": pairs.describe(),
            "params": sr_model.count_params(sr_model.abstract_params(cfg.model)),
            "config": to_dict(cfg),
            **({"init_from": source_record} if source_record else {}),
        },
    )
    ckpts = checkpoints.Checkpoints(out, max_to_keep=cfg.keep_checkpoints)
    try:
        state = init_state(cfg)
        resumed_from = ckpts.latest_step()
        if resumed_from is not None:
            state, _ = ckpts.restore(resumed_from, checkpoints.abstract(state))
        elif source_record is not None:  # the source's parameters are read only when the run starts
            _, source_params, _ = load_run(init_from, source_record["step"])
            params = jax.tree_util.tree_map(lambda f, s: jnp.asarray(s, f.dtype), state["params"], source_params)
            state = {"params": params, "opt_state": make_optimizer(cfg).init(params), "step": state["step"]}
        start = int(state["step"])
        step_fn = make_train_step(cfg)

        def row_of(info: StepInfo) -> dict:
            row = {k: float(v) for k, v in jax.device_get(dict(info.metrics)).items()}
            row["steps_per_s"] = (info.step - start) / max(time.time() - run.t0, 1e-9)
            return row

        run = Run(
            out,
            total_steps=cfg.steps,
            start_step=start,
            save=lambda n, s: ckpts.save(n, s),
            checkpoint_every=cfg.checkpoint_every,
            progress=cfg.progress,
            desc="superres",
            panels=LOSS_PANELS,
        )
        run.add_log_hook(row_of, every=cfg.log_every)
        for hook in hooks:
            run.add_hook(hook)
        done = start
        with run:
            while done < cfg.steps:
                batch = {k: jnp.asarray(v) for k, v in pairs.batch(cfg.seed, done, cfg.batch_size).items()}
                state, metrics = step_fn(state, batch)
                loss = float(metrics["loss"])
                done += 1
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss} at step {done}")
                run.show(loss=f"{loss:.3f}")
                if run.step_done(done, state, metrics):
                    break
    finally:
        ckpts.close()
    png = run.plot()
    return {
        "status": run.status,
        "step": done,
        "resumed_from": resumed_from,
        "last": {k: v for k, v in run.last_row.items() if k != "step"},
        "run_dir": out,
        "loss_curve": png,
        "checkpoint": run.saved_step,
    }


def load_run_config(run_dir: str) -> SRTrainConfig:
    """The recorded config of a super-resolution run directory (refused if it is not one)."""
    info = read_info(run_dir)
    if info is None or info.get("kind") != KIND:
        raise SRRunError(f"{run_dir} is not a super-resolution run (no {INFO_FILE})")
    fs, root = fsspec.core.url_to_fs(run_dir)
    path = f"{root.rstrip('/')}/{CONFIG_FILE}"
    return load_sr_config(fs.unstrip_protocol(path) if "://" in run_dir else path)


def load_run(run_dir: str, step: int | None = None) -> tuple[SRTrainConfig, dict, int]:
    """(config, float32 parameters, step) of a super-resolution run directory (latest step unless given)."""
    cfg = load_run_config(run_dir)
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), jax.eval_shape(lambda: init_state(cfg)["params"])
    )
    try:
        found, sub = checkpoints.read_subtree(run_dir, {"params": abstract}, step)
    except FileNotFoundError as e:
        raise SRRunError(str(e)) from None
    return cfg, sub["params"], found
