"""SoundStream audio tokenizer config and presets (tiny / small / paper).

The vocabulary (``videopoet.schemas.vocab``) reads ``codebook_size`` and ``levels_used`` from here.

Frame rule: with hop ``prod(strides)`` (320 at 16 kHz -> 50 Hz) an input of ``N`` samples gives
``frames = N // hop`` frames; the trailing ``N % hop`` samples (< one hop, 5 ms for a 2.125 s clip)
are dropped before the encoder, so 34000 samples -> 33920 -> exactly 106 frames, and decoding
106 frames gives 33920 samples. Every strided stage then divides its length exactly.
"""

from __future__ import annotations

import dataclasses
import math

from videopoet.schemas.config import load_config


@dataclasses.dataclass(frozen=True)
class SoundStreamConfig:
    """16 kHz mono codec: strided conv encoder/decoder + residual VQ.

    Model: ``Conv(channels) -> [ResUnit(d=1,3,9) ; Conv(stride s, kernel 2s)] per stride -> Conv(code_dim)``,
    the decoder mirrors it with transposed convs; ELU activations, non-causal ("same") padding.

    Quantizer: residual VQ with ``num_quantizers`` levels of ``codebook_size`` codes of ``code_dim``.
    Codebooks are *not* trained by gradients: they are exponential-moving-average k-means updates
    (decay ``ema_decay``), and a code whose EMA usage falls below ``dead_code_fraction`` times the
    uniform share of a batch is re-seeded from a random vector of the current batch's residuals.
    ``code_dim`` is small (8) on purpose: with 64-dim codes the nearest-code search suffered from
    hubness (a few codes near the mean won almost every frame; 1.3% of level-0 codes used on held-out
    audio after 250 steps), with 8-dim codes ~60% of a 200-frame batch's frames hit distinct codes from
    the first steps on (the same reason DAC looks codes up in 8 dimensions).
    Quantizer dropout (training only): each example keeps the first ``n ~ U{1..num_quantizers}`` levels
    with probability ``quantizer_dropout``, else all of them.
    """

    name: str = "soundstream-small"
    sample_rate: int = 16000
    strides: tuple[int, ...] = (2, 4, 5, 8)  # hop 320 -> 50 Hz frames
    codebook_size: int = 1024
    num_quantizers: int = 4  # RVQ levels trained
    levels_used: int = 4  # levels the LM models (VideoPoet: the first 4)
    # architecture
    channels: int = 16  # first conv width; doubled at every strided stage
    max_channels: int = 512
    code_dim: int = 8
    res_dilations: tuple[int, ...] = (1, 3, 9)
    kernel_size: int = 7
    # quantizer
    ema_decay: float = 0.99
    dead_code_fraction: float = 0.1
    quantizer_dropout: float = 0.5
    commitment_weight: float = 0.25
    # training
    seed: int = 0
    segment_samples: int = 8000  # 0.5 s crops; must be a multiple of hop
    batch_size: int = 16
    learning_rate: float = 1e-3
    b1: float = 0.9
    b2: float = 0.99
    warmup_steps: int = 100
    lr_decay_steps: int = 0  # cosine decay to 10% of learning_rate by this step; 0 = constant after warm-up
    grad_clip: float = 1.0
    waveform_weight: float = 10.0  # L1 on samples
    stft_weight: float = 1.0  # multi-scale log+linear magnitude
    sisnr_weight: float = 0.1  # minus SI-SNR in dB
    stft_scales: tuple[int, ...] = (2048, 1024, 512, 256, 128, 64)
    use_discriminator: bool = False
    adv_weight: float = 0.1
    feat_weight: float = 1.0
    disc_channels: int = 16
    disc_start_step: int = 1000

    @property
    def hop(self) -> int:
        return math.prod(self.strides)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    @property
    def bitrate(self) -> float:
        """Bits per second of the ``levels_used`` levels the LM sees."""
        return self.levels_used * math.log2(self.codebook_size) * self.frame_rate

    def frames_for(self, num_samples: int) -> int:
        return num_samples // self.hop

    def validate(self) -> None:
        if not 1 <= self.levels_used <= self.num_quantizers:
            raise ValueError("levels_used must be in [1, num_quantizers]")
        if self.codebook_size < 2:
            raise ValueError("codebook_size must be >= 2")
        if not self.strides or any(s < 1 for s in self.strides):
            raise ValueError("strides must be a non-empty list of positive integers")
        if self.sample_rate <= 0:
            raise ValueError("sample_rate must be positive")
        for name in ("channels", "max_channels", "code_dim", "kernel_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError("ema_decay must lie in (0, 1)")
        if not 0.0 <= self.quantizer_dropout <= 1.0:
            raise ValueError("quantizer_dropout must lie in [0, 1]")
        if self.dead_code_fraction < 0:
            raise ValueError("dead_code_fraction must be >= 0")
        if self.segment_samples < self.hop or self.segment_samples % self.hop:
            raise ValueError(f"segment_samples must be a positive multiple of hop ({self.hop})")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be positive")


PRESETS = {
    "tiny": lambda: SoundStreamConfig(
        name="soundstream-tiny",
        codebook_size=64,
        num_quantizers=2,
        levels_used=2,
        channels=4,
        max_channels=32,
        code_dim=16,
        res_dilations=(1,),
        batch_size=4,
        segment_samples=3200,
        stft_scales=(256, 128, 64),
        warmup_steps=5,
        learning_rate=3e-3,
        disc_channels=4,
        disc_start_step=0,
    ),
    "small": lambda: SoundStreamConfig(
        name="soundstream-small",
        codebook_size=1024,
        num_quantizers=4,
        levels_used=4,
        channels=16,
        max_channels=128,
        code_dim=8,
        batch_size=8,
    ),
    "paper": lambda: SoundStreamConfig(
        name="soundstream-paper",
        codebook_size=1024,
        num_quantizers=12,
        levels_used=4,
        channels=32,
        max_channels=512,
        code_dim=8,
        segment_samples=16000,
        batch_size=32,
        learning_rate=3e-4,
        use_discriminator=True,
        disc_channels=32,
        disc_start_step=5000,
    ),
}


def load_soundstream_config(source=None, overrides=()) -> SoundStreamConfig:
    """Preset name, YAML path or mapping (+ ``key=value`` overrides) -> validated config."""
    return load_config(SoundStreamConfig, source, overrides, PRESETS)
