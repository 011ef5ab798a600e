"""One media module for the whole house: the pipelines, the tokenizers' training data, the CLI and eval.

This module decodes and resizes; :mod:`.encode` writes mp4 / JPEG / PNG / GIF / WAV, and
:mod:`.webdataset` is the hardened tar-shard reader (every tar read goes through it). Nothing here
imports a tokenizer, a pipeline or the trainer.

* :func:`probe_video` - container metadata (size, rate, frames, duration, audio) without decoding
  pixels (PyAV), so limits are checked before any expensive decode.
* :func:`decode_clips` - decord: resample to ``fps`` by presentation time, scale + centre-crop to a
  target size, and return only the frames the requested clips need. A frame decord cannot decode
  raises :class:`MediaError` ``corrupt_frame``; frames are never repeated to hide an error.
* :func:`decode_frames` - every frame resampled to ``fps`` at the source size (tokenizer data, the CLI).
* :func:`extract_audio_track` / :func:`decode_audio` - a container's first audio track or an audio
  file's bytes -> mono float32 at ``sample_rate`` (soxr), with the track's start time.
* :func:`decode_image` - jpg/png/webp -> uint8 ``[H, W, 3]`` (Pillow), with a pixel cap checked
  from the header before decoding.
* :func:`decode_gif` - an animated GIF (the eval gallery's clips) -> uint8 ``[T, H, W, 3]`` (Pillow).
* :func:`resize_center_crop` - uint8 ``[T, h, w, 3]`` -> ``[T, H, W, 3]`` (scale to cover, crop): the one
  resize of the house, so a tokenizer trains on frames resized exactly as the pipelines resize the
  frames it later tokenizes.
* :func:`box_downsample` - uint8 ``[T, H, W, 3]`` -> ``[T, H/f, W/f, 3]``, the mean of each f x f cell:
  the low-resolution half of a super-resolution pair is exactly this function of the high-resolution half.
* :func:`upsample_bicubic` - uint8 ``[T, h, w, 3]`` -> ``[T, f*h, f*w, 3]`` (Pillow's bicubic), the
  baseline a super-resolution model is measured against.

Every failure is a :class:`MediaError` carrying a stable ``reason`` code (see ``MEDIA_REASONS``).
"""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np

from videopoet.schemas.errors import VideoPoetError

__all__ = [
    "MEDIA_REASONS",
    "DecodedClips",
    "DecodedVideo",
    "MediaError",
    "VideoInfo",
    "box_downsample",
    "cover_size",
    "decode_audio",
    "decode_clips",
    "decode_image",
    "decode_frames",
    "decode_gif",
    "extract_audio_track",
    "image_size",
    "probe_video",
    "resample_indices",
    "resize_center_crop",
    "upsample_bicubic",
]

MEDIA_REASONS = (
    "empty_file",
    "undecodable_video",
    "corrupt_frame",
    "no_video_stream",
    "undecodable_image",
    "undecodable_audio",
)


class MediaError(VideoPoetError, ValueError):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float  # average frame rate of the video stream (0 when unknown)
    frames: int  # frame count from the container (0 when unknown)
    duration: float  # seconds (0 when unknown)
    has_audio: bool


def probe_video(blob: bytes) -> VideoInfo:
    """Container metadata via PyAV (headers only)."""
    import av

    if not blob:
        raise MediaError("empty_file", "zero-byte video")
    try:
        with av.open(io.BytesIO(blob), mode="r") as c:
            if not c.streams.video:
                raise MediaError("no_video_stream", "container has no video stream")
            s = c.streams.video[0]
            w, h = int(s.codec_context.width or 0), int(s.codec_context.height or 0)
            fps = float(s.average_rate) if s.average_rate else 0.0
            dur = 0.0
            if s.duration is not None and s.time_base is not None:
                dur = float(s.duration * s.time_base)
            elif c.duration is not None:
                dur = c.duration / 1_000_000
            return VideoInfo(w, h, fps, int(s.frames or 0), dur, bool(c.streams.audio))
    except MediaError:
        raise
    except Exception as e:  # PyAV raises many error types for garbage input
        raise MediaError("undecodable_video", f"cannot open video container: {type(e).__name__}: {e}") from None


