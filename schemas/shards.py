"""ArrayRecord shards of TokenRecords: write, read, hash.

A shard is an ArrayRecord file written with ``group_size:1`` (every record its own chunk, so Grain
gets O(1) random access) whose records are :func:`~videopoet.schemas.record.encode_record` bytes.

* :class:`ShardWriter` writes to a temporary name beside the target and renames it into place on
  :meth:`~ShardWriter.close`, so a shard path either does not exist or holds a complete shard.
  It returns the shard's stats (records, bytes, sha256, tokens per modality) - the numbers the
  done marker and the manifest carry.
* Paths may be fsspec URIs (``memory://``, ``gs://``, ``s3://``): ArrayRecord itself reads and
  writes local files, so remote shards are written to a local temporary file and uploaded on close,
  and read through a local copy.

Identical records written in the same order give byte-identical shards (tested), which is what the
dataset fingerprint relies on.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import fsspec

from videopoet.schemas import objstore
from videopoet.schemas.errors import DatasetError
from videopoet.schemas.record import TokenRecord, decode_record, encode_record

objstore.configure()  # S3 clients retry with backoff (in every process that writes or reads shards)

__all__ = [
    "ARRAY_RECORD_OPTIONS",
    "SHARD_SUFFIX",
    "ShardReader",
    "ShardWriter",
    "is_local",
    "read_records",
    "sha256_of",
    "write_shard",
]

ARRAY_RECORD_OPTIONS = "group_size:1"
SHARD_SUFFIX = ".array_record"
TOKEN_KINDS = ("video", "audio", "text", "condition", "superres", "style")


def _ar():
    from array_record.python import array_record_module

    return array_record_module


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _local(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


def sha256_of(path: str, chunk: int = 1 << 20, copy_to=None) -> tuple[str, int]:
    """(hex sha256, size in bytes) of a local path or fsspec URI; ``copy_to`` (a binary file object)
    also receives every byte read, so a remote file can be downloaded and hashed in one pass."""
    h = hashlib.sha256()
    n = 0
    with fsspec.open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
            n += len(b)
            if copy_to is not None:
                copy_to.write(b)
    return h.hexdigest(), n


class ShardWriter:
    """Write TokenRecords to one ArrayRecord shard; :meth:`close` renames it into place.

    Use as a context manager; an exception inside the ``with`` block discards the partial file.
    """

    def __init__(self, path: str):
        self.path = path
        self._records = 0
        self._tokens = {k: 0 for k in TOKEN_KINDS}
        self._closed = False
        if is_local(path):
            final = _local(path)
            os.makedirs(os.path.dirname(os.path.abspath(final)), exist_ok=True)
            self._tmp = os.path.join(
                os.path.dirname(os.path.abspath(final)), f".tmp-{uuid.uuid4().hex[:12]}-{os.path.basename(final)}"
            )
        else:
            fd, self._tmp = tempfile.mkstemp(suffix=SHARD_SUFFIX, prefix="videopoet-shard-")
            os.close(fd)
        self._writer = _ar().ArrayRecordWriter(self._tmp, ARRAY_RECORD_OPTIONS)

    def write(self, rec: TokenRecord) -> None:
        if self._closed:
            raise DatasetError(f"shard {self.path} is already closed")
        self._writer.write(encode_record(rec))
        self._records += 1
        for k, v in rec.token_counts().items():
            self._tokens[k] += v

    def write_bytes(self, blob: bytes) -> None:
        """Write an already-encoded record (checked by decoding it first)."""
        self.write(decode_record(blob))

    def close(self) -> dict[str, Any]:
        """Finish the file, move it into place, return its stats."""
        if self._closed:
            raise DatasetError(f"shard {self.path} is already closed")
        self._writer.close()
        self._closed = True
        digest, size = sha256_of(self._tmp)
        if is_local(self.path):
            os.replace(self._tmp, _local(self.path))
        else:
            try:
                fs, p = fsspec.core.url_to_fs(self.path)
                fs.put_file(self._tmp, p)
            finally:
                os.unlink(self._tmp)
        return {
            "path": self.path,
            "records": self._records,
            "bytes": size,
            "sha256": digest,
            "tokens": dict(self._tokens),
        }

    def abort(self) -> None:
        if not self._closed:
            try:
                self._writer.close()
            finally:
                self._closed = True
                if os.path.exists(self._tmp):
                    os.unlink(self._tmp)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.stats = self.close()


def write_shard(path: str, records: Iterable[TokenRecord]) -> dict[str, Any]:
    w = ShardWriter(path)
    try:
        for r in records:
            w.write(r)
    except BaseException:
        w.abort()
        raise
    return w.close()


class ShardReader:
    """Random access to the records of one shard: ``len(r)``, ``r[i]``, ``r.read_bytes(i)``.

    Remote shards are copied to a local temporary file first (removed by :meth:`close`).
    """

    def __init__(self, path: str):
        self.path = path
        self._tmp: str | None = None
        if is_local(path):
            local = _local(path)
            if not os.path.isfile(local):
                raise DatasetError(f"shard not found: {path}")
        else:
            fs, p = fsspec.core.url_to_fs(path)
            if not fs.exists(p):
                raise DatasetError(f"shard not found: {path}")
            fd, self._tmp = tempfile.mkstemp(suffix=SHARD_SUFFIX, prefix="videopoet-read-")
            os.close(fd)
            fs.get_file(p, self._tmp)
            local = self._tmp
        if os.path.getsize(local) == 0:
            raise DatasetError(f"shard is empty (0 bytes): {path}")
        try:
            self._reader = _ar().ArrayRecordReader(local)
        except Exception as e:  # riegeli reports a corrupt file as a generic error
            raise DatasetError(f"shard is not a readable ArrayRecord file: {path} ({e})") from None
        self._n = int(self._reader.num_records())

    def __len__(self) -> int:
        return self._n

    def read_bytes(self, i: int) -> bytes:
        if not -self._n <= i < self._n:
            raise IndexError(f"record {i} out of range for {self._n} records in {self.path}")
        return self._reader.read([i % self._n])[0]

    def __getitem__(self, i: int) -> TokenRecord:
        return decode_record(self.read_bytes(i))

    def __iter__(self) -> Iterator[TokenRecord]:
        for i in range(self._n):
            yield self[i]

    def close(self) -> None:
        self._reader.close()
        if self._tmp and os.path.exists(self._tmp):
            os.unlink(self._tmp)
            self._tmp = None

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_records(path: str) -> Iterator[TokenRecord]:
    """All records of a shard, in order."""
    with ShardReader(path) as r:
        yield from r
