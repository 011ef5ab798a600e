"""Clip sources for MAGVIT-v2 training and evaluation (uint8 ``[T, H, W, 3]`` clips).

* :func:`synth_clips` - the synthetic world (``videopoet.pipelines.synth``) rendered straight from
  scene attributes at the tokenizer's size and 8 fps (no mp4 round trip); ``split`` train/heldout.
* :func:`shard_clips` - webdataset tar shards (``--data GLOB``) of mp4/webm/mkv/jpg/png members,
  through ``videopoet.pipelines.media`` / ``videopoet.pipelines.wds`` when they are installed, else
  a built-in PyAV / Pillow reader.
* :func:`resolve_source` - what ``--data`` means: ``synth[:train|heldout]`` or a glob / URI.
* :class:`ClipPool` - a fixed in-memory pool drawn into batches as a pure function of
  ``(seed, step)`` (so a resumed run sees the same batches), with random horizontal flips.

Any iterator (or zero-argument callable returning one) of uint8 clips plugs in as a source.
"""

from __future__ import annotations

import glob as _glob
import io
import os
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from videopoet.schemas.errors import VideoPoetError

VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".mov", ".avi")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")


class VideoDataError(VideoPoetError, ValueError):
    """Training / evaluation clips could not be found or read."""


# ---------------------------------------------------------------------------------- shaping
def resize_center_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [T,h,w,3] -> [T,height,width,3]: scale the short side to fit, then centre-crop."""
    from PIL import Image

    t, h, w, _ = frames.shape
    if (h, w) == (height, width):
        return frames
    s = max(height / h, width / w)
    nh, nw = max(height, int(round(h * s))), max(width, int(round(w * s)))
    y0, x0 = (nh - height) // 2, (nw - width) // 2
    out = np.empty((t, height, width, 3), np.uint8)
    for i in range(t):
        im = Image.fromarray(frames[i]).resize((nw, nh), Image.BICUBIC if s > 1 else Image.BOX)
        out[i] = np.asarray(im)[y0:y0 + height, x0:x0 + width]
    return out


def fit_clip(frames: np.ndarray, num_frames: int, height: int, width: int, start: int = 0) -> np.ndarray | None:
    """Take ``num_frames`` frames from ``start`` and resize/crop; None if the clip is too short."""
    f = np.asarray(frames)
    if f.ndim == 3:
        f = f[None]
    if f.ndim != 4 or f.shape[-1] != 3 or f.shape[0] < num_frames:
        return None
    return resize_center_crop(f[start:start + num_frames], height, width)


# ---------------------------------------------------------------------------------- sources
def synth_attrs(split: str = "train", seed: int = 0, frames: int = 17, height: int = 64, width: int = 64,
                kind: str = "video", count: int | None = None) -> Iterator[dict]:
    """The scene attributes behind :func:`synth_clips` (same arguments, same order)."""
    try:
        from videopoet.pipelines.synth import load_synth_config, sample_attrs, sample_key
    except ImportError:
        raise VideoDataError("videopoet.pipelines.synth is not available; give --data GLOB of shards") from None
    scfg = load_synth_config("small", [f"sizes=[[{width},{height}]]", "portrait_fraction=0.0", "fps=8",
                                       f"frames={max(frames, 1)}"])
    i = 0
    while count is None or i < count:
        yield sample_attrs(scfg, seed, split, kind, i, sample_key(split, kind, i))
        i += 1


def synth_clips(split: str = "train", seed: int = 0, frames: int = 17, height: int = 64, width: int = 64,
                kind: str = "video", count: int | None = None) -> Iterator[np.ndarray]:
    """Synthetic-world clips at exactly (frames, height, width), 8 fps; ``kind='image'`` gives stills."""
    from videopoet.pipelines.synth import render_frames

    for attrs in synth_attrs(split, seed, frames, height, width, kind, count):
        clip = render_frames(attrs)
        if kind == "image":
            clip = np.repeat(clip[:1], frames, axis=0) if frames > 1 else clip[:1]
        yield clip


def synth_breakdown(split: str, seed: int, frames: int, height: int, width: int, count: int,
                    margin: int = 3) -> tuple[list[str], np.ndarray]:
    """For the first ``count`` clips of :func:`synth_clips`: each clip's background pattern, and a bool mask
    [count, frames, H, W] of the pixels within ``margin`` px of an object (where a tokenizer's error sits)."""
    from scipy.ndimage import binary_dilation

    from videopoet.pipelines.synth import render_frames

    grow = np.ones((1, 2 * margin + 1, 2 * margin + 1), bool)
    patterns, masks = [], []
    for attrs in synth_attrs(split, seed, frames, height, width, count=count):
        with_objects = render_frames(attrs).astype(np.int16)
        without = render_frames(dict(attrs, objects=[])).astype(np.int16)
        touched = np.any(with_objects != without, axis=-1)
        masks.append(binary_dilation(touched, structure=grow) if margin > 0 else touched)
        patterns.append(attrs["background"]["pattern"])
    return patterns, np.stack(masks)


def _expand(pattern: str | list[str]) -> list[str]:
    if isinstance(pattern, (list, tuple)):
        return [p for x in pattern for p in _expand(x)]
    if "://" in pattern:
        import fsspec

        fs, _, paths = fsspec.get_fs_token_paths(pattern)
        return sorted(fs.unstrip_protocol(p) for p in paths)
    if os.path.isdir(pattern):
        return sorted(os.path.join(r, f) for r, _, fs in os.walk(pattern) for f in fs
                      if f.lower().endswith((".tar",) + VIDEO_EXTS + IMAGE_EXTS))
    return sorted(_glob.glob(pattern, recursive=True))


def decode_video_bytes(blob: bytes, fps: float | None = 8.0) -> np.ndarray:
    """Container bytes -> uint8 [T,H,W,3], resampled to ``fps`` by nearest timestamps (PyAV)."""
    try:
        from videopoet.pipelines import media  # the shared decoder, once it lands

        if hasattr(media, "decode_video"):
            out = media.decode_video(blob, fps=fps)
            return np.asarray(getattr(out, "frames", out))
    except ImportError:
        pass
    import av

    try:
        with av.open(io.BytesIO(blob)) as c:
            stream = c.streams.video[0]
            frames, times = [], []
            for fr in c.decode(stream):
                frames.append(fr.to_ndarray(format="rgb24"))
                times.append(float(fr.time or 0.0))
    except Exception as e:  # PyAV raises many error types for corrupt input
        raise VideoDataError(f"cannot decode video: {e}") from None
    if not frames:
        raise VideoDataError("video has no frames")
    arr = np.stack(frames)
    if fps is None or len(frames) < 2:
        return arr
    times = np.asarray(times) - times[0]
    want = np.arange(0.0, times[-1] + 1e-6, 1.0 / fps)
    idx = np.clip(np.searchsorted(times, want - 1e-6), 0, len(frames) - 1)
    return arr[idx]


def decode_image_bytes(blob: bytes) -> np.ndarray:
    from PIL import Image

    try:
        return np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))[None]
    except Exception as e:
        raise VideoDataError(f"cannot decode image: {e}") from None


