"""Typed configs of the super-resolution transformer: model, sampling, training.

Grids and windows are (T', H', W') in latent tokens (MAGVIT-v2: 17 frames -> 5 latent frames, 8x
spatial downsampling). The paper's cascade (A.5.2) turns the LM's portrait output, 224 high x 128
wide, into 448x256 and then 896x512:

* ``paper_stage1``: 224x128 -> 448x256, high-resolution grid (5, 56, 32), low-resolution grid
  (5, 28, 16); windows (1, 56, 4) vertical, (1, 8, 32) horizontal, (5, 8, 8) temporal; ~1B
  parameters; text guidance 4, low-resolution guidance 1.
* ``paper_stage2``: 448x256 -> 896x512, grid (5, 112, 64); windows (1, 112, 2), (1, 4, 64),
  (5, 8, 8); ~500M parameters; text guidance 8, low-resolution guidance 2.
* ``small``: the shipped tokenizer's vocabulary (2^10 codes) on a (5, 16, 16) grid from (5, 8, 8)
  (64x64 -> 128x128 pixels); trains on 2 CPU cores.
* ``tiny``: tests (seconds): 2^6 codes, grid (5, 8, 8) from (5, 4, 4) (the ``tiny`` pipeline's 32x32
  17-frame clips and their 2x pairs), 3 layers of width 32, the ``tiny`` text encoder.

Both paper stages use the 2^18 LFQ vocabulary, factorized into ``factors`` = 2 groups of 9 bits, so
the embeddings and output heads hold 2 x 512 rows instead of 262,144 (section 3.3). The widths of
the paper stages are derived (the paper gives only the sizes, 1B and 500M): ``tests/test_superres.py``
counts their parameters with ``jax.eval_shape``.

Layer ``i`` uses window ``windows[i % len(windows)]`` for its self-attention over the
high-resolution tokens; its cross-attention to the low-resolution tokens uses the same window scaled
down by ``scale`` (the ratio of the grids), so each window sees the low-resolution tokens under it.

Guidance (:class:`SampleConfig`) is in the Muse form ``(1 + w) * cond - w * uncond`` per condition,
so ``w = 0`` is the conditional model (the LM's sampler writes the same as ``uncond + s * (cond -
uncond)``, ``s = 1 + w``).
"""

from __future__ import annotations

import dataclasses

from videopoet.schemas.config import load_config

