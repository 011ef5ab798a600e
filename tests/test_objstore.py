"""Datasets and run directories on object storage: the trainer's shard cache, run dirs in a bucket.

In-process tests use fsspec's ``memory://``; the S3 ones talk to moto's server on 127.0.0.1
(tests/s3_server.py). The whole S3 round trip with its faults is tests/test_objstore_e2e.py.
"""

import json
import os
import socket
import threading
import time

import fsspec
import numpy as np
import pytest

from videopoet.cli.main import main
from videopoet.schemas import cache, objstore, store
from videopoet.schemas.errors import DatasetError, VerifyError
from videopoet.schemas.shards import sha256_of
from videopoet.trainer import data, synthetic
from videopoet.trainer.config import load_train_config


def _cfg(*ovr):
    return load_train_config("tiny", ["batch_size=8", "steps=400", *ovr])


@pytest.fixture(scope="module")
def records():
    return synthetic.make_records(24, _cfg().model.vocab, images=12, text_every=2)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = str(tmp_path / "cache")
    monkeypatch.setenv("VIDEOPOET_CACHE", d)
    return d


def _eq(a, b):
    return all(np.array_equal(a[k], b[k]) for k in data.BATCH_KEYS) and a["group"] == b["group"]


def _remote_dataset(root, records):
    store.write_dataset(root, "syn", "1", {"a.tar": records[:20], "b.tar": records[20:]})
    return store.open_dataset("syn@1", root)


def test_remote_dataset_reads_through_the_checked_cache(records, cache_dir):
    root = "memory://objstore-cache/datasets"
    ds = _remote_dataset(root, records)
    cfg = _cfg()
    fetched = []
    _, mix = data.open_mixture("syn@1", cfg, root)
    ref = data.Mixture(records, cfg)
    for s in range(5):  # the same batches as from the records themselves
        assert _eq(mix.global_batch(s), ref.global_batch(s))
    paths = cache.local_shards(ds, progress=fetched.append)
    assert fetched == []  # both shards were cached by the first open and matched their sha256
    assert all(p.startswith(os.path.join(cache_dir, "datasets", "syn")) for p in paths)
    # a cached copy that no longer matches the manifest is fetched again, never used
    with open(paths[0], "r+b") as f:
        f.seek(10)
        f.write(b"\xff\xff")
    assert cache.local_shards(ds, progress=fetched.append) == paths
    assert fetched == [
        f"fetching shards/a-00000.array_record ({ds.manifest['shards'][0]['bytes']} bytes) from {ds.uri}"
    ]
    assert sha256_of(paths[0])[0] == ds.manifest["shards"][0]["sha256"]


def test_remote_shard_altered_or_deleted_is_named(records, cache_dir):
    root = "memory://objstore-bad/datasets"
    ds = _remote_dataset(root, records)
    fs = fsspec.filesystem("memory")
    a, b = (ds.file_uri(s["path"]) for s in ds.manifest["shards"])
    blob, blob_b = fs.cat(a), fs.cat(b)
    fs.pipe(a, blob[:100] + bytes([blob[100] ^ 1]) + blob[101:])  # same size, other bytes
    with pytest.raises(VerifyError, match=r"failed verification: altered shard: shards/a-00000.array_record \(sha256"):
        data.open_mixture("syn@1", _cfg(), root)  # the size check passes; the cache's sha256 check does not
    assert not os.path.exists(cache.dataset_cache_dir(ds) + "/shards/a-00000.array_record")  # never renamed in
    fs.rm(b)
    with pytest.raises(VerifyError, match=r"missing shard: shards/b-00000.array_record"):
        data.open_mixture("syn@1", _cfg(), root)  # named before anything is downloaded
    with pytest.raises(VerifyError, match=r"altered shard: shards/a-00000.array_record \(sha256"):
        data.open_mixture("syn@1", _cfg("data.verify=false"), root)  # without verify the cache still checks
    fs.pipe(a, blob)
    fs.pipe(b, blob_b)
    cached = cache.local_shards(ds)
    fs.rm(b)  # b's checked copy is still good to use without verify; a, gone from cache and bucket, is named
    fs.rm(a)
    os.unlink(cached[0])
    with pytest.raises(VerifyError, match=r"failed verification: missing shard: shards/a-00000.array_record$"):
        data.open_mixture("syn@1", _cfg("data.verify=false"), root)


