"""The dataset manifest (``manifest.json``): what a version holds, where it came from, its fingerprint.

Pure functions over plain dicts (the manifest is JSON on disk); the filesystem side lives in
:mod:`videopoet.schemas.store`. Shape (``MANIFEST_JSON_SCHEMA`` is the checked contract)::

    format "videopoet.DatasetManifest", manifest_version 1, name, version, created (UTC ISO-8601),
    record_schema_version, fingerprint,
    lineage  {inputs [{name, size, sha256, uri}], tokenizers {video|audio|text: {name, fingerprint,
              config, source}}, pipeline_config {...}, pipeline_config_fingerprint, package_version,
              runner {name, workers, options}}
    shards   [{path (relative to the version dir), source_shard, records, bytes, sha256,
              tokens {video, audio, text, condition}}]
    rejects  {total, by_reason {code: n}, files [{path, source_shard, records, bytes, sha256}]}
    totals   {records, bytes, shards, samples_in, samples_rejected, tokens {...}}

**Fingerprint**: sha256 over the canonical JSON of what determines the content and nothing else:
the record schema version, input (name, sha256) pairs, tokenizer fingerprints, the pipeline config
and the (path, sha256) of every shard. URIs, sizes already implied by hashes, creation time, package
version, the runner and worker count are recorded but not hashed, so the same data produced by Beam
or Ray, with 1 or 8 workers, in ``/tmp`` or ``gs://``, has the same fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from videopoet.schemas.errors import DatasetError, SchemaVersionError
from videopoet.schemas.record import READABLE_VERSIONS as RECORD_READABLE_VERSIONS

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_JSON_SCHEMA",
    "MANIFEST_VERSION",
    "check_manifest",
    "compute_fingerprint",
    "diff_manifests",
    "flatten",
]

MANIFEST_FORMAT = "videopoet.DatasetManifest"
MANIFEST_VERSION = 1
READABLE_MANIFEST_VERSIONS = frozenset({1})
TOKEN_KINDS = ("video", "audio", "text", "condition")


def to_plain(obj: Any) -> Any:
    """A config dataclass, mapping or None as plain JSON-able data (None -> {})."""
    from videopoet.schemas.config import to_dict

    if obj is None:
        return {}
    return json.loads(json.dumps(to_dict(obj), sort_keys=True, default=str))


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def compute_fingerprint(manifest: Mapping[str, Any]) -> str:
    """The location- and runner-independent content hash of a manifest (see module docstring)."""
    lin = manifest.get("lineage", {})
    basis = {
        "record_schema_version": manifest.get("record_schema_version"),
        "inputs": sorted([str(i["name"]), str(i["sha256"])] for i in lin.get("inputs", [])),
        "tokenizers": {k: (v or {}).get("fingerprint") for k, v in sorted(lin.get("tokenizers", {}).items())},
        "pipeline_config": lin.get("pipeline_config", {}),
        "shards": sorted([str(s["path"]), str(s["sha256"])] for s in manifest.get("shards", [])),
    }
    return hashlib.sha256(canonical_json(basis)).hexdigest()


def _tokens(d: Mapping[str, Any] | None) -> dict[str, int]:
    d = d or {}
    return {k: int(d.get(k, 0)) for k in TOKEN_KINDS}


def totals_of(shards: list[Mapping[str, Any]], samples_in: int, rejected: int) -> dict[str, Any]:
    tok = {k: 0 for k in TOKEN_KINDS}
    for s in shards:
        for k, v in _tokens(s.get("tokens")).items():
            tok[k] += v
    return {
        "shards": len(shards),
        "records": int(sum(int(s["records"]) for s in shards)),
        "bytes": int(sum(int(s["bytes"]) for s in shards)),
        "samples_in": int(samples_in),
        "samples_rejected": int(rejected),
        "tokens": tok,
    }


def check_manifest(manifest: Any, where: str = "manifest.json") -> dict[str, Any]:
    """Validate a parsed manifest: format, readable versions, JSON Schema; returns it."""
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DatasetError(f"{where}: not a videopoet dataset manifest")
    mv = manifest.get("manifest_version")
    if mv not in READABLE_MANIFEST_VERSIONS:
        raise SchemaVersionError(
            f"{where}: manifest version {mv!r} is not readable by this code (reads "
            f"{sorted(READABLE_MANIFEST_VERSIONS)}); upgrade videopoet")
    rv = manifest.get("record_schema_version")
    if rv not in RECORD_READABLE_VERSIONS:
        raise SchemaVersionError(
            f"{where}: records use TokenRecord schema version {rv!r}, which this code cannot read "
            f"(reads {sorted(RECORD_READABLE_VERSIONS)}); upgrade videopoet or re-run the pipeline")
    import jsonschema

    try:
        jsonschema.validate(manifest, MANIFEST_JSON_SCHEMA)
    except jsonschema.ValidationError as e:
        path = "/".join(str(p) for p in e.absolute_path) or "(top)"
        raise DatasetError(f"{where}: invalid manifest at {path}: {e.message}") from None
    return manifest


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys (lists stay values)."""
    if not isinstance(d, Mapping):
        return {prefix: d} if prefix else {"": d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def _changed_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, list[Any]]:
    fa, fb = flatten(a), flatten(b)
    return {k: [fa.get(k), fb.get(k)] for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}


