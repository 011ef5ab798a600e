"""Clip sources for MAGVIT-v2 training and evaluation (uint8 ``[T, H, W, 3]`` clips).

* :func:`shard_clips` - webdataset tar shards (``--data GLOB``) of mp4/webm/mkv/jpg/png members, read
  with the hardened reader (:mod:`videopoet.media.webdataset`), decoded and resized by
  :mod:`videopoet.media` exactly as the pipelines decode and resize what they tokenize.
* :class:`ClipPool` - a fixed in-memory pool drawn into batches as a pure function of
  ``(seed, step)`` (so a resumed run sees the same batches), with random horizontal flips.

Any iterator (or zero-argument callable returning one) of uint8 clips plugs in as a source; the CLI
resolves ``--data synth[:SPLIT]`` to the synthetic world's clips (``videopoet.pipelines.synth.sources``),
so this package never imports the pipelines.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Iterator

import fsspec
import numpy as np

from videopoet import media
from videopoet.media import webdataset
from videopoet.schemas.errors import VideoPoetError

VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".mov", ".avi")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")


class VideoDataError(VideoPoetError, ValueError):
    """Training / evaluation clips could not be found or read."""


# ---------------------------------------------------------------------------------- shaping
def fit_clip(frames: np.ndarray, num_frames: int, height: int, width: int, start: int = 0) -> np.ndarray | None:
    """Take ``num_frames`` frames from ``start`` and resize/crop; None if the clip is too short."""
    f = np.asarray(frames)
    if f.ndim == 3:
        f = f[None]
    if f.ndim != 4 or f.shape[-1] != 3 or f.shape[0] < num_frames:
        return None
    return media.resize_center_crop(f[start : start + num_frames], height, width)


# ---------------------------------------------------------------------------------- sources
def _expand(pattern: str | list[str]) -> list[str]:
    if isinstance(pattern, (list, tuple)):
        return [p for x in pattern for p in _expand(x)]
    if "://" in pattern:
        fs, _, paths = fsspec.get_fs_token_paths(pattern)
        return sorted(fs.unstrip_protocol(p) for p in paths)
    if os.path.isdir(pattern):
        return sorted(
            os.path.join(r, f)
            for r, _, fs in os.walk(pattern)
            for f in fs
            if f.lower().endswith((".tar",) + VIDEO_EXTS + IMAGE_EXTS)
        )
    return sorted(glob.glob(pattern, recursive=True))


def _members(path: str) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every media member of a shard (through the hardened reader; refused samples are
    skipped) or of a loose media file."""
    if not path.endswith(".tar"):
        with fsspec.open(path, "rb") as f:
            yield path, f.read()
        return
    for sample in webdataset.iter_samples(path):
        if isinstance(sample, webdataset.Sample):
            for ext, blob in sorted(sample.members.items()):
                yield f"{sample.key}.{ext}", blob


def _decode(name: str, blob: bytes, frames: int, height: int, width: int, images: bool) -> np.ndarray | None:
    low = name.lower()
    if low.endswith(VIDEO_EXTS):
        return fit_clip(media.decode_frames(blob, fps=8.0).frames, frames, height, width)
    if images and low.endswith(IMAGE_EXTS):
        img = media.decode_image(blob)
        return fit_clip(np.repeat(img[None], frames, axis=0), frames, height, width)
    return None


def shard_clips(
    pattern: str | list[str], frames: int, height: int, width: int, images: bool = True, skip_errors: bool = True
) -> Iterator[np.ndarray]:
    """Clips (8 fps, resized and cropped as the pipelines resize) from webdataset shards or loose media
    files; undecodable members are skipped unless ``skip_errors`` is False."""
    files = _expand(pattern)
    if not files:
        raise VideoDataError(f"no shards or media files match {pattern!r}")
    for path in files:
        for name, blob in _members(path):
            try:
                clip = _decode(name, blob, frames, height, width, images)
            except media.MediaError as e:
                if skip_errors:
                    continue
                raise VideoDataError(f"{name}: {e}") from None
            if clip is not None:
                yield clip


def take(source: Iterable[np.ndarray] | Callable[[], Iterable[np.ndarray]], n: int) -> np.ndarray:
    """The first ``n`` clips of a source, stacked (uint8 [n,T,H,W,3])."""
    it = iter(source() if callable(source) else source)
    clips = []
    for clip in it:
        clips.append(np.asarray(clip, np.uint8))
        if len(clips) >= n:
            break
    if not clips:
        raise VideoDataError("the data source produced no clips")
    shapes = {c.shape for c in clips}
    if len(shapes) != 1:
        raise VideoDataError(f"clips of different shapes in one pool: {sorted(shapes)[:3]}")
    return np.stack(clips)


class ClipPool:
    """A fixed pool of clips; :meth:`batch` is a pure function of ``(seed, step)``."""

    def __init__(self, clips: np.ndarray, seed: int = 0, flip: bool = True):
        self.clips = np.asarray(clips, np.uint8)
        self.seed = seed
        self.flip = flip

    def __len__(self) -> int:
        return len(self.clips)

    def batch(self, step: int, batch_size: int, frames: int | None = None) -> np.ndarray:
        rng = np.random.default_rng([self.seed, step])
        idx = rng.integers(0, len(self.clips), batch_size)
        b = self.clips[idx]
        if frames is not None and frames < b.shape[1]:
            start = int(rng.integers(0, b.shape[1] - frames + 1))
            b = b[:, start : start + frames]
        if self.flip:
            flips = rng.random(batch_size) < 0.5
            b = np.where(flips[:, None, None, None, None], b[:, :, :, ::-1], b)
        return b
