"""The synthetic world as training / evaluation data for the tokenizers, rendered straight from scene
attributes (no mp4 round trip): clips at a tokenizer's size, the audio of the video samples, captions.

The tokenizers never import this module (they sit below the pipelines); the CLI resolves a ``synth``
``--data`` spec here and hands the iterator to the tokenizer's training or evaluation loop.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from videopoet.pipelines.synth.config import load_synth_config
from videopoet.pipelines.synth.corpus import sample_key
from videopoet.pipelines.synth.render import render_audio, render_frames
from videopoet.pipelines.synth.world import sample_attrs


def clip_attrs(
    split: str = "train",
    seed: int = 0,
    frames: int = 17,
    height: int = 64,
    width: int = 64,
    kind: str = "video",
    count: int | None = None,
) -> Iterator[dict]:
    """The scene attributes behind :func:`clips` (same arguments, same order)."""
    scfg = load_synth_config(
        "small", [f"sizes=[[{width},{height}]]", "portrait_fraction=0.0", "fps=8", f"frames={max(frames, 1)}"]
    )
    i = 0
    while count is None or i < count:
        yield sample_attrs(scfg, seed, split, kind, i, sample_key(split, kind, i))
        i += 1


def clips(
    split: str = "train",
    seed: int = 0,
    frames: int = 17,
    height: int = 64,
    width: int = 64,
    kind: str = "video",
    count: int | None = None,
) -> Iterator[np.ndarray]:
    """uint8 [frames, height, width, 3] synthetic-world clips at 8 fps; ``kind='image'`` gives stills."""
    for attrs in clip_attrs(split, seed, frames, height, width, kind, count):
        clip = render_frames(attrs)
        if kind == "image":
            clip = np.repeat(clip[:1], frames, axis=0) if frames > 1 else clip[:1]
        yield clip


def clip_breakdown(
    split: str, seed: int, frames: int, height: int, width: int, count: int, margin: int = 3
) -> tuple[list[str], np.ndarray]:
    """For the first ``count`` clips of :func:`clips`: each clip's background pattern, and a bool mask
    [count, frames, H, W] of the pixels within ``margin`` px of an object (where a tokenizer's error sits)."""
    from scipy.ndimage import binary_dilation

    grow = np.ones((1, 2 * margin + 1, 2 * margin + 1), bool)
    patterns, masks = [], []
    for attrs in clip_attrs(split, seed, frames, height, width, count=count):
        with_objects = render_frames(attrs).astype(np.int16)
        without = render_frames(dict(attrs, objects=[])).astype(np.int16)
        touched = np.any(with_objects != without, axis=-1)
        masks.append(binary_dilation(touched, structure=grow) if margin > 0 else touched)
        patterns.append(attrs["background"]["pattern"])
    return patterns, np.stack(masks)


def waves(
    split: str = "train", seed: int = 0, sample_rate: int = 16000, count: int | None = None, preset: str = "small"
) -> Iterator[np.ndarray]:
    """float32 mono audio of the synthetic corpus's video samples (one tone per object, pitch by colour,
    timbre by shape, loudness by size, a click per bounce)."""
    cfg = load_synth_config(preset, [f"audio_rate={sample_rate}"])
    i = 0
    while count is None or i < count:
        attrs = sample_attrs(cfg, seed, split, "video", i, sample_key(split, "video", i))
        yield render_audio(attrs)
        i += 1


def captions(count: int = 4000, seed: int = 0, split: str = "train") -> list[str]:
    """Captions of the synthetic corpus world (videos and images alternately), a pure function of the arguments."""
    cfg = load_synth_config("small")
    out = []
    for i in range(count):
        kind = "video" if i % 2 == 0 else "image"
        out.append(sample_attrs(cfg, seed, split, kind, i // 2, sample_key(split, kind, i // 2))["caption"])
    return out
