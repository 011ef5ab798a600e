"""``PipelineConfig``: what the pre-tokenization pipeline makes of a corpus (both runners).

Presets (``PRESETS``):

* ``tiny``  - tests (seconds): 32x32 square / 32x56 (WxH) portrait, the ``tiny`` tokenizer presets.
* ``tiny`` and ``small`` give each video clip one COMMIT condition, alternating ``inpaint_center`` /
  ``outpaint_border`` (``condition_mode: alternate``); ``paper`` gives every clip both (``all``).
* ``small`` - the quickstart: 64x64 / 64x112, the shipped tokenizers (``default``; a shipped
  checkpoint that is missing stops the job, it is never replaced by a random initialisation).
* ``paper`` - VideoPoet: 128x128 / 128x224, 17 frames at 8 fps (2.125 s of 16 kHz audio), the
  ``paper`` tokenizer presets (or checkpoints given by path).

``sr_pairs: true`` (any preset; ``--sr-pairs`` on the command line) adds super-resolution training
pairs: every video clip is also tokenized at twice the bucket's size, and its bucket-size tokens are
decoded, bicubic-upsampled 2x and tokenized again (the upsampled guess an SR model may start from).

``style_conditions: [flow]`` or ``[flow, depth]`` (``--style-conditions [--depth-model PATH.onnx]``)
adds the stylization conditions: each video clip's optical flow (OpenCV) and depth (the ONNX network
at ``depth_model``), rendered as 3-channel videos (:mod:`videopoet.media.style`) and tokenized by the
video tokenizer into the record's ``style_flow`` / ``style_depth`` streams.

Every field is part of the dataset fingerprint (the manifest's ``pipeline_config``). Limits refuse
samples as rejects with a reason code (``validate`` stage), never by crashing the job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from videopoet.media.style import STYLE_KINDS
from videopoet.schemas.config import load_config

__all__ = ["PRESETS", "PipelineConfig", "load_pipeline_config"]

_MASKS = (
    "inpaint_center",
    "outpaint_left",
    "outpaint_right",
    "outpaint_top",
    "outpaint_bottom",
    "outpaint_border",
    "future",
)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    name: str = "pipeline-small"
    # ---- buckets (pixels); the portrait bucket is portrait_height tall and `resolution` wide
    resolution: int = 64
    portrait_height: int = 112  # 0 disables the portrait bucket
    portrait_min_aspect: float = 1.4  # source h/w at or above this goes to the portrait bucket
    # ---- clips
    fps: float = 8.0
    clip_frames: int = 17  # 1 + 4k (17 = 2.125 s at 8 fps; 41 is the long option)
    clip_stride: int = 17  # output frames between clip starts
    max_clips_per_video: int = 16
    images: bool = True  # jpg/png/webp samples become 1-frame records
    # ---- audio
    audio: bool = True
    sample_rate: int = 16000
    require_audio: bool = False  # True: a video without audio is a reject (no_audio)
    # ---- text
    require_caption: bool = False  # True: a sample without a caption is a reject (missing_caption)
    max_caption_bytes: int = 4096  # longer captions are rejects (caption_too_long)
    # ---- conditions (COMMIT-masked clips tokenized by the video tokenizer)
    conditions: tuple[str, ...] = ("inpaint_center", "outpaint_border")
    # all: every video clip gets every kind; alternate: each clip gets one kind, rotating by clip
    # index (offset by a hash of the sample key) - every kind is covered at one extra encode per clip
    condition_mode: str = "alternate"
    # ---- super-resolution pairs: each video clip is also tokenized at twice the bucket's height and
    # width (the record's SUPERRES_STREAM); the bucket-size clip is then the 2x2 box average of the
    # 2x clip, so the pair is exact. A video source smaller than 2x the bucket is a reject
    # (sr_source_too_small); images carry no pair. The record also holds SUPERRES_UPSAMPLED_STREAM: the
    # tokens of the bucket-size clip as decoded from its own tokens, bicubic-upsampled 2x.
    sr_pairs: bool = False
    # ---- stylization conditions: each video clip's optical flow ("flow") and depth ("depth", from the
    # ONNX network at depth_model), rendered as 3-channel videos and tokenized into the record's
    # STYLE_STREAMS (schemas.record); images carry none. Empty: none.
    style_conditions: tuple[str, ...] = ()
    depth_model: str = ""  # an ONNX depth network (input [N, 3, H, W] RGB in [0, 1]); needs "depth" above
    # ---- limits (validate stage)
    max_member_bytes: int = 512 * 1024 * 1024
    max_sample_bytes: int = 1024 * 1024 * 1024
    max_pixels: int = 3840 * 2160  # width x height of the source
    min_side: int = 16  # smaller width or height is a reject (too_small)
    max_duration_s: float = 3600.0
    max_aspect: float = 4.0  # long side / short side
    # ---- tokenization
    batch_size: int = 8  # clips per tokenizer call (the last batch is padded: fixed shapes)
    # tokenizer specs, resolved by videopoet.tokenizers.registry: default (shipped) | preset | YAML | checkpoint dir/URI
    video_tokenizer: str = "default"
    audio_tokenizer: str = "default"
    text_tokenizer: str = "default"

    @property
    def clip_seconds(self) -> float:
        return self.clip_frames / self.fps

    @property
    def audio_samples(self) -> int:
        return int(round(self.clip_frames / self.fps * self.sample_rate))

    def buckets(self) -> dict[str, tuple[int, int]]:
        """bucket name -> (height, width)."""
        b = {"square": (self.resolution, self.resolution)}
        if self.portrait_height:
            b["portrait"] = (self.portrait_height, self.resolution)
        return b

    def validate(self) -> None:
        if self.resolution < 8 or self.resolution % 8:
            raise ValueError(f"resolution must be a positive multiple of 8, got {self.resolution}")
        if self.portrait_height and (self.portrait_height % 8 or self.portrait_height <= self.resolution):
            raise ValueError(
                f"portrait_height must be a multiple of 8 above resolution (or 0), got {self.portrait_height}"
            )
        if self.portrait_min_aspect <= 1.0:
            raise ValueError("portrait_min_aspect must be > 1")
        if not 0 < self.fps <= 120:
            raise ValueError(f"fps must lie in (0, 120], got {self.fps}")
        if self.clip_frames < 1 or (self.clip_frames - 1) % 4:
            raise ValueError(f"clip_frames must be 1 + 4k (5, 9, 17, 41, ...), got {self.clip_frames}")
        if self.clip_stride < 1 or self.max_clips_per_video < 1:
            raise ValueError("clip_stride and max_clips_per_video must be >= 1")
        if self.sample_rate < 8000:
            raise ValueError(f"sample_rate must be >= 8000, got {self.sample_rate}")
        bad = [c for c in self.conditions if c not in _MASKS]
        if bad:
            raise ValueError(f"unknown condition {bad[0]!r} (one of {', '.join(_MASKS)})")
        if self.condition_mode not in ("all", "alternate"):
            raise ValueError(f"condition_mode must be 'all' or 'alternate', got {self.condition_mode!r}")
        if len(set(self.conditions)) != len(self.conditions):
            raise ValueError("conditions must not repeat")
        bad = [c for c in self.style_conditions if c not in STYLE_KINDS]
        if bad:
            raise ValueError(f"unknown style condition {bad[0]!r} (one of {', '.join(STYLE_KINDS)})")
        if len(set(self.style_conditions)) != len(self.style_conditions):
            raise ValueError("style_conditions must not repeat")
        if "depth" in self.style_conditions and not self.depth_model:
            raise ValueError("the depth style condition needs depth_model: PATH.onnx (a depth network)")
        if self.depth_model and "depth" not in self.style_conditions:
            raise ValueError("depth_model is set but style_conditions has no 'depth'")
        for name in (
            "max_member_bytes",
            "max_sample_bytes",
            "max_pixels",
            "max_caption_bytes",
            "batch_size",
            "min_side",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_duration_s <= 0 or self.max_aspect < 1:
            raise ValueError("max_duration_s must be > 0 and max_aspect >= 1")
        for name in ("video_tokenizer", "audio_tokenizer", "text_tokenizer"):
            if not getattr(self, name):
                raise ValueError(f"{name} must name a preset, a checkpoint or 'default'")


def _tiny() -> PipelineConfig:
    return PipelineConfig(
        name="pipeline-tiny",
        resolution=32,
        portrait_height=56,
        batch_size=4,
        video_tokenizer="tiny",
        audio_tokenizer="tiny",
        text_tokenizer="tiny",
    )


def _small() -> PipelineConfig:
    return PipelineConfig()


def _paper() -> PipelineConfig:
    return PipelineConfig(
        name="pipeline-paper",
        resolution=128,
        portrait_height=224,
        batch_size=16,
        condition_mode="all",
        video_tokenizer="paper",
        audio_tokenizer="paper",
        text_tokenizer="paper",
    )


PRESETS: dict[str, Callable[[], PipelineConfig]] = {"tiny": _tiny, "small": _small, "paper": _paper}


def load_pipeline_config(source=None, overrides=()) -> PipelineConfig:
    """A preset name, YAML path, mapping or instance (default ``small``) plus ``key=value`` overrides."""
    return load_config(PipelineConfig, source, list(overrides), PRESETS, default_preset="small")
