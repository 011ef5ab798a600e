"""The synthetic world: its vocabulary, the held-out combinations, scene sampling and captions.

A scene is one or two objects on a background. Each object has a **shape** (``SHAPES``), a
**colour** (``COLOURS``), a **size** (``SIZES``) and a **motion** (``MOTIONS``: it moves left,
right, up or down without touching a wall, or bounces off the walls). Its sound is a tone whose

* pitch is set by the colour (``COLOURS[c].pitch_hz``, a minor third apart from 220 Hz up),
* timbre by the shape (``SHAPES[s]``: sine, square, triangle, sawtooth or organ harmonics),
* loudness by the size (``SIZES[z].loudness``),

plus a click at every bounce off a wall. So video -> audio and audio -> video are learnable.

Held-out combinations (``HELDOUT_COMBOS``, colour x shape) are **never** generated in the
``train`` split; the ``heldout`` split contains only them (every object of every scene is one of
them), for zero-shot evaluation:

    red triangle, green square, blue cross, yellow diamond, purple circle

Everything a scene is made of lives in its *attributes* (a JSON-able dict, written as the sample's
``{key}.json``); :func:`videopoet.pipelines.synth.render.render_sample` renders the same frames,
audio and caption from them again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "HELDOUT_COMBOS",
    "MOTIONS",
    "PATTERNS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "WORLD_VERSION",
    "bounce_times",
    "is_heldout",
    "make_caption",
    "position",
    "radius_px",
    "sample_attrs",
    "world_description",
]

WORLD_VERSION = 1
SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class Colour:
    rgb: tuple[int, int, int]
    pitch_hz: float


# Pitches: 220 Hz * 2^(3k/12), k = 0..7 (minor thirds), easy to tell apart with an FFT or YIN.
COLOURS: dict[str, Colour] = {
    name: Colour(rgb, round(220.0 * 2 ** (3 * k / 12), 2))
    for k, (name, rgb) in enumerate(
        [
            ("red", (220, 40, 40)),
            ("orange", (245, 140, 30)),
            ("yellow", (240, 220, 40)),
            ("green", (40, 190, 70)),
            ("cyan", (40, 210, 220)),
            ("blue", (50, 90, 235)),
            ("purple", (150, 70, 210)),
            ("white", (235, 235, 235)),
        ]
    )
}

# Shape -> timbre (the harmonic series of its tone).
SHAPES: dict[str, str] = {
    "circle": "sine",
    "square": "square",
    "triangle": "triangle",
    "diamond": "sawtooth",
    "cross": "organ",
}


@dataclass(frozen=True)
class Size:
    radius: float  # fraction of min(width, height)
    loudness: float  # peak amplitude of the object's tone


SIZES: dict[str, Size] = {
    "small": Size(0.10, 0.12),
    "medium": Size(0.15, 0.20),
    "large": Size(0.22, 0.30),
}

MOTIONS = ("left", "right", "up", "down", "bounce")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

# Dark backgrounds (no object colour word in their names, so captions stay unambiguous).
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (12, 12, 14),
    "gray": (92, 92, 96),
    "navy": (20, 28, 84),
    "brown": (84, 54, 28),
    "maroon": (86, 20, 36),
}
PATTERNS = ("plain", "gradient", "stripes", "checkered", "speckled")

# Never generated in the train split; the only combinations of the heldout split.
HELDOUT_COMBOS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("green", "square"),
    ("blue", "cross"),
    ("yellow", "diamond"),
    ("purple", "circle"),
)

_SPLIT_IDS = {"train": 0, "heldout": 1}
_KIND_IDS = {"video": 0, "image": 1, "corrupt": 2}


def is_heldout(colour: str, shape: str) -> bool:
    return (colour, shape) in HELDOUT_COMBOS


def world_description() -> dict[str, Any]:
    """The world's vocabulary and audio mapping as JSON (recorded in corpus.json)."""
    return {
        "version": WORLD_VERSION,
        "colours": {k: {"rgb": list(v.rgb), "pitch_hz": v.pitch_hz} for k, v in COLOURS.items()},
        "shapes": {k: {"timbre": v} for k, v in SHAPES.items()},
        "sizes": {k: {"radius": v.radius, "loudness": v.loudness} for k, v in SIZES.items()},
        "motions": list(MOTIONS),
        "backgrounds": {k: list(v) for k, v in BACKGROUNDS.items()},
        "patterns": list(PATTERNS),
        "heldout_combos": [list(c) for c in HELDOUT_COMBOS],
        "audio": "pitch by colour, timbre by shape, loudness by size, a click on every bounce",
    }


# --------------------------------------------------------------------------------------------
# Geometry and motion. Positions are fractions of the frame (x of the width, y of the height);
# velocities are fractions per second. An object's centre stays within [r, W - r] x [r, H - r]
# pixels and reflects off those bounds.


