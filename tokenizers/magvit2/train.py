"""MAGVIT-v2 training: losses, jit-compiled train steps, image-first then inflation, Orbax checkpoints.

Generator loss: ``l1 * |x - x'| + l2 * (x - x')^2 + w_ent(step) * (H_sample - gamma * H_codebook)
+ commitment * ||z - sg(q)||^2`` and, with ``gan_weight > 0`` (from ``gan_start_step``), a
non-saturating adversarial term from a small 3D discriminator trained with LeCam regularization
(``||D(x) - ema(D(fake))||^2 + ||D(fake) - ema(D(real))||^2``). The entropy weight anneals linearly
from ``entropy_weight_start`` to ``entropy_weight`` over ``entropy_anneal_steps``. With
``perceptual_weight > 0`` an LPIPS-style distance over the user's VGG-16 weights
(``perceptual_checkpoint``, see :mod:`.perceptual`) is added, on every frame or on
``perceptual_frames`` random frames per clip; the VGG weights are a frozen input of the step, recorded
by sha256 in ``OUT/perceptual.json``. Optimizer: Adam b=(adam_b1, adam_b2) (paper (0, 0.99)), linear
warm-up, global-norm clipping; an EMA copy of the weights (``ema_decay``) is what gets exported.

Image-first: the first ``image_steps`` train an image model (``temporal_kernel=1``: every kernel
1xkxk) on single frames; then :func:`~.model.inflate_params` puts each 2D kernel on the last
(current-frame) tap of the causal 3D kernel, zeros elsewhere, and video training continues for
``steps`` steps (fresh optimizer moments).

Run directory layout::

    OUT/config.yaml            the MagvitConfig (YAML, loadable with load_magvit_config)
    OUT/checkpoints/<step>/    Orbax CheckpointManager: params, ema, opt state, disc, lecam, step
    OUT/model.safetensors      EMA weights of the last step (what ``magvit2.load(OUT)`` prefers)
    OUT/metrics.jsonl, OUT/tb/ one JSON line per logged step, and TensorBoard events
    OUT/loss_curve.png         the loss curves
    OUT/perceptual.json        (perceptual loss only) the VGG weights' sha256: a resume must use the same

(written through :mod:`videopoet.rundir`; a SIGTERM or ``max_seconds`` saves the step, then stops).

Resume: a run directory with checkpoints continues from the latest step (same config required);
batches are a pure function of ``(seed, step)``, so the resumed run sees the same data.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from videopoet.rundir import checkpoints, record
from videopoet.rundir.loop import Hook, Run, StepInfo
from videopoet.rundir.metrics import Panel
from videopoet.schemas.errors import VideoPoetError
from videopoet.tokenizers.magvit2 import lfq, perceptual
from videopoet.tokenizers.magvit2.config import MagvitConfig, image_config, load_magvit_config, phase_of
from videopoet.tokenizers.magvit2.data import ClipPool, take
from videopoet.tokenizers.magvit2.model import (
    Discriminator,
    MagvitVQ,
    deflate_params,
    finer_time_params,
    grow_params,
    inflate_params,
)
from videopoet.tokenizers.magvit2.tokenizer import (
    CONFIG_FILE,
    INIT_FROM_DIR,
    MagvitTokenizer,
    arch_config,
    init_params,
    init_source_params,
    load_dir,
    seeded_init,
    to_video_params,
)


class TrainConfigMismatchError(VideoPoetError, ValueError):
    """Resuming a run directory with a different config."""


def entropy_weight_at(cfg: MagvitConfig, step) -> jax.Array:
    if cfg.entropy_anneal_steps <= 0:
        return jnp.asarray(cfg.entropy_weight, jnp.float32)
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / cfg.entropy_anneal_steps, 0.0, 1.0)
    return cfg.entropy_weight_start + (cfg.entropy_weight - cfg.entropy_weight_start) * frac


def lr_schedule(cfg: MagvitConfig, lr: float, phase_steps: int = 0) -> optax.Schedule:
    """Linear warm-up, constant, then (``lr_decay_steps`` > 0) a cosine decay over the phase's last
    ``lr_decay_steps`` steps to ``lr_min_ratio * lr``. ``phase_steps``: the phase's length (the
    optimizer count restarts at the image-to-video inflation and at ``--init-from``)."""
    warm = max(cfg.warmup_steps, 1)
    parts, bounds = [optax.linear_schedule(lr / warm, lr, warm)], [warm]
    decay = min(cfg.lr_decay_steps, phase_steps) if phase_steps > 0 else 0
    start = max(phase_steps - decay, warm)
    if decay > 0 and start < phase_steps:
        parts += [
            optax.constant_schedule(lr),
            optax.cosine_decay_schedule(lr, phase_steps - start, alpha=cfg.lr_min_ratio),
        ]
        bounds += [start]
    else:
        parts.append(optax.constant_schedule(lr))
    return optax.join_schedules(parts, bounds)


def phase_length(cfg: MagvitConfig, phase: str) -> int:
    """Steps of a phase as the schedule sees them (0 when the schedule does not depend on it)."""
    if cfg.lr_decay_steps <= 0:
        return 0
    return cfg.image_steps if phase == "image" else cfg.steps


def make_optimizer(cfg: MagvitConfig, lr: float, phase_steps: int = 0) -> optax.GradientTransformation:
    sched = lr_schedule(cfg, lr, phase_steps)
    adam = (
        optax.adamw(sched, b1=cfg.adam_b1, b2=cfg.adam_b2, weight_decay=cfg.weight_decay)
        if cfg.weight_decay > 0
        else optax.adam(sched, b1=cfg.adam_b1, b2=cfg.adam_b2)
    )
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adam) if cfg.grad_clip > 0 else adam


def disc_params_init(cfg: MagvitConfig, frames: int, seed: int):
    d = Discriminator(cfg.disc_channels)
    spec = jax.eval_shape(lambda k: d.init(k, jnp.zeros((1, frames, cfg.height, cfg.width, 3))), jax.random.PRNGKey(0))
    return seeded_init(spec["params"], seed + 1)


def init_state(cfg: MagvitConfig, phase_cfg: MagvitConfig, frames: int, step: int = 0, params=None, disc=None) -> dict:
    params = init_params(phase_cfg, cfg.seed) if params is None else params
    # built from host copies and one jitted optimizer init: eager per-leaf jnp ops would each compile
    state = {
        "step": jnp.asarray(np.int32(step)),
        "params": _device_copy(params),
        "ema": _device_copy(params),
        "opt": _opt_init(_step_key(cfg), "gen")(params),
    }
    if cfg.gan_weight > 0:
        dparams = disc_params_init(cfg, frames, cfg.seed) if disc is None else disc
        state["disc"] = _device_copy(dparams)
        state["disc_opt"] = _opt_init(_step_key(cfg), "disc")(dparams)
        state["lecam"] = jnp.asarray(np.zeros((2,), np.float32))  # ema of D(real), ema of D(fake)
    return state


def _device_copy(tree):
    def copy(x):
        return jnp.array(x) if isinstance(x, jax.core.Tracer) else jnp.asarray(np.array(x))  # traced: eval_shape

    return jax.tree_util.tree_map(copy, tree)


@functools.lru_cache(maxsize=8)
def _opt_init(cfg: MagvitConfig, which: str):
    lr = cfg.learning_rate if which == "gen" else cfg.disc_learning_rate
    return jax.jit(make_optimizer(cfg, lr).init)


# ---------------------------------------------------------------------------------- train step
# fields the step function never reads (run length, logging, data shapes, init seed): reset in the
# cache key so runs that differ only in them share one compiled step
_STEP_FREE_FIELDS = (
    "name",
    "height",
    "width",
    "frames",
    "train_frames",
    "batch_size",
    "image_batch_size",
    "image_steps",
    "steps",
    "seed",
    "log_every",
    "checkpoint_every",
    "pool_clips",
    "image_frames_per_clip",
    "perceptual_checkpoint",
)  # the VGG weights are an input of the step


def _step_key(cfg: MagvitConfig) -> MagvitConfig:
    base = MagvitConfig()
    return dataclasses.replace(cfg, **{f: getattr(base, f) for f in _STEP_FREE_FIELDS})


def make_train_step(cfg: MagvitConfig, phase_cfg: MagvitConfig, phase_steps: int = 0, perceptual_weights=None):
    """A jitted ``(state, batch_uint8) -> (state, metrics)`` for this config and phase
    (``phase_steps``: :func:`phase_length`, which the learning-rate schedule needs).

    With ``perceptual_weight > 0``, ``perceptual_weights`` (from :func:`.perceptual.load_weights`) are
    bound to the step as a frozen input (loaded from ``perceptual_checkpoint`` when not given)."""
    fn = _make_train_step(_step_key(cfg), _step_key(phase_cfg), phase_steps)
    if cfg.perceptual_weight <= 0:
        return fn
    if perceptual_weights is None:
        perceptual_weights = perceptual.load_weights(cfg.perceptual_checkpoint)[0]
    return functools.partial(fn, pweights=perceptual_weights)


def moving_pixel_weights(x, moving_weight: float):
    """Per-pixel loss weights [B, T, H, W, 1] of clips ``x`` [B, T, H, W, C] in [-1, 1]: 1 plus
    ``moving_weight`` times the pixel's distance from its clip's mean over time, averaged over the
    channels. A static pixel (and every pixel of a 1-frame clip) weighs 1; one an object crosses weighs
    up to 1 + 2 x ``moving_weight`` in the frames where the object covers it."""
    dev = jnp.mean(jnp.abs(x - jnp.mean(x, axis=1, keepdims=True)), axis=-1, keepdims=True)
    return 1.0 + moving_weight * jax.lax.stop_gradient(dev)


@functools.lru_cache(maxsize=8)
def _make_train_step(cfg: MagvitConfig, phase_cfg: MagvitConfig, phase_steps: int = 0):
    model = MagvitVQ(arch_config(phase_cfg))
    disc = Discriminator(cfg.disc_channels)
    opt = make_optimizer(cfg, cfg.learning_rate, phase_steps)
    dopt = make_optimizer(cfg, cfg.disc_learning_rate, phase_steps)
    use_gan = cfg.gan_weight > 0

    freeze = cfg.freeze_encoder
    use_perceptual = cfg.perceptual_weight > 0

    def gen_loss(params, dparams, x, step, pweights):
        if freeze:  # no gradient reaches the encoder (XLA drops its backward pass)
            params = dict(params, encoder=jax.lax.stop_gradient(params["encoder"]))
        recon, z, codes = model.apply({"params": params}, x)
        l1 = jnp.mean(jnp.abs(recon - x))
        l2 = jnp.mean(jnp.square(recon - x))
        if cfg.moving_weight > 0:
            w = moving_pixel_weights(x, cfg.moving_weight)
            l1_fit = jnp.sum(w * jnp.abs(recon - x)) / (jnp.sum(w) * x.shape[-1])
            l2_fit = jnp.sum(w * jnp.square(recon - x)) / (jnp.sum(w) * x.shape[-1])
        else:
            l1_fit, l2_fit = l1, l2
        ent, aux = lfq.entropy_loss(
            z, cfg.lfq_scale, cfg.entropy_temperature, cfg.codebook_entropy_weight, cfg.exact_entropy_max_bits
        )
        commit = lfq.commitment_loss(z, cfg.lfq_scale)
        total = (
            cfg.l1_weight * l1_fit
            + cfg.l2_weight * l2_fit
            + entropy_weight_at(cfg, step) * ent
            + cfg.commitment_weight * commit
        )
        metrics = {"l1": l1, "l2": l2, "entropy": ent, "commit": commit, **aux}
        if use_perceptual:  # frames drawn as a pure function of the step
            key = jax.random.fold_in(jax.random.PRNGKey(0), step)
            p_loss = perceptual.video_loss(pweights, x, recon, cfg.perceptual_frames, key)
            total = total + cfg.perceptual_weight * p_loss
            metrics["perceptual"] = p_loss
        if use_gan:
            on = (step >= cfg.gan_start_step).astype(jnp.float32)
            g_adv = jnp.mean(jax.nn.softplus(-disc.apply({"params": dparams}, recon)))
            total = total + on * cfg.gan_weight * g_adv
            metrics["g_adv"] = g_adv
        mse = jnp.mean(jnp.square((recon - x) * 0.5), axis=(1, 2, 3, 4))  # on [0, 1] pixels
        metrics["psnr"] = jnp.mean(-10.0 * jnp.log10(jnp.maximum(mse, 1e-10)))
        metrics["loss"] = total
        return total, (metrics, recon, codes)

    def disc_loss(dparams, real, fake, lecam):
        lr_, lf_ = disc.apply({"params": dparams}, real), disc.apply({"params": dparams}, fake)
        adv = jnp.mean(jax.nn.softplus(-lr_)) + jnp.mean(jax.nn.softplus(lf_))
        reg = jnp.mean(jnp.square(lr_ - lecam[1])) + jnp.mean(jnp.square(lf_ - lecam[0]))
        return adv + cfg.lecam_weight * reg, (jnp.mean(lr_), jnp.mean(lf_), adv)

    def step_fn(state, batch, pweights=None):
        x = batch.astype(jnp.float32) / 127.5 - 1.0
        step = state["step"]
        (_, (metrics, recon, codes)), grads = jax.value_and_grad(gen_loss, has_aux=True)(
            state["params"], state.get("disc"), x, step, pweights
        )
        updates, opt_state = opt.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        ema = jax.tree_util.tree_map(lambda e, p: cfg.ema_decay * e + (1 - cfg.ema_decay) * p, state["ema"], params)
        if freeze:  # exactly unchanged (an EMA of a constant can still move by rounding)
            params = dict(params, encoder=state["params"]["encoder"])
            ema = dict(ema, encoder=state["ema"]["encoder"])
        new = dict(state, step=step + 1, params=params, ema=ema, opt=opt_state)
        metrics["grad_norm"] = optax.tree.norm(grads)
        # batch codebook usage (fraction of codes seen in this batch)
        counts = jnp.zeros((cfg.codebook_size,), jnp.int32).at[codes.ravel()].add(1)
        metrics["batch_usage"] = jnp.mean((counts > 0).astype(jnp.float32))
        if use_gan:
            on = (step >= cfg.gan_start_step).astype(jnp.float32)
            (dl, (mr, mf, adv)), dgrads = jax.value_and_grad(disc_loss, has_aux=True)(
                state["disc"], x, jax.lax.stop_gradient(recon), state["lecam"]
            )
            dgrads = jax.tree_util.tree_map(lambda g: g * on, dgrads)
            dup, dopt_state = dopt.update(dgrads, state["disc_opt"], state["disc"])
            new["disc"] = optax.apply_updates(state["disc"], dup)
            new["disc_opt"] = dopt_state
            d = cfg.lecam_ema
            new["lecam"] = jnp.where(on > 0, state["lecam"] * d + (1 - d) * jnp.stack([mr, mf]), state["lecam"])
            metrics.update(d_loss=dl, d_real=mr, d_fake=mf)
        return new, metrics

    return jax.jit(step_fn, donate_argnums=(0,))


# ---------------------------------------------------------------------------------- checkpoints
def state_template(cfg: MagvitConfig, step: int) -> dict:
    """Shapes of the train state at ``step`` (the image model's before the inflation)."""
    phase = phase_of(cfg, step)
    pcfg = image_config(cfg) if phase == "image" else cfg
    return jax.eval_shape(lambda: init_state(cfg, pcfg, 1 if phase == "image" else cfg.frames))


# ---------------------------------------------------------------------------------- loop
# fields a resumed run may change: it trains longer, logs differently, or ends in a learning-rate decay
# (a warm-up / stable / decay schedule: the decay tail can be decided once the stable part has run).
# ``image_steps`` may change too while the run is still in its image phase (see ``write_config``).
RUN_LENGTH_FIELDS = ("steps", "log_every", "checkpoint_every", "lr_decay_steps", "lr_min_ratio")


def write_config(run_dir: str, cfg: MagvitConfig, latest_step: int | None = None, also_changeable=()) -> None:
    """Write ``cfg`` beside a run, or check it against the config already there (a resume).

    A resume may change the RUN_LENGTH_FIELDS, and ``image_steps`` as long as the latest checkpoint
    (``latest_step``; None: no checkpoint yet) is still in the image phase under both the old and the
    new value: the image phase can be made longer or shorter before the inflation, never after it."""

    def changeable(old: MagvitConfig) -> set[str]:
        fields = set(RUN_LENGTH_FIELDS) | set(also_changeable)
        if (latest_step or 0) < min(cfg.image_steps, old.image_steps):
            fields.add("image_steps")
        elif cfg.image_steps != old.image_steps:
            raise TrainConfigMismatchError(
                f"{run_dir}: image_steps can change only during the image phase; the run "
                f"is at step {latest_step} with image_steps={old.image_steps} "
                f"(asked: {cfg.image_steps})"
            )
        return fields

    record.record_config(
        run_dir,
        cfg,
        filename=CONFIG_FILE,
        load=load_magvit_config,
        changeable=changeable,
        error=TrainConfigMismatchError,
    )


PERCEPTUAL_FILE = "perceptual.json"


def check_perceptual_record(run_dir: str, sha256: str, latest_step: int | None) -> bool:
    """On a resume, the perceptual network must be the one the run trained with (``OUT/perceptual.json``).
    Returns True when a record exists and matches: the weights may then have moved (a new path)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(run_dir)
    path = f"{root}/{PERCEPTUAL_FILE}"
    if not fs.exists(path):
        return False
    with fs.open(path, "r") as f:
        rec = json.load(f)
    if rec.get("sha256") != sha256 and latest_step is not None:
        raise TrainConfigMismatchError(
            f"{run_dir} trained with other perceptual weights (sha256 {rec.get('sha256', '?')[:16]}..., "
            f"{rec.get('checkpoint')}); perceptual_checkpoint now has sha256 {sha256[:16]}..."
        )
    return rec.get("sha256") == sha256


def write_perceptual_record(run_dir: str, checkpoint: str, sha256: str) -> None:
    import fsspec

    fs, root = fsspec.core.url_to_fs(run_dir)
    with fs.open(f"{root}/{PERCEPTUAL_FILE}", "w") as f:
        json.dump({"checkpoint": checkpoint, "sha256": sha256}, f, indent=1)


LOSS_PANELS = (
    Panel("reconstruction / total", ("loss", "l1", "l2", "perceptual"), log_y=True),
    Panel("PSNR dB", ("psnr",)),
    Panel("LFQ", ("entropy", "per_sample_entropy", "codebook_entropy", "batch_usage")),
)


def image_frame_indices(frames: int, per_clip: int) -> np.ndarray:
    """``per_clip`` evenly spaced frame indices of a ``frames``-frame clip, first and last included
    (all frames when ``per_clip >= frames``)."""
    return np.unique(np.round(np.linspace(0, frames - 1, min(per_clip, frames))).astype(int))


def build_pools(cfg: MagvitConfig, source) -> tuple[ClipPool, ClipPool]:
    """(video pool [pool_clips, frames, H, W, 3], image pool [pool_clips * image_frames_per_clip, 1, H, W, 3]
    made of evenly spaced frames of the pooled clips)."""
    clips = take(source, cfg.pool_clips)
    if clips.shape[1:] != (cfg.frames, cfg.height, cfg.width, 3):
        raise VideoPoetError(
            f"data clips have shape {clips.shape[1:]}, the config wants {(cfg.frames, cfg.height, cfg.width, 3)}"
        )
    images = clips[:, image_frame_indices(cfg.frames, cfg.image_frames_per_clip)]
    return ClipPool(clips, cfg.seed), ClipPool(images.reshape(-1, 1, cfg.height, cfg.width, 3), cfg.seed + 7)


def init_weights_from(cfg: MagvitConfig, init_from: str):
    """Weights of a trained video model (run / export dir / URI) to fine-tune from, checked against ``cfg``.

    With ``image_steps > 0`` the run first continues the model as an image model
    (:func:`~.model.deflate_params`: exactly the video model on 1-frame clips), then goes back to video
    keeping the source's temporal taps (:func:`to_video_params`). A source at a coarser temporal rate than
    ``cfg`` starts the finer network (:func:`~.model.finer_time_params`)."""
    src = load_dir(init_from)
    have, want = arch_config(src.config), arch_config(cfg)
    params = src.params
    if have != want:
        diff = sorted(
            f.name for f in dataclasses.fields(MagvitConfig) if getattr(have, f.name) != getattr(want, f.name)
        )
        if not set(diff) <= {*GROWABLE_FIELDS, *FINER_TIME_FIELDS}:
            raise TrainConfigMismatchError(
                f"--init-from {init_from}: its architecture differs from this config ({', '.join(diff)})"
            )
        try:
            # a finer temporal rate: the source's kernels as the start of the finer network
            if set(diff) & set(FINER_TIME_FIELDS):
                params = finer_time_params(params, have, want)
            # more residual blocks: the source grown into this config's network, computing what it computes
            params = grow_params(params, init_params(cfg, cfg.seed))
        except ValueError as e:
            raise TrainConfigMismatchError(f"--init-from {init_from}: {e}") from None
    return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), params)


# architecture fields an --init-from source may differ in: the run grows it (model.grow_params)
GROWABLE_FIELDS = ("num_res_blocks", "level_res_blocks")
# ... and fields it may differ in that start a network at a finer rate (model.finer_time_params)
FINER_TIME_FIELDS = ("temporal_downsample",)


def train_run(
    cfg: MagvitConfig,
    out_dir: str,
    source: Iterable | Callable,
    *,
    pool_size: int | None = None,
    progress: bool = True,
    max_seconds: float | None = None,
    log: Callable[[str], None] | None = None,
    init_from: str | None = None,
    hooks: Sequence[Hook] = (),
) -> dict:
    """Train (or resume) a run in ``out_dir``; returns a summary dict. ``source``: clips iterator/callable.

    ``init_from`` (a run / export directory or URI of a video model with the same architecture) starts a
    *new* run from its (EMA) weights with a fresh optimizer from step 0. With ``image_steps > 0`` it first
    trains them as an image model (deflated, exactly the video model on images) and then returns to the
    video model with the source's temporal taps kept; the source is copied to ``OUT/init_from/`` so a
    resume needs no flag. A run directory that already holds checkpoints resumes instead.

    ``max_seconds`` (wall time) and SIGTERM stop the run after saving its state (no export then);
    ``hooks`` (:class:`~videopoet.rundir.loop.Hook`) are called every N steps after the row and checkpoint.
    """
    if pool_size is not None:  # the run's config records the pool it trained from
        cfg = dataclasses.replace(cfg, pool_clips=pool_size)
        cfg.validate()
    init_params_from = init_weights_from(cfg, init_from) if init_from else None
    ckpts = checkpoints.Checkpoints(out_dir, max_to_keep=2)
    latest = ckpts.latest_step()
    try:
        if cfg.freeze_encoder and init_from is None and latest is None:
            raise TrainConfigMismatchError(
                "freeze_encoder=true trains the decoder of a trained model: give --init-from"
            )
        pweights, same_perceptual = None, False
        if cfg.perceptual_weight > 0:
            pweights, psha = perceptual.load_weights(cfg.perceptual_checkpoint)
            same_perceptual = check_perceptual_record(out_dir, psha, latest)
        write_config(out_dir, cfg, latest, also_changeable=("perceptual_checkpoint",) if same_perceptual else ())
        if cfg.perceptual_weight > 0:
            write_perceptual_record(out_dir, cfg.perceptual_checkpoint, psha)
        if init_params_from is not None and latest is None:
            MagvitTokenizer(cfg, init_params_from).save(f"{out_dir.rstrip('/')}/{INIT_FROM_DIR}")
        if source is None:
            raise ValueError("train_run needs a clip source (an iterator of uint8 [T, H, W, 3] clips)")
        vpool, ipool = build_pools(cfg, source)
        if latest is not None:
            state, _ = ckpts.restore(latest, checkpoints.abstract(state_template(cfg, latest)))
        else:
            phase = phase_of(cfg, 0)
            if init_params_from is not None and phase == "image":
                init_params_from = deflate_params(init_params_from)
            state = init_state(
                cfg,
                image_config(cfg) if phase == "image" else cfg,
                1 if phase == "image" else cfg.frames,
                params=init_params_from,
            )
        summary = _loop(
            cfg, out_dir, ckpts, state, int(latest or 0), vpool, ipool, pweights, progress, max_seconds, log, hooks
        )
    finally:
        ckpts.close()
    summary["init_from"] = init_from
    return summary


def _loop(
    cfg: MagvitConfig,
    out_dir: str,
    ckpts: checkpoints.Checkpoints,
    state: dict,
    start: int,
    vpool: ClipPool,
    ipool: ClipPool,
    pweights,
    progress: bool,
    max_seconds: float | None,
    log,
    hooks: Sequence[Hook],
) -> dict:
    total = cfg.image_steps + cfg.steps

    def row_of(info: StepInfo) -> dict:
        phase = phase_of(cfg, info.step - 1)
        rec = {k: float(v) for k, v in info.metrics.items()}
        phase_step = info.step - 1 - (cfg.image_steps if phase == "video" else 0)  # the optimizer's count
        lr_now = lr_schedule(cfg, cfg.learning_rate, phase_length(cfg, phase))(phase_step)
        rec.update(
            phase=phase,
            entropy_weight=float(entropy_weight_at(cfg, info.step - 1)),
            lr=float(lr_now),
            time=round(time.time() - run.t0, 2),
        )
        run.show(loss=f"{rec['loss']:.4f}", psnr=f"{rec['psnr']:.1f}", use=f"{rec['batch_usage']:.2f}")
        return rec

    def save(_step: int, state_n) -> None:
        ckpts.save(_step, state_n)

    vlines = (cfg.image_steps,) if cfg.image_steps and cfg.steps else ()
    run = Run(
        out_dir,
        total_steps=total,
        start_step=start,
        save=save,
        checkpoint_every=cfg.checkpoint_every,
        progress=progress,
        desc=cfg.name,
        max_seconds=max_seconds,
        panels=LOSS_PANELS,
        vlines=vlines,
    )
    run.add_log_hook(row_of, every=cfg.log_every)
    if log is not None and not progress:
        run.add_hook(lambda info: log(json.dumps(run.last_row)), every=cfg.log_every)
    for hook in hooks:
        run.add_hook(hook)
    step = start
    with run:
        while step < total:
            phase = phase_of(cfg, step)
            pcfg = image_config(cfg) if phase == "image" else cfg
            fn = make_train_step(cfg, pcfg, phase_length(cfg, phase), pweights)
            if phase == "image":
                batch = ipool.batch(step, cfg.image_batch_size)
            else:
                batch = vpool.batch(step, cfg.batch_size, frames=cfg.train_frames or None)  # crops if < frames
            state, m = fn(state, jnp.asarray(batch))
            step += 1
            if phase == "image" and step == cfg.image_steps:
                # inflate the image model into the causal video model; fresh optimizer moments
                src = init_source_params(out_dir)
                params = to_video_params(cfg, state["params"], src)
                ema = to_video_params(cfg, state["ema"], src)
                disc = None
                if cfg.gan_weight > 0:
                    disc = inflate_params(state["disc"], disc_params_init(cfg, cfg.frames, cfg.seed))
                state = init_state(cfg, cfg, cfg.frames, step=step, params=params, disc=disc)
                state["ema"] = ema
                run.save(step, state)
            if run.step_done(step, state, m):
                break
    stopped_early = run.stop_reason is not None
    export_cfg = image_config(cfg) if phase_of(cfg, step) == "image" else cfg
    tok = MagvitTokenizer(export_cfg, state["ema"])
    if not stopped_early:
        tok.save(out_dir)
    run.plot()
    last = run.last_row
    return {
        "out": out_dir,
        "step": step,
        "total_steps": total,
        "stopped_early": stopped_early,
        "status": run.status,
        "seconds": round(time.time() - run.t0, 1),
        "fingerprint": tok.fingerprint,
        "final": {k: last.get(k) for k in ("loss", "l1", "l2", "psnr", "batch_usage", "entropy")},
    }
