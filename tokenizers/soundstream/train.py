"""SoundStream training: losses, jit-compiled train step, Orbax checkpoints with resume.

Losses (generator): ``waveform_weight * L1(wave)`` + ``stft_weight * mean over scales of
(L1 of linear magnitudes + L1 of log magnitudes)`` + ``commitment_weight * ||z - sg(q)||^2``
- ``sisnr_weight * SI-SNR(dB)`` (spectral losses alone leave the phase free, and an L1 on samples
alone is minimised by near-silence early on; the SI-SNR term rewards phase-aligned output) and,
with ``use_discriminator``, a hinge adversarial loss from a complex-STFT discriminator plus an L1
feature-matching loss (both from ``disc_start_step`` on). Codebooks follow EMA k-means with dead-code
re-seeding (:func:`videopoet.tokenizers.soundstream.model.ema_update`), not gradients.

Run directory layout::

    OUT/config.json            the SoundStreamConfig (JSON)
    OUT/checkpoints/<step>/    Orbax CheckpointManager: {"state": params, vq, opt states, rng, step}
    OUT/model.safetensors      weights-only export of the last step (what ``soundstream.load`` prefers)
    OUT/metrics.jsonl          one JSON line per logged step (+ TensorBoard events in OUT/tb/)
    OUT/loss_curve.png         the loss and SI-SNR curves

Resume: a run directory with checkpoints continues from the latest step (same config required). The
model/optimizer state restores exactly; the data stream is re-seeded from ``(seed, step)``.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from videopoet.rundir import checkpoints, record
from videopoet.rundir.loop import Hook, Run, StepInfo
from videopoet.rundir.metrics import Panel
from videopoet.schemas.config import from_dict
from videopoet.schemas.errors import VideoPoetError
from videopoet.tokenizers.soundstream.config import SoundStreamConfig
from videopoet.tokenizers.soundstream.model import SoundStream, STFTDiscriminator, ema_update, sample_n_active, stft
from videopoet.tokenizers.soundstream.tokenizer import (
    CONFIG_FILE,
    SoundStreamTokenizer,
    arch_config,
    init_variables,
    load_dir,
)


class TrainConfigMismatchError(VideoPoetError, ValueError):
    """Resuming a run directory with a different config."""


# ---------------------------------------------------------------------------------------- losses
def multiscale_stft_loss(x, y, scales) -> jax.Array:
    """Mean over scales of L1(|X|-|Y|) + L1(log|X| - log|Y|); scales longer than the signal are skipped."""
    terms = []
    for n in scales:
        if n // 2 >= x.shape[-1]:
            continue
        sx = jnp.abs(stft(x, n, n // 4))
        sy = jnp.abs(stft(y, n, n // 4))
        terms.append(jnp.mean(jnp.abs(sx - sy)) + jnp.mean(jnp.abs(jnp.log(sx + 1e-5) - jnp.log(sy + 1e-5))))
    return sum(terms) / max(len(terms), 1)


def si_snr_db(x, y, eps: float = 1e-8) -> jax.Array:
    """Per-example scale-invariant SNR (dB) of ``y`` against ``x`` ([B, N] each)."""
    x = x - jnp.mean(x, -1, keepdims=True)
    y = y - jnp.mean(y, -1, keepdims=True)
    s = jnp.sum(x * y, -1, keepdims=True) / (jnp.sum(x * x, -1, keepdims=True) + eps) * x
    e = y - s
    return 10.0 * jnp.log10((jnp.sum(s * s, -1) + eps) / (jnp.sum(e * e, -1) + eps))


def make_optimizer(cfg: SoundStreamConfig):
    """Adam with linear warm-up, then cosine decay to 10% over ``lr_decay_steps`` (0: constant)."""
    warm = max(cfg.warmup_steps, 1)
    if cfg.lr_decay_steps > warm:
        sched = optax.warmup_cosine_decay_schedule(
            0.0, cfg.learning_rate, warm, cfg.lr_decay_steps, cfg.learning_rate * 0.1
        )
    else:
        sched = optax.join_schedules(
            [optax.linear_schedule(0.0, cfg.learning_rate, warm), optax.constant_schedule(cfg.learning_rate)], [warm]
        )
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optax.adam(sched, b1=cfg.b1, b2=cfg.b2))


def init_state(cfg: SoundStreamConfig, seed: int | None = None) -> dict:
    seed = cfg.seed if seed is None else seed
    v = init_variables(cfg, seed)
    opt = make_optimizer(cfg)
    state = {
        "params": v["params"],
        "vq": v["vq"],
        "opt": opt.init(v["params"]),
        "step": jnp.zeros((), jnp.int32),
        "rng": jax.random.PRNGKey(seed + 1),
    }
    if cfg.use_discriminator:
        disc = STFTDiscriminator(cfg.disc_channels)
        dparams = disc.init(jax.random.PRNGKey(seed + 2), jnp.zeros((1, cfg.segment_samples)))["params"]
        state["disc_params"] = dparams
        state["disc_opt"] = make_optimizer(cfg).init(dparams)
    return state


@functools.lru_cache(maxsize=8)
def make_train_step(cfg: SoundStreamConfig):
    """The jit-compiled ``(state, wave [B, segment]) -> (state, metrics)`` (cached per config)."""
    model = SoundStream(cfg)
    opt = make_optimizer(cfg)
    disc = STFTDiscriminator(cfg.disc_channels) if cfg.use_discriminator else None

    def gen_loss(params, vq, wave, n_active, disc_params, adv_on):
        recon, aux = model.apply({"params": params, "vq": vq}, wave, n_active)
        wav_l1 = jnp.mean(jnp.abs(recon - wave))
        spec = multiscale_stft_loss(wave, recon, cfg.stft_scales)
        loud = (jnp.mean(wave * wave, -1) > 1e-6).astype(jnp.float32)
        snr = jnp.sum(si_snr_db(wave, recon) * loud) / jnp.maximum(jnp.sum(loud), 1.0)
        loss = (
            cfg.waveform_weight * wav_l1
            + cfg.stft_weight * spec
            + cfg.commitment_weight * aux["commit"]
            - cfg.sisnr_weight * snr
        )
        metrics = {"wave_l1": wav_l1, "stft": spec, "commit": aux["commit"], "si_snr": snr}
        if disc is not None:
            fake_logits, fake_feats = disc.apply({"params": disc_params}, recon)
            _, real_feats = disc.apply({"params": disc_params}, wave)
            adv = jnp.mean(jax.nn.relu(1.0 - fake_logits))
            pairs = zip(fake_feats, real_feats, strict=True)
            feat = sum(jnp.mean(jnp.abs(a - jax.lax.stop_gradient(b))) for a, b in pairs) / len(fake_feats)
            loss = loss + adv_on * (cfg.adv_weight * adv + cfg.feat_weight * feat)
            metrics.update(adv=adv, feat=feat)
        metrics["loss"] = loss
        return loss, (recon, aux, metrics)

    def disc_loss(dparams, wave, recon):
        real, _ = disc.apply({"params": dparams}, wave)
        fake, _ = disc.apply({"params": dparams}, jax.lax.stop_gradient(recon))
        return jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake))

    def step_fn(state: dict, wave: jax.Array):
        rng, r_drop, r_vq = jax.random.split(state["rng"], 3)
        n_active = sample_n_active(r_drop, wave.shape[0], cfg)
        adv_on = (state["step"] >= cfg.disc_start_step).astype(jnp.float32)
        (loss, (recon, aux, metrics)), grads = jax.value_and_grad(gen_loss, has_aux=True)(
            state["params"], state["vq"], wave, n_active, state.get("disc_params"), adv_on
        )
        updates, opt_state = opt.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        vq, reseeded = ema_update(state["vq"], aux, r_vq, cfg)
        new = dict(state, params=params, vq=vq, opt=opt_state, step=state["step"] + 1, rng=rng)
        if disc is not None:
            dl, dgrads = jax.value_and_grad(disc_loss)(state["disc_params"], wave, recon)
            dup, dopt = opt.update(dgrads, state["disc_opt"], state["disc_params"])
            new["disc_params"] = optax.apply_updates(state["disc_params"], dup)
            new["disc_opt"] = dopt
            metrics["disc"] = dl
        metrics["grad_norm"] = optax.tree.norm(grads)
        metrics["reseeded"] = jnp.sum(reseeded)
        for q in range(cfg.num_quantizers):
            used = (
                jnp.zeros(cfg.codebook_size)
                .at[aux["codes"][:, q].reshape(-1)]
                .max(aux["masks"][q][:, None].repeat(aux["codes"].shape[-1], 1).reshape(-1))
            )
            metrics[f"used_l{q}"] = jnp.sum(used > 0)
        return new, metrics

    return jax.jit(step_fn, donate_argnums=(0,))


# ---------------------------------------------------------------------------------------- loop
LOSS_PANELS = (
    Panel("loss", ("loss", "wave_l1", "stft", "commit"), log_y=True),
    Panel("SI-SNR dB", ("si_snr",)),
)


def write_config(run_dir: str, cfg: SoundStreamConfig) -> None:
    """Write ``RUN/config.json``, or refuse a resume with any other config."""
    record.record_config(run_dir, cfg, filename=CONFIG_FILE, load=_load_config, error=TrainConfigMismatchError)


def _load_config(path: str) -> SoundStreamConfig:
    import fsspec

    with fsspec.open(path, "r") as f:
        return from_dict(SoundStreamConfig, json.load(f))


def train(
    cfg: SoundStreamConfig,
    waves: Iterable[np.ndarray] | Iterator[np.ndarray] | None,
    run_dir: str,
    steps: int,
    *,
    batches: Iterator[np.ndarray] | None = None,
    log_every: int = 50,
    ckpt_every: int = 500,
    progress: bool = True,
    resume: bool = True,
    init_from: str | None = None,
    log=None,
    hooks: Sequence[Hook] = (),
) -> dict:
    """Train to ``steps`` total steps in ``run_dir`` (resuming if it holds checkpoints).

    Give either ``waves`` (mono waveforms, cropped into ``[batch_size, segment_samples]``) or
    ``batches`` (ready ``[B, segment]`` float32 arrays). ``init_from`` (a run or export directory)
    starts a *new* run from those weights and codebooks (fine-tuning: fresh optimizer, step 0; the
    architecture must match). ``log(row)`` gets each logged row; ``hooks``
    (:class:`~videopoet.rundir.loop.Hook`) are called every N steps; SIGTERM saves and stops. Returns
    the last logged metrics plus ``step``, ``steps_per_s``, ``resumed_from`` and ``status``.
    """
    from videopoet.tokenizers.soundstream.data import crops

    write_config(run_dir, cfg)
    ckpts = checkpoints.Checkpoints(run_dir, max_to_keep=2)
    try:
        state = init_state(cfg)
        resumed_from = None
        if resume and ckpts.latest_step() is not None:
            resumed_from = int(ckpts.latest_step())
            state, _ = ckpts.restore(resumed_from, checkpoints.abstract(state))
        elif init_from:
            src = load_dir(init_from)
            if arch_config(src.config) != arch_config(cfg):
                raise TrainConfigMismatchError(f"--init-from {init_from}: its architecture differs from this config")
            state["params"] = jax.tree_util.tree_map(jnp.asarray, src.variables["params"])
            state["vq"] = jax.tree_util.tree_map(jnp.asarray, src.variables["vq"])
        start = int(state["step"])
        if batches is None:
            if waves is None:
                raise ValueError("train() needs waves or batches")
            batches = crops(waves, cfg.batch_size, cfg.segment_samples, seed=cfg.seed * 1_000_003 + start)
        step_fn = make_train_step(cfg)

        def row_of(info: StepInfo) -> dict:
            row = {k: float(v) for k, v in jax.device_get(dict(info.metrics)).items()}
            run.show(loss=f"{row['loss']:.3f}", sisnr=f"{row['si_snr']:.2f}")
            return row

        run = Run(
            run_dir,
            total_steps=steps,
            start_step=start,
            save=ckpts.save,
            checkpoint_every=ckpt_every,
            progress=progress,
            desc=cfg.name,
            panels=LOSS_PANELS,
        )
        run.add_log_hook(row_of, every=log_every)
        if log is not None:
            run.add_hook(lambda info: log(dict(run.last_row)), every=log_every)
        for hook in hooks:
            run.add_hook(hook)
        done = start
        with run:
            while done < steps:
                state, metrics = step_fn(state, jnp.asarray(next(batches), jnp.float32))
                done += 1
                if run.step_done(done, state, metrics):
                    break
    finally:
        ckpts.close()
    elapsed = time.time() - run.t0
    tok = SoundStreamTokenizer(cfg, {"params": state["params"], "vq": state["vq"]})
    if run.stop_reason is None:
        tok.save(run_dir)
    run.plot()
    out = dict(run.last_row)
    out.update(
        step=int(state["step"]),
        steps_per_s=(int(state["step"]) - start) / max(elapsed, 1e-9),
        resumed_from=resumed_from,
        fingerprint=tok.fingerprint,
        status=run.status,
    )
    return out
