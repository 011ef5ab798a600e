"""bench/ray_vs_beam_bench.py's arithmetic and memory sampler, without running a pipeline: the jobs are
replaced by rows of known wall times, so the marginal rates, fixed seconds and ratios it reports can be
checked exactly; the sampler watches a real process tree."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def bench():
    spec = importlib.util.spec_from_file_location(
        "ray_vs_beam_bench", os.path.join(REPO, "bench", "ray_vs_beam_bench.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _stub_jobs(bench, monkeypatch, tmp_path, walls: dict, fingerprints: dict | None = None):
    """Corpus synthesis does nothing; a job of ``clips`` videos makes 2 records per video in
    ``walls[(clips, runner, workers)]`` seconds; the bench's work folder is the test's."""
    state = {}

    def fake_run(argv, **kwargs):
        state["clips"] = int(argv[argv.index("--clips") + 1])

    def fake_job(runner, workers, corpus, root, config):
        clips = state["clips"]
        wall = walls[(clips, runner, workers)]
        fp = (fingerprints or {}).get((clips, runner, workers), f"{clips}-{workers}")
        return {
            "runner": runner,
            "workers": workers,
            "wall_s": wall,
            "records": 2 * clips,
            "clips_per_s": 2 * clips / wall,
            "fingerprint": fp,
        }

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    monkeypatch.setattr(bench, "run_job", fake_job)
    monkeypatch.setattr(bench.tempfile, "mkdtemp", lambda prefix="": str(tmp_path))


def _main(bench, capsys, argv):
    assert bench.main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_marginal_rates_fixed_seconds_and_ratios(bench, monkeypatch, capsys, tmp_path):
    # fixed 10 s + 0.5 s per record (beam 1), 20 s + 0.25 s (beam 2), 30 s + 0.5 s (ray 1), 40 s + 0.25 s (ray 2)
    walls = {}
    for clips in (48, 192):
        records = 2 * clips
        walls[(clips, "beam", 1)] = 10 + 0.5 * records
        walls[(clips, "beam", 2)] = 20 + 0.25 * records
        walls[(clips, "ray", 1)] = 30 + 0.5 * records
        walls[(clips, "ray", 2)] = 40 + 0.25 * records
    _stub_jobs(bench, monkeypatch, tmp_path, walls)
    out = _main(bench, capsys, ["--clips", "48,192", "--config", "small"])
    assert out["marginal"] == {
        "beam 1": {"clips_per_s": 2.0, "fixed_s": 10.0},
        "ray 1": {"clips_per_s": 2.0, "fixed_s": 30.0},
        "beam 2": {"clips_per_s": 4.0, "fixed_s": 20.0},
        "ray 2": {"clips_per_s": 4.0, "fixed_s": 40.0},
    }
    ratios = out["ratios"]
    assert ratios["marginal: beam 2 workers / 1"] == ratios["marginal: ray 2 workers / 1"] == 2.0
    assert ratios["marginal: ray/beam, 1 worker(s)"] == ratios["marginal: ray/beam, 2 worker(s)"] == 1.0
    # whole-job ratios carry the fixed cost: at 48 videos ray 1 = 78 s, beam 1 = 58 s
    assert ratios["48 clips: ray/beam clips_per_s, 1 worker(s)"] == round(58 / 78, 3)
    assert ratios["192 clips: beam 2 workers / 1"] == round((10 + 192) / (20 + 96), 3)
    assert len(out["runs"]) == 8 and all(out["same_fingerprint"].values())


def test_one_runner_alone_and_fingerprints_per_worker_count(bench, monkeypatch, capsys, tmp_path):
    walls = {(c, "beam", w): 10.0 * w + c / w for c in (24, 96) for w in (1, 2)}
    # both worker counts publish their own fingerprint: that is not a mismatch
    _stub_jobs(bench, monkeypatch, tmp_path, walls)
    out = _main(bench, capsys, ["--clips", "24,96", "--runners", "beam"])
    assert {r["runner"] for r in out["runs"]} == {"beam"}
    assert set(out["marginal"]) == {"beam 1", "beam 2"}
    assert not any("ray" in k for k in out["ratios"])
    assert all(out["same_fingerprint"].values())
    # two runners that disagree with the same workers are reported
    fps = {(24, "ray", 2): "different"}
    walls.update({(c, "ray", w): v for (c, _, w), v in list(walls.items())})
    _stub_jobs(bench, monkeypatch, tmp_path, walls, fps)
    out = _main(bench, capsys, ["--clips", "24,96"])
    assert out["same_fingerprint"] == {
        "24 clips, 1 worker(s)": True,
        "24 clips, 2 worker(s)": False,
        "96 clips, 1 worker(s)": True,
        "96 clips, 2 worker(s)": True,
    }


@pytest.mark.parametrize("argv", [["--runners", "spark"], ["--runners", ""], ["--clips", "96,24"]])
def test_bad_arguments_are_one_line_errors(bench, argv, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert e.value.code == 2 and "error:" in capsys.readouterr().err


def test_sampler_sees_a_workers_private_memory_and_its_name(bench):
    # a driver that starts one worker which holds ~120 MB of its own memory for a moment
    child = "import time; b = bytearray(120 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.5)"
    driver = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}], check=True)"
    p = subprocess.Popen([sys.executable, "-c", driver])
    mem = bench.TreeRSS(p.pid, interval=0.05)
    assert p.wait(timeout=60) == 0
    m = mem.stop()
    assert 110 <= m["largest_worker_private_peak_mb"] <= m["largest_worker_peak_mb"]
    assert m["largest_worker_peak_mb"] > m["driver_peak_mb"]
    assert "python" in m["largest_worker"] and "-c" in m["largest_worker"]
    assert m["tree_peak_mb"] >= m["largest_worker_peak_mb"] + m["driver_peak_mb"] - 2
