"""Runner-agnostic pipeline stages: plain functions the Beam and Ray runners both call.

Unit of work = one input shard (:func:`process_shard`)::

    list_input_shards(GLOB)                       fsspec glob -> sorted shard URIs (unique base names)
    iter_samples(shard)                           webdataset reader: Sample | SampleReject per key
      -> prepare_sample(sample, cfg)              validate -> decode (decord) -> 8 fps clips -> audio
                                                  -> caption: ClipItems, or a reject
      -> tokenize_items(items, tokenizers, cfg)   batched MAGVIT-v2 / COMMIT conditions / SoundStream
                                                  -> TokenRecords (in input order)
      -> ShardWriter / rejects JSONL / work.finish_shard(...)   through the dataset store

Rejects are dicts ``{source_shard, key, stage, reason, message}``; ``stage`` is one of ``read``,
``validate``, ``decode``, ``audio``, ``text``, ``tokenize`` and ``reason`` one of
:data:`REJECT_REASONS` (stable codes; messages are scrubbed of addresses and clock times so a
rerun writes identical reject files).

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
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from videopoet.pipelines import media
from videopoet.pipelines.config import PipelineConfig
from videopoet.pipelines.webdataset import READ_REASONS, ReaderLimits, Sample, SampleReject, iter_samples
from videopoet.schemas.errors import VideoPoetError
from videopoet.schemas.record import Lineage, TokenRecord

__all__ = [
    "AUDIO_EXTS",
    "IMAGE_EXTS",
    "REJECT_REASONS",
    "VIDEO_EXTS",
    "ClipItem",
    "condition_kinds",
    "PipelineError",
    "Tokenizers",
    "input_name",
    "list_input_shards",
    "load_tokenizers",
    "normalize_caption",
    "open_input",
    "prepare_sample",
    "rejects_bytes",
    "process_shard",
    "tokenize_items",
    "warmup_tokenizers",
    "write_rejects",
]

VIDEO_EXTS = ("mp4", "webm", "mkv", "mov", "avi")
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
AUDIO_EXTS = ("wav", "flac", "ogg", "mp3", "m4a")

REJECT_REASONS = READ_REASONS + media.MEDIA_REASONS + (
    "no_media",  # no video/image member
    "too_many_pixels",
    "too_small",
    "bad_aspect",
    "too_long",
    "too_short",
    "no_audio",
    "missing_caption",
    "caption_not_utf8",
    "caption_too_long",
    "tokenize_error",
)


class PipelineError(VideoPoetError):
    """The job as a whole cannot run (no inputs, clashing input names, bad tokenizer spec)."""


# ------------------------------------------------------------------------------------------ inputs
def input_name(uri: str) -> str:
    return os.path.basename(uri.rstrip("/"))


def list_input_shards(pattern: str | Iterable[str]) -> list[str]:
    """Glob(s) / directories / URIs -> sorted shard URIs (``*.tar``, ``*.tar.gz``, ``*.tgz``).

    Local paths come back absolute; remote ones as full URIs. Base names must be unique (they name
    the output shards and the lineage)."""
    import fsspec

    pats = [pattern] if isinstance(pattern, str) else list(pattern)
    out: set[str] = set()
    for pat in pats:
        fs, _, paths = fsspec.get_fs_token_paths(pat)
        if len(paths) == 1 and fs.isdir(paths[0]):
            paths = fs.glob(paths[0].rstrip("/") + "/*")
        for p in paths:
            if not p.endswith((".tar", ".tar.gz", ".tgz")) or fs.isdir(p):
                continue
            uri = os.path.abspath(p) if fs.protocol in ("file", ("file", "local")) or "://" not in pat else fs.unstrip_protocol(p)
            out.add(uri)
    uris = sorted(out)
    if not uris:
        raise PipelineError(f"no input shards (*.tar, *.tar.gz) match {pattern!r}")
    names = Counter(input_name(u) for u in uris)
    dup = sorted(n for n, c in names.items() if c > 1)
    if dup:
        raise PipelineError(f"input shard base names must be unique; {dup[0]!r} appears {names[dup[0]]} times")
    return uris


# -------------------------------------------------------------------------------------- tokenizers
@dataclasses.dataclass
class Tokenizers:
    video: Any
    audio: Any
    text: Any
    sources: dict[str, str]  # modality -> what was loaded ("default checkpoint", "small preset (...)")

    def lineage(self) -> dict[str, dict[str, Any]]:
        from videopoet.schemas.config import to_dict

        out = {}
        for kind in ("video", "audio", "text"):
            tok = getattr(self, kind)
            out[kind] = {"name": tok.config.name, "fingerprint": tok.fingerprint, "source": self.sources[kind],
                         "config": to_dict(tok.config)}
        return out

    def fingerprints(self) -> dict[str, str]:
        return {k: getattr(self, k).fingerprint for k in ("video", "audio", "text")}


_TOKENIZER_CACHE: dict[tuple[str, str, str], Tokenizers] = {}
_TOKENIZER_LOCK = threading.Lock()


def _load_one(kind: str, spec: str):
    from videopoet.tokenizers import magvit2, soundstream, text

    mod = {"video": magvit2, "audio": soundstream, "text": text}[kind]
    if spec == "default":
        try:
            tok = mod.default()
            return tok, "default (shipped)"
        except (VideoPoetError, FileNotFoundError, OSError) as e:
            if kind == "text":
                raise PipelineError(f"cannot load the default text tokenizer: {e}") from None
            tok = mod.load("small")
            return tok, "small preset, seeded init (no shipped checkpoint yet)"
    try:
        tok = mod.load(spec)
    except VideoPoetError:
        raise
    except Exception as e:  # noqa: BLE001 - a bad path / config is the user's to fix
        raise PipelineError(f"cannot load the {kind} tokenizer {spec!r}: {type(e).__name__}: {e}") from None
    return tok, (f"{spec} preset, seeded init" if "/" not in spec and not spec.endswith((".yaml", ".yml")) else spec)


def load_tokenizers(cfg: PipelineConfig) -> Tokenizers:
    """The three tokenizers of ``cfg``, loaded once per process (cached by their specs)."""
    key = (cfg.video_tokenizer, cfg.audio_tokenizer, cfg.text_tokenizer)
    with _TOKENIZER_LOCK:
        if key not in _TOKENIZER_CACHE:
            loaded = {k: _load_one(k, s) for k, s in zip(("video", "audio", "text"), key)}
            toks = Tokenizers(loaded["video"][0], loaded["audio"][0], loaded["text"][0],
                              {k: v[1] for k, v in loaded.items()})
            vt = toks.video.config
            for h, w in cfg.buckets().values():
                if h % vt.spatial_downsample or w % vt.spatial_downsample:
                    raise PipelineError(f"bucket {w}x{h} is not a multiple of the video tokenizer's "
                                        f"spatial factor {vt.spatial_downsample}")
            if (cfg.clip_frames - 1) % vt.temporal_downsample:
                raise PipelineError(f"clip_frames {cfg.clip_frames} is not 1 + {vt.temporal_downsample}k")
            if toks.audio.config.sample_rate != cfg.sample_rate:
                raise PipelineError(f"sample_rate {cfg.sample_rate} differs from the audio tokenizer's "
                                    f"{toks.audio.config.sample_rate}")
            _TOKENIZER_CACHE[key] = toks
        return _TOKENIZER_CACHE[key]


def warmup_tokenizers(toks: Tokenizers, cfg: PipelineConfig) -> float:
    """Compile every shape the pipeline feeds the tokenizers (each bucket's clip and image, the
    audio clip) so the first shards do not pay XLA compilation; returns the seconds spent."""
    t0 = time.perf_counter()
    for h, w in cfg.buckets().values():
        for t in ((cfg.clip_frames, 1) if cfg.images else (cfg.clip_frames,)):
            toks.video.encode(np.zeros((cfg.batch_size, t, h, w, 3), np.uint8))
    if cfg.audio:
        toks.audio.encode(np.zeros((cfg.batch_size, cfg.audio_samples), np.float32))
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------- samples
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

    @property
    def shape_key(self) -> tuple[int, ...]:
        return tuple(self.frames.shape)


class _Reject(Exception):
    def __init__(self, stage: str, reason: str, message: str):
        super().__init__(message)
        self.stage, self.reason, self.message = stage, reason, message


_SCRUB = [(re.compile(r"\b0x[0-9a-fA-F]{6,}\b"), "0x?"), (re.compile(r"\[\d\d:\d\d:\d\d\]"), "[..]")]


def _scrub(msg: str) -> str:
    for rx, rep in _SCRUB:
        msg = rx.sub(rep, msg)
    return msg[:500]


def make_reject(source_shard: str, key: str, stage: str, reason: str, message: str) -> dict[str, str]:
    return {"source_shard": source_shard, "key": key, "stage": stage, "reason": reason, "message": _scrub(message)}


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
            raise _Reject("text", "missing_caption", "no {key}.txt and no caption in {key}.json")
        return None
    if len(raw) > cfg.max_caption_bytes:
        raise _Reject("validate", "caption_too_long", f"caption has {len(raw)} bytes > {cfg.max_caption_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Reject("text", "caption_not_utf8", f"caption is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    text = normalize_caption(text)
    if not text:
        if cfg.require_caption:
            raise _Reject("text", "missing_caption", "caption is empty after normalization")
        return None
    return text


def _pick(sample: Sample, exts: tuple[str, ...]) -> tuple[str, bytes] | None:
    for e in exts:
        if e in sample.members:
            return e, sample.members[e]
    return None


def _bucket(h: int, w: int, cfg: PipelineConfig) -> tuple[str, int, int]:
    b = cfg.buckets()
    if "portrait" in b and h / w >= cfg.portrait_min_aspect:
        return ("portrait", *b["portrait"])
    return ("square", *b["square"])


def _check_geometry(w: int, h: int, cfg: PipelineConfig) -> None:
    if w * h > cfg.max_pixels:
        raise _Reject("validate", "too_many_pixels", f"{w}x{h} = {w * h} pixels > max_pixels {cfg.max_pixels}")
    if min(w, h) < cfg.min_side:
        raise _Reject("validate", "too_small", f"{w}x{h}: a side is below min_side {cfg.min_side}")
    if max(w, h) / min(w, h) > cfg.max_aspect:
        raise _Reject("validate", "bad_aspect", f"{w}x{h}: aspect ratio over {cfg.max_aspect}")


def _audio_source(sample: Sample, video_blob: bytes | None, cfg: PipelineConfig, timing: Counter,
                  until: float | None = None):
    """(wave, start_s, origin) or None; decoding stops about a second after ``until``."""
    t0 = time.perf_counter()
    try:
        own = _pick(sample, AUDIO_EXTS)
        if own is not None:
            try:
                return media.decode_audio(own[1], cfg.sample_rate, until=until), 0.0, f"{own[0]} file"
            except media.MediaError as e:
                raise _Reject("audio", e.reason, str(e)) from None
        if video_blob is None:
            return None
        try:
            out = media.extract_audio_track(video_blob, cfg.sample_rate, with_start=True, until=until)
        except media.MediaError as e:
            raise _Reject("audio", e.reason, str(e)) from None
        if out is None or out[0].size == 0:
            return None
        return out[0], out[1], "video track"
    finally:
        timing["audio"] += time.perf_counter() - t0


def _slice_audio(wave: np.ndarray, wave_start: float, t: float, n: int, sr: int) -> tuple[np.ndarray, int]:
    s = int(round((t - wave_start) * sr))
    out = np.zeros(n, np.float32)
    lo, hi = max(s, 0), min(s + n, wave.size)
    if hi > lo:
        out[lo - s:hi - s] = wave[lo:hi]
    return out, n - max(hi - lo, 0)


def prepare_sample(sample: Sample, cfg: PipelineConfig, source_shard: str, source_sha256: str,
                   timing: Counter | None = None) -> list[ClipItem]:
    """Validate, decode and clip one sample. Raises ``_Reject`` (caught by :func:`process_shard`)."""
    timing = timing if timing is not None else Counter()
    stem = _stem(source_shard)
    if sample.nbytes > cfg.max_sample_bytes:
        raise _Reject("validate", "sample_too_large", f"{sample.nbytes} bytes > max_sample_bytes")
    vid = _pick(sample, VIDEO_EXTS)
    img = None if vid is not None else _pick(sample, IMAGE_EXTS)
    if vid is None and img is None:
        raise _Reject("validate", "no_media", f"no video ({'/'.join(VIDEO_EXTS)}) or image member; "
                                              f"members: {', '.join(sorted(sample.members)) or 'none'}")
    caption = _caption(sample, cfg)
    items: list[ClipItem] = []
    if vid is not None:
        t0 = time.perf_counter()
        try:
            info = media.probe_video(vid[1])
        except media.MediaError as e:
            raise _Reject("decode", e.reason, str(e)) from None
        _check_geometry(info.width, info.height, cfg)
        if info.duration > cfg.max_duration_s:
            raise _Reject("validate", "too_long", f"{info.duration:.1f} s > max_duration_s {cfg.max_duration_s}")
        bucket, bh, bw = _bucket(info.height, info.width, cfg)
        try:
            dec = media.decode_clips(vid[1], info, fps=cfg.fps, height=bh, width=bw, clip_frames=cfg.clip_frames,
                                     stride=cfg.clip_stride, max_clips=cfg.max_clips_per_video)
        except media.MediaError as e:
            raise _Reject("decode", e.reason, str(e)) from None
        finally:
            timing["decode"] += time.perf_counter() - t0
        if not dec.clips:
            raise _Reject("validate", "too_short", f"{dec.output_frames} frames at {cfg.fps:g} fps "
                                                   f"< one clip of {cfg.clip_frames}")
        until = dec.starts[-1] + cfg.clip_seconds
        audio = _audio_source(sample, vid[1], cfg, timing, until) if cfg.audio else None
        if audio is None and cfg.require_audio:
            raise _Reject("audio", "no_audio", "no audio file and no audio track")
        for c, (frames, src, start) in enumerate(zip(dec.clips, dec.source_indices, dec.starts)):
            meta: dict[str, Any] = {"bucket": bucket, "is_image": False, "clip_index": c,
                                    "source_width": info.width, "source_height": info.height,
                                    "source_fps": round(dec.source_fps, 6), "has_caption": caption is not None,
                                    "has_audio": audio is not None}
            wave = None
            if audio is not None:
                wave, pad = _slice_audio(audio[0], audio[1], start, cfg.audio_samples, cfg.sample_rate)
                meta["audio_pad"] = int(pad)
                meta["audio_origin"] = audio[2]
            lin = Lineage(source_shard=source_shard, source_sha256=source_sha256, sample_key=sample.key,
                          clip_start_s=float(round(start, 6)), frame_indices=tuple(src), fps=float(cfg.fps))
            items.append(ClipItem(f"{stem}/{sample.key}/{c:03d}", sample.key, c, frames, wave, caption, lin, meta))
        return items
    # image: a 1-frame sample
    t0 = time.perf_counter()
    try:
        try:
            w, h = media.image_size(img[1])
        except media.MediaError as e:
            raise _Reject("decode", e.reason, str(e)) from None
        _check_geometry(w, h, cfg)
        if not cfg.images:
            raise _Reject("validate", "no_media", "image samples are disabled (images=false)")
        try:
            pix = media.decode_image(img[1], cfg.max_pixels)
        except media.MediaError as e:
            raise _Reject("decode", e.reason, str(e)) from None
        bucket, bh, bw = _bucket(h, w, cfg)
        frames = media.resize_center_crop(pix[None], bh, bw)
    finally:
        timing["decode"] += time.perf_counter() - t0
    meta = {"bucket": bucket, "is_image": True, "clip_index": 0, "source_width": w, "source_height": h,
            "has_caption": caption is not None, "has_audio": False}
    lin = Lineage(source_shard=source_shard, source_sha256=source_sha256, sample_key=sample.key,
                  clip_start_s=0.0, frame_indices=(0,), fps=0.0)
    return [ClipItem(f"{stem}/{sample.key}/000", sample.key, 0, frames, None, caption, lin, meta)]


def _stem(name: str) -> str:
    from videopoet.schemas.store import shard_stem

    return shard_stem(name)


# ------------------------------------------------------------------------------------- tokenizing
def condition_kinds(item: ClipItem, cfg: PipelineConfig) -> tuple[str, ...]:
    """The COMMIT condition kinds a clip gets (none for images); deterministic per (sample, clip)."""
    if item.meta.get("is_image") or not cfg.conditions:
        return ()
    if cfg.condition_mode == "all":
        return tuple(cfg.conditions)
    import zlib

    k = (zlib.crc32(item.sample_key.encode("utf-8")) + item.clip_index) % len(cfg.conditions)
    return (cfg.conditions[k],)


def _padded_batches(arrs: list[np.ndarray], batch: int) -> Iterator[tuple[np.ndarray, int]]:
    """Fixed-size batches (the last one padded with zeros), so every call has the same shape."""
    for i in range(0, len(arrs), batch):
        chunk = arrs[i:i + batch]
        n = len(chunk)
        if n < batch:
            chunk = chunk + [np.zeros_like(chunk[0])] * (batch - n)
        yield np.stack(chunk), n


def tokenize_items(items: list[ClipItem], toks: Tokenizers, cfg: PipelineConfig,
                   timing: Counter | None = None) -> tuple[list[TokenRecord], dict[str, str]]:
    """Batched tokenization. Returns (records in ``items`` order, {sample_key: error} for samples
    whose tokenization failed - their records are dropped, the caller rejects them)."""
    timing = timing if timing is not None else Counter()
    failed: dict[str, str] = {}
    video: dict[int, np.ndarray] = {}
    conds: dict[tuple[int, str], np.ndarray] = {}
    audio: dict[int, np.ndarray] = {}
    text_ids: dict[int, np.ndarray] = {}

    def run(fn: Callable[[np.ndarray], np.ndarray], idxs: list[int], arrs: list[np.ndarray], out: dict, tag=None):
        for bstart, (batch, n) in zip(range(0, len(idxs), cfg.batch_size), _padded_batches(arrs, cfg.batch_size)):
            sel = idxs[bstart:bstart + n]
            try:
                res = np.asarray(fn(batch))
            except Exception:  # noqa: BLE001 - retry one by one to isolate the culprit
                res = None
            if res is not None:
                for j, i in enumerate(sel):
                    out[i if tag is None else (i, tag)] = res[j]
                continue
            for j, i in enumerate(sel):
                single = np.stack([arrs[bstart + j]] * cfg.batch_size)
                try:
                    out[i if tag is None else (i, tag)] = np.asarray(fn(single))[0]
                except Exception as e:  # noqa: BLE001
                    failed.setdefault(items[i].sample_key, f"{type(e).__name__}: {e}")

    t0 = time.perf_counter()
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, it in enumerate(items):
        by_shape.setdefault(it.shape_key, []).append(i)
    for shape in sorted(by_shape):
        idxs = by_shape[shape]
        run(toks.video.encode, idxs, [items[i].frames for i in idxs], video)
        vid_idxs = [i for i in idxs if not items[i].meta["is_image"]]
        for kind in cfg.conditions:
            want = [i for i in vid_idxs if kind in condition_kinds(items[i], cfg)]
            if want:
                run(lambda b, k=kind: toks.video.encode_condition(b, k), want,
                    [items[i].frames for i in want], conds, tag=kind)
    timing["tokenize_video"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    a_idxs = [i for i, it in enumerate(items) if it.audio is not None]
    if a_idxs:
        run(toks.audio.encode, a_idxs, [items[i].audio for i in a_idxs], audio)
    timing["tokenize_audio"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    for i, it in enumerate(items):
        if it.caption is not None:
            try:
                text_ids[i] = np.asarray(toks.text.token_ids(it.caption), np.int32)
            except Exception as e:  # noqa: BLE001
                failed.setdefault(it.sample_key, f"text: {type(e).__name__}: {e}")
    timing["tokenize_text"] += time.perf_counter() - t0
    records = []
    for i, it in enumerate(items):
        if it.sample_key in failed:
            continue
        c = {k: conds[(i, k)].astype(np.int32) for k in cfg.conditions if (i, k) in conds}
        records.append(TokenRecord(
            key=it.key, lineage=it.lineage, video=video[i].astype(np.int32),
            audio=audio[i].astype(np.int32) if i in audio else None,
            text_ids=text_ids.get(i), caption=it.caption, conditions=c, meta=it.meta))
    return records, failed


# ------------------------------------------------------------------------------------ unit of work
def _reader_limits(cfg: PipelineConfig) -> ReaderLimits:
    return ReaderLimits(max_member_bytes=cfg.max_member_bytes, max_sample_bytes=cfg.max_sample_bytes)


def rejects_bytes(rejects: list[dict[str, str]]) -> bytes:
    """The rejects JSONL file's exact bytes (one sorted-key JSON object per line, UTF-8)."""
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rejects).encode("utf-8")


