"""Errors and reject records of the pre-tokenization pipeline.

:class:`PipelineError` stops the job as a whole (no inputs, clashing input names, a tokenizer that
does not fit the config). A single bad sample never does: it becomes a reject, a dict
``{source_shard, key, stage, reason, message}`` made by :func:`make_reject`, where ``stage`` is one
of ``read``, ``validate``, ``decode``, ``audio``, ``text``, ``tokenize`` and ``reason`` one of
:data:`REJECT_REASONS` (stable codes). Messages are scrubbed of addresses and clock times, so a
rerun writes identical reject files. :class:`RejectError` carries a reject out of the stage that
found it.
"""

from __future__ import annotations

import re

from videopoet import media
from videopoet.media.webdataset import READ_REASONS
from videopoet.schemas.errors import VideoPoetError

__all__ = ["REJECT_REASONS", "PipelineError", "RejectError", "make_reject"]

REJECT_REASONS = (
    READ_REASONS
    + media.MEDIA_REASONS
    + (
        "no_media",  # no video/image member
        "too_many_pixels",
        "too_small",
        "bad_aspect",
        "too_long",
        "too_short",
        "no_audio",
        "missing_caption",
        "caption_not_utf8",
        "caption_too_long",
        "tokenize_error",
        # a folder corpus (videopoet.pipelines.folder): a row without its file, a file without a row, a bad path
        "missing_file",
        "no_metadata",
        "unsafe_path",
    )
)


class PipelineError(VideoPoetError):
    """The job as a whole cannot run (no inputs, clashing input names, a tokenizer that does not fit)."""


class RejectError(Exception):
    """One sample is refused: ``stage``, ``reason`` (a :data:`REJECT_REASONS` code) and a message."""

    def __init__(self, stage: str, reason: str, message: str):
        super().__init__(message)
        self.stage, self.reason, self.message = stage, reason, message


_SCRUB = [(re.compile(r"\b0x[0-9a-fA-F]{6,}\b"), "0x?"), (re.compile(r"\[\d\d:\d\d:\d\d\]"), "[..]")]


def _scrub(msg: str) -> str:
    for rx, rep in _SCRUB:
        msg = rx.sub(rep, msg)
    return msg[:500]


def make_reject(source_shard: str, key: str, stage: str, reason: str, message: str) -> dict[str, str]:
    return {"source_shard": source_shard, "key": key, "stage": stage, "reason": reason, "message": _scrub(message)}
