"""The dataset manifest (``manifest.json``): what a version holds, where it came from, its fingerprint.

Pure functions over plain dicts (the manifest is JSON on disk); the filesystem side lives in
:mod:`videopoet.schemas.store`. Shape (``MANIFEST_JSON_SCHEMA`` is the checked contract)::

    format "videopoet.DatasetManifest", manifest_version 2, name, version, created (UTC ISO-8601),
    record_schema_version, fingerprint,
    lineage  {inputs [{name, size, sha256, uri}], tokenizers {video|audio|text: {kind, spec, name,
              fingerprint, config}}, pipeline_config {...}, pipeline_config_fingerprint,
              package_version, runner {name, workers, options},
              style {conditions, streams, flow, depth_model {path, sha256} | null} (only with
              style_conditions: which stylization streams the records carry)}
    shards   [{path (relative to the version dir), source_shard, records, bytes, sha256,
              tokens {video, audio, text, condition, superres, style}}]
    rejects  {total, by_reason {code: n}, files [{path, source_shard, records, bytes, sha256}]}
    totals   {records, bytes, shards, samples_in, samples_rejected, tokens {...}}

**Fingerprint**: sha256 over the canonical JSON of what determines the content and nothing else:
the record schema version, input (name, sha256) pairs, tokenizer fingerprints, the pipeline config,
the (path, sha256) of every shard and, with a depth style condition, the depth network's sha256.
URIs, sizes already implied by hashes, creation time, package version, the runner and worker count
are recorded but not hashed, so the same data produced by Beam or Ray, with 1 or 8 workers, in
``/tmp`` or ``gs://``, has the same fingerprint.

**Tokenizers**: each entry is a :class:`~videopoet.schemas.tokenizer_ref.TokenizerRef` (kind, spec,
name, fingerprint) plus the tokenizer's config; :func:`tokenizer_refs` reads them. Version 1 recorded
the spec as display text (``source``); :func:`tokenizer_refs` maps it, and version-1 manifests are
still read (validated against :data:`MANIFEST_V1_JSON_SCHEMA`). The fingerprint hashes only the
tokenizers' fingerprints, so a version-1 and a version-2 manifest of the same content agree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from videopoet.schemas.errors import DatasetError, SchemaVersionError
from videopoet.schemas.record import READABLE_VERSIONS as RECORD_READABLE_VERSIONS
from videopoet.schemas.tokenizer_ref import KINDS, TokenizerRef, from_v1_entry

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_JSON_SCHEMA",
    "MANIFEST_V1_JSON_SCHEMA",
    "MANIFEST_VERSION",
    "check_manifest",
    "compute_fingerprint",
    "diff_manifests",
    "flatten",
    "tokenizer_refs",
]

MANIFEST_FORMAT = "videopoet.DatasetManifest"
MANIFEST_VERSION = 2
READABLE_MANIFEST_VERSIONS = frozenset({1, 2})
TOKEN_KINDS = ("video", "audio", "text", "condition", "superres", "style")
# the kinds every manifest holds (``superres``, the super-resolution pair stream, and ``style``, the
# stylization condition streams, came later: optional)
REQUIRED_TOKEN_KINDS = ("video", "audio", "text", "condition")


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
    depth = (lin.get("style") or {}).get("depth_model")
    if depth:  # the depth network's content makes the style_depth tokens (its path is not hashed)
        basis["depth_model_sha256"] = depth.get("sha256")
    return hashlib.sha256(canonical_json(basis)).hexdigest()


def _tokens(d: Mapping[str, Any] | None) -> dict[str, int]:
    """Token counts by kind: the required kinds always, the optional ones where ``d`` has them (so
    a manifest written before a kind existed reads, verifies and sums as it was written)."""
    d = d or {}
    return {k: int(d.get(k, 0)) for k in TOKEN_KINDS if k in REQUIRED_TOKEN_KINDS or k in d}


def totals_of(shards: list[Mapping[str, Any]], samples_in: int, rejected: int) -> dict[str, Any]:
    tok = {k: 0 for k in REQUIRED_TOKEN_KINDS}
    for s in shards:
        for k, v in _tokens(s.get("tokens")).items():
            tok[k] = tok.get(k, 0) + v
    tok = {k: tok[k] for k in TOKEN_KINDS if k in tok}
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
            f"{sorted(READABLE_MANIFEST_VERSIONS)}); upgrade videopoet"
        )
    rv = manifest.get("record_schema_version")
    if rv not in RECORD_READABLE_VERSIONS:
        raise SchemaVersionError(
            f"{where}: records use TokenRecord schema version {rv!r}, which this code cannot read "
            f"(reads {sorted(RECORD_READABLE_VERSIONS)}); upgrade videopoet or re-run the pipeline"
        )
    import jsonschema

    try:
        jsonschema.validate(manifest, MANIFEST_V1_JSON_SCHEMA if mv == 1 else MANIFEST_JSON_SCHEMA)
    except jsonschema.ValidationError as e:
        path = "/".join(str(p) for p in e.absolute_path) or "(top)"
        raise DatasetError(f"{where}: invalid manifest at {path}: {e.message}") from None
    return manifest


def tokenizer_refs(manifest: Mapping[str, Any]) -> dict[str, TokenizerRef]:
    """Modality (video, audio, text) -> the reference of the tokenizer the dataset was made with,
    from a manifest of any readable version."""
    entries = (manifest.get("lineage") or {}).get("tokenizers") or {}
    if manifest.get("manifest_version") == 1:
        return {m: from_v1_entry(m, e or {}) for m, e in sorted(entries.items())}
    return {m: TokenizerRef.from_dict(e) for m, e in sorted(entries.items())}


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
            tok[kind] = {
                "fingerprint": [fa, fb],
                "name": [(ta.get(kind) or {}).get("name"), (tb.get(kind) or {}).get("name")],
                "config": _changed_keys(
                    (ta.get(kind) or {}).get("config") or {}, (tb.get(kind) or {}).get("config") or {}
                ),
            }
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
            for p in sorted(set(sa) & set(sb))
            if sa[p]["sha256"] != sb[p]["sha256"]
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
    "required": list(REQUIRED_TOKEN_KINDS),
    "additionalProperties": False,
}

MANIFEST_JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": f"https://videopoet.dev/schemas/manifest.v{MANIFEST_VERSION}.json",
    "title": f"videopoet dataset manifest (manifest.json), version {MANIFEST_VERSION}",
    "type": "object",
    "required": [
        "format",
        "manifest_version",
        "name",
        "version",
        "created",
        "record_schema_version",
        "fingerprint",
        "lineage",
        "shards",
        "rejects",
        "totals",
    ],
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
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "sha256": _SHA,
                            "size": _COUNT,
                            "uri": {"type": "string"},
                        },
                    },
                },
                "tokenizers": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["kind", "spec", "name", "fingerprint"],
                        "properties": {
                            "kind": {"enum": list(KINDS)},
                            "spec": {"type": "string", "minLength": 1},
                            "name": {"type": "string"},
                            "fingerprint": {"type": "string"},
                            "config": {"type": "object"},
                        },
                        "additionalProperties": False,
                    },
                },
                "pipeline_config": {"type": "object"},
                "pipeline_config_fingerprint": {"type": ["string", "null"]},
                "package_version": {"type": "string"},
                "runner": {"type": "object"},
                "style": {
                    "type": "object",
                    "description": "the stylization conditions the records carry (pipeline style_conditions)",
                    "required": ["conditions", "streams"],
                    "properties": {
                        "conditions": {"type": "array", "items": {"enum": ["flow", "depth"]}},
                        "streams": {"type": "array", "items": {"type": "string"}},
                        "flow": {"type": "string"},
                        "depth_model": {
                            "type": ["object", "null"],
                            "required": ["path", "sha256"],
                            "properties": {"path": {"type": "string"}, "sha256": _SHA},
                        },
                    },
                },
            },
        },
        "shards": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["path", "records", "bytes", "sha256", "tokens"],
                "properties": {
                    "path": _RELPATH,
                    "source_shard": {"type": ["string", "null"]},
                    "records": _COUNT,
                    "bytes": _COUNT,
                    "sha256": _SHA,
                    "tokens": _TOKENS,
                },
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
                        "properties": {
                            "path": _RELPATH,
                            "source_shard": {"type": ["string", "null"]},
                            "records": _COUNT,
                            "bytes": _COUNT,
                            "sha256": _SHA,
                        },
                        "additionalProperties": False,
                    },
                },
            },
        },
        "totals": {
            "type": "object",
            "required": ["shards", "records", "bytes", "samples_in", "samples_rejected", "tokens"],
            "properties": {
                "shards": _COUNT,
                "records": _COUNT,
                "bytes": _COUNT,
                "samples_in": _COUNT,
                "samples_rejected": _COUNT,
                "tokens": _TOKENS,
            },
        },
    },
}


def _v1_schema() -> dict[str, Any]:
    """Version 1: the same layout, tokenizers as ``{name, fingerprint, config, source}``."""
    v1 = json.loads(json.dumps(MANIFEST_JSON_SCHEMA))
    v1["$id"] = "https://videopoet.dev/schemas/manifest.v1.json"
    v1["title"] = "videopoet dataset manifest (manifest.json), version 1"
    v1["properties"]["manifest_version"] = {"const": 1}
    v1["properties"]["lineage"]["properties"]["tokenizers"]["additionalProperties"] = {
        "type": "object",
        "required": ["fingerprint"],
        "properties": {
            "name": {"type": "string"},
            "fingerprint": {"type": "string"},
            "config": {"type": "object"},
            "source": {"type": "string"},
        },
    }
    return v1


MANIFEST_V1_JSON_SCHEMA: dict[str, Any] = _v1_schema()
