"""videopoet.tokenizers.soundstream: 16 kHz mono audio <-> residual-VQ codes (VideoPoet's audio tokens).

    from videopoet.tokenizers import soundstream
    at = soundstream.load("small")        # preset (seeded init), YAML, or checkpoint dir / fsspec URI
    at = soundstream.default()            # the trained small checkpoint in assets/small/
    codes = at.encode(wave)               # float32 [B, N] -> int32 [B, levels_used, N // 320]
    wave = at.decode(codes)               # -> float32 [B, frames * 320]
    at.config, at.fingerprint

2.125 s = 34000 samples -> 106 frames: the trailing 34000 % 320 = 80 samples are dropped (see
:mod:`.config`). Codebook updates: EMA k-means + dead-code re-seeding (see :mod:`.model`).
"""

from videopoet.tokenizers.soundstream.config import PRESETS, SoundStreamConfig, load_soundstream_config
from videopoet.tokenizers.soundstream.tokenizer import (
    AudioInputError,
    CheckpointNotFoundError,
    SoundStreamTokenizer,
    default,
    load,
)

__all__ = [
    "PRESETS",
    "AudioInputError",
    "CheckpointNotFoundError",
    "SoundStreamConfig",
    "SoundStreamTokenizer",
    "default",
    "load",
    "load_soundstream_config",
]
