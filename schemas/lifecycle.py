"""The life of dataset versions after they are published: tags, the dataset log, removal, garbage collection.

Layout beside the versions (names starting with '.' can never be version names)::

    <root>/<name>/.tags/<tag>.json             {version, updated, by}: what NAME@TAG resolves to
    <root>/<name>/.log/<time>-<id>.json        one object per event: version published or removed, tag moved
    <root>/<name>/.locks/<version>/<gen>.json  publish/remove leases (videopoet.schemas.lease)

The log is one object per event rather than one appended file: object stores cannot append, and a
rewritten log would need a compare-and-swap loop that not every fsspec store offers; per-event objects
never conflict, need no lock, work the same on a local disk, and their names (UTC time to the
microsecond, then a random id) sort in the order the events happened.

Tag names follow the version label rules; ``latest`` is reserved (it always means the newest
version, see :meth:`DatasetStore.resolve`), and a tag may not shadow a version name (nor may a new
version take a tag's name, see :meth:`DatasetStore.begin`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
import uuid
from typing import Any

from videopoet.schemas import lease
from videopoet.schemas.errors import DatasetError
from videopoet.schemas.store import (
    BUILD_SEP,
    LATEST,
    LOG_DIR,
    MANIFEST_FILE,
    TAGS_DIR,
    WORK_DIR,
    DatasetStore,
    _check_label,
    _now,
    log_event,
    parse_ref,
)

__all__ = ["GcItem", "gc", "log", "parse_age", "remove", "tag"]

_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """'90s', '30m', '24h', '7d', '2w' (a bare number is seconds) -> seconds."""
    m = _AGE.match(str(text).strip().lower())
    if not m:
        raise DatasetError(f"bad age {text!r}: use a number with s, m, h, d or w (e.g. 24h)")
    return float(m.group(1)) * _UNITS[m.group(2)]


# ------------------------------------------------------------------------------------------ log
def _append(st: DatasetStore, name: str, event: dict[str, Any]) -> dict[str, Any]:
    return log_event(st._fs, name, event)


def log(st: DatasetStore, name: str) -> list[dict[str, Any]]:
    """The events of ``name``, oldest first."""
    _check_label("name", name)
    out = []
    for fn in st._fs.listdir(st._fs.path(name, LOG_DIR)):
        if fn.endswith(".json") and not fn.startswith("."):
            out.append(st._fs.read_json(st._fs.path(name, LOG_DIR, fn)))
    return out


# ------------------------------------------------------------------------------------------ tags
def tag(st: DatasetStore, ref: str, tag_name: str) -> dict[str, Any]:
    """Point ``NAME@TAG`` at the version ``ref`` resolves to; returns the logged event (``moved`` False
    when the tag already pointed there, and then nothing is logged)."""
    name, label = parse_ref(ref)
    version = st.resolve(name, label)
    _check_label("tag", tag_name)
    if tag_name == LATEST:
        raise DatasetError(f"'{LATEST}' is reserved: {name}@{LATEST} always means the newest version")
    if st.exists(name, tag_name):
        raise DatasetError(f"{name}@{tag_name} is a version; a tag may not shadow a version name")
    old = st.tags(name).get(tag_name, {}).get("version")
    event = {"event": "tag", "tag": tag_name, "old": old, "new": version}
    if old == version:
        return {**event, "moved": False}
    st._fs.write_json_atomic(
        st._fs.path(name, TAGS_DIR, f"{tag_name}.json"), {"version": version, "updated": _now(), "by": lease.who()}
    )
    return {**_append(st, name, event), "moved": True}


def _untag(st: DatasetStore, name: str, tag_name: str, reason: str) -> dict[str, Any]:
    old = st.tags(name)[tag_name]["version"]
    st._fs.rm(st._fs.path(name, TAGS_DIR, f"{tag_name}.json"))
    return _append(st, name, {"event": "untag", "tag": tag_name, "old": old, "new": None, "reason": reason})


# ------------------------------------------------------------------------------------------ rm
def remove(st: DatasetStore, ref: str, force: bool = False) -> dict[str, Any]:
    """Remove the published version ``NAME@VERSION`` (a version name, not a tag). Refused while a tag
    points at it unless ``force``, which removes those tags too (logged). The manifest goes first, so
    the version disappears at once and never looks half-removed."""
    name, version = parse_ref(ref)
    if not st.exists(name, version):
        if version == LATEST or version in st.tags(name):
            raise DatasetError(f"'data rm' takes a version, not a tag: {ref} -> {name}@{st.resolve(name, version)}")
        st.resolve(name, version)  # raises 'not found' with the known versions
    fs = st._fs
    with lease.acquire(fs, name, version, purpose="remove"):
        pointing = sorted(t for t, rec in st.tags(name).items() if rec.get("version") == version)
        if pointing and not force:
            raise DatasetError(
                f"{ref} is tagged ({', '.join(pointing)}); move the tags first or pass --force to remove them with it"
            )
        events = [_untag(st, name, t, f"data rm --force {ref}") for t in pointing]
        m = fs.read_json(fs.path(name, version, MANIFEST_FILE))
        vdir = fs.path(name, version)
        if fs.local:  # out of sight in one rename, then deleted
            trash = fs.path(name, WORK_DIR, f".trash-{uuid.uuid4().hex[:12]}")
            fs.makedirs(fs.path(name, WORK_DIR))
            os.rename(vdir, trash)
            fs.rm(trash)
            st._cleanup_work_parent(name)
        else:
            fs.rm(fs.path(name, version, MANIFEST_FILE))
            fs.rm(vdir)
        events.append(
            _append(
                st,
                name,
                {"event": "rm", "version": version, "fingerprint": m.get("fingerprint"), "tags_removed": pointing},
            )
        )
    return {"ref": ref, "fingerprint": m.get("fingerprint"), "tags_removed": pointing, "events": events}


# ------------------------------------------------------------------------------------------ gc
@dataclasses.dataclass(frozen=True)
class GcItem:
    kind: str  # abandoned build | orphaned file | version dir without manifest | old lease
    path: str
    bytes: int
    age_s: float

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _item(fs, kind: str, path: str, now: float) -> GcItem | None:
    files = fs.walk_files(path)
    newest = max((f[2] for f in files), default=0.0)
    return GcItem(kind, path, sum(f[1] for f in files), round(now - newest, 1)) if files or fs.exists(path) else None


def gc(st: DatasetStore, older_than_s: float, dry_run: bool = True) -> list[GcItem]:
    """What the store no longer needs and nothing touched for ``older_than_s``; removed unless ``dry_run``.

    * abandoned builds: staging dirs under ``<name>/.work/`` (and leftovers of an interrupted publish or
      rm), unless the version's lease is live (a commit copying from there);
    * orphaned files: in a published version dir, files its manifest does not list (besides the
      manifest and the done markers under ``stats/``);
    * version dirs without a manifest (a publisher killed mid-copy on an object store), unless a
      live lease says a publish is in progress;
    * lease generations other than each version's newest (only the newest is ever read).
    Age is the newest modification time of anything in the item."""
    fs = st._fs
    now = time.time()
    found: list[GcItem] = []

    def consider(kind: str, path: str) -> None:
        it = _item(fs, kind, path, now)
        if it is not None and it.age_s >= older_than_s:
            found.append(it)

    for name in st.names():
        for entry in fs.listdir(fs.path(name, WORK_DIR)):
            cur = None if entry.startswith(".") else lease.current(fs, name, entry.split(BUILD_SEP, 1)[0])
            if cur is None or not lease.is_live(cur[1]):  # a live lease: being published from there right now
                consider("abandoned build", fs.path(name, WORK_DIR, entry))
        for version in fs.listdir(fs.path(name)):
            if version.startswith("."):
                continue
            vdir = fs.path(name, version)
            if not fs.exists(fs.path(name, version, MANIFEST_FILE)):
                cur = lease.current(fs, name, version)
                if cur is None or not lease.is_live(cur[1]):
                    consider("version dir without manifest", vdir)
                continue
            try:
                m = fs.read_json(fs.path(name, version, MANIFEST_FILE))
            except DatasetError:
                continue  # verify reports it; never delete around an unreadable manifest
            listed = {MANIFEST_FILE} | {
                e["path"] for e in [*m.get("shards", []), *m.get("rejects", {}).get("files", [])]
            }
            for path, _, _ in fs.walk_files(vdir):
                rel = path[len(vdir) :].lstrip("/").replace(os.sep, "/")
                base = rel.rsplit("/", 1)[-1]
                if rel in listed or (rel.startswith("stats/") and rel.count("/") == 1 and not base.startswith(".")):
                    continue
                consider("orphaned file", path)
        for version in fs.listdir(fs.path(name, lease.LOCKS_DIR)):
            cur = lease.current(fs, name, version)
            for fn in fs.listdir(fs.path(name, lease.LOCKS_DIR, version)):
                if cur is not None and fn == f"{cur[0]:08d}.json":
                    continue  # the newest generation stays: the chain must never go back to a used number
                consider("old lease", fs.path(name, lease.LOCKS_DIR, version, fn))
    if not dry_run:
        for it in found:
            fs.rm(it.path)
        for name in st.names():
            st._cleanup_work_parent(name)
    return found
