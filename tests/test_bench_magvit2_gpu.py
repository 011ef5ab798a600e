"""bench/ scripts for MAGVIT-v2: the bench's GPU flags, the one-call GPU train/eval driver and the perceptual-loss
bench, run here on the CPU with tiny budgets (a lent GPU runs them for real)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from videopoet.tokenizers import magvit2
from videopoet.tokenizers.magvit2.tokenizer import arch_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")


def test_bench_batch_matmul_and_peak_flags():
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "bench", "magvit2_bench.py"),
            "--child",
            "tiny",
            "--reps",
            "1",
            "--batch",
            "3",
            "--matmul-n",
            "256",
            "--peak-tflops",
            "0.5",
            "--dtype",
            "bfloat16",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
        check=True,
    )
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["batch"] == 3 and row["matmul"] == {"n": 256, "dtype": "bfloat16"} and row["dtype"] == "bfloat16"
    for name in ("encode", "decode"):
        assert row[f"{name}_vs_peak"] == pytest.approx(row[f"{name}_flop_per_s"] / 0.5e12)
        assert row[f"{name}_clips_per_s"] == pytest.approx(3 / row[f"{name}_s_per_batch"])
    assert row["matmul_vs_peak"] == pytest.approx(max(row["matmul_gflop_per_s"]) * 1e9 / 0.5e12)


@pytest.mark.slow
def test_gpu_driver_trains_evaluates_and_exports_on_cpu(tmp_path):
    src = tmp_path / "init"
    magvit2.load("tiny").save(str(src))  # a trained model stands in: the tiny preset keeps this test short
    out = tmp_path / "out"
    res = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "bench", "magvit2_gpu.py"),
            "--out",
            str(out),
            "--minutes",
            "0.2",
            "--first-leg-seconds",
            "8",
            "--grace-seconds",
            "600",
            "--skip-bench",
            "--allow-cpu",
            "--eval-clips",
            "4",
            "--config",
            "tiny",
            "--init-from",
            str(src),
            "batch_size=2",
            "pool_clips=8",
            "log_every=1",
            "warmup_steps=1",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=900,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [
        "eval.json",
        "loss_curve.png",
        "metrics.jsonl",
        "model/config.yaml",
        "model/model.safetensors",
        "recon_grid.png",
        "summary.json",
    ]  # <= 8 files: what the device tool returns
    summary = json.loads((out / "summary.json").read_text())
    train = summary["train"]
    assert train["step"] == train["total_steps"] > train["leg1_steps"] >= 4 and not train["stopped_early"]
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(1, train["step"] + 1))  # one log per step, none lost on resume
    assert recs[-1]["lr"] < 0.5 * 2e-4 < recs[train["leg1_steps"] - 1]["lr"] * 1.01  # the tail set at resume ran
    # the export is the source network, continued: same architecture, trained (new weights), what eval.json scored
    before, tok = magvit2.load(str(src)), magvit2.load(str(out / "model"))
    assert arch_config(tok.config) == arch_config(before.config) and tok.fingerprint != before.fingerprint
    assert tok.config.batch_size == 2 and tok.config.pool_clips == 8 and tok.config.train_frames == 0  # the recipe ran
    ev = json.loads((out / "eval.json").read_text())
    assert ev["clips"] == 4 and summary["eval"]["psnr"] == ev["psnr"] and ev["shape"] == [5, 32, 32]


def test_seconds_per_step_ignores_compilation_and_leg_clocks():
    import importlib.util

    spec = importlib.util.spec_from_file_location("magvit2_gpu", os.path.join(REPO, "bench", "magvit2_gpu.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    # leg 1: compile 30 s, then 2 s/step; leg 2 (clock from 0, compile again 25 s) at 2 s/step; one 9 s hiccup
    recs = [
        {"step": 1, "time": 32.0},
        {"step": 2, "time": 34.0},
        {"step": 3, "time": 36.0},
        {"step": 4, "time": 27.0},
        {"step": 5, "time": 29.0},
        {"step": 7, "time": 33.0},
        {"step": 8, "time": 42.0},
    ]
    assert mod.seconds_per_step(recs, [0, 3]) == 2.0
    with pytest.raises(RuntimeError, match="too few"):
        mod.seconds_per_step(recs[:1], [0])


def test_gpu_driver_stops_at_once_without_a_gpu(tmp_path):
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, os.path.join(REPO, "bench", "magvit2_gpu.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
        cwd=tmp_path,
    )
    assert res.returncode == 3, res.stdout[-2000:] + res.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["error"].startswith("no GPU: jax runs on cpu") and "train" not in summary
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]  # nothing trained, nothing benched


def test_perceptual_bench_reports_ratios_to_the_step_without_it():
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "bench", "magvit2_perceptual_bench.py"),
            "--config",
            "tiny",
            "--frames",
            "2",
            "--reps",
            "1",
            "--widths",
            "4,6,8,8,8",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
        check=True,
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert [r["perceptual_frames"] for r in res["rows"]] == [None, 2] and res["rows"][0]["vs_without"] == 1.0
    for r in res["rows"]:
        assert r["step_s"] > 0 and r["vs_without"] == round(r["step_s"] / res["rows"][0]["step_s"], 3)
    assert res["config"] == "tiny" and res["size"] == [32, 32]
