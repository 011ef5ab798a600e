"""The dataset store: versioned, immutable, verifiable token datasets under one root.

Layout (``root`` is a local directory or an fsspec URI)::

    <root>/<name>/<version>/manifest.json            written last: its presence makes the version exist
    <root>/<name>/<version>/shards/<stem>-00000.array_record
    <root>/<name>/<version>/rejects/<stem>.jsonl     {source_shard, key, stage, reason, message} lines
    <root>/<name>/<version>/stats/<stem>.json        per-input-shard stats (the done markers)
    <root>/<name>/.work/<version>[+<build id>]/      the resumable staging area of a version being built
    <root>/<name>/.tags/ .log/ .locks/               tags, the dataset log, leases (videopoet.schemas.lifecycle)

Life of a version: :meth:`DatasetStore.begin` opens (or re-opens, for resume) the staging area; a
runner writes each input shard's outputs there and calls :meth:`WorkDir.finish_shard`, whose done
marker is written atomically after the shard files; :meth:`DatasetStore.commit` checks every marker's
files, builds the manifest (with the fingerprint of :mod:`videopoet.schemas.manifest`) and publishes.
A published ``name@version`` is immutable: committing different content under it raises
:class:`ImmutableVersionError`; committing identical content is a no-op.

Publishing is exclusive: it runs under the version's lease (:mod:`videopoet.schemas.lease`), so when
two jobs finish the same version at once one publishes and the other, taking the lease next, finds it
published and is a no-op or refused. Under the lease, locally, a snapshot of exactly the manifest's
files (hard links) with the manifest is renamed to ``<version>`` in one step; on object stores the
files are copied, each copy checked against the manifest, and ``manifest.json`` is written last with
an exclusive create (S3 ``If-None-Match``) as the commit point. Nothing half-written is ever visible
as a dataset: a version exists exactly when its manifest does.

The staging area ``.work/<version>/`` is shared by the processes of one build (a pipeline's workers,
a rerun that resumes). Independent jobs that may build the same version at the same time give each
a build id (``begin(..., build_id=...)``, ``.work/<version>+<id>/``) so they never write into each
other's files; which of them publishes is then decided by the lease alone.

Versions are named ``NAME@VERSION``, ``NAME@TAG`` or ``NAME@latest`` (:meth:`DatasetStore.resolve`);
tags, the dataset log, removal and garbage collection are in :mod:`videopoet.schemas.lifecycle`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import errno
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import fsspec

from videopoet.schemas import lease, manifest
from videopoet.schemas.config import config_fingerprint
from videopoet.schemas.errors import DatasetError, DiskFullError, ImmutableVersionError, PublishedMeanwhileError
from videopoet.schemas.record import SCHEMA_VERSION as RECORD_SCHEMA_VERSION
from videopoet.schemas.record import TokenRecord
from videopoet.schemas.shard_stats import ShardStats
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
TAGS_DIR = ".tags"  # <root>/<name>/.tags/<tag>.json -> {version, updated, by}
LOG_DIR = ".log"  # <root>/<name>/.log/<time>-<id>.json: one object per event (see videopoet.schemas.lifecycle)
BUILD_SEP = "+"  # .work/<version>+<build id>: a builder's private staging area (not a label character)
LATEST = "latest"  # NAME@latest: the newest version (see DatasetStore.resolve); not a tag or version name
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_INPUT_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def _natural(s: str) -> tuple:
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.findall(r"\d+|\D+", s))


def _newness(v: Mapping[str, Any]) -> tuple:
    """Sort key of a version summary: its manifest's created time, then its version in natural order."""
    try:
        t = _dt.datetime.fromisoformat(str(v.get("created")).replace("Z", "+00:00")).timestamp()
    except ValueError:
        t = float("-inf")
    return t, _natural(v["version"])


def default_root() -> str:
    return os.environ.get("VIDEOPOET_ROOT") or "./datasets"


def _check_label(what: str, value: str) -> str:
    if not isinstance(value, str) or not _SAFE.match(value) or ".." in value:
        raise DatasetError(
            f"bad dataset {what} {value!r}: use letters, digits, '.', '_' or '-' "
            f"(at most 128, starting with a letter or digit)"
        )
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


