"""Dataset lifecycle: tags, NAME@latest, the log, data rm, data gc, data list; local, on S3 (moto), on a full disk."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time

import fsspec
import numpy as np
import pytest
from fsspec.implementations.local import LocalFileSystem

from videopoet.cli.main import main
from videopoet.schemas import lease, lifecycle, shards, store
from videopoet.schemas.errors import DatasetError, DiskFullError
from videopoet.schemas.record import Lineage, TokenRecord


def rec(i: int, shard: str = "a.tar") -> TokenRecord:
    return TokenRecord(
        key=f"{shard}-k{i}",
        lineage=Lineage(shard, "ab" * 32, f"k{i}", clip_start_s=0.5 * i, frame_indices=(0, 1), fps=8.0),
        video=np.full((2, 2, 2), i, np.int32),
        audio=None,
        text_ids=np.arange(2 + i % 2, dtype=np.int32),
        caption=f"clip {i}",
    )


def build(root, version, n=2, name="toy", **kw):
    return store.write_dataset(str(root), name, version, {"a.tar": [rec(i) for i in range(n)]}, **kw)


def cli(capsys, *argv, root):
    rc = main(["data", *argv, "--root", str(root)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def set_created(root, name, version, created):
    """Rewrite a manifest's creation time (not part of the fingerprint) to order versions in a test."""
    p = os.path.join(root, name, version, "manifest.json")
    with open(p) as f:
        m = json.load(f)
    m["created"] = created
    with open(p, "w") as f:
        json.dump(m, f)


# ------------------------------------------------------------------------------------------ latest + tags


def test_latest_is_newest_created_then_natural_version_order(tmp_path):
    for v, n in (("v2", 1), ("v9", 2), ("v10", 3)):
        build(tmp_path, v, n=n)
    st = store.DatasetStore(str(tmp_path))
    set_created(tmp_path, "toy", "v2", "2026-01-01T00:00:00Z")
    set_created(tmp_path, "toy", "v9", "2026-01-02T00:00:00Z")
    set_created(tmp_path, "toy", "v10", "2026-01-02T00:00:00Z")  # a tie: v10 is after v9 in natural order
    assert st.resolve("toy", "latest") == "v10"
    set_created(tmp_path, "toy", "v2", "2026-01-03T00:00:00Z")  # created last wins over the version string
    assert st.open("toy@latest").version == "v2"
    assert [(v["version"], v["latest"]) for v in st.list()] == [("v10", False), ("v2", True), ("v9", False)]
    with pytest.raises(DatasetError, match="not found.*versions of toy: v10, v2, v9"):
        st.open("toy@v3")
    with pytest.raises(DatasetError, match="not found"):
        st.open("other@latest")
    with pytest.raises(DatasetError, match="reserved"):
        build(tmp_path, "latest")


def test_tags_resolve_everywhere_and_moves_are_logged(tmp_path, capsys):
    m1, m2 = build(tmp_path, "v1", n=1), build(tmp_path, "v2", n=2)
    rc, out, _ = cli(capsys, "tag", "toy@v1", "prod", root=tmp_path)
    assert rc == 0 and "toy@prod -> toy@v1" in out
    st = store.DatasetStore(str(tmp_path))
    assert st.open("toy@prod").fingerprint == m1["fingerprint"]
    # the trainer opens datasets through the same store call
    from videopoet.trainer.data import open_verified

    assert open_verified("toy@prod", str(tmp_path)).version == "v1"
    assert open_verified("toy@latest", str(tmp_path)).version == "v2"
    for argv in (["verify", "toy@prod"], ["info", "toy@prod"], ["show", "toy@prod", "--limit", "1"]):
        rc, out, err = cli(capsys, *argv, root=tmp_path)
        assert rc == 0, err
    rc, out, _ = cli(capsys, "diff", "toy@prod", "toy@latest", "--json", root=tmp_path)
    assert rc == 0 and json.loads(out)["a"] == "toy@v1" and json.loads(out)["b"] == "toy@v2"

    rc, out, _ = cli(capsys, "tag", "toy@latest", "prod", root=tmp_path)  # move it
    assert rc == 0 and "moved: v1 -> v2" in out
    rc, out, _ = cli(capsys, "tag", "toy@v2", "prod", root=tmp_path)  # already there: nothing logged
    assert rc == 0 and "already points" in out
    assert st.open("toy@prod").fingerprint == m2["fingerprint"]
    events = [e for e in lifecycle.log(st, "toy") if e["event"] == "tag"]
    assert [(e["old"], e["new"]) for e in events] == [(None, "v1"), ("v1", "v2")]
    assert all(e["by"] == lease.who() and e["time"].endswith("Z") for e in events)
    assert [e["version"] for e in lifecycle.log(st, "toy") if e["event"] == "publish"] == ["v1", "v2"]
    rc, out, _ = cli(capsys, "log", "toy", root=tmp_path)
    assert "tag prod: v1 -> v2" in out and "publish v1" in out


