"""Render a scene's frames (uint8 [T,H,W,3]) and audio (float32 [N]) from its attributes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from videopoet.pipelines.synth.world import BACKGROUNDS, COLOURS, SHAPES, SIZES, make_caption, position, radius_px

__all__ = ["Sample", "render_audio", "render_background", "render_frames", "render_sample"]


@dataclass(frozen=True)
class Sample:
    frames: np.ndarray  # uint8 [T,H,W,3] (T = 1 for an image)
    audio: np.ndarray | None  # float32 [N] mono at attrs["audio_rate"]; None for an image
    caption: str
    attrs: dict


def render_background(bg: dict, width: int, height: int) -> np.ndarray:
    """float32 [H,W,3] in 0..255."""
    base = np.array(BACKGROUNDS[bg["colour"]], dtype=np.float32)
    light = base * 0.55 + 0.45 * np.float32(150.0)  # a lighter tone of the same colour
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    along = xx if bg["orient"] == "horizontal" else yy
    extent = width if bg["orient"] == "horizontal" else height
    pattern, period = bg["pattern"], max(2, int(bg["period"]))
    if pattern == "plain":
        mix = np.zeros((height, width), np.float32)
    elif pattern == "gradient":
        mix = along / max(1, extent - 1)
    elif pattern == "stripes":
        mix = ((along // period) % 2).astype(np.float32) * 0.6
    elif pattern == "checkered":
        mix = (((xx // period) + (yy // period)) % 2).astype(np.float32) * 0.5
    elif pattern == "speckled":
        rng = np.random.default_rng(bg["seed"])
        mix = rng.random((height, width), dtype=np.float32) * 0.5
    else:
        raise ValueError(f"unknown background pattern {pattern!r}")
    return base + (light - base) * mix[..., None]


def shape_distance(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Approximate signed distance (pixels) to the shape's outline; negative inside."""
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - r
    if shape == "square":
        return np.maximum(ax, ay) - 0.85 * r
    if shape == "diamond":
        return (ax + ay - 1.1 * r) / math.sqrt(2)
    if shape == "triangle":  # equilateral, apex up, circumradius ~1.1 r, centred on its centroid
        rc = 1.1 * r
        d1 = dy - rc / 2
        d2 = 0.8660254 * ax - 0.5 * dy - rc / 2
        return np.maximum(d1, d2)
    if shape == "cross":
        arm, half = r, 0.35 * r
        return np.minimum(np.maximum(ax - arm, ay - half), np.maximum(ax - half, ay - arm))
    raise ValueError(f"unknown shape {shape!r}")


def _draw(canvas: np.ndarray, obj: dict, cx: float, cy: float, r: float) -> None:
    height, width, _ = canvas.shape
    x0, x1 = max(0, int(cx - 1.3 * r) - 2), min(width, int(cx + 1.3 * r) + 3)
    y0, y1 = max(0, int(cy - 1.3 * r) - 2), min(height, int(cy + 1.3 * r) + 3)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    d = shape_distance(obj["shape"], xx + 0.5 - cx, yy + 0.5 - cy, r)
    alpha = np.clip(0.5 - d, 0.0, 1.0)[..., None]
    colour = np.array(COLOURS[obj["colour"]].rgb, dtype=np.float32)
    patch = canvas[y0:y1, x0:x1]
    patch += (colour - patch) * alpha


def render_frames(attrs: dict) -> np.ndarray:
    """uint8 [T,H,W,3]; objects drawn in order (the later on top)."""
    width, height = attrs["width"], attrs["height"]
    n = int(attrs.get("frames", 1))
    fps = float(attrs.get("fps", 1))
    t = np.arange(n, dtype=np.float64) / fps
    bg = render_background(attrs["background"], width, height)
    tracks = []
    for obj in attrs["objects"]:
        x, y = position(obj, t, width, height)
        tracks.append((obj, x, y, radius_px(obj["size"], width, height)))
    out = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        canvas = bg.copy()
        for obj, x, y, r in tracks:
            _draw(canvas, obj, float(x[i]), float(y[i]), r)
        out[i] = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return out


def _harmonics(timbre: str) -> list[tuple[int, float]]:
    if timbre == "sine":
        return [(1, 1.0)]
    if timbre == "square":
        return [(k, 1.0 / k) for k in range(1, 16, 2)]
    if timbre == "triangle":
        return [(k, (-1.0) ** ((k - 1) // 2) / (k * k)) for k in range(1, 16, 2)]
    if timbre == "sawtooth":
        return [(k, 1.0 / k) for k in range(1, 13)]
    if timbre == "organ":
        return [(1, 1.0), (2, 0.5), (4, 0.35), (8, 0.2)]
    raise ValueError(f"unknown timbre {timbre!r}")


def _tone(freq: float, timbre: str, n: int, rate: int) -> np.ndarray:
    t = np.arange(n, dtype=np.float64) / rate
    wave = np.zeros(n, np.float64)
    for k, a in _harmonics(timbre):
        if k * freq < 0.45 * rate:
            wave += a * np.sin(2 * np.pi * k * freq * t)
    # Normalize to the waveform's analytic peak over one period (independent of n).
    period = np.arange(int(rate), dtype=np.float64) / rate
    ref = sum(a * np.sin(2 * np.pi * k * freq * period) for k, a in _harmonics(timbre) if k * freq < 0.45 * rate)
    return wave / max(1e-9, float(np.max(np.abs(ref))))


def render_audio(attrs: dict) -> np.ndarray:
    """float32 [N] mono, N = round(frames / fps * audio_rate): one tone per object + bounce clicks."""
    rate = int(attrs["audio_rate"])
    n = int(round(attrs["frames"] / attrs["fps"] * rate))
    out = np.zeros(n, np.float64)
    fade = np.ones(n)
    ramp = min(n // 2, int(0.01 * rate))
    if ramp:
        fade[:ramp] = np.linspace(0, 1, ramp, endpoint=False)
        fade[n - ramp :] = np.linspace(1, 0, ramp)
    click_len = int(0.06 * rate)
    tc = np.arange(click_len) / rate
    click = np.sin(2 * np.pi * min(1800.0, 0.4 * rate) * tc) * np.exp(-tc / 0.012)
    for obj in attrs["objects"]:
        loud = SIZES[obj["size"]].loudness
        out += loud * fade * _tone(COLOURS[obj["colour"]].pitch_hz, SHAPES[obj["shape"]], n, rate)
        for tb in obj.get("bounces", ()):
            s = int(round(tb * rate))
            e = min(n, s + click_len)
            if s < n:
                out[s:e] += 0.8 * loud * click[: e - s]
    peak = float(np.max(np.abs(out))) if n else 0.0
    if peak > 0.95:
        out *= 0.95 / peak
    return out.astype(np.float32)


def render_sample(attrs: dict) -> Sample:
    """Frames, audio (videos only) and caption of a sample, from its attributes (``{key}.json``)."""
    frames = render_frames(attrs)
    audio = render_audio(attrs) if attrs.get("kind", "video") == "video" else None
    caption = attrs.get("caption") or make_caption(attrs)
    return Sample(frames=frames, audio=audio, caption=caption, attrs=attrs)
