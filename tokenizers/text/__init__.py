"""videopoet.tokenizers.text: SentencePiece ids + frozen T5 encoder embeddings.

    from videopoet.tokenizers import text
    tt = text.load("path/to/hf-t5-dir")   # config.json + model.safetensors(.index.json) + spiece.model
    tt = text.load("small")               # preset: seeded random encoder + default SentencePiece
    tt = text.default()
    ids, mask = tt.tokenize(["a red circle moves left"])   # int32 [B, L], L <= 64
    emb = tt.embed(ids, mask)             # float32 [B, L, d_model]
    tt.config, tt.fingerprint

Pipelines store ids; the trainer runs the frozen encoder (see :mod:`.tokenizer` for the storage cost).
"""

from videopoet.tokenizers.text.config import PRESETS, TextConfig, load_text_config
from videopoet.tokenizers.text.spm import CaptionDataError, load_sentencepiece, train_sentencepiece
from videopoet.tokenizers.text.t5 import T5CheckpointError, T5Encoder, load_hf_t5, relative_position_bucket
from videopoet.tokenizers.text.tokenizer import TextEncoder, TextInputError, architecture, default, load

__all__ = [
    "PRESETS",
    "CaptionDataError",
    "T5CheckpointError",
    "T5Encoder",
    "TextConfig",
    "TextEncoder",
    "TextInputError",
    "architecture",
    "default",
    "load",
    "load_hf_t5",
    "load_sentencepiece",
    "load_text_config",
    "relative_position_bucket",
    "train_sentencepiece",
]
