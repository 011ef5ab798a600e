"""VideoPoet trainer configs: model, data (task mixture, AGD, curriculum, CFG dropout), mesh, run.

Presets (``TrainConfig``; ``ModelConfig`` has the same names):

* ``tiny``  - tests (seconds): d=32, 2 layers, a tiny vocabulary (magvit2-tiny 2^6 codes,
  soundstream-tiny 2 x 64 codes), the ``tiny`` T5 encoder.
* ``small`` - the quickstart: trains meaningfully in minutes on 2 CPU cores; the vocabulary of the
  shipped tokenizers (magvit2-small 2^10 codes, soundstream-small 4 x 1024) and the default T5.
* ``300m`` / ``1b`` / ``8b`` - VideoPoet's sizes (A.2) with the paper vocabulary (2^18 visual,
  4 x 1024 audio) and T5-XL text width (2048). The size names count the transformer blocks
  (non-embedding parameters); the unified-vocabulary embedding and output head add
  ``2 x 266,496 x d_model`` on top (0.55B for 300m). ``tests/test_trainer_model.py`` checks the
  counts with ``jax.eval_shape``.

Position encoding: rotary (RoPE) on queries and keys, by absolute position in the sequence. It is
relative (the same attention pattern works whatever the prefix length of a task), needs no
learned table tied to a maximum length, and a KV cache needs no position bookkeeping beyond the
index being written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from videopoet.schemas.config import load_config
from videopoet.schemas.vocab import Vocabulary

TASKS = ("uncond", "t2v", "t2i", "fp", "i2v", "inpaint", "outpaint", "v2a", "a2v", "avcont", "stylize")
ATTENTION = ("auto", "xla", "cudnn", "einsum")
REMAT = ("none", "full", "dots")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Decoder-only prefix-LM transformer over the unified vocabulary."""

    name: str = "small"
    # unified vocabulary (schemas.vocab): sizes come from the tokenizers the dataset was made with
    visual_size: int = 1024
    audio_levels: int = 4
    audio_codebook: int = 1024
    text_dim: int = 256  # width of the T5 encoder's embeddings (projected to d_model by one Dense)
    # transformer
    d_model: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 0  # 0 = heads (multi-head); fewer = grouped-query attention
    head_dim: int = 64
    mlp_dim: int = 512
    mlp: str = "swiglu"  # swiglu | gelu
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-6
    init_std: float = 0.02
    dtype: str = "bfloat16"  # compute dtype; parameters are always float32
    attention: str = "auto"  # auto (jax.nn.dot_product_attention picks) | xla | cudnn | einsum
    remat: str = "none"  # none | full | dots (save matmul outputs)

    @property
    def vocab(self) -> Vocabulary:
        return Vocabulary(self.visual_size, self.audio_levels, self.audio_codebook)

    @property
    def vocab_size(self) -> int:
        return self.vocab.size

    @property
    def num_kv_heads(self) -> int:
        return self.kv_heads or self.heads

    def block_params(self) -> int:
        """Parameters of one transformer block (attention + MLP + 2 norms)."""
        d, h, kv, hd = self.d_model, self.heads, self.num_kv_heads, self.head_dim
        attn = d * h * hd * 2 + d * kv * hd * 2
        mlp = d * self.mlp_dim * (3 if self.mlp == "swiglu" else 2)
        return attn + mlp + 2 * d

    def validate(self) -> None:
        for name in ("visual_size", "audio_codebook", "text_dim", "d_model", "layers", "heads", "head_dim", "mlp_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.audio_levels < 0 or self.kv_heads < 0:
            raise ValueError("audio_levels and kv_heads must be >= 0")
        if self.heads % self.num_kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            raise ValueError("head_dim must be even (rotary embedding)")
        if self.mlp not in ("swiglu", "gelu"):
            raise ValueError("mlp must be swiglu or gelu")
        if self.dtype not in ("bfloat16", "float32"):
            raise ValueError("dtype must be bfloat16 or float32")
        if self.attention not in ATTENTION:
            raise ValueError(f"attention must be one of {list(ATTENTION)}")
        if self.remat not in REMAT:
            raise ValueError(f"remat must be one of {list(REMAT)}")


def default_mixture() -> dict[str, float]:
    return {
        "t2v": 1.0,
        "t2i": 1.0,
        "i2v": 0.5,
        "fp": 0.5,
        "uncond": 0.25,
        "inpaint": 0.25,
        "outpaint": 0.25,
        "v2a": 0.5,
        "a2v": 0.25,
        "avcont": 0.25,
        "stylize": 0.25,
    }


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Task mixture, AGD, curriculum and CFG dropout (see :mod:`videopoet.trainer.data`)."""

    text_len: int = 24  # fixed text slot (T5 tokens after <bot_i>); captions are cut/padded to it
    mixture: Mapping[str, float] = dataclasses.field(default_factory=default_mixture)
    # image -> video curriculum: P(image step) = image_frac_start before the switch, image_frac_end after;
    # the switch is at step switch_step, or (switch_step 0) at switch_fraction of the steps. A run meant to be
    # extended later (lr_schedule=wsd) sets switch_step: a fraction moves the switch when steps grows.
    curriculum: bool = True
    image_frac_start: float = 0.9
    image_frac_end: float = 0.1
    switch_fraction: float = 0.25
    switch_step: int = 0
    # classifier-free guidance: per example, hide the text / the input streams (positions kept, masked)
    cfg_dropout_text: float = 0.1
    cfg_dropout_inputs: float = 0.0
    # frame prediction: latent frames given (empty = every count from 1 to T'-1); av continuation: 0 = half
    fp_given_frames: tuple[int, ...] = ()
    avcont_given_frames: int = 0
    length_bucket: int = 1  # AGD group lengths rounded up to a multiple of this (1 = exact, no padding;
    #                         larger merges near-equal lengths into fewer groups = fewer compiles)
    verify: bool = True  # verify the dataset (manifest, shard hashes) before step 0
    prefetch: int = 2  # batches built ahead by Grain
    num_threads: int = 2  # Grain read threads

    def measured(self, mixture: Mapping[str, float] | None = None) -> DataConfig:
        """This data config as a loss is measured on it: no condition dropout and no image curriculum,
        so every row is its task's conditional example (``mixture``: other task weights, default the same)."""
        return dataclasses.replace(
            self,
            mixture=dict(self.mixture if mixture is None else mixture),
            cfg_dropout_text=0.0,
            cfg_dropout_inputs=0.0,
            curriculum=False,
        )

    def validate(self) -> None:
        if self.text_len < 1 or self.length_bucket < 1:
            raise ValueError("text_len and length_bucket must be >= 1")
        unknown = sorted(set(self.mixture) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task {unknown[0]!r} in mixture (tasks: {', '.join(TASKS)})")
        if any(w < 0 for w in self.mixture.values()) or not any(w > 0 for w in self.mixture.values()):
            raise ValueError("mixture weights must be >= 0 with at least one > 0")
        for name in ("image_frac_start", "image_frac_end", "switch_fraction", "cfg_dropout_text", "cfg_dropout_inputs"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1]")
        if self.switch_step < 0:
            raise ValueError("switch_step must be >= 0")
        if any(k < 1 for k in self.fp_given_frames) or self.avcont_given_frames < 0:
            raise ValueError("given frame counts must be >= 1")
        if self.prefetch < 0 or self.num_threads < 0:
            raise ValueError("prefetch and num_threads must be >= 0")


def default_rules() -> dict[str, tuple[str, ...]]:
    """Logical axis -> mesh axes. Batch over (data, fsdp); weights' embed dim over fsdp; heads/mlp/vocab over tensor."""
    return {
        "batch": ("data", "fsdp"),
        "length": (),
        "embed": ("fsdp",),
        "heads": ("tensor",),
        "kv_heads": ("tensor",),
        "kv": (),
        "mlp": ("tensor",),
        "vocab": ("tensor",),
        "text_embed": (),
    }


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh (data, fsdp, tensor); -1 in one axis takes the remaining devices."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    rules: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=default_rules)

    def validate(self) -> None:
        sizes = (self.data, self.fsdp, self.tensor)
        if sum(s == -1 for s in sizes) > 1 or any(s == 0 or s < -1 for s in sizes):
            raise ValueError("mesh axes must be >= 1, with at most one -1")
        for name, axes in self.rules.items():
            bad = [a for a in axes if a not in ("data", "fsdp", "tensor")]
            if bad:
                raise ValueError(f"rules.{name}: unknown mesh axis {bad[0]!r}")


EVAL_TASKS = ("t2v", "i2v", "fp", "v2a", "long", "stylize")  # what the synthetic-world evaluation can score
DEFAULT_EVAL_TASKS = ("t2v", "i2v", "fp", "v2a")  # "long" (several rounds of continuation), "stylize" on request


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation during training (:mod:`videopoet.trainer.train_eval`): every ``every`` steps a few samples
    are generated from the current weights and scored on the synthetic world. Not part of the run's
    fingerprint: it reads the weights and never changes them, so a run's numbers are the same with it or
    without it, and it can be switched on or off when a run resumes."""

    every: int = 0  # steps between evaluations (0: none); a multiple of log_every (its row is that step's)
    samples: int = 4  # scenes per split (seen and held-out combinations) and task
    tasks: tuple[str, ...] = DEFAULT_EVAL_TASKS
    seed: int = 1234
    video_tokenizer: str = ""  # "" = the dataset's (as its manifest records it); else a preset or checkpoint
    audio_tokenizer: str = ""
    # held-out loss: every ``heldout_every`` steps, the loss of the current weights on the same
    # ``heldout_batches`` global batches of a dataset the run never trains on (NAME@VERSION under the
    # training --root, or a version dir), built with the run's task mixture and no condition dropout:
    # the gap to the training loss is what memorization of the training records looks like
    heldout_data: str = ""
    heldout_every: int = 0  # 0: none; a multiple of log_every
    heldout_batches: int = 4

    def validate(self) -> None:
        if self.every < 0 or self.samples < 1:
            raise ValueError("every must be >= 0 and samples >= 1")
        if self.heldout_every < 0 or self.heldout_batches < 1:
            raise ValueError("eval.heldout_every must be >= 0 and eval.heldout_batches >= 1")
        if self.heldout_every and not self.heldout_data:
            raise ValueError("eval.heldout_every needs eval.heldout_data (a dataset the run does not train on)")
        bad = [t for t in self.tasks if t not in EVAL_TASKS]
        if bad or not self.tasks:
            raise ValueError(f"tasks must be some of {list(EVAL_TASKS)}, got {list(self.tasks)}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    name: str = "small"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    text_encoder: str = "default"  # "default", a text preset (tiny/small/paper) or a Hugging Face T5 directory
    steps: int = 300
    batch_size: int = 8  # global batch
    learning_rate: float = 1e-3
    warmup_steps: int = 30
    # cosine | constant (after warm-up) | wsd: warm-up, stable at the peak, then a linear decay over the last
    # decay_steps (or decay_fraction of the steps) to min_lr_ratio x the peak. Only wsd runs can be extended
    # (a larger steps on resume; see trainer/extend.py).
    lr_schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    decay_steps: int = 0  # wsd: length of the decay phase (0: decay_fraction of the steps)
    decay_fraction: float = 0.0  # wsd: the decay phase as a fraction of the steps (with decay_steps 0)
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.95
    grad_clip: float = 1.0
    # loss weight of the output video codes that differ from the same position one latent frame earlier
    # (where an object moves; most codes repeat the background): such a target counts 1 + change_weight
    # times in the objective, every other target once. The logged loss stays the plain mean.
    change_weight: float = 0.0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    async_checkpoint: bool = True
    progress: bool = True  # tqdm progress bar
    peak_flops: float = 0.0  # per device for MFU; 0 = look the device up in infra.accelerators

    @property
    def decay_length(self) -> int:
        """Steps of the wsd decay phase (0 for the other schedules)."""
        if self.lr_schedule != "wsd":
            return 0
        return self.decay_steps or int(round(self.decay_fraction * self.steps))

    @property
    def decay_start(self) -> int:
        """The first step of the wsd decay phase (``steps`` for the other schedules): the learning rates of
        the steps before it do not depend on ``steps``."""
        return self.steps - self.decay_length

    def validate(self) -> None:
        if self.steps < 0 or self.warmup_steps < 0:
            raise ValueError("steps and warmup_steps must be >= 0")
        for name in ("batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.learning_rate <= 0 or self.weight_decay < 0 or self.grad_clip < 0 or self.peak_flops < 0:
            raise ValueError("learning_rate must be > 0; weight_decay, grad_clip, peak_flops >= 0")
        if self.change_weight < 0:
            raise ValueError("change_weight must be >= 0")
        if self.lr_schedule not in ("cosine", "constant", "wsd"):
            raise ValueError("lr_schedule must be cosine, constant or wsd")
        if self.decay_steps < 0 or not 0.0 <= self.decay_fraction <= 1.0:
            raise ValueError("decay_steps must be >= 0 and decay_fraction lie in [0, 1]")
        if self.lr_schedule == "wsd":
            if (self.decay_steps > 0) == (self.decay_fraction > 0):
                raise ValueError("lr_schedule=wsd needs exactly one of decay_steps > 0 and decay_fraction > 0")
            if self.warmup_steps + self.decay_length > self.steps:
                raise ValueError(
                    f"warmup_steps ({self.warmup_steps}) + the decay phase ({self.decay_length}) "
                    f"exceed steps ({self.steps})"
                )
        elif self.decay_steps or self.decay_fraction:
            raise ValueError("decay_steps and decay_fraction are for lr_schedule=wsd")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("min_lr_ratio must lie in [0, 1]")
        for name in ("b1", "b2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in [0, 1)")
        if self.eval.every % self.log_every:
            raise ValueError(f"eval.every ({self.eval.every}) must be a multiple of log_every ({self.log_every})")
        if self.eval.heldout_every % self.log_every:
            raise ValueError(
                f"eval.heldout_every ({self.eval.heldout_every}) must be a multiple of log_every ({self.log_every})"
            )


# --------------------------------------------------------------------------------------- presets
def _model_tiny() -> ModelConfig:
    return ModelConfig(
        name="tiny",
        visual_size=64,
        audio_levels=2,
        audio_codebook=64,
        text_dim=32,
        d_model=32,
        layers=2,
        heads=2,
        head_dim=16,
        mlp_dim=64,
        dtype="float32",
    )


def _model_small() -> ModelConfig:
    # sized for 2 CPU cores (a video step of batch 8 x ~350 tokens is ~30 GFLOP); float32 compute because
    # XLA:CPU has no fast bfloat16 matmuls (set model.dtype=bfloat16 on GPU/TPU)
    return ModelConfig(d_model=128, layers=4, heads=2, head_dim=64, mlp_dim=384, dtype="float32")


def _paper_vocab(**kw) -> ModelConfig:
    return ModelConfig(visual_size=2**18, audio_levels=4, audio_codebook=1024, text_dim=2048, remat="full", **kw)


MODEL_PRESETS = {
    "tiny": _model_tiny,
    "small": _model_small,
    "300m": lambda: _paper_vocab(name="300m", d_model=1024, layers=24, heads=16, head_dim=64, mlp_dim=2816),
    "1b": lambda: _paper_vocab(name="1b", d_model=2048, layers=20, heads=16, head_dim=128, mlp_dim=5632),
    "8b": lambda: _paper_vocab(name="8b", d_model=4096, layers=32, heads=32, head_dim=128, mlp_dim=15360),
}
NOMINAL_PARAMS = {"300m": 300e6, "1b": 1e9, "8b": 8e9}


def _train_tiny() -> TrainConfig:
    return TrainConfig(
        name="tiny",
        model=_model_tiny(),
        data=DataConfig(text_len=8, prefetch=0, num_threads=0),
        text_encoder="tiny",
        steps=20,
        batch_size=4,
        learning_rate=3e-3,
        warmup_steps=2,
        log_every=5,
        checkpoint_every=10,
        progress=False,
        async_checkpoint=False,
    )


def _train_small() -> TrainConfig:
    # length_bucket=32 merges near-equal AGD lengths: ~4x fewer step compilations on CPU for a few % padding
    return TrainConfig(model=_model_small(), data=DataConfig(text_len=16, length_bucket=32), learning_rate=2e-3)


def _train_paper(size: str) -> TrainConfig:
    # VideoPoet ablation set-up (§5.2): lr 1e-3 at 300M, batch 1024, 300k steps; FSDP over the pod.
    lr = {"300m": 1e-3, "1b": 6e-4, "8b": 3e-4}[size]
    return TrainConfig(
        name=size,
        model=MODEL_PRESETS[size](),
        data=DataConfig(text_len=64),
        mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
        text_encoder="paper",
        steps=300_000,
        batch_size=1024,
        learning_rate=lr,
        warmup_steps=5000,
        log_every=50,
        checkpoint_every=2000,
    )


PRESETS = {
    "tiny": _train_tiny,
    "small": _train_small,
    "300m": lambda: _train_paper("300m"),
    "1b": lambda: _train_paper("1b"),
    "8b": lambda: _train_paper("8b"),
}


def load_train_config(source=None, overrides=()) -> TrainConfig:
    """A preset name, YAML path, mapping or instance (default ``small``) plus ``key=value`` overrides."""
    return load_config(TrainConfig, source, list(overrides), PRESETS, default_preset="small")


def load_model_config(source=None, overrides=()) -> ModelConfig:
    return load_config(ModelConfig, source, list(overrides), MODEL_PRESETS, default_preset="small")