def _by(items: list[Mapping[str, Any]], key: str) -> dict[str, Mapping[str, Any]]:
    return {str(i[key]): i for i in items}


def diff_manifests(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Explain how B differs from A: lineage fields (inputs, tokenizers, config keys, code version),
    shards (added / removed / changed) and totals. Empty sections are omitted."""
    la, lb = a.get("lineage", {}), b.get("lineage", {})
    out: dict[str, Any] = {
        "a": f"{a.get('name')}@{a.get('version')}",
        "b": f"{b.get('name')}@{b.get('version')}",
        "same_fingerprint": a.get("fingerprint") == b.get("fingerprint"),
        "fingerprint": [a.get("fingerprint"), b.get("fingerprint")],
    }
    lineage: dict[str, Any] = {}
    ia, ib = _by(la.get("inputs", []), "name"), _by(lb.get("inputs", []), "name")
    inputs = {
        "added": sorted(set(ib) - set(ia)),
        "removed": sorted(set(ia) - set(ib)),
        "changed": sorted(n for n in set(ia) & set(ib) if ia[n].get("sha256") != ib[n].get("sha256")),
    }
    if any(inputs.values()):
        lineage["inputs"] = inputs
    ta, tb = la.get("tokenizers", {}), lb.get("tokenizers", {})
    tok = {}
    for kind in sorted(set(ta) | set(tb)):
        fa, fb = (ta.get(kind) or {}).get("fingerprint"), (tb.get(kind) or {}).get("fingerprint")
        if fa != fb:
            tok[kind] = {"fingerprint": [fa, fb], "name": [(ta.get(kind) or {}).get("name"),
                                                          (tb.get(kind) or {}).get("name")],
                         "config": _changed_keys((ta.get(kind) or {}).get("config") or {},
                                                 (tb.get(kind) or {}).get("config") or {})}
    if tok:
        lineage["tokenizers"] = tok
    cfg = _changed_keys(la.get("pipeline_config", {}), lb.get("pipeline_config", {}))
    if cfg:
        lineage["pipeline_config"] = cfg
    if la.get("package_version") != lb.get("package_version"):
        lineage["package_version"] = [la.get("package_version"), lb.get("package_version")]
    runner = _changed_keys(la.get("runner", {}), lb.get("runner", {}))
    if runner:
        lineage["runner"] = runner  # recorded, not part of the fingerprint
    if lineage:
        out["lineage"] = lineage
    sa, sb = _by(a.get("shards", []), "path"), _by(b.get("shards", []), "path")
    shards = {
        "added": sorted(set(sb) - set(sa)),
        "removed": sorted(set(sa) - set(sb)),
        "changed": [
            {"path": p, "sha256": [sa[p]["sha256"], sb[p]["sha256"]], "records": [sa[p]["records"], sb[p]["records"]]}
            for p in sorted(set(sa) & set(sb)) if sa[p]["sha256"] != sb[p]["sha256"]
        ],
    }
    if any(shards.values()):
        out["shards"] = shards
    tot = _changed_keys(a.get("totals", {}), b.get("totals", {}))
    if tot:
        out["totals"] = tot
    ra, rb = a.get("rejects", {}).get("by_reason", {}), b.get("rejects", {}).get("by_reason", {})
    rej = {k: [ra.get(k, 0), rb.get(k, 0)] for k in sorted(set(ra) | set(rb)) if ra.get(k, 0) != rb.get(k, 0)}
    if rej:
        out["rejects_by_reason"] = rej
    return out


# ---------------------------------------------------------------- JSON Schema (the checked contract)

_SHA = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_COUNT = {"type": "integer", "minimum": 0}
_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"}
_RELPATH = {"type": "string", "pattern": r"^(shards|rejects)/[A-Za-z0-9][A-Za-z0-9._-]*$"}
_TOKENS = {
    "type": "object",
    "properties": {k: _COUNT for k in TOKEN_KINDS},
    "required": list(TOKEN_KINDS),
    "additionalProperties": False,
}

MANIFEST_JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://videopoet.dev/schemas/manifest.v1.json",
    "title": "videopoet dataset manifest (manifest.json), version 1",
    "type": "object",
    "required": ["format", "manifest_version", "name", "version", "created", "record_schema_version",
                 "fingerprint", "lineage", "shards", "rejects", "totals"],
    "properties": {
        "format": {"const": MANIFEST_FORMAT},
        "manifest_version": {"const": MANIFEST_VERSION},
        "name": _NAME,
        "version": _NAME,
        "created": {"type": "string", "description": "UTC ISO-8601 commit time (not hashed)"},
        "record_schema_version": {"type": "integer", "minimum": 1},
        "fingerprint": {**_SHA, "description": "sha256 over content-determining fields (see schemas/manifest.py)"},
        "lineage": {
            "type": "object",
            "required": ["inputs", "tokenizers", "pipeline_config", "package_version"],
            "properties": {
                "inputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "sha256", "size"],
                        "properties": {"name": {"type": "string", "minLength": 1}, "sha256": _SHA, "size": _COUNT,
                                       "uri": {"type": "string"}},
                    },
                },
                "tokenizers": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["fingerprint"],
                        "properties": {"name": {"type": "string"}, "fingerprint": {"type": "string"},
                                       "config": {"type": "object"}, "source": {"type": "string"}},
                    },
                },
                "pipeline_config": {"type": "object"},
                "pipeline_config_fingerprint": {"type": ["string", "null"]},
                "package_version": {"type": "string"},
                "runner": {"type": "object"},
            },
        },
        "shards": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["path", "records", "bytes", "sha256", "tokens"],
                "properties": {"path": _RELPATH, "source_shard": {"type": ["string", "null"]}, "records": _COUNT,
                               "bytes": _COUNT, "sha256": _SHA, "tokens": _TOKENS},
                "additionalProperties": False,
            },
        },
        "rejects": {
            "type": "object",
            "required": ["total", "by_reason", "files"],
            "properties": {
                "total": _COUNT,
                "by_reason": {"type": "object", "additionalProperties": _COUNT},
                "files": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["path", "records", "bytes", "sha256"],
                        "properties": {"path": _RELPATH, "source_shard": {"type": ["string", "null"]},
                                       "records": _COUNT, "bytes": _COUNT, "sha256": _SHA},
                        "additionalProperties": False,
                    },
                },
            },
        },
        "totals": {
            "type": "object",
            "required": ["shards", "records", "bytes", "samples_in", "samples_rejected", "tokens"],
            "properties": {"shards": _COUNT, "records": _COUNT, "bytes": _COUNT, "samples_in": _COUNT,
                           "samples_rejected": _COUNT, "tokens": _TOKENS},
        },
    },
}
