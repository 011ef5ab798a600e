"""The object-storage round trip against a real S3 API (moto's server on 127.0.0.1, tests/s3_server.py),
with its faults.

corpus on S3 -> Beam job -> dataset on S3 -> ``data verify`` -> train -> SIGTERM -> resume from S3
with the losses of an uninterrupted run -> generate. Faults: the endpoint down for a few seconds while
the pipeline writes and while a checkpoint is uploaded (retried with backoff, the job completes); a
write cut off part-way (a pipeline killed mid-write, a pipeline or a checkpoint upload whose endpoint
stays down past the retries: one line) never becomes a dataset version or a checkpoint step; a shard
deleted from the bucket is named by ``data verify`` and the trainer. The jobs run as the CLI in
subprocesses that talk to the server through the test's relay (``S3Server.flaky``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import fsspec
import numpy as np
import pytest

from videopoet.cli.main import main
from videopoet.schemas import objstore
from videopoet.schemas.store import DatasetStore

TRAIN = [
    "--config",
    "tiny",
    "--data",
    "synth@v1",
    "--json",
    "--no-progress",
    "steps=120",
    "log_every=1",
    "checkpoint_every=1000",
    "mesh.data=1",
    "data.mixture={t2v: 1.0, t2i: 1.0}",
]


def _env(relay, cache, **extra):
    env = {
        **os.environ,
        **relay.env,
        "VIDEOPOET_CACHE": cache,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": os.environ.get("VIDEOPOET_TEST_XLA_OPT", ""),
        **extra,
    }
    return env


def _cli(*args):
    return [sys.executable, "-m", "videopoet.cli.main", *args]


def _wait_for_object(fs, prefix, proc, timeout=400):
    """Poll until an object exists under ``prefix`` (or the process ended); True if one appeared."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        fs.invalidate_cache()
        try:
            if fs.find(prefix):
                return True
        except FileNotFoundError:
            pass
        time.sleep(0.1)
    return False


def _pipeline(root, corpus, version, env):
    return _cli(
        "pipeline",
        "run",
        "--runner",
        "beam",
        "--input",
        f"{corpus}/train-*.tar",
        "--name",
        "synth",
        "--version",
        version,
        "--root",
        root,
        "--config",
        "tiny",
        "--workers",
        "1",
        "--json",
        "--no-progress",
    )


def _losses(run_dir):
    from videopoet.rundir.metrics import read_metrics

    return [(r["step"], r["loss"]) for r in read_metrics(run_dir)]


