"""Perceptual loss for tokenizer training: an LPIPS-style distance over a user-supplied VGG-16 trunk.

MAGVIT(-v2), like VQGAN, adds a perceptual term to the pixel losses. No such network can be shipped or
downloaded here, so the user supplies the weights as **safetensors** (never a pickle):

* the VGG-16 convolutional trunk with torchvision's ``features.N.weight`` / ``features.N.bias`` names
  (PyTorch layout ``[out, in, kh, kw]``; the 13 convs sit at indices 0 2 5 7 10 12 14 17 19 21 24 26 28),
  e.g. the ``model.safetensors`` of a torchvision-ImageNet VGG-16 export. The LPIPS package's own
  ``net.sliceK.N.*`` names are read too;
* optionally the five LPIPS linear heads (``linK.model.1.weight`` or ``linK.weight``, ``[1, C, 1, 1]``),
  in the same file or in a second one (``perceptual_checkpoint=vgg.safetensors,lpips_lin.safetensors``).
  Without them every channel weighs 1 (LPIPS's "baseline" distance).

Distance (per image, pixels in ``[-1, 1]``): shift/scale the input as LPIPS does, run the trunk, and at
relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 unit-normalise each position's feature vector, square
the difference between the two images, weight the channels (the linear heads), sum them, average over
space, and sum over the five taps. Channel counts are read from the weights, so a narrow VGG-shaped
file (what the tests write) works the same way.

The trunk is frozen: its parameters are an input of the train step, never optimised or checkpointed.
A run records the file's sha256 (``OUT/perceptual.json``) and refuses to resume with other weights.
"""

from __future__ import annotations

import hashlib
import re

import jax
import jax.numpy as jnp
import numpy as np

from videopoet.schemas.errors import VideoPoetError

# torchvision vgg16().features: conv layers (each followed by a ReLU) and the 2x2 max pools
CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
POOL_AFTER = (2, 7, 14, 21)  # a max pool follows the ReLU of these convs
TAP_AFTER = (2, 7, 14, 21, 28)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
# LPIPS's input scaling layer (on [-1, 1] pixels)
SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)

_CONV_KEY = re.compile(r"(?:^|\.)(?:features|slice\d)\.(\d+)\.(weight|bias)$")
_LIN_KEY = re.compile(r"(?:^|\.)lin(\d)\.(?:model\.1\.)?weight$")


class PerceptualWeightsError(VideoPoetError, ValueError):
    """The perceptual network's weights are missing, unreadable or not VGG-16 shaped."""


