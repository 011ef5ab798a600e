"""The Beam job end to end: nothing lost (synth --with-corrupt + hostile shards), reconciled
manifest counts, determinism (rerun; 1 vs 2 workers), resume after SIGKILL, immutable versions,
runner-flag pass-through and dry run."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from videopoet.cli.main import main
from videopoet.pipelines import pinning, shard, testing
from videopoet.pipelines.beam import build_options, run_beam
from videopoet.pipelines.config import load_pipeline_config
from videopoet.pipelines.errors import PipelineError
from videopoet.schemas.errors import ImmutableVersionError
from videopoet.schemas.store import DatasetStore


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """synth tiny --with-corrupt (2 shards) + the hostile shards, in one directory."""
    from videopoet.pipelines.synth import generate_corpus

    d = str(tmp_path_factory.mktemp("corpus"))
    generate_corpus(d, clips=3, images=2, shards=2, seed=0, with_corrupt=True, config="tiny", progress=False)
    h = testing.write_hostile_shards(d)
    return {"dir": d, "glob": os.path.join(d, "*.tar"), "hostile": h}


def _input_keys(paths):
    """(shard, sample key) of every sample a tar holds, straight from tarfile (independent of the
    reader); refused names count as their own key; a truncated tar lists what precedes the cut."""
    keys = set()
    for p in paths:
        try:
            with tarfile.open(p, "r|") as tar:
                for m in tar:
                    base = m.name.split("/")[-1]
                    if m.name.startswith("/") or ".." in m.name.split("/"):
                        keys.add((os.path.basename(p), m.name))
                    else:
                        keys.add((os.path.basename(p), base.split(".", 1)[0]))
        except tarfile.TarError:
            pass
    return keys


def _published(root, ref):
    ds = DatasetStore(root).open(ref)
    from videopoet.schemas import shards

    recs = [r for p in ds.shard_paths() for r in shards.read_records(p)]
    return ds, recs, list(ds.iter_rejects())


def test_beam_nothing_lost_and_reconciled(tmp_path, corpus):
    cfg = load_pipeline_config("tiny")
    root = str(tmp_path / "ds")
    s = run_beam(corpus["glob"], "synth", "v1", root, cfg, workers=1, progress=False)
    assert s["no_op"] is False and s["shards"] == {"total": 5, "processed": 5, "resumed": 0}
    ds, recs, rejects = _published(root, "synth@v1")
    m = ds.manifest
    # every input sample is a record or a reject
    got = {(r.lineage.source_shard, r.lineage.sample_key) for r in recs} | {
        (r["source_shard"], r["key"]) for r in rejects
    }
    inputs = _input_keys(
        sorted(os.path.join(corpus["dir"], f) for f in os.listdir(corpus["dir"]) if f.endswith(".tar"))
    )
    assert inputs <= got  # (the truncated tar's in-progress sample is a reject; nothing else is extra)
    assert got - inputs == set()
    # the manifest's counts reconcile with the files
    ok_samples = {(r.lineage.source_shard, r.lineage.sample_key) for r in recs}
    dup_rejects = [r for r in rejects if r["reason"] == "duplicate_key"]
    assert m["totals"]["records"] == len(recs)
    assert m["totals"]["samples_rejected"] == len(rejects) == m["rejects"]["total"]
    assert m["totals"]["samples_in"] == len(ok_samples) + len(rejects)
    assert len(dup_rejects) == 1  # the repeated key in hostile-00000 is a second sample, rejected
    assert m["totals"]["tokens"]["video"] == sum(r.video.size for r in recs)
    assert m["totals"]["tokens"]["audio"] == sum(0 if r.audio is None else r.audio.size for r in recs)
    # synth's corrupt samples: each one as documented
    kinds = {c["key"]: c["kind"] for c in json.load(open(os.path.join(corpus["dir"], "corpus.json")))["corrupt"]}
    reasons = {r["key"]: r["reason"] for r in rejects if r["source_shard"].startswith("train-")}
    for key, kind in kinds.items():
        want = {
            "truncated_mp4": "undecodable_video",
            "empty_mp4": "empty_file",
            "not_video_mp4": "undecodable_video",
            "bad_utf8_caption": "caption_not_utf8",
            "missing_caption": None,
        }[kind]
        if want is None:  # no .txt, but synth's .json carries the caption: used, as documented
            assert any(r.lineage.sample_key == key and r.caption for r in recs)
        else:
            assert reasons[key] == want
    assert sum(1 for r in recs if r.meta["is_image"] and r.lineage.source_shard.startswith("train-")) == 2
    assert DatasetStore(root).verify("synth@v1").ok
    assert main(["data", "verify", "synth@v1", "--root", root]) == 0
    # lineage: tokenizers, config and runner recorded; no absolute paths in records
    lin = m["lineage"]
    assert set(lin["tokenizers"]) == {"video", "audio", "text"} and lin["runner"]["name"] == "beam"
    assert lin["pipeline_config"]["name"] == "pipeline-tiny"
    assert all(not r.lineage.source_shard.startswith("/") for r in recs)
    # summary and Beam counters
    c = s["runner"]["counters"]
    assert c["records"] == len(recs) and c["rejects"] == len(rejects) and c["shards"] == 5
    assert s["rejects_by_reason"] == m["rejects"]["by_reason"]

    # rerun of a completed version: a no-op with the same fingerprint
    again = run_beam(corpus["glob"], "synth", "v1", root, cfg, workers=1, progress=False)
    assert again["no_op"] is True and again["fingerprint"] == m["fingerprint"]
    # (a rerun under a new version giving the same fingerprint: test_two_workers_same_fingerprint_as_one)
    # a different config under the same name@version is refused, before any work
    with pytest.raises(ImmutableVersionError):
        run_beam(corpus["glob"], "synth", "v1", root, load_pipeline_config("tiny", ["clip_stride=8"]), progress=False)


def test_a_job_whose_build_another_job_published_meanwhile_ends_well(tmp_path, corpus):
    """Two jobs of one NAME@VERSION share its staging area; the one that commits second finds the version
    published from it: done, when it holds what this job would publish; refused when its inputs differ."""
    from videopoet.pipelines import driver

    cfg = load_pipeline_config("tiny")
    root = str(tmp_path / "ds")
    good_shards = sorted(os.path.join(corpus["dir"], f) for f in os.listdir(corpus["dir"]) if f.startswith("train"))
    glob = os.path.join(corpus["dir"], "train-*.tar")
    assert len(good_shards) == 2
    late = driver.prepare_job(glob, "d", "v1", root, cfg)  # started, not yet committed
    other = driver.prepare_job(good_shards[0], "d", "v1", root, cfg)  # the same version from one shard only
    assert driver.adopt_published(late) is None  # nothing published yet: a runner's failure stays a failure
    first = run_beam(glob, "d", "v1", root, cfg, workers=1, progress=False)
    assert first["no_op"] is False and first["published_meanwhile"] is False
    # a shard of the late job that ended after the publish recreated the staging area
    stray = tmp_path / "ds" / "d" / ".work" / "v1" / "stats"
    stray.mkdir(parents=True)
    (stray / "train-00001.json").write_text("{}")
    m = driver.commit_job(late, runner={"name": "beam"})
    assert not (tmp_path / "ds" / "d" / ".work").exists()  # removed: nothing can be published from it
    assert m["fingerprint"] == first["fingerprint"] == DatasetStore(root).open("d@v1").fingerprint
    summary = driver.summarize(late, m, 1.0)
    assert summary["published_meanwhile"] and summary["no_op"] is False
    assert driver.format_summary(summary).startswith("d@v1 was published by another job of the same build")
    with pytest.raises(ImmutableVersionError, match="published from different input shards"):
        driver.commit_job(other, runner={"name": "beam"})
    with pytest.raises(ImmutableVersionError, match="published from different input shards"):
        driver.adopt_published(other)  # what a runner whose shard failed meanwhile asks
    other_config = copy.copy(late.work)
    other_config.config_fingerprint = "0" * 64
    with pytest.raises(ImmutableVersionError, match="different pipeline config"):
        driver.adopt_published(dataclasses.replace(late, work=other_config, published_meanwhile=None))
    assert DatasetStore(root).verify("d@v1", deep=True).ok


def test_cli_dry_run_passes_runner_flags_through(capsys, corpus):
    rc = main(
        [
            "pipeline",
            "run",
            "--input",
            corpus["glob"],
            "--name",
            "x",
            "--version",
            "v1",
            "--config",
            "tiny",
            "--dry-run",
            "--json",
            "clip_frames=41",
            "--",
            "--runner=DataflowRunner",
            "--project=p",
            "--region",
            "europe-west4",
            "--experiments=use_runner_v2",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["flags"] == [
        "--runner=DataflowRunner",
        "--project=p",
        "--region",
        "europe-west4",
        "--experiments=use_runner_v2",
    ]
    assert out["options"]["project"] == "p" and out["options"]["region"] == "europe-west4"
    assert out["pipeline_config"]["clip_frames"] == 41 and out["inputs"] == 5


def test_build_options():
    quiet = "--default_sdk_harness_log_level=WARNING"
    assert build_options(1) == [
        "--runner=DirectRunner",
        "--direct_running_mode=in_memory",
        "--direct_num_workers=1",
        quiet,
    ]
    assert build_options(3) == [
        "--runner=DirectRunner",
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=3",
        quiet,
    ]
    # a user's own level wins
    assert build_options(1, ["--default_sdk_harness_log_level=DEBUG"])[-1] == "--default_sdk_harness_log_level=DEBUG"
    assert quiet not in build_options(1, ["--default_sdk_harness_log_level=DEBUG"])
    assert build_options(2, ["--runner=FlinkRunner", "--flink_master=h:8081"]) == [
        "--runner=FlinkRunner",
        "--flink_master=h:8081",
    ]


def test_cli_errors_are_one_line(capsys, corpus, tmp_path):
    assert (
        main(
            [
                "pipeline",
                "run",
                "--input",
                str(tmp_path / "none-*.tar"),
                "--name",
                "x",
                "--version",
                "v1",
                "--config",
                "tiny",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no input shards" in err
    assert (
        main(
            [
                "pipeline",
                "run",
                "--input",
                corpus["glob"],
                "--name",
                "bad/name",
                "--version",
                "v1",
                "--config",
                "tiny",
                "--root",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "bad dataset name" in capsys.readouterr().err
    assert (
        main(
            [
                "pipeline",
                "run",
                "--input",
                corpus["glob"],
                "--name",
                "x",
                "--version",
                "v1",
                "--config",
                "tiny",
                "clip_frames=6",
            ]
        )
        == 2
    )
    assert "clip_frames" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ slow: processes
def _cli(args, env=None, **kw):
    return [sys.executable, "-m", "videopoet.cli.main", "pipeline", "run", *args]


def _env():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # the CLI as users run it
    return env


@pytest.mark.slow
def test_two_workers_same_fingerprint_as_one(tmp_path, corpus):
    root = str(tmp_path / "ds")
    fps = []
    for workers in (1, 2):
        out = subprocess.run(
            _cli(
                [
                    "--input",
                    corpus["glob"],
                    "--name",
                    "d",
                    "--version",
                    f"w{workers}",
                    "--root",
                    root,
                    "--config",
                    "tiny",
                    "--workers",
                    str(workers),
                    "--json",
                    "--no-progress",
                ]
            ),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        s = json.loads(out.stdout)
        fps.append(s["fingerprint"])
        if workers == 2:
            assert s["runner"]["worker_processes"] == 2  # both worker processes did shards
    assert fps[0] == fps[1]
    a, b = (DatasetStore(root).open(f"d@w{w}").manifest for w in (1, 2))
    # the two local worker processes each ran on their own share of the cores (pipelines/pinning.py)
    assert b["lineage"]["runner"]["worker_cores"] == pinning.core_plan(2)
    assert "worker_cores" not in a["lineage"]["runner"]
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]


@pytest.mark.slow
def test_sigkill_then_resume_gives_same_fingerprint(tmp_path):
    from videopoet.pipelines.synth import generate_corpus

    src = str(tmp_path / "corpus")
    generate_corpus(src, clips=12, shards=6, seed=1, config="tiny", progress=False)
    glob = os.path.join(src, "*.tar")
    root = str(tmp_path / "ds")
    args = ["--input", glob, "--name", "k", "--root", root, "--config", "tiny", "--json", "--no-progress"]
    ref = subprocess.run(_cli(args + ["--version", "ref"]), env=_env(), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    ref_fp = json.loads(ref.stdout)["fingerprint"]

    stats_dir = os.path.join(root, "k", ".work", "v1", "stats")
    p = subprocess.Popen(
        _cli(args + ["--version", "v1"]),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            if len(testing.done_markers(stats_dir)) >= 2 or p.poll() is not None:
                break
            time.sleep(0.05)
        os.killpg(p.pid, signal.SIGKILL)  # the whole process group, as a crashed machine would
    finally:
        p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL
    n_done = len(testing.done_markers(stats_dir))
    assert 1 <= n_done < 6, "the kill should land part-way"
    assert not os.path.exists(os.path.join(root, "k", "v1", "manifest.json"))  # nothing half-published

    out = subprocess.run(_cli(args + ["--version", "v1"]), env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    s = json.loads(out.stdout)
    assert s["shards"]["resumed"] == n_done and s["shards"]["processed"] == 6 - n_done
    assert s["fingerprint"] == ref_fp
    assert DatasetStore(root).verify("k@v1").ok
    # and a rerun of the completed version is a no-op
    again = subprocess.run(_cli(args + ["--version", "v1"]), env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and json.loads(again.stdout)["no_op"] is True


def test_fsspec_input_and_root(corpus):
    """Object-store paths end to end (fsspec memory://): inputs listed by glob, outputs committed."""
    import fsspec

    fs = fsspec.filesystem("memory")
    for p in corpus["hostile"]["shards"][1:]:
        with open(p, "rb") as f:
            fs.pipe(f"/in-bucket/corpus/{os.path.basename(p)}", f.read())
    cfg = load_pipeline_config("tiny")
    s = run_beam("memory://in-bucket/corpus/*.tar", "remote", "v1", "memory://out-bucket/datasets", cfg, progress=False)
    st = DatasetStore("memory://out-bucket/datasets")
    ds = st.open("remote@v1")
    assert ds.manifest["totals"]["samples_in"] == 5 and ds.manifest["totals"]["samples_rejected"] == 2
    assert {i["name"] for i in ds.manifest["lineage"]["inputs"]} == {"hostile-00001.tar", "hostile-00002.tar"}
    assert st.verify("remote@v1").ok and s["fingerprint"] == ds.fingerprint


def test_worker_failure_is_one_error_and_rerun_resumes(tmp_path, corpus, monkeypatch):
    cfg = load_pipeline_config("tiny")
    root = str(tmp_path / "ds")
    glob = os.path.join(corpus["dir"], "hostile-*.tar")
    real = shard.process_shard

    def flaky(uri, *a, **kw):
        if uri.endswith("hostile-00001.tar"):
            raise RuntimeError("disk on fire")
        return real(uri, *a, **kw)

    monkeypatch.setattr(shard, "process_shard", flaky)
    with pytest.raises(PipelineError, match="run the same command again to resume"):
        run_beam(glob, "f", "v1", root, cfg, progress=False)
    assert not DatasetStore(root).exists("f", "v1")
    monkeypatch.setattr(shard, "process_shard", real)
    s = run_beam(glob, "f", "v1", root, cfg, progress=False)
    assert s["shards"]["processed"] + s["shards"]["resumed"] == 3 and s["shards"]["processed"] >= 1
    assert DatasetStore(root).verify("f@v1").ok