def radius_px(size: str, width: int, height: int) -> float:
    return SIZES[size].radius * min(width, height)


def _fold(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    span = hi - lo
    if span <= 0:
        return np.full_like(p, (lo + hi) / 2)
    q = np.mod(p - lo, 2 * span)
    return lo + np.where(q <= span, q, 2 * span - q)


def position(obj: dict, t: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre (x, y) in pixels of ``obj`` at times ``t`` (seconds)."""
    r = radius_px(obj["size"], width, height)
    t = np.asarray(t, dtype=np.float64)
    x = _fold((obj["x0"] + obj["vx"] * t) * width, r, width - r)
    y = _fold((obj["y0"] + obj["vy"] * t) * height, r, height - r)
    return x, y


def bounce_times(obj: dict, duration: float, width: int, height: int) -> list[float]:
    """Times (seconds, in (0, duration]) at which ``obj`` hits a wall."""
    r = radius_px(obj["size"], width, height)
    times: list[float] = []
    for p0, v, extent in ((obj["x0"], obj["vx"], width), (obj["y0"], obj["vy"], height)):
        lo, hi = r, extent - r
        span = hi - lo
        if v == 0 or span <= 0:
            continue
        p0, v = p0 * extent, v * extent
        end = p0 + v * duration
        a, b = sorted((p0, end))
        k0, k1 = math.ceil((a - lo) / span), math.floor((b - lo) / span)
        for k in range(k0, k1 + 1):
            tk = (lo + k * span - p0) / v
            if 1e-9 < tk <= duration:
                times.append(tk)
    return sorted(round(t, 6) for t in times)


# --------------------------------------------------------------------------------------------
# Sampling


def _sample_rng(seed: int, split: str, kind: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _SPLIT_IDS[split], _KIND_IDS[kind], int(index)])


def _pick(rng: np.random.Generator, items):
    items = list(items)
    return items[int(rng.integers(len(items)))]


def _sample_combo(rng: np.random.Generator, split: str, taken: set[str]) -> tuple[str, str]:
    if split == "heldout":
        choices = [c for c in HELDOUT_COMBOS if c[0] not in taken]
        return _pick(rng, choices)
    while True:
        colour, shape = _pick(rng, [c for c in COLOURS if c not in taken]), _pick(rng, SHAPES)
        if not is_heldout(colour, shape):
            return colour, shape


def _sample_object(rng, split, taken, cfg, width, height, still: bool) -> dict:
    colour, shape = _sample_combo(rng, split, taken)
    size = _pick(rng, SIZES)
    r = radius_px(size, width, height)
    mx, my = r / width + 0.02, r / height + 0.02  # margins (fractions) keeping the centre inside
    if still:
        motion, vx, vy = "still", 0.0, 0.0
        x0, y0 = rng.uniform(mx, 1 - mx), rng.uniform(my, 1 - my)
    elif rng.random() < cfg.bounce_fraction:
        motion = "bounce"
        angle = math.radians(rng.uniform(20, 70) + 90 * int(rng.integers(4)))
        speed = rng.uniform(0.5, 0.9)
        vx, vy = speed * math.cos(angle), speed * math.sin(angle)
        x0, y0 = rng.uniform(mx, 1 - mx), rng.uniform(my, 1 - my)
    else:
        motion = _pick(rng, ("left", "right", "up", "down"))
        dx, dy = DIRECTIONS[motion]
        m_along, m_across = (mx, my) if dx else (my, mx)
        room = 1 - 2 * m_along
        dist = rng.uniform(0.5, 0.95) * room
        start = rng.uniform(m_along + dist, 1 - m_along) if (dx or dy) < 0 else rng.uniform(m_along, 1 - m_along - dist)
        across = rng.uniform(m_across, 1 - m_across)
        v = (dx or dy) * dist / cfg.seconds
        x0, y0 = (start, across) if dx else (across, start)
        vx, vy = (v, 0.0) if dx else (0.0, v)
    return {
        "shape": shape,
        "colour": colour,
        "size": size,
        "motion": motion,
        "x0": round(float(x0), 6),
        "y0": round(float(y0), 6),
        "vx": round(float(vx), 6),
        "vy": round(float(vy), 6),
    }


def sample_attrs(cfg, seed: int, split: str, kind: str, index: int, key: str, stream: str | None = None) -> dict:
    """The attributes of sample ``index`` of ``kind`` ('video' | 'image') in ``split``.

    A pure function of (seed, split, stream, index, cfg), ``stream`` ('video' | 'image' |
    'corrupt', default ``kind``) naming the random stream: adding clips or shards leaves the
    existing samples unchanged.
    """
    if split not in _SPLIT_IDS:
        raise ValueError(f"unknown split {split!r} (one of {', '.join(SPLITS)})")
    if kind not in ("video", "image"):
        raise ValueError(f"unknown sample kind {kind!r} (video or image)")
    rng = _sample_rng(seed, split, stream or kind, index)
    if rng.random() < cfg.portrait_fraction:
        (width, height), orientation = cfg.portrait_size, "portrait"
    else:
        width, height = cfg.sizes[int(rng.integers(len(cfg.sizes)))]
        orientation = "square" if width == height else ("landscape" if width > height else "portrait")
    still = kind == "image"
    n_obj = 2 if rng.random() < cfg.two_object_fraction else 1
    objects: list[dict] = []
    for _ in range(n_obj):
        objects.append(_sample_object(rng, split, {o["colour"] for o in objects}, cfg, width, height, still))
    background = {
        "colour": _pick(rng, BACKGROUNDS),
        "pattern": _pick(rng, PATTERNS),
        "orient": _pick(rng, ("horizontal", "vertical")),
        "period": int(rng.integers(8, 25)),
        "seed": int(rng.integers(2**31)),
    }
    attrs: dict[str, Any] = {
        "key": key,
        "split": split,
        "kind": kind,
        "world_version": WORLD_VERSION,
        "width": int(width),
        "height": int(height),
        "orientation": orientation,
        "background": background,
        "objects": objects,
        "caption_seed": int(rng.integers(2**31)),
    }
    if kind == "video":
        attrs.update(fps=cfg.fps, frames=cfg.frames, seconds=round(cfg.seconds, 6), audio_rate=cfg.audio_rate)
        for o in objects:
            o["bounces"] = bounce_times(o, cfg.seconds, width, height)
            o["pitch_hz"] = COLOURS[o["colour"]].pitch_hz
            o["timbre"] = SHAPES[o["shape"]]
    else:
        attrs.update(frames=1)
    attrs["caption"] = make_caption(attrs)
    return attrs


# --------------------------------------------------------------------------------------------
# Captions

_SIZE_WORDS = {
    "small": ("small", "little", "tiny"),
    "medium": ("medium-sized", "", "mid-sized"),
    "large": ("large", "big", "huge"),
}
_VERBS = {
    "left": ("moves to the left", "slides left", "travels leftward", "drifts to the left"),
    "right": ("moves to the right", "slides right", "travels rightward", "drifts to the right"),
    "up": ("moves up", "rises", "floats upward", "travels upward"),
    "down": ("moves down", "falls", "sinks downward", "drops down"),
    "bounce": ("bounces around", "bounces off the walls", "ricochets around the frame", "bounces back and forth"),
}
_PATTERN_WORDS = {
    "plain": ("plain {c}", "{c}"),
    "gradient": ("{c} gradient", "shaded {c}"),
    "stripes": ("striped {c}", "{c} striped"),
    "checkered": ("checkered {c}", "{c} checkerboard"),
    "speckled": ("speckled {c}", "grainy {c}"),
}
_VIDEO_TEMPLATES = (
    "{clause}.",
    "{clause} on a {bg} background.",
    "On a {bg} background, {clause}.",
    "A video of {rel}.",
    "A clip in which {clause}.",
    "Animation: {clause} against a {bg} background.",
    "We see {rel}.",
    "Footage of {rel} on a {bg} background.",
)
_IMAGE_TEMPLATES = (
    "{objs}.",
    "{objs} on a {bg} background.",
    "A picture of {objs}.",
    "An image of {objs} against a {bg} background.",
    "A photo showing {objs} on a {bg} backdrop.",
)


def _article(phrase: str) -> str:
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def _noun_phrase(rng, obj) -> str:
    size = _pick(rng, _SIZE_WORDS[obj["size"]])
    return _article(" ".join(w for w in (size, obj["colour"], obj["shape"]) if w))


def make_caption(attrs: dict) -> str:
    """The caption of a scene: a pure function of its attributes (``caption_seed`` picks wording)."""
    rng = np.random.default_rng(attrs["caption_seed"])
    bgd = attrs["background"]
    bg = _pick(rng, _PATTERN_WORDS[bgd["pattern"]]).format(c=bgd["colour"])
    nps = [_noun_phrase(rng, o) for o in attrs["objects"]]
    if attrs["kind"] == "image":
        text = _pick(rng, _IMAGE_TEMPLATES).format(objs=" and ".join(nps), bg=bg)
    else:
        verbs = [_pick(rng, _VERBS[o["motion"]]) for o in attrs["objects"]]
        clauses = [f"{n} {v}" for n, v in zip(nps, verbs, strict=True)]
        rels = [f"{n} that {v}" for n, v in zip(nps, verbs, strict=True)]
        joiner = _pick(rng, (" and ", " while "))
        text = _pick(rng, _VIDEO_TEMPLATES).format(clause=joiner.join(clauses), rel=" and ".join(rels), bg=bg)
    return text[:1].upper() + text[1:]