def write_rejects(path: str, rejects: list[dict[str, str]]) -> None:
    """Write the rejects file atomically (temp + rename locally; one PUT on object stores), so two
    attempts at the same shard (a retry, a speculative duplicate) never interleave."""
    import uuid

    import fsspec

    blob = rejects_bytes(rejects)
    if _is_local(path):
        local = path[len("file://"):] if path.startswith("file://") else path
        os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
        tmp = os.path.join(os.path.dirname(os.path.abspath(local)), f".tmp-{uuid.uuid4().hex[:12]}-{os.path.basename(local)}")
        with open(tmp, "wb") as f:
            f.write(blob)
        os.replace(tmp, local)
    else:
        fs, p = fsspec.core.url_to_fs(path)
        fs.pipe(p, blob)


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


@contextlib.contextmanager
def open_input(input_uri: str) -> Iterator[tuple[str, str, int]]:
    """``(path to read, sha256, size)`` of an input shard. A local shard is hashed and read in place;
    an object-store shard is downloaded once to a temporary file, hashed on the way, and that file is
    read (and removed on exit). An unreadable shard is a :class:`PipelineError`."""
    from videopoet.schemas.shards import sha256_of

    if _is_local(input_uri):
        try:
            sha, size = sha256_of(input_uri)
        except (OSError, ValueError) as e:
            raise PipelineError(f"cannot read input shard {input_uri}: {e}") from None
        yield input_uri, sha, size
        return
    import tempfile

    fd, path = tempfile.mkstemp(suffix=".tar", prefix="videopoet-input-")
    try:
        try:
            with os.fdopen(fd, "wb") as out:
                sha, size = sha256_of(input_uri, 1 << 22, copy_to=out)
        except (OSError, ValueError) as e:
            raise PipelineError(f"cannot read input shard {input_uri}: {e}") from None
        yield path, sha, size
    finally:
        if os.path.exists(path):
            os.unlink(path)