def cover_size(h: int, w: int, height: int, width: int) -> tuple[int, int]:
    """The (h', w') that covers ``height x width`` with the source aspect kept (before the crop)."""
    s = max(height / h, width / w)
    return max(height, int(round(h * s))), max(width, int(round(w * s)))


def resize_center_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [T,h,w,3] -> [T,height,width,3]: scale to cover (Pillow), then centre-crop."""
    from PIL import Image

    t, h, w, _ = frames.shape
    if (h, w) == (height, width):
        return frames
    nh, nw = cover_size(h, w, height, width)
    out = np.empty((t, height, width, 3), np.uint8)
    y0, x0 = (nh - height) // 2, (nw - width) // 2
    for i in range(t):
        if (nh, nw) == (h, w):
            im = frames[i]
        else:
            im = np.asarray(Image.fromarray(frames[i]).resize((nw, nh), Image.BILINEAR if nh > h else Image.BOX))
        out[i] = im[y0 : y0 + height, x0 : x0 + width]
    return out


def box_downsample(frames: np.ndarray, factor: int = 2) -> np.ndarray:
    """uint8 [T,H,W,3] -> [T,H/factor,W/factor,3]: each output pixel is the rounded mean of a
    ``factor`` x ``factor`` cell (H and W must be multiples of ``factor``)."""
    t, h, w, c = frames.shape
    if h % factor or w % factor:
        raise ValueError(f"box_downsample: {h}x{w} is not a multiple of {factor}")
    cells = np.asarray(frames, np.uint32).reshape(t, h // factor, factor, w // factor, factor, c)
    n = factor * factor
    return ((cells.sum(axis=(2, 4)) + n // 2) // n).astype(np.uint8)


def upsample_bicubic(frames: np.ndarray, factor: int = 2) -> np.ndarray:
    """uint8 [T,h,w,3] -> [T,factor*h,factor*w,3] by Pillow's bicubic filter, frame by frame."""
    from PIL import Image

    t, h, w, _ = frames.shape
    out = np.empty((t, h * factor, w * factor, 3), np.uint8)
    for i in range(t):
        im = Image.fromarray(np.asarray(frames[i], np.uint8))
        out[i] = np.asarray(im.resize((w * factor, h * factor), Image.BICUBIC))
    return out


def _center_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    h, w = frames.shape[1:3]
    y0, x0 = (h - height) // 2, (w - width) // 2
    return frames[:, y0 : y0 + height, x0 : x0 + width]


def resample_indices(timestamps: np.ndarray, fps: float, end_time: float) -> np.ndarray:
    """Source frame index shown at each output time k/fps (k = 0.. while k/fps < end_time)."""
    ts = np.asarray(timestamps, np.float64)
    n_out = int(math.floor(end_time * fps + 1e-6))
    want = np.arange(n_out, dtype=np.float64) / fps
    idx = np.searchsorted(ts, want + 1e-6, side="right") - 1
    return np.clip(idx, 0, len(ts) - 1).astype(np.int64)


@dataclasses.dataclass
class DecodedClips:
    clips: list[np.ndarray]  # uint8 [clip_frames, H, W, 3] each
    source_indices: list[tuple[int, ...]]  # source frame index of every clip frame
    starts: list[float]  # clip start time in seconds (output timeline)
    output_frames: int  # length of the resampled video in frames
    source_fps: float
    duration: float


def _reader(blob: bytes, width: int = -1, height: int = -1):
    import decord

    try:
        return decord.VideoReader(io.BytesIO(blob), ctx=decord.cpu(0), num_threads=1, width=width, height=height)
    except Exception as e:  # decord raises DECORDError / RuntimeError
        raise MediaError("undecodable_video", f"decord cannot open the video: {_short(e)}") from None


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[-1][:200] if msg else ''}"


def _timeline(vr) -> tuple[np.ndarray, float, float]:
    n = len(vr)
    if n < 1:
        raise MediaError("undecodable_video", "video has no frames")
    try:
        ts = np.asarray(vr.get_frame_timestamp(list(range(n))), np.float64)
    except Exception as e:
        raise MediaError("undecodable_video", f"cannot read frame timestamps: {_short(e)}") from None
    starts, ends = ts[:, 0], ts[:, 1]
    src_fps = float(vr.get_avg_fps() or 0.0)
    end_time = float(ends[-1]) if ends[-1] > starts[-1] else float(starts[-1]) + (1.0 / src_fps if src_fps > 0 else 0.0)
    return starts, end_time, src_fps


