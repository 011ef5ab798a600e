"""MaskGIT decoding of the super-resolution transformer, with classifier-free guidance.

Decoding starts from the high-resolution positions masked (all of them, unless some codes are given)
and runs ``steps`` parallel steps. Step ``s`` (0-based) predicts every masked position, samples a code
for each (each factor from its own softmax at ``temperature``; 0 takes the most likely), and keeps the
most confident of them: after it, ``floor(N * cos(pi/2 * (s+1)/steps))`` of the ``N`` positions masked
at the start stay masked (the cosine schedule; at least one fewer than before, none after the last
step, so every position is filled). The confidence of a
sampled code is its log-probability (the sum over factors) plus Gumbel noise scaled by
``choice_temperature * (1 - (s+1)/steps)``, MaskGIT's annealed randomness in the choice of which
positions to keep. All randomness comes from the seed: the same inputs and seed give the same codes.

With ``refine`` F > 0 (a model that takes the upsampled guess) decoding starts from the guess
instead: one pass over the all-masked positions gives the log-probability the model assigns to the
guess's code at each position, the fraction F of positions where it is lowest are masked, and
MaskGIT decodes only those; every other position keeps the guess's code.

Guidance (per factor, on the logits) with three forward passes: the conditional model ``c`` (text
and low-resolution input), ``t`` (text dropped) and ``l`` (low-resolution input dropped)::

    logits = c + w_text * (c - t) + w_lowres * (c - l)

Each term is the Muse form ``(1 + w) * cond - w * uncond`` for one condition with the other kept,
so ``w = 0`` for both is the conditional model (the extra passes are then skipped).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from videopoet.trainer.superres import model as sr_model
from videopoet.trainer.superres.config import SampleConfig, SRModelConfig


def guide(cond, no_text, no_lowres, w_text, w_lowres):
    """Guided logits from the three passes' logits (module docstring)."""
    return cond + w_text * (cond - no_text) + w_lowres * (cond - no_lowres)


def masked_after(step, steps: int, n):
    """How many of ``n`` positions masked at the start the cosine schedule leaves masked after 0-based
    ``step`` (before the at-least-one-fewer rule); ``n`` may be an array (one count per row)."""
    ratio = (step + 1) / steps
    return jnp.maximum(jnp.floor(n * jnp.cos(0.5 * jnp.pi * ratio)), 0).astype(jnp.int32)


@functools.lru_cache(maxsize=8)
def _guess_log_probs(cfg: SRModelConfig):
    model = sr_model.SuperResTransformer(cfg)

    def run(params, lowres, text_emb, text_mask, upsampled):
        tokens = jnp.full(upsampled.shape, sr_model.MASK, jnp.int32)
        keep = jnp.ones((lowres.shape[0],), bool)
        logits = model.apply({"params": params}, tokens, lowres, keep, text_emb, text_mask, upsampled)
        return sr_model.code_log_probs(logits, upsampled, cfg)

    return jax.jit(run)


def start_from_guess(cfg: SRModelConfig, params, lowres, text_emb, text_mask, upsampled, fraction: float):
    """Initial tokens int32 [B, T, H, W]: the guess's codes, with the ``fraction`` of positions whose
    guess code the model finds least likely masked (module docstring; at least one per row)."""
    lp = np.asarray(_guess_log_probs(cfg)(params, lowres, text_emb, text_mask, upsampled))
    b = lp.shape[0]
    flat = lp.reshape(b, -1)
    k = max(1, int(np.floor(fraction * flat.shape[1])))
    order = np.argsort(flat, axis=1, kind="stable")[:, :k]  # the least likely first
    init = np.array(upsampled, np.int32).reshape(b, -1)
    np.put_along_axis(init, order, sr_model.MASK, axis=1)
    return init.reshape(upsampled.shape)


