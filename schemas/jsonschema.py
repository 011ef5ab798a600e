"""JSON Schema files for the contracts, generated from the code and checked in under ``schemas/json/``.

    python -m videopoet.schemas.jsonschema           # rewrite schemas/json/*.json
    python -m videopoet.schemas.jsonschema --check   # exit 1 if the checked-in files are stale

``manifest.schema.json`` validates ``manifest.json`` (the same dict :func:`check_manifest` applies).
``token_record.schema.json`` describes the TokenRecord wire map (msgpack; ``data`` fields are raw
bytes, shown here as the msgpack ``bin`` type), for readers written in other languages.
tests/test_store.py fails when the checked-in files differ from what this module generates.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from videopoet.schemas.manifest import MANIFEST_JSON_SCHEMA
from videopoet.schemas.record import ALLOWED_DTYPES, SCHEMA_NAME, SCHEMA_VERSION

JSON_DIR = os.path.join(os.path.dirname(__file__), "json")

_ARRAY = {
    "type": "object",
    "description": "a numeric array: little-endian raw bytes of `dtype` in C order",
    "required": ["dtype", "shape", "data"],
    "additionalProperties": False,
    "properties": {
        "dtype": {"enum": sorted(ALLOWED_DTYPES)},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "data": {"description": "msgpack bin: prod(shape) * itemsize bytes"},
    },
}

RECORD_JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": f"https://videopoet.dev/schemas/token_record.v{SCHEMA_VERSION}.json",
    "title": f"videopoet TokenRecord wire map (msgpack), version {SCHEMA_VERSION}",
    "description": "One tokenized clip or image; codes are modality-local (not global vocabulary ids). "
    "Keys are written sorted, so equal records give equal bytes.",
    "type": "object",
    "required": ["schema", "v", "key", "lineage", "caption", "meta", "video", "audio", "text_ids", "conditions"],
    "additionalProperties": False,
    "properties": {
        "schema": {"const": SCHEMA_NAME},
        "v": {"const": SCHEMA_VERSION},
        "key": {"type": "string", "minLength": 1},
        "lineage": {
            "type": "object",
            "required": ["source_shard", "source_sha256", "sample_key", "clip_start_s", "frame_indices", "fps"],
            "additionalProperties": False,
            "properties": {
                "source_shard": {"type": "string", "description": "input shard base name (no absolute path)"},
                "source_sha256": {"type": "string"},
                "sample_key": {"type": "string"},
                "clip_start_s": {"type": "number"},
                "frame_indices": {"type": "array", "items": {"type": "integer"}},
                "fps": {"type": "number"},
            },
        },
        "caption": {"type": ["string", "null"]},
        "meta": {"type": "object", "additionalProperties": {"type": ["string", "integer", "number", "boolean"]}},
        "video": {"oneOf": [{"type": "null"}, {**_ARRAY, "description": "MAGVIT-v2 codes [T', H', W']"}]},
        "audio": {"oneOf": [{"type": "null"}, {**_ARRAY, "description": "SoundStream RVQ codes [levels, frames]"}]},
        "text_ids": {"oneOf": [{"type": "null"}, {**_ARRAY, "description": "SentencePiece ids [L]"}]},
        "conditions": {"type": "object", "additionalProperties": _ARRAY},
    },
}

FILES = {
    "manifest.schema.json": MANIFEST_JSON_SCHEMA,
    "token_record.schema.json": RECORD_JSON_SCHEMA,
}


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def stale_files(directory: str = JSON_DIR) -> list[str]:
    out = []
    for fn, schema in FILES.items():
        p = os.path.join(directory, fn)
        if not os.path.exists(p) or open(p, encoding="utf-8").read() != render(schema):
            out.append(fn)
    return out


def write_all(directory: str = JSON_DIR) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    for fn, schema in FILES.items():
        with open(os.path.join(directory, fn), "w", encoding="utf-8") as f:
            f.write(render(schema))
    return sorted(FILES)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m videopoet.schemas.jsonschema")
    ap.add_argument("--check", action="store_true", help="exit 1 if checked-in files are stale")
    args = ap.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print(f"stale JSON Schema files: {', '.join(stale)} (run python -m videopoet.schemas.jsonschema)")
            return 1
        print("JSON Schema files are up to date")
        return 0
    print("wrote " + ", ".join(write_all()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