def log_event(fs: _FS, name: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """Record ``event`` in the log of ``name`` (with time and user@host); returns the record."""
    rec = {"time": _now(), "by": lease.who(), **event}
    t = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"
    blob = (json.dumps(rec, sort_keys=True) + "\n").encode()
    if not fs.create_exclusive(fs.path(name, LOG_DIR, f"{stamp}-{uuid.uuid4().hex[:8]}.json"), blob):
        raise DatasetError(f"could not record an event in the log of {name}")  # a random id collided
    return rec


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("videopoet")
    except PackageNotFoundError:
        return "unknown"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _mtime_of(info: Mapping[str, Any]) -> float:
    """Modified time of an fsspec ``info`` dict (each filesystem names it differently); 0 if unknown."""
    for k in ("mtime", "LastModified", "updated", "created"):
        v = info.get(k)
        if v is None:
            continue
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, _dt.datetime):
            return (v if v.tzinfo else v.replace(tzinfo=_dt.timezone.utc)).timestamp()
        try:
            return _dt.datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
    return 0.0


def _content_tag(info: Mapping[str, Any]) -> str | None:
    """The store's own content checksum in an fsspec ``info`` dict (S3 ETag, GCS md5/crc32c), if any."""
    for k in ("ETag", "md5Hash", "crc32c"):
        if info.get(k):
            return f"{k}:{info[k]}"
    return None


class _FS:
    """Thin path helper over a local dir or an fsspec URI root."""

    def __init__(self, root: str):
        self.root = root.rstrip("/") or "/"
        self.local = is_local(root)
        if self.local:
            self.base = os.path.abspath(root[len("file://") :] if root.startswith("file://") else root)
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
        return (
            f"{self.protocol}://{self.path(*parts).lstrip('/')}"
            if self.protocol != "memory"
            else f"memory://{self.path(*parts)}"
        )

    def _fresh(self, p: str) -> None:
        """Forget cached listings: another process may have written since (s3fs, gcsfs cache them)."""
        self.fs.invalidate_cache(p)

    def exists(self, p: str) -> bool:
        if self.local:
            return os.path.exists(p)
        self._fresh(p)
        return self.fs.exists(p)

    def isdir(self, p: str) -> bool:
        return os.path.isdir(p) if self.local else self.fs.isdir(p)

    def listdir(self, p: str) -> list[str]:
        if self.local:
            return sorted(os.listdir(p)) if os.path.isdir(p) else []
        if not self.exists(p):
            return []
        return sorted({os.path.basename(x.rstrip("/")) for x in self.fs.ls(p, detail=False)} - {""})

    def create_exclusive(self, p: str, blob: bytes) -> bool:
        """Write ``p`` only if it does not exist, atomically; False when it already exists.

        Local: a complete temporary file hard-linked to ``p`` (``link`` fails on an existing name).
        Object stores: the filesystem's ``mode="create"`` write (S3 ``If-None-Match: *``, GCS
        ``ifGenerationMatch=0``), which the store decides; an object is never seen half-written. A
        filesystem without an atomic create gets fsspec's check-then-write (exclusive only against
        writers that are not simultaneous)."""
        if self.local:
            d = os.path.dirname(p)
            os.makedirs(d, exist_ok=True)
            tmp = os.path.join(d, f".tmp-{uuid.uuid4().hex[:12]}-{os.path.basename(p)}")
            with open(tmp, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, p)
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        try:
            self.fs.pipe_file(p, blob, mode="create")
            return True
        except FileExistsError:
            return False
        except OSError as e:  # s3fs reports some precondition failures as EINVAL
            if e.errno == errno.EINVAL and self.exists(p):
                return False
            raise
        finally:
            self._fresh(p)

    def walk_files(self, p: str) -> list[tuple[str, int, float]]:
        """(path, bytes, modified time as epoch seconds) of every file under ``p``."""
        out = []
        if self.local:
            if os.path.isfile(p):
                st = os.stat(p)
                return [(p, st.st_size, st.st_mtime)]
            for d, _, files in os.walk(p):
                for fn in files:
                    try:
                        st = os.stat(os.path.join(d, fn))
                    except FileNotFoundError:
                        continue
                    out.append((os.path.join(d, fn), st.st_size, st.st_mtime))
            return sorted(out)
        if not self.exists(p):
            return []
        infos = self.fs.find(p, detail=True) if self.fs.isdir(p) else {p: self.fs.info(p)}
        for q, info in infos.items():
            if info.get("type", "file") == "file":
                out.append((q, int(info.get("size") or 0), _mtime_of(info)))
        return sorted(out)

    def makedirs(self, p: str) -> None:
        if self.local:
            for attempt in range(3):
                try:
                    os.makedirs(p, exist_ok=True)
                    return
                except FileNotFoundError:  # a parent was removed as empty at that moment by another process
                    if attempt == 2:
                        raise
        else:
            self.fs.makedirs(p, exist_ok=True)

    def read_json(self, p: str) -> Any:
        try:
            if self.local:
                with open(p, "rb") as f:
                    blob = f.read()
            else:  # one GET of the whole object: a file object's ranged reads fail if it is replaced meanwhile
                blob = self.fs.cat_file(p)
            return json.loads(blob.decode("utf-8"))
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
            "tokenizers": {
                k: {"name": v.get("name"), "fingerprint": v.get("fingerprint")}
                for k, v in sorted(lin.get("tokenizers", {}).items())
            },
            "totals": m["totals"],
            "rejects_by_reason": dict(sorted(m["rejects"]["by_reason"].items())),
        }