@functools.lru_cache(maxsize=8)
def _compiled(cfg: SRModelConfig, steps: int, guided: bool, greedy: bool):
    model = sr_model.SuperResTransformer(cfg)
    n, k, v = cfg.tokens, cfg.factors, cfg.factor_size

    def run(params, lowres, text_emb, text_mask, init_tokens, upsampled, rng, temperature, choice_t, w_text, w_lowres):
        b = lowres.shape[0]
        keep = jnp.ones((b,), bool)
        n_start = jnp.sum(init_tokens.reshape(b, n) < 0, axis=1)  # the schedule runs over these

        def logits_of(tokens):
            cond = model.apply({"params": params}, tokens, lowres, keep, text_emb, text_mask, upsampled)
            if not guided:
                return cond
            no_text = model.apply(
                {"params": params}, tokens, lowres, keep, text_emb, jnp.zeros_like(text_mask), upsampled
            )
            no_low = model.apply({"params": params}, tokens, lowres, ~keep, text_emb, text_mask, upsampled)
            return guide(cond, no_text, no_low, w_text, w_lowres)

        def body(s, tokens):
            k_sample, k_choice = jax.random.split(jax.random.fold_in(rng, s))
            logits = logits_of(tokens).reshape(b, n, k, v)
            flat = tokens.reshape(b, n)
            unknown = flat < 0
            if greedy:
                picked = jnp.argmax(logits, axis=-1).astype(jnp.int32)
            else:
                picked = jax.random.categorical(k_sample, logits / temperature, axis=-1).astype(jnp.int32)
            lp = jax.nn.log_softmax(logits, axis=-1)
            conf = jnp.sum(jnp.take_along_axis(lp, picked[..., None], axis=-1)[..., 0], axis=-1)
            ratio = (s + 1) / steps
            conf = conf + choice_t * (1.0 - ratio) * jax.random.gumbel(k_choice, (b, n))
            conf = jnp.where(unknown, conf, jnp.inf)
            n_unknown = jnp.sum(unknown, axis=1)
            n_next = jnp.minimum(masked_after(s, steps, n_start), jnp.maximum(n_unknown - 1, 0))
            rank = jnp.argsort(jnp.argsort(conf, axis=1), axis=1)
            remask = rank < n_next[:, None]
            new = jnp.where(unknown, jnp.where(remask, sr_model.MASK, sr_model.combine(picked, cfg)), flat)
            return new.reshape(tokens.shape)

        return jax.lax.fori_loop(0, steps, body, init_tokens)

    return jax.jit(run)


def decode(
    cfg: SRModelConfig,
    params,
    lowres,
    text_emb,
    text_mask,
    seed: int | jax.Array,
    options: SampleConfig | None = None,
    *,
    init_tokens=None,
    upsampled=None,
    guided: bool | None = None,
) -> np.ndarray:
    """High-resolution codes int32 [B, T, H, W] for low-resolution codes ``lowres`` [B, T, h, w] and the
    captions' ``text_emb`` [B, L, text_dim] / ``text_mask`` [B, L].

    ``seed``: an int or a PRNG key. ``init_tokens`` [B, T, H, W]: codes already known (MASK = -1
    elsewhere; default all masked). ``upsampled`` [B, T, H, W]: the upsampled guess, which a model with
    ``upsampled_input`` needs (:func:`videopoet.pipelines.tokenize.upsampled_codes`). ``guided``: run
    the three guidance passes (default: when a guidance weight is not 0; True with both weights 0
    computes the guided logits, which then equal the conditional ones)."""
    options = options or SampleConfig()
    options.validate()
    lowres = jnp.asarray(lowres, jnp.int32)
    b = lowres.shape[0]
    if tuple(lowres.shape[1:]) != tuple(cfg.low_grid):
        raise ValueError(f"lowres has shape {list(lowres.shape[1:])}, the model needs {list(cfg.low_grid)}")
    if init_tokens is None:
        init_tokens = jnp.full((b, *cfg.grid), sr_model.MASK, jnp.int32)
    if cfg.upsampled_input:
        if upsampled is None:
            raise ValueError("the model takes the upsampled guess (model.upsampled_input): pass upsampled")
        upsampled = jnp.asarray(upsampled, jnp.int32)
        if tuple(upsampled.shape) != (b, *cfg.grid):
            raise ValueError(f"upsampled has shape {list(upsampled.shape)}, the model needs {[b, *cfg.grid]}")
    else:
        upsampled = None
    if options.refine > 0:
        if upsampled is None:
            raise ValueError("sample.refine starts from the upsampled guess: a model.upsampled_input model's")
        if bool(np.any(np.asarray(init_tokens) >= 0)):
            raise ValueError("sample.refine chooses the given codes itself: pass no init_tokens")
        text = jnp.asarray(text_emb, jnp.float32), jnp.asarray(text_mask, bool)
        init_tokens = start_from_guess(cfg, params, lowres, *text, upsampled, options.refine)
    if guided is None:
        guided = options.guidance_text != 0 or options.guidance_lowres != 0
    rng = jax.random.PRNGKey(seed) if isinstance(seed, int) else seed
    fn = _compiled(cfg, int(options.steps), bool(guided), options.temperature == 0)
    out = fn(
        params,
        lowres,
        jnp.asarray(text_emb, jnp.float32),
        jnp.asarray(text_mask, bool),
        jnp.asarray(init_tokens, jnp.int32),
        upsampled,
        rng,
        jnp.float32(max(options.temperature, 1e-6)),
        jnp.float32(options.choice_temperature),
        jnp.float32(options.guidance_text),
        jnp.float32(options.guidance_lowres),
    )
    return np.asarray(out)
