"""What ``--data`` means for ``videopoet tokenizer train|eval``: the CLI layer resolves it, so the
tokenizers (which sit below the pipelines) never import the synthetic world.

* video (MAGVIT-v2): ``synth[:SPLIT]`` - the synthetic world rendered at the tokenizer's size, 8 fps
  (:mod:`videopoet.pipelines.synth.sources`); else a glob / directory / URI of webdataset shards or
  media files (:func:`videopoet.tokenizers.magvit2.data.shard_clips`).
* audio (SoundStream): ``synth[:SPLIT]`` alternates the synthetic corpus's audio and generic tones,
  ``synth-world[:SPLIT]`` / ``synth-tones[:SPLIT]`` pick one; else audio files or media
  (:func:`videopoet.tokenizers.soundstream.data.resolve_source`).
* captions (text): ``synth[:N]`` - N synthetic-corpus captions (default 4000); else a captions file,
  a directory / glob of .txt files or webdataset shards (:func:`videopoet.tokenizers.text.spm.read_captions`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def synth_split(data: str, default: str) -> str:
    """The split a ``synth[:SPLIT]`` data spec names (``default`` when it names none)."""
    return data.split(":", 1)[1] if ":" in data else default


def is_synth(data: str) -> bool:
    return data == "synth" or data.startswith("synth:")


def video_clips(
    data: str, frames: int, height: int, width: int, seed: int = 0, split: str = "train", kind: str = "video"
) -> Iterator[np.ndarray]:
    """uint8 [frames, height, width, 3] clips for ``--data``."""
    if is_synth(data):
        from videopoet.pipelines.synth import sources

        return sources.clips(synth_split(data, split), seed, frames, height, width, kind=kind)
    from videopoet.tokenizers.magvit2.data import shard_clips

    return shard_clips(data, frames, height, width)


def video_breakdown(data: str, seed: int, frames: int, height: int, width: int, count: int):
    """(background pattern per clip, bool [count, frames, H, W] near-object mask) for a ``synth`` spec, else
    (None, None): the scenes of other data are unknown."""
    if not is_synth(data):
        return None, None
    from videopoet.pipelines.synth import sources

    return sources.clip_breakdown(synth_split(data, "heldout"), seed, frames, height, width, count)


def audio_waves(data: str, sample_rate: int, num_samples: int, seed: int, split: str = "train") -> Iterator[np.ndarray]:
    """Mono float32 waveforms for ``--data``."""
    kind, _, sp = data.partition(":")
    sp = sp or split
    if kind not in ("synth", "synth-world"):
        from videopoet.tokenizers.soundstream.data import resolve_source

        return resolve_source(data, sample_rate, num_samples, seed, split)
    from videopoet.pipelines.synth import sources

    world = sources.waves(sp, seed, sample_rate)
    if kind == "synth-world":
        return world
    from videopoet.tokenizers.soundstream.data import synthetic_waves

    return _alternate(world, synthetic_waves(num_samples, sample_rate, sp, seed))


def _alternate(first: Iterator[np.ndarray], second: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    for a, b in zip(first, second, strict=False):
        yield a
        yield b


def captions(data: str) -> list[str]:
    """Caption strings for ``--data``."""
    if is_synth(data):
        from videopoet.pipelines.synth import sources

        return sources.captions(int(synth_split(data, "4000")))
    from videopoet.tokenizers.text.spm import read_captions

    return read_captions(data)