def decode_clips(
    blob: bytes, info: VideoInfo, *, fps: float, height: int, width: int, clip_frames: int, stride: int, max_clips: int
) -> DecodedClips:
    """Decode the clips of ``clip_frames`` frames at ``fps`` (starts 0, stride, 2*stride, ...)."""
    sh, sw = cover_size(info.height, info.width, height, width) if info.height and info.width else (height, width)
    vr = _reader(blob, width=sw, height=sh)
    starts_ts, end_time, src_fps = _timeline(vr)
    idx = resample_indices(starts_ts, fps, end_time)
    n_out = len(idx)
    clip_starts = list(range(0, max(n_out - clip_frames + 1, 0), stride))[:max_clips]
    if not clip_starts:
        return DecodedClips([], [], [], n_out, src_fps, end_time)
    needed = sorted({int(i) for s in clip_starts for i in idx[s : s + clip_frames]})
    try:
        batch = vr.get_batch(needed).asnumpy()
    except Exception as e:
        raise MediaError("corrupt_frame", f"decord failed to decode a frame: {_short(e)}") from None
    if batch.shape[0] != len(needed) or batch.ndim != 4:
        raise MediaError("corrupt_frame", f"decord returned {batch.shape[0]} frames for {len(needed)} requested")
    if batch.shape[1:3] != (sh, sw):  # decord could not scale: do it here
        batch = resize_center_crop(batch, height, width)
    else:
        batch = _center_crop(batch, height, width)
    pos = {f: i for i, f in enumerate(needed)}
    clips, srcs = [], []
    for s in clip_starts:
        sel = [int(i) for i in idx[s : s + clip_frames]]
        clips.append(np.ascontiguousarray(batch[[pos[i] for i in sel]]))
        srcs.append(tuple(sel))
    return DecodedClips(clips, srcs, [s / fps for s in clip_starts], n_out, src_fps, end_time)


@dataclasses.dataclass
class DecodedVideo:
    frames: np.ndarray  # uint8 [T, H, W, 3]
    source_indices: np.ndarray
    fps: float | None


def decode_frames(blob: bytes, fps: float | None = 8.0) -> DecodedVideo:
    """Every frame (resampled to ``fps`` when given) at the source size, via decord."""
    if not blob:
        raise MediaError("empty_file", "zero-byte video")
    vr = _reader(blob)
    starts, end_time, _ = _timeline(vr)
    idx = np.arange(len(starts)) if fps is None else resample_indices(starts, fps, end_time)
    try:
        frames = vr.get_batch(sorted(set(int(i) for i in idx))).asnumpy()
    except Exception as e:
        raise MediaError("corrupt_frame", f"decord failed to decode a frame: {_short(e)}") from None
    uniq = sorted(set(int(i) for i in idx))
    pos = {f: i for i, f in enumerate(uniq)}
    return DecodedVideo(frames[[pos[int(i)] for i in idx]], idx, fps)


