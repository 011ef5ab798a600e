"""Waveform sources for SoundStream training and evaluation.

* :func:`synthetic_waves` - generic deterministic synthetic audio (1-3 harmonic tones with glides,
  envelopes, vibrato, soft noise) that widens the training distribution; ``split="train"`` and
  ``split="heldout"`` draw from disjoint seed streams.
* ``--data synth`` alternates the synthetic corpus's own audio (``videopoet.pipelines.synth.sources``,
  resolved by the CLI so this package never imports the pipelines) with these; ``synth-world`` /
  ``synth-tones`` pick one.
* :func:`file_waves` - a directory, glob or list of wav/flac files (or any fsspec URI), mono-mixed
  and resampled to the config's rate with soxr.
* :func:`media_waves` - audio tracks of videos (mp4/webm/mkv) or of webdataset shards' members
  (:mod:`videopoet.media`, :mod:`videopoet.media.webdataset`).
* :func:`resolve_source` - ``synth-tones[:SPLIT]`` or a glob/dir/URI of audio files or media.
* :func:`crops` - an endless, seeded stream of ``[batch, segment]`` float32 training crops.
"""

from __future__ import annotations

import glob
import io
import os
from collections.abc import Iterable, Iterator

import fsspec
import numpy as np

from videopoet import media
from videopoet.media import webdataset
from videopoet.schemas.errors import VideoPoetError

AUDIO_EXTS = (".wav", ".flac", ".ogg")
MEDIA_EXTS = (".mp4", ".webm", ".mkv", ".mov", ".tar")


class AudioDataError(VideoPoetError, ValueError):
    """Training/eval audio could not be found or read."""


def synth_clip(rng: np.random.Generator, num_samples: int, sample_rate: int = 16000) -> np.ndarray:
    """One synthetic clip: harmonic tones with glides and envelopes, plus a little noise."""
    t = np.arange(num_samples) / sample_rate
    out = np.zeros(num_samples, np.float64)
    for _ in range(int(rng.integers(1, 4))):
        f0 = float(np.exp(rng.uniform(np.log(110.0), np.log(1200.0))))
        f1 = f0 * float(np.exp(rng.uniform(-0.5, 0.5))) if rng.random() < 0.5 else f0
        freq = f0 + (f1 - f0) * t / max(t[-1], 1e-6)
        vib = rng.uniform(0, 0.01) * np.sin(2 * np.pi * rng.uniform(3, 7) * t)
        phase = 2 * np.pi * np.cumsum(freq * (1 + vib)) / sample_rate + rng.uniform(0, 2 * np.pi)
        tone = np.zeros_like(t)
        for h in range(1, int(rng.integers(1, 5)) + 1):
            tone += rng.uniform(0.2, 1.0) / h * np.sin(h * phase)
        # envelope: on/off bursts (objects appear / bounce) or steady with slow tremolo
        if rng.random() < 0.5:
            rate = rng.uniform(1.0, 6.0)
            env = np.clip(np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)), 0, None) ** 0.5
        else:
            env = 0.7 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.2, 2.0) * t + rng.uniform(0, 2 * np.pi))
        out += tone * env * rng.uniform(0.3, 1.0)
    out += rng.normal(0, rng.uniform(0.0, 0.02), num_samples)
    peak = np.max(np.abs(out)) + 1e-9
    return (out / peak * rng.uniform(0.3, 0.9)).astype(np.float32)


def synthetic_waves(
    num_samples: int = 34000,
    sample_rate: int = 16000,
    split: str = "train",
    seed: int = 0,
    count: int | None = None,
) -> Iterator[np.ndarray]:
    """Deterministic stream of synthetic clips; ``heldout`` never overlaps ``train``."""
    if split not in ("train", "heldout"):
        raise AudioDataError(f"unknown synthetic split {split!r} (train | heldout)")
    stream = 0 if split == "train" else 1
    i = 0
    while count is None or i < count:
        rng = np.random.default_rng([seed, stream, i])
        yield synth_clip(rng, num_samples, sample_rate)
        i += 1