@pytest.mark.slow
def test_s3_round_trip_with_outages_cut_writes_and_a_deleted_shard(s3_server, tmp_path, capsys, monkeypatch):
    from videopoet.pipelines.synth import generate_corpus

    bucket = s3_server.new_bucket()
    corpus, root, run = f"{bucket}/corpus", f"{bucket}/datasets", f"{bucket}/runs/r1"
    cache = str(tmp_path / "cache")
    monkeypatch.setenv("VIDEOPOET_CACHE", cache)
    local = str(tmp_path / "corpus")
    generate_corpus(local, clips=4, images=2, shards=2, seed=0, with_corrupt=True, config="tiny", progress=False)
    fsspec.filesystem("s3").put(f"{local}/", f"{corpus}/", recursive=True)

    with s3_server.flaky() as relay:
        fs = fsspec.filesystem("s3")
        bucket_path = bucket[len("s3://") :]
        # ---- the Beam job; the endpoint goes down for 3 s once its first output is written
        p = subprocess.Popen(
            _pipeline(root, corpus, "v1", None),
            env=_env(relay, cache),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert _wait_for_object(fs, f"{bucket_path}/datasets/synth/.work/v1/shards", p)
        # down until 3 s after the job's next connection: its remaining shards take seconds to tokenize on a
        # slow machine, and a fixed 3 s outage could pass while it computes
        relay.outage(3.0, until_met=True)
        assert p.poll() is None  # the job still has its commit to write when the endpoint goes down
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        assert relay.rejected > 0  # the job met the outage, retried, completed
        v1 = json.loads(out)
        assert main(["data", "verify", "synth@v1", "--root", root]) == 0
        capsys.readouterr()

        # ---- a write cut off part-way: the job killed (SIGKILL, its whole process group) once it writes
        p = subprocess.Popen(
            _pipeline(root, corpus, "v2", None),
            env=_env(relay, cache),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            assert _wait_for_object(fs, f"{bucket_path}/datasets/synth/.work/v2/shards", p)
            os.killpg(p.pid, signal.SIGKILL)
        finally:
            p.wait(timeout=60)
        assert p.returncode == -signal.SIGKILL
        assert not DatasetStore(root).exists("synth", "v2")  # nothing half-written is a version
        assert [v["version"] for v in DatasetStore(root).versions("synth")] == ["v1"]
        # ---- the endpoint gone for longer than the retries (2 attempts) while the job writes: one line, no version
        p = subprocess.Popen(
            _pipeline(root, corpus, "v3", None),
            env=_env(relay, cache, VIDEOPOET_STORE_ATTEMPTS="2"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert _wait_for_object(fs, f"{bucket_path}/datasets/synth/.work/v3/shards", p)
        relay.down()
        out, err = p.communicate(timeout=600)
        relay.up()
        assert p.returncode == 2
        assert err.strip().splitlines()[-1].startswith("videopoet: error: the Beam job failed")
        assert "run the same command again to resume" in err.strip().splitlines()[-1]
        assert [v["version"] for v in DatasetStore(root).versions("synth")] == ["v1"]
        again = subprocess.run(
            _pipeline(root, corpus, "v2", None), env=_env(relay, cache), capture_output=True, text=True, timeout=600
        )
        assert again.returncode == 0, again.stderr[-3000:]
        assert json.loads(again.stdout)["fingerprint"] == v1["fingerprint"]  # the rerun resumes to the same data

        # ---- train: an uninterrupted reference, then SIGTERM and a resume, both in the bucket
        ref = subprocess.run(
            _cli("train", *TRAIN, "--root", root, "--out", str(tmp_path / "ref")),
            env=_env(relay, cache),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert ref.returncode == 0, ref.stderr[-3000:]
        p = subprocess.Popen(
            _cli("train", *TRAIN, "--root", root, "--out", run),
            env=_env(relay, cache),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        metrics = f"{run[len('s3://') :]}/metrics.jsonl"
        deadline = time.time() + 240
        while time.time() < deadline and p.poll() is None:
            fs.invalidate_cache()
            if fs.exists(metrics) and fs.cat(metrics).count(b"\n") >= 3:
                break
            time.sleep(0.2)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=120)
        assert p.returncode == 143, err[-3000:]
        stopped = json.loads(out)
        assert stopped["status"] == "sigterm" and 3 <= stopped["checkpoint"] < 120
        resumed = subprocess.run(
            _cli("train", *TRAIN, "--root", root, "--out", run),
            env=_env(relay, cache),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert json.loads(resumed.stdout)["resumed_from"] == stopped["checkpoint"]
        assert _losses(run) == _losses(str(tmp_path / "ref"))  # bit for bit, one row per step
        assert fs.exists(f"{run[len('s3://') :]}/run.json") and fs.find(f"{run[len('s3://') :]}/tb")

        # ---- generate from the run in the bucket
        clip = tmp_path / "t2v.mp4"
        assert main(["generate", "--run", run, "--task", "t2v", "--prompt", "a red circle", "--out", str(clip)]) == 0
        assert clip.stat().st_size > 0
        capsys.readouterr()

        # ---- a shard deleted from the bucket: named by data verify and by the trainer, which refuses to start
        ds = DatasetStore(root).open("synth@v2")
        victim = ds.manifest["shards"][0]["path"]
        fs.rm(ds.file_uri(victim))
        assert main(["data", "verify", "synth@v2", "--root", root]) == 1
        assert f"missing shard: {victim}" in "".join(capsys.readouterr())
        refused = subprocess.run(
            _cli(
                "train",
                *[a if a != "synth@v1" else "synth@v2" for a in TRAIN],
                "--root",
                root,
                "--out",
                f"{bucket}/runs/r2",
            ),
            env=_env(relay, cache),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert refused.returncode == 1
        assert (
            refused.stderr.strip() == f"videopoet: error: dataset synth@v2 failed verification: missing shard: {victim}"
        )


def test_checkpoint_upload_survives_an_outage_and_a_cut_one_is_never_a_step(s3_server, tmp_path, monkeypatch):
    import jax.numpy as jnp
    import s3fs

    from videopoet.rundir import checkpoints

    monkeypatch.setenv("VIDEOPOET_CACHE", str(tmp_path / "cache"))
    run = f"{s3_server.new_bucket()}/runs/ck"
    state = {"w": jnp.arange(8.0), "step": jnp.int32(0)}

    def at(step):
        return {"w": jnp.arange(8.0) * step, "step": jnp.int32(step)}

    with s3_server.flaky() as relay:
        with checkpoints.Checkpoints(run, max_to_keep=3) as ck:
            ck.save(1, at(1))
            real = ck._upload_files

            def upload_in_outage(step):  # the endpoint goes down as the upload of step 2 starts
                relay.outage(3.0)
                return real(step)

            monkeypatch.setattr(ck, "_upload_files", upload_in_outage)
            t0 = time.time()
            ck.save(2, at(2))
            assert relay.rejected > 0 and time.time() - t0 >= 2.5 and ck.all_steps() == [1, 2]

        # the endpoint gone for longer than the retries part-way through an upload
        monkeypatch.setenv("VIDEOPOET_STORE_ATTEMPTS", "2")
        objstore.configure()
        s3fs.S3FileSystem.clear_instance_cache()
        try:
            with checkpoints.Checkpoints(run, max_to_keep=3) as ck:
                real_put, calls = ck.fs.put_file, []

                def cut(lpath, rpath, **kw):
                    calls.append(rpath)
                    if len(calls) == 3:
                        relay.down()
                    return real_put(lpath, rpath, **kw)

                monkeypatch.setattr(ck.fs, "put_file", cut)
                with pytest.raises(checkpoints.CheckpointError, match="step 3 .* failed, the step is not committed"):
                    ck.save(3, at(3))
                relay.up()
        finally:
            monkeypatch.setenv("VIDEOPOET_STORE_ATTEMPTS", str(objstore.DEFAULT_ATTEMPTS))
            objstore.configure()
            s3fs.S3FileSystem.clear_instance_cache()
        fs = fsspec.filesystem("s3")
        assert fs.find(f"{run[len('s3://') :]}/checkpoints/3")  # some files of step 3 arrived...
        with checkpoints.Checkpoints(run, read_only=True) as ck:  # ...but it is not a step
            assert ck.all_steps() == [1, 2]
            restored, _ = ck.restore(ck.latest_step(), checkpoints.abstract(state))
            assert np.array_equal(restored["w"], np.arange(8.0) * 2)
