"""Validate, decode and clip the samples of an input shard into tokenization windows.

The pipeline over one input shard, module by module (both runners run the same functions)::

    inputs.list_input_shards(GLOB)                fsspec glob -> sorted shard URIs (unique base names)
    prepare.iter_windows(shard)                   webdataset reader: Sample | SampleReject per key
      -> prepare.prepare_sample(sample, cfg)      validate -> decode (decord) -> 8 fps clips -> audio
                                                  -> caption: ClipItems, or a reject
    tokenize.tokenize_items(items, toks, cfg)     batched MAGVIT-v2 / COMMIT conditions / SoundStream
                                                  -> TokenRecords (in input order)
    shard.assemble_shard(...)                     ShardWriter / rejects JSONL / work.finish_shard(stats)

Rejects are the dicts of :func:`videopoet.pipelines.errors.make_reject` (stage, reason code, message).

Handling documented here (the "nothing lost" guarantee; every sample is a record or a reject):

* no caption: a record without text (``meta.has_caption = False``) unless ``require_caption``;
  non-UTF-8 caption: reject ``caption_not_utf8``; longer than ``max_caption_bytes``:
  ``caption_too_long``; caption taken from ``{key}.txt``, else a ``caption`` string in ``{key}.json``.
* no audio track / no audio file: records without audio (``meta.has_audio = False``) unless
  ``require_audio``; a track shorter than a clip is zero-padded and ``meta.audio_pad`` says by how
  many samples.
* a key repeated *within* a shard: reject ``duplicate_key``; a key repeated *across* shards: both
  samples are kept - record keys are ``{shard stem}/{sample key}/{clip:03d}`` and the lineage names
  the source shard, so they never collide (units of work stay independent of each other).
* a truncated tar: the samples before the cut are processed; the sample in progress is a
  ``truncated_tar`` reject.
* ``sr_pairs``: a video is decoded at twice its bucket's size (``ClipItem.frames_2x``) and its
  bucket-size clip is the 2x2 box average of that; a source below twice the bucket's size in either
  dimension is a ``sr_source_too_small`` reject (never upscaled into a fake pair).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from videopoet import media
from videopoet.media.webdataset import ReaderLimits, Sample, SampleReject, iter_samples
from videopoet.pipelines.config import PipelineConfig
from videopoet.pipelines.errors import RejectError, make_reject
from videopoet.pipelines.folder import corpus_reject
from videopoet.schemas.record import Lineage
from videopoet.schemas.store import shard_stem

__all__ = [
    "AUDIO_EXTS",
    "IMAGE_EXTS",
    "VIDEO_EXTS",
    "ClipItem",
    "Window",
    "bucket_of",
    "iter_windows",
    "normalize_caption",
    "pick_member",
    "prepare_sample",
    "slice_audio",
]

VIDEO_EXTS = ("mp4", "webm", "mkv", "mov", "avi")
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
AUDIO_EXTS = ("wav", "flac", "ogg", "mp3", "m4a")


@dataclasses.dataclass
class ClipItem:
    """One clip or image, decoded and shaped, waiting for tokenization."""

    key: str  # record key
    sample_key: str
    clip_index: int
    frames: np.ndarray  # uint8 [T, H, W, 3]
    audio: np.ndarray | None  # float32 [N] or None
    caption: str | None
    lineage: Lineage
    meta: dict[str, Any]
    frames_2x: np.ndarray | None = None  # uint8 [T, 2H, 2W, 3]: the clip of a super-resolution pair (sr_pairs)

    @property
    def shape_key(self) -> tuple[int, ...]:
        return tuple(self.frames.shape)


_WS = re.compile(r"\s+")


def normalize_caption(text: str) -> str:
    """NFC, control/format characters dropped, whitespace collapsed, stripped."""
    t = unicodedata.normalize("NFC", text)
    t = "".join(c if unicodedata.category(c)[0] != "C" else " " for c in t)
    return _WS.sub(" ", t).strip()


def _caption(sample: Sample, cfg: PipelineConfig) -> str | None:
    raw = sample.members.get("txt")
    if raw is None:
        blob = sample.members.get("json")
        if blob is not None and len(blob) <= 1 << 20:
            try:
                doc = json.loads(blob.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                doc = None
            cap = doc.get("caption") if isinstance(doc, dict) else None
            if isinstance(cap, str):
                raw = cap.encode("utf-8")
    if raw is None:
        if cfg.require_caption:
            raise RejectError("text", "missing_caption", "no {key}.txt and no caption in {key}.json")
        return None
    if len(raw) > cfg.max_caption_bytes:
        raise RejectError("validate", "caption_too_long", f"caption has {len(raw)} bytes > {cfg.max_caption_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RejectError(
            "text", "caption_not_utf8", f"caption is not valid UTF-8 ({e.reason} at byte {e.start})"
        ) from None
    text = normalize_caption(text)
    if not text:
        if cfg.require_caption:
            raise RejectError("text", "missing_caption", "caption is empty after normalization")
        return None
    return text


def pick_member(sample: Sample, exts: tuple[str, ...]) -> tuple[str, bytes] | None:
    for e in exts:
        if e in sample.members:
            return e, sample.members[e]
    return None


def bucket_of(h: int, w: int, cfg: PipelineConfig) -> tuple[str, int, int]:
    b = cfg.buckets()
    if "portrait" in b and h / w >= cfg.portrait_min_aspect:
        return ("portrait", *b["portrait"])
    return ("square", *b["square"])


def _check_geometry(w: int, h: int, cfg: PipelineConfig) -> None:
    if w * h > cfg.max_pixels:
        raise RejectError("validate", "too_many_pixels", f"{w}x{h} = {w * h} pixels > max_pixels {cfg.max_pixels}")
    if min(w, h) < cfg.min_side:
        raise RejectError("validate", "too_small", f"{w}x{h}: a side is below min_side {cfg.min_side}")
    if max(w, h) / min(w, h) > cfg.max_aspect:
        raise RejectError("validate", "bad_aspect", f"{w}x{h}: aspect ratio over {cfg.max_aspect}")


def _audio_source(
    sample: Sample, video_blob: bytes | None, cfg: PipelineConfig, timing: Counter, until: float | None = None
):
    """(wave, start_s, origin) or None; decoding stops about a second after ``until``."""
    t0 = time.perf_counter()
    try:
        own = pick_member(sample, AUDIO_EXTS)
        if own is not None:
            try:
                return media.decode_audio(own[1], cfg.sample_rate, until=until), 0.0, f"{own[0]} file"
            except media.MediaError as e:
                raise RejectError("audio", e.reason, str(e)) from None
        if video_blob is None:
            return None
        try:
            out = media.extract_audio_track(video_blob, cfg.sample_rate, with_start=True, until=until)
        except media.MediaError as e:
            raise RejectError("audio", e.reason, str(e)) from None
        if out is None or out[0].size == 0:
            return None
        return out[0], out[1], "video track"
    finally:
        timing["audio"] += time.perf_counter() - t0


def slice_audio(wave: np.ndarray, wave_start: float, t: float, n: int, sr: int) -> tuple[np.ndarray, int]:
    s = int(round((t - wave_start) * sr))
    out = np.zeros(n, np.float32)
    lo, hi = max(s, 0), min(s + n, wave.size)
    if hi > lo:
        out[lo - s : hi - s] = wave[lo:hi]
    return out, n - max(hi - lo, 0)


def prepare_sample(
    sample: Sample, cfg: PipelineConfig, source_shard: str, source_sha256: str, timing: Counter | None = None
) -> list[ClipItem]:
    """Validate, decode and clip one sample. Raises :class:`RejectError` (caught by :func:`iter_windows`)."""
    timing = timing if timing is not None else Counter()
    stem = shard_stem(source_shard)
    if sample.nbytes > cfg.max_sample_bytes:
        raise RejectError("validate", "sample_too_large", f"{sample.nbytes} bytes > max_sample_bytes")
    vid = pick_member(sample, VIDEO_EXTS)
    img = None if vid is not None else pick_member(sample, IMAGE_EXTS)
    if vid is None and img is None:
        raise RejectError(
            "validate",
            "no_media",
            f"no video ({'/'.join(VIDEO_EXTS)}) or image member; "
            f"members: {', '.join(sorted(sample.members)) or 'none'}",
        )
    caption = _caption(sample, cfg)
    items: list[ClipItem] = []
    if vid is not None:
        t0 = time.perf_counter()
        try:
            info = media.probe_video(vid[1])
        except media.MediaError as e:
            raise RejectError("decode", e.reason, str(e)) from None
        _check_geometry(info.width, info.height, cfg)
        if info.duration > cfg.max_duration_s:
            raise RejectError("validate", "too_long", f"{info.duration:.1f} s > max_duration_s {cfg.max_duration_s}")
        bucket, bh, bw = bucket_of(info.height, info.width, cfg)
        scale = 2 if cfg.sr_pairs else 1
        if cfg.sr_pairs and (info.height < 2 * bh or info.width < 2 * bw):
            raise RejectError(
                "validate",
                "sr_source_too_small",
                f"{info.width}x{info.height}: super-resolution pairs need a source of at least "
                f"{2 * bw}x{2 * bh} (twice the {bucket} bucket's {bw}x{bh})",
            )
        try:
            dec = media.decode_clips(
                vid[1],
                info,
                fps=cfg.fps,
                height=bh * scale,
                width=bw * scale,
                clip_frames=cfg.clip_frames,
                stride=cfg.clip_stride,
                max_clips=cfg.max_clips_per_video,
            )
        except media.MediaError as e:
            raise RejectError("decode", e.reason, str(e)) from None
        finally:
            timing["decode"] += time.perf_counter() - t0
        if not dec.clips:
            raise RejectError(
                "validate",
                "too_short",
                f"{dec.output_frames} frames at {cfg.fps:g} fps < one clip of {cfg.clip_frames}",
            )
        until = dec.starts[-1] + cfg.clip_seconds
        audio = _audio_source(sample, vid[1], cfg, timing, until) if cfg.audio else None
        if audio is None and cfg.require_audio:
            raise RejectError("audio", "no_audio", "no audio file and no audio track")
        for c, (frames, src, start) in enumerate(zip(dec.clips, dec.source_indices, dec.starts, strict=False)):
            meta: dict[str, Any] = {
                "bucket": bucket,
                "is_image": False,
                "clip_index": c,
                "source_width": info.width,
                "source_height": info.height,
                "source_fps": round(dec.source_fps, 6),
                "has_caption": caption is not None,
                "has_audio": audio is not None,
            }
            wave = None
            if audio is not None:
                wave, pad = slice_audio(audio[0], audio[1], start, cfg.audio_samples, cfg.sample_rate)
                meta["audio_pad"] = int(pad)
                meta["audio_origin"] = audio[2]
            lin = Lineage(
                source_shard=source_shard,
                source_sha256=source_sha256,
                sample_key=sample.key,
                clip_start_s=float(round(start, 6)),
                frame_indices=tuple(src),
                fps=float(cfg.fps),
            )
            key = f"{stem}/{sample.key}/{c:03d}"
            if cfg.sr_pairs:
                low = media.box_downsample(frames, 2)
                items.append(ClipItem(key, sample.key, c, low, wave, caption, lin, meta, frames_2x=frames))
            else:
                items.append(ClipItem(key, sample.key, c, frames, wave, caption, lin, meta))
        return items
    # image: a 1-frame sample
    t0 = time.perf_counter()
    try:
        try:
            w, h = media.image_size(img[1])
        except media.MediaError as e:
            raise RejectError("decode", e.reason, str(e)) from None
        _check_geometry(w, h, cfg)
        if not cfg.images:
            raise RejectError("validate", "no_media", "image samples are disabled (images=false)")
        try:
            pix = media.decode_image(img[1], cfg.max_pixels)
        except media.MediaError as e:
            raise RejectError("decode", e.reason, str(e)) from None
        bucket, bh, bw = bucket_of(h, w, cfg)
        frames = media.resize_center_crop(pix[None], bh, bw)
    finally:
        timing["decode"] += time.perf_counter() - t0
    meta = {
        "bucket": bucket,
        "is_image": True,
        "clip_index": 0,
        "source_width": w,
        "source_height": h,
        "has_caption": caption is not None,
        "has_audio": False,
    }
    lin = Lineage(
        source_shard=source_shard,
        source_sha256=source_sha256,
        sample_key=sample.key,
        clip_start_s=0.0,
        frame_indices=(0,),
        fps=0.0,
    )
    return [ClipItem(f"{stem}/{sample.key}/000", sample.key, 0, frames, None, caption, lin, meta)]


def _reader_limits(cfg: PipelineConfig) -> ReaderLimits:
    return ReaderLimits(max_member_bytes=cfg.max_member_bytes, max_sample_bytes=cfg.max_sample_bytes)


@dataclasses.dataclass
class Window:
    """One tokenization window of a shard: clip items to tokenize together, the read/prepare rejects
    met since the previous window (in input order), and how many samples were read for it."""

    items: list[ClipItem]
    rejects: list[dict[str, str]]
    samples_in: int
    final: bool


def iter_windows(
    read_from: str,
    cfg: PipelineConfig,
    name: str,
    sha: str,
    timing: Counter,
    *,
    on_sample: Callable[[], None] | None = None,
) -> Iterator[Window]:
    """Read and prepare one shard's samples, cut into windows of at least ``4 * batch_size`` clip items.

    A window closes as soon as it holds that many items (a sample's clips never split); the last
    window (``final``, possibly empty) holds the rest. Both runners tokenize exactly these windows
    (Beam in :func:`videopoet.pipelines.shard.process_shard`, Ray on its actor pool), which is what makes their shards
    byte-identical.
    """
    limit = max(cfg.batch_size * 4, 1)
    items: list[ClipItem] = []
    pending: list[dict[str, str]] = []
    read = 0
    it = iter_samples(read_from, _reader_limits(cfg))
    while True:
        t0 = time.perf_counter()
        try:
            s = next(it)
        except StopIteration:
            break
        finally:
            timing["read"] += time.perf_counter() - t0
        read += 1
        if on_sample is not None:
            on_sample()
        if isinstance(s, SampleReject):
            pending.append(make_reject(name, s.key, "read", s.reason, s.message))
            continue
        refused = corpus_reject(s.members)  # a folder corpus's row or file that could not become a sample
        if refused is not None:
            pending.append(make_reject(name, s.key, "read", *refused))
            continue
        try:
            items.extend(prepare_sample(s, cfg, name, sha, timing))
        except RejectError as r:
            pending.append(make_reject(name, s.key, r.stage, r.reason, r.message))
            continue
        if len(items) >= limit:
            yield Window(items, pending, read, final=False)
            items, pending, read = [], [], 0
    yield Window(items, pending, read, final=True)