def test_record_source_refuses_remote_paths():
    with pytest.raises(DatasetError, match="reads local shard files, got memory://x/a.array_record"):
        data.record_source(["memory://x/a.array_record"])


def test_s3_retry_policy_is_configured(monkeypatch):
    conf = fsspec.config.conf
    monkeypatch.setattr(objstore, "_OURS", objstore._OURS)  # put back with the config it belongs to
    monkeypatch.setitem(conf, "s3", {k: v for k, v in conf.get("s3", {}).items() if k != "config_kwargs"})
    monkeypatch.setenv("VIDEOPOET_STORE_ATTEMPTS", "7")
    objstore.configure()
    assert conf["s3"]["config_kwargs"]["retries"] == {"mode": "standard", "total_max_attempts": 7}
    monkeypatch.setenv("VIDEOPOET_STORE_ATTEMPTS", "3")
    objstore.configure()  # ours: updated
    assert conf["s3"]["config_kwargs"]["retries"]["total_max_attempts"] == 3
    conf["s3"]["config_kwargs"]["retries"] = {"mode": "adaptive", "max_attempts": 2}
    objstore.configure()  # the user's: kept
    assert conf["s3"]["config_kwargs"]["retries"] == {"mode": "adaptive", "max_attempts": 2}


def test_s3_upload_to_an_endpoint_that_never_answers_ends_in_an_error(monkeypatch):
    """A server that takes the connection and the bytes but never answers (a hung proxy or server):
    the upload fails within the client's timeouts, with the retries spent, instead of waiting for
    ever for a ``100 Continue``."""
    import s3fs

    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def swallow(conn: socket.socket) -> None:
        with conn:
            while conn.recv(65536):
                pass

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed
                return
            held.append(conn)
            threading.Thread(target=swallow, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    conf = fsspec.config.conf
    monkeypatch.setattr(objstore, "_OURS", objstore._OURS)
    monkeypatch.setitem(conf, "s3", {k: v for k, v in conf.get("s3", {}).items() if k != "config_kwargs"})
    monkeypatch.setenv("VIDEOPOET_STORE_ATTEMPTS", "2")
    objstore.configure()
    assert conf["s3"]["config_kwargs"]["http_session_cls"] is objstore.BoundedHTTPSession
    config_kwargs = {**conf["s3"]["config_kwargs"], "read_timeout": 2, "connect_timeout": 2}
    fs = s3fs.S3FileSystem(
        endpoint_url=f"http://127.0.0.1:{listener.getsockname()[1]}",
        key="testing",
        secret="testing",
        config_kwargs=config_kwargs,
        skip_instance_cache=True,
    )
    fs.retries = 1  # s3fs's own retry loop around botocore's: once, so that botocore's attempts are counted
    outcome: dict = {}

    def upload() -> None:
        try:
            fs.pipe("bucket/key", b"x" * 4096)
        except Exception as exc:  # noqa: BLE001 - the test looks at what it was
            outcome["error"] = exc

    started = time.monotonic()
    worker = threading.Thread(target=upload, daemon=True)
    worker.start()
    worker.join(90)
    try:
        assert not worker.is_alive(), "the upload still waits for an answer after 90 s"
        assert held, "the client never connected"
        assert len(held) == 2  # both attempts made
        assert objstore.storage_error(outcome["error"], ["s3://bucket/key"]).startswith(
            "cannot use s3://bucket/key: ReadTimeoutError"
        )
        assert time.monotonic() - started < 60
    finally:
        listener.close()
        for conn in held:
            conn.close()


def test_s3_deleted_shard_named_by_verify_and_train(records, s3_root, cache_dir, tmp_path, capsys):
    root = f"{s3_root}/datasets"
    ds = _remote_dataset(root, records)
    assert main(["data", "verify", "syn@1", "--root", root]) == 0
    capsys.readouterr()
    fsspec.filesystem("s3").rm(ds.file_uri("shards/b-00000.array_record"))
    assert main(["data", "verify", "syn@1", "--root", root]) == 1
    out = capsys.readouterr()
    assert "missing shard: shards/b-00000.array_record" in out.out + out.err
    args = ["train", "--config", "tiny", "--data", "syn@1", "--root", root, "--out", str(tmp_path / "run"), "steps=2"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err == "videopoet: error: dataset syn@1 failed verification: missing shard: shards/b-00000.array_record"
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


# ----------------------------------------------------------------------------------- run dirs
RUN_ARGS = ["log_every=1", "checkpoint_every=2", "mesh.data=1", "batch_size=2", "data.mixture={t2v: 1.0}"]
TOK = ["--video-tokenizer", "tiny", "--audio-tokenizer", "tiny"]


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("root"))
    store.write_dataset(root, "syn", "1", {"a.tar": synthetic.make_records(6, _cfg().model.vocab)})
    return root


def _losses(run_dir):
    from videopoet.rundir.metrics import read_metrics

    return [(r["step"], r["loss"]) for r in read_metrics(run_dir)]


@pytest.mark.slow
def test_run_dir_on_object_storage_resumes_exactly_and_serves_generate_and_eval(
    small_root, tmp_path, cache_dir, capsys
):
    from videopoet.rundir.loop import Hook
    from videopoet.trainer import checkpoint, train

    cfg = load_train_config("tiny", ["steps=6", *RUN_ARGS])
    local = str(tmp_path / "local")
    train.train(cfg, "syn@1", local, root=small_root)
    remote = "memory://objstore-run/runs/r1"

    def stop_at_3(info):
        if info.step == 3:
            info.run.request_stop()

    res = train.train(cfg, "syn@1", remote, root=small_root, hooks=[Hook(stop_at_3)])
    assert res["status"] == "stopped" and res["checkpoint"] == 3
    fs = fsspec.filesystem("memory")
    base = "/objstore-run/runs/r1"
    assert fs.exists(f"{base}/checkpoints/3/videopoet_commit.json") and fs.exists(f"{base}/run.json")
    assert fs.exists(f"{base}/config.yaml") and fs.exists(f"{base}/loss_curve.png")
    assert [p.rsplit("/", 1)[-1].startswith("events.out.tfevents") for p in fs.ls(f"{base}/tb", detail=False)] == [True]
    assert checkpoint.read_run_info(remote)["dataset"]["ref"] == "syn@1"
    res = train.train(cfg, "syn@1", remote, root=small_root)
    assert res["status"] == "completed" and res["resumed_from"] == 3
    assert _losses(remote) == _losses(local)  # bit for bit, one row per step
    assert not os.listdir(
        os.path.join(cache_dir, "runs", os.listdir(os.path.join(cache_dir, "runs"))[0])
    )  # staging gone

    run = checkpoint.load_run(remote)
    assert run.step == 6
    out = tmp_path / "t2v.mp4"
    assert (
        main(["generate", "--run", remote, "--task", "t2v", "--prompt", "a red circle", "--out", str(out), *TOK]) == 0
    )
    assert out.stat().st_size > 0
    capsys.readouterr()
    assert main(["eval", "--run", remote, "--scenes", "1", "--tasks", "t2v", "--json", *TOK]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["gallery"] == f"{remote}/eval/gallery.html" and fs.exists(f"{base}/eval/gallery.html")


def test_mirrored_checkpoint_cut_off_is_never_a_step(tmp_path, cache_dir, monkeypatch):
    import jax.numpy as jnp

    from videopoet.rundir import checkpoints

    run = "memory://objstore-ckpt/runs/cut"
    state = {"w": jnp.arange(6.0), "step": jnp.int32(1)}
    with checkpoints.Checkpoints(run, max_to_keep=2) as ck:
        ck.save(1, state)
        assert ck.all_steps() == [1]
        real_put, calls = ck.fs.put_file, []

        def cut_after_two(lpath, rpath, **kw):  # the connection drops after two files of step 2
            calls.append(rpath)
            if len(calls) > 2:
                raise ConnectionError("connection reset by peer")
            return real_put(lpath, rpath, **kw)

        monkeypatch.setattr(ck.fs, "put_file", cut_after_two)
        with pytest.raises(
            checkpoints.CheckpointError, match="step 2 .* failed, the step is not committed: Connection"
        ):
            ck.save(2, {"w": jnp.arange(6.0) * 2, "step": jnp.int32(2)})
        monkeypatch.setattr(ck.fs, "put_file", real_put)
        assert ck.fs.exists("/objstore-ckpt/runs/cut/checkpoints/2") and ck.all_steps() == [1]  # files, no commit
    with checkpoints.Checkpoints(run, read_only=True) as ck:  # a reader (another host) sees step 1 only
        assert ck.latest_step() == 1
        restored, _ = ck.restore(1, checkpoints.abstract(state))
        assert np.array_equal(restored["w"], np.arange(6.0))
    with checkpoints.Checkpoints(run, max_to_keep=2) as ck:  # the rerun saves step 2 over what was left
        ck.save(2, {"w": jnp.arange(6.0) * 2, "step": jnp.int32(2)})
        ck.save(3, {"w": jnp.arange(6.0) * 3, "step": jnp.int32(3)})
        assert ck.all_steps() == [2, 3]  # max_to_keep prunes step 1
    fs = fsspec.filesystem("memory")
    commit = json.loads(fs.cat("/objstore-ckpt/runs/cut/checkpoints/3/videopoet_commit.json"))
    victim = next(f["path"] for f in commit["files"] if f["path"].startswith("state/"))
    p = f"/objstore-ckpt/runs/cut/checkpoints/3/{victim}"
    fs.pipe(p, fs.cat(p) + b"x")
    with checkpoints.Checkpoints(run, read_only=True) as ck:
        with pytest.raises(checkpoints.CheckpointError, match=f"step 3 .* is damaged: {victim} differs"):
            ck.restore(3, checkpoints.abstract(state))


def _closed_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "list", "--root", "s3://unreachable/datasets"],
        ["data", "verify", "synth@v1", "--root", "s3://unreachable/datasets"],
        ["train", "--config", "tiny", "--data", "synth@v1", "--root", "s3://unreachable/datasets", "--out", "RUN"],
        [
            "generate",
            "--run",
            "s3://unreachable/runs/r1",
            "--task",
            "t2v",
            "--prompt",
            "a red circle",
            "--out",
            "X.mp4",
        ],
    ],
    ids=["data-list", "data-verify", "train", "generate"],
)
def test_unreachable_object_storage_is_one_line_naming_the_path(argv, tmp_path):
    import subprocess
    import sys

    endpoint = f"http://127.0.0.1:{_closed_port()}"
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "FSSPEC_S3_ENDPOINT_URL": endpoint,
        "VIDEOPOET_STORE_ATTEMPTS": "1",
        "VIDEOPOET_CACHE": str(tmp_path / "cache"),
        "JAX_PLATFORMS": "cpu",
    }
    argv = [str(tmp_path / a) if a in ("RUN", "X.mp4") else a for a in argv]
    r = subprocess.run(
        [sys.executable, "-m", "videopoet.cli.main", *argv], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 1, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr[-2000:]
    remote = next(a for a in argv if a.startswith("s3://"))
    assert lines[0].startswith(f"videopoet: error: cannot use {remote}: EndpointConnectionError: "), lines[0]
    assert endpoint in lines[0]


def test_storage_error_recognises_client_errors_only():
    import botocore.exceptions

    e = botocore.exceptions.NoCredentialsError()
    assert objstore.storage_error(e, ["--root", "s3://b/ds"]) == (
        "cannot use s3://b/ds: NoCredentialsError: Unable to locate credentials"
    )
    try:  # a client error in the cause chain of what reached the CLI
        try:
            raise botocore.exceptions.ClientError({"Error": {"Code": "NoSuchBucket", "Message": "nope"}}, "ListObjects")
        except botocore.exceptions.ClientError as inner:
            raise RuntimeError("listing failed") from inner
    except RuntimeError as outer:
        line = objstore.storage_error(outer, ["s3://b/ds"])
    assert line is not None and line.startswith("cannot use s3://b/ds: ClientError: ") and "NoSuchBucket" in line
    assert objstore.storage_error(PermissionError("Access Denied"), ["s3://b/ds"]).endswith("Access Denied")
    assert objstore.storage_error(PermissionError("denied"), ["/local/path"]) is None  # a local OSError: not ours
    assert objstore.storage_error(ValueError("bug"), ["s3://b/ds"]) is None  # a bug keeps its traceback
