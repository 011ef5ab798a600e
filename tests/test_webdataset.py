"""The webdataset reader on well-formed and hostile tars built here."""

from __future__ import annotations

import io
import tarfile

import pytest

from videopoet.media.webdataset import ReaderLimits, Sample, SampleReject, iter_samples, split_member_name


def _tar(members, *, end_marker=True, fmt=tarfile.GNU_FORMAT) -> bytes:
    """members: list of (name, bytes) or (TarInfo, bytes|None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            if isinstance(name, tarfile.TarInfo):
                tar.addfile(name, io.BytesIO(data) if data is not None else None)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    blob = buf.getvalue()
    if not end_marker:
        blob = blob.rstrip(b"\0")
        blob += b"\0" * ((-len(blob)) % 512)
    return blob


def _read(blob: bytes, **kw):
    return list(iter_samples(io.BytesIO(blob), ReaderLimits(**kw) if kw else None))


def _summary(items):
    return [(x.key, "ok", sorted(x.members)) if isinstance(x, Sample) else (x.key, x.reason) for x in items]


def test_groups_members_by_key_in_order(tmp_path):
    blob = _tar([("a.mp4", b"v"), ("a.txt", b"cap"), ("a.json", b"{}"), ("b.jpg", b"i"), ("sub/c.seg.wav", b"w")])
    items = _read(blob)
    assert _summary(items) == [("a", "ok", ["json", "mp4", "txt"]), ("b", "ok", ["jpg"]), ("sub/c", "ok", ["seg.wav"])]
    assert items[0].members["txt"] == b"cap"
    # the same through a path / fsspec URI
    p = tmp_path / "s.tar"
    p.write_bytes(blob)
    assert _summary(iter_samples(str(p))) == _summary(items)
    assert _summary(iter_samples(f"file://{p}")) == _summary(items)


def test_memory_fsspec():
    import fsspec

    blob = _tar([("k.txt", b"x")])
    with fsspec.open("memory://wds/one.tar", "wb") as f:
        f.write(blob)
    assert _summary(iter_samples("memory://wds/one.tar")) == [("k", "ok", ["txt"])]


def test_path_traversal_and_absolute_names_are_rejects():
    blob = _tar(
        [
            ("good.txt", b"g"),
            ("../../etc/passwd.txt", b"x"),
            ("/abs/evil.txt", b"x"),
            ("a/../../b.txt", b"x"),
            ("back\\slash.txt", b"x"),
            ("after.txt", b"ok"),
        ]
    )
    s = _summary(_read(blob))
    assert s[0] == ("good", "ok", ["txt"]) and s[-1] == ("after", "ok", ["txt"])
    assert [r[1] for r in s[1:-1]] == ["unsafe_member_name"] * 4


def test_non_regular_members_are_rejects():
    sym = tarfile.TarInfo("s.mp4")
    sym.type, sym.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo("h.mp4")
    hard.type, hard.linkname = tarfile.LNKTYPE, "x.txt"
    dev = tarfile.TarInfo("d.mp4")
    dev.type = tarfile.CHRTYPE
    fifo = tarfile.TarInfo("f.mp4")
    fifo.type = tarfile.FIFOTYPE
    d = tarfile.TarInfo("somedir")
    d.type = tarfile.DIRTYPE
    blob = _tar(
        [
            ("x.txt", b"1"),
            (d, None),
            ("s.txt", b"cap"),
            (sym, None),
            (hard, None),
            (dev, None),
            (fifo, None),
            ("z.txt", b"2"),
        ]
    )
    s = _summary(_read(blob))
    assert s == [
        ("x", "ok", ["txt"]),
        ("s", "non_regular_member"),
        ("h", "non_regular_member"),
        ("d", "non_regular_member"),
        ("f", "non_regular_member"),
        ("z", "ok", ["txt"]),
    ]


def test_member_and_sample_caps():
    blob = _tar([("a.mp4", b"x" * 100), ("b.mp4", b"x" * 10), ("b.txt", b"y" * 10), ("c.txt", b"ok")])
    s = _summary(_read(blob, max_member_bytes=50, max_sample_bytes=15))
    assert s == [("a", "member_too_large"), ("b", "sample_too_large"), ("c", "ok", ["txt"])]
    blob = _tar([(f"m.e{i}", b"1") for i in range(5)])
    assert _summary(_read(blob, max_members=3)) == [("m", "too_many_members")]


def test_duplicate_key_and_member():
    blob = _tar([("a.txt", b"1"), ("b.txt", b"2"), ("a.mp4", b"3"), ("c.txt", b"4"), ("c.txt", b"5")])
    s = _summary(_read(blob))
    assert s == [("a", "ok", ["txt"]), ("b", "ok", ["txt"]), ("a", "duplicate_key"), ("c", "duplicate_member")]


@pytest.mark.parametrize("cut", [0.5, 0.8, 0.99])
def test_truncated_tar_reported_not_raised(cut):
    members = [(f"k{i}.bin", bytes([i]) * 3000) for i in range(6)]
    full = _tar(members)
    data_end = 6 * (512 + 3072)  # headers + padded member data; zero blocks follow
    items = _read(full[: int(data_end * cut)])
    oks = [x for x in items if isinstance(x, Sample)]
    rej = [x for x in items if isinstance(x, SampleReject)]
    assert len(rej) == 1 and rej[0].reason == "truncated_tar"
    assert [x.key for x in oks] == [f"k{i}" for i in range(len(oks))]
    assert all(x.members["bin"] == bytes([int(x.key[1:])]) * 3000 for x in oks)


def test_tar_without_end_marker_is_truncated():
    blob = _tar([("a.txt", b"1"), ("b.txt", b"2")], end_marker=False)
    s = _summary(_read(blob))
    assert s == [("a", "ok", ["txt"]), ("b", "truncated_tar")]


def test_unreadable_shards():
    assert _summary(_read(b"")) == [("", "unreadable_shard")]
    assert _summary(_read(b"this is not a tar file at all" * 40)) == [("", "unreadable_shard")]
    assert _summary(iter_samples("/nonexistent/dir/x.tar")) == [("", "unreadable_shard")]


def test_non_utf8_and_odd_names():
    blob = _tar([("ok.txt", b"1"), ("noext", b"2"), (".hidden", b"3"), ("ctl\x01.txt", b"4")], fmt=tarfile.PAX_FORMAT)
    s = _summary(_read(blob))
    assert s[0] == ("ok", "ok", ["txt"])
    assert [r[1] for r in s[1:]] == ["bad_member_name", "bad_member_name", "unsafe_member_name"]
    # raw non-UTF-8 bytes in a GNU header name
    info = tarfile.TarInfo("x.txt")
    info.size = 1
    hdr = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    hdr[0:5] = b"\xff\xfe.tx"
    hdr[148:156] = b"        "
    hdr[148:155] = f"{sum(hdr):06o}\0".encode()
    blob = bytes(hdr) + b"z" + b"\0" * 511 + b"\0" * 1024
    s = _summary(_read(blob))
    assert s and s[0][1] == "bad_member_name"


def test_split_member_name():
    assert split_member_name("a/b/c.d.E") == ("a/b/c", "d.e")
    assert split_member_name("./k.txt") == ("k", "txt")
    assert split_member_name("../k.txt")[0] is None
