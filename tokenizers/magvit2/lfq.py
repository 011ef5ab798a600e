"""Lookup-free quantization (LFQ, MAGVIT-v2 section 3.1): no codebook to look up.

Each of the ``bits`` latent dims is quantized to ``sign(z) * scale``; the code index is the integer
whose bit ``i`` (least significant first) is ``z_i > 0``. The implicit codebook is ``{-s, +s}^bits``.

Entropy penalty (to use the whole codebook): with code probabilities
``p(c | z) = softmax_c(-||z - c||^2 / tau)``, and because ``||z - c||^2 = const + sum_i -2 z_i c_i``
for ``c_i = +-s``, the distribution factorizes over bits: ``p(bit_i = 1) = sigmoid(4 s z_i / tau)``.
So the **per-sample entropy** is exactly ``sum_i H(p_i)`` at any number of bits. The
**codebook entropy** is the entropy of the batch-average distribution, which is a mixture and
does not factorize: it is computed exactly (``[N, 2^bits]`` probabilities) for
``bits <= exact_max_bits`` and otherwise by the sum of per-bit entropies of the batch-average
marginals (an upper bound that is tight when the bits are independent across the batch). The
loss is ``per_sample - gamma * codebook`` (minimised: confident codes, used uniformly).

Commitment ``||z - sg(q)||^2`` and the straight-through estimator ``z + sg(q - z)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def bits_to_codes(bits):
    """bool/int {0,1} [..., B] -> int32 codes [...] (bit i has weight 2**i)."""
    b = jnp.asarray(bits).astype(jnp.int32)
    weights = 2 ** jnp.arange(b.shape[-1], dtype=jnp.int32)
    return jnp.sum(b * weights, axis=-1).astype(jnp.int32)


def codes_to_bits(codes, num_bits: int):
    """int codes [...] -> int32 {0,1} [..., num_bits]."""
    c = jnp.asarray(codes).astype(jnp.int32)
    return (c[..., None] >> jnp.arange(num_bits, dtype=jnp.int32)) & 1


def codes_to_latent(codes, num_bits: int, scale: float = 1.0, dtype=jnp.float32):
    """int codes [...] -> float [..., num_bits] of +-scale (the quantized latent)."""
    bits = codes_to_bits(codes, num_bits)
    return (bits.astype(dtype) * 2.0 - 1.0) * scale


def quantize(z, scale: float = 1.0):
    """z [..., B] -> (straight-through quantized latent, int32 codes [...])."""
    q = jnp.where(z > 0, scale, -scale).astype(z.dtype)
    codes = bits_to_codes(z > 0)
    return z + jax.lax.stop_gradient(q - z), codes


def _binary_entropy(p):
    p = jnp.clip(p, 1e-7, 1 - 1e-7)
    return -(p * jnp.log(p) + (1 - p) * jnp.log(1 - p))


def bit_probs(z, scale: float = 1.0, temperature: float = 0.01):
    """p(bit_i = 1 | z) under softmax_c(-||z - c||^2 / tau), factorized: sigmoid(4 s z_i / tau)."""
    return jax.nn.sigmoid(4.0 * scale * z / temperature)


def entropy_terms(z, scale: float = 1.0, temperature: float = 0.01, exact_max_bits: int = 12):
    """(per-sample entropy, codebook entropy) in nats, averaged over all positions of ``z [..., B]``."""
    bits = z.shape[-1]
    p = bit_probs(z.reshape(-1, bits).astype(jnp.float32), scale, temperature)  # [N, B]
    per_sample = jnp.mean(jnp.sum(_binary_entropy(p), axis=-1))
    if bits <= exact_max_bits:
        # full code distribution per sample: prod_i (p_i if bit_i(c) else 1 - p_i), in log space
        table = codes_to_bits(jnp.arange(2**bits), bits).astype(jnp.float32)  # [C, B]
        logp1 = jnp.log(jnp.clip(p, 1e-7, 1.0))
        logp0 = jnp.log(jnp.clip(1 - p, 1e-7, 1.0))
        logits = logp1 @ table.T + logp0 @ (1 - table).T  # [N, C]
        avg = jnp.mean(jnp.exp(logits), axis=0)
        avg = avg / jnp.sum(avg)
        codebook = -jnp.sum(avg * jnp.log(jnp.clip(avg, 1e-12, 1.0)))
    else:
        codebook = jnp.sum(_binary_entropy(jnp.mean(p, axis=0)))
    return per_sample, codebook


def entropy_loss(z, scale: float = 1.0, temperature: float = 0.01, gamma: float = 1.0, exact_max_bits: int = 12):
    """per-sample entropy - gamma * codebook entropy (lower is better); returns (loss, aux dict)."""
    per_sample, codebook = entropy_terms(z, scale, temperature, exact_max_bits)
    return per_sample - gamma * codebook, {"per_sample_entropy": per_sample, "codebook_entropy": codebook}


def commitment_loss(z, scale: float = 1.0):
    q = jnp.where(z > 0, scale, -scale).astype(z.dtype)
    return jnp.mean(jnp.square(z - jax.lax.stop_gradient(q)))


def codebook_stats(codes: np.ndarray, codebook_size: int) -> dict:
    """Usage fraction and perplexity (exp of the empirical code entropy) of a set of codes."""
    counts = np.bincount(np.asarray(codes, np.int64).ravel(), minlength=codebook_size).astype(np.float64)
    total = counts.sum()
    if total == 0:
        return {"usage": 0.0, "perplexity": 0.0, "used": 0}
    p = counts[counts > 0] / total
    return {
        "usage": float((counts > 0).mean()),
        "used": int((counts > 0).sum()),
        "perplexity": float(np.exp(-(p * np.log(p)).sum())),
    }
