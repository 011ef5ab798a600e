"""The dataset store: versioned, immutable, verifiable token datasets under one root.

Layout (``root`` is a local directory or an fsspec URI)::

    <root>/<name>/<version>/manifest.json            written last: its presence makes the version exist
    <root>/<name>/<version>/shards/<stem>-00000.array_record
    <root>/<name>/<version>/rejects/<stem>.jsonl     {source_shard, key, stage, reason, message} lines
    <root>/<name>/<version>/stats/<stem>.json        per-input-shard stats (the done markers)
    <root>/<name>/.work/<version>/                   the resumable staging area of a version being built

Life of a version: :meth:`DatasetStore.begin` opens (or re-opens, for resume) the staging area; a
runner writes each input shard's outputs there and calls :meth:`WorkDir.finish_shard`, whose done
marker is written atomically after the shard files; :meth:`DatasetStore.commit` checks every marker's
files, builds the manifest (with the fingerprint of :mod:`videopoet.schemas.manifest`) and publishes:
locally by renaming the whole staging directory to ``<version>`` (atomic), on object stores by
copying the files and writing ``manifest.json`` last. Nothing half-written is ever visible as a
dataset. A published ``name@version`` is immutable: committing different content under it raises
:class:`ImmutableVersionError`; committing identical content is a no-op.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import fsspec

from videopoet.schemas import manifest as mf
from videopoet.schemas.config import config_fingerprint
from videopoet.schemas.errors import DatasetError, ImmutableVersionError
from videopoet.schemas.record import SCHEMA_VERSION as RECORD_SCHEMA_VERSION
from videopoet.schemas.record import TokenRecord
from videopoet.schemas.shards import SHARD_SUFFIX, ShardWriter, is_local, sha256_of

__all__ = [
    "Dataset",
    "DatasetStore",
    "VerifyReport",
    "WorkDir",
    "default_root",
    "open_dataset",
    "parse_ref",
    "verify",
    "write_dataset",
]

MANIFEST_FILE = "manifest.json"
WORK_DIR = ".work"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_INPUT_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def default_root() -> str:
    return os.environ.get("VIDEOPOET_ROOT") or "./datasets"


def _check_label(what: str, value: str) -> str:
    if not isinstance(value, str) or not _SAFE.match(value) or ".." in value:
        raise DatasetError(f"bad dataset {what} {value!r}: use letters, digits, '.', '_' or '-' "
                           f"(at most 128, starting with a letter or digit)")
    return value


def parse_ref(ref: str) -> tuple[str, str]:
    """``NAME@VERSION`` -> (name, version), validated."""
    if ref.count("@") != 1:
        raise DatasetError(f"bad dataset reference {ref!r}: expected NAME@VERSION")
    name, version = ref.split("@")
    return _check_label("name", name), _check_label("version", version)


def shard_stem(input_name: str) -> str:
    """Output file stem for an input shard name ('train-00003.tar' -> 'train-00003')."""
    base = os.path.basename(input_name.rstrip("/"))
    for suf in _INPUT_SUFFIXES:
        if base.endswith(suf) and len(base) > len(suf):
            base = base[: -len(suf)]
            break
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip("._-") or "shard"
    return stem[:120]


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("videopoet")
    except PackageNotFoundError:
        return "unknown"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class _FS:
    """Thin path helper over a local dir or an fsspec URI root."""

    def __init__(self, root: str):
        self.root = root.rstrip("/") or "/"
        self.local = is_local(root)
        if self.local:
            self.base = os.path.abspath(root[len("file://"):] if root.startswith("file://") else root)
            self.fs = fsspec.filesystem("file")
        else:
            self.fs, self.base = fsspec.core.url_to_fs(root)
            self.base = self.base.rstrip("/")
            self.protocol = root.split("://", 1)[0]

    def path(self, *parts: str) -> str:
        """Path for the filesystem object (local absolute path or the fs's own path)."""
        if self.local:
            return os.path.join(self.base, *parts)
        return "/".join([self.base, *parts])

    def uri(self, *parts: str) -> str:
        """URI a user or ShardWriter can open."""
        if self.local:
            return self.path(*parts)
        return f"{self.protocol}://{self.path(*parts).lstrip('/')}" if self.protocol != "memory" else \
            f"memory://{self.path(*parts)}"

    def exists(self, p: str) -> bool:
        return os.path.exists(p) if self.local else self.fs.exists(p)

    def isdir(self, p: str) -> bool:
        return os.path.isdir(p) if self.local else self.fs.isdir(p)

    def listdir(self, p: str) -> list[str]:
        if self.local:
            return sorted(os.listdir(p)) if os.path.isdir(p) else []
        if not self.fs.exists(p):
            return []
        return sorted(os.path.basename(x.rstrip("/")) for x in self.fs.ls(p, detail=False))

    def makedirs(self, p: str) -> None:
        if self.local:
            os.makedirs(p, exist_ok=True)
        else:
            self.fs.makedirs(p, exist_ok=True)

    def read_json(self, p: str) -> Any:
        try:
            with self.fs.open(p, "rb") as f:
                return json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            raise DatasetError(f"not found: {p}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DatasetError(f"{p}: not valid JSON ({e})") from None

    def write_json_atomic(self, p: str, obj: Any) -> None:
        blob = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
        if self.local:
            os.makedirs(os.path.dirname(p), exist_ok=True)
            tmp = os.path.join(os.path.dirname(p), f".tmp-{uuid.uuid4().hex[:12]}-{os.path.basename(p)}")
            with open(tmp, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, p)
        else:  # object stores publish an object atomically
            self.fs.pipe(p, blob)

    def rm(self, p: str) -> None:
        if self.local:
            if os.path.isdir(p):
                shutil.rmtree(p)
            elif os.path.exists(p):
                os.unlink(p)
        elif self.fs.exists(p):
            self.fs.rm(p, recursive=True)


@dataclasses.dataclass
class VerifyReport:
    ref: str
    ok: bool
    problems: list[str]
    checked_files: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Dataset:
    """A published version: its manifest and where its files are."""

    def __init__(self, fs: _FS, rel: tuple[str, ...], manifest: dict[str, Any]):
        self._fs = fs
        self._rel = rel
        self.manifest = manifest
        self.name = manifest["name"]
        self.version = manifest["version"]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def uri(self) -> str:
        return self._fs.uri(*self._rel)

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    def file_uri(self, relpath: str) -> str:
        return self._fs.uri(*self._rel, *relpath.split("/"))

    def shard_paths(self) -> list[str]:
        return [self.file_uri(s["path"]) for s in self.manifest["shards"]]

    def reject_paths(self) -> list[str]:
        return [self.file_uri(r["path"]) for r in self.manifest["rejects"]["files"]]

    def iter_rejects(self) -> Iterable[dict[str, Any]]:
        for p in self.reject_paths():
            with fsspec.open(p, "rt", encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        yield json.loads(line)

    def info(self) -> dict[str, Any]:
        m = self.manifest
        lin = m["lineage"]
        return {
            "ref": self.ref,
            "uri": self.uri,
            "fingerprint": m["fingerprint"],
            "created": m["created"],
            "record_schema_version": m["record_schema_version"],
            "package_version": lin.get("package_version"),
            "runner": lin.get("runner", {}),
            "inputs": len(lin.get("inputs", [])),
            "tokenizers": {k: {"name": v.get("name"), "fingerprint": v.get("fingerprint")}
                           for k, v in sorted(lin.get("tokenizers", {}).items())},
            "totals": m["totals"],
            "rejects_by_reason": dict(sorted(m["rejects"]["by_reason"].items())),
        }


class WorkDir:
    """The resumable staging area of one version (see module docstring)."""

    def __init__(self, store: "DatasetStore", name: str, version: str, config_fp: str | None,
                 committed: dict[str, Any] | None):
        self.store = store
        self.name = name
        self.version = version
        self.config_fingerprint = config_fp
        self.committed = committed  # the published manifest when name@version already exists
        self.rel = (name, WORK_DIR, version)

    @property
    def uri(self) -> str:
        return self.store._fs.uri(*self.rel)

    def shard_path(self, input_name: str, part: int = 0) -> str:
        return self.store._fs.uri(*self.rel, "shards", f"{shard_stem(input_name)}-{part:05d}{SHARD_SUFFIX}")

    def rejects_path(self, input_name: str) -> str:
        return self.store._fs.uri(*self.rel, "rejects", f"{shard_stem(input_name)}.jsonl")

    def _stats_path(self, input_name: str) -> str:
        return self.store._fs.path(*self.rel, "stats", f"{shard_stem(input_name)}.json")

    def is_done(self, input_name: str) -> bool:
        return self.store._fs.exists(self._stats_path(input_name))

    def finish_shard(self, input_name: str, stats: Mapping[str, Any]) -> dict[str, Any]:
        """Record an input shard as done. ``stats`` must hold ``outputs`` (the dicts
        :meth:`ShardWriter.close` returned) and may hold ``input`` {name, size, sha256, uri},
        ``samples_in``, ``rejects`` {records, by_reason} and anything else (kept as-is).
        The marker is written atomically after checking each output file exists."""
        fs = self.store._fs
        outputs = []
        for o in stats.get("outputs", []):
            base = os.path.basename(str(o["path"]).rstrip("/"))
            if not fs.exists(fs.path(*self.rel, "shards", base)):
                raise DatasetError(f"finish_shard({input_name}): output {base} is not in the work dir")
            outputs.append({"path": f"shards/{base}", "records": int(o["records"]), "bytes": int(o["bytes"]),
                            "sha256": str(o["sha256"]), "tokens": mf._tokens(o.get("tokens"))})
        marker = dict(stats)
        marker["input_name"] = input_name
        marker["outputs"] = sorted(outputs, key=lambda o: o["path"])
        fs.write_json_atomic(self._stats_path(input_name), marker)
        return marker

    def done_shards(self) -> dict[str, dict[str, Any]]:
        fs = self.store._fs
        out = {}
        for fn in fs.listdir(fs.path(*self.rel, "stats")):
            if fn.endswith(".json") and not fn.startswith(".tmp-"):
                m = fs.read_json(fs.path(*self.rel, "stats", fn))
                out[m["input_name"]] = m
        return out


class DatasetStore:
    def __init__(self, root: str | None = None):
        self.root = root or default_root()
        self._fs = _FS(self.root)

    # ------------------------------------------------------------------ reading
    def exists(self, name: str, version: str) -> bool:
        return self._fs.exists(self._fs.path(name, version, MANIFEST_FILE))

    def open(self, ref: str) -> Dataset:
        """``NAME@VERSION`` in this store, or a path/URI of a version directory."""
        if "@" in ref and not ref.endswith(MANIFEST_FILE) and "/" not in ref.split("@", 1)[0]:
            name, version = parse_ref(ref)
            p = self._fs.path(name, version, MANIFEST_FILE)
            if not self._fs.exists(p):
                known = [v["version"] for v in self.list() if v["name"] == name]
                hint = f" (versions of {name}: {', '.join(known)})" if known else ""
                raise DatasetError(f"dataset {ref} not found under {self.root}{hint}")
            m = mf.check_manifest(self._fs.read_json(p), f"{ref}/manifest.json")
            return Dataset(self._fs, (name, version), m)
        return open_path(ref)

    def list(self) -> list[dict[str, Any]]:
        out = []
        for name in self._fs.listdir(self._fs.path()):
            if name.startswith(".") or not self._fs.isdir(self._fs.path(name)):
                continue
            for version in self._fs.listdir(self._fs.path(name)):
                if version.startswith("."):
                    continue
                p = self._fs.path(name, version, MANIFEST_FILE)
                if self._fs.exists(p):
                    try:
                        m = self._fs.read_json(p)
                        out.append({"name": name, "version": version, "ref": f"{name}@{version}",
                                    "fingerprint": m.get("fingerprint"), "created": m.get("created"),
                                    "records": m.get("totals", {}).get("records"),
                                    "bytes": m.get("totals", {}).get("bytes")})
                    except DatasetError as e:
                        out.append({"name": name, "version": version, "ref": f"{name}@{version}", "error": str(e)})
        return out

    def verify(self, ref: str | Dataset, deep: bool = False) -> VerifyReport:
        ds = ref if isinstance(ref, Dataset) else self.open(ref)
        return verify(ds, deep=deep)

    # ------------------------------------------------------------------ writing
    def begin(self, name: str, version: str, pipeline_config: Any = None) -> WorkDir:
        """Open the staging area of ``name@version`` (resuming one that exists).

        With ``pipeline_config``, refuses a config that differs from the one the published version
        (or the work in progress) was made with."""
        _check_label("name", name)
        _check_label("version", version)
        cfp = None if pipeline_config is None else config_fingerprint(pipeline_config)
        committed = None
        if self.exists(name, version):
            committed = self.open(f"{name}@{version}").manifest
            old = committed["lineage"].get("pipeline_config_fingerprint")
            if cfp is not None and old is not None and old != cfp:
                changed = mf._changed_keys(committed["lineage"].get("pipeline_config", {}),
                                           mf.to_plain(pipeline_config))
                keys = ", ".join(sorted(changed)[:6]) or "?"
                raise ImmutableVersionError(
                    f"{name}@{version} is published with a different pipeline config (changed: {keys}); "
                    f"publish under a new version")
        work = WorkDir(self, name, version, cfp, committed)
        if committed is None:
            fs = self._fs
            lock = fs.path(*work.rel, "config.json")
            if fs.exists(lock):
                old = fs.read_json(lock).get("pipeline_config_fingerprint")
                if cfp is not None and old is not None and old != cfp:
                    raise ImmutableVersionError(
                        f"an unfinished build of {name}@{version} at {work.uri} used a different pipeline "
                        f"config; finish it with the same config, delete that directory, or use a new version")
            else:
                fs.makedirs(fs.path(*work.rel))
                fs.write_json_atomic(lock, {"pipeline_config_fingerprint": cfp,
                                            "pipeline_config": mf.to_plain(pipeline_config)})
        return work

    def commit(self, work: WorkDir, lineage: Mapping[str, Any] | None = None,
               expected_inputs: Iterable[str] | None = None) -> dict[str, Any]:
        """Publish ``work`` as ``name@version``; returns the manifest (see module docstring).

        ``lineage`` may carry inputs, tokenizers, pipeline_config and runner; inputs default to the
        ``input`` entries of the done markers. ``expected_inputs`` (names) must all be done."""
        fs = self._fs
        lineage = dict(lineage or {})
        done = work.done_shards()
        if expected_inputs is not None:
            missing = sorted(set(expected_inputs) - set(done))
            if missing:
                raise DatasetError(f"cannot commit {work.name}@{work.version}: {len(missing)} input shard(s) "
                                   f"not processed: {', '.join(missing[:5])}")
        shards: list[dict[str, Any]] = []
        reject_files: list[dict[str, Any]] = []
        by_reason: dict[str, int] = {}
        samples_in = rejected = 0
        inputs_from_markers = []
        for input_name in sorted(done):
            mk = done[input_name]
            for o in mk["outputs"]:
                p = fs.path(*work.rel, *o["path"].split("/"))
                if not fs.exists(p):
                    raise DatasetError(f"cannot commit: {o['path']} (from {input_name}) is missing from {work.uri}")
                digest, size = sha256_of(fs.uri(*work.rel, *o["path"].split("/")))
                if digest != o["sha256"] or size != o["bytes"]:
                    raise DatasetError(f"cannot commit: {o['path']} (from {input_name}) changed after it was "
                                       f"finished; delete {work.uri} and rebuild")
                shards.append({**o, "source_shard": input_name})
            rj = mk.get("rejects") or {}
            rpath = work.rejects_path(input_name)
            rel = f"rejects/{shard_stem(input_name)}.jsonl"
            if fs.exists(fs.path(*work.rel, *rel.split("/"))):
                digest, size = sha256_of(rpath)
                reject_files.append({"path": rel, "source_shard": input_name, "records": int(rj.get("records", 0)),
                                     "bytes": size, "sha256": digest})
            for k, v in (rj.get("by_reason") or {}).items():
                by_reason[k] = by_reason.get(k, 0) + int(v)
            rejected += int(rj.get("records", 0))
            samples_in += int(mk.get("samples_in", 0))
            if mk.get("input"):
                inputs_from_markers.append(dict(mk["input"]))
        # files a killed run left behind that no marker owns never reach the published version
        owned = {o["path"] for s in [shards] for o in s} | {r["path"] for r in reject_files}
        for sub in ("shards", "rejects"):
            for fn in fs.listdir(fs.path(*work.rel, sub)):
                if f"{sub}/{fn}" not in owned:
                    fs.rm(fs.path(*work.rel, sub, fn))
        for fn in fs.listdir(fs.path(*work.rel, "stats")):
            if fn.startswith(".tmp-"):
                fs.rm(fs.path(*work.rel, "stats", fn))
        inputs = lineage.get("inputs", inputs_from_markers)
        names = [i["name"] for i in inputs]
        if len(names) != len(set(names)):
            raise DatasetError("input shard names must be unique within a dataset (two inputs share a base name)")
        pipeline_config = mf.to_plain(lineage.get("pipeline_config", {}))
        m: dict[str, Any] = {
            "format": mf.MANIFEST_FORMAT,
            "manifest_version": mf.MANIFEST_VERSION,
            "name": work.name,
            "version": work.version,
            "created": _now(),
            "record_schema_version": RECORD_SCHEMA_VERSION,
            "lineage": {
                "inputs": sorted(({"name": str(i["name"]), "size": int(i.get("size", 0)), "sha256": str(i["sha256"]),
                                   **({"uri": str(i["uri"])} if i.get("uri") else {})} for i in inputs),
                                 key=lambda i: i["name"]),
                "tokenizers": mf.to_plain(lineage.get("tokenizers", {})),
                "pipeline_config": pipeline_config,
                "pipeline_config_fingerprint": work.config_fingerprint,
                "package_version": str(lineage.get("package_version") or _package_version()),
                "runner": mf.to_plain(lineage.get("runner", {})),
            },
            "shards": sorted(shards, key=lambda s: s["path"]),
            "rejects": {"total": rejected, "by_reason": dict(sorted(by_reason.items())),
                        "files": sorted(reject_files, key=lambda r: r["path"])},
        }
        m["totals"] = mf.totals_of(m["shards"], samples_in, rejected)
        m["fingerprint"] = mf.compute_fingerprint(m)
        mf.check_manifest(m, f"{work.name}@{work.version} (new)")
        if work.committed is None and self.exists(work.name, work.version):
            work.committed = self.open(f"{work.name}@{work.version}").manifest
        if work.committed is not None:
            return self._same_or_refuse(work, work.committed, m)
        version_rel = (work.name, work.version)
        fs.write_json_atomic(fs.path(*work.rel, MANIFEST_FILE), m)
        fs.rm(fs.path(*work.rel, "config.json"))
        if fs.local:
            try:
                os.rename(fs.path(*work.rel), fs.path(*version_rel))
            except OSError:  # published concurrently by someone else
                if self.exists(work.name, work.version):
                    return self._same_or_refuse(work, self.open(f"{work.name}@{work.version}").manifest, m)
                raise
        else:
            for sub in ("shards", "rejects", "stats"):
                for fn in fs.listdir(fs.path(*work.rel, sub)):
                    fs.fs.copy(fs.path(*work.rel, sub, fn), fs.path(*version_rel, sub, fn))
            fs.write_json_atomic(fs.path(*version_rel, MANIFEST_FILE), m)  # last: the commit point
            fs.rm(fs.path(*work.rel))
        self._cleanup_work_parent(work.name)
        return m

    def _same_or_refuse(self, work: WorkDir, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        if old["fingerprint"] == new["fingerprint"]:
            self._fs.rm(self._fs.path(*work.rel))
            self._cleanup_work_parent(work.name)
            return old
        self._fs.rm(self._fs.path(*work.rel))  # this content can never be published under this version
        self._cleanup_work_parent(work.name)
        d = mf.diff_manifests(old, new)
        what = ", ".join(k for k in ("lineage", "shards", "totals") if k in d) or "content"
        raise ImmutableVersionError(
            f"{work.name}@{work.version} is already published with different content ({what} differ: "
            f"fingerprint {old['fingerprint'][:12]} vs {new['fingerprint'][:12]}); publish under a new version")

    def _cleanup_work_parent(self, name: str) -> None:
        p = self._fs.path(name, WORK_DIR)
        if self._fs.local and os.path.isdir(p) and not os.listdir(p):
            os.rmdir(p)


def open_path(path: str) -> Dataset:
    """Open a version directory (or its manifest.json) given as a path or URI."""
    p = path.rstrip("/")
    if p.endswith(MANIFEST_FILE):
        p = p[: -len(MANIFEST_FILE)].rstrip("/")
    if is_local(p):
        p = os.path.abspath(p[len("file://"):] if p.startswith("file://") else p)
        parent, version = os.path.split(p)
        root, name = os.path.split(parent)
    else:
        root, name, version = p.rsplit("/", 2)
    fs = _FS(root)
    mp = fs.path(name, version, MANIFEST_FILE)
    if not fs.exists(mp):
        raise DatasetError(f"no dataset at {path} (no manifest.json)")
    m = mf.check_manifest(fs.read_json(mp), mp)
    return Dataset(fs, (name, version), m)


def open_dataset(ref: str, root: str | None = None) -> Dataset:
    """``NAME@VERSION`` under ``root`` (default ``$VIDEOPOET_ROOT`` or ./datasets), or a version dir."""
    return DatasetStore(root).open(ref)


def verify(ds: Dataset, deep: bool = False) -> VerifyReport:
    """Re-hash every shard and reject file; name each missing, truncated or altered one.

    ``deep`` also opens every intact shard and checks its record count and that records decode."""
    problems: list[str] = []
    m = ds.manifest
    checked = 0
    fs = ds._fs
    entries = [("shard", s) for s in m["shards"]] + [("rejects file", r) for r in m["rejects"]["files"]]
    for what, e in entries:
        uri = ds.file_uri(e["path"])
        checked += 1
        if not fs.exists(fs.path(*ds._rel, *e["path"].split("/"))):
            problems.append(f"missing {what}: {e['path']}")
            continue
        digest, size = sha256_of(uri)
        if size < e["bytes"]:
            problems.append(f"truncated {what}: {e['path']} ({size} of {e['bytes']} bytes)")
        elif digest != e["sha256"]:
            problems.append(f"altered {what}: {e['path']} (sha256 {digest[:12]}, manifest says {e['sha256'][:12]})")
        elif deep and what == "shard":
            from videopoet.schemas.shards import ShardReader

            try:
                with ShardReader(uri) as r:
                    if len(r) != e["records"]:
                        problems.append(f"record count of {e['path']}: {len(r)}, manifest says {e['records']}")
                    for i in range(len(r)):
                        r[i]
            except Exception as ex:  # noqa: BLE001 - report, keep checking the rest
                problems.append(f"unreadable shard: {e['path']} ({ex})")
    listed = {e["path"] for _, e in entries}
    for sub in ("shards", "rejects"):
        for fn in fs.listdir(fs.path(*ds._rel, sub)):
            if f"{sub}/{fn}" not in listed:
                problems.append(f"unexpected file not in the manifest: {sub}/{fn}")
    if mf.compute_fingerprint(m) != m["fingerprint"]:
        problems.append("manifest fingerprint does not match the manifest's content (manifest edited?)")
    tot = mf.totals_of(m["shards"], m["totals"]["samples_in"], m["rejects"]["total"])
    if tot != m["totals"]:
        problems.append("manifest totals do not add up to its shard entries")
    return VerifyReport(ref=ds.ref, ok=not problems, problems=problems, checked_files=checked)


def write_dataset(root: str, name: str, version: str, records_by_shard: Mapping[str, Iterable[TokenRecord]],
                  lineage: Mapping[str, Any] | None = None, pipeline_config: Any = None,
                  rejects_by_shard: Mapping[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Write and commit a dataset from in-memory records (one input shard name -> its records).

    For tests and small tools; the pipelines use :meth:`DatasetStore.begin` / ``commit`` directly.
    Input shard hashes default to the sha256 of the name (there is no input file)."""
    import hashlib

    st = DatasetStore(root)
    cfg = pipeline_config if pipeline_config is not None else {}
    work = st.begin(name, version, cfg)
    inputs = []
    for input_name, recs in records_by_shard.items():
        out = ShardWriter(work.shard_path(input_name))
        n = 0
        try:
            for r in recs:
                out.write(r)
                n += 1
        except BaseException:
            out.abort()
            raise
        stats_out = out.close()
        rejects = list((rejects_by_shard or {}).get(input_name, []))
        by_reason: dict[str, int] = {}
        if rejects:
            with fsspec.open(work.rejects_path(input_name), "wt", encoding="utf-8") as f:
                for r in rejects:
                    f.write(json.dumps(r, sort_keys=True) + "\n")
                    by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
        inp = {"name": input_name, "size": 0, "sha256": hashlib.sha256(input_name.encode()).hexdigest()}
        inputs.append(inp)
        work.finish_shard(input_name, {"input": inp, "outputs": [stats_out], "samples_in": n + len(rejects),
                                       "rejects": {"records": len(rejects), "by_reason": by_reason}})
    lin = {"inputs": inputs, "pipeline_config": cfg, **dict(lineage or {})}
    return st.commit(work, lin)
