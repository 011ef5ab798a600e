"""A hardened, streaming webdataset tar reader (the foundation's reader; both runners use it).

Webdataset convention: a shard is a tar whose members ``{key}.{ext}`` are grouped by ``key`` (the
member path up to the first dot of its last path component, directories included), members of one
sample being consecutive. :func:`iter_samples` streams a local path or any fsspec URI and yields,
in shard order, one :class:`Sample` (``key`` + ``{ext: bytes}``) or one :class:`SampleReject` per
key, so every sample the shard holds is accounted for exactly once.

Refused (the whole sample becomes a :class:`SampleReject` with a stable reason code; nothing is
ever written to disk, so a hostile name cannot escape anywhere, but we still refuse it):

==========================  ================================================================
``unsafe_member_name``      absolute name, a ``..`` component, a backslash, a NUL/control char
``bad_member_name``         not valid UTF-8, empty key or extension, or longer than the cap
``non_regular_member``      symlink, hard link, device, FIFO (directories are skipped silently)
``member_too_large``        a member over ``max_member_bytes`` (its bytes are skipped, not read)
``sample_too_large``        the members of one sample sum over ``max_sample_bytes``
``too_many_members``        more than ``max_members`` members in one sample
``duplicate_member``        the same ``{key}.{ext}`` twice in one sample
``duplicate_key``           a key that reappears after other keys in the same shard
``truncated_tar``           the tar ends mid-member / mid-header; the in-progress sample
``unreadable_shard``        the shard cannot be opened or is not a tar (key ``""``)
==========================  ================================================================

Samples completed before a truncation are yielded normally; the truncation itself is reported as
a reject of the sample in progress (or of key ``""`` when it happens between samples), never an
exception. Memory is bounded by one sample (``max_sample_bytes``).
"""

from __future__ import annotations

import dataclasses
import tarfile
import unicodedata
from collections.abc import Iterator
from typing import IO

__all__ = [
    "READ_REASONS",
    "ReaderLimits",
    "Sample",
    "SampleReject",
    "iter_samples",
    "split_member_name",
]

READ_REASONS = (
    "unsafe_member_name",
    "bad_member_name",
    "non_regular_member",
    "member_too_large",
    "sample_too_large",
    "too_many_members",
    "duplicate_member",
    "duplicate_key",
    "truncated_tar",
    "unreadable_shard",
)


@dataclasses.dataclass(frozen=True)
class ReaderLimits:
    max_member_bytes: int = 512 * 1024 * 1024
    max_sample_bytes: int = 1024 * 1024 * 1024
    max_members: int = 64
    max_name_chars: int = 512


@dataclasses.dataclass
class Sample:
    key: str
    members: dict[str, bytes]  # extension (lower-case, without the dot, e.g. "mp4", "json") -> bytes

    @property
    def nbytes(self) -> int:
        return sum(len(v) for v in self.members.values())


@dataclasses.dataclass
class SampleReject:
    key: str
    reason: str  # one of READ_REASONS
    message: str


def _printable(name: str) -> str:
    """A name safe to log / store in JSON: surrogates and control characters escaped."""
    try:
        name.encode("utf-8")
        ok = name
    except UnicodeEncodeError:
        ok = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if unicodedata.category(c)[0] != "C" else f"\\x{ord(c):02x}" for c in ok)[:600]


def split_member_name(name: str, max_chars: int = 512) -> tuple[str, str] | tuple[None, str, str]:
    """``"dir/abc.seg.mp4"`` -> ``("dir/abc", "seg.mp4")``; a refused name -> ``(None, reason, message)``."""
    shown = _printable(name)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return None, "bad_member_name", f"member name {shown!r} is not valid UTF-8"
    if len(name) > max_chars:
        return None, "bad_member_name", f"member name longer than {max_chars} characters"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None, "unsafe_member_name", f"absolute member name {shown!r}"
    if "\\" in name or any(unicodedata.category(c)[0] == "C" for c in name):
        return None, "unsafe_member_name", f"member name {shown!r} has a backslash or control character"
    parts = name.split("/")
    if any(p == ".." for p in parts):
        return None, "unsafe_member_name", f"path traversal in member name {shown!r}"
    parts = [p for p in parts if p not in ("", ".")]
    if not parts:
        return None, "bad_member_name", f"empty member name {shown!r}"
    base = parts[-1]
    if "." not in base or base.startswith("."):
        return None, "bad_member_name", f"member {shown!r} has no {{key}}.{{ext}} form"
    stem, ext = base.split(".", 1)
    if not ext:
        return None, "bad_member_name", f"member {shown!r} has an empty extension"
    return "/".join(parts[:-1] + [stem]), ext.lower()


class _Group:
    def __init__(self, key: str):
        self.key = key
        self.members: dict[str, bytes] = {}
        self.nbytes = 0
        self.reject: SampleReject | None = None

    def refuse(self, reason: str, message: str) -> None:
        if self.reject is None:  # the first problem names the sample's reason
            self.reject = SampleReject(self.key, reason, message)
            self.members = {}

    def result(self) -> Sample | SampleReject:
        return self.reject if self.reject is not None else Sample(self.key, self.members)


