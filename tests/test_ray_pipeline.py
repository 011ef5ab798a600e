"""The Ray runner against real Ray processes: parity with Beam (reading and writing a bucket), nothing lost,
resume after the driver's SIGKILL, a Jobs API job on a two-node local cluster that loses a tokenizer actor
mid-job, a folder corpus.

Every Ray process binds to 127.0.0.1 and is stopped by the test that started it.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest
import ray_cluster

from videopoet.pipelines.config import load_pipeline_config
from videopoet.pipelines.testing import done_markers
from videopoet.schemas import store

pytestmark = pytest.mark.slow

CFG = load_pipeline_config("tiny")
VIDEOPOET = os.path.join(os.path.dirname(sys.executable), "videopoet")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from videopoet.pipelines.synth import generate_corpus

    d = tmp_path_factory.mktemp("raycorpus")
    generate_corpus(str(d), clips=8, shards=4, images=2, with_corrupt=True, config="tiny", progress=False)
    return str(d)


@pytest.fixture(scope="module")
def beam_reference(corpus, tmp_path_factory):
    from videopoet.pipelines.beam import run_beam

    root = str(tmp_path_factory.mktemp("beamroot"))
    run_beam(os.path.join(corpus, "train-*.tar"), "synth", "ref", root, CFG, workers=1, progress=False)
    return store.open_dataset("synth@ref", root)


@pytest.fixture
def local_ray(cluster):
    """This process as a driver of the session's cluster (what run_ray does when given an address)."""
    with ray_cluster.joined(cluster):
        yield


def _sample_keys(corpus: str) -> set[tuple[str, str]]:
    out = set()
    for shard in sorted(glob.glob(os.path.join(corpus, "train-*.tar"))):
        with tarfile.open(shard) as t:
            for m in t.getmembers():
                out.add((os.path.basename(shard), m.name.split(".", 1)[0]))
    return out


def test_ray_matches_beam_byte_for_byte_and_loses_nothing(corpus, beam_reference, s3_server, cluster):
    """Corpus in a bucket -> Ray job -> dataset in the bucket (moto's S3 server on 127.0.0.1): the fingerprint
    and the shard and rejects bytes of the local Beam job, every input sample a record or a reject, ``data
    verify`` passes there, and a rerun of the published version is a no-op. (The runs below read and write
    local files.)"""
    import fsspec

    from videopoet.pipelines.ray import run_ray
    from videopoet.schemas.shards import read_records

    bucket = s3_server.new_bucket()
    fs = fsspec.filesystem("s3")
    fs.put(f"{corpus}/", f"{bucket}/corpus/", recursive=True)
    root = f"{bucket}/datasets"
    with ray_cluster.joined(cluster, env_vars=s3_server.env):  # the workers reach the server too
        s = run_ray(f"{bucket}/corpus/train-*.tar", "synth", "ray", root, CFG, workers=2, progress=False)
        ds = store.DatasetStore(root).open("synth@ray")
        assert s["fingerprint"] == ds.fingerprint == beam_reference.fingerprint
        assert ds.manifest["lineage"]["runner"]["name"] == "ray"
        assert store.verify(ds, deep=True).ok
        rels = [f["path"] for f in beam_reference.manifest["shards"] + beam_reference.manifest["rejects"]["files"]]
        local = {rel: open(beam_reference.file_uri(rel), "rb").read() for rel in rels}
        remote = {rel: fs.cat_file(ds.file_uri(rel)) for rel in rels}
        assert remote == local  # byte-identical shards and rejects in the bucket
        again = run_ray(f"{bucket}/corpus/train-*.tar", "synth", "ray", root, CFG, workers=1, progress=False)
        assert again["no_op"] and again["fingerprint"] == ds.fingerprint
    # nothing lost: every input sample is a record (by lineage) or a reject (read from the local copies of
    # the same bytes)
    ref = beam_reference
    recorded = {(r.lineage.source_shard, r.lineage.sample_key) for p in ref.shard_paths() for r in read_records(p)}
    rejected = {(r["source_shard"], r["key"]) for r in ref.iter_rejects()}
    assert recorded | rejected == _sample_keys(corpus)
    assert not recorded & rejected
    t = ds.manifest["totals"]
    assert t == ref.manifest["totals"]
    assert t["samples_in"] == len(_sample_keys(corpus)) == len(recorded) + t["samples_rejected"]
    assert set(ds.manifest["rejects"]["by_reason"]) >= {"empty_file", "undecodable_video", "caption_not_utf8"}


def _stable_listing(d: str, quiet_s: float = 5.0, limit_s: float = 60.0) -> set[str]:
    """The committed markers of ``d`` once the set has not changed for ``quiet_s`` seconds."""
    last, since, t_end = None, time.time(), time.time() + limit_s
    while time.time() < t_end:
        now = done_markers(d)
        if now != last:
            last, since = now, time.time()
        elif time.time() - since >= quiet_s:
            break
        time.sleep(0.2)
    return last or set()


