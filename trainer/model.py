"""The VideoPoet prefix LM: a decoder-only transformer over the unified vocabulary (Flax Linen).

Inputs of one forward pass (every shape static):

    tokens      int32 [B, S]   unified-vocabulary ids (text positions hold PAD and are replaced)
    positions   int32 [B, S]   absolute positions (RoPE)
    mask        bool  [B, 1, S, K]  which keys each query may see (K = S, or the cache length)
    text_emb    float [B, Lt, text_dim]  frozen T5 encoder output (optional)
    text_index  int32 [B, S]   index into the Lt text slots, -1 elsewhere: the projected text
                               embeddings replace the token embeddings there (right after <bot_i>)

The prefix-LM mask (:func:`prefix_lm_mask`): a query sees every valid key of the prefix
(bidirectional) and the valid keys at or before itself (causal over the output). Loss on the
output only is the trainer's business (``loss_mask``).

Numerics: parameters float32; matmuls in ``cfg.dtype`` (bfloat16 by default); RMSNorm, softmax
and logits in float32. Attention uses :func:`jax.nn.dot_product_attention` (which picks cuDNN
flash attention on GPUs where it applies, XLA elsewhere), or a plain einsum (``attention=einsum``).

KV cache (for sampling; every shape static under ``jit``)::

    cache = init_cache(cfg, batch, length)
    logits, cache = prefill(model, params, tokens, valid, prefix_len, cache, text_emb, text_index)
    logits, cache = decode_step(model, params, token, pos, cache)   # token, pos: int32 [B]

``prefill`` runs the prompt [B, P] with the prefix-LM mask and writes keys/values at 0..P-1;
``decode_step`` appends one token per example at its own ``pos`` (examples may have different
prompt lengths) and returns the next-token logits. Their logits equal the full forward pass's.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from videopoet.trainer.config import ModelConfig

Array = jax.Array
P = nn.with_logical_partitioning


def _dtype(name: str):
    return jnp.bfloat16 if name == "bfloat16" else jnp.float32


# ------------------------------------------------------------------------------------- masks
def prefix_lm_mask(valid: Array, prefix_len: Array, num_queries: int | None = None) -> Array:
    """bool [B, 1, Q, K]: key k visible to query q iff valid[k] and (k < prefix_len or k <= q).

    ``valid`` is [B, K] (keys; padding, hidden text slots and dropped conditions are False);
    queries are positions 0..Q-1 (Q defaults to K).
    """
    k_len = valid.shape[1]
    q_len = k_len if num_queries is None else num_queries
    q = jnp.arange(q_len)[:, None]
    k = jnp.arange(k_len)[None, :]
    in_prefix = k[None] < prefix_len[:, None, None]
    causal = (k <= q)[None]
    return (valid[:, None, :] & (in_prefix | causal))[:, None]


def decode_mask(cache_valid: Array, pos: Array) -> Array:
    """bool [B, 1, 1, C]: the one new query at ``pos`` sees valid cache entries at or before it."""
    k = jnp.arange(cache_valid.shape[1])[None, :]
    return (cache_valid & (k <= pos[:, None]))[:, None, None, :]


# ------------------------------------------------------------------------------------- layers
class RMSNorm(nn.Module):
    eps: float = 1e-6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", P(nn.initializers.ones, ("embed",)), (x.shape[-1],), jnp.float32)
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * scale).astype(self.dtype)


def rope(x: Array, positions: Array, theta: float) -> Array:
    """Rotary embedding on [B, S, H, D] by positions [B, S] (rotate-half form)."""
    half = x.shape[-1] // 2
    freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    ang = positions.astype(jnp.float32)[..., None] * freq  # [B, S, half]
    sin, cos = jnp.sin(ang)[:, :, None, :], jnp.cos(ang)[:, :, None, :]
    x32 = x.astype(jnp.float32)
    x1, x2 = x32[..., :half], x32[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def attend(q: Array, k: Array, v: Array, mask: Array, implementation: str = "auto") -> Array:
    """q [B,T,N,D], k/v [B,S,K,D] (K divides N), mask bool [B,1,T,S] -> [B,T,N,D]."""
    if implementation != "einsum":
        return jax.nn.dot_product_attention(
            q, k, v, mask=mask, implementation=None if implementation == "auto" else implementation
        )
    n, kv = q.shape[2], k.shape[2]
    if kv != n:
        k, v = jnp.repeat(k, n // kv, axis=2), jnp.repeat(v, n // kv, axis=2)
    logits = jnp.einsum("btnd,bsnd->bnts", q, k, preferred_element_type=jnp.float32) / math.sqrt(q.shape[-1])
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bnts,bsnd->btnd", probs, v)


class HeadDense(nn.Module):
    """A multi-axis projection (``nn.DenseGeneral``'s kernel, init values and parameter path) whose
    kernel is created at its full rank: DenseGeneral draws it flattened to 2-D and reshapes it, and
    with a mesh set (``jax.set_mesh``: the model's sharding constraints apply) the flattened kernel
    cannot carry its 3 logical axis names."""

    shape: tuple[int, ...]
    axes: tuple[str, ...]
    equation: str  # einsum of (input, kernel)
    std: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", P(nn.initializers.normal(self.std), self.axes), self.shape, jnp.float32)
        return jnp.einsum(self.equation, x.astype(self.dtype), kernel.astype(self.dtype))


class Attention(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, positions, mask, cache=None, cache_pos=None):
        cfg = self.cfg
        dt = _dtype(cfg.dtype)

        def proj(heads, name, axes):
            return HeadDense((x.shape[-1], heads, cfg.head_dim), axes, "bte,ehd->bthd", cfg.init_std, dt, name=name)(x)

        q = proj(cfg.heads, "q", ("embed", "heads", "kv"))
        k = proj(cfg.num_kv_heads, "k", ("embed", "kv_heads", "kv"))
        v = proj(cfg.num_kv_heads, "v", ("embed", "kv_heads", "kv"))
        q, k = rope(q, positions, cfg.rope_theta), rope(k, positions, cfg.rope_theta)
        new_cache = None
        if cache is not None:  # write this call's keys/values at cache_pos[b] .. cache_pos[b]+S-1
            write = jax.vmap(lambda c, u, p: jax.lax.dynamic_update_slice(c, u.astype(c.dtype), (p, 0, 0)))
            k = write(cache["k"], k, cache_pos)
            v = write(cache["v"], v, cache_pos)
            new_cache = {"k": k, "v": v}
            k, v = k.astype(dt), v.astype(dt)
        out = attend(q, k, v, mask, cfg.attention)
        out = HeadDense(
            (cfg.heads, cfg.head_dim, cfg.d_model),
            ("heads", "kv", "embed"),
            "bthd,hde->bte",
            cfg.init_std / math.sqrt(2 * cfg.layers),
            dt,
            name="o",
        )(out)
        return out, new_cache


class Mlp(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        dt = _dtype(cfg.dtype)
        init = nn.initializers.normal(cfg.init_std)

        def dense(features, name, axes, std=None):
            return nn.Dense(
                features,
                use_bias=False,
                dtype=dt,
                param_dtype=jnp.float32,
                kernel_init=P(nn.initializers.normal(std) if std else init, axes),
                name=name,
            )

        h = dense(cfg.mlp_dim, "up", ("embed", "mlp"))(x)
        if cfg.mlp == "swiglu":
            h = nn.silu(dense(cfg.mlp_dim, "gate", ("embed", "mlp"))(x)) * h
        else:
            h = nn.gelu(h)
        return dense(cfg.d_model, "down", ("mlp", "embed"), cfg.init_std / math.sqrt(2 * cfg.layers))(h)


class Block(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, positions, mask, cache=None, cache_pos=None):
        cfg = self.cfg
        dt = _dtype(cfg.dtype)
        h, new_cache = Attention(cfg, name="attn")(
            RMSNorm(cfg.norm_eps, dt, name="ln1")(x), positions, mask, cache, cache_pos
        )
        x = x + h
        x = x + Mlp(cfg, name="mlp")(RMSNorm(cfg.norm_eps, dt, name="ln2")(x))
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        return x, new_cache


class PrefixLM(nn.Module):
    """``__call__(tokens, positions, mask, text_emb=None, text_index=None, cache=None, cache_pos=None)``
    -> (float32 logits [B, S, vocab], new cache or None)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, tokens, positions, mask, text_emb=None, text_index=None, cache=None, cache_pos=None):
        cfg = self.cfg
        dt = _dtype(cfg.dtype)
        embed = nn.Embed(
            cfg.vocab_size,
            cfg.d_model,
            dtype=dt,
            param_dtype=jnp.float32,
            embedding_init=P(nn.initializers.normal(1.0), ("vocab", "embed")),
            name="embed",
        )
        x = embed(tokens)
        # text projection: created even when unused so the parameter tree never depends on the inputs
        text_proj = nn.Dense(
            cfg.d_model,
            use_bias=True,
            dtype=dt,
            param_dtype=jnp.float32,
            kernel_init=P(nn.initializers.normal(1.0 / math.sqrt(cfg.text_dim)), ("text_embed", "embed")),
            bias_init=P(nn.initializers.zeros, ("embed",)),
            name="text_proj",
        )
        if text_emb is None:
            text_emb = jnp.zeros((tokens.shape[0], 1, cfg.text_dim), dt)
            text_index = None
        t = text_proj(text_emb.astype(dt))
        if text_index is not None:
            gathered = jnp.take_along_axis(t, jnp.maximum(text_index, 0)[..., None], axis=1)
            x = jnp.where((text_index >= 0)[..., None], gathered, x)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        block = Block
        if cfg.remat != "none" and cache is None:
            policy = None if cfg.remat == "full" else jax.checkpoint_policies.dots_with_no_batch_dims_saveable
            block = nn.remat(Block, policy=policy, prevent_cse=True)
        new_cache = [] if cache is not None else None
        for i in range(cfg.layers):
            layer_cache = None if cache is None else cache[i]
            x, c = block(cfg, name=f"block_{i}")(x, positions, mask, layer_cache, cache_pos)
            if cache is not None:
                new_cache.append(c)
        x = RMSNorm(cfg.norm_eps, dt, name="ln_f")(x)
        logits = nn.Dense(
            cfg.vocab_size,
            use_bias=False,
            dtype=dt,
            param_dtype=jnp.float32,
            kernel_init=P(nn.initializers.normal(1.0 / math.sqrt(cfg.d_model)), ("embed", "vocab")),
            name="head",
        )(x)
        return logits.astype(jnp.float32), new_cache


# ------------------------------------------------------------------------------------- helpers
def build(cfg: ModelConfig) -> PrefixLM:
    return PrefixLM(cfg)


def dummy_inputs(cfg: ModelConfig, batch: int = 1, length: int = 8, text_len: int = 4):
    tokens = jnp.zeros((batch, length), jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
    mask = prefix_lm_mask(jnp.ones((batch, length), bool), jnp.ones((batch,), jnp.int32))
    text_emb = jnp.zeros((batch, text_len, cfg.text_dim), jnp.float32)
    text_index = jnp.full((batch, length), -1, jnp.int32)
    return tokens, positions, mask, text_emb, text_index


def init_params(cfg: ModelConfig, rng: Array, boxed: bool = False):
    """float32 parameters (logical-axis metadata boxes stripped unless ``boxed``)."""
    variables = PrefixLM(cfg).init(rng, *dummy_inputs(cfg))
    params = variables["params"]
    return params if boxed else nn.meta.unbox(params)


def abstract_params(cfg: ModelConfig):
    """ShapeDtypeStructs of the (boxed) parameters, without allocating: ``jax.eval_shape``."""
    return jax.eval_shape(lambda r: PrefixLM(cfg).init(r, *dummy_inputs(cfg))["params"], jax.random.PRNGKey(0))


def count_params(tree) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(nn.meta.unbox(tree))))


