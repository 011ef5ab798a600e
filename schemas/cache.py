"""The per-host cache of a remote dataset's shards: what the trainer reads from object storage.

``local_shards(ds)`` returns a local path for every shard of ``ds`` (in manifest order), each one
checked against the manifest's sha256 and size before it is returned:

* a shard already in the cache is re-hashed (a local read, far cheaper than a download); if it does
  not match (a torn earlier download, a disk error, an edit) it is fetched again;
* a shard not in the cache is downloaded to a temporary name in its cache directory, hashed in the
  same pass, and renamed into place only when digest and size equal the manifest's; processes of one
  host fetching the same shard at once each rename a complete, checked copy over the other's;
* a shard missing from the bucket, or whose bytes do not match, raises :class:`VerifyError` naming
  it (``missing shard: shards/x.array_record``): there is never a silent partial read.

Why a cache and not a random-access reader over the bucket: ArrayRecord's reader is C++ over local
files (no fsspec), every process of a run draws records from every shard (each global batch is a
pure function of the step over the whole dataset), and Grain reads records at random, so ranged GETs
would cost one request per record per epoch. A tokenized dataset is small next to its corpus (a few
GB for millions of clips), one sequential download per host is cheap, and a local file can be checked
against the manifest in full before the first record is read.

Layout: ``<cache_root>/datasets/<name>/<version>-<fingerprint[:16]>/<shard path>``; a version
republished with other content (after ``data rm``) gets another directory. Delete the cache any time.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable

from videopoet.schemas import objstore
from videopoet.schemas.errors import DatasetError, VerifyError
from videopoet.schemas.shards import sha256_of

objstore.configure()

__all__ = ["dataset_cache_dir", "local_shards"]


def dataset_cache_dir(ds, cache_dir: str | None = None) -> str:
    """Where the shards of ``ds`` are cached on this host."""
    base = cache_dir or os.path.join(objstore.cache_root(), "datasets")
    return os.path.join(base, ds.name, f"{ds.version}-{ds.fingerprint[:16]}")


def local_shards(ds, cache_dir: str | None = None, progress: Callable[[str], None] | None = None) -> list[str]:
    """Local, checked copies of every shard of ``ds`` (see the module docstring).

    ``progress(message)`` is told about each download. Raises :class:`VerifyError` naming the first
    shard that is missing or does not match the manifest."""
    d = dataset_cache_dir(ds, cache_dir)
    out = []
    for entry in ds.manifest["shards"]:
        rel = entry["path"]
        local = os.path.join(d, *rel.split("/"))
        want = (entry["sha256"], int(entry["bytes"]))
        if os.path.isfile(local) and sha256_of(local) == want:
            out.append(local)
            continue
        if progress is not None:
            progress(f"fetching {rel} ({want[1]} bytes) from {ds.uri}")
        problem = _fetch(ds.file_uri(rel), local, rel, want)
        if problem:  # the run cannot start: stop downloading
            raise VerifyError(f"dataset {ds.ref} failed verification: {problem}")
        out.append(local)
    return out


def _fetch(uri: str, local: str, rel: str, want: tuple[str, int]) -> str | None:
    """Download ``uri`` to ``local`` if its bytes match ``want``; else a problem line (nothing renamed)."""
    os.makedirs(os.path.dirname(local), exist_ok=True)
    tmp = f"{local}.part-{uuid.uuid4().hex[:12]}"
    try:
        with open(tmp, "wb") as f:
            try:
                got = sha256_of(uri, copy_to=f)
            except FileNotFoundError:
                return f"missing shard: {rel}"
            except OSError as e:
                raise DatasetError(f"cannot read {uri}: {e}") from None
        if got[1] < want[1]:
            return f"truncated shard: {rel} ({got[1]} of {want[1]} bytes)"
        if got != want:
            return f"altered shard: {rel} (sha256 {got[0][:12]}, manifest says {want[0][:12]})"
        os.replace(tmp, local)
        return None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
