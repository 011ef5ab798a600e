"""videopoet.tokenizers.magvit2: video/images <-> MAGVIT-v2 (causal 3D CNN + LFQ) visual tokens.

    from videopoet.tokenizers import magvit2
    vt = magvit2.load("small")            # preset (seeded init), YAML, or checkpoint dir / fsspec URI
    vt = magvit2.default()                # the trained small checkpoint in assets/small/
    codes = vt.encode(video)              # uint8 [B,T,H,W,3] -> int32 [B,T',H',W']  (T = 1 + 4k)
    video = vt.decode(codes)              # -> uint8 [B,T,H,W,3]
    cond = vt.encode_condition(video, "inpaint_center")   # COMMIT condition tokens (see masks)
    vt.config, vt.fingerprint

Paper preset: 17x128x128 -> 5x16x16, 2^18 codes; an image is a 1-frame video (1x16x16).
See README.md in this folder for training, evaluation and the shipped checkpoint.
"""

from videopoet.tokenizers.magvit2.config import PRESETS, MagvitConfig, load_magvit_config
from videopoet.tokenizers.magvit2.masks import MASK_KINDS, MaskError, apply_mask, make_mask, token_mask
from videopoet.tokenizers.magvit2.tokenizer import (
    CheckpointNotFoundError,
    MagvitTokenizer,
    VideoInputError,
    default,
    load,
)

__all__ = [
    "MASK_KINDS",
    "PRESETS",
    "CheckpointNotFoundError",
    "MagvitConfig",
    "MagvitTokenizer",
    "MaskError",
    "VideoInputError",
    "apply_mask",
    "default",
    "load",
    "load_magvit_config",
    "make_mask",
    "token_mask",
]
