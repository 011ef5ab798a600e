"""The super-resolution transformer (Flax Linen): bidirectional, over the high-resolution tokens.

Inputs of one forward pass (every shape static)::

    tokens       int32 [B, T, H, W]   high-resolution codes; MASK (-1) where a code is to be predicted
    lowres       int32 [B, T, h, w]   low-resolution codes (h = H / scale_h, ...)
    lowres_keep  bool  [B]            False: the low-resolution condition is dropped (classifier-free)
    text_emb     float [B, L, text_dim]   frozen T5 encoder output
    text_mask    bool  [B, L]         valid text slots (all False: the text condition is dropped)
    upsampled    int32 [B, T, H, W]   with ``cfg.upsampled_input``: the upsampled guess (dropped with
                                      the low-resolution condition, which it is made from)

Output: float32 logits [B, T, H, W, factors, factor_size], one distribution per factor.

Each block: windowed self-attention over the high-resolution tokens (layer ``i`` uses
``cfg.windows[i % len]``: the paper's vertical, horizontal and temporal windows in turn), windowed
cross-attention from each window to the low-resolution tokens under it (the window scaled down by
``cfg.scale``), cross-attention to the text embeddings, an MLP; pre-norm residuals (RMSNorm).
Positions enter as learned per-axis embeddings (t + h + w) added to the token embeddings of each grid.

With ``cfg.lowres_skip`` (an implementation choice, not in the paper) each high-resolution position
also gets, before the first block, a learned projection of the embedding of the low-resolution token
that covers it (:func:`upsample_nearest`): the cross-attention must otherwise discover which
low-resolution tokens lie under a query from two separately learned sets of position embeddings,
which few training pairs teach slowly.

With ``cfg.upsampled_input`` (also not in the paper) each high-resolution position gets the
embedding of the upsampled guess's code at that position: the tokens of the decoded low-resolution
clip upsampled 2x by bicubic interpolation, which on the synthetic world already equal more of the
truth's codes than a small model predicts from the low-resolution tokens alone.

Token factorization (section 3.3): a code of ``lfq_bits`` bits is split into ``factors`` groups of
``lfq_bits / factors`` bits (:func:`factorize`; group ``j`` holds bits ``j*b .. j*b+b-1``). The input
embedding is the sum of one embedding per group, the output one softmax head per group, and the
model's distribution over codes is the product of the heads' (:func:`code_log_probs`), so the loss
is the sum of the groups' cross-entropies (:func:`factorized_cross_entropy`) and equals the
cross-entropy over the full codebook of that product distribution. Each group's embedding table has
one more row: MASK for the high-resolution tokens, NULL (a dropped condition) for the low-resolution.

The text cross-attention always sees one learned NULL slot besides the valid text slots, so a dropped
caption is a well-defined condition (not an all-masked softmax).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from videopoet.trainer.model import HeadDense, RMSNorm, attend
from videopoet.trainer.superres.config import SRModelConfig, Triple

Array = jax.Array
P = nn.with_logical_partitioning
MASK = -1  # a high-resolution position whose code is to be predicted


def _dtype(name: str):
    return jnp.bfloat16 if name == "bfloat16" else jnp.float32


# ------------------------------------------------------------------------------- factorization
def factorize(codes: Array, cfg: SRModelConfig) -> Array:
    """int [...] codes in [0, 2**lfq_bits) -> int32 [..., factors] group ids in [0, factor_size)."""
    shifts = jnp.arange(cfg.factors, dtype=jnp.int32) * cfg.factor_bits
    return (codes.astype(jnp.int32)[..., None] >> shifts) & (cfg.factor_size - 1)


def combine(factors: Array, cfg: SRModelConfig) -> Array:
    """The inverse of :func:`factorize`: int [..., factors] -> int32 codes [...]."""
    shifts = jnp.arange(cfg.factors, dtype=jnp.int32) * cfg.factor_bits
    return jnp.sum(factors.astype(jnp.int32) << shifts, axis=-1)


def factor_log_probs(logits: Array) -> Array:
    """float32 [..., factors, V] logits -> log-probabilities of each factor."""
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


def code_log_probs(logits: Array, codes: Array, cfg: SRModelConfig) -> Array:
    """log p(code) = sum over factors of log p_j(factor_j(code)): float32 [...]."""
    lp = factor_log_probs(logits)
    picked = jnp.take_along_axis(lp, factorize(codes, cfg)[..., None], axis=-1)[..., 0]
    return jnp.sum(picked, axis=-1)


def factorized_cross_entropy(logits: Array, codes: Array, cfg: SRModelConfig, label_smoothing: float = 0.0) -> Array:
    """Per-position cross-entropy (nats) of the codes under the factorized model: float32 [...].

    Without label smoothing it is ``-code_log_probs``; with it each factor's target is smoothed."""
    lp = factor_log_probs(logits)
    onehot = jax.nn.one_hot(factorize(codes, cfg), lp.shape[-1], dtype=jnp.float32)
    if label_smoothing:
        onehot = onehot * (1.0 - label_smoothing) + label_smoothing / lp.shape[-1]
    return -jnp.sum(onehot * lp, axis=(-2, -1))


