"""The unified VideoPoet token id space (VideoPoet A.5.1, Table 4).

    [0, 256)                                  special and task tokens
    [256, 256 + V)                            visual codes (MAGVIT-v2, V = 2**lfq_bits; 2**18 in the paper)
    [256 + V + l*C, 256 + V + (l+1)*C)        audio codes of RVQ level l (C = codebook size, 1024 in the paper)

Text is not part of the output vocabulary: it enters the model as projected T5 encoder embeddings.
Sizes come from the tokenizer configs, so a tiny tokenizer gives a tiny vocabulary.

Every mapping checks its range: a code or id outside it raises :class:`VocabularyError`.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import numpy as np

from videopoet.schemas.errors import VocabularyError

NUM_SPECIAL = 256


class Special(enum.IntEnum):
    """Special tokens (ids 0..15). ``PAD`` is never a model target."""

    PAD = 0
    BOS = 1
    BOT_I = 2  # begin/end of input text (the projected T5 embeddings sit between)
    EOT_I = 3
    BOV_I = 4  # begin/end of input video
    EOV_I = 5
    BOA_I = 6  # begin/end of input audio
    EOA_I = 7
    SOURCE = 8  # separates a source stream (e.g. an inpainting condition) from the rest of the prefix
    RES = 9  # marks the 128x224 portrait resolution bucket
    BOV_O = 10  # begin/end of output video
    EOV_O = 11
    BOA_O = 12  # begin/end of output audio
    EOA_O = 13
    EOS = 14


class Task(enum.IntEnum):
    """``<task>`` token values: one per output type (VideoPoet §4.1).

    Text-to-video, image-to-video and unconditional video share ``VIDEO``: their outputs are the same
    kind of sequence, only the prefix differs.
    """

    VIDEO = 32  # t2v, i2v, unconditional
    IMAGE = 33  # t2i (no <eov_o>/<eos>, so it can continue into video)
    FRAME_PREDICTION = 34  # continuation of given frames
    INPAINT = 35
    OUTPAINT = 36
    STYLIZE = 37
    AUDIO = 38  # video-to-audio
    AUDIO_TO_VIDEO = 39
    AUDIO_VIDEO = 40  # audio-video continuation


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Sizes and offsets of the unified vocabulary."""

    visual_size: int
    audio_levels: int
    audio_codebook: int

    def __post_init__(self) -> None:
        for name in ("visual_size", "audio_levels", "audio_codebook"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < (0 if name == "audio_levels" else 1):
                raise VocabularyError(f"Vocabulary.{name} must be a positive integer, got {value!r}")

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def paper(cls) -> Vocabulary:
        """VideoPoet's sizes: 2**18 visual codes, 4 audio levels of 1024 codes."""
        return cls(visual_size=2**18, audio_levels=4, audio_codebook=1024)

    @classmethod
    def from_tokenizers(cls, video: Any, audio: Any | None = None) -> Vocabulary:
        """From tokenizer configs (or tokenizers carrying ``.config``).

        The video config exposes ``codebook_size``; the audio config ``codebook_size`` and
        ``levels_used`` (the RVQ levels the LM models, 4 in VideoPoet).
        """
        video = getattr(video, "config", video)
        if audio is None:
            return cls(visual_size=int(video.codebook_size), audio_levels=0, audio_codebook=1)
        audio = getattr(audio, "config", audio)
        return cls(
            visual_size=int(video.codebook_size),
            audio_levels=int(audio.levels_used),
            audio_codebook=int(audio.codebook_size),
        )

    # ---- layout -------------------------------------------------------------------------------
    @property
    def visual_offset(self) -> int:
        return NUM_SPECIAL

    @property
    def audio_offset(self) -> int:
        return NUM_SPECIAL + self.visual_size

    def audio_level_offset(self, level: int) -> int:
        if not 0 <= level < self.audio_levels:
            raise VocabularyError(f"audio level {level} outside [0, {self.audio_levels})")
        return self.audio_offset + level * self.audio_codebook

    @property
    def size(self) -> int:
        """Total number of ids; the model's embedding and output head use this many rows."""
        return NUM_SPECIAL + self.visual_size + self.audio_levels * self.audio_codebook

    def ranges(self) -> dict[str, tuple[int, int]]:
        """Half-open id ranges per segment, for display and checks."""
        out = {"special": (0, NUM_SPECIAL), "visual": (self.visual_offset, self.audio_offset)}
        for lvl in range(self.audio_levels):
            start = self.audio_level_offset(lvl)
            out[f"audio_l{lvl}"] = (start, start + self.audio_codebook)
        return out

    # ---- mapping ------------------------------------------------------------------------------
    @staticmethod
    def _check(arr: np.ndarray, low: int, high: int, what: str) -> None:
        if arr.size == 0:
            return
        lo, hi = int(arr.min()), int(arr.max())
        if lo < low or hi >= high:
            bad = lo if lo < low else hi
            raise VocabularyError(f"{what} {bad} outside [{low}, {high})")

    @staticmethod
    def _as_int(x: Any, what: str) -> np.ndarray:
        arr = np.asarray(x)
        if arr.dtype.kind not in "iu":
            raise VocabularyError(f"{what} must be integers, got dtype {arr.dtype}")
        return arr.astype(np.int64, copy=False)

    def visual_to_global(self, codes: Any) -> np.ndarray:
        """Visual codes in [0, V) -> global ids."""
        arr = self._as_int(codes, "visual codes")
        self._check(arr, 0, self.visual_size, "visual code")
        return (arr + self.visual_offset).astype(np.int32)

    def visual_from_global(self, ids: Any) -> np.ndarray:
        arr = self._as_int(ids, "token ids")
        self._check(arr, self.visual_offset, self.audio_offset, "visual token id")
        return (arr - self.visual_offset).astype(np.int32)

    def audio_to_global(self, codes: Any, level_axis: int = -2) -> np.ndarray:
        """Audio codes [..., levels, frames] in [0, C) -> global ids, each level in its own range.

        Only the first ``audio_levels`` levels are allowed; pass ``codes[..., :levels, :]`` to drop finer levels.
        """
        arr = self._as_int(codes, "audio codes")
        if arr.ndim < 2:
            raise VocabularyError(f"audio codes need a levels axis, got shape {arr.shape}")
        arr = np.moveaxis(arr, level_axis, -1)
        if arr.shape[-1] > self.audio_levels:
            raise VocabularyError(f"{arr.shape[-1]} audio levels given, vocabulary has {self.audio_levels}")
        self._check(arr, 0, self.audio_codebook, "audio code")
        offsets = self.audio_offset + np.arange(arr.shape[-1]) * self.audio_codebook
        return np.moveaxis(arr + offsets, -1, level_axis).astype(np.int32)

    def audio_from_global(self, ids: Any, level_axis: int = -2) -> np.ndarray:
        arr = self._as_int(ids, "token ids")
        if arr.ndim < 2:
            raise VocabularyError(f"audio ids need a levels axis, got shape {arr.shape}")
        arr = np.moveaxis(arr, level_axis, -1)
        n = arr.shape[-1]
        if n > self.audio_levels:
            raise VocabularyError(f"{n} audio levels given, vocabulary has {self.audio_levels}")
        offsets = self.audio_offset + np.arange(n) * self.audio_codebook
        local = arr - offsets
        if arr.size and (local.min() < 0 or local.max() >= self.audio_codebook):
            bad_level = int(np.argwhere((local < 0) | (local >= self.audio_codebook))[0][-1])
            raise VocabularyError(f"audio token id outside the range of level {bad_level}")
        return np.moveaxis(local, -1, level_axis).astype(np.int32)

    def modality(self, ids: Any) -> np.ndarray:
        """Per-id segment: 0 special, 1 visual, 2 audio. Out-of-range ids raise."""
        arr = self._as_int(ids, "token ids")
        self._check(arr, 0, self.size, "token id")
        return np.where(arr < NUM_SPECIAL, 0, np.where(arr < self.audio_offset, 1, 2)).astype(np.int8)

    def to_dict(self) -> dict[str, int]:
        return {**dataclasses.asdict(self), "size": self.size}
