"""MAGVIT-v2 tokenizer config and presets (tiny / small / paper)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class MagvitConfig:
    """Causal 3D CNN tokenizer with lookup-free quantization (LFQ)."""

    name: str = "magvit2-small"
    height: int = 64  # training / default input resolution (any multiple of the spatial factor works)
    width: int = 64
    frames: int = 17  # 1 + 4k (causal layout)
    lfq_bits: int = 10  # codebook size 2**lfq_bits
    temporal_downsample: int = 4  # 17 frames -> 5 latent frames
    spatial_downsample: int = 8  # 128 -> 16

    @property
    def codebook_size(self) -> int:
        return 2**self.lfq_bits

    def validate(self) -> None:
        if not 1 <= self.lfq_bits <= 24:
            raise ValueError(f"lfq_bits must be in [1, 24], got {self.lfq_bits}")
        if (self.frames - 1) % self.temporal_downsample:
            raise ValueError(f"frames must be 1 + {self.temporal_downsample}k, got {self.frames}")
        for dim in ("height", "width"):
            if getattr(self, dim) % self.spatial_downsample:
                raise ValueError(f"{dim} must be a multiple of {self.spatial_downsample}")


PRESETS = {
    "tiny": lambda: MagvitConfig(name="magvit2-tiny", height=32, width=32, frames=5, lfq_bits=6),
    "small": lambda: MagvitConfig(name="magvit2-small", height=64, width=64, frames=17, lfq_bits=10),
    "paper": lambda: MagvitConfig(name="magvit2-paper", height=128, width=128, frames=17, lfq_bits=18),
}