@dataclasses.dataclass
class Window:
    """One tokenization window of a shard: clip items to tokenize together, the read/prepare rejects
    met since the previous window (in input order), and how many samples were read for it."""

    items: list[ClipItem]
    rejects: list[dict[str, str]]
    samples_in: int
    final: bool


def iter_windows(read_from: str, cfg: PipelineConfig, name: str, sha: str, timing: Counter, *,
                 on_sample: Callable[[], None] | None = None) -> Iterator[Window]:
    """Read and prepare one shard's samples, cut into windows of at least ``4 * batch_size`` clip items.

    A window closes as soon as it holds that many items (a sample's clips never split); the last
    window (``final``, possibly empty) holds the rest. Both runners tokenize exactly these windows
    (Beam in :func:`process_shard`, Ray on its actor pool), which is what makes their shards
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
        try:
            items.extend(prepare_sample(s, cfg, name, sha, timing))
        except _Reject as r:
            pending.append(make_reject(name, s.key, r.stage, r.reason, r.message))
            continue
        if len(items) >= limit:
            yield Window(items, pending, read, final=False)
            items, pending, read = [], [], 0
    yield Window(items, pending, read, final=True)


def process_shard(input_uri: str, cfg: PipelineConfig, toks: Tokenizers, work, *,
                  on_sample: Callable[[], None] | None = None) -> dict[str, Any]:
    """Tokenize one input shard into its output shard + rejects file and mark it done in ``work``.

    Resumable: a shard already marked done is skipped (returns ``{"input_name", "skipped": True}``;
    its marker is in ``work.done_shards()``). Deterministic:
    records follow the input order; batches have a fixed size. Returns the done marker's stats plus
    ``timing`` (seconds per stage; not stored in the marker) and ``skipped``.
    """
    from videopoet.schemas.shards import ShardWriter

    name = input_name(input_uri)
    if work.is_done(name):  # one existence check, not a listing: cheap with thousands of shards
        return {"input_name": name, "skipped": True, "timing": {}}
    t_start = time.perf_counter()
    timing: Counter = Counter()
    rejects: list[dict[str, str]] = []
    counts: Counter = Counter()

    def tokenize_window(window: list[ClipItem], writer: ShardWriter) -> None:
        if not window:
            return
        recs, failed = tokenize_items(window, toks, cfg, timing)
        t1 = time.perf_counter()
        for r in recs:
            writer.write(r)
            counts["records"] += 1
            counts["images" if r.meta.get("is_image") else "clips"] += 1
        timing["write"] += time.perf_counter() - t1
        seen = set()
        for it in window:
            if it.sample_key in failed and it.sample_key not in seen:
                seen.add(it.sample_key)
                rejects.append(make_reject(name, it.sample_key, "tokenize", "tokenize_error", failed[it.sample_key]))
            elif it.sample_key not in failed and it.sample_key not in seen:
                seen.add(it.sample_key)
                counts["samples_ok"] += 1

    t0 = time.perf_counter()
    with open_input(input_uri) as (read_from, sha, size):
        timing["hash"] += time.perf_counter() - t0
        writer = ShardWriter(work.shard_path(name))
        try:
            for win in iter_windows(read_from, cfg, name, sha, timing, on_sample=on_sample):
                counts["samples_in"] += win.samples_in
                rejects.extend(win.rejects)
                tokenize_window(win.items, writer)
            out = writer.close()
        except BaseException:
            writer.abort()
            raise

    t0 = time.perf_counter()
    write_rejects(work.rejects_path(name), rejects)
    timing["write"] += time.perf_counter() - t0
    by_reason = dict(sorted(Counter(r["reason"] for r in rejects).items()))
    stats = {
        "input": {"name": name, "size": int(size), "sha256": sha, "uri": input_uri},
        "outputs": [out],
        "samples_in": int(counts["samples_in"]),
        "samples_ok": int(counts["samples_ok"]),
        "records": int(counts["records"]),
        "clips": int(counts["clips"]),
        "images": int(counts["images"]),
        "rejects": {"records": len(rejects), "by_reason": by_reason},
        "tokenizers": toks.fingerprints(),
    }
    if stats["samples_ok"] + len(rejects) != stats["samples_in"]:  # the nothing-lost invariant
        raise PipelineError(f"{name}: {stats['samples_in']} samples in but {stats['samples_ok']} ok + "
                            f"{len(rejects)} rejected (a bug; please report)")
    marker = work.finish_shard(name, stats)
    timing["total"] = time.perf_counter() - t_start
    return {**marker, "skipped": False, "timing": dict(timing)}
