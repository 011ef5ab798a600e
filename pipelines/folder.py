"""Corpora as folders of media files with a metadata table of captions (CSV, JSONL or Parquet).

A folder corpus enters the pipeline as *units*: the folder's media files and the table's rows are matched,
sorted by sample key and cut into groups of ``samples_per_shard``; each unit is materialized as the
webdataset tar that ``videopoet corpus pack`` writes for it, byte for byte (fixed member order, times,
owners and modes). Both runners then read a unit exactly as they read a tar shard: the same stages,
rejects and fingerprint rules, and an input's identity is the hash of those bytes, so a moved or copied
folder gives the same dataset, and so does the packed corpus.

A unit is named by one JSON string (``unit_ref``): the corpus spec, the unit's index and a hash of the
whole plan. A worker that opens a unit lists the folder and reads the table again, and refuses it if the
plan hash differs (the corpus changed after the job listed it): never a silently different unit.

What cannot become a sample is still a sample of its unit, recorded as a ``{key}.json`` member holding
``{"corpus_reject": {"reason", "message"}}``, which the pipeline counts as a reject with that reason:

=================  ======================================================================
``missing_file``   a row names a file that is not in the folder
``no_metadata``    a media file no row names
``duplicate_key``  a second row naming the same file, or a file whose key another file has
``unsafe_path``    a row's path is absolute, has a ``..`` component or a control character
=================  ======================================================================
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import tarfile
import unicodedata
from collections.abc import Iterator
from typing import Any

from videopoet.pipelines.errors import PipelineError

__all__ = [
    "CORPUS_REASONS",
    "FolderCorpus",
    "corpus_reject",
    "is_unit_ref",
    "plan_units",
    "unit_name",
    "write_unit",
]

CORPUS_REASONS = ("missing_file", "no_metadata", "unsafe_path")  # duplicate_key is the reader's own code
MEDIA_EXTS = ("mp4", "webm", "mkv", "mov", "avi", "jpg", "jpeg", "png", "webp")
TABLE_EXTS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


@dataclasses.dataclass(frozen=True)
class FolderCorpus:
    """A folder (local path or fsspec URI) of media files and a table naming them."""

    folder: str
    table: str
    path_column: str = "path"
    caption_column: str = "caption"
    samples_per_shard: int = 256

    def __post_init__(self):
        if self.samples_per_shard < 1:
            raise PipelineError(f"samples per shard must be at least 1, not {self.samples_per_shard}")
        if os.path.splitext(self.table.lower())[1] not in TABLE_EXTS:
            raise PipelineError(f"metadata table {self.table}: not .csv, .tsv, .jsonl or .parquet")

    @property
    def stem(self) -> str:
        """Units are named ``{stem}-{index:05d}.tar``, after the table (not the folder: it may move)."""
        return os.path.splitext(os.path.basename(self.table.rstrip("/")))[0] or "corpus"

    def to_json(self, **extra: Any) -> str:
        return json.dumps({"folder_corpus": dataclasses.asdict(self), **extra}, sort_keys=True)


def is_unit_ref(uri: str) -> bool:
    """A unit reference (or a whole corpus spec) rather than a shard URI."""
    return uri.startswith('{"folder_corpus"')


def parse_spec(spec: str) -> FolderCorpus | None:
    """The corpus of a whole-corpus spec (``FolderCorpus.to_json()``), ``None`` for a unit reference."""
    try:
        d = json.loads(spec)
    except ValueError:
        raise PipelineError(f"not a folder-corpus spec: {spec[:200]!r}") from None
    if "unit" in d:
        return None
    try:
        return FolderCorpus(**d["folder_corpus"])
    except (KeyError, TypeError) as e:
        raise PipelineError(f"not a folder-corpus spec: {spec[:200]!r} ({e})") from None


def _parse_unit(ref: str) -> tuple[FolderCorpus, int, str]:
    try:
        d = json.loads(ref)
        return FolderCorpus(**d["folder_corpus"]), int(d["unit"]), str(d["plan"])
    except (ValueError, KeyError, TypeError) as e:
        raise PipelineError(f"not a folder-corpus unit reference: {ref[:200]!r} ({e})") from None


def unit_name(ref: str) -> str:
    corpus, unit, _ = _parse_unit(ref)
    return f"{corpus.stem}-{unit:05d}.tar"


def corpus_reject(members: dict[str, bytes]) -> tuple[str, str] | None:
    """``(reason, message)`` when a sample is a folder-corpus reject record, else ``None``."""
    raw = members.get("json")
    if raw is None or len(members) != 1 or b"corpus_reject" not in raw:
        return None
    try:
        rec = json.loads(raw)["corpus_reject"]
        return str(rec["reason"]), str(rec["message"])
    except (ValueError, KeyError, TypeError):
        return None


# ------------------------------------------------------------------------------------------ the plan
@dataclasses.dataclass(frozen=True)
class Entry:
    key: str
    path: str | None  # relative to the folder, "/" separated
    size: int
    caption: str | None
    meta: dict[str, Any]
    reject: tuple[str, str] | None  # (reason, message)

    def record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _fs(uri: str):
    import fsspec

    try:
        fs, _, (path,) = fsspec.get_fs_token_paths(uri)
    except ImportError as e:
        raise PipelineError(f"{uri}: {e}") from None
    return fs, path


def _list_media(folder: str) -> dict[str, int]:
    """Relative path -> size of every media file under ``folder`` (recursively)."""
    fs, root = _fs(folder)
    try:
        if not fs.isdir(root):
            raise PipelineError(f"corpus folder {folder} does not exist or is not a folder")
        found = fs.find(root, detail=True)
    except OSError as e:
        raise PipelineError(f"cannot list corpus folder {folder}: {e}") from None
    root = root.rstrip("/")
    out = {}
    for path, info in found.items():
        rel = path[len(root) :].lstrip("/")
        if info.get("type") == "file" and os.path.splitext(rel)[1].lower().lstrip(".") in MEDIA_EXTS:
            out[rel] = int(info["size"])
    return out


def _json_value(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    return str(v)  # timestamps, decimals, bytes: their text


def _read_table(corpus: FolderCorpus) -> list[dict[str, Any]]:
    import pyarrow
    import pyarrow.csv
    import pyarrow.json
    import pyarrow.parquet

    kind = TABLE_EXTS[os.path.splitext(corpus.table.lower())[1]]
    fs, path = _fs(corpus.table)
    try:
        with fs.open(path, "rb") as f:
            data = f.read()
        buf = pyarrow.BufferReader(data)
        if kind == "parquet":
            table = pyarrow.parquet.read_table(buf)
        elif kind == "jsonl":
            table = pyarrow.json.read_json(buf)
        else:
            delimiter = "\t" if kind == "tsv" else ","
            # every column as text: a caption or an id must not become a number
            parse = pyarrow.csv.ParseOptions(delimiter=delimiter)
            names = pyarrow.csv.open_csv(pyarrow.BufferReader(data), parse_options=parse).schema.names  # first block
            table = pyarrow.csv.read_csv(
                buf,
                parse_options=parse,
                convert_options=pyarrow.csv.ConvertOptions(column_types={n: pyarrow.string() for n in names}),
            )
    except FileNotFoundError:
        raise PipelineError(f"metadata table {corpus.table} does not exist") from None
    except (OSError, pyarrow.ArrowException) as e:
        raise PipelineError(f"cannot read metadata table {corpus.table}: {str(e).splitlines()[0]}") from None
    missing = [c for c in (corpus.path_column, corpus.caption_column) if c not in table.column_names]
    if missing:
        raise PipelineError(
            f"metadata table {corpus.table} has no column {missing[0]!r} (columns: {', '.join(table.column_names)}); "
            "name them with --path-column / --caption-column"
        )
    return [{k: _json_value(v) for k, v in row.items()} for row in table.to_pylist()]


def _safe_rel(value: Any) -> str | None:
    """A row's path as a folder-relative path, or ``None`` when it could escape the folder."""
    if not isinstance(value, str) or not value.strip():
        return None
    p = value.strip()
    if "\\" in p or p.startswith("/") or (len(p) > 1 and p[1] == ":") or "://" in p:
        return None
    if any(unicodedata.category(c)[0] == "C" for c in p):
        return None
    parts = [x for x in p.split("/") if x not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _key_of(rel: str) -> str:
    """The sample key of a folder-relative path: the path without its extension, the base name's other dots
    as ``_`` (a webdataset key ends at the base name's first dot)."""
    head, base = os.path.split(rel)
    stem = os.path.splitext(base)[0].replace(".", "_") or "_"
    return f"{head}/{stem}" if head else stem


def build_plan(corpus: FolderCorpus) -> list[Entry]:
    """Every row and every media file, matched and accounted for, sorted by key."""
    files = _list_media(corpus.folder)
    by_stem: dict[str, list[str]] = {}
    for rel in files:
        by_stem.setdefault(os.path.splitext(rel)[0], []).append(rel)
    rows = _read_table(corpus)
    claimed: dict[str, int] = {}  # rel path -> the row that named it
    entries: list[Entry] = []
    for i, row in enumerate(rows):
        raw = row.get(corpus.path_column)
        caption = row.get(corpus.caption_column)
        caption = None if caption is None else str(caption)
        meta = {k: v for k, v in row.items() if k not in (corpus.path_column, corpus.caption_column)}
        rel = _safe_rel(raw)
        if rel is None:
            msg = f"row {i}: path {str(raw)[:200]!r} is empty, absolute, or leaves the folder"
            entries.append(Entry(f"row{i:08d}", None, 0, caption, meta, ("unsafe_path", msg)))
            continue
        if rel not in files:  # a path column without the extension (a video id) names the file too
            candidates = sorted(by_stem.get(rel, []))
            rel = candidates[0] if len(candidates) == 1 else rel
        if rel not in files:
            msg = f"row {i} names {rel!r}, which is not in the corpus folder"
            entries.append(Entry(_key_of(rel), rel, 0, caption, meta, ("missing_file", msg)))
            continue
        if rel in claimed:
            msg = f"row {i} names {rel!r} again (first named by row {claimed[rel]})"
            entries.append(Entry(f"{_key_of(rel)}~row{i}", rel, 0, caption, meta, ("duplicate_key", msg)))
            continue
        claimed[rel] = i
        entries.append(Entry(_key_of(rel), rel, files[rel], caption, meta, None))
    for rel in files:
        if rel not in claimed:
            msg = f"{rel!r} is in the corpus folder but no row of the metadata table names it"
            entries.append(Entry(_key_of(rel), rel, files[rel], None, {}, ("no_metadata", msg)))
    entries.sort(key=lambda e: (e.key, e.path or ""))
    out: list[Entry] = []
    seen: set[str] = set()
    for e in entries:  # two files with one key (a.b.mp4 and a_b.mp4): the later one is refused
        if e.key in seen:
            msg = f"{e.path!r} has the key {e.key!r} of another sample"
            e = dataclasses.replace(e, key=f"{e.key}~{len(out)}", reject=("duplicate_key", msg))
        seen.add(e.key)
        out.append(e)
    return out


@functools.lru_cache(maxsize=8)
def _cached_plan(corpus: FolderCorpus) -> tuple[tuple[Entry, ...], str]:
    entries = tuple(build_plan(corpus))
    blob = json.dumps([e.record() for e in entries], sort_keys=True, separators=(",", ":")).encode()
    return entries, hashlib.sha256(blob).hexdigest()[:16]


def plan_units(corpus: FolderCorpus) -> list[str]:
    """The unit references of ``corpus`` (one per ``samples_per_shard`` samples), in order."""
    entries, digest = _cached_plan(corpus)
    if not entries:
        raise PipelineError(f"corpus folder {corpus.folder} has no media files and {corpus.table} no rows")
    count = -(-len(entries) // corpus.samples_per_shard)
    return [corpus.to_json(unit=i, plan=digest) for i in range(count)]


def plan_counts(corpus: FolderCorpus) -> dict[str, Any]:
    entries, digest = _cached_plan(corpus)
    rejects: dict[str, int] = {}
    for e in entries:
        if e.reject is not None:
            rejects[e.reject[0]] = rejects.get(e.reject[0], 0) + 1
    return {"samples": len(entries), "rejected": dict(sorted(rejects.items())), "plan": digest}


# -------------------------------------------------------------------------------------- materializing
def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = len(data), 0, 0o644, 0, 0, "", ""
    tar.addfile(info, io.BytesIO(data))


def _members(corpus: FolderCorpus, e: Entry, fs, root: str) -> Iterator[tuple[str, bytes]]:
    meta = {"path": e.path, **e.meta} if e.path is not None else dict(e.meta)
    if e.reject is not None:
        rec = {**meta, "corpus_reject": {"reason": e.reject[0], "message": e.reject[1]}}
        yield f"{e.key}.json", json.dumps(rec, sort_keys=True, ensure_ascii=False).encode()
        return
    try:
        data = fs.cat_file(root.rstrip("/") + "/" + e.path)
    except OSError as err:
        raise PipelineError(f"cannot read {e.path} from {corpus.folder}: {err}") from None
    if len(data) != e.size:
        raise PipelineError(f"{e.path} in {corpus.folder} changed while the job ran ({len(data)} != {e.size} bytes)")
    yield f"{e.key}.json", json.dumps(meta, sort_keys=True, ensure_ascii=False).encode()
    yield f"{e.key}.{os.path.splitext(e.path)[1].lower().lstrip('.')}", data
    if e.caption is not None:
        yield f"{e.key}.txt", e.caption.encode("utf-8")


class _Hashing(io.RawIOBase):
    """A write-only file that passes bytes on to ``out`` and hashes them on the way."""

    def __init__(self, out):
        self.out, self.sha, self.size = out, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:  # tarfile asks where it is
        return self.size

    def write(self, b) -> int:
        self.out.write(b)
        self.sha.update(b)
        self.size += len(b)
        return len(b)


def write_unit(ref: str, out) -> tuple[str, int]:
    """Write unit ``ref`` as its webdataset tar to the binary file ``out``; refused if the corpus changed.
    Returns the tar's ``(sha256, size)``, hashed as it is written."""
    corpus, unit, digest = _parse_unit(ref)
    entries, now = _cached_plan(corpus)
    if now != digest:
        _cached_plan.cache_clear()
        entries, now = _cached_plan(corpus)
    if now != digest:
        raise PipelineError(
            f"corpus {corpus.folder} (table {corpus.table}) changed after the job listed it: plan {now} != {digest}"
        )
    chunk = entries[unit * corpus.samples_per_shard : (unit + 1) * corpus.samples_per_shard]
    if not chunk:
        raise PipelineError(f"corpus {corpus.folder} has no unit {unit}")
    fs, root = _fs(corpus.folder)
    sink = _Hashing(out)
    with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in chunk:
            for name, data in _members(corpus, e, fs, root):
                _add(tar, name, data)
    return sink.sha.hexdigest(), sink.size


def pack(corpus: FolderCorpus, out: str, progress: bool | None = None) -> dict[str, Any]:
    """Write every unit of ``corpus`` as ``out/{stem}-{index:05d}.tar`` (local dir or fsspec URI), plus
    ``out/pack.json`` (the counts and the plan hash): the shards a pipeline run on the folder reads."""
    import fsspec

    refs = plan_units(corpus)
    fs, root = _fs(out)
    fs.makedirs(root, exist_ok=True)
    import sys

    from tqdm import tqdm

    bar = tqdm(
        total=len(refs), desc="pack", unit="shard", file=sys.stderr, disable=None if progress is None else not progress
    )
    shards = []
    for ref in refs:
        name = unit_name(ref)
        uri = fs.unstrip_protocol(root.rstrip("/") + "/" + name) if "://" in out else os.path.join(out, name)
        if "://" in out:
            with fsspec.open(uri, "wb") as f:  # one PUT on an object store: all of it or nothing
                sha, size = write_unit(ref, f)
        else:  # a temp file renamed: a pack cut short leaves no partial shard under a shard's name
            tmp = os.path.join(out, f".tmp-{name}")
            with open(tmp, "wb") as f:
                sha, size = write_unit(ref, f)
            os.replace(tmp, uri)
        shards.append({"name": name, "sha256": sha, "bytes": size})
        bar.update(1)
    bar.close()
    summary = {"folder": corpus.folder, "table": corpus.table, **plan_counts(corpus), "shards": shards, "out": out}
    with fsspec.open((out.rstrip("/") + "/pack.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    return summary