def _open(uri: str | IO[bytes]):
    if hasattr(uri, "read"):
        return _NullCtx(uri)
    import fsspec

    return fsspec.open(uri, "rb")


class _TrackingInfo(tarfile.TarInfo):
    """Remembers why the last header read failed: tarfile treats a missing end-of-archive marker
    (EOF or a partial block where a header should be) as a normal end; we report it."""

    @classmethod
    def fromtarfile(cls, tf):
        try:
            return super().fromtarfile(tf)
        except tarfile.HeaderError as e:
            tf._vp_header_error = type(e).__name__
            raise


class _NullCtx:
    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self.f

    def __exit__(self, *exc):
        return False


def iter_samples(uri: str | IO[bytes], limits: ReaderLimits | None = None) -> Iterator[Sample | SampleReject]:
    """Stream the samples of one webdataset shard (local path, fsspec URI, or a binary file object)."""
    lim = limits or ReaderLimits()
    seen: set[str] = set()
    group: _Group | None = None
    # A key that spans an unsafe-name reject must still be reported once; bad names are their own
    # "keys" (printable form), one reject each.
    try:
        ctx = _open(uri)
        f = ctx.__enter__()
    except (OSError, ValueError) as e:
        yield SampleReject("", "unreadable_shard", f"cannot open shard: {type(e).__name__}: {e}")
        return
    try:
        try:
            tar = tarfile.open(fileobj=f, mode="r|*", tarinfo=_TrackingInfo)
        except (tarfile.TarError, OSError, EOFError) as e:
            yield SampleReject("", "unreadable_shard", f"not a (readable) tar: {type(e).__name__}: {e}")
            return
        try:
            while True:
                try:
                    m = tar.next()
                except (tarfile.TarError, OSError, EOFError) as e:
                    if group is not None:
                        group.refuse("truncated_tar", f"tar ends inside this sample: {type(e).__name__}: {e}")
                        yield group.result()
                        group = None
                    else:
                        yield SampleReject("", "truncated_tar", f"tar ends between samples: {type(e).__name__}: {e}")
                    return
                if m is None:
                    why = getattr(tar, "_vp_header_error", "")
                    if why in ("EmptyHeaderError", "TruncatedHeaderError"):
                        msg = f"tar has no end-of-archive marker ({why}): the shard was cut short"
                        if group is not None:
                            group.refuse("truncated_tar", msg)
                            yield group.result()
                            group = None
                        else:
                            yield SampleReject("", "truncated_tar", msg)
                        return
                    break
                if m.isdir():
                    continue
                parsed = split_member_name(m.name, lim.max_name_chars)
                if parsed[0] is None:
                    _, reason, msg = parsed
                    key = _printable(m.name)
                    if group is not None and group.key == key:
                        group.refuse(reason, msg)
                        continue
                    if group is not None:
                        yield group.result()
                    seen.add(key)
                    group = _Group(key)
                    group.refuse(reason, msg)
                    continue
                key, ext = parsed
                if group is None or group.key != key:
                    if group is not None:
                        yield group.result()
                    group = _Group(key)
                    if key in seen:
                        group.refuse("duplicate_key", f"key {key!r} appears again after other keys in this shard")
                    seen.add(key)
                if group.reject is not None:
                    continue  # skip the rest of a refused sample (tarfile skips unread data)
                if not m.isreg():
                    kind = "symlink" if m.issym() else "hard link" if m.islnk() else "device/FIFO/other"
                    group.refuse("non_regular_member", f"member {m.name!r} is a {kind}")
                    continue
                if m.size > lim.max_member_bytes:
                    group.refuse("member_too_large", f"member {m.name!r} has {m.size} bytes > {lim.max_member_bytes}")
                    continue
                if group.nbytes + m.size > lim.max_sample_bytes:
                    group.refuse("sample_too_large", f"sample over {lim.max_sample_bytes} bytes")
                    continue
                if ext in group.members:
                    group.refuse("duplicate_member", f"member {m.name!r} appears twice in the sample")
                    continue
                if len(group.members) >= lim.max_members:
                    group.refuse("too_many_members", f"more than {lim.max_members} members")
                    continue
                try:
                    fobj = tar.extractfile(m)
                    data = fobj.read() if fobj is not None else b""
                    if len(data) != m.size:
                        raise EOFError(f"member {m.name!r}: {len(data)} of {m.size} bytes")
                except (tarfile.TarError, OSError, EOFError) as e:
                    group.refuse("truncated_tar", f"tar ends inside member {m.name!r}: {type(e).__name__}: {e}")
                    yield group.result()
                    return
                group.members[ext] = data
                group.nbytes += len(data)
            if group is not None:
                yield group.result()
        finally:
            try:
                tar.close()
            except Exception:  # a truncated stream can fail again on close; nothing left to report
                pass
    finally:
        ctx.__exit__(None, None, None)
