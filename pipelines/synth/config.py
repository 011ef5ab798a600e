"""``SynthConfig``: how the synthetic corpus looks (frame sizes, rate, length, codecs).

Presets (``PRESETS``):

* ``tiny``  - tests: 64x64 / 80x64 frames (portrait 64x112), 41 frames at 8 fps (5.125 s).
* ``small`` - the default: 160x128 / 128x128 frames (portrait 128x224), 72 frames at 12 fps (6 s,
  so resampling to 8 fps still leaves 48 >= 41 frames).
* ``paper`` - 320x256 / 256x256 frames (portrait 256x448), 144 frames at 24 fps (6 s).

Sizes are ``(width, height)``. All three presets write 16 kHz mono AAC, the rate SoundStream uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from videopoet.schemas.config import load_config

__all__ = ["PRESETS", "SynthConfig", "load_synth_config"]

# Sample rates the FFmpeg AAC encoder accepts.
AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


@dataclass(frozen=True)
class SynthConfig:
    # (width, height) buckets for landscape / square samples, drawn uniformly.
    sizes: tuple[tuple[int, int], ...] = ((160, 128), (128, 128))
    # (width, height) of portrait samples, drawn with probability ``portrait_fraction``.
    portrait_size: tuple[int, int] = (128, 224)
    portrait_fraction: float = 0.2
    fps: int = 12
    frames: int = 72  # frames per video clip; duration = frames / fps
    audio_rate: int = 16000
    audio_bitrate: int = 48000
    crf: int = 20
    x264_preset: str = "veryfast"
    keyint: int = 12  # GOP length in frames (every keyint-th frame is a keyframe)
    jpeg_quality: int = 90
    two_object_fraction: float = 0.35  # scenes with two objects instead of one
    bounce_fraction: float = 0.4  # objects that bounce instead of moving in one direction
    corrupt_per_kind: int = 1  # --with-corrupt: samples per corruption kind

    @property
    def seconds(self) -> float:
        return self.frames / self.fps

    def validate(self) -> None:
        if not self.sizes:
            raise ValueError("sizes: give at least one (width, height)")
        for i, (w, h) in enumerate((*self.sizes, self.portrait_size)):
            where = f"sizes[{i}]" if i < len(self.sizes) else "portrait_size"
            if w < 16 or h < 16 or w % 2 or h % 2:
                raise ValueError(f"{where}: width and height must be even and >= 16, got {w}x{h}")
        pw, ph = self.portrait_size
        if ph <= pw:
            raise ValueError(f"portrait_size: height must exceed width, got {pw}x{ph}")
        for name in ("portrait_fraction", "two_object_fraction", "bounce_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name}: must lie in [0, 1], got {v}")
        if not 1 <= self.fps <= 120:
            raise ValueError(f"fps: must lie in [1, 120], got {self.fps}")
        if self.frames < 1:
            raise ValueError(f"frames: must be >= 1, got {self.frames}")
        if self.audio_rate not in AAC_RATES:
            raise ValueError(f"audio_rate: must be one of {list(AAC_RATES)}, got {self.audio_rate}")
        if not 8000 <= self.audio_bitrate <= 320000:
            raise ValueError(f"audio_bitrate: must lie in [8000, 320000], got {self.audio_bitrate}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf: must lie in [0, 51], got {self.crf}")
        if self.x264_preset not in X264_PRESETS:
            raise ValueError(f"x264_preset: must be one of {list(X264_PRESETS)}, got {self.x264_preset!r}")
        if self.keyint < 1:
            raise ValueError(f"keyint: must be >= 1, got {self.keyint}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality: must lie in [1, 100], got {self.jpeg_quality}")
        if self.corrupt_per_kind < 0:
            raise ValueError(f"corrupt_per_kind: must be >= 0, got {self.corrupt_per_kind}")


def _tiny() -> SynthConfig:
    return SynthConfig(sizes=((64, 64), (80, 64)), portrait_size=(64, 112), fps=8, frames=41, keyint=8)


def _small() -> SynthConfig:
    return SynthConfig()


def _paper() -> SynthConfig:
    return SynthConfig(
        sizes=((320, 256), (256, 256)),
        portrait_size=(256, 448),
        fps=24,
        frames=144,
        keyint=24,
        crf=18,
        audio_bitrate=64000,
    )


PRESETS: dict[str, Callable[[], SynthConfig]] = {"tiny": _tiny, "small": _small, "paper": _paper}


def load_synth_config(source: str | SynthConfig | dict | None = None, overrides=()) -> SynthConfig:
    """A preset name, YAML path, mapping or instance (default ``small``) plus ``key=value`` overrides."""
    return load_config(SynthConfig, source, list(overrides), PRESETS, default_preset="small")
