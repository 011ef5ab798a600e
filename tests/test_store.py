"""Dataset store: ArrayRecord shards, manifest, fingerprint, atomic commit, immutability, verify, diff, CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from videopoet.cli.main import main
from videopoet.schemas import jsonschema, manifest, shards, store
from videopoet.schemas.errors import DatasetError, ImmutableVersionError, SchemaVersionError
from videopoet.schemas.record import Lineage, TokenRecord
from videopoet.schemas.shard_stats import ShardStats


def rec(i: int, shard: str = "a.tar", cond: bool = False) -> TokenRecord:
    return TokenRecord(
        key=f"{shard}-k{i}",
        lineage=Lineage(shard, "ab" * 32, f"k{i}", clip_start_s=0.5 * i, frame_indices=(0, 1, 2), fps=8.0),
        video=np.full((2, 3, 3), i, np.int32),
        audio=(np.arange(20, dtype=np.int32).reshape(4, 5) + i),
        text_ids=np.arange(3 + i % 2, dtype=np.int32),
        caption=f"clip {i}",
        conditions={"inpaint_center": np.zeros((2, 3, 3), np.int32)} if cond else {},
        meta={"bucket": "square", "is_image": False},
    )


RECS = {"a.tar": [rec(i, "a.tar") for i in range(3)], "b.tar": [rec(i, "b.tar", cond=True) for i in range(2)]}
REJ = {"a.tar": [{"source_shard": "a.tar", "key": "bad", "stage": "decode", "reason": "empty_file", "message": "0 B"}]}


def build(root, version="v1", recs=RECS, config=None, **kw):
    return store.write_dataset(
        str(root),
        "toy",
        version,
        recs,
        pipeline_config=config or {"fps": 8},
        rejects_by_shard=kw.pop("rejects", REJ),
        **kw,
    )


# ------------------------------------------------------------------------------------------ shards


def test_shard_round_trip_and_random_access(tmp_path):
    recs = [rec(i) for i in range(5)]
    stats = shards.write_shard(str(tmp_path / "s.array_record"), recs)
    assert stats["records"] == 5
    assert stats["tokens"] == {"video": 90, "audio": 100, "text": 17, "condition": 0, "superres": 0, "style": 0}
    assert stats["sha256"] == shards.sha256_of(str(tmp_path / "s.array_record"))[0]
    assert list(shards.read_records(str(tmp_path / "s.array_record"))) == recs
    with shards.ShardReader(str(tmp_path / "s.array_record")) as r:
        assert len(r) == 5 and r[3] == recs[3] and r[-1] == recs[4]
        with pytest.raises(IndexError):
            r[5]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_shards_are_byte_identical_for_identical_records(tmp_path):
    a = shards.write_shard(str(tmp_path / "a.array_record"), [rec(i) for i in range(4)])
    b = shards.write_shard(str(tmp_path / "b.array_record"), [rec(i) for i in range(4)])
    c = shards.write_shard(str(tmp_path / "c.array_record"), [rec(i) for i in (1, 0, 2, 3)])
    assert a["sha256"] == b["sha256"] and a["sha256"] != c["sha256"]


def test_shard_writer_discards_partial_file_on_error(tmp_path):
    p = tmp_path / "s.array_record"
    with pytest.raises(RuntimeError):
        with shards.ShardWriter(str(p)) as w:
            w.write(rec(0))
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_shard_reader_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        shards.ShardReader(str(tmp_path / "nope.array_record"))
    (tmp_path / "empty.array_record").write_bytes(b"")
    with pytest.raises(DatasetError, match="empty"):
        shards.ShardReader(str(tmp_path / "empty.array_record"))


def test_memory_fs_shards(tmp_path):
    stats = shards.write_shard("memory://shardtest/x.array_record", [rec(0), rec(1)])
    assert list(shards.read_records("memory://shardtest/x.array_record")) == [rec(0), rec(1)]
    assert stats["sha256"] == shards.write_shard(str(tmp_path / "x.array_record"), [rec(0), rec(1)])["sha256"]


# ------------------------------------------------------------------------------- commit and verify


def test_commit_writes_manifest_that_reconciles(tmp_path):
    m = build(tmp_path)
    assert m["totals"]["records"] == 5 and m["totals"]["shards"] == 2
    assert m["totals"]["samples_in"] == 6 and m["totals"]["samples_rejected"] == 1
    assert m["totals"]["samples_in"] == m["totals"]["records"] + m["totals"]["samples_rejected"]
    assert m["rejects"]["by_reason"] == {"empty_file": 1}
    assert m["totals"]["tokens"]["condition"] == 2 * 18
    assert [s["path"] for s in m["shards"]] == ["shards/a-00000.array_record", "shards/b-00000.array_record"]
    ds = store.open_dataset("toy@v1", str(tmp_path))
    assert ds.fingerprint == m["fingerprint"] == manifest.compute_fingerprint(m)
    assert [r.key for p in ds.shard_paths() for r in shards.read_records(p)] == [
        r.key for s in ("a.tar", "b.tar") for r in RECS[s]
    ]
    assert list(ds.iter_rejects()) == REJ["a.tar"]
    rep = store.verify(ds, deep=True)
    assert rep.ok, rep.problems
    assert rep.checked_files == 3
    assert not os.path.exists(tmp_path / "toy" / ".work")


def test_nothing_visible_before_commit_and_resume_sees_done_shards(tmp_path):
    st = store.DatasetStore(str(tmp_path))
    work = st.begin("toy", "v1", {"fps": 8})
    stats = shards.write_shard(work.shard_path("a.tar"), RECS["a.tar"])
    work.finish_shard(
        ShardStats("a.tar", (stats,), input={"name": "a.tar", "size": 1, "sha256": "cd" * 32}, samples_in=3)
    )
    # a second output started but never finished (a killed worker) is left as an orphan
    shards.write_shard(work.shard_path("b.tar"), RECS["b.tar"][:1])
    assert st.list() == [] and not st.exists("toy", "v1")
    with pytest.raises(DatasetError, match="not found"):
        st.open("toy@v1")
    again = st.begin("toy", "v1", {"fps": 8})  # resume: the done marker survives
    assert set(again.done_shards()) == {"a.tar"}
    with pytest.raises(DatasetError, match="not processed: b.tar"):
        st.commit(again, expected_inputs=["a.tar", "b.tar"])
    m = st.commit(again)
    assert [s["path"] for s in m["shards"]] == ["shards/a-00000.array_record"]
    assert store.verify(st.open("toy@v1")).ok  # the orphan did not reach the published version
    assert sorted(os.listdir(tmp_path / "toy" / "v1" / "shards")) == ["a-00000.array_record"]


def test_immutable_versions(tmp_path):
    m1 = build(tmp_path)
    m2 = build(tmp_path)  # identical content: a no-op that returns the published manifest
    assert m2 == m1
    with pytest.raises(ImmutableVersionError, match="already published with different content"):
        build(tmp_path, recs={"a.tar": RECS["a.tar"][:2], "b.tar": RECS["b.tar"]})
    assert not os.path.exists(tmp_path / "toy" / ".work")  # the refused build left nothing behind
    with pytest.raises(ImmutableVersionError, match="different pipeline config"):
        store.DatasetStore(str(tmp_path)).begin("toy", "v1", {"fps": 4})
    assert store.open_dataset("toy@v1", str(tmp_path)).manifest == m1


def test_unfinished_build_with_other_config_is_refused(tmp_path):
    st = store.DatasetStore(str(tmp_path))
    st.begin("toy", "v1", {"fps": 8})
    with pytest.raises(ImmutableVersionError, match="unfinished build"):
        st.begin("toy", "v1", {"fps": 4})


def test_fingerprint_ignores_location_runner_and_time(tmp_path):
    m_local = build(tmp_path / "r1", lineage={"runner": {"name": "beam", "workers": 1}})
    m_other = build(tmp_path / "r2", lineage={"runner": {"name": "ray", "workers": 2}})
    m_mem = build("memory://fp-test-root", lineage={"runner": {"name": "beam", "workers": 8}})
    assert m_local["fingerprint"] == m_other["fingerprint"] == m_mem["fingerprint"]
    assert m_local["lineage"]["runner"] != m_other["lineage"]["runner"]
    assert store.verify(store.open_dataset("toy@v1", "memory://fp-test-root")).ok
    m_cfg = build(tmp_path / "r3", config={"fps": 4})
    tok = {"kind": "visual", "spec": "small", "name": "x", "fingerprint": "f" * 64}
    m_tok = build(tmp_path / "r4", lineage={"tokenizers": {"video": tok}})
    assert len({m_local["fingerprint"], m_cfg["fingerprint"], m_tok["fingerprint"]}) == 3


@pytest.mark.parametrize("damage", ["flip", "delete", "truncate", "extra", "edit_manifest"])
def test_verify_names_each_damaged_file(tmp_path, damage):
    build(tmp_path)
    vdir = tmp_path / "toy" / "v1"
    shard = vdir / "shards" / "b-00000.array_record"
    if damage == "flip":
        blob = bytearray(shard.read_bytes())
        blob[200] ^= 0x01
        shard.write_bytes(bytes(blob))
        want = "altered shard: shards/b-00000.array_record"
    elif damage == "delete":
        shard.unlink()
        want = "missing shard: shards/b-00000.array_record"
    elif damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:500])
        want = "truncated shard: shards/b-00000.array_record (500 of"
    elif damage == "extra":
        (vdir / "shards" / "zz.array_record").write_bytes(b"x")
        want = "unexpected file not in the manifest: shards/zz.array_record"
    else:
        m = json.loads((vdir / "manifest.json").read_text())
        m["lineage"]["pipeline_config"]["fps"] = 30
        (vdir / "manifest.json").write_text(json.dumps(m))
        want = "manifest fingerprint does not match"
    rep = store.verify(store.open_dataset("toy@v1", str(tmp_path)))
    assert not rep.ok
    assert any(want in p for p in rep.problems), rep.problems
    assert len(rep.problems) == 1, rep.problems
    # the CLI exits 1 and names the file
    assert main(["data", "verify", "toy@v1", "--root", str(tmp_path)]) == 1


def test_unreadable_versions_are_refused(tmp_path):
    build(tmp_path)
    p = tmp_path / "toy" / "v1" / "manifest.json"
    m = json.loads(p.read_text())
    p.write_text(json.dumps({**m, "record_schema_version": 99}))
    with pytest.raises(SchemaVersionError, match="schema version 99"):
        store.open_dataset("toy@v1", str(tmp_path))
    p.write_text(json.dumps({**m, "manifest_version": 7}))
    with pytest.raises(SchemaVersionError, match="manifest version 7"):
        store.open_dataset("toy@v1", str(tmp_path))
    p.write_text(json.dumps({**m, "shards": [{"path": "/etc/passwd"}]}))
    with pytest.raises(DatasetError, match="invalid manifest"):
        store.open_dataset(str(tmp_path / "toy" / "v1"))


@pytest.mark.parametrize("ref", ["toy", "toy@", "@v1", "to/y@v1", "toy@../v1", "toy@v1@v2"])
def test_bad_refs(tmp_path, ref):
    with pytest.raises(DatasetError):
        store.DatasetStore(str(tmp_path)).open(ref)


def test_diff_explains_changes(tmp_path):
    ref = {"kind": "visual", "spec": "small", "name": "m"}
    build(tmp_path, "v1", lineage={"tokenizers": {"video": {**ref, "fingerprint": "1" * 64, "config": {"bits": 10}}}})
    recs2 = {"a.tar": RECS["a.tar"], "c.tar": [rec(9, "c.tar")]}
    build(
        tmp_path,
        "v2",
        recs=recs2,
        config={"fps": 8, "clip": {"frames": 41}},
        rejects={},
        lineage={
            "tokenizers": {"video": {**ref, "fingerprint": "2" * 64, "config": {"bits": 12}}},
            "package_version": "9.9",
        },
    )
    st = store.DatasetStore(str(tmp_path))
    d = manifest.diff_manifests(st.open("toy@v1").manifest, st.open("toy@v2").manifest)
    assert not d["same_fingerprint"]
    assert d["lineage"]["inputs"] == {"added": ["c.tar"], "removed": ["b.tar"], "changed": []}
    assert d["lineage"]["tokenizers"]["video"]["config"] == {"bits": [10, 12]}
    assert d["lineage"]["pipeline_config"] == {"clip.frames": [None, 41]}
    assert d["lineage"]["package_version"][1] == "9.9"
    assert d["shards"]["added"] == ["shards/c-00000.array_record"]
    assert d["shards"]["removed"] == ["shards/b-00000.array_record"]
    assert d["rejects_by_reason"] == {"empty_file": [1, 0]}
    same = manifest.diff_manifests(st.open("toy@v1").manifest, st.open("toy@v1").manifest)
    assert same["same_fingerprint"] and set(same) == {"a", "b", "same_fingerprint", "fingerprint"}


# --------------------------------------------------------------------------------------- contracts


def test_checked_in_json_schemas_are_generated_from_code():
    assert jsonschema.stale_files() == [], "run: python -m videopoet.schemas.jsonschema"


def test_record_wire_format_matches_its_json_schema():
    import msgpack
    from jsonschema import validate as validate_against_schema

    from videopoet.schemas.record import encode_record

    wire = msgpack.unpackb(encode_record(rec(1, cond=True)), raw=False)

    def to_jsonable(x):  # bytes stand in for msgpack bin
        if isinstance(x, dict):
            return {k: to_jsonable(v) for k, v in x.items()}
        if isinstance(x, list):
            return [to_jsonable(v) for v in x]
        return "<bin>" if isinstance(x, bytes) else x

    validate_against_schema(to_jsonable(wire), jsonschema.RECORD_JSON_SCHEMA)


# --------------------------------------------------------------------------------------------- CLI


def test_data_cli(tmp_path, capsys):
    build(tmp_path, "v1")
    build(tmp_path, "v2", config={"fps": 4})
    root = ["--root", str(tmp_path)]
    assert main(["data", "list", *root, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [x["ref"] for x in listed] == ["toy@v1", "toy@v2"]
    assert main(["data", "info", "toy@v1", *root, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["totals"]["records"] == 5 and info["rejects_by_reason"] == {"empty_file": 1}
    assert main(["data", "info", "toy@v1", *root]) == 0
    assert "rejects      1 (empty_file 1)" in capsys.readouterr().out
    assert main(["data", "verify", str(tmp_path / "toy" / "v1"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert main(["data", "diff", "toy@v1", "toy@v2", *root]) == 0
    assert "config fps: 8 -> 4" in capsys.readouterr().out
    assert main(["data", "show", "toy@v1", *root, "--limit", "2"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["key"] for x in lines] == ["a.tar-k0", "a.tar-k1"] and lines[0]["video_shape"] == [2, 3, 3]
    assert main(["data", "show", "toy@v1", *root, "--rejects"]) == 0
    assert json.loads(capsys.readouterr().out)["reason"] == "empty_file"
    assert main(["data", "info", "toy@v7", *root]) == 2
    assert "not found" in capsys.readouterr().err


def test_env_root(tmp_path, monkeypatch, capsys):
    build(tmp_path)
    monkeypatch.setenv("VIDEOPOET_ROOT", str(tmp_path))
    assert main(["data", "verify", "toy@v1"]) == 0
    assert "OK" in capsys.readouterr().out
