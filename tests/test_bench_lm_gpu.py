"""bench/lm_gpu.py, the one-call GPU pretraining of a larger LM: its step budget, its model parts and its
refusal to spend device minutes on a CPU (the whole path, with tiny overrides and --allow-cpu, is run by
hand on the CPU: BENCHMARKS.md)."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("lm_gpu", os.path.join(REPO, "bench", "lm_gpu.py"))
lm_gpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lm_gpu)


def test_second_leg_fills_the_budget_and_its_decay_starts_after_the_first():
    total, decay = lm_gpu.legs(done=200, sec=0.05, left_s=240.0)
    assert total == 200 + 4800 and decay == 1000  # 20% of the whole run
    total, decay = lm_gpu.legs(done=900, sec=0.5, left_s=60.0)  # a short second leg: decay only within it
    assert total == 1020 and decay == 120
    assert lm_gpu.legs(done=50, sec=1.0, left_s=-5.0) == (60, 10)  # overrun: still ten steps and a decay


def test_model_parts_join_back_to_the_model_directory(tmp_path, monkeypatch):
    model = tmp_path / "model"
    model.mkdir()
    blobs = {"config.yaml": b"model: {}\n", "model.safetensors": os.urandom(2500), "run.json": b"{}"}
    for name, data in blobs.items():
        (model / name).write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(lm_gpu, "PART_BYTES", 1000)
    parts = lm_gpu.pack(str(model), str(out))
    assert parts == [f"model.tar.{i:02d}" for i in range(len(parts))] and len(parts) >= 4
    assert all((out / p).stat().st_size <= 1000 for p in parts)
    joined = b"".join((out / p).read_bytes() for p in parts)
    with tarfile.open(fileobj=io.BytesIO(joined)) as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert got == {f"model/{k}": v for k, v in blobs.items()}


def test_no_gpu_stops_at_once_and_says_why(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    res = subprocess.run(
        [sys.executable, os.path.join(REPO, "bench", "lm_gpu.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 3
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["error"].startswith("no GPU: jax runs on cpu")
    assert "model.d_model=256" in summary["recipe"] and not (tmp_path / "metrics.jsonl").exists()
