"""SoundStream network in Flax Linen: conv encoder, residual VQ, conv decoder, STFT discriminator.

Layout: waveforms are ``[B, N]`` float32; inside the network they are ``[B, T, C]`` (Flax's
channels-last convention). Codes are ``[B, levels, frames]`` int32.

Residual VQ codebooks live in the ``"vq"`` variable collection (not ``"params"``): they are updated
by :func:`ema_update` (EMA k-means + dead-code re-seeding), never by the optimizer. Gradients reach
the encoder through the straight-through estimator and the commitment loss.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from videopoet.tokenizers.soundstream.config import SoundStreamConfig


def _stage_channels(cfg: SoundStreamConfig) -> list[int]:
    """Channel width before each strided stage, and after the last (len = len(strides) + 1)."""
    chans = [cfg.channels]
    for _ in cfg.strides:
        chans.append(min(chans[-1] * 2, cfg.max_channels))
    return chans


class ResidualUnit(nn.Module):
    features: int
    dilation: int
    kernel_size: int = 7

    @nn.compact
    def __call__(self, x):
        y = nn.elu(x)
        y = nn.Conv(self.features, (self.kernel_size,), kernel_dilation=(self.dilation,), padding="SAME")(y)
        y = nn.elu(y)
        y = nn.Conv(self.features, (1,))(y)
        return x + y


class Encoder(nn.Module):
    cfg: SoundStreamConfig

    @nn.compact
    def __call__(self, x):  # [B, N, 1] -> [B, N / hop, code_dim]
        cfg = self.cfg
        chans = _stage_channels(cfg)
        x = nn.Conv(chans[0], (cfg.kernel_size,), padding="SAME")(x)
        for i, s in enumerate(cfg.strides):
            for d in cfg.res_dilations:
                x = ResidualUnit(chans[i], d, cfg.kernel_size)(x)
            x = nn.elu(x)
            # kernel 2s, stride s, padding s in total: an exact multiple of s maps to length / s
            x = nn.Conv(chans[i + 1], (2 * s,), strides=(s,), padding=[((s + 1) // 2, s // 2)])(x)
        x = nn.elu(x)
        return nn.Conv(cfg.code_dim, (3,), padding="SAME")(x)


class Decoder(nn.Module):
    cfg: SoundStreamConfig

    @nn.compact
    def __call__(self, z):  # [B, F, code_dim] -> [B, F * hop, 1]
        cfg = self.cfg
        chans = _stage_channels(cfg)
        x = nn.Conv(chans[-1], (cfg.kernel_size,), padding="SAME")(z)
        for i in reversed(range(len(cfg.strides))):
            s = cfg.strides[i]
            x = nn.elu(x)
            x = nn.ConvTranspose(chans[i], (2 * s,), strides=(s,), padding="SAME")(x)
            for d in cfg.res_dilations:
                x = ResidualUnit(chans[i], d, cfg.kernel_size)(x)
        x = nn.elu(x)
        return nn.Conv(1, (cfg.kernel_size,), padding="SAME")(x)


def nearest_code(r: jax.Array, codebook: jax.Array) -> jax.Array:
    """Index of the nearest codebook row (squared L2) for each vector of ``r`` [..., D]."""
    d = jnp.sum(r * r, axis=-1, keepdims=True) - 2.0 * r @ codebook.T + jnp.sum(codebook * codebook, axis=-1)
    return jnp.argmin(d, axis=-1).astype(jnp.int32)


class SoundStream(nn.Module):
    cfg: SoundStreamConfig

    def setup(self):
        cfg = self.cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        q, k, d = cfg.num_quantizers, cfg.codebook_size, cfg.code_dim
        self.codebook = self.variable(
            "vq", "codebook", lambda: jax.random.normal(self.make_rng("params"), (q, k, d)) * 0.1
        )
        # EMA statistics; cluster_size starts at 0 so the first training step seeds every code from data
        self.cluster_size = self.variable("vq", "cluster_size", lambda: jnp.zeros((q, k), jnp.float32))
        self.embed_sum = self.variable("vq", "embed_sum", lambda: jnp.zeros((q, k, d), jnp.float32))

    def encode_latent(self, wave):  # [B, N] -> [B, F, D]
        return self.encoder(wave[..., None])

    def decode_latent(self, z):  # [B, F, D] -> [B, F*hop]
        return self.decoder(z)[..., 0]

    def quantize(self, z, n_active=None, levels=None):
        """Residual VQ. ``n_active`` [B] (levels kept per example) or None for all ``levels``.

        Returns (quantized [B,F,D], codes [B,L,F], residual inputs [L,B,F,D], level masks [L,B]).
        """
        levels = levels or self.cfg.num_quantizers
        cb = self.codebook.value
        b = z.shape[0]
        if n_active is None:
            n_active = jnp.full((b,), levels, jnp.int32)
        out = jnp.zeros_like(z)
        residual = z
        codes, inputs, masks = [], [], []
        for q in range(levels):
            idx = nearest_code(residual, cb[q])
            vec = cb[q][idx]
            m = (q < n_active).astype(z.dtype)
            out = out + vec * m[:, None, None]
            inputs.append(residual)
            residual = residual - vec
            codes.append(idx)
            masks.append(m)
        return out, jnp.stack(codes, 1), jnp.stack(inputs, 0), jnp.stack(masks, 0)

    def lookup(self, codes):  # [B, L, F] -> [B, F, D]
        cb = self.codebook.value
        out = 0.0
        for q in range(codes.shape[1]):
            out = out + cb[q][codes[:, q]]
        return out

    def encode(self, wave, levels=None):
        z = self.encode_latent(wave)
        return self.quantize(z, levels=levels)[1]

    def decode(self, codes):
        return self.decode_latent(self.lookup(codes))

    def __call__(self, wave, n_active=None):
        """Training forward: (reconstruction [B,N], aux dict)."""
        z = self.encode_latent(wave)
        zq, codes, inputs, masks = self.quantize(jax.lax.stop_gradient(z), n_active)
        commit = jnp.mean((z - jax.lax.stop_gradient(zq)) ** 2)
        zq_st = z + jax.lax.stop_gradient(zq - z)  # straight-through
        recon = self.decode_latent(zq_st)
        return recon, {"codes": codes, "inputs": inputs, "masks": masks, "commit": commit}


def sample_n_active(rng, batch: int, cfg: SoundStreamConfig) -> jax.Array:
    """Quantizer dropout: with prob ``quantizer_dropout`` keep n ~ U{1..Q} levels, else all Q."""
    r1, r2 = jax.random.split(rng)
    n = jax.random.randint(r1, (batch,), 1, cfg.num_quantizers + 1)
    drop = jax.random.uniform(r2, (batch,)) < cfg.quantizer_dropout
    return jnp.where(drop, n, cfg.num_quantizers).astype(jnp.int32)


def ema_update(vq: dict, aux: dict, rng, cfg: SoundStreamConfig) -> tuple[dict, jax.Array]:
    """EMA k-means codebook update + re-seeding of dead codes from this batch's residual vectors.

    A level's statistics only see the examples for which that level was active (quantizer dropout).
    A code is *dead* when its EMA count falls below ``dead_code_fraction`` x the uniform share
    (active vectors / codebook_size); it is replaced by a random active vector of the batch and its
    count reset to the threshold, so a re-seeded code that wins no vector in the next batch is re-seeded
    again (unused codes keep tracking the moving encoder output), while one that wins vectors survives.
    Returns (new vq, number of codes re-seeded per level [Q]).
    """
    decay, k = cfg.ema_decay, cfg.codebook_size
    cs, es = vq["cluster_size"], vq["embed_sum"]
    new_cb, new_cs, new_es, reseeded = [], [], [], []
    rngs = jax.random.split(rng, cfg.num_quantizers)
    for q in range(cfg.num_quantizers):
        x = aux["inputs"][q].reshape(-1, cfg.code_dim)
        idx = aux["codes"][:, q].reshape(-1)
        w = jnp.broadcast_to(aux["masks"][q][:, None], aux["codes"][:, q].shape).reshape(-1)
        onehot = jax.nn.one_hot(idx, k, dtype=x.dtype) * w[:, None]
        counts = onehot.sum(0)
        sums = onehot.T @ x
        c = decay * cs[q] + (1 - decay) * counts
        e = decay * es[q] + (1 - decay) * sums
        n = jnp.sum(c)
        eps = 1e-5
        smoothed = (c + eps) / (n + k * eps) * n
        book = e / jnp.maximum(smoothed, eps)[:, None]
        # dead codes -> random active batch vectors
        n_vec = jnp.maximum(jnp.sum(w), 1.0)
        threshold = cfg.dead_code_fraction * n_vec / k
        dead = c < threshold
        pick = jax.random.categorical(rngs[q], jnp.log(w + 1e-12), shape=(k,))
        seed = x[pick]
        any_active = jnp.sum(w) > 0
        dead = dead & any_active
        reset = threshold
        book = jnp.where(dead[:, None], seed, book)
        c = jnp.where(dead, reset, c)
        e = jnp.where(dead[:, None], seed * reset, e)
        new_cb.append(book)
        new_cs.append(c)
        new_es.append(e)
        reseeded.append(jnp.sum(dead))
    out = {"codebook": jnp.stack(new_cb), "cluster_size": jnp.stack(new_cs), "embed_sum": jnp.stack(new_es)}
    return out, jnp.stack(reseeded)


class STFTDiscriminator(nn.Module):
    """Complex-STFT discriminator (real/imag as 2 channels, 2D convs). Returns (logits, features)."""

    channels: int = 16
    n_fft: int = 1024
    hop: int = 256

    @nn.compact
    def __call__(self, wave):
        spec = stft(wave, self.n_fft, self.hop)  # [B, T, F] complex
        x = jnp.stack([spec.real, spec.imag], -1)
        feats = []
        ch = self.channels
        x = nn.Conv(ch, (7, 7), padding="SAME")(x)
        feats.append(x)
        for stride_f in (2, 2, 2, 2):
            ch = min(ch * 2, 256)
            x = nn.leaky_relu(x, 0.2)
            x = nn.Conv(ch, (3, 3), strides=(1, stride_f), padding="SAME")(x)
            feats.append(x)
        x = nn.leaky_relu(x, 0.2)
        logits = nn.Conv(1, (3, 3), padding="SAME")(x)
        return logits, feats


def stft(wave, n_fft: int, hop: int):
    """Hann-windowed STFT with reflect padding: [B, N] -> complex [B, frames, n_fft//2+1]."""
    pad = n_fft // 2
    x = jnp.pad(wave, ((0, 0), (pad, pad)), mode="reflect")
    n_frames = 1 + (x.shape[1] - n_fft) // hop
    idx = jnp.arange(n_fft)[None, :] + hop * jnp.arange(n_frames)[:, None]
    frames = x[:, idx]
    win = 0.5 - 0.5 * jnp.cos(2 * jnp.pi * jnp.arange(n_fft) / n_fft)
    return jnp.fft.rfft(frames * win, axis=-1)