class WorkDir:
    """The resumable staging area of one version (see module docstring)."""

    def __init__(
        self,
        store: DatasetStore,
        name: str,
        version: str,
        config_fp: str | None,
        committed: dict[str, Any] | None,
        build_id: str | None = None,
    ):
        self.store = store
        self.name = name
        self.version = version
        self.config_fingerprint = config_fp
        self.committed = committed  # the published manifest when name@version already exists
        self.build_id = build_id
        self.rel = (name, WORK_DIR, version if build_id is None else f"{version}{BUILD_SEP}{build_id}")

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

    def finish_shard(self, stats: ShardStats) -> ShardStats:
        """Record input shard ``stats.input_name`` as done: its marker (``stats`` with the outputs
        named relative to the version dir) is written atomically after checking each output exists."""
        fs = self.store._fs
        input_name = stats.input_name
        outputs = []
        for o in stats.outputs:
            base = os.path.basename(str(o["path"]).rstrip("/"))
            if not fs.exists(fs.path(*self.rel, "shards", base)):
                raise DatasetError(f"finish_shard({input_name}): output {base} is not in the work dir")
            outputs.append(
                {
                    "path": f"shards/{base}",
                    "records": int(o["records"]),
                    "bytes": int(o["bytes"]),
                    "sha256": str(o["sha256"]),
                    "tokens": manifest._tokens(o.get("tokens")),
                }
            )
        marker = dataclasses.replace(stats, outputs=tuple(sorted(outputs, key=lambda o: o["path"])))
        fs.write_json_atomic(self._stats_path(input_name), marker.to_marker())
        return marker

    def done_shards(self) -> dict[str, ShardStats]:
        fs = self.store._fs
        out = {}
        for fn in fs.listdir(fs.path(*self.rel, "stats")):
            if fn.endswith(".json") and not fn.startswith(".tmp-"):
                m = ShardStats.from_marker(fs.read_json(fs.path(*self.rel, "stats", fn)))
                out[m.input_name] = m
        return out