# ------------------------------------------------------------------------------- windows
def window_counts(grid: Triple, window: Triple) -> Triple:
    return tuple(g // w for g, w in zip(grid, window, strict=True))


def window_ids(grid: Triple, window: Triple) -> Array:
    """int32 [T*H*W]: the index of the window holding each position of ``grid`` (row-major order)."""
    t, h, w = (jnp.arange(g) for g in grid)
    nt, nh, nw = window_counts(grid, window)
    tt, hh, ww = jnp.meshgrid(t // window[0], h // window[1], w // window[2], indexing="ij")
    return ((tt * nh + hh) * nw + ww).reshape(-1).astype(jnp.int32)


def partition(x: Array, grid: Triple, window: Triple) -> Array:
    """[B, T*H*W, ...] (grid in row-major order) -> [B * windows, window tokens, ...]."""
    b, rest = x.shape[0], x.shape[2:]
    (nt, nh, nw), (wt, wh, ww) = window_counts(grid, window), window
    x = x.reshape(b, nt, wt, nh, wh, nw, ww, *rest)
    x = jnp.moveaxis(x, (1, 3, 5), (1, 2, 3))  # [B, nt, nh, nw, wt, wh, ww, ...]
    return x.reshape(b * nt * nh * nw, wt * wh * ww, *rest)


def merge(x: Array, grid: Triple, window: Triple) -> Array:
    """The inverse of :func:`partition`: [B * windows, window tokens, ...] -> [B, T*H*W, ...]."""
    (nt, nh, nw), (wt, wh, ww) = window_counts(grid, window), window
    rest = x.shape[2:]
    b = x.shape[0] // (nt * nh * nw)
    x = x.reshape(b, nt, nh, nw, wt, wh, ww, *rest)
    x = jnp.moveaxis(x, (1, 2, 3), (1, 3, 5))  # [B, nt, wt, nh, wh, nw, ww, ...]
    return x.reshape(b, nt * wt * nh * wh * nw * ww, *rest)


def windowed_attention(
    q, k, v, q_grid: Triple, q_window: Triple, k_grid: Triple, k_window: Triple, implementation: str = "auto"
) -> Array:
    """q [B, Nq, heads, D] over ``q_grid``, k/v [B, Nk, heads, D] over ``k_grid`` -> [B, Nq, heads, D].

    Query window ``i`` of ``q_grid`` attends to key window ``i`` of ``k_grid`` only (both grids cut
    into the same number of windows per axis): the same as full attention with the mask
    ``window_ids(q_grid, q_window)[i] == window_ids(k_grid, k_window)[j]``, without its cost."""
    if window_counts(q_grid, q_window) != window_counts(k_grid, k_window):
        raise ValueError(f"windows {q_window} of {q_grid} and {k_window} of {k_grid} differ in number")
    qw, kw, vw = partition(q, q_grid, q_window), partition(k, k_grid, k_window), partition(v, k_grid, k_window)
    mask = jnp.ones((1, 1, qw.shape[1], kw.shape[1]), bool)
    return merge(attend(qw, kw, vw, mask, implementation), q_grid, q_window)


def upsample_nearest(x: Array, low_grid: Triple, scale: Triple) -> Array:
    """[B, t*h*w, ...] over ``low_grid`` -> [B, (t*st)*(h*sh)*(w*sw), ...]: every position of the
    high-resolution grid gets the value of the low-resolution position covering it (row-major order)."""
    b, rest = x.shape[0], x.shape[2:]
    x = x.reshape(b, *low_grid, *rest)
    for axis, s in enumerate(scale):
        if s > 1:
            x = jnp.repeat(x, s, axis=axis + 1)
    return x.reshape(b, -1, *rest)


# ------------------------------------------------------------------------------- layers
class _Attention(nn.Module):
    """Multi-head attention of ``x`` [B, N, D] to ``ctx`` [B, M, Dc]: windowed (``window`` given) or
    over all of ``ctx`` under ``mask`` [B, 1, 1, M]."""

    cfg: SRModelConfig

    @nn.compact
    def __call__(self, x, ctx, *, q_grid=None, window=None, k_grid=None, k_window=None, mask=None):
        cfg = self.cfg
        dt = _dtype(cfg.dtype)

        def proj(inp, name):
            return HeadDense(
                (inp.shape[-1], cfg.heads, cfg.head_dim),
                ("embed", "heads", "kv"),
                "bte,ehd->bthd",
                cfg.init_std,
                dt,
                name=name,
            )(inp)

        q, k, v = proj(x, "q"), proj(ctx, "k"), proj(ctx, "v")
        if window is not None:
            out = windowed_attention(q, k, v, q_grid, window, k_grid, k_window, cfg.attention)
        else:
            out = attend(q, k, v, mask, cfg.attention)
        return HeadDense(
            (cfg.heads, cfg.head_dim, cfg.d_model),
            ("heads", "kv", "embed"),
            "bthd,hde->bte",
            cfg.init_std / math.sqrt(2 * cfg.layers),
            dt,
            name="o",
        )(out)


class _Mlp(nn.Module):
    cfg: SRModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        dt = _dtype(cfg.dtype)

        def dense(features, name, axes, std):
            return nn.Dense(
                features,
                use_bias=False,
                dtype=dt,
                param_dtype=jnp.float32,
                kernel_init=P(nn.initializers.normal(std), axes),
                name=name,
            )

        h = dense(cfg.mlp_dim, "up", ("embed", "mlp"), cfg.init_std)(x)
        if cfg.mlp == "swiglu":
            h = nn.silu(dense(cfg.mlp_dim, "gate", ("embed", "mlp"), cfg.init_std)(x)) * h
        else:
            h = nn.gelu(h)
        return dense(cfg.d_model, "down", ("mlp", "embed"), cfg.init_std / math.sqrt(2 * cfg.layers))(h)


class SRBlock(nn.Module):
    cfg: SRModelConfig
    layer: int

    @nn.compact
    def __call__(self, x, low, text, text_mask):
        cfg = self.cfg
        dt = _dtype(cfg.dtype)
        window = cfg.layer_window(self.layer)
        low_window = cfg.low_window(window)

        def norm(name):
            return RMSNorm(cfg.norm_eps, dt, name=name)

        h = norm("ln_self")(x)
        x = x + _Attention(cfg, name="self_attn")(
            h, h, q_grid=cfg.grid, window=window, k_grid=cfg.grid, k_window=window
        )
        x = x + _Attention(cfg, name="lowres_attn")(
            norm("ln_lowres")(x), low, q_grid=cfg.grid, window=window, k_grid=cfg.low_grid, k_window=low_window
        )
        x = x + _Attention(cfg, name="text_attn")(norm("ln_text")(x), text, mask=text_mask)
        x = x + _Mlp(cfg, name="mlp")(norm("ln_mlp")(x))
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class _GridEmbed(nn.Module):
    """Factorized code embedding (one table per factor, one extra row for MASK / NULL) plus, with
    ``positions``, learned per-axis position embeddings: codes [B, T, H, W] (``extra`` where the extra
    row is meant) -> [B, N, D]. An embedding added onto one that has them (the upsampled guess onto the
    high-resolution tokens) needs no positions of its own."""

    cfg: SRModelConfig
    grid: Triple
    positions: bool = True

    @nn.compact
    def __call__(self, codes, extra):
        cfg = self.cfg
        dt = _dtype(cfg.dtype)
        ids = jnp.where(extra[..., None], cfg.factor_size, factorize(jnp.maximum(codes, 0), cfg))
        x = 0.0
        for j in range(cfg.factors):
            table = nn.Embed(
                cfg.factor_size + 1,
                cfg.d_model,
                dtype=dt,
                param_dtype=jnp.float32,
                embedding_init=P(nn.initializers.normal(1.0 / math.sqrt(cfg.factors)), (None, "embed")),
                name=f"factor_{j}",
            )
            x = x + table(ids[..., j])
        for axis, size in enumerate(self.grid if self.positions else ()):
            pos = self.param(
                f"pos_{'thw'[axis]}", P(nn.initializers.normal(0.02), (None, "embed")), (size, cfg.d_model), jnp.float32
            ).astype(dt)
            shape = [1, 1, 1, 1, cfg.d_model]
            shape[axis + 1] = size
            x = x + pos.reshape(shape)
        return x.reshape(codes.shape[0], -1, cfg.d_model)


class SuperResTransformer(nn.Module):
    """``__call__(tokens, lowres, lowres_keep, text_emb, text_mask[, upsampled])`` -> float32 logits
    [B, T, H, W, factors, factor_size] (module docstring)."""

    cfg: SRModelConfig

    @nn.compact
    def __call__(self, tokens, lowres, lowres_keep, text_emb, text_mask, upsampled=None):
        cfg = self.cfg
        dt = _dtype(cfg.dtype)
        b = tokens.shape[0]
        x = _GridEmbed(cfg, cfg.grid, name="embed")(tokens, tokens < 0)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        dropped = jnp.broadcast_to(~lowres_keep[:, None, None, None], lowres.shape)
        low = _GridEmbed(cfg, cfg.low_grid, name="lowres_embed")(lowres, dropped)
        low = RMSNorm(cfg.norm_eps, dt, name="ln_lowres_in")(low)
        if cfg.lowres_skip:
            skip = nn.Dense(
                cfg.d_model,
                use_bias=False,
                dtype=dt,
                param_dtype=jnp.float32,
                kernel_init=P(nn.initializers.normal(1.0 / math.sqrt(cfg.d_model)), (None, "embed")),
                name="lowres_skip",
            )(upsample_nearest(low, cfg.low_grid, cfg.scale))
            x = x + skip
        if cfg.upsampled_input:
            if upsampled is None:
                raise ValueError("model.upsampled_input: the upsampled guess must be given")
            gone = jnp.broadcast_to(~lowres_keep[:, None, None, None], upsampled.shape)
            x = x + _GridEmbed(cfg, cfg.grid, positions=False, name="upsampled_embed")(upsampled, gone)
        text = nn.Dense(
            cfg.d_model,
            use_bias=True,
            dtype=dt,
            param_dtype=jnp.float32,
            kernel_init=P(nn.initializers.normal(1.0 / math.sqrt(cfg.text_dim)), ("text_embed", "embed")),
            bias_init=P(nn.initializers.zeros, ("embed",)),
            name="text_proj",
        )(text_emb.astype(dt))
        null = self.param("text_null", P(nn.initializers.normal(1.0), (None, "embed")), (1, cfg.d_model), jnp.float32)
        text = jnp.concatenate([jnp.broadcast_to(null.astype(dt)[None], (b, 1, cfg.d_model)), text], axis=1)
        text = RMSNorm(cfg.norm_eps, dt, name="ln_text_in")(text)
        text_valid = jnp.concatenate([jnp.ones((b, 1), bool), text_mask.astype(bool)], axis=1)[:, None, None, :]
        for i in range(cfg.layers):
            x = SRBlock(cfg, i, name=f"block_{i}")(x, low, text, text_valid)
        x = RMSNorm(cfg.norm_eps, dt, name="ln_f")(x)
        logits = HeadDense(
            (cfg.d_model, cfg.factors, cfg.factor_size),
            ("embed", None, "vocab"),
            "bte,efv->btfv",
            1.0 / math.sqrt(cfg.d_model),
            dt,
            name="head",
        )(x)
        return logits.astype(jnp.float32).reshape(*tokens.shape, cfg.factors, cfg.factor_size)


# ------------------------------------------------------------------------------- helpers
def dummy_inputs(cfg: SRModelConfig, batch: int = 1, text_len: int = 4) -> tuple[Any, ...]:
    tokens = jnp.full((batch, *cfg.grid), MASK, jnp.int32)
    lowres = jnp.zeros((batch, *cfg.low_grid), jnp.int32)
    keep = jnp.ones((batch,), bool)
    text_emb = jnp.zeros((batch, text_len, cfg.text_dim), jnp.float32)
    text_mask = jnp.ones((batch, text_len), bool)
    upsampled = jnp.zeros((batch, *cfg.grid), jnp.int32) if cfg.upsampled_input else None
    return tokens, lowres, keep, text_emb, text_mask, upsampled


def init_params(cfg: SRModelConfig, rng: Array, boxed: bool = False):
    """float32 parameters (logical-axis metadata boxes stripped unless ``boxed``)."""
    params = SuperResTransformer(cfg).init(rng, *dummy_inputs(cfg))["params"]
    return params if boxed else nn.meta.unbox(params)


def abstract_params(cfg: SRModelConfig):
    """ShapeDtypeStructs of the (boxed) parameters, without allocating: ``jax.eval_shape``."""
    return jax.eval_shape(
        lambda r: SuperResTransformer(cfg).init(r, *dummy_inputs(cfg))["params"], jax.random.PRNGKey(0)
    )


def logical_axes(cfg: SRModelConfig):
    """The parameters' logical axis names (a PartitionSpec tree), for :mod:`videopoet.trainer.sharding`."""
    return nn.get_partition_spec(abstract_params(cfg))


def count_params(tree) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(nn.meta.unbox(tree))))