def read_audio_file(path: str, sample_rate: int = 16000) -> np.ndarray:
    """wav/flac/ogg (local or fsspec) -> mono float32 at ``sample_rate``."""
    import soundfile as sf
    import soxr

    try:
        with fsspec.open(path, "rb") as f:
            data, sr = sf.read(io.BytesIO(f.read()), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises its own LibsndfileError
        raise AudioDataError(f"cannot read audio {path}: {e}") from None
    wave = data.mean(axis=1)
    if sr != sample_rate:
        wave = soxr.resample(wave, sr, sample_rate).astype(np.float32)
    return wave.astype(np.float32)


def _expand(pattern: str | list[str]) -> list[str]:
    if isinstance(pattern, (list, tuple)):
        out: list[str] = []
        for p in pattern:
            out.extend(_expand(p))
        return out
    if "://" in pattern:
        fs, _, paths = fsspec.get_fs_token_paths(pattern)
        return sorted(fs.unstrip_protocol(p) for p in paths)
    if os.path.isdir(pattern):
        return sorted(
            os.path.join(root, f)
            for root, _, files in os.walk(pattern)
            for f in files
            if f.lower().endswith(AUDIO_EXTS + MEDIA_EXTS)
        )
    return sorted(glob.glob(pattern, recursive=True))


def file_waves(paths: str | list[str], sample_rate: int = 16000) -> Iterator[np.ndarray]:
    """Waveforms of audio files (and the audio tracks of media files) in sorted path order."""
    files = _expand(paths)
    if not files:
        raise AudioDataError(f"no audio files match {paths!r}")
    for p in files:
        if p.lower().endswith(AUDIO_EXTS):
            yield read_audio_file(p, sample_rate)
        elif p.lower().endswith(MEDIA_EXTS):
            yield from media_waves([p], sample_rate)


def media_waves(paths: list[str], sample_rate: int = 16000) -> Iterator[np.ndarray]:
    """Audio tracks of videos, and audio / video members of webdataset shards (the hardened reader; refused
    samples and undecodable members of a shard are skipped, as the video readers skip them)."""
    for p in paths:
        if p.endswith(".tar"):
            for sample in webdataset.iter_samples(p):
                if not isinstance(sample, webdataset.Sample):
                    continue
                for ext, blob in sorted(sample.members.items()):
                    try:
                        w = _member_wave(ext, blob, sample_rate)
                    except media.MediaError:
                        continue
                    if w is not None:
                        yield w
        else:
            with fsspec.open(p, "rb") as f:
                w = _track(f.read(), sample_rate)
            if w is not None:
                yield w


def _member_wave(ext: str, blob: bytes, sample_rate: int) -> np.ndarray | None:
    if f".{ext}" in AUDIO_EXTS:
        return _decode_bytes(blob, sample_rate)
    if f".{ext}" in MEDIA_EXTS[:-1]:
        return _track(blob, sample_rate)
    return None


def _decode_bytes(blob: bytes, sample_rate: int) -> np.ndarray:
    out = media.decode_audio(blob, sample_rate=sample_rate)
    return _as_mono(out)


def _track(blob: bytes, sample_rate: int):
    out = media.extract_audio_track(blob, sample_rate=sample_rate)
    return None if out is None else _as_mono(out)


def _as_mono(out) -> np.ndarray:
    wave = out[0] if isinstance(out, tuple) else out
    wave = np.asarray(wave, np.float32)
    return wave.mean(axis=-1) if wave.ndim == 2 and wave.shape[-1] <= 8 else wave.reshape(-1)


def resolve_source(data: str, sample_rate: int, num_samples: int, seed: int, split: str = "train"):
    """``--data`` -> a (finite or endless) iterator of mono waveforms: ``synth-tones[:SPLIT]`` (SPLIT train |
    heldout), else a directory, glob, or fsspec URI of wav/flac files, mp4/webm/mkv files or webdataset
    .tar shards. (``synth`` / ``synth-world``, the synthetic corpus's audio, are resolved by the CLI.)"""
    kind, _, sp = data.partition(":")
    if kind == "synth-tones":
        return synthetic_waves(num_samples, sample_rate, split=sp or split, seed=seed)
    return file_waves(data, sample_rate)


def crops(
    waves: Iterable[np.ndarray],
    batch: int,
    segment: int,
    seed: int = 0,
    pool: int = 256,
    cycle: bool = True,
) -> Iterator[np.ndarray]:
    """Endless seeded stream of ``[batch, segment]`` random crops from a pool of waveforms.

    Waveforms shorter than ``segment`` are zero-padded. A finite source is cached (up to ``pool``
    clips held at once, refreshed as new clips arrive) and cycled.
    """
    rng = np.random.default_rng(seed)
    it = iter(waves)
    buf: list[np.ndarray] = []
    exhausted = False
    while True:
        # keep the pool fed: one new clip per batch once full
        want = pool if len(buf) < pool else len(buf) + 1
        while not exhausted and len(buf) < want:
            try:
                w = np.asarray(next(it), np.float32).reshape(-1)
            except StopIteration:
                exhausted = True
                break
            if w.size == 0:
                continue
            if len(buf) >= pool:
                buf[int(rng.integers(len(buf)))] = w
                break
            buf.append(w)
        if not buf:
            raise AudioDataError("no audio in the training data")
        out = np.zeros((batch, segment), np.float32)
        for b in range(batch):
            w = buf[int(rng.integers(len(buf)))]
            if w.size <= segment:
                out[b, : w.size] = w
            else:
                s = int(rng.integers(w.size - segment + 1))
                out[b] = w[s : s + segment]
        yield out
        if exhausted and not cycle:
            return
