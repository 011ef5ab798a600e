"""SoundStream audio tokenizer config and presets (tiny / small / paper)."""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class SoundStreamConfig:
    """16 kHz mono codec: strided conv encoder/decoder + residual VQ."""

    name: str = "soundstream-small"
    sample_rate: int = 16000
    strides: tuple[int, ...] = (2, 4, 5, 8)  # hop 320 -> 50 Hz frames
    codebook_size: int = 1024
    num_quantizers: int = 4  # RVQ levels trained
    levels_used: int = 4  # levels the LM models (VideoPoet: the first 4)

    @property
    def hop(self) -> int:
        return math.prod(self.strides)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    def validate(self) -> None:
        if not 1 <= self.levels_used <= self.num_quantizers:
            raise ValueError("levels_used must be in [1, num_quantizers]")
        if self.codebook_size < 2:
            raise ValueError("codebook_size must be >= 2")


PRESETS = {
    "tiny": lambda: SoundStreamConfig(name="soundstream-tiny", codebook_size=64, num_quantizers=2, levels_used=2),
    "small": lambda: SoundStreamConfig(name="soundstream-small", codebook_size=1024, num_quantizers=4, levels_used=4),
    "paper": lambda: SoundStreamConfig(name="soundstream-paper", codebook_size=1024, num_quantizers=12, levels_used=4),
}
