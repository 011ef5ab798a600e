"""Targets dataflow, flink and spark: the Beam job's runner options, checked by parsing them with Beam's own
PipelineOptions views (GoogleCloudOptions, WorkerOptions, DebugOptions, PortableOptions, FlinkRunnerOptions,
SparkRunnerOptions); the rendered command through the real `videopoet pipeline run --dry-run`; submit
launching exactly that command; bad requests in one line."""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys

import pytest
from apache_beam.options import pipeline_options

from videopoet.cli.main import main
from videopoet.infra import images, targets
from videopoet.infra.request import RequestError, SubmitRequest
from videopoet.infra.targets import dataflow, flink, spark

GCP = ("--project=proj", "--region=us-central1", "--temp_location=gs://bucket/tmp")


def _request(tmp_path, target="dataflow", **kw) -> SubmitRequest:
    base = {
        "kind": "pipeline",
        "target": target,
        "name": "vp-tok",
        "run_dir": str(tmp_path / "run"),
        "config": "tiny",
        "data": "synth@v2",
        "root": "gs://bucket/datasets",
        "input": "gs://bucket/wds/*.tar",
        "runner": "beam",
        "workers": 4,
        "nodes": 32,
        "runner_args": GCP,
    }
    base.update(kw)
    return SubmitRequest(**base)


def _opts(flags: list[str]) -> pipeline_options.PipelineOptions:
    return pipeline_options.PipelineOptions(flags)


def test_dataflow_cpu_options(tmp_path):
    req = _request(tmp_path)
    targets.preflight(req)
    flags = dataflow.job_flags(req)
    o = _opts(flags)
    assert o.view_as(pipeline_options.StandardOptions).runner == "DataflowRunner"
    g = o.view_as(pipeline_options.GoogleCloudOptions)
    assert (g.project, g.region, g.temp_location, g.job_name) == ("proj", "us-central1", "gs://bucket/tmp", "vp-tok")
    assert not g.dataflow_service_options
    w = o.view_as(pipeline_options.WorkerOptions)
    assert w.sdk_container_image == images.image_ref(images.content_tag("cpu"))
    assert (w.num_workers, w.max_num_workers, w.autoscaling_algorithm) == (4, 32, "THROUGHPUT_BASED")
    d = o.view_as(pipeline_options.DebugOptions)
    assert d.experiments == ["use_runner_v2"] and d.number_of_worker_harness_threads is None


@pytest.mark.parametrize(
    "accelerator, gpus, kind, count, machine",
    [("nvidia-l4", 1, "nvidia-l4", 1, "g2-standard-8"), ("h100-80gb", 0, "nvidia-h100-80gb", 8, "a3-highgpu-8g")],
)
def test_dataflow_gpu_workers(tmp_path, accelerator, gpus, kind, count, machine):
    extra = ("--machine_type=g2-standard-8",) if accelerator.startswith("nvidia-") else ()
    req = _request(
        tmp_path,
        accelerator=accelerator,
        gpus_per_node=gpus,
        nodes=4,
        runner_args=GCP + extra,
        image="us-docker.pkg.dev/p/r/videopoet:cuda-x",
    )
    o = _opts(dataflow.job_flags(req))
    g = o.view_as(pipeline_options.GoogleCloudOptions)
    assert g.dataflow_service_options == [f"worker_accelerator=type:{kind};count:{count};install-nvidia-driver"]
    d = o.view_as(pipeline_options.DebugOptions)
    assert d.experiments == ["use_runner_v2", "no_use_multiple_sdk_containers"]  # one SDK process per VM
    assert d.number_of_worker_harness_threads == 2 * count
    w = o.view_as(pipeline_options.WorkerOptions)
    assert w.machine_type == machine and w.sdk_container_image == "us-docker.pkg.dev/p/r/videopoet:cuda-x"
    assert (w.num_workers, w.max_num_workers, w.autoscaling_algorithm) == (4, 4, "NONE")