@pytest.mark.parametrize(
    ("tag", "message"),
    [("latest", "reserved"), ("v1", "may not shadow a version"), ("bad/tag", "bad dataset tag"), ("..x", "bad")],
)
def test_tag_name_rules(tmp_path, capsys, tag, message):
    build(tmp_path, "v1")
    rc, _, err = cli(capsys, "tag", "toy@v1", tag, root=tmp_path)
    assert rc == 2 and message in err and err.count("\n") == 1


def test_a_new_version_may_not_take_a_tags_name(tmp_path):
    build(tmp_path, "v1")
    lifecycle.tag(store.DatasetStore(str(tmp_path)), "toy@v1", "prod")
    with pytest.raises(DatasetError, match="is a tag"):
        build(tmp_path, "prod")


def test_list_shows_counts_created_fingerprint_and_tags(tmp_path, capsys):
    m1 = build(tmp_path, "v1", n=3)
    build(tmp_path, "v2", n=1)
    lifecycle.tag(store.DatasetStore(str(tmp_path)), "toy@v1", "prod")
    lifecycle.tag(store.DatasetStore(str(tmp_path)), "toy@v1", "stable")
    rc, out, _ = cli(capsys, "list", "--json", root=tmp_path)
    items = {it["ref"]: it for it in json.loads(out)}
    v1 = items["toy@v1"]
    assert (v1["records"], v1["bytes"], v1["created"], v1["fingerprint"]) == (
        3,
        m1["totals"]["bytes"],
        m1["created"],
        m1["fingerprint"],
    )
    assert v1["tags"] == ["prod", "stable"] and items["toy@v2"]["tags"] == []
    rc, out, _ = cli(capsys, "list", root=tmp_path)
    row = next(line for line in out.splitlines() if line.startswith("toy@v1"))
    assert m1["fingerprint"][:16] in row and "prod, stable" in row and m1["created"] in row


# ------------------------------------------------------------------------------------------ rm


def test_rm_is_refused_while_tagged_and_force_removes_the_tags(tmp_path, capsys):
    build(tmp_path, "v1", n=1)
    m2 = build(tmp_path, "v2", n=2)
    st = store.DatasetStore(str(tmp_path))
    lifecycle.tag(st, "toy@v2", "prod")
    rc, _, err = cli(capsys, "rm", "toy@v2", root=tmp_path)
    assert rc == 2 and "tagged (prod)" in err and st.exists("toy", "v2")
    rc, _, err = cli(capsys, "rm", "toy@prod", root=tmp_path)
    assert rc == 2 and "takes a version, not a tag" in err
    rc, out, _ = cli(capsys, "rm", "toy@v2", "--force", "--json", root=tmp_path)
    assert rc == 0 and json.loads(out)["tags_removed"] == ["prod"]
    assert not st.exists("toy", "v2") and not os.path.exists(tmp_path / "toy" / "v2")
    assert st.tags("toy") == {} and st.resolve("toy", "latest") == "v1"
    with pytest.raises(DatasetError, match="not found"):
        st.open("toy@prod")
    ev = lifecycle.log(st, "toy")[-2:]
    assert ev[0]["event"] == "untag" and ev[0]["old"] == "v2"
    assert ev[1] == {
        **ev[1],
        "event": "rm",
        "version": "v2",
        "fingerprint": m2["fingerprint"],
        "tags_removed": ["prod"],
    }
    assert not os.path.exists(tmp_path / "toy" / ".work")  # the trash went with it
    rc, _, err = cli(capsys, "rm", "toy@v7", root=tmp_path)
    assert rc == 2 and "not found" in err


# ------------------------------------------------------------------------------------------ gc


def age(path, seconds):
    """Make every file under ``path`` look untouched for ``seconds``."""
    t = time.time() - seconds
    for d, _, files in os.walk(path):
        for fn in files:
            os.utime(os.path.join(d, fn), (t, t))


