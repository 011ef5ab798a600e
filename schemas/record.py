"""TokenRecord: one tokenized clip or image, and its pickle-free, schema-versioned serialization.

Wire format: a msgpack map (keys sorted, so equal records give equal bytes)::

    {"schema": "videopoet.TokenRecord", "v": 1,
     "key": str, "lineage": {...}, "caption": str|nil, "meta": {str: str|int|float|bool},
     "video": ARRAY|nil, "audio": ARRAY|nil, "text_ids": ARRAY|nil, "conditions": {str: ARRAY}}
    ARRAY = {"dtype": "<i4", "shape": [..], "data": raw little-endian bytes}

Only integer/float dtypes from :data:`ALLOWED_DTYPES` are accepted; object arrays cannot be
written or read. :func:`decode_record` refuses any other ``schema``/``v`` with
:class:`SchemaVersionError`, and malformed bytes with :class:`RecordError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

from videopoet.schemas.errors import RecordError, SchemaVersionError

SCHEMA_NAME = "videopoet.TokenRecord"
SCHEMA_VERSION = 1
READABLE_VERSIONS = frozenset({1})
# The named stream of a super-resolution training pair: the clip's video tokens at twice the
# resolution of ``video`` (the pipeline's ``sr_pairs`` option); counted apart as "superres" tokens.
SUPERRES_STREAM = "superres_2x"
# Beside it, the video tokenizer's codes of the bicubic 2x upsample of the clip as decoded from
# ``video``: what upsampling alone gives in token space, the super-resolution model's aligned guess
# (computed the same way from the LM's codes at generation); counted as "superres" tokens too.
SUPERRES_UPSAMPLED_STREAM = "superres_2x_upsampled"
SUPERRES_STREAMS = (SUPERRES_STREAM, SUPERRES_UPSAMPLED_STREAM)
# The stylization conditions of a clip (the pipeline's ``style_conditions``): its optical flow and
# depth, each rendered as a 3-channel video and tokenized like ``video`` (same shape); counted apart
# as "style" tokens.
STYLE_STREAMS = {"flow": "style_flow", "depth": "style_depth"}
ALLOWED_DTYPES = frozenset({"<i4", "<i2", "<u2", "<u1", "<i8", "<f4", "<f2", "|u1", "|i1"})


@dataclasses.dataclass(frozen=True)
class Lineage:
    """Where a record came from. No absolute paths: records do not depend on where inputs lie."""

    source_shard: str  # the input shard's base name, e.g. "train-00003.tar"
    source_sha256: str  # content hash of that input shard
    sample_key: str  # webdataset key of the sample inside the shard
    clip_start_s: float = 0.0  # clip start time in the source video (0 for images)
    frame_indices: tuple[int, ...] = ()  # source frame indices used, in order
    fps: float = 0.0  # output frame rate of the clip (0 for images)

    def to_wire(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["frame_indices"] = list(self.frame_indices)
        return d

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Lineage:
        try:
            return cls(
                source_shard=str(d["source_shard"]),
                source_sha256=str(d["source_sha256"]),
                sample_key=str(d["sample_key"]),
                clip_start_s=float(d["clip_start_s"]),
                frame_indices=tuple(int(i) for i in d["frame_indices"]),
                fps=float(d["fps"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise RecordError(f"bad lineage in record: {e}") from None


@dataclasses.dataclass(frozen=True, eq=False)
class TokenRecord:
    """Tokens of one clip or image, in modality-local code space (not global vocabulary ids).

    video       int32 [T', H', W'] MAGVIT-v2 codes; its shape is the latent shape
    audio       int32 [levels, frames] SoundStream RVQ codes
    text_ids    int32 [L] SentencePiece ids of the caption (the trainer runs the frozen encoder)
    conditions  named int32 streams, e.g. "inpaint_center" -> [T', H', W'] COMMIT condition tokens,
                ``SUPERRES_STREAM`` -> [T', 2H', 2W'] the same clip's tokens at twice the resolution,
                ``SUPERRES_UPSAMPLED_STREAM`` -> [T', 2H', 2W'] the tokens of its decoded clip upsampled, and
                ``STYLE_STREAMS`` ("style_flow", "style_depth") -> [T', H', W'] its flow / depth renders' tokens
    meta        small scalar facts: "bucket" ("square"/"portrait"), "is_image", ...
    """

    key: str
    lineage: Lineage
    video: np.ndarray | None = None
    audio: np.ndarray | None = None
    text_ids: np.ndarray | None = None
    caption: str | None = None
    conditions: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    meta: Mapping[str, str | int | float | bool] = dataclasses.field(default_factory=dict)

    @property
    def latent_shape(self) -> tuple[int, ...] | None:
        return None if self.video is None else tuple(self.video.shape)

    def token_counts(self) -> dict[str, int]:
        """Tokens per modality (conditions, the super-resolution stream and the style streams counted
        apart), for shard stats and the manifest."""
        style = set(STYLE_STREAMS.values())
        return {
            "video": 0 if self.video is None else int(self.video.size),
            "audio": 0 if self.audio is None else int(self.audio.size),
            "text": 0 if self.text_ids is None else int(self.text_ids.size),
            "condition": int(
                sum(v.size for k, v in self.conditions.items() if k not in SUPERRES_STREAMS and k not in style)
            ),
            "superres": int(sum(v.size for k, v in self.conditions.items() if k in SUPERRES_STREAMS)),
            "style": int(sum(v.size for k, v in self.conditions.items() if k in style)),
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TokenRecord):
            return NotImplemented
        return encode_record(self) == encode_record(other)

    def __hash__(self) -> int:
        return hash(encode_record(self))


def _array_to_wire(arr: np.ndarray, what: str) -> dict[str, Any]:
    arr = np.asarray(arr)
    dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    if dt.str not in ALLOWED_DTYPES:
        raise RecordError(f"{what}: dtype {arr.dtype} is not allowed in a TokenRecord")
    arr = arr.astype(dt, copy=False)
    return {"dtype": dt.str, "shape": list(arr.shape), "data": np.ascontiguousarray(arr).tobytes()}


def _array_from_wire(d: Any, what: str) -> np.ndarray:
    if not isinstance(d, Mapping) or set(d) != {"dtype", "shape", "data"}:
        raise RecordError(f"{what}: malformed array")
    dtype, shape, data = d["dtype"], d["shape"], d["data"]
    if dtype not in ALLOWED_DTYPES:
        raise RecordError(f"{what}: dtype {dtype!r} is not allowed")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise RecordError(f"{what}: bad shape {shape!r}")
    if not isinstance(data, bytes):
        raise RecordError(f"{what}: data must be raw bytes")
    dt = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if n * dt.itemsize != len(data):
        raise RecordError(f"{what}: {len(data)} bytes do not fill shape {shape} of {dtype}")
    return np.frombuffer(data, dtype=dt).reshape(shape).copy()


def _check_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in meta.items():
        if not isinstance(k, str) or not isinstance(v, (str, int, float, bool)):
            raise RecordError(f"meta[{k!r}] must map str to a str/int/float/bool scalar")
        out[k] = v
    return out


def encode_record(rec: TokenRecord) -> bytes:
    """Serialize deterministically (equal records give equal bytes)."""
    if not isinstance(rec.key, str) or not rec.key:
        raise RecordError("record key must be a non-empty string")
    wire = {
        "schema": SCHEMA_NAME,
        "v": SCHEMA_VERSION,
        "key": rec.key,
        "lineage": rec.lineage.to_wire(),
        "caption": rec.caption,
        "meta": _check_meta(rec.meta),
        "video": None if rec.video is None else _array_to_wire(rec.video, "video"),
        "audio": None if rec.audio is None else _array_to_wire(rec.audio, "audio"),
        "text_ids": None if rec.text_ids is None else _array_to_wire(rec.text_ids, "text_ids"),
        "conditions": {str(k): _array_to_wire(v, f"conditions[{k}]") for k, v in sorted(rec.conditions.items())},
    }
    if rec.video is not None and np.asarray(rec.video).ndim != 3:
        raise RecordError(f"video tokens must be [T', H', W'], got shape {np.shape(rec.video)}")
    if rec.audio is not None and np.asarray(rec.audio).ndim != 2:
        raise RecordError(f"audio tokens must be [levels, frames], got shape {np.shape(rec.audio)}")
    if rec.text_ids is not None and np.asarray(rec.text_ids).ndim != 1:
        raise RecordError(f"text ids must be [L], got shape {np.shape(rec.text_ids)}")
    return msgpack.packb(_sorted(wire), use_bin_type=True)


def _sorted(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _sorted(obj[k]) for k in sorted(obj)}
    return obj


def decode_record(blob: bytes) -> TokenRecord:
    """Parse bytes written by :func:`encode_record`; refuses unknown schema versions."""
    try:
        wire = msgpack.unpackb(blob, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated exception types
        raise RecordError(f"record is not valid msgpack: {type(e).__name__}") from None
    if not isinstance(wire, dict):
        raise RecordError("record is not a msgpack map")
    if wire.get("schema") != SCHEMA_NAME:
        raise SchemaVersionError(f"not a TokenRecord (schema {wire.get('schema')!r})")
    version = wire.get("v")
    if version not in READABLE_VERSIONS:
        raise SchemaVersionError(
            f"TokenRecord schema version {version!r} is not readable by this code "
            f"(reads {sorted(READABLE_VERSIONS)}); upgrade videopoet or re-run the pipeline"
        )
    try:
        key = wire["key"]
        caption = wire["caption"]
        meta = wire["meta"]
        conds = wire["conditions"]
    except KeyError as e:
        raise RecordError(f"record lacks field {e}") from None
    if not isinstance(key, str) or not isinstance(conds, dict) or not isinstance(meta, dict):
        raise RecordError("record has fields of the wrong type")
    if caption is not None and not isinstance(caption, str):
        raise RecordError("record caption must be a string")

    def opt(name: str) -> np.ndarray | None:
        return None if wire.get(name) is None else _array_from_wire(wire[name], name)

    return TokenRecord(
        key=key,
        lineage=Lineage.from_wire(wire.get("lineage") or {}),
        video=opt("video"),
        audio=opt("audio"),
        text_ids=opt("text_ids"),
        caption=caption,
        conditions={str(k): _array_from_wire(v, f"conditions[{k}]") for k, v in conds.items()},
        meta=_check_meta(meta),
    )


def record_summary(rec: TokenRecord) -> dict[str, Any]:
    """JSON-able view for ``videopoet data show``: key, lineage, token shapes, caption."""
    return {
        "key": rec.key,
        "lineage": rec.lineage.to_wire(),
        "caption": rec.caption,
        "meta": dict(rec.meta),
        "video_shape": None if rec.video is None else list(rec.video.shape),
        "audio_shape": None if rec.audio is None else list(rec.audio.shape),
        "text_len": None if rec.text_ids is None else int(rec.text_ids.size),
        "conditions": {k: list(v.shape) for k, v in sorted(rec.conditions.items())},
        "tokens": rec.token_counts(),
    }