def test_flink_and_spark_options(tmp_path):
    req = _request(tmp_path, "flink", runner_args=("--flink_master=jm:8081", "--flink_version=1.20"), gpus_per_node=1)
    o = _opts(flink.job_flags(req))
    f = o.view_as(pipeline_options.FlinkRunnerOptions)
    assert (f.flink_master, f.parallelism, f.flink_version) == ("jm:8081", 4, "1.20")
    p = o.view_as(pipeline_options.PortableOptions)
    assert (p.environment_type, p.environment_config) == ("DOCKER", images.image_ref(images.content_tag("cuda")))
    assert int(p.sdk_worker_parallelism) == 1  # Beam keeps this one a string
    assert o.view_as(pipeline_options.StandardOptions).runner == "FlinkRunner"
    req = _request(tmp_path, "spark", runner_args=("--spark_master_url=spark://m:7077",))
    o = _opts(spark.job_flags(req))
    assert o.view_as(pipeline_options.SparkRunnerOptions).spark_master_url == "spark://m:7077"
    p = o.view_as(pipeline_options.PortableOptions)
    assert (p.environment_type, p.environment_config) == ("DOCKER", images.image_ref(images.content_tag("cpu")))
    assert o.view_as(pipeline_options.StandardOptions).runner == "SparkRunner"


def test_rendered_command_goes_through_the_pipeline_cli(tmp_path, capsys):
    """The rendered job is `videopoet pipeline run --runner beam ... -- FLAGS`; its --dry-run shows Beam got them."""
    (tmp_path / "wds").mkdir()
    (tmp_path / "wds" / "train-0.tar").write_bytes(b"")
    req = _request(tmp_path, input=str(tmp_path / "wds" / "*.tar"), root=str(tmp_path / "ds"))
    arts = {a.name: a for a in targets.get("dataflow").render(req)}
    assert arts["dataflow-job.sh"].executable
    argv = shlex.split(arts["dataflow-job.sh"].text.splitlines()[-1])
    assert argv[:5] == ["videopoet", "pipeline", "run", "--runner", "beam"]
    sep = argv.index("--")
    assert argv[sep + 1 :] == dataflow.job_flags(req)
    assert main(argv[1:sep] + ["--dry-run", "--json"] + argv[sep:]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["options"]["runner"] == "DataflowRunner" and summary["options"]["job_name"] == "vp-tok"
    assert summary["options"]["sdk_container_image"] == images.image_ref(images.content_tag("cpu"))
    assert summary["options"]["experiments"] == ["use_runner_v2"]
    saved = json.loads(arts["dataflow-options.json"].text)
    assert saved["flags"] == dataflow.job_flags(req) and saved["options"]["max_num_workers"] == 32


def test_submit_launches_the_rendered_command(tmp_path):
    log = tmp_path / "argv.json"
    fake = tmp_path / "fake-videopoet"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\njson.dump(sys.argv[1:], open({str(log)!r}, 'w'))\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    req = _request(tmp_path, "spark", runner_args=("--spark_master_url=spark://m:7077",), program=(str(fake),))
    res = targets.submit(req)
    assert res.status == "completed" and res.submitted
    with open(log) as f:
        launched = json.load(f)
    rendered = shlex.split(spark.render(req)[0].text.splitlines()[-1])
    assert launched == rendered[1:]
    assert os.path.exists(tmp_path / "run" / "submit.json")


@pytest.mark.parametrize(
    "target, kw, message",
    [
        ("dataflow", {"runner_args": ("--project=p",)}, "needs --region=... --temp_location=..."),
        ("dataflow", {"runner_args": (*GCP, "--runner=DirectRunner")}, "drop --runner=DirectRunner"),
        ("dataflow", {"runner_args": (*GCP, "--no_such_flag=1")}, "unknown Beam runner flag(s): --no_such_flag"),
        ("dataflow", {"accelerator": "v5e-16"}, "no TPU workers"),
        ("dataflow", {"accelerator": "nvidia-l4"}, "needs a GPU machine type"),
        ("dataflow", {"accelerator": "b300-9"}, "unknown accelerator"),
        ("dataflow", {"kind": "train", "input": None}, "runs the pre-tokenization pipeline"),
        ("dataflow", {"runner": "ray"}, "use --runner beam"),
        ("flink", {"runner_args": ()}, "needs --flink_master=..."),
        ("flink", {"runner_args": ("--flink_master=m:1", "--flink_version=0.1")}, "invalid choice: '0.1'"),
        ("spark", {"runner_args": ("--flink_master=x",)}, "needs --spark_master_url=..."),
    ],
)
def test_bad_requests(tmp_path, target, kw, message):
    with pytest.raises(RequestError) as e:
        targets.dry_run(_request(tmp_path, target, **kw), str(tmp_path / "out"))
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_dry_run_reports_the_launcher_command(tmp_path):
    req = _request(tmp_path, "flink", runner_args=("--flink_master=jm:8081",))
    res = targets.dry_run(req, str(tmp_path / "out"))
    assert list(res.command) == flink.command(req) and "--runner=FlinkRunner" in res.command
    assert sorted(os.listdir(tmp_path / "out")) == ["flink-job.sh", "flink-options.json"]