def test_gc_dry_run_lists_then_removes_only_old_garbage(tmp_path, capsys):
    m1 = build(tmp_path, "v1", n=2)
    st = store.DatasetStore(str(tmp_path))
    # an abandoned build (killed before commit), an active one, an orphan in a version, a manifest-less version dir
    old = st.begin("toy", "v2", {})
    shards.write_shard(old.shard_path("a.tar"), [rec(0)])
    fresh = st.begin("toy", "v3", {})
    shards.write_shard(fresh.shard_path("a.tar"), [rec(1)])
    orphan = tmp_path / "toy" / "v1" / "shards" / "z-00000.array_record"
    orphan.write_bytes(b"x" * 100)
    (tmp_path / "toy" / "v1" / "shards" / ".tmp-0123-a-00000.array_record").write_bytes(b"y" * 10)
    (tmp_path / "toy" / "v4" / "shards").mkdir(parents=True)
    (tmp_path / "toy" / "v4" / "shards" / "a-00000.array_record").write_bytes(b"z" * 50)
    age(tmp_path / "toy" / ".work" / "v2", 3 * 3600)
    age(tmp_path / "toy" / "v4", 3 * 3600)
    os.utime(orphan, (time.time() - 3 * 3600,) * 2)  # the .tmp file stays fresh: a write may be under way

    rc, out, _ = cli(capsys, "gc", "--older-than", "2h", "--dry-run", "--json", root=tmp_path)
    assert rc == 0
    items = {(it["kind"], os.path.relpath(it["path"], tmp_path)): it["bytes"] for it in json.loads(out)["items"]}
    v2_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tmp_path / "toy/.work/v2") for f in fs)
    assert items == {
        ("abandoned build", "toy/.work/v2"): v2_bytes,
        ("orphaned file", "toy/v1/shards/z-00000.array_record"): 100,
        ("version dir without manifest", "toy/v4"): 50,
    }
    assert orphan.exists() and (tmp_path / "toy/.work/v2").exists()  # a dry run removes nothing
    rc, out, _ = cli(capsys, "gc", "--older-than", "2h", root=tmp_path)
    assert rc == 0 and "removed 3 item(s)" in out
    assert not orphan.exists() and not (tmp_path / "toy/.work/v2").exists() and not (tmp_path / "toy/v4").exists()
    assert (tmp_path / "toy/.work/v3").exists()  # younger than 2h: a build that may be running
    assert store.verify(st.open("toy@v1")).ok is False  # the fresh .tmp file is still there
    cli(capsys, "gc", "--older-than", "0s", root=tmp_path)
    assert store.verify(st.open("toy@v1")).ok and st.open("toy@v1").fingerprint == m1["fingerprint"]
    rc, _, err = cli(capsys, "gc", "--older-than", "soon", root=tmp_path)
    assert rc == 2 and "bad age" in err


def test_gc_keeps_a_version_dir_while_its_publish_lease_is_live(tmp_path):
    build(tmp_path, "v1")
    st = store.DatasetStore(str(tmp_path))
    (tmp_path / "toy" / "v2" / "shards").mkdir(parents=True)
    (tmp_path / "toy" / "v2" / "shards" / "a-00000.array_record").write_bytes(b"z")
    with lease.acquire(st._fs, "toy", "v2"):  # a publish in progress (an object-store copy)
        assert not any(it.path.endswith("/v2") for it in lifecycle.gc(st, 0, dry_run=False))
    assert (tmp_path / "toy" / "v2").exists()
    assert [it.kind for it in lifecycle.gc(st, 0, dry_run=True) if it.path.endswith("/v2")] == [
        "version dir without manifest"
    ]


def test_parse_age():
    assert [lifecycle.parse_age(x) for x in ("90s", "30m", "24h", "7d", "2w", "15", "1.5h")] == [
        90,
        1800,
        86400,
        7 * 86400,
        14 * 86400,
        15,
        5400,
    ]


# ------------------------------------------------------------------------------------------ S3


def test_lifecycle_on_s3(s3_root, capsys):
    root = f"{s3_root}/datasets"
    m1, m2 = build(root, "v1", n=1), build(root, "v2", n=2)
    rc, _, err = cli(capsys, "tag", "toy@v1", "prod", root=root)
    assert rc == 0, err
    rc, out, _ = cli(capsys, "list", "--json", root=root)
    assert {it["ref"]: (it["tags"], it["latest"]) for it in json.loads(out)} == {
        "toy@v1": (["prod"], False),
        "toy@v2": ([], True),
    }
    rc, out, err = cli(capsys, "verify", "toy@prod", root=root)
    assert rc == 0 and "toy@v1: OK" in out, err
    rc, _, err = cli(capsys, "rm", "toy@v1", root=root)
    assert rc == 2 and "tagged" in err
    rc, _, err = cli(capsys, "rm", "toy@v1", "--force", root=root)
    assert rc == 0, err
    st = store.DatasetStore(root)
    assert [v["version"] for v in st.list()] == ["v2"] and st.tags("toy") == {}
    assert [e["event"] for e in lifecycle.log(st, "toy")] == ["publish", "publish", "tag", "untag", "rm"]
    # an orphan and a staging area left by a killed build, on the bucket
    fs = fsspec.filesystem("s3")
    bucket_root = root[len("s3://") :]
    fs.pipe(f"{bucket_root}/toy/v2/shards/orphan.array_record", b"o" * 7)
    work = st.begin("toy", "v3", {})
    shards.write_shard(work.shard_path("a.tar"), [rec(0)])
    items = {(it.kind, it.path.rsplit("/toy/", 1)[1]): it.bytes for it in lifecycle.gc(st, 0, dry_run=True)}
    assert items[("orphaned file", "v2/shards/orphan.array_record")] == 7
    assert ("abandoned build", ".work/v3") in items
    lifecycle.gc(st, 0, dry_run=False)
    assert store.verify(st.open("toy@latest")).ok and st.open("toy@latest").fingerprint == m2["fingerprint"]
    assert not fs.exists(f"{bucket_root}/toy/.work/v3")
    assert m1["fingerprint"] != m2["fingerprint"]


