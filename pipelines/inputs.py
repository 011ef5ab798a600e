"""Input shards: listing them (``list_input_shards``), naming them (``input_name``: the base name, which
names the output shards and the lineage) and opening them (``open_input``: hashed, and downloaded
once when they lie in an object store). A folder corpus (:mod:`videopoet.pipelines.folder`) lists as
units, each opened as the tar ``videopoet corpus pack`` writes for it.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterable, Iterator

from videopoet.pipelines import folder
from videopoet.pipelines.errors import PipelineError

__all__ = ["input_name", "input_sha256", "is_local", "list_input_shards", "open_input"]


def input_name(uri: str) -> str:
    if folder.is_unit_ref(uri):
        return folder.unit_name(uri)
    return os.path.basename(uri.rstrip("/"))


def list_input_shards(pattern: str | Iterable[str]) -> list[str]:
    """Glob(s) / directories / URIs -> sorted shard URIs (``*.tar``, ``*.tar.gz``, ``*.tgz``).

    Local paths come back absolute; remote ones as full URIs. Base names must be unique (they name
    the output shards and the lineage). A folder-corpus spec (``FolderCorpus.to_json()``) gives its
    units' references."""
    import fsspec

    pats = [pattern] if isinstance(pattern, str) else list(pattern)
    out: set[str] = set()
    for pat in pats:
        if folder.is_unit_ref(pat):
            corpus = folder.parse_spec(pat)
            out.update(folder.plan_units(corpus) if corpus is not None else [pat])
            continue
        fs, _, paths = fsspec.get_fs_token_paths(pat)
        if len(paths) == 1 and fs.isdir(paths[0]):
            paths = fs.glob(paths[0].rstrip("/") + "/*")
        for p in paths:
            if not p.endswith((".tar", ".tar.gz", ".tgz")) or fs.isdir(p):
                continue
            uri = (
                os.path.abspath(p)
                if fs.protocol in ("file", ("file", "local")) or "://" not in pat
                else fs.unstrip_protocol(p)
            )
            out.add(uri)
    uris = sorted(out)
    if not uris:
        raise PipelineError(f"no input shards (*.tar, *.tar.gz) match {pattern!r}")
    names = Counter(input_name(u) for u in uris)
    dup = sorted(n for n, c in names.items() if c > 1)
    if dup:
        raise PipelineError(f"input shard base names must be unique; {dup[0]!r} appears {names[dup[0]]} times")
    return uris


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


@contextlib.contextmanager
def open_input(input_uri: str) -> Iterator[tuple[str, str, int]]:
    """``(path to read, sha256, size)`` of an input shard. A local shard is hashed and read in place;
    an object-store shard is downloaded once to a temporary file, hashed on the way, and that file is
    read (and removed on exit). An unreadable shard is a :class:`PipelineError`."""
    from videopoet.schemas.shards import sha256_of

    if folder.is_unit_ref(input_uri):
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".tar", prefix="videopoet-unit-") as tmp:
            sha, size = folder.write_unit(input_uri, tmp)
            tmp.flush()
            yield tmp.name, sha, size
        return
    if is_local(input_uri):
        try:
            sha, size = sha256_of(input_uri)
        except (OSError, ValueError) as e:
            raise PipelineError(f"cannot read input shard {input_uri}: {e}") from None
        yield input_uri, sha, size
        return
    import tempfile

    fd, path = tempfile.mkstemp(suffix=".tar", prefix="videopoet-input-")
    try:
        try:
            with os.fdopen(fd, "wb") as out:
                sha, size = sha256_of(input_uri, 1 << 22, copy_to=out)
        except (OSError, ValueError) as e:
            raise PipelineError(f"cannot read input shard {input_uri}: {e}") from None
        yield path, sha, size
    finally:
        if os.path.exists(path):
            os.unlink(path)


def input_sha256(input_uri: str) -> str:
    """The sha256 of an input shard's bytes (a folder-corpus unit's: of the tar it opens as)."""
    if folder.is_unit_ref(input_uri):
        with open_input(input_uri) as (_, sha, _size):
            return sha
    from videopoet.schemas.shards import sha256_of

    try:
        return sha256_of(input_uri)[0]
    except (OSError, ValueError) as e:
        raise PipelineError(f"cannot read input shard {input_uri}: {e}") from None
