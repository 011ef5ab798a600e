"""SoundStream evaluation: SI-SNR, log-mel distance, codebook usage per level, bitrate.

* **SI-SNR** (dB, scale-invariant SNR, both signals made zero-mean): ``10 log10(|s_t|^2 / |e|^2)`` with
  ``s_t = <y, x> x / |x|^2`` and ``e = y - s_t``; averaged over clips (silent clips skipped).
* **mel distance**: mean |log(mel(x) + 1e-5) - log(mel(y) + 1e-5)| over an 80-band, 1024-point,
  hop-256 mel spectrogram (librosa's mel filterbank).
* **usage**: fraction of each level's ``codebook_size`` codes that occur at least once in the
  evaluated codes, plus per-level perplexity ``exp(entropy)`` of the code histogram.
* **bitrate**: ``levels_used x log2(codebook_size) x frame_rate`` bits/s (2000 b/s for VideoPoet's
  4 x 1024 at 50 Hz).

Clips are cut into ``clip_samples`` (default 34000 = 2.125 s) windows; the reference for the metrics is
the first ``frames x hop`` samples of each window (what the codec represents).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from videopoet.tokenizers.soundstream.tokenizer import SoundStreamTokenizer


def si_snr(ref: np.ndarray, est: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Per-row SI-SNR in dB of ``est`` against ``ref`` ([B, N] each)."""
    x = ref - ref.mean(-1, keepdims=True)
    y = est - est.mean(-1, keepdims=True)
    s = (np.sum(x * y, -1, keepdims=True) / (np.sum(x * x, -1, keepdims=True) + eps)) * x
    e = y - s
    return 10 * np.log10((np.sum(s * s, -1) + eps) / (np.sum(e * e, -1) + eps))


_MEL_CACHE: dict = {}


def log_mel(
    wave: np.ndarray, sample_rate: int = 16000, n_fft: int = 1024, hop: int = 256, n_mels: int = 80
) -> np.ndarray:
    import librosa

    key = (sample_rate, n_fft, n_mels)
    if key not in _MEL_CACHE:
        _MEL_CACHE[key] = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels).astype(np.float32)
    fb = _MEL_CACHE[key]
    pad = n_fft // 2
    x = np.pad(wave, [(0, 0)] * (wave.ndim - 1) + [(pad, pad)], mode="reflect")
    n = 1 + (x.shape[-1] - n_fft) // hop
    idx = np.arange(n_fft)[None] + hop * np.arange(n)[:, None]
    win = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    mag = np.abs(np.fft.rfft(x[..., idx] * win, axis=-1))
    return np.log(mag @ fb.T + 1e-5)


def mel_distance(ref: np.ndarray, est: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    return np.mean(np.abs(log_mel(ref, sample_rate) - log_mel(est, sample_rate)), axis=(-1, -2))


def windows(waves: Iterable[np.ndarray], clip_samples: int, max_clips: int) -> np.ndarray:
    out = []
    for w in waves:
        w = np.asarray(w, np.float32).reshape(-1)
        for s in range(0, w.size - clip_samples + 1, clip_samples):
            out.append(w[s : s + clip_samples])
            if len(out) >= max_clips:
                return np.stack(out)
    if not out:
        from videopoet.tokenizers.soundstream.data import AudioDataError

        raise AudioDataError(f"no clip of {clip_samples} samples in the evaluation data")
    return np.stack(out)


def evaluate(
    tok: SoundStreamTokenizer,
    waves: Iterable[np.ndarray],
    *,
    clip_samples: int = 34000,
    max_clips: int = 64,
    batch_size: int = 8,
) -> dict:
    cfg = tok.config
    clips = windows(waves, clip_samples, max_clips)
    n = cfg.frames_for(clip_samples) * cfg.hop
    snr, mel, codes_all = [], [], []
    for i in range(0, len(clips), batch_size):
        x = clips[i : i + batch_size]
        codes = tok.encode(x)
        y = tok.decode(codes)
        ref = x[:, :n]
        loud = np.sqrt(np.mean(ref**2, -1)) > 1e-4
        snr.extend(si_snr(ref, y)[loud].tolist())
        mel.extend(mel_distance(ref, y, cfg.sample_rate).tolist())
        codes_all.append(codes)
    codes = np.concatenate(codes_all)  # [C, L, F]
    usage, perplexity = [], []
    for q in range(codes.shape[1]):
        hist = np.bincount(codes[:, q].reshape(-1), minlength=cfg.codebook_size)
        usage.append(float(np.mean(hist > 0)))
        p = hist / hist.sum()
        p = p[p > 0]
        perplexity.append(float(np.exp(-np.sum(p * np.log(p)))))
    return {
        "clips": int(len(clips)),
        "clip_samples": int(clip_samples),
        "frames_per_clip": int(codes.shape[-1]),
        "levels": int(codes.shape[1]),
        "si_snr_db": float(np.mean(snr)) if snr else float("nan"),
        "si_snr_db_median": float(np.median(snr)) if snr else float("nan"),
        "mel_distance": float(np.mean(mel)),
        "usage_per_level": usage,
        "perplexity_per_level": perplexity,
        "bitrate_bps": float(cfg.bitrate),
        "fingerprint": tok.fingerprint,
        "config": cfg.name,
    }