def _iter_members(path: str) -> Iterator[tuple[str, bytes]]:
    import tarfile

    import fsspec

    with fsspec.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
        for m in tar:
            if m.isfile():
                yield m.name, tar.extractfile(m).read()


def shard_clips(pattern: str | list[str], frames: int, height: int, width: int, images: bool = True,
                skip_errors: bool = True) -> Iterator[np.ndarray]:
    """Clips from webdataset shards or loose media files; unreadable members are skipped."""
    files = _expand(pattern)
    if not files:
        raise VideoDataError(f"no shards or media files match {pattern!r}")
    for path in files:
        members = _iter_members(path) if path.endswith(".tar") else [(path, _read(path))]
        for name, blob in members:
            low = name.lower()
            try:
                if low.endswith(VIDEO_EXTS):
                    clip = fit_clip(decode_video_bytes(blob), frames, height, width)
                elif images and low.endswith(IMAGE_EXTS):
                    img = decode_image_bytes(blob)
                    clip = fit_clip(np.repeat(img, frames, axis=0), frames, height, width)
                else:
                    continue
            except VideoDataError:
                if skip_errors:
                    continue
                raise
            if clip is not None:
                yield clip


def _read(path: str) -> bytes:
    import fsspec

    with fsspec.open(path, "rb") as f:
        return f.read()


def synth_split(data: str, default: str) -> str:
    """The split a ``synth[:SPLIT]`` data spec names (``default`` when it names none)."""
    return data.split(":", 1)[1] if ":" in data else default


def resolve_source(data: str, frames: int, height: int, width: int, seed: int = 0, split: str | None = None,
                   kind: str = "video") -> Iterator[np.ndarray]:
    """``synth``, ``synth:train``, ``synth:heldout``, or a glob / dir / URI of shards and media."""
    if data.startswith("synth"):
        return synth_clips(synth_split(data, split or "train"), seed, frames, height, width, kind=kind)
    return shard_clips(data, frames, height, width)


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
            b = b[:, start:start + frames]
        if self.flip:
            flips = rng.random(batch_size) < 0.5
            b = np.where(flips[:, None, None, None, None], b[:, :, :, ::-1], b)
        return b
