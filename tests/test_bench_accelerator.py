"""bench/accelerator.py, the one accelerator benchmark: run here on the CPU with the tiny presets
(``--allow-cpu``), so it is known to run before a device is lent; its plan, fall-through and goals;
``bench/checkout.py`` importing the package from a checkout that is not installed."""

from __future__ import annotations

import importlib.util
import json
import os
import site
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")


def _module():
    sys.path.insert(0, BENCH)
    try:
        spec = importlib.util.spec_from_file_location("accelerator_bench", os.path.join(BENCH, "accelerator.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(BENCH)


@pytest.mark.slow
def test_runs_every_part_on_the_cpu_with_the_tiny_presets(tmp_path):
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, os.path.join(BENCH, "accelerator.py"), "--allow-cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=900,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["accelerator.json", "accelerator.log"]  # <= 8 files come back
    s = json.loads((out / "accelerator.json").read_text())
    assert s["backend"] == "cpu" and s["parts"] == ["trainer", "magvit2", "sampler", "pipeline"]
    tr = s["trainer"]["tiny"]
    assert 0 < tr["mfu"] <= 1 and tr["step_time_s"] > 0 and tr["batch"] == 4 and tr["tried"] == []
    assert tr["tokens_per_s"] == pytest.approx(4 * tr["mean_seq_len"] / tr["step_time_s"], rel=1e-6)
    mv = s["magvit2"]["tiny"]
    assert mv["encode_clips_per_s"] > 0 and 0 < mv["encode_vs_peak"] and 0 < mv["encode_vs_matmul"]
    sm = s["sampler"]["tiny"]
    assert sm["param_dtype"] == "bfloat16" and sm["output_len"] == 82  # 5x4x4 latent tokens + the layout's ends
    assert 0 < sm["weight_bytes_per_token"] < 2 * sm["params"]  # bf16 weights, the embedding table read one row
    # the bound: one read of the weights per output token at the nominal 10 GB/s the CPU run passes
    assert sm["bound_s"] == pytest.approx(sm["output_len"] * sm["weight_bytes_per_token"] / 1e10, abs=1e-4)
    assert sm["cache_vs_bound"] == pytest.approx(sm["bound_s"] / sm["cache_s"], rel=0.05, abs=2e-3)
    pl = s["pipeline"]
    assert pl["config"] == "tiny" and pl["clips"] == 8  # 4 clips x two 17-frame windows each
    assert pl["ratio_vs_decode_only"] == pytest.approx(pl["shard_path_clips_per_s"] / pl["decode_only_clips_per_s"])
    assert pl["beam"] == "not run in the CPU plan" and 0 < pl["tokenizer_share_of_wall"] < 1
    goals = {g["goal"]: g for g in s["goals"]}
    assert (
        goals["trainer MFU tiny float32"]["value"] == tr["mfu"] and goals["trainer MFU tiny float32"]["target"] == 0.4
    )
    assert goals["pipeline clips/s vs decode-only"]["value"] == pl["ratio_vs_decode_only"]
    log = (out / "accelerator.log").read_text()
    assert [line.split(" (rc")[0] for line in log.splitlines() if line.startswith("=====")] == [
        "===== trainer tiny {'batch': 4, 'remat': 'none', 'attention': 'auto'}",
        "===== magvit2",
        "===== sampler",
        "===== pipeline",
    ]


def test_stops_at_once_without_an_accelerator(tmp_path):
    res = subprocess.run(
        [sys.executable, os.path.join(BENCH, "accelerator.py"), "--out", str(tmp_path), "--parts", "sampler"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert res.returncode == 3, res.stderr[-2000:]
    s = json.loads((tmp_path / "accelerator.json").read_text())
    assert "no accelerator" in s["error"] and "sampler" not in s
    bad = subprocess.run(
        [sys.executable, os.path.join(BENCH, "accelerator.py"), "--out", str(tmp_path), "--parts", "trainer,mfu"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert bad.returncode == 2 and "unknown parts ['mfu']" in bad.stderr


class FakeRunner:
    """Answers each command from a script of (row, error) pairs and records what was run."""

    def __init__(self, answers):
        self.answers, self.names = list(answers), []

    def run(self, name, cmd, timeout_s):
        self.names.append(name)
        return self.answers.pop(0)


def _row(mfu):
    return {
        "mfu": mfu,
        "step_time_s": 0.3,
        "tokens_per_s": 1e5,
        "mean_seq_len": 2261.0,
        "params": 8.6e8,
        "peak_flops": 989e12,
        "peak_source": "catalogue",
        "compile_and_first_steps_s": 40.0,
    }


def test_trainer_candidates_fall_through_until_one_runs():
    mod = _module()
    runner = FakeRunner(
        [
            (None, "exit 1: RESOURCE_EXHAUSTED: Out of memory while trying to allocate 30.1GiB"),
            (None, "exit 1: cuDNN does not support this mask"),
            (_row(0.43), None),  # 300m: the third candidate runs
            (_row(0.38), None),  # 1b: the first runs
        ]
    )
    res = mod.run_trainer(runner, gpu=True)
    assert res["300m"]["mfu"] == 0.43 and res["300m"]["attention"] == "xla" and res["300m"]["remat"] == "none"
    assert [t["error"][:20] for t in res["300m"]["tried"]] == ["exit 1: RESOURCE_EXH", "exit 1: cuDNN does n"]
    assert res["1b"]["batch"] == 8 and res["1b"]["tried"] == [] and len(runner.names) == 4
    assert mod.goals({"trainer": res}, gpu=True)[0] == {
        "goal": "trainer MFU 300m bfloat16",
        "value": 0.43,
        "target": 0.4,
        "met": True,
    }
    # a spent budget stops the presets' candidates at once; nothing ran is an error, never a figure
    spent = FakeRunner([(None, "skipped: the time budget is spent"), (None, "skipped: the time budget is spent")])
    res = mod.run_trainer(spent, gpu=True)
    assert res["300m"]["error"] == "no candidate ran" and len(spent.names) == 2
    assert mod.goals({"trainer": res}, gpu=True)[0]["met"] is None


def test_every_gpu_command_names_a_real_flag():
    """The GPU plan cannot be run here: its commands' flags are checked against each bench's --help."""
    mod = _module()
    cmds = [mod.trainer_command("300m", c, True) for c in mod.trainer_candidates(True)["300m"]]
    cmds += [mod.magvit2_command(True, 989.0), mod.sampler_command(True), mod.pipeline_command(True, True)]
    helps = {}
    for cmd in cmds:
        script = cmd[1]
        if script not in helps:
            helps[script] = subprocess.run(
                [sys.executable, script, "--help"], capture_output=True, text=True, env=ENV, timeout=120, check=True
            ).stdout
        for flag in (a for a in cmd[2:] if a.startswith("--")):
            assert flag in helps[script], (os.path.basename(script), flag)
    assert "model.attention=cudnn" in cmds[0] and "--latent" in cmds[0] and mod.PAPER_LATENT in cmds[0]


def test_checkout_imports_the_package_when_it_is_not_installed(tmp_path):
    """No site processing (so no editable-install finder): the packages the bench needs come from
    site-packages on PYTHONPATH, and ``videopoet`` only from the checkout's folders."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import checkout\n"
        "try:\n    import videopoet.schemas\nexcept ImportError:\n    print('not installed')\n"
        "checkout.ensure_importable('videopoet.trainer.config')\n"
        "import videopoet.media, videopoet.rundir, videopoet.trainer.config as c\n"
        "print(c.__file__)"
    )
    env = dict(ENV, PYTHONPATH=os.pathsep.join(site.getsitepackages()))
    res = subprocess.run(
        [sys.executable, "-S", "-c", code, BENCH], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.split()
    assert lines[0:2] == ["not", "installed"] and os.path.realpath(lines[-1]) == os.path.join(
        REPO, "trainer", "config.py"
    )