def _read_safetensors(path: str) -> tuple[dict[str, np.ndarray], bytes]:
    import fsspec
    import safetensors.numpy as stn

    try:
        with fsspec.open(path, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        raise PerceptualWeightsError(f"perceptual_checkpoint {path}: no such file") from None
    try:
        return stn.load(blob), blob
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise PerceptualWeightsError(f"perceptual_checkpoint {path}: not a safetensors file ({e})") from None


def checkpoint_paths(spec: str) -> list[str]:
    """``perceptual_checkpoint`` -> the file paths it names (comma-separated)."""
    paths = [p.strip() for p in spec.split(",") if p.strip()]
    if not paths:
        raise PerceptualWeightsError("perceptual_checkpoint names no file")
    return paths


def parse_weights(tensors: dict[str, np.ndarray], where: str = "perceptual weights") -> dict:
    """Named tensors -> ``{"convs": [(kernel HWIO, bias)] * 13, "lins": [C] * 5 or None}`` (float32, checked)."""
    convs: dict[int, dict[str, np.ndarray]] = {}
    lins: dict[int, np.ndarray] = {}
    for name, arr in tensors.items():
        if m := _CONV_KEY.search(name):
            idx, kind = int(m.group(1)), m.group(2)
            if idx in CONV_INDICES:
                if kind in convs.setdefault(idx, {}):
                    raise PerceptualWeightsError(f"{where}: two tensors for features.{idx}.{kind}")
                convs[idx][kind] = arr
        elif m := _LIN_KEY.search(name):
            k = int(m.group(1))
            if k in lins:
                raise PerceptualWeightsError(f"{where}: two tensors for lin{k}")
            lins[k] = arr
    missing = [f"features.{i}.{k}" for i in CONV_INDICES for k in ("weight", "bias") if k not in convs.get(i, {})]
    if missing:
        raise PerceptualWeightsError(
            f"{where}: not a VGG-16 trunk, missing {len(missing)} tensors "
            f"(first: {missing[0]}; torchvision names features.N.weight/bias expected)"
        )
    out_convs, c_in, tap_channels = [], 3, []
    for i in CONV_INDICES:
        w, b = np.asarray(convs[i]["weight"]), np.asarray(convs[i]["bias"])
        if w.ndim != 4 or w.shape[1:] != (c_in, 3, 3) or b.shape != (w.shape[0],):
            raise PerceptualWeightsError(
                f"{where}: features.{i} has weight {tuple(w.shape)} and bias "
                f"{tuple(b.shape)}; expected [out, {c_in}, 3, 3] and [out]"
            )
        if w.dtype.kind != "f" or not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise PerceptualWeightsError(f"{where}: features.{i} holds non-float or non-finite values")
        out_convs.append((np.ascontiguousarray(w.astype(np.float32).transpose(2, 3, 1, 0)), b.astype(np.float32)))
        c_in = w.shape[0]
        if i in TAP_AFTER:
            tap_channels.append(c_in)
    out_lins = None
    if lins:
        if sorted(lins) != list(range(len(TAP_AFTER))):
            raise PerceptualWeightsError(
                f"{where}: LPIPS heads lin0..lin4 expected, found {', '.join(f'lin{k}' for k in sorted(lins))}"
            )
        out_lins = []
        for k, c in enumerate(tap_channels):
            w = np.asarray(lins[k])
            if w.size != c or w.ndim not in (1, 4) or (w.ndim == 4 and w.shape != (1, c, 1, 1)):
                raise PerceptualWeightsError(f"{where}: lin{k} has shape {tuple(w.shape)}, expected [1, {c}, 1, 1]")
            if w.dtype.kind != "f" or not np.isfinite(w).all():
                raise PerceptualWeightsError(f"{where}: lin{k} holds non-float or non-finite values")
            out_lins.append(w.reshape(c).astype(np.float32))
    return {"convs": out_convs, "lins": out_lins}


def load_weights(spec: str) -> tuple[dict, str]:
    """``perceptual_checkpoint`` (one or more comma-separated safetensors paths / URIs) ->
    (parsed weights as jax arrays, sha256 over the files' bytes in order)."""
    merged: dict[str, np.ndarray] = {}
    digest = hashlib.sha256()
    for path in checkpoint_paths(spec):
        tensors, blob = _read_safetensors(path)
        digest.update(hashlib.sha256(blob).digest())
        clash = sorted(set(tensors) & set(merged))
        if clash:
            raise PerceptualWeightsError(f"perceptual_checkpoint: {clash[0]} appears in more than one file")
        merged.update(tensors)
    parsed = parse_weights(merged, f"perceptual_checkpoint {spec}")
    return jax.tree_util.tree_map(jnp.asarray, parsed), digest.hexdigest()


def _features(weights, x):
    """[N, H, W, 3] in [-1, 1] -> the five tapped ReLU feature maps."""
    h = (x - SHIFT) / SCALE
    taps = []
    for i, (w, b) in zip(CONV_INDICES, weights["convs"], strict=True):
        h = jax.lax.conv_general_dilated(h, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
        h = jax.nn.relu(h + b)
        if i in TAP_AFTER:
            taps.append(h)
        if i in POOL_AFTER:
            h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return taps


def _unit(f):
    return f / (jnp.sqrt(jnp.sum(jnp.square(f), axis=-1, keepdims=True)) + 1e-10)


def distance(weights, x, y):
    """LPIPS-style distance between image batches ``x``, ``y`` ``[N, H, W, 3]`` in [-1, 1] -> ``[N]``.

    Images must be at least 16 x 16 (four 2x2 pools before the last tap)."""
    if x.shape[-3] < 16 or x.shape[-2] < 16:
        raise PerceptualWeightsError(f"perceptual loss needs images of at least 16 x 16, got {x.shape[-3:-1]}")
    fx, fy = _features(weights, x), _features(weights, y)
    total = 0.0
    for k, (a, b) in enumerate(zip(fx, fy, strict=True)):
        d = jnp.square(_unit(a) - _unit(b))
        d = jnp.sum(d * weights["lins"][k], axis=-1) if weights["lins"] is not None else jnp.sum(d, axis=-1)
        total = total + jnp.mean(d, axis=(1, 2))
    return total


def video_loss(weights, real, recon, frames: int = 0, key=None):
    """Mean perceptual distance between ``real`` and ``recon`` ``[B, T, H, W, 3]``, per frame.

    ``frames > 0`` (and fewer than T) scores that many frames per clip, drawn without replacement
    with ``key`` (a pure function of the step in training), instead of all of them. The real frames'
    features carry no gradient."""
    b, t = real.shape[:2]
    if 0 < frames < t:
        idx = jax.vmap(lambda k: jax.random.permutation(k, t)[:frames])(jax.random.split(key, b))
        real = jnp.take_along_axis(real, idx[:, :, None, None, None], axis=1)
        recon = jnp.take_along_axis(recon, idx[:, :, None, None, None], axis=1)
        t = frames
    flat = lambda v: v.reshape((b * t,) + v.shape[2:])  # noqa: E731
    return jnp.mean(distance(weights, jax.lax.stop_gradient(flat(real)), flat(recon)))


def write_vgg_like(path: str, widths=(64, 128, 256, 512, 512), seed: int = 0, lin: bool = False) -> None:
    """Write a VGG-16-shaped safetensors file with seeded He-initialised weights (torchvision names and
    layout): what tests and dry runs use where no trained VGG-16 is at hand. ``widths``: the channels of
    the five blocks (narrow ones make a small file)."""
    import safetensors.numpy as stn

    rng = np.random.default_rng(seed)
    per_block = (2, 2, 3, 3, 3)
    chans = [w for w, n in zip(widths, per_block, strict=True) for _ in range(n)]
    tensors, c_in = {}, 3
    for i, c in zip(CONV_INDICES, chans, strict=True):
        tensors[f"features.{i}.weight"] = (rng.standard_normal((c, c_in, 3, 3)) * np.sqrt(2.0 / (9 * c_in))).astype(
            np.float32
        )
        tensors[f"features.{i}.bias"] = (0.01 * rng.standard_normal(c)).astype(np.float32)
        c_in = c
    if lin:
        for k, c in enumerate(widths):
            tensors[f"lin{k}.model.1.weight"] = np.abs(rng.standard_normal((1, c, 1, 1))).astype(np.float32) / c
    with open(path, "wb") as f:
        f.write(stn.save(tensors))
