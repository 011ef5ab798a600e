"""Two processes publishing the same NAME@VERSION at once, locally and on a real S3 API (moto's server).

Exactly one publishes; for the other, identical content is a no-op and different content is refused;
a watcher process that verifies every visible version the whole time never sees a half-written one.
Also: a killed publisher's lease does not block, a live one does (with a one-line error), a lease is
renewed while held, and a publish killed mid-copy on S3 stays invisible and is cleared by the next.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from videopoet.schemas import lease, lifecycle, shards, store
from videopoet.schemas.errors import DatasetError
from videopoet.schemas.record import Lineage, TokenRecord
from videopoet.schemas.shard_stats import ShardStats

SPAWN = multiprocessing.get_context("spawn")  # fresh interpreters: real separate processes, no forked state


def records(n: int) -> dict[str, list[TokenRecord]]:
    def rec(i: int, shard: str) -> TokenRecord:
        return TokenRecord(
            key=f"{shard}-k{i}",
            lineage=Lineage(shard, "cd" * 32, f"k{i}", clip_start_s=0.0, frame_indices=(0,), fps=8.0),
            video=np.full((1, 4, 4), i, np.int32),
            audio=None,
            text_ids=np.arange(3, dtype=np.int32),
            caption=f"clip {i}",
        )

    return {s: [rec(i, s) for i in range(n)] for s in ("a.tar", "b.tar", "c.tar")}


def _publisher(root: str, who: str, n: int, rounds: int, barrier, results) -> None:
    from videopoet.schemas.errors import ImmutableVersionError

    for r in range(rounds):
        barrier.wait(timeout=120)
        try:
            m = store.write_dataset(root, "toy", f"v{r}", records(n), build_id=who)
            results.put((r, who, "ok", m["fingerprint"]))
        except ImmutableVersionError as e:
            results.put((r, who, "refused", str(e)))
        except Exception as e:  # noqa: BLE001 - reported to the test
            results.put((r, who, "error", repr(e)))


def _watcher(root: str, stop, results) -> None:
    checks, problems = 0, []
    while not stop.is_set():
        st = store.DatasetStore(root)
        for v in st.list():
            rep = store.verify(st.open(v["ref"]))
            checks += 1
            problems += [f"{v['ref']}: {p}" for p in rep.problems]
        time.sleep(0.05)
    results.put((checks, problems))


def race(root: str, n_a: int, n_b: int, rounds: int) -> tuple[dict[int, dict[str, tuple]], tuple[int, list[str]]]:
    """Two publisher processes, ``rounds`` versions, each round started at the same moment; and a watcher."""
    barrier, results, watched, stop = SPAWN.Barrier(2), SPAWN.Queue(), SPAWN.Queue(), SPAWN.Event()
    pubs = [
        SPAWN.Process(target=_publisher, args=(root, who, n, rounds, barrier, results))
        for who, n in (("a", n_a), ("b", n_b))
    ]
    watcher = SPAWN.Process(target=_watcher, args=(root, stop, watched))
    for p in [watcher, *pubs]:
        p.start()
    out: dict[int, dict[str, tuple]] = {}
    try:
        for _ in range(2 * rounds):
            r, who, status, detail = results.get(timeout=300)
            out.setdefault(r, {})[who] = (status, detail)
    finally:
        stop.set()
        watch = watched.get(timeout=120)
        for p in [*pubs, watcher]:
            p.join(timeout=60)
    assert all(p.exitcode == 0 for p in [*pubs, watcher])
    return out, watch


def publishes(root: str, version: str) -> list[dict]:
    return [
        e for e in lifecycle.log(store.DatasetStore(root), "toy") if e["event"] == "publish" and e["version"] == version
    ]


def check_identical(root: str, fingerprint: str, rounds: int = 3) -> None:
    out, (checks, problems) = race(root, 2, 2, rounds)
    for r in range(rounds):
        assert out[r] == {"a": ("ok", fingerprint), "b": ("ok", fingerprint)}, out[r]
        assert len(publishes(root, f"v{r}")) == 1  # exactly one of them published; the other was a no-op
        assert store.verify(store.open_dataset(f"toy@v{r}", root), deep=True).ok
    assert checks > 0 and problems == []


def check_different(root: str, fingerprints: dict[str, str], rounds: int = 3) -> None:
    out, (checks, problems) = race(root, 2, 3, rounds)
    for r in range(rounds):
        statuses = sorted(s for s, _ in out[r].values())
        assert statuses == ["ok", "refused"], out[r]
        winner = next(w for w, (s, _) in out[r].items() if s == "ok")
        loser = "b" if winner == "a" else "a"
        assert "already published with different content" in out[r][loser][1]
        ds = store.open_dataset(f"toy@v{r}", root)
        assert ds.fingerprint == fingerprints[winner] and store.verify(ds, deep=True).ok
        assert len(publishes(root, f"v{r}")) == 1
    assert checks > 0 and problems == []


def reference_fingerprints(tmp_path) -> dict[str, str]:
    return {
        who: store.write_dataset(str(tmp_path / f"ref-{who}"), "toy", "v0", records(n))["fingerprint"]
        for who, n in (("a", 2), ("b", 3))
    }


def test_two_processes_same_content_locally(tmp_path):
    check_identical(str(tmp_path / "ds"), reference_fingerprints(tmp_path)["a"])
    assert not (tmp_path / "ds" / "toy" / ".work").exists()  # both staging areas are gone


def test_two_processes_different_content_locally(tmp_path):
    check_different(str(tmp_path / "ds"), reference_fingerprints(tmp_path))


@pytest.mark.slow
def test_two_processes_on_s3(s3_root, tmp_path):
    fps = reference_fingerprints(tmp_path)
    check_identical(f"{s3_root}/same", fps["a"], rounds=2)
    check_different(f"{s3_root}/different", fps, rounds=2)


# ------------------------------------------------------------------------------------------ leases


def fake_generation(st: store.DatasetStore, version: str, gen: int, **fields) -> None:
    rec = {
        "owner": "x" * 32,
        "by": "someone@elsewhere",
        "host": "elsewhere",
        "pid": 1,
        "purpose": "publish",
        "acquired": "2026-01-01T00:00:00Z",
        "expires": time.time() + 3600,
        "released": False,
        **fields,
    }
    st._fs.makedirs(st._fs.path("toy", lease.LOCKS_DIR, version))
    st._fs.write_json_atomic(st._fs.path("toy", lease.LOCKS_DIR, version, f"{gen:08d}.json"), rec)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_stale_leases_do_not_block_and_a_live_one_does(where, tmp_path, request, monkeypatch):
    root = str(tmp_path / "ds") if where == "local" else f"{request.getfixturevalue('s3_root')}/ds"
    st = store.DatasetStore(root)
    monkeypatch.setenv("VIDEOPOET_LEASE_WAIT_S", "0.5")
    fake_generation(st, "v1", 0)  # held by a live process on another host
    with pytest.raises(DatasetError, match=r"toy@v1 is locked by someone@elsewhere \(pid 1, publish") as e:
        store.write_dataset(root, "toy", "v1", records(1))
    assert "\n" not in str(e.value) and st.list() == []
    fake_generation(st, "v1", 1, expires=time.time() - 1)  # that host's job died: its lease ran out
    t0 = time.monotonic()
    m = store.write_dataset(root, "toy", "v1", records(1))
    assert time.monotonic() - t0 < 5 and st.open("toy@v1").fingerprint == m["fingerprint"]
    gen, rec = lease.current(st._fs, "toy", "v1")
    assert gen == 2 and rec["released"] and rec["by"] == lease.who()


def test_a_killed_local_publishers_lease_is_taken_over_at_once(tmp_path):
    root = str(tmp_path / "ds")
    code = (
        "import os, sys; from videopoet.schemas import lease, store; "
        "st = store.DatasetStore(sys.argv[1]); lease.acquire(st._fs, 'toy', 'v1', ttl_s=3600); os._exit(9)"
    )
    assert subprocess.run([sys.executable, "-c", code, root], timeout=120).returncode == 9
    st = store.DatasetStore(root)
    gen, rec = lease.current(st._fs, "toy", "v1")
    assert rec["host"] == socket.gethostname() and rec["expires"] > time.time() + 3000 and not rec["released"]
    t0 = time.monotonic()
    store.write_dataset(root, "toy", "v1", records(1))  # the holder's pid is gone: no need to wait an hour
    assert time.monotonic() - t0 < 5 and lease.current(st._fs, "toy", "v1")[0] == 1


def test_a_lease_is_renewed_while_held(tmp_path):
    st = store.DatasetStore(str(tmp_path))
    with lease.acquire(st._fs, "toy", "v1", ttl_s=0.4) as held:
        time.sleep(1.2)  # three times its ttl
        held.check()
        assert json.loads((tmp_path / "toy/.locks/v1/00000000.json").read_text())["expires"] > time.time()
    assert lease.current(st._fs, "toy", "v1")[1]["released"]


def test_a_publish_killed_mid_copy_on_s3_is_invisible_and_cleared(s3_root):
    import fsspec

    root = f"{s3_root}/ds"
    fs = fsspec.filesystem("s3")
    base = root[len("s3://") :]
    fs.pipe(f"{base}/toy/v1/shards/a-00000.array_record", b"half")  # the copies a killed publisher made
    st = store.DatasetStore(root)
    assert st.list() == [] and not st.exists("toy", "v1")
    with pytest.raises(DatasetError, match="not found"):
        st.open("toy@v1")
    m = store.write_dataset(root, "toy", "v1", records(2))
    assert store.verify(st.open("toy@v1"), deep=True).ok and st.open("toy@v1").fingerprint == m["fingerprint"]


def test_a_shared_staging_area_published_by_another_process_is_a_clear_error(tmp_path):
    """Two handles on one shared staging dir (processes of one build): the second commit says what happened."""
    st = store.DatasetStore(str(tmp_path))
    first = st.begin("toy", "v1", {})
    for name, recs in records(1).items():
        stats = shards.ShardWriter(first.shard_path(name))
        for r in recs:
            stats.write(r)
        first.finish_shard(ShardStats(name, (stats.close(),), input={"name": name, "size": 0, "sha256": "e" * 64}))
    second = st.begin("toy", "v1", {})  # another process of the same build, before the publish
    in_flight = tmp_path / "toy" / ".work" / "v1" / "shards" / ".tmp-0000-x-00000.array_record"
    in_flight.write_bytes(b"a shard another worker is still writing")
    m = st.commit(first)
    assert sorted(os.listdir(tmp_path / "toy" / "v1" / "shards")) == [s["path"][len("shards/") :] for s in m["shards"]]
    with pytest.raises(DatasetError, match=r"toy@v1 was published \(fingerprint .*\) from the staging area"):
        st.commit(second)
    assert store.verify(st.open("toy@v1")).ok