class DatasetStore:
    def __init__(self, root: str | None = None):
        self.root = root or default_root()
        self._fs = _FS(self.root)

    # ------------------------------------------------------------------ reading
    def exists(self, name: str, version: str) -> bool:
        return self._fs.exists(self._fs.path(name, version, MANIFEST_FILE))

    def open(self, ref: str) -> Dataset:
        """``NAME@VERSION``, ``NAME@TAG`` or ``NAME@latest`` in this store (see :meth:`resolve`), or a
        path/URI of a version directory."""
        if "@" in ref and not ref.endswith(MANIFEST_FILE) and "/" not in ref.split("@", 1)[0]:
            name, label = parse_ref(ref)
            version = self.resolve(name, label)
            p = self._fs.path(name, version, MANIFEST_FILE)
            m = manifest.check_manifest(self._fs.read_json(p), f"{name}@{version}/manifest.json")
            return Dataset(self._fs, (name, version), m)
        return open_path(ref)

    def resolve(self, name: str, label: str) -> str:
        """The version ``name@label`` means: a published version of that name, else ``latest`` (the
        newest version: latest manifest ``created`` time, ties broken by the version string in natural
        order, so v10 is newer than v9), else a tag (``<root>/<name>/.tags/<label>.json``)."""
        _check_label("name", name)
        _check_label("version or tag", label)
        if self.exists(name, label):
            return label
        if label == LATEST:
            vs = [v for v in self.versions(name) if "error" not in v]
            if vs:
                return max(vs, key=_newness)["version"]
        else:
            t = self.tags(name).get(label)
            if t is not None:
                if not self.exists(name, t["version"]):
                    raise DatasetError(
                        f"tag {name}@{label} points at {name}@{t['version']}, which is not published "
                        f"under {self.root} (removed?); move the tag with 'videopoet data tag'"
                    )
                return t["version"]
        known = [v["version"] for v in self.versions(name)]
        tags = sorted(self.tags(name))
        hint = "".join(
            [f"; versions of {name}: {', '.join(known)}" if known else "", f"; tags: {', '.join(tags)}" if tags else ""]
        )
        raise DatasetError(f"dataset {name}@{label} not found under {self.root}{hint}")

    def names(self) -> list[str]:
        return [
            n
            for n in self._fs.listdir(self._fs.path())
            if not n.startswith(".") and _SAFE.match(n) and self._fs.isdir(self._fs.path(n))
        ]

    def versions(self, name: str) -> list[dict[str, Any]]:
        """Summaries of the published versions of ``name`` (an unreadable manifest gives an ``error`` entry)."""
        out = []
        for version in self._fs.listdir(self._fs.path(name)):
            if version.startswith(".") or not _SAFE.match(version):
                continue
            p = self._fs.path(name, version, MANIFEST_FILE)
            if not self._fs.exists(p):
                continue
            try:
                m = self._fs.read_json(p)
                out.append(
                    {
                        "name": name,
                        "version": version,
                        "ref": f"{name}@{version}",
                        "fingerprint": m.get("fingerprint"),
                        "created": m.get("created"),
                        "records": m.get("totals", {}).get("records"),
                        "bytes": m.get("totals", {}).get("bytes"),
                    }
                )
            except DatasetError as e:
                out.append({"name": name, "version": version, "ref": f"{name}@{version}", "error": str(e)})
        return out

    def tags(self, name: str) -> dict[str, dict[str, Any]]:
        """tag -> {version, updated, by} for ``name``."""
        out = {}
        d = self._fs.path(name, TAGS_DIR)
        for fn in self._fs.listdir(d):
            tag = fn[: -len(".json")]
            if fn.endswith(".json") and not fn.startswith(".") and _SAFE.match(tag):
                try:
                    out[tag] = self._fs.read_json(self._fs.path(name, TAGS_DIR, fn))
                except DatasetError:
                    continue  # removed while listing
        return out

    def list(self) -> list[dict[str, Any]]:
        """Every published version, with its ``tags`` and whether it is the ``latest`` of its name."""
        out = []
        for name in self.names():
            vs = self.versions(name)
            by_version: dict[str, list[str]] = {}
            for tag, t in self.tags(name).items():
                by_version.setdefault(t.get("version"), []).append(tag)
            newest = max((v for v in vs if "error" not in v), key=_newness, default=None)
            for v in vs:
                v["tags"] = sorted(by_version.get(v["version"], []))
                v["latest"] = newest is not None and v["version"] == newest["version"]
                out.append(v)
        return out

    def verify(self, ref: str | Dataset, deep: bool = False) -> VerifyReport:
        ds = ref if isinstance(ref, Dataset) else self.open(ref)
        return verify(ds, deep=deep)

    # ------------------------------------------------------------------ writing
    def begin(self, name: str, version: str, pipeline_config: Any = None, build_id: str | None = None) -> WorkDir:
        """Open the staging area of ``name@version`` (resuming one that exists).

        With ``pipeline_config``, refuses a config that differs from the one the published version
        (or the work in progress) was made with. Without ``build_id`` the staging area is
        ``.work/<version>/``, shared by every process of one build (a pipeline's workers, a rerun that
        resumes); with one it is ``.work/<version>+<build_id>/``, private to that build (resumed by
        reusing the id), so independent jobs building the same version never write into each other's
        files. Either way :meth:`commit` publishes under an exclusive lease."""
        _check_label("name", name)
        _check_label("version", version)
        if build_id is not None:
            _check_label("build id", build_id)
        if version == LATEST:
            raise DatasetError(f"{name}@{LATEST} is reserved (it means the newest version); choose another version")
        if not self.exists(name, version) and version in self.tags(name):
            raise DatasetError(
                f"{name}@{version} is a tag (-> {self.tags(name)[version].get('version')}); "
                f"a version may not share a tag's name"
            )
        cfp = None if pipeline_config is None else config_fingerprint(pipeline_config)
        committed = None
        if self.exists(name, version):
            committed = self.open(f"{name}@{version}").manifest
            old = committed["lineage"].get("pipeline_config_fingerprint")
            if cfp is not None and old is not None and old != cfp:
                changed = manifest._changed_keys(
                    committed["lineage"].get("pipeline_config", {}), manifest.to_plain(pipeline_config)
                )
                keys = ", ".join(sorted(changed)[:6]) or "?"
                raise ImmutableVersionError(
                    f"{name}@{version} is published with a different pipeline config (changed: {keys}); "
                    f"publish under a new version"
                )
        work = WorkDir(self, name, version, cfp, committed, build_id)
        if committed is None:
            fs = self._fs
            lock = fs.path(*work.rel, "config.json")
            if fs.exists(lock):
                old = fs.read_json(lock).get("pipeline_config_fingerprint")
                if cfp is not None and old is not None and old != cfp:
                    raise ImmutableVersionError(
                        f"an unfinished build of {name}@{version} at {work.uri} used a different pipeline "
                        f"config; finish it with the same config, delete that directory, or use a new version"
                    )
            else:
                fs.makedirs(fs.path(*work.rel))
                fs.write_json_atomic(
                    lock, {"pipeline_config_fingerprint": cfp, "pipeline_config": manifest.to_plain(pipeline_config)}
                )
        return work

    def discard(self, work: WorkDir) -> None:
        """Remove ``work``'s staging area (if it exists): for a build whose version another process already
        published (what a late shard wrote there afterwards can never be published)."""
        if not self.exists(work.name, work.version):
            raise DatasetError(f"{work.name}@{work.version} is not published; its staging area {work.uri} is kept")
        self._fs.rm(self._fs.path(*work.rel))
        self._cleanup_work_parent(work.name)

    def commit(
        self, work: WorkDir, lineage: Mapping[str, Any] | None = None, expected_inputs: Iterable[str] | None = None
    ) -> dict[str, Any]:
        """Publish ``work`` as ``name@version``; returns the manifest (see module docstring).

        ``lineage`` may carry inputs, tokenizers, pipeline_config and runner; inputs default to the
        ``input`` entries of the done markers. ``expected_inputs`` (names) must all be done."""
        fs = self._fs
        lineage = dict(lineage or {})
        if work.committed is None and not fs.exists(fs.path(*work.rel)) and self.exists(work.name, work.version):
            fp = self.open(f"{work.name}@{work.version}").fingerprint
            raise PublishedMeanwhileError(
                f"{work.name}@{work.version} was published (fingerprint {fp[:12]}) from the staging "
                f"area {work.uri} while this process used it; check it with 'videopoet data verify', "
                f"or give independent jobs their own build id"
            )
        done = work.done_shards()
        if expected_inputs is not None:
            missing = sorted(set(expected_inputs) - set(done))
            if missing:
                raise DatasetError(
                    f"cannot commit {work.name}@{work.version}: {len(missing)} input shard(s) "
                    f"not processed: {', '.join(missing[:5])}"
                )
        shards: list[dict[str, Any]] = []
        reject_files: list[dict[str, Any]] = []
        by_reason: dict[str, int] = {}
        samples_in = rejected = 0
        inputs_from_markers = []
        for input_name in sorted(done):
            mk = done[input_name]
            for o in mk.outputs:
                p = fs.path(*work.rel, *o["path"].split("/"))
                if not fs.exists(p):
                    raise DatasetError(f"cannot commit: {o['path']} (from {input_name}) is missing from {work.uri}")
                digest, size = sha256_of(fs.uri(*work.rel, *o["path"].split("/")))
                if digest != o["sha256"] or size != o["bytes"]:
                    raise DatasetError(
                        f"cannot commit: {o['path']} (from {input_name}) changed after it was "
                        f"finished; delete {work.uri} and rebuild"
                    )
                shards.append({**o, "source_shard": input_name})
            rpath = work.rejects_path(input_name)
            rel = f"rejects/{shard_stem(input_name)}.jsonl"
            if fs.exists(fs.path(*work.rel, *rel.split("/"))):
                digest, size = sha256_of(rpath)
                reject_files.append(
                    {"path": rel, "source_shard": input_name, "records": mk.rejects, "bytes": size, "sha256": digest}
                )
            for k, v in mk.rejects_by_reason.items():
                by_reason[k] = by_reason.get(k, 0) + int(v)
            rejected += mk.rejects
            samples_in += mk.samples_in
            if mk.input:
                inputs_from_markers.append(dict(mk.input))
        # files a killed run left behind that no marker owns never reach the published version: only the
        # manifest's files and the done markers are published (see _publish)
        inputs = lineage.get("inputs", inputs_from_markers)
        names = [i["name"] for i in inputs]
        if len(names) != len(set(names)):
            raise DatasetError("input shard names must be unique within a dataset (two inputs share a base name)")
        pipeline_config = manifest.to_plain(lineage.get("pipeline_config", {}))
        m: dict[str, Any] = {
            "format": manifest.MANIFEST_FORMAT,
            "manifest_version": manifest.MANIFEST_VERSION,
            "name": work.name,
            "version": work.version,
            "created": _now(),
            "record_schema_version": RECORD_SCHEMA_VERSION,
            "lineage": {
                "inputs": sorted(
                    (
                        {
                            "name": str(i["name"]),
                            "size": int(i.get("size", 0)),
                            "sha256": str(i["sha256"]),
                            **({"uri": str(i["uri"])} if i.get("uri") else {}),
                        }
                        for i in inputs
                    ),
                    key=lambda i: i["name"],
                ),
                "tokenizers": manifest.to_plain(lineage.get("tokenizers", {})),
                "pipeline_config": pipeline_config,
                "pipeline_config_fingerprint": work.config_fingerprint,
                "package_version": str(lineage.get("package_version") or _package_version()),
                "runner": manifest.to_plain(lineage.get("runner", {})),
                **({"style": manifest.to_plain(lineage["style"])} if lineage.get("style") else {}),
            },
            "shards": sorted(shards, key=lambda s: s["path"]),
            "rejects": {
                "total": rejected,
                "by_reason": dict(sorted(by_reason.items())),
                "files": sorted(reject_files, key=lambda r: r["path"]),
            },
        }
        m["totals"] = manifest.totals_of(m["shards"], samples_in, rejected)
        m["fingerprint"] = manifest.compute_fingerprint(m)
        manifest.check_manifest(m, f"{work.name}@{work.version} (new)")
        if work.committed is not None:
            return self._same_or_refuse(work, work.committed, m)
        with lease.acquire(fs, work.name, work.version, purpose="publish") as held:
            if self.exists(work.name, work.version):  # published by another job while this one built
                return self._same_or_refuse(work, self.open(f"{work.name}@{work.version}").manifest, m)
            with _disk_full_is_one_line(fs.uri(work.name, work.version)):
                self._publish(work, m, held, [f"stats/{shard_stem(n)}.json" for n in sorted(done)])
                log_event(fs, work.name, {"event": "publish", "version": work.version, "fingerprint": m["fingerprint"]})
        self._cleanup_work_parent(work.name)
        return m

    def _publish(self, work: WorkDir, m: dict[str, Any], held: lease.Lease, stats: list[str]) -> None:
        """Make ``m`` visible as ``name@version``; the caller holds the publish lease and checked that
        the version is not published. A version dir without a manifest is what a killed publisher
        left (nobody else can be publishing now), so it is cleared first."""
        fs = self._fs
        version_rel = (work.name, work.version)
        vdir = fs.path(*version_rel)
        if fs.exists(vdir):
            fs.rm(vdir)
        if fs.local:
            # a snapshot of exactly the manifest's files (hard links: no copy), published in one rename; a
            # process still writing into a shared staging dir can never leave a file in the published version
            snap = fs.path(work.name, WORK_DIR, f".publish-{uuid.uuid4().hex[:12]}")
            try:
                for rel in [*(e["path"] for e in [*m["shards"], *m["rejects"]["files"]]), *stats]:
                    src, dst = fs.path(*work.rel, *rel.split("/")), os.path.join(snap, *rel.split("/"))
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    try:
                        os.link(src, dst)
                    except OSError:  # a filesystem without hard links
                        shutil.copy2(src, dst)
                fs.write_json_atomic(os.path.join(snap, MANIFEST_FILE), m)
                held.check()
                os.rename(snap, vdir)
            finally:
                fs.rm(snap)
            fs.rm(fs.path(*work.rel))
            return
        tags = {}
        for rel in [*(e["path"] for e in [*m["shards"], *m["rejects"]["files"]]), *stats]:
            src = fs.path(*work.rel, *rel.split("/"))
            tags[rel] = _content_tag(fs.fs.info(src))
            fs.fs.copy(src, fs.path(*version_rel, *rel.split("/")))
        for e in [*m["shards"], *m["rejects"]["files"]]:  # the copies are what the manifest says
            p = fs.path(*version_rel, *e["path"].split("/"))
            if tags.get(e["path"]) is not None and _content_tag(fs.fs.info(p)) == tags[e["path"]]:
                continue  # the store's own checksum (S3 ETag, GCS md5) of the copy equals the hashed file's
            digest, size = sha256_of(fs.uri(*version_rel, *e["path"].split("/")))
            if (digest, size) != (e["sha256"], e["bytes"]):
                fs.rm(vdir)
                raise DatasetError(
                    f"cannot commit {work.name}@{work.version}: the copy of {e['path']} differs from "
                    f"the staging file it was made from ({p}); nothing was published, rerun"
                )
        held.check()
        blob = (json.dumps(m, indent=2, sort_keys=True) + "\n").encode()
        if not fs.create_exclusive(fs.path(*version_rel, MANIFEST_FILE), blob):  # the commit point
            raise DatasetError(
                f"{work.name}@{work.version} was published by another job while this one held the "
                f"publish lease (a lease that expired?); compare with 'videopoet data info'"
            )
        fs.rm(fs.path(*work.rel))

    def _same_or_refuse(self, work: WorkDir, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        if old["fingerprint"] == new["fingerprint"]:
            self._fs.rm(self._fs.path(*work.rel))
            self._cleanup_work_parent(work.name)
            return old
        self._fs.rm(self._fs.path(*work.rel))  # this content can never be published under this version
        self._cleanup_work_parent(work.name)
        d = manifest.diff_manifests(old, new)
        what = ", ".join(k for k in ("lineage", "shards", "totals") if k in d) or "content"
        raise ImmutableVersionError(
            f"{work.name}@{work.version} is already published with different content ({what} differ: "
            f"fingerprint {old['fingerprint'][:12]} vs {new['fingerprint'][:12]}); publish under a new version"
        )

    def _cleanup_work_parent(self, name: str) -> None:
        p = self._fs.path(name, WORK_DIR)
        if self._fs.local and os.path.isdir(p) and not os.listdir(p):
            try:
                os.rmdir(p)
            except OSError:  # another build just started there
                pass


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def _disk_full_is_one_line(where: str) -> Iterator[None]:
    """A full disk or quota becomes one :class:`DiskFullError` line naming the file being written."""
    try:
        yield
    except (OSError, RuntimeError) as e:  # ArrayRecord's C++ writer reports a full disk as a RuntimeError
        full = e.errno in _DISK_FULL if isinstance(e, OSError) else any(os.strerror(n) in str(e) for n in _DISK_FULL)
        if not full:
            raise
        path = (e.filename if isinstance(e, OSError) else None) or where
        raise DiskFullError(
            f"no space left on device writing {path}; nothing was published, the "
            f"finished shards stay in the work dir: free space and rerun to resume"
        ) from None


def open_path(path: str) -> Dataset:
    """Open a version directory (or its manifest.json) given as a path or URI."""
    p = path.rstrip("/")
    if p.endswith(MANIFEST_FILE):
        p = p[: -len(MANIFEST_FILE)].rstrip("/")
    if is_local(p):
        p = os.path.abspath(p[len("file://") :] if p.startswith("file://") else p)
        parent, version = os.path.split(p)
        root, name = os.path.split(parent)
    else:
        root, name, version = p.rsplit("/", 2)
    fs = _FS(root)
    mp = fs.path(name, version, MANIFEST_FILE)
    if not fs.exists(mp):
        raise DatasetError(f"no dataset at {path} (no manifest.json)")
    m = manifest.check_manifest(fs.read_json(mp), mp)
    return Dataset(fs, (name, version), m)


def open_dataset(ref: str, root: str | None = None) -> Dataset:
    """``NAME@VERSION`` under ``root`` (default ``$VIDEOPOET_ROOT`` or ./datasets), or a version dir."""
    return DatasetStore(root).open(ref)


def verify(ds: Dataset, deep: bool = False, hashes: bool = True) -> VerifyReport:
    """Re-hash every shard and reject file; name each missing, truncated or altered one.

    ``deep`` also opens every intact shard and checks its record count and that records decode.
    ``hashes`` False compares sizes only (one metadata request per file): what the trainer does
    before it fetches a remote dataset, whose shards the cache then hashes as they download
    (:mod:`videopoet.schemas.cache`) so nothing is read twice."""
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
        if not hashes:
            size = _size_of(fs, fs.path(*ds._rel, *e["path"].split("/")))
            if size != e["bytes"]:
                problems.append(
                    f"{'truncated' if size < e['bytes'] else 'altered'} {what}: {e['path']} "
                    f"({size} of {e['bytes']} bytes)"
                )
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
    if manifest.compute_fingerprint(m) != m["fingerprint"]:
        problems.append("manifest fingerprint does not match the manifest's content (manifest edited?)")
    tot = manifest.totals_of(m["shards"], m["totals"]["samples_in"], m["rejects"]["total"])
    if tot != m["totals"]:
        problems.append("manifest totals do not add up to its shard entries")
    return VerifyReport(ref=ds.ref, ok=not problems, problems=problems, checked_files=checked)


def _size_of(fs: _FS, p: str) -> int:
    if fs.local:
        return os.path.getsize(p)
    return int(fs.fs.info(p).get("size") or 0)


def write_dataset(
    root: str,
    name: str,
    version: str,
    records_by_shard: Mapping[str, Iterable[TokenRecord]],
    lineage: Mapping[str, Any] | None = None,
    pipeline_config: Any = None,
    rejects_by_shard: Mapping[str, list[dict[str, Any]]] | None = None,
    build_id: str | None = None,
) -> dict[str, Any]:
    """Write and commit a dataset from in-memory records (one input shard name -> its records).

    For tests and small tools; the pipelines use :meth:`DatasetStore.begin` / ``commit`` directly.
    Input shard hashes default to the sha256 of the name (there is no input file). Input shards the
    staging area already holds as done are kept (a rerun resumes: pass the same records); ``build_id`` as in
    :meth:`DatasetStore.begin`.
    A full disk raises :class:`DiskFullError` naming the file."""
    import hashlib

    st = DatasetStore(root)
    cfg = pipeline_config if pipeline_config is not None else {}
    work = st.begin(name, version, cfg, build_id=build_id)
    inputs = []
    for input_name, recs in records_by_shard.items():
        inp = {"name": input_name, "size": 0, "sha256": hashlib.sha256(input_name.encode()).hexdigest()}
        inputs.append(inp)
        if work.committed is None and work.is_done(input_name):
            continue
        with _disk_full_is_one_line(work.shard_path(input_name)):
            _write_input_shard(work, input_name, inp, recs, list((rejects_by_shard or {}).get(input_name, [])))
    lin = {"inputs": inputs, "pipeline_config": cfg, **dict(lineage or {})}
    with _disk_full_is_one_line(work.uri):
        return st.commit(work, lin)


def _write_input_shard(
    work: WorkDir, input_name: str, inp: dict[str, Any], recs: Iterable[TokenRecord], rejects: list[dict[str, Any]]
) -> None:
    out = ShardWriter(work.shard_path(input_name))
    n = 0
    try:
        for r in recs:
            out.write(r)
            n += 1
        stats_out = out.close()
    except BaseException:
        out.abort()
        raise
    by_reason: dict[str, int] = {}
    if rejects:
        with fsspec.open(work.rejects_path(input_name), "wt", encoding="utf-8") as f:
            for r in rejects:
                f.write(json.dumps(r, sort_keys=True) + "\n")
                by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
    work.finish_shard(
        ShardStats(
            input_name=input_name,
            outputs=(stats_out,),
            input=inp,
            samples_in=n + len(rejects),
            samples_ok=n,
            records=n,
            rejects=len(rejects),
            rejects_by_reason=by_reason,
        )
    )
