"""MAGVIT-v2 networks in Flax Linen: causal 3D CNN encoder, LFQ bottleneck, adaptive-GN decoder.

Why Linen: the parameters are one plain pytree, which is what the EMA copy, Orbax checkpoints, the
safetensors export, the fingerprint (sha256 over params bytes), image->video inflation (a pytree
map over kernels) and ``jax.jit`` caching all want; the sibling SoundStream tokenizer uses Linen too.

Layout: activations are ``[B, T, H, W, C]``. Every convolution is **causal in time**: the input is
padded with ``kt - 1`` copies of the first frame on the past side only, so output frame ``t`` sees
input frames ``<= t`` and the first frame is encoded alone (an image is a 1-frame video). Every
GroupNorm takes its statistics per frame (:func:`FrameGroupNorm`): pooling them over time would let
later frames change the first frame's codes.

* Downsampling: strided causal convs (stride 2 in space, and in time where the level says so;
  time ``1 + 2k -> 1 + k``).
* Upsampling: depth-to-space (a conv to ``C * st * 2 * 2`` channels, rearranged), dropping the
  first frame after a temporal depth-to-space (``1 + k -> 2 + 2k -> 1 + 2k``).
* Decoder GroupNorms are adaptive: scale and shift come from a 1x1 conv of the quantized latent,
  resized to the activation's grid (nearest in space, causal frame mapping in time).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from videopoet.tokenizers.magvit2 import lfq
from videopoet.tokenizers.magvit2.config import MagvitConfig


def _groups(channels: int, groups: int) -> int:
    return math.gcd(channels, groups)


def FrameGroupNorm(num_groups: int, **kw) -> nn.GroupNorm:  # noqa: N802 - a module factory
    """GroupNorm with statistics per frame (over H, W and the group's channels, never over time).

    A plain GroupNorm over ``[B, T, H, W, C]`` pools its mean and variance over all frames, so the
    first frame's output would depend on later frames and the network would not be causal.
    """
    return nn.GroupNorm(num_groups=num_groups, reduction_axes=(-3, -2, -1), **kw)


def temporal_down_levels(cfg: MagvitConfig) -> tuple[int, ...]:
    """Indices of the encoder downsamplers that also halve time (the last ``log2(td)`` ones)."""
    n = cfg.num_levels - 1
    return tuple(range(n - cfg.temporal_levels, n))


class TapConv3d(nn.Module):
    """A 3D convolution (``nn.Conv``'s parameters: ``kernel [kt,kh,kw,C,O]``, ``bias [O]``) computed as
    the sum over the ``kt`` temporal taps of 2D convolutions with time folded into the batch.

    Same maths as one ``lax`` 3D convolution, but XLA's CPU backend runs 3D convolutions through a
    slow generic path: with the few channels of the ``tiny``/``small`` presets the per-tap 2D form
    is several times faster on one core and never slower (``bench/magvit2_bench.py --conv``, figures
    in BENCHMARKS.md). Time is
    ``VALID`` (the caller pads the past), space is padded ``k // 2`` on both sides.
    """

    features: int
    kernel: tuple[int, int, int]
    strides: tuple[int, int, int]
    kernel_init: object

    @nn.compact
    def __call__(self, x):
        kt, kh, kw = self.kernel
        st, sh, sw = self.strides
        c = x.shape[-1]
        w = self.param("kernel", self.kernel_init, (kt, kh, kw, c, self.features))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        x = x.astype(w.dtype)  # computes in the weights' dtype (bf16 weights: a bf16 model; float32: a no-op)
        bsz, t = x.shape[0], x.shape[1]
        t_out = (t - kt) // st + 1
        if (kh, kw) == (1, 1) and (sh, sw) == (1, 1):
            y = sum(
                jnp.einsum("bthwc,co->bthwo", x[:, i : i + (t_out - 1) * st + 1 : st], w[i, 0, 0]) for i in range(kt)
            )
            return y + b
        pad = ((kh // 2, kh // 2), (kw // 2, kw // 2))
        y = 0
        for i in range(kt):
            xi = x[:, i : i + (t_out - 1) * st + 1 : st]
            xi = xi.reshape((bsz * t_out,) + xi.shape[2:])
            y = y + jax.lax.conv_general_dilated(xi, w[i], (sh, sw), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y.reshape((bsz, t_out) + y.shape[1:]) + b


class CausalConv3d(nn.Module):
    features: int
    kernel: tuple[int, int, int] = (3, 3, 3)
    strides: tuple[int, int, int] = (1, 1, 1)
    kernel_init: object = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x):
        kt, kh, kw = self.kernel
        if kt > 1:
            x = jnp.concatenate([jnp.repeat(x[:, :1], kt - 1, axis=1), x], axis=1)
        return TapConv3d(self.features, tuple(self.kernel), tuple(self.strides), self.kernel_init, name="conv")(x)


def resize_cond(c, t: int, h: int, w: int):
    """Latent ``[B, T', H', W', D]`` -> ``[B, t, h, w, D]``: nearest in space, causal map in time."""
    _, tl, hl, wl, _ = c.shape
    if (hl, wl) != (h, w):
        c = jnp.repeat(jnp.repeat(c, h // hl, axis=2), w // wl, axis=3)
    if tl != t:
        if tl == 1:
            idx = np.zeros(t, np.int32)
        else:
            m = (t - 1) // (tl - 1)
            idx = np.array([0] + [1 + (i - 1) // m for i in range(1, t)], np.int32)
        c = jnp.take(c, jnp.asarray(idx), axis=1)
    return c


class AdaptiveGroupNorm(nn.Module):
    groups: int
    adaptive: bool = True

    @nn.compact
    def __call__(self, x, cond):
        c = x.shape[-1]
        if not self.adaptive:
            return FrameGroupNorm(_groups(c, self.groups), name="norm")(x)
        y = FrameGroupNorm(_groups(c, self.groups), use_scale=False, use_bias=False, name="norm")(x)
        cc = resize_cond(cond, *x.shape[1:4])
        gamma = nn.Conv(c, (1, 1, 1), kernel_init=nn.initializers.zeros, name="scale")(cc)
        beta = nn.Conv(c, (1, 1, 1), kernel_init=nn.initializers.zeros, name="shift")(cc)
        return y * (1.0 + gamma) + beta


class ResBlock(nn.Module):
    features: int
    tk: int
    groups: int

    @nn.compact
    def __call__(self, x):
        h = nn.swish(FrameGroupNorm(_groups(x.shape[-1], self.groups), name="norm1")(x))
        h = CausalConv3d(self.features, (self.tk, 3, 3), name="conv1")(h)
        h = nn.swish(FrameGroupNorm(_groups(self.features, self.groups), name="norm2")(h))
        h = CausalConv3d(self.features, (self.tk, 3, 3), name="conv2")(h)
        if x.shape[-1] != self.features:
            x = CausalConv3d(self.features, (1, 1, 1), name="skip")(x)
        return x + h


class DecResBlock(nn.Module):
    features: int
    tk: int
    groups: int
    adaptive: bool

    @nn.compact
    def __call__(self, x, cond):
        h = nn.swish(AdaptiveGroupNorm(self.groups, self.adaptive, name="norm1")(x, cond))
        h = CausalConv3d(self.features, (self.tk, 3, 3), name="conv1")(h)
        h = nn.swish(AdaptiveGroupNorm(self.groups, self.adaptive, name="norm2")(h, cond))
        h = CausalConv3d(self.features, (self.tk, 3, 3), name="conv2")(h)
        if x.shape[-1] != self.features:
            x = CausalConv3d(self.features, (1, 1, 1), name="skip")(x)
        return x + h


class DepthToSpaceUp(nn.Module):
    """conv to ``C * st * 2 * 2`` then rearrange; after a temporal step the first frame is dropped."""

    features: int
    tk: int
    temporal: bool

    @nn.compact
    def __call__(self, x):
        st = 2 if self.temporal else 1
        y = CausalConv3d(self.features * st * 4, (self.tk, 3, 3), name="conv")(x)
        b, t, h, w, _ = y.shape
        y = y.reshape(b, t, h, w, st, 2, 2, self.features)
        y = y.transpose(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, t * st, h * 2, w * 2, self.features)
        return y[:, 1:] if self.temporal else y


class Encoder(nn.Module):
    cfg: MagvitConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        tk, g = cfg.temporal_kernel, cfg.norm_groups
        tdown = temporal_down_levels(cfg)
        x = CausalConv3d(cfg.channels * cfg.channel_mults[0], (tk, 3, 3), name="conv_in")(x)
        for i, m in enumerate(cfg.channel_mults):
            for j in range(cfg.res_blocks(i)):
                x = ResBlock(cfg.channels * m, tk, g, name=f"down{i}_res{j}")(x)
            if i < cfg.num_levels - 1:
                st = 2 if i in tdown else 1
                x = CausalConv3d(cfg.channels * cfg.channel_mults[i + 1], (tk, 3, 3), (st, 2, 2), name=f"down{i}")(x)
        for j in range(cfg.num_res_blocks):
            x = ResBlock(x.shape[-1], tk, g, name=f"mid_res{j}")(x)
        x = nn.swish(FrameGroupNorm(_groups(x.shape[-1], g), name="norm_out")(x))
        return CausalConv3d(cfg.lfq_bits, (1, 1, 1), name="conv_out")(x)


class Decoder(nn.Module):
    cfg: MagvitConfig

    @nn.compact
    def __call__(self, zq):
        cfg = self.cfg
        tk, g, ada = cfg.temporal_kernel, cfg.norm_groups, cfg.adaptive_norm
        tdown = temporal_down_levels(cfg)
        x = CausalConv3d(cfg.channels * cfg.channel_mults[-1], (tk, 3, 3), name="conv_in")(zq)
        for j in range(cfg.num_res_blocks):
            x = DecResBlock(x.shape[-1], tk, g, ada, name=f"mid_res{j}")(x, zq)
        for i in reversed(range(cfg.num_levels)):
            for j in range(cfg.res_blocks(i)):
                x = DecResBlock(cfg.channels * cfg.channel_mults[i], tk, g, ada, name=f"up{i}_res{j}")(x, zq)
            if i > 0:
                x = DepthToSpaceUp(cfg.channels * cfg.channel_mults[i - 1], tk, (i - 1) in tdown, name=f"up{i}")(x)
        x = nn.swish(AdaptiveGroupNorm(g, ada, name="norm_out")(x, zq))
        return CausalConv3d(3, (tk, 3, 3), name="conv_out")(x)


class MagvitVQ(nn.Module):
    """The autoencoder. Pixels are float in [-1, 1], ``[B, T, H, W, 3]``."""

    cfg: MagvitConfig

    def setup(self):
        self.encoder = Encoder(self.cfg, name="encoder")
        self.decoder = Decoder(self.cfg, name="decoder")

    def encode_latent(self, x):
        return self.encoder(x)

    def encode(self, x):
        """-> int32 codes [B, T', H', W']."""
        return lfq.bits_to_codes(self.encoder(x) > 0)

    def decode_latent(self, zq):
        return self.decoder(zq)

    def decode(self, codes):
        zq = lfq.codes_to_latent(codes, self.cfg.lfq_bits, self.cfg.lfq_scale)
        return self.decoder(zq)

    def __call__(self, x):
        """-> (reconstruction, pre-quantization latent z, codes)."""
        z = self.encoder(x)
        zq, codes = lfq.quantize(z, self.cfg.lfq_scale)
        return self.decoder(zq), z, codes


class Discriminator(nn.Module):
    """A small 3D conv discriminator (StyleGAN-ish: strided convs, leaky ReLU) -> patch logits."""

    channels: int = 32
    levels: int = 3

    @nn.compact
    def __call__(self, x):
        tk = 3 if x.shape[1] > 1 else 1
        h = nn.leaky_relu(CausalConv3d(self.channels, (tk, 3, 3), name="conv_in")(x), 0.2)
        for i in range(self.levels):
            ch = self.channels * min(2 ** (i + 1), 8)
            h = nn.leaky_relu(CausalConv3d(ch, (tk, 3, 3), name=f"conv{i}a")(h), 0.2)
            st = 2 if h.shape[1] > 1 else 1
            h = nn.leaky_relu(CausalConv3d(ch, (tk, 3, 3), (st, 2, 2), name=f"conv{i}b")(h), 0.2)
        return CausalConv3d(1, (1, 3, 3), name="conv_out")(h)[..., 0]


def inflate_params(image_params, video_params, cfg: MagvitConfig | None = None):
    """Image-trained params (``temporal_kernel=1``) -> video params with causal temporal kernels.

    Each conv kernel of temporal size 1 whose video counterpart is longer is placed at the **last**
    tap (the current frame, since the padding is on the past side) with zeros elsewhere, so the
    inflated encoder starts out as a per-frame image encoder (its temporal downsamplers keep every
    other frame). Everything else is copied unchanged.

    With ``cfg``, the decoder's temporal depth-to-space upsamplers are inflated too: an image model
    only ever uses the second ("current") half of their output channels (the first frame of each
    pair is dropped for a 1-frame input), so the first half never trains. Copying the trained half
    over it makes each latent frame decode to repeated frames: the inflated model starts as a
    sample-and-hold video model instead of one whose in-between frames come from random weights.
    """

    def fill(img, vid):  # on the host: eager jnp ops would compile once per shape
        img = np.array(img)
        if img.shape == vid.shape:
            return img
        if img.ndim == 5 and img.shape[0] == 1 and img.shape[1:] == vid.shape[1:]:
            out = np.zeros(vid.shape, img.dtype)
            out[-1] = img[0]
            return out
        raise ValueError(f"cannot inflate a parameter of shape {img.shape} to {vid.shape}")

    out = jax.tree_util.tree_map(fill, image_params, video_params)
    if cfg is not None and "decoder" in out:
        tdown = temporal_down_levels(cfg)
        dec = dict(out["decoder"])
        for i in range(1, cfg.num_levels):
            name = f"up{i}"
            if (i - 1) not in tdown or name not in dec:
                continue
            conv = dict(dec[name]["conv"]["conv"])  # DepthToSpaceUp -> CausalConv3d -> nn.Conv
            for leaf in ("kernel", "bias"):
                w = conv[leaf].copy()
                half = w.shape[-1] // 2  # channel layout (st, 2, 2, C): first half = the earlier frame
                w[..., :half] = w[..., half:]
                conv[leaf] = w
            dec[name] = dict(dec[name], conv=dict(dec[name]["conv"], conv=conv))
        out = dict(out, decoder=dec)
    return jax.tree_util.tree_map(jnp.asarray, out)


def deflate_params(video_params):
    """Video params -> image-model params (``temporal_kernel=1``) that compute, on an image, exactly what
    the video model computes on a 1-frame clip.

    The causal padding repeats the first frame, so on a 1-frame clip every temporal tap of a kernel sees
    that frame: the image kernel is the sum of the taps. The decoder's temporal depth-to-space keeps
    both halves (the image model drops the earlier half just as the video model does), norms and
    biases are shared as they are. This lets an image-first phase *continue* from a trained video
    model (see :func:`reinflate_params`).
    """

    def squash(w):
        w = np.array(w)
        return w.sum(axis=0, keepdims=True) if w.ndim == 5 else w

    return jax.tree_util.tree_map(lambda w: jnp.asarray(squash(w)), video_params)


def reinflate_params(image_params, video_params):
    """The video model ``video_params`` plus what an image phase started from ``deflate_params(video_params)``
    learnt: ``video + (image - deflate(video))``, with the change of each kernel on the current-frame
    (last) tap. On 1-frame clips the result computes exactly what ``image_params`` compute, and the
    temporal taps the video model had learnt are kept (``inflate_params`` would zero them)."""
    base = deflate_params(video_params)

    def add(img, vid, b):
        img, vid, b = np.asarray(img), np.array(vid), np.asarray(b)
        if img.shape != b.shape:
            raise ValueError(f"image params of shape {img.shape} do not match the deflated video params {b.shape}")
        delta = img - b
        if vid.ndim == 5:
            vid[-1] += delta[0]
            return vid
        return vid + delta

    return jax.tree_util.tree_map(lambda i, v, b: jnp.asarray(add(i, v, b)), image_params, video_params, base)


def grow_params(params, fresh):
    """A trained model's ``params`` placed into ``fresh`` (an init of a network with *more* residual blocks,
    ``level_res_blocks`` / ``num_res_blocks``, and otherwise the same architecture), computing exactly what
    ``params`` computes.

    Every parameter of ``params`` must exist in ``fresh`` with its shape. The residual blocks only
    ``fresh`` has keep their init except the last convolution (``conv2``: kernel and bias), which is
    zeroed, so each new block starts as the identity (``x + 0``) and its gradients still flow: the
    zeroed conv's own gradient is non-zero, and the rest of the block trains once it has moved.
    """
    from videopoet.tokenizers.magvit2.tokenizer import flatten  # the tokenizer module imports this one

    src = flatten(params)
    used = set()

    def place(path, leaf):
        key = "/".join(str(getattr(k, "key", k)) for k in path)
        if key in src:
            if src[key].shape != tuple(leaf.shape):
                raise ValueError(
                    f"cannot grow {key}: shape {src[key].shape} vs {tuple(leaf.shape)} in the larger network"
                )
            used.add(key)
            return jnp.asarray(src[key], leaf.dtype)
        parts = key.split("/")
        if len(parts) < 3 or "_res" not in parts[1]:
            raise ValueError(f"cannot grow into {key}: only residual blocks may be added")
        if parts[2] == "conv2":
            return jnp.zeros(leaf.shape, leaf.dtype)
        return jnp.asarray(leaf)

    out = jax.tree_util.tree_map_with_path(place, fresh)
    missing = sorted(set(src) - used)
    if missing:
        raise ValueError(
            f"cannot grow: the larger network has no {missing[0]} ({len(missing)} parameters of the "
            f"trained model have no place)"
        )
    return out


def finer_time_params(params, source: MagvitConfig, cfg: MagvitConfig):
    """A trained model's ``params`` as the start of the same network with a smaller ``temporal_downsample``
    (more latent frames per clip: 17 frames give 9 instead of 5 at 2 instead of 4).

    The encoder's kernels are the same: a downsampler that no longer halves time keeps its kernel and
    steps by one frame. In the decoder, each upsampler that no longer doubles time keeps the output
    channels of the later of the two frames it made (the frame its latent frame ends on) and drops the
    others. The result does not compute what ``params`` compute (it is where a fine-tune at the finer
    rate starts, far nearer than a random init); every other parameter is kept as it is.
    """
    from videopoet.tokenizers.magvit2.tokenizer import flatten, unflatten  # that module imports this one

    if cfg.temporal_downsample > source.temporal_downsample:  # both powers of 2 (the config checks)
        raise ValueError(
            f"temporal_downsample {cfg.temporal_downsample} is not a finer rate than the source's "
            f"{source.temporal_downsample}"
        )
    dropped = sorted(set(temporal_down_levels(source)) - set(temporal_down_levels(cfg)))
    flat = flatten(params)
    for level in dropped:
        for leaf in ("kernel", "bias"):
            key = f"decoder/up{level + 1}/conv/conv/{leaf}"
            if key not in flat:
                raise ValueError(f"cannot refine time: the source has no {key}")
            w = np.asarray(flat[key])
            flat[key] = w.reshape(*w.shape[:-1], 2, w.shape[-1] // 2)[..., 1, :]
    return unflatten(flat)