def _to_mono_resampled(chunks: list[np.ndarray], sr_in: int, sr: int) -> np.ndarray:
    if not chunks:
        return np.zeros(0, np.float32)
    wave = np.concatenate(chunks, axis=-1).astype(np.float32)
    if wave.ndim == 2:
        wave = wave.mean(axis=0)
    if sr_in != sr and wave.size:
        import soxr

        wave = soxr.resample(wave, sr_in, sr, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(wave, np.float32)


def _decode_audio_stream(
    blob: bytes, sample_rate: int, require: bool, until: float | None = None
) -> tuple[np.ndarray, float] | None:
    import av

    try:
        with av.open(io.BytesIO(blob), mode="r") as c:
            if not c.streams.audio:
                if require:
                    raise MediaError("undecodable_audio", "no audio stream")
                return None
            s = c.streams.audio[0]
            chunks, start, sr_in = [], None, int(s.codec_context.sample_rate or s.rate or sample_rate)
            for fr in c.decode(s):
                if start is None:
                    start = float(fr.time) if fr.time is not None else 0.0
                elif until is not None and fr.time is not None and float(fr.time) > until + 1.0:
                    break  # past what the clips need (+1 s margin for the resampler's edges)
                a = fr.to_ndarray()
                if a.dtype.kind == "i":
                    a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
                if not fr.format.is_planar and a.ndim == 2 and a.shape[0] == 1 and len(fr.layout.channels) > 1:
                    a = a.reshape(-1, len(fr.layout.channels)).T  # packed -> [channels, samples]
                chunks.append(a.astype(np.float32).reshape(a.shape[0] if a.ndim == 2 else 1, -1))
    except MediaError:
        raise
    except Exception as e:
        raise MediaError("undecodable_audio", f"cannot decode audio: {type(e).__name__}: {e}") from None
    wave = _to_mono_resampled(chunks, sr_in, sample_rate)
    if not np.all(np.isfinite(wave)):
        raise MediaError("undecodable_audio", "audio has NaN or infinite samples")
    return wave, (start or 0.0)


def extract_audio_track(blob: bytes, sample_rate: int = 16000, with_start: bool = False, until: float | None = None):
    """A container's first audio track -> mono float32 [N] at ``sample_rate``; None if it has none.

    ``with_start``: return ``(wave, start_seconds)`` (the track's first sample time vs. the video).
    ``until``: stop decoding about one second after this time (memory stays bounded for long media).
    """
    out = _decode_audio_stream(blob, sample_rate, require=False, until=until)
    if out is None or with_start:
        return out
    return out[0]


def decode_audio(blob: bytes, sample_rate: int = 16000, until: float | None = None) -> np.ndarray:
    """wav/flac/ogg/mp3/m4a bytes -> mono float32 [N] at ``sample_rate`` (the first ``until`` + 1 s
    when given)."""
    if not blob:
        raise MediaError("empty_file", "zero-byte audio")
    try:
        import soundfile as sf

        f = io.BytesIO(blob)
        sr_in = sf.info(f).samplerate
        f.seek(0)
        frames = -1 if until is None else int((until + 1.0) * sr_in)
        data, sr = sf.read(f, frames=frames, dtype="float32", always_2d=True)
        return _to_mono_resampled([data.T], int(sr), sample_rate)
    except Exception:
        pass  # not a libsndfile format: try FFmpeg
    out = _decode_audio_stream(blob, sample_rate, require=True, until=until)
    return out[0]


def image_size(blob: bytes) -> tuple[int, int]:
    """(width, height) from the image header, without decoding pixels."""
    from PIL import Image

    if not blob:
        raise MediaError("empty_file", "zero-byte image")
    try:
        with Image.open(io.BytesIO(blob)) as im:
            return int(im.size[0]), int(im.size[1])
    except Exception as e:
        raise MediaError("undecodable_image", f"cannot read image header: {type(e).__name__}: {e}") from None


def decode_image(blob: bytes, max_pixels: int | None = None) -> np.ndarray:
    """Image bytes -> uint8 [H, W, 3] (RGB)."""
    import warnings

    from PIL import Image

    w, h = image_size(blob)
    if max_pixels is not None and w * h > max_pixels:
        raise MediaError("undecodable_image", f"{w}x{h} image over {max_pixels} pixels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(blob)) as im:
                im.load()
                return np.asarray(im.convert("RGB"))
    except Exception as e:
        raise MediaError("undecodable_image", f"cannot decode image: {type(e).__name__}: {e}") from None


def decode_gif(blob: bytes) -> np.ndarray:
    """Animated GIF bytes -> uint8 [T, H, W, 3] (RGB), every frame."""
    from PIL import Image

    if not blob:
        raise MediaError("empty_file", "zero-byte image")
    try:
        with Image.open(io.BytesIO(blob)) as im:
            frames = []
            for i in range(getattr(im, "n_frames", 1)):
                im.seek(i)
                frames.append(np.asarray(im.convert("RGB")))
    except Exception as e:
        raise MediaError("undecodable_image", f"cannot decode GIF: {type(e).__name__}: {e}") from None
    return np.stack(frames)
