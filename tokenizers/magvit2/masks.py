"""COMMIT-style condition clips for inpainting / outpainting / future prediction (MAGVIT section 3.2).

A condition clip is the input video with the hidden region replaced by a fixed value
(``FILL_VALUE``, mid-grey); it is tokenized by the *same* encoder into its own condition tokens,
so the LM sees "what is visible" as ordinary visual tokens.

Mask kinds (``MASK_KINDS``), ``True`` = hidden:

* ``inpaint_center``  - a centred box of ``ratio`` x the height and width (default 0.5);
* ``outpaint_left|right|top|bottom`` - one band of ``ratio`` x the width/height (default 0.25);
* ``outpaint_border`` - all four bands (only the centre stays visible);
* ``future``          - every frame from ``keep_frames`` on (default 5 = 1 + 4: two latent frames).

Spatial edges are rounded to multiples of ``align`` pixels (the tokenizer's spatial factor) when
possible, so whole tokens are either visible or hidden; :func:`token_mask` gives the hidden
latent positions (a token counts as hidden if any of its pixels is).
"""

from __future__ import annotations

import numpy as np

from videopoet.schemas.errors import VideoPoetError

FILL_VALUE = 128
MASK_KINDS = (
    "inpaint_center",
    "outpaint_left",
    "outpaint_right",
    "outpaint_top",
    "outpaint_bottom",
    "outpaint_border",
    "future",
)
DEFAULT_RATIO = {"inpaint_center": 0.5, "future": 0.0}


class MaskError(VideoPoetError, ValueError):
    """Unknown mask kind or bad mask parameters."""


def _size(n: int, ratio: float, align: int) -> int:
    s = int(round(n * ratio))
    if align > 1 and n >= 2 * align:
        s = int(round(s / align)) * align
    return max(0, min(n, s))


def make_mask(
    kind: str, frames: int, height: int, width: int, ratio: float | None = None, keep_frames: int = 5, align: int = 8
) -> np.ndarray:
    """bool ``[T, H, W]``, True where the content is hidden."""
    if kind not in MASK_KINDS:
        raise MaskError(f"unknown mask kind {kind!r} (one of {', '.join(MASK_KINDS)})")
    r = DEFAULT_RATIO.get(kind, 0.25) if ratio is None else float(ratio)
    if not 0.0 <= r <= 1.0:
        raise MaskError(f"mask ratio must lie in [0, 1], got {r}")
    m = np.zeros((frames, height, width), bool)
    if kind == "future":
        if keep_frames < 1:
            raise MaskError(f"keep_frames must be >= 1, got {keep_frames}")
        m[keep_frames:] = True
        return m
    if kind == "inpaint_center":
        bh, bw = _size(height, r, align), _size(width, r, align)
        y0, x0 = (height - bh) // 2, (width - bw) // 2
        if align > 1 and height >= 2 * align:
            y0 = (y0 // align) * align
        if align > 1 and width >= 2 * align:
            x0 = (x0 // align) * align
        m[:, y0 : y0 + bh, x0 : x0 + bw] = True
        return m
    bh, bw = _size(height, r, align), _size(width, r, align)
    if kind in ("outpaint_left", "outpaint_border") and bw:
        m[:, :, :bw] = True
    if kind in ("outpaint_right", "outpaint_border") and bw:
        m[:, :, width - bw :] = True
    if kind in ("outpaint_top", "outpaint_border") and bh:
        m[:, :bh] = True
    if kind in ("outpaint_bottom", "outpaint_border") and bh:
        m[:, height - bh :] = True
    return m


def apply_mask(
    video: np.ndarray,
    kind: str,
    ratio: float | None = None,
    keep_frames: int = 5,
    fill: int = FILL_VALUE,
    align: int = 8,
) -> np.ndarray:
    """uint8 ``[B, T, H, W, 3]`` (or ``[T, H, W, 3]``) -> the masked clip (hidden pixels = ``fill``)."""
    v = np.asarray(video)
    if v.ndim not in (4, 5) or v.shape[-1] != 3:
        raise MaskError(f"expected a video [B,T,H,W,3] or [T,H,W,3], got shape {v.shape}")
    t, h, w = v.shape[-4:-1]
    m = make_mask(kind, t, h, w, ratio, keep_frames, align)
    out = v.copy()
    out[..., m, :] = fill
    return out


def token_mask(
    kind: str, frames: int, height: int, width: int, temporal_downsample: int = 4, spatial_downsample: int = 8, **kw
) -> np.ndarray:
    """bool ``[T', H', W']``: latent tokens that see any hidden pixel (causal temporal grouping)."""
    m = make_mask(kind, frames, height, width, align=spatial_downsample, **kw)
    s = spatial_downsample
    hs, ws = height // s, width // s
    m = m[:, : hs * s, : ws * s].reshape(frames, hs, s, ws, s).any(axis=(2, 4))
    groups = [m[:1]] + [m[1 + i : 1 + i + temporal_downsample] for i in range(0, frames - 1, temporal_downsample)]
    return np.stack([g.any(axis=0) for g in groups])
