"""Tokenization: the three tokenizers of a job (through ``videopoet.tokenizers.registry``) and
batched tokenization of clip items into TokenRecords.

:func:`load_tokenizers` resolves the config's specs once per process and checks that they fit the
config (bucket sizes, clip length, sample rate) and loads the style conditions' depth model, if
any; :func:`tokenize_items` encodes clips (their COMMIT condition variants, and their flow / depth
renders with ``style_conditions``, the 2x super-resolution frames) in batches of one stream per
array shape, the last one padded to the tokenizer's call size, so every tokenizer call has the same
shape, a clip's tokens do not depend on which other clips share its batch, and a window pads fewer
rows per shape than one call holds; a batch that fails is retried item by item to isolate the
sample at fault.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from videopoet.media import style
from videopoet.pipelines.config import PipelineConfig
from videopoet.pipelines.errors import PipelineError
from videopoet.pipelines.prepare import ClipItem
from videopoet.schemas.record import STYLE_STREAMS, SUPERRES_STREAM, SUPERRES_UPSAMPLED_STREAM, TokenRecord
from videopoet.schemas.tokenizer_ref import MODALITY_KINDS, TokenizerRef
from videopoet.tokenizers import registry

__all__ = [
    "MODALITIES",
    "Tokenizers",
    "check_style",
    "condition_kinds",
    "load_tokenizers",
    "tokenize_items",
    "warmup_tokenizers",
]


@dataclasses.dataclass
class Tokenizers:
    """The three tokenizers of a job and their references (modality -> ``TokenizerRef``)."""

    video: Any
    audio: Any
    text: Any
    refs: dict[str, TokenizerRef]

    def lineage(self) -> dict[str, dict[str, Any]]:
        """The manifest's ``lineage.tokenizers``: each reference plus the tokenizer's config."""
        from videopoet.schemas.config import to_dict

        return {m: {**self.refs[m].to_dict(), "config": to_dict(getattr(self, m).config)} for m in MODALITIES}

    def fingerprints(self) -> dict[str, str]:
        return {m: self.refs[m].fingerprint for m in MODALITIES}


MODALITIES = ("video", "audio", "text")
# XLA:CPU encodes a clip faster, and with a quarter of the temporaries, in calls of 2 clips than in
# calls of 8 (BENCHMARKS.md, "Ray vs Beam"); the temporaries grow with a call's pixels, so a call also
# holds at most the pixels of two 17-frame 64x64 clips (larger clips go one per call, at the same
# speed per clip). The tokens do not depend on the call size. On an accelerator the video tokenizer
# keeps its own (larger) call size.
CPU_VIDEO_CALL_CLIPS = 2
CPU_VIDEO_CALL_PIXELS = 2 * 17 * 64 * 64
_TOKENIZER_CACHE: dict[tuple[str, str, str], Tokenizers] = {}
_TOKENIZER_LOCK = threading.Lock()


def load_tokenizers(cfg: PipelineConfig) -> Tokenizers:
    """The three tokenizers of ``cfg``, loaded once per process (cached by their specs)."""
    key = (cfg.video_tokenizer, cfg.audio_tokenizer, cfg.text_tokenizer)
    with _TOKENIZER_LOCK:
        if key not in _TOKENIZER_CACHE:
            loaded = {m: registry.resolve(spec, MODALITY_KINDS[m]) for m, spec in zip(MODALITIES, key, strict=True)}
            toks = Tokenizers(*(loaded[m][0] for m in MODALITIES), refs={m: loaded[m][1] for m in MODALITIES})
            vt = toks.video.config
            for h, w in cfg.buckets().values():
                if h % vt.spatial_downsample or w % vt.spatial_downsample:
                    raise PipelineError(
                        f"bucket {w}x{h} is not a multiple of the video tokenizer's "
                        f"spatial factor {vt.spatial_downsample}"
                    )
            if (cfg.clip_frames - 1) % vt.temporal_downsample:
                raise PipelineError(f"clip_frames {cfg.clip_frames} is not 1 + {vt.temporal_downsample}k")
            if toks.audio.config.sample_rate != cfg.sample_rate:
                raise PipelineError(
                    f"sample_rate {cfg.sample_rate} differs from the audio tokenizer's {toks.audio.config.sample_rate}"
                )
            import jax

            if jax.default_backend() == "cpu":
                toks.video.max_batch = min(toks.video.max_batch, CPU_VIDEO_CALL_CLIPS)
                toks.video.max_call_pixels = CPU_VIDEO_CALL_PIXELS
            _TOKENIZER_CACHE[key] = toks
    check_style(cfg)
    return _TOKENIZER_CACHE[key]


def check_style(cfg: PipelineConfig) -> None:
    """Fail the job up front (one line) when its style conditions cannot be computed: OpenCV missing,
    or a depth model that does not load or has the wrong interface (loaded once per process)."""
    if not cfg.style_conditions:
        return
    try:
        style.optical_flow(np.zeros((2, 8, 8, 3), np.uint8))
        if "depth" in cfg.style_conditions:
            style.load_depth_model(cfg.depth_model)
    except style.StyleError as e:
        raise PipelineError(str(e)) from None


def warmup_tokenizers(toks: Tokenizers, cfg: PipelineConfig) -> float:
    """Compile every shape the pipeline feeds the tokenizers (each bucket's clip and image, the
    audio clip) so the first shards do not pay XLA compilation; returns the seconds spent."""
    t0 = time.perf_counter()
    for h, w in cfg.buckets().values():
        for t in (cfg.clip_frames, 1) if cfg.images else (cfg.clip_frames,):
            codes = toks.video.encode(np.zeros((cfg.batch_size, t, h, w, 3), np.uint8))
            if cfg.sr_pairs and t == cfg.clip_frames:  # the upsampled guess decodes the clip's codes
                toks.video.decode(codes)
        if cfg.sr_pairs:
            toks.video.encode(np.zeros((cfg.batch_size, cfg.clip_frames, 2 * h, 2 * w, 3), np.uint8))
    if cfg.audio:
        toks.audio.encode(np.zeros((cfg.batch_size, cfg.audio_samples), np.float32))
    return time.perf_counter() - t0


def condition_kinds(item: ClipItem, cfg: PipelineConfig) -> tuple[str, ...]:
    """The COMMIT condition kinds a clip gets (none for images); deterministic per (sample, clip)."""
    if item.meta.get("is_image") or not cfg.conditions:
        return ()
    if cfg.condition_mode == "all":
        return tuple(cfg.conditions)
    import zlib

    k = (zlib.crc32(item.sample_key.encode("utf-8")) + item.clip_index) % len(cfg.conditions)
    return (cfg.conditions[k],)


def padded_batches(arrs: list[np.ndarray], batch: int, quantum: int | None = None) -> Iterator[tuple[np.ndarray, int]]:
    """Batches of ``batch`` rows; the last one padded with zero rows to a multiple of ``quantum``
    (default: to ``batch``). A tokenizer that encodes in calls of ``quantum`` rows then sees only
    calls of one shape, and pays for at most ``quantum - 1`` padding rows per stream."""
    quantum = batch if quantum is None else quantum
    if not 1 <= quantum <= batch:
        raise ValueError(f"quantum {quantum} must lie in [1, batch={batch}]")
    for i in range(0, len(arrs), batch):
        chunk = arrs[i : i + batch]
        n = len(chunk)
        rows = -(-n // quantum) * quantum
        if n < rows:
            chunk = chunk + [np.zeros_like(chunk[0])] * (rows - n)
        yield np.stack(chunk), n


def video_quantum(toks: Tokenizers, cfg: PipelineConfig, clip_shape: tuple[int, ...]) -> int:
    """Rows a stream of ``clip_shape`` ([T, H, W, 3]) clips is padded to: the video tokenizer's call
    size for that shape (at least 1), at most the pipeline's batch (validated >= 1)."""
    return min(cfg.batch_size, toks.video.call_size(*clip_shape[:3]))