def test_ray_driver_killed_midway_resumes_to_the_same_fingerprint(corpus, beam_reference, cluster, tmp_path):
    """SIGKILL the job's driver part-way (Ray then stops the job's tasks), start it again: it does only
    the shards that were not done and publishes what an uninterrupted run publishes."""
    root = str(tmp_path)
    argv = [
        VIDEOPOET,
        "pipeline",
        "run",
        "--runner",
        "ray",
        "--address",
        cluster["address"],
        "--actors",
        "1",
        "--input",
        os.path.join(corpus, "train-*.tar"),
        "--name",
        "synth",
        "--version",
        "v1",
        "--root",
        root,
        "--config",
        "tiny",
        "--no-progress",
        "--json",
    ]
    stats_dir = os.path.join(root, "synth", ".work", "v1", "stats")
    p = subprocess.Popen(argv, env=cluster["env"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    killed = False
    try:
        while time.time() < deadline and p.poll() is None:
            if done_markers(stats_dir):
                p.kill()
                killed = True
                break
            time.sleep(0.01)
    finally:
        if p.poll() is None and not killed:
            p.kill()
        p.wait(timeout=60)
    assert killed, "the job finished before a shard was done; cannot interrupt it"
    done_before = _stable_listing(stats_dir)  # tasks already running may still finish their shard
    assert 1 <= len(done_before) <= 4
    assert not store.DatasetStore(root).exists("synth", "v1")
    out = subprocess.run(argv, env=cluster["env"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout[out.stdout.index("{\n") :])
    assert summary["shards"]["resumed"] == len(done_before)
    assert summary["shards"]["processed"] == 4 - len(done_before)
    assert summary["fingerprint"] == beam_reference.fingerprint
    assert store.verify(store.open_dataset("synth@v1", root)).ok


@pytest.fixture
def cluster(ray_cluster_session):
    return ray_cluster_session


def _submit_job(client, entry: str, env_vars: dict[str, str], submission_id: str) -> str:
    """Submit through the Jobs API, retrying while the head's job agent (on a loaded machine, its dashboard)
    is not answering yet; the fixed submission id keeps a retry after a lost reply from starting a second job."""
    import requests

    deadline = time.time() + 120
    while True:
        try:
            return client.submit_job(entrypoint=entry, submission_id=submission_id, runtime_env={"env_vars": env_vars})
        except (RuntimeError, requests.exceptions.ConnectionError) as e:
            if "already exists" in str(e):  # the lost reply's submission went through
                return submission_id
            starting = isinstance(e, requests.exceptions.ConnectionError) or "No available agent" in str(e)
            if not starting or time.time() > deadline:
                raise
            time.sleep(2)


def test_jobs_api_job_survives_a_killed_tokenizer_actor(corpus, beam_reference, cluster, tmp_path):
    """A pipeline job submitted through the Jobs API to the two-node cluster; one of its two tokenizer actors
    SIGKILLed mid-job: the job succeeds and publishes what Beam publishes (no lost or duplicated record)."""
    import ray
    from ray.job_submission import JobStatus, JobSubmissionClient
    from ray.util.state import list_actors

    client = JobSubmissionClient(cluster["dashboard"])
    root = str(tmp_path)
    entry = (
        f"{VIDEOPOET} pipeline run --runner ray --actors 2 --input '{os.path.join(corpus, 'train-*.tar')}' "
        f"--name synth --version jobs --root {root} --config tiny --no-progress"
    )
    job_env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": cluster["env"]["XLA_FLAGS"]}
    job_id = _submit_job(client, entry, job_env, f"videopoet-test-{os.getpid()}")
    finished = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED)
    killed = None
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address=cluster["address"], _node_ip_address="127.0.0.1", log_to_driver=False, logging_level="WARNING")
    try:
        deadline = time.time() + 300
        while time.time() < deadline and killed is None and client.get_job_status(job_id) not in finished:
            for a in list_actors(
                address=cluster["address"],
                filters=[("state", "=", "ALIVE")],
                detail=True,
                raise_on_missing_output=False,
            ):
                if "TokenizeWindows" in (a.class_name or "") and a.pid:
                    time.sleep(1.0)  # let it take work first
                    os.kill(a.pid, signal.SIGKILL)
                    killed = a.pid
                    break
            time.sleep(0.2)
    finally:
        ray.shutdown()
    deadline = time.time() + 400
    status = None
    while time.time() < deadline:
        status = client.get_job_status(job_id)
        if status in finished:
            break
        time.sleep(1)
    logs = client.get_job_logs(job_id)
    assert killed is not None, "no tokenizer actor was seen alive"
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "published synth@jobs" in logs
    ds = store.open_dataset("synth@jobs", root)
    assert ds.fingerprint == beam_reference.fingerprint  # no lost or duplicated record
    assert ds.manifest["totals"] == beam_reference.manifest["totals"]
    assert ds.manifest["lineage"]["runner"]["name"] == "ray"
    assert store.verify(ds).ok


def test_ray_reads_a_folder_corpus_as_beam_does(local_ray, tmp_path):
    """A folder of media files + a Parquet table (tests/folder_corpus.py) through the Ray runner: the same
    fingerprint as the Beam runner's, every row and file accounted for."""
    from folder_corpus import EXPECTED_REJECTS, make_folder_corpus

    from videopoet.pipelines.beam import run_beam
    from videopoet.pipelines.folder import FolderCorpus
    from videopoet.pipelines.ray import run_ray

    folder, table, _ = make_folder_corpus(str(tmp_path / "folder"))
    spec = FolderCorpus(folder, table, samples_per_shard=4).to_json()
    root = str(tmp_path / "datasets")
    ray_summary = run_ray(spec, "clips", "ray", root, CFG, workers=2, progress=False)
    beam_summary = run_beam(spec, "clips", "beam", root, CFG, workers=1, progress=False)
    assert ray_summary["fingerprint"] == beam_summary["fingerprint"]
    ds = store.open_dataset("clips@ray", root)
    assert ds.manifest["rejects"]["by_reason"] == EXPECTED_REJECTS
    assert ds.manifest["totals"]["samples_in"] == 7
