"""MAGVIT-v2 tokenizer config and presets (tiny / small / paper).

Architecture (see :mod:`.model`): ``len(channel_mults)`` levels; every level but the last ends in a
spatial 2x downsampler, so ``spatial_downsample == 2 ** (len(channel_mults) - 1)``; the last
``log2(temporal_downsample)`` downsamplers also halve time causally (T = 1 + 4k -> 1 + k).

Presets:

* ``tiny``  - tests (seconds): 32x32, 5 frames, 6 bits, 8 base channels.
* ``small`` - the embedded default, trains on 2 CPU cores: 64x64, 17 frames -> 5x8x8, 10 bits, 32 base
  channels, mults (1, 2, 2, 2) (4.2M parameters); its training fields are stage 1 of the shipped recipe.
* ``paper`` - MAGVIT-v2 / VideoPoet: 128x128, 17 frames -> 5x16x16, 18 bits (2^18 codes),
  128 base channels, mults (1, 2, 2, 4), 4 residual blocks per level.

Training fields (losses, optimizer, schedule) live here too so one YAML describes a run.
"""

from __future__ import annotations

import dataclasses
import math

from videopoet.schemas.config import load_config


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

    # ---- architecture
    channels: int = 32  # base width
    channel_mults: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 1  # per level, encoder and decoder (and the middle blocks at the lowest resolution)
    # residual blocks of each level (encoder level i and decoder level i; len == len(channel_mults)),
    # overriding num_res_blocks there; () = num_res_blocks everywhere. Depth at the low-resolution levels
    # is cheap (a 64-channel block at 8x8 costs 1/64 of one at 64x64) and is where a trained model can be
    # grown without changing what it computes (see model.grow_params)
    level_res_blocks: tuple[int, ...] = ()
    temporal_kernel: int = 3  # causal temporal kernel size (1 = the image-only "2D" model)
    norm_groups: int = 8  # GroupNorm groups (reduced to a divisor of the width where needed)
    adaptive_norm: bool = True  # decoder GroupNorms conditioned on the quantized latent
    lfq_scale: float = 1.0  # codebook values are +-lfq_scale

    # ---- LFQ losses
    entropy_weight: float = 0.1
    entropy_anneal_steps: int = 0  # weight decays linearly from entropy_weight_start to entropy_weight
    entropy_weight_start: float = 0.1
    entropy_temperature: float = 0.01  # softmax temperature of the code distribution
    codebook_entropy_weight: float = 1.0  # gamma on the batch-average (codebook) entropy term
    exact_entropy_max_bits: int = 12  # above this, the codebook entropy uses per-bit marginals
    commitment_weight: float = 0.25

    # ---- reconstruction / GAN / perceptual
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    # L1 / L2 weigh each pixel 1 + moving_weight * |x - the clip's mean over time| (channel mean, x in
    # [-1, 1]): the loss follows what moves (objects) instead of the static background that fills most
    # pixels; images and static pixels keep weight 1. 0 = plain means.
    moving_weight: float = 0.0
    gan_weight: float = 0.0  # 0 disables the discriminator (paper: 0.1 image, 0.3 video)
    gan_start_step: int = 0
    lecam_weight: float = 0.05
    lecam_ema: float = 0.999
    disc_channels: int = 32
    perceptual_weight: float = 0.0  # LPIPS-style VGG-16 distance (see .perceptual); needs perceptual_checkpoint
    # the user's VGG-16 weights: safetensors path(s) / URI(s), comma-separated (trunk [+ LPIPS heads])
    perceptual_checkpoint: str = ""
    perceptual_frames: int = 0  # frames per clip the perceptual term scores (random each step); 0 = all

    # ---- optimisation
    # train the decoder only: the encoder (and so every code it gives) stays bit-for-bit what the run
    # started from (--init-from); a final decoder fine-tune on the reconstruction loss alone
    freeze_encoder: bool = False
    learning_rate: float = 1e-4
    disc_learning_rate: float = 1e-4
    adam_b1: float = 0.0
    adam_b2: float = 0.99
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    warmup_steps: int = 100
    # cosine decay of the learning rate over the last ``lr_decay_steps`` steps of each phase (image,
    # video), down to ``lr_min_ratio`` x the peak; 0 keeps it constant after warm-up
    lr_decay_steps: int = 0
    lr_min_ratio: float = 0.0
    ema_decay: float = 0.999
    batch_size: int = 8
    image_batch_size: int = 16
    image_steps: int = 0  # image-only pre-training steps (temporal_kernel=1), then inflation
    steps: int = 1000  # video steps
    train_frames: int = 0  # video steps train on crops of this many frames (1 + 4k; 0 or >= frames: all)
    # ---- data: batches are drawn (a pure function of seed and step) from a pool held in memory
    pool_clips: int = 256  # clips read from the data into the pool
    image_frames_per_clip: int = 3  # evenly spaced frames of each pooled clip that form the image pool
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200

    @property
    def codebook_size(self) -> int:
        return 2**self.lfq_bits

    @property
    def num_levels(self) -> int:
        return len(self.channel_mults)

    def res_blocks(self, level: int) -> int:
        """Residual blocks at ``level`` (encoder and decoder)."""
        return self.level_res_blocks[level] if self.level_res_blocks else self.num_res_blocks

    @property
    def temporal_levels(self) -> int:
        return int(round(math.log2(self.temporal_downsample)))

    def latent_shape(self, frames: int | None = None, height: int | None = None, width: int | None = None):
        """(T', H', W') for an input of (frames, height, width) (defaults: the config's)."""
        t = self.frames if frames is None else frames
        h = self.height if height is None else height
        w = self.width if width is None else width
        return (1 + (t - 1) // self.temporal_downsample, h // self.spatial_downsample, w // self.spatial_downsample)

    def validate(self) -> None:
        if not 1 <= self.lfq_bits <= 24:
            raise ValueError(f"lfq_bits must be in [1, 24], got {self.lfq_bits}")
        if self.temporal_downsample < 1 or self.temporal_downsample & (self.temporal_downsample - 1):
            raise ValueError(f"temporal_downsample must be a power of 2, got {self.temporal_downsample}")
        if self.frames < 1 or (self.frames - 1) % self.temporal_downsample:
            raise ValueError(f"frames must be 1 + {self.temporal_downsample}k, got {self.frames}")
        if self.train_frames < 0 or (self.train_frames and (self.train_frames - 1) % self.temporal_downsample):
            raise ValueError(f"train_frames must be 0 or 1 + {self.temporal_downsample}k, got {self.train_frames}")
        for dim in ("height", "width"):
            if getattr(self, dim) < 1 or getattr(self, dim) % self.spatial_downsample:
                raise ValueError(f"{dim} must be a multiple of {self.spatial_downsample}")
        if not self.channel_mults or any(m < 1 for m in self.channel_mults):
            raise ValueError(f"channel_mults must be positive, got {self.channel_mults}")
        if self.spatial_downsample != 2 ** (self.num_levels - 1):
            raise ValueError(
                f"spatial_downsample ({self.spatial_downsample}) must equal 2**(len(channel_mults)-1) "
                f"= {2 ** (self.num_levels - 1)}"
            )
        if self.temporal_levels > self.num_levels - 1:
            raise ValueError(
                f"temporal_downsample {self.temporal_downsample} needs more levels than channel_mults gives"
            )
        if self.channels < 1 or self.num_res_blocks < 0 or self.norm_groups < 1:
            raise ValueError("channels, norm_groups must be >= 1 and num_res_blocks >= 0")
        if self.level_res_blocks and (len(self.level_res_blocks) != self.num_levels or min(self.level_res_blocks) < 0):
            raise ValueError(
                f"level_res_blocks must be () or {self.num_levels} counts >= 0 (one per level of "
                f"channel_mults), got {list(self.level_res_blocks)}"
            )
        if self.temporal_kernel < 1:
            raise ValueError(f"temporal_kernel must be >= 1, got {self.temporal_kernel}")
        for name in (
            "entropy_weight",
            "entropy_weight_start",
            "commitment_weight",
            "l1_weight",
            "l2_weight",
            "moving_weight",
            "gan_weight",
            "lecam_weight",
            "perceptual_weight",
            "weight_decay",
            "grad_clip",
            "codebook_entropy_weight",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.perceptual_weight > 0 and not self.perceptual_checkpoint.strip():
            raise ValueError(
                "perceptual_weight > 0 needs perceptual_checkpoint (a safetensors file of VGG-16 "
                "weights, torchvision names; see tokenizers/magvit2/perceptual.py)"
            )
        if self.perceptual_frames < 0:
            raise ValueError(f"perceptual_frames must be >= 0, got {self.perceptual_frames}")
        if self.entropy_temperature <= 0:
            raise ValueError("entropy_temperature must be > 0")
        for name in ("adam_b1", "adam_b2", "ema_decay", "lecam_ema"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.disc_learning_rate <= 0:
            raise ValueError("learning rates must be > 0")
        for name in (
            "batch_size",
            "image_batch_size",
            "log_every",
            "checkpoint_every",
            "pool_clips",
            "image_frames_per_clip",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0.0 <= self.lr_min_ratio <= 1.0:
            raise ValueError(f"lr_min_ratio must lie in [0, 1], got {self.lr_min_ratio}")
        for name in (
            "steps",
            "image_steps",
            "warmup_steps",
            "entropy_anneal_steps",
            "gan_start_step",
            "lr_decay_steps",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


def _tiny() -> MagvitConfig:
    return MagvitConfig(
        name="magvit2-tiny",
        height=32,
        width=32,
        frames=5,
        lfq_bits=6,
        channels=8,
        channel_mults=(1, 2, 2, 2),
        num_res_blocks=1,
        norm_groups=4,
        disc_channels=8,
        batch_size=2,
        image_batch_size=4,
        steps=20,
        warmup_steps=0,
        learning_rate=1e-3,
        disc_learning_rate=1e-3,
        log_every=5,
        checkpoint_every=10,
        ema_decay=0.9,
    )


def _small() -> MagvitConfig:
    # stage 1 of the shipped checkpoint's recipe (tokenizers/magvit2/assets/small/README.md), sized for
    # 2 shared CPU cores: 1600 image steps (cheap: ~0.5 s each), then inflation to the causal video
    # model; stage 2 fine-tunes the video model (`--init-from`, lr 2e-4, 9-frame crops). Adam b1=0.9
    # (not the paper's 0) converges faster in a short run.
    return MagvitConfig(
        name="magvit2-small",
        height=64,
        width=64,
        frames=17,
        lfq_bits=10,
        channels=32,
        channel_mults=(1, 2, 2, 2),
        num_res_blocks=1,
        norm_groups=8,
        learning_rate=1e-3,
        adam_b1=0.9,
        warmup_steps=50,
        batch_size=2,
        image_batch_size=8,
        image_steps=1600,
        steps=0,
        train_frames=9,
        entropy_anneal_steps=300,
        entropy_weight_start=0.1,
        entropy_weight=0.05,
        ema_decay=0.99,
        checkpoint_every=20,
    )


def _paper() -> MagvitConfig:
    return MagvitConfig(
        name="magvit2-paper",
        height=128,
        width=128,
        frames=17,
        lfq_bits=18,
        channels=128,
        channel_mults=(1, 2, 2, 4),
        num_res_blocks=4,
        norm_groups=32,
        gan_weight=0.3,
        lecam_weight=0.05,
        disc_channels=64,
        learning_rate=1e-4,
        disc_learning_rate=1e-4,
        batch_size=256,
        image_batch_size=256,
        warmup_steps=1000,
        image_steps=100_000,
        steps=500_000,
        ema_decay=0.999,
        entropy_anneal_steps=2000,
        entropy_weight_start=0.1,
    )


def image_config(cfg: MagvitConfig) -> MagvitConfig:
    """The image ("2D") model of the image-first stage: 1-frame inputs, temporal kernels of size 1."""
    return dataclasses.replace(cfg, temporal_kernel=1, frames=1)


def phase_of(cfg: MagvitConfig, step: int) -> str:
    """ "image" for the steps of the image-first stage, then "video"."""
    return "image" if step < cfg.image_steps else "video"


PRESETS = {"tiny": _tiny, "small": _small, "paper": _paper}


def load_magvit_config(source=None, overrides=()) -> MagvitConfig:
    """A preset name, YAML path, mapping or instance (default ``small``) plus ``key=value`` overrides."""
    return load_config(MagvitConfig, source, list(overrides), PRESETS, default_preset="small")