def upsampled_codes(video_tokenizer, codes: np.ndarray) -> np.ndarray:
    """codes int32 [B, T', H', W'] -> the codes [B, T', 2H', 2W'] of their decoded clips upsampled 2x
    (bicubic): what upsampling alone gives in token space (``SUPERRES_UPSAMPLED_STREAM``; the
    super-resolution cascade computes it the same way from the LM's codes)."""
    from videopoet import media

    frames = video_tokenizer.decode(np.asarray(codes, np.int32))
    return video_tokenizer.encode(np.stack([media.upsample_bicubic(f, 2) for f in frames]))


def tokenize_items(
    items: list[ClipItem], toks: Tokenizers, cfg: PipelineConfig, timing: Counter | None = None
) -> tuple[list[TokenRecord], dict[str, str]]:
    """Batched tokenization. Returns (records in ``items`` order, {sample_key: error} for samples
    whose tokenization failed - their records are dropped, the caller rejects them).

    Every clip the video tokenizer encodes in the window - the items' frames, their COMMIT condition
    clips and style renders, the 2x super-resolution frames - joins one stream per array shape, so a
    window pads at most one batch per shape (not one per shape and per stream), and only up to the
    video tokenizer's call size for that shape (``call_size``: on a CPU 2 clips of 17x64x64, 1 of
    anything larger), not to ``batch_size``. A super-resolution pair's upsampled stream is made after
    them, from the clip's own tokens (decode, bicubic 2x, encode). ``timing``
    also counts the tokenizer rows: ``encoded_rows`` (real clips and audio windows) and
    ``padded_rows`` (the zero rows that filled the last batch of a stream)."""
    timing = timing if timing is not None else Counter()
    failed: dict[str, str] = {}
    video: dict[int, np.ndarray] = {}
    conds: dict[tuple[int, str], np.ndarray] = {}
    video_2x: dict[int, np.ndarray] = {}
    upsampled: dict[int, np.ndarray] = {}
    styled: dict[tuple[int, str], np.ndarray] = {}
    audio: dict[int, np.ndarray] = {}
    text_ids: dict[int, np.ndarray] = {}

    def run(
        fn: Callable[[np.ndarray], np.ndarray], jobs: list[tuple[int, np.ndarray, dict, Any]], quantum: int
    ) -> None:
        """Encode ``jobs`` ((item index, array, result dict, result key), all one shape) in batches
        padded to a multiple of ``quantum`` rows; a failed batch is retried row by row to find the
        sample at fault."""
        arrs = [a for _, a, _, _ in jobs]
        for bstart, (batch, n) in zip(
            range(0, len(jobs), cfg.batch_size), padded_batches(arrs, cfg.batch_size, quantum), strict=False
        ):
            timing["encoded_rows"] += n
            timing["padded_rows"] += len(batch) - n
            sel = jobs[bstart : bstart + n]
            try:
                res = np.asarray(fn(batch))
            except Exception:  # noqa: BLE001 - retry one by one to isolate the culprit
                res = None
            if res is not None:
                for j, (_, _, out, key) in enumerate(sel):
                    out[key] = res[j]
                continue
            for i, arr, out, key in sel:
                single = np.stack([arr] * quantum)
                try:
                    out[key] = np.asarray(fn(single))[0]
                except Exception as e:  # noqa: BLE001
                    failed.setdefault(items[i].sample_key, f"{type(e).__name__}: {e}")

    renders: dict[int, dict[str, np.ndarray]] = {}  # video item -> style kind -> uint8 [T, H, W, 3]
    if cfg.style_conditions:
        t0 = time.perf_counter()
        for i, it in enumerate(items):
            if it.meta["is_image"]:
                continue
            try:
                renders[i] = style.style_videos(it.frames, cfg.style_conditions, cfg.depth_model)
            except style.StyleError as e:
                failed.setdefault(it.sample_key, f"style: {e}")
        timing["style"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    streams: dict[tuple[int, ...], list[tuple[int, np.ndarray, dict, Any]]] = {}  # array shape -> jobs

    def add(i: int, arr: np.ndarray, out: dict, key) -> None:
        streams.setdefault(tuple(np.shape(arr)), []).append((i, arr, out, key))

    for i, it in enumerate(items):
        add(i, it.frames, video, i)
        if it.frames_2x is not None:
            add(i, it.frames_2x, video_2x, i)
        for kind in condition_kinds(it, cfg):
            try:
                add(i, toks.video.condition_clip(it.frames[None], kind)[0], conds, (i, kind))
            except Exception as e:  # noqa: BLE001 - the sample is rejected, the window goes on
                failed.setdefault(it.sample_key, f"{type(e).__name__}: {e}")
        for kind in cfg.style_conditions:
            if i in renders:
                add(i, renders[i][kind], styled, (i, kind))
    # pad to the video tokenizer's call size for the shape, not to the whole batch: padding rows
    # beyond the last call would be encoded for nothing
    for shape in sorted(streams):
        run(toks.video.encode, streams[shape], video_quantum(toks, cfg, shape))
    # super-resolution pairs: the bucket-size tokens decoded, bicubic-upsampled 2x and encoded again
    upsampled_jobs: dict[tuple[int, ...], list[tuple[int, np.ndarray, dict, Any]]] = {}
    for i in video_2x:
        if i in video:
            upsampled_jobs.setdefault(tuple(video[i].shape), []).append((i, video[i], upsampled, i))
    for jobs in (upsampled_jobs[shape] for shape in sorted(upsampled_jobs)):
        clip_2x = items[jobs[0][0]].frames_2x.shape  # the encode of the 2x clip is the costly call
        run(lambda codes: upsampled_codes(toks.video, codes), jobs, video_quantum(toks, cfg, clip_2x))
    timing["tokenize_video"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    a_jobs = [(i, it.audio, audio, i) for i, it in enumerate(items) if it.audio is not None]
    if a_jobs:
        run(toks.audio.encode, a_jobs, cfg.batch_size)  # one call per batch
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
        if i in video_2x:  # (a failed 2x encode made its sample a tokenize reject above)
            c[SUPERRES_STREAM] = video_2x[i].astype(np.int32)
            c[SUPERRES_UPSAMPLED_STREAM] = upsampled[i].astype(np.int32)
        for kind in cfg.style_conditions:
            if (i, kind) in styled:
                c[STYLE_STREAMS[kind]] = styled[(i, kind)].astype(np.int32)
        records.append(
            TokenRecord(
                key=it.key,
                lineage=it.lineage,
                video=video[i].astype(np.int32),
                audio=audio[i].astype(np.int32) if i in audio else None,
                text_ids=text_ids.get(i),
                caption=it.caption,
                conditions=c,
                meta=it.meta,
            )
        )
    return records, failed