Triple = tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class SRModelConfig:
    """The bidirectional super-resolution transformer (:mod:`.model`)."""

    name: str = "small"
    lfq_bits: int = 10  # the tokenizer's codebook is 2**lfq_bits
    factors: int = 2  # token factorization: lfq_bits split into this many equal groups, one head each
    grid: Triple = (5, 16, 16)  # high-resolution latent grid (T', H', W')
    scale: Triple = (1, 2, 2)  # high / low resolution per axis
    windows: tuple[Triple, ...] = ((1, 16, 2), (1, 2, 16), (5, 4, 4))  # vertical, horizontal, temporal
    # add to each high-resolution position a projection of the embedding of the low-resolution token
    # above it (nearest-neighbour upsampled by ``scale``): an aligned path beside the windowed
    # cross-attention, so that where a token sits need not be learnt from the position embeddings
    lowres_skip: bool = False
    # add to each high-resolution position the embedding of the upsampled guess's code there (the
    # pair's SUPERRES_UPSAMPLED_STREAM: the tokens of the decoded low-resolution clip, bicubic 2x):
    # the model then learns what to change in what upsampling gives, instead of every code afresh
    upsampled_input: bool = False
    text_dim: int = 256  # width of the T5 encoder's embeddings
    d_model: int = 128
    layers: int = 6
    heads: int = 4
    head_dim: int = 32
    mlp_dim: int = 384
    mlp: str = "swiglu"  # swiglu | gelu
    norm_eps: float = 1e-6
    init_std: float = 0.02
    dtype: str = "float32"  # compute dtype; parameters are always float32
    attention: str = "auto"  # auto | xla | cudnn | einsum (see videopoet.trainer.model.attend)

    @property
    def codebook_size(self) -> int:
        return 2**self.lfq_bits

    @property
    def factor_bits(self) -> int:
        return self.lfq_bits // self.factors

    @property
    def factor_size(self) -> int:
        """Entries of one factor's vocabulary (512 for 18 bits in 2 factors)."""
        return 2**self.factor_bits

    @property
    def low_grid(self) -> Triple:
        return tuple(g // s for g, s in zip(self.grid, self.scale, strict=True))

    @property
    def tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w

    def low_window(self, window: Triple) -> Triple:
        return tuple(w // s for w, s in zip(window, self.scale, strict=True))

    def layer_window(self, layer: int) -> Triple:
        return self.windows[layer % len(self.windows)]

    def validate(self) -> None:
        for name in ("lfq_bits", "factors", "text_dim", "d_model", "layers", "heads", "head_dim", "mlp_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.lfq_bits % self.factors:
            raise ValueError(f"lfq_bits ({self.lfq_bits}) must be a multiple of factors ({self.factors})")
        if any(s < 1 for s in self.scale) or any(g < 1 for g in self.grid):
            raise ValueError("grid and scale entries must be >= 1")
        for g, s, axis in zip(self.grid, self.scale, "THW", strict=True):
            if g % s:
                raise ValueError(f"grid {axis} ({g}) must be a multiple of scale {axis} ({s})")
        if not self.windows:
            raise ValueError("windows must name at least one window")
        for window in self.windows:
            for g, w, s, axis in zip(self.grid, window, self.scale, "THW", strict=True):
                if w < 1 or g % w or w % s:
                    raise ValueError(
                        f"window {list(window)}: its {axis} size ({w}) must divide the grid's ({g}) and be a "
                        f"multiple of scale {axis} ({s})"
                    )
        if self.mlp not in ("swiglu", "gelu"):
            raise ValueError("mlp must be swiglu or gelu")
        if self.dtype not in ("bfloat16", "float32"):
            raise ValueError("dtype must be bfloat16 or float32")
        if self.attention not in ("auto", "xla", "cudnn", "einsum"):
            raise ValueError("attention must be one of auto, xla, cudnn, einsum")


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """MaskGIT decoding (:mod:`.sample`)."""

    steps: int = 24  # A.5.2
    temperature: float = 1.0  # of the token sampling (0 = the most likely token)
    choice_temperature: float = 4.5  # Gumbel noise on the confidences, annealed to 0 over the steps
    guidance_text: float = 0.0  # w of the text condition (0 = off)
    guidance_lowres: float = 0.0  # w of the low-resolution condition (0 = off)
    # with a model that takes the upsampled guess: start from the guess and decode only this fraction of
    # the positions, those whose guess code the model finds least likely (0 = decode every position)
    refine: float = 0.0

    def validate(self) -> None:
        if self.steps < 1:
            raise ValueError("sample.steps must be >= 1")
        if not 0.0 <= self.refine <= 1.0:
            raise ValueError(f"sample.refine must lie in [0, 1], got {self.refine}")
        for name in ("temperature", "choice_temperature", "guidance_text", "guidance_lowres"):
            if getattr(self, name) < 0:
                raise ValueError(f"sample.{name} must be >= 0")


@dataclasses.dataclass(frozen=True)
class SRTrainConfig:
    """Masked-token training of the super-resolution transformer (:mod:`.train`)."""

    name: str = "small"
    model: SRModelConfig = dataclasses.field(default_factory=SRModelConfig)
    sample: SampleConfig = dataclasses.field(default_factory=SampleConfig)
    text_len: int = 16  # text slots (T5 tokens); captions are cut or padded to it
    # the frozen T5 encoder run on the captions' ids (a text preset or a Hugging Face T5 directory, as
    # the LM's text_encoder); its width must be model.text_dim
    text_encoder: str = "default"
    # noise augmentation: per example a level u ~ U(0, lowres_noise); each low-resolution token is then
    # replaced by a uniformly random code with probability u (the LM's output is not the tokenizer's)
    lowres_noise: float = 0.3
    # condition dropout (classifier-free guidance): per example, independently
    drop_text: float = 0.1
    drop_lowres: float = 0.1
    steps: int = 300
    batch_size: int = 8
    learning_rate: float = 1e-3
    warmup_steps: int = 30
    min_lr_ratio: float = 0.1  # cosine decay to this fraction of the peak
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.95
    grad_clip: float = 1.0
    label_smoothing: float = 0.0
    # with model.upsampled_input: a masked position whose guess code differs from the truth counts
    # 1 + correction_weight times in the loss, so that what the model learns is where upsampling goes
    # wrong rather than to copy the guess
    correction_weight: float = 0.0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    progress: bool = True

    def validate(self) -> None:
        for name in ("text_len", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not self.text_encoder:
            raise ValueError("text_encoder must name a text preset or a T5 directory")
        if self.steps < 0 or self.warmup_steps < 0:
            raise ValueError("steps and warmup_steps must be >= 0")
        for name in ("lowres_noise", "drop_text", "drop_lowres", "min_lr_ratio", "label_smoothing"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1]")
        if self.learning_rate <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("learning_rate must be > 0; weight_decay and grad_clip >= 0")
        for name in ("b1", "b2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in [0, 1)")
        if self.correction_weight < 0:
            raise ValueError("correction_weight must be >= 0")
        if self.correction_weight and not self.model.upsampled_input:
            raise ValueError(
                "correction_weight weighs the positions where the upsampled guess is wrong: set "
                "model.upsampled_input=true"
            )


# --------------------------------------------------------------------------------------- presets
def _model_tiny() -> SRModelConfig:
    return SRModelConfig(
        name="tiny",
        lfq_bits=6,
        grid=(5, 8, 8),
        windows=((1, 8, 2), (1, 2, 8), (5, 4, 4)),
        text_dim=32,
        d_model=32,
        layers=3,
        heads=2,
        head_dim=16,
        mlp_dim=64,
        attention="einsum",
    )


def _model_paper(stage: int) -> SRModelConfig:
    if stage == 1:
        return SRModelConfig(
            name="paper_stage1",
            lfq_bits=18,
            grid=(5, 56, 32),
            windows=((1, 56, 4), (1, 8, 32), (5, 8, 8)),
            text_dim=2048,
            d_model=1536,
            layers=20,
            heads=12,
            head_dim=128,
            mlp_dim=4096,
            dtype="bfloat16",
        )
    return SRModelConfig(
        name="paper_stage2",
        lfq_bits=18,
        grid=(5, 112, 64),
        windows=((1, 112, 2), (1, 4, 64), (5, 8, 8)),
        text_dim=2048,
        d_model=1024,
        layers=24,
        heads=16,
        head_dim=64,
        mlp_dim=2816,
        dtype="bfloat16",
    )


MODEL_PRESETS = {
    "tiny": _model_tiny,
    "small": SRModelConfig,
    "paper_stage1": lambda: _model_paper(1),
    "paper_stage2": lambda: _model_paper(2),
}
NOMINAL_PARAMS = {"paper_stage1": 1e9, "paper_stage2": 500e6}


def _train_tiny() -> SRTrainConfig:
    return SRTrainConfig(
        name="tiny",
        model=_model_tiny(),
        sample=SampleConfig(steps=4),
        text_len=4,
        text_encoder="tiny",
        steps=20,
        batch_size=4,
        learning_rate=3e-3,
        warmup_steps=2,
        log_every=5,
        checkpoint_every=10,
        progress=False,
    )


def _train_paper(stage: int) -> SRTrainConfig:
    guidance = {1: (4.0, 1.0), 2: (8.0, 2.0)}[stage]
    return SRTrainConfig(
        name=f"paper_stage{stage}",
        model=_model_paper(stage),
        sample=SampleConfig(steps=24, guidance_text=guidance[0], guidance_lowres=guidance[1]),
        text_len=64,
        text_encoder="paper",
        steps=300_000,
        batch_size=256,
        learning_rate=1e-4 if stage == 1 else 2e-4,
        warmup_steps=5000,
        log_every=50,
        checkpoint_every=2000,
        keep_checkpoints=3,
    )


PRESETS = {
    "tiny": _train_tiny,
    "small": SRTrainConfig,
    "paper_stage1": lambda: _train_paper(1),
    "paper_stage2": lambda: _train_paper(2),
}


def load_sr_config(source=None, overrides=()) -> SRTrainConfig:
    """A preset name, YAML path, mapping or instance (default ``small``) plus ``key=value`` overrides."""
    return load_config(SRTrainConfig, source, list(overrides), PRESETS, default_preset="small")