def logical_axes(cfg: ModelConfig):
    """The parameters' logical axis names (a PartitionSpec tree)."""
    return nn.get_partition_spec(abstract_params(cfg))


def forward(model: PrefixLM, params, tokens, valid, prefix_len, text_emb=None, text_index=None, positions=None):
    """Full prefix-LM forward pass: float32 logits [B, S, vocab]."""
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
    mask = prefix_lm_mask(valid, prefix_len)
    logits, _ = model.apply({"params": params}, tokens, positions, mask, text_emb, text_index)
    return logits


# ------------------------------------------------------------------------------------- KV cache
def init_cache(cfg: ModelConfig, batch: int, length: int, dtype=None) -> dict:
    """Empty cache: per layer k/v [B, length, kv_heads, head_dim] and ``valid`` [B, length]."""
    dt = _dtype(cfg.dtype) if dtype is None else dtype
    shape = (batch, length, cfg.num_kv_heads, cfg.head_dim)
    return {
        "layers": [{"k": jnp.zeros(shape, dt), "v": jnp.zeros(shape, dt)} for _ in range(cfg.layers)],
        "valid": jnp.zeros((batch, length), bool),
    }


def prefill(model: PrefixLM, params, tokens, valid, prefix_len, cache, text_emb=None, text_index=None):
    """Run the prompt [B, P] (prefix-LM mask) into an empty cache. Returns (logits [B, P, V], cache).

    The next token of example b is predicted by ``logits[b, n_b - 1]`` where ``n_b`` is its prompt
    length; continue with ``decode_step(..., pos=n_b)``. Prompt positions past ``n_b`` must be
    ``valid=False``.
    """
    b, p = tokens.shape
    c = cache["valid"].shape[1]
    cache_valid = jax.lax.dynamic_update_slice(cache["valid"], valid.astype(bool), (0, 0))
    mask = prefix_lm_mask(cache_valid, prefix_len, num_queries=p)
    positions = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
    assert p <= c, f"prompt length {p} exceeds cache length {c}"
    logits, layers = model.apply(
        {"params": params}, tokens, positions, mask, text_emb, text_index, cache["layers"], jnp.zeros((b,), jnp.int32)
    )
    return logits, {"layers": layers, "valid": cache_valid}


def decode_step(model: PrefixLM, params, token, pos, cache):
    """Append ``token`` [B] at ``pos`` [B]; returns (logits [B, V] for the following token, cache)."""
    onehot = jnp.arange(cache["valid"].shape[1])[None, :] == pos[:, None]
    cache_valid = cache["valid"] | onehot
    mask = decode_mask(cache_valid, pos)
    logits, layers = model.apply(
        {"params": params},
        token[:, None],
        pos[:, None].astype(jnp.int32),
        mask,
        None,
        None,
        cache["layers"],
        pos.astype(jnp.int32),
    )
    return logits[:, 0], {"layers": layers, "valid": cache_valid}