# ------------------------------------------------------------------------------------------ full disk


class FullDiskFS(LocalFileSystem):
    """A local filesystem that raises ENOSPC once ``budget`` bytes have been written (None: unlimited)."""

    protocol = ("fulldisk",)
    budget: int | None = None
    puts: list[str] = []

    def __init__(self, **kw):
        super().__init__(auto_mkdir=True, **kw)  # like an object store: no directories to make first

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        if path.startswith("fulldisk://"):
            path = path[len("fulldisk://") :]
        return "/" + path.lstrip("/")

    def _spend(self, path: str, n: int) -> None:
        if FullDiskFS.budget is not None:
            if n > FullDiskFS.budget:
                FullDiskFS.budget = 0
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
            FullDiskFS.budget -= n

    def put_file(self, lpath, rpath, **kw):  # (LocalFileSystem uploads through cp_file, which spends)
        FullDiskFS.puts.append(os.path.basename(rpath))
        return super().put_file(lpath, rpath, **kw)

    def pipe_file(self, path, value, mode="overwrite", **kw):
        self._spend(self._strip_protocol(path), len(value))
        return super().pipe_file(path, value, mode=mode, **kw)

    def cp_file(self, path1, path2, **kw):
        self._spend(self._strip_protocol(path2), os.path.getsize(self._strip_protocol(path1)))
        return super().cp_file(path1, path2, **kw)


THREE = {f"s{i}.tar": [rec(j, f"s{i}.tar") for j in range(3)] for i in range(3)}


def test_full_disk_fails_in_one_line_publishes_nothing_and_resumes(tmp_path):
    fsspec.register_implementation("fulldisk", FullDiskFS, clobber=True)
    ref = store.write_dataset(str(tmp_path / "ref"), "toy", "v1", THREE)
    shard = ref["shards"][0]["bytes"]
    root = f"fulldisk://{tmp_path}/ds"
    FullDiskFS.budget, FullDiskFS.puts = int(1.5 * shard) + 4096, []  # one shard and its marker fit, not two
    try:
        with pytest.raises(DiskFullError) as e:
            store.write_dataset(root, "toy", "v1", THREE)
    finally:
        FullDiskFS.budget = None
    msg = str(e.value)
    assert "\n" not in msg and "no space left" in msg
    assert f"{tmp_path}/ds/toy/.work/v1/shards/s1-00000.array_record" in msg
    st = store.DatasetStore(root)
    assert st.list() == [] and not st.exists("toy", "v1")
    assert set(st.begin("toy", "v1", {}).done_shards()) == {"s0.tar"}  # resumable: the finished shard stays
    FullDiskFS.puts = []
    m = store.write_dataset(root, "toy", "v1", THREE)  # the rerun, with space
    assert FullDiskFS.puts == ["s1-00000.array_record", "s2-00000.array_record"]  # s0 was not written again
    assert m["fingerprint"] == ref["fingerprint"] and store.verify(st.open("toy@v1")).ok


def test_full_tmpfs_names_the_shard(tmp_path):
    """The same on a real full filesystem (a 256 KiB tmpfs), where ArrayRecord's own writer hits ENOSPC."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN); the wrapper test covers ENOSPC")
    try:
        many = {f"s{i}.tar": [rec(j, f"s{i}.tar") for j in range(3)] for i in range(8)}
        with pytest.raises(DiskFullError, match=r"no space left on device writing .*/toy/\.work/v1/shards/s\d-00000"):
            store.write_dataset(str(mnt / "ds"), "toy", "v1", many)
        st = store.DatasetStore(str(mnt / "ds"))
        assert st.list() == [] and len(st.begin("toy", "v1", {}).done_shards()) >= 1
        assert not [f for f in os.listdir(mnt / "ds/toy/.work/v1/shards") if f.startswith(".tmp-")]
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
