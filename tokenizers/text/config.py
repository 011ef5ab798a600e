"""T5 encoder config (the fields of a Hugging Face T5 ``config.json`` that the encoder uses) + presets.

Presets: ``tiny`` (tests), ``small`` (the embedded default: random-init, seeded), ``paper``
(``google/t5-v1_1-xl``: d_model 2048, 24 layers, 32 heads, d_ff 5120, gated-GELU). A preset only
fixes the architecture; real weights come from a Hugging Face directory via ``text.load(DIR)``.
"""

from __future__ import annotations

import dataclasses

from videopoet.schemas.config import load_config

FFN_KINDS = ("relu", "gelu", "gated-gelu", "gated-relu", "gated-silu")


@dataclasses.dataclass(frozen=True)
class TextConfig:
    name: str = "t5-small-random"
    vocab_size: int = 512
    d_model: int = 256
    d_kv: int = 32
    d_ff: int = 512
    num_layers: int = 4
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "gated-gelu"  # "relu" = original T5, "gated-gelu" = T5 v1.1
    max_length: int = 64  # VideoPoet: at most 64 text tokens (including </s>)
    dtype: str = "float32"  # compute dtype: float32 | bfloat16 (norms and softmax stay float32)
    seed: int = 0  # random init of a preset (no checkpoint)

    @property
    def gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation(self) -> str:
        return self.feed_forward_proj.split("-")[-1]

    def validate(self) -> None:
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.relative_attention_num_buckets < 4:
            raise ValueError("relative_attention_num_buckets must be >= 4")
        if self.relative_attention_max_distance < self.relative_attention_num_buckets // 4 + 1:
            raise ValueError("relative_attention_max_distance is too small for the bucket count")
        if self.feed_forward_proj not in FFN_KINDS:
            raise ValueError(f"feed_forward_proj must be one of {list(FFN_KINDS)}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError("dtype must be float32 or bfloat16")
        if not 2 <= self.max_length <= 512:
            raise ValueError("max_length must lie in [2, 512]")


PRESETS = {
    "tiny": lambda: TextConfig(
        name="t5-tiny-random", vocab_size=512, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4
    ),
    "small": lambda: TextConfig(),
    "paper": lambda: TextConfig(
        name="t5-v1_1-xl",
        vocab_size=32128,
        d_model=2048,
        d_kv=64,
        d_ff=5120,
        num_layers=24,
        num_heads=32,
        feed_forward_proj="gated-gelu",
        dtype="bfloat16",
    ),
}

# HF config.json keys <-> TextConfig fields (same names).
HF_KEYS = (
    "vocab_size",
    "d_model",
    "d_kv",
    "d_ff",
    "num_layers",
    "num_heads",
    "relative_attention_num_buckets",
    "relative_attention_max_distance",
    "layer_norm_epsilon",
    "feed_forward_proj",
)


def load_text_config(source=None, overrides=()) -> TextConfig:
    return load_config(TextConfig, source, overrides, PRESETS)


def from_hf_config(hf: dict, name: str = "t5", **extra) -> TextConfig:
    """A Hugging Face T5 ``config.json`` mapping -> TextConfig (validated)."""
    from videopoet.schemas.config import from_dict

    data = {k: hf[k] for k in HF_KEYS if k in hf}
    missing = [k for k in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads") if k not in hf]
    if missing:
        from videopoet.schemas.errors import ConfigError

        raise ConfigError(f"T5 config.json lacks {', '.join(missing)}")
    data["name"] = name
    if "layer_norm_epsilon" in data:
        data["layer_norm_epsilon"] = float(data["layer_norm_epsilon"])
    data.update(extra)
    return from_dict(TextConfig, data)


def to_hf_config(cfg: TextConfig) -> dict:
    out = {k: getattr(cfg, k) for k in HF_KEYS}
    out.update(
        _name_or_path=cfg.name,
        architectures=["T5EncoderModel"],
        model_type="t5",
        is_encoder_decoder=False,
        d_model=cfg.d_model,
        dense_act_fn="gelu_new" if cfg.feed_forward_proj == "gated-gelu" else cfg.activation,
        is_gated_act=cfg.gated,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        num_decoder_layers=cfg.num_layers,
        dropout_rate=0.0,
        initializer_factor=1.0,
        use_cache=False,
        tie_word_embeddings=False,
    )
    return out
