"""A larger prefix LM pretrained on a lent GPU in one bounded call, then evaluated as the shipped one is.

    python3 bench/lm_gpu.py [--out DIR (default $OUT)] [--minutes 5] [--scenes 32] [--allow-cpu]
                            [key=value ...]

Why: on the CPU the ``small`` LM (d=128, 4 layers) learns colour but not motion, and a reweighted loss
or a deeper adaptation does not change that (``longrun/README.md``, experiments 12-13); the next
question is whether a model several times larger, trained on as many samples, moves its objects. Two
cores cannot train one in a session; an H100 can in minutes. Made for the device tool (one H100/H200,
10 minutes a command, files back from ``$OUT`` only): it runs from the checkout without installing the
package (``bench/checkout.py``), on the committed datasets (``longrun/datasets``: the two pretraining
chunks the repository holds, 4275 records, and ``synth-val@v1`` for the held-out loss), with the
trainer's own code path. Carry the trainer's wheels (``bash bench/device_wheels.sh``; ``.whl``).

1. **train**: the ``small`` preset's task mixture and curriculum with the architecture and batch of
   ``RECIPE`` (d=256, 8 layers, batch 64, bfloat16 compute), warm-up / stable / decay. A first leg of
   ``--first-leg-seconds`` (compilation included) measures the step rate and stops, saved; the run is
   then extended (``trainer/extend.py``: its stable phase is bit for bit the same) to the step count
   that fills ``--minutes``, with the decay over its last 20%. The held-out loss is logged every 100
   steps, so overfitting shows.
2. **export** (float32 run -> float16 model directory) and **eval**: ``videopoet eval --scenes N
   --tasks t2v,i2v,fp,v2a --temperature 0.7 --top-k 50`` (the shipped model's settings and scenes),
   then ``longrun/experiments/motion_tracks.py`` on its clips (how far the objects move along the
   caption) and ``t2v_grid.py`` (the picture).
3. **back** (at most 8 files): ``summary.json`` (devices, recipe, steps, s/step, losses, held-out loss,
   every eval figure), ``eval.json``, ``metrics.jsonl``, ``log.txt`` (the motion table among it),
   ``t2v-grid.png``, and the model directory as ``model.tar.00``, ``model.tar.01`` ... (15 MB parts:
   ``cat model.tar.* | tar x`` here, then ``videopoet eval --run model`` on this machine checks it).

Without ``--allow-cpu`` a jax that finds no GPU stops at once (exit 3, ``summary.json`` says why) instead
of spending device minutes on its CPU; with it (``tests/test_bench_lm_gpu.py``) the same path runs with
tiny overrides on the CPU.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checkout  # noqa: E402  (bench/checkout.py: import videopoet from this checkout)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the chunks the repository holds (the other two would not fit what one device call carries beside the tree
# and the wheels: bench/device_wheels.sh)
DATA = "synth-long@v1=1575,synth-long-2@v1=2700"
ROOT = os.path.join(REPO, "longrun", "datasets")
# 4x the CPU model's width x depth product and 8x its batch; the preset's mixture; the curriculum
# switch at the same number of samples as run 3's (1500 steps of 8)
RECIPE = (
    "model.d_model=256",
    "model.layers=8",
    "model.heads=4",
    "model.mlp_dim=768",
    "model.dtype=bfloat16",
    "batch_size=64",
    "learning_rate=0.001",
    "lr_schedule=wsd",
    "warmup_steps=100",
    "data.switch_step=190",
    "log_every=10",
    "checkpoint_every=1000000",
    "keep_checkpoints=1",
    "async_checkpoint=false",
    "eval.heldout_data=synth-val@v1",
    "eval.heldout_every=100",
    "progress=false",
)
PART_BYTES = 15 * 1000 * 1000


def log(msg: str, sink: list[str]) -> None:
    line = f"[lm_gpu {time.strftime('%H:%M:%S')}] {msg}"
    sink.append(line)
    print(line, flush=True)


def seconds_per_step(rows: list[dict]) -> float:
    """The median logged step time, the first two rows left out (they carry the compilation)."""
    times = [r["step_time_s"] for r in rows[2:] if "step_time_s" in r]
    if not times:
        raise RuntimeError(f"the first leg logged {len(rows)} rows: too few to time a step")
    return statistics.median(times)


def legs(done: int, sec: float, left_s: float, decay_fraction: float = 0.2) -> tuple[int, int]:
    """(total steps, decay steps) that fill ``left_s`` after ``done`` steps at ``sec`` seconds each; the
    decay never reaches back before ``done`` (the extension resumes from the first leg's checkpoint)."""
    more = max(int(left_s / sec), 10)
    total = done + more
    return total, max(1, min(int(decay_fraction * total), more))


def train(run_dir: str, minutes: float, overrides: list[str], first_leg_s: float, sink: list[str]) -> dict:
    from videopoet.rundir.loop import Hook
    from videopoet.rundir.metrics import read_metrics
    from videopoet.trainer import model
    from videopoet.trainer.config import load_train_config
    from videopoet.trainer.train import train as train_run

    base = [*RECIPE, *overrides]
    t0 = time.time()

    # leg 1: a stable phase longer than any budget; stopped (saved) after first_leg_s and at least four
    # logged rows past the compilation
    cfg = load_train_config("small", [*base, "steps=1000000", "decay_steps=1"])

    def stop(info):
        if time.time() - t0 > first_leg_s and info.step >= 4 * cfg.log_every:
            info.run.request_stop("leg")

    train_run(cfg, DATA, run_dir, root=ROOT, hooks=[Hook(stop, every=cfg.log_every)])
    rows = read_metrics(run_dir)
    done, sec = int(rows[-1]["step"]), seconds_per_step(rows)
    total, decay = legs(done, sec, minutes * 60.0 - (time.time() - t0))
    log(f"leg 1: {done} steps, {sec:.3f} s/step; leg 2: to step {total}, decay over the last {decay}", sink)
    cfg = load_train_config("small", [*base, f"steps={total}", f"decay_steps={decay}"])
    res = train_run(cfg, DATA, run_dir, root=ROOT)
    rows = read_metrics(run_dir)
    heldout = [(r["step"], r["heldout"]["loss"]) for r in rows if r.get("heldout")]
    last = rows[-1]
    summary = {
        "status": res.get("status"),
        "steps": int(last["step"]),
        "leg1_steps": done,
        "seconds_per_step": round(sec, 4),
        "samples_seen": int(last["step"]) * cfg.batch_size,
        "params": model.count_params(model.abstract_params(cfg.model)),
        "extension": res.get("extension"),
        "loss_last": last.get("loss"),
        "heldout_loss": heldout,
        "wall_s": round(time.time() - t0, 1),
    }
    log(f"trained {summary['steps']} steps in {summary['wall_s']:.0f} s; held-out loss {heldout[-3:]}", sink)
    return summary


def run_tool(args: list[str], sink: list[str], timeout: float) -> str:
    """A checkout script or ``videopoet`` command in a subprocess: its stdout (stderr's tail into the log)."""
    res = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)
    sink.extend(res.stderr.strip().splitlines()[-20:])
    if res.returncode:
        raise RuntimeError(f"{' '.join(args[:3])} ... exited {res.returncode}: {res.stderr.strip()[-800:]}")
    return res.stdout


def evaluate(model_dir: str, out: str, scenes: int, sink: list[str]) -> dict:
    clips = os.path.join(tempfile.gettempdir(), "lm-gpu-eval")
    shutil.rmtree(clips, ignore_errors=True)
    cli = ["-m", "videopoet.cli.main", "eval", "--run", model_dir, "--scenes", str(scenes)]
    cli += ["--tasks", "t2v,i2v,fp,v2a", "--json", "--temperature", "0.7", "--top-k", "50", "--out", clips]
    t0 = time.time()
    report = json.loads(run_tool(cli, sink, timeout=1800))
    with open(os.path.join(out, "eval.json"), "w") as f:
        json.dump(report, f, indent=2)
    log(f"eval ({scenes} scenes per split) in {time.time() - t0:.0f} s", sink)
    experiments = os.path.join(REPO, "longrun", "experiments")
    motion = run_tool(
        [os.path.join(experiments, "motion_tracks.py"), f"gpu={clips}", "--scenes", str(scenes), "--run", model_dir],
        sink,
        timeout=600,
    )
    sink.extend(motion.strip().splitlines())
    grid = [os.path.join(experiments, "t2v_grid.py"), os.path.join(out, "t2v-grid.png"), f"d256={clips}"]
    run_tool(
        [*grid, "--per-split", str(min(3, scenes)), "--frames", "0,4,8,12,16", "--run", model_dir], sink, timeout=600
    )
    return report


def pack(model_dir: str, out: str) -> list[str]:
    """The model directory as one uncompressed tar in parts of at most PART_BYTES (8 files come back)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in sorted(os.listdir(model_dir)):
            tar.add(os.path.join(model_dir, name), arcname=f"model/{name}")
    data, names = buf.getvalue(), []
    for i in range(0, len(data), PART_BYTES):
        names.append(f"model.tar.{i // PART_BYTES:02d}")
        with open(os.path.join(out, names[-1]), "wb") as f:
            f.write(data[i : i + PART_BYTES])
    return names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT"), help="where the results go (default $OUT)")
    ap.add_argument("--minutes", type=float, default=5.0, help="training budget, both legs (default 5)")
    ap.add_argument(
        "--first-leg-seconds",
        type=float,
        default=75.0,
        help="length of the step-timing leg, compilation included (default 75)",
    )
    ap.add_argument("--scenes", type=int, default=32, help="eval scenes per split (default 32, as the README)")
    ap.add_argument("--allow-cpu", action="store_true", help="run without a GPU (the CPU test)")
    ap.add_argument("overrides", nargs="*", help="recipe overrides key=value")
    args = ap.parse_args(argv)
    if not args.out:
        ap.error("--out (or $OUT) is required")
    os.makedirs(args.out, exist_ok=True)
    checkout.ensure_importable("videopoet.trainer")
    import jax

    sink: list[str] = []
    devices = [f"{d.platform}:{d.device_kind}" for d in jax.devices()]
    log(f"jax {jax.__version__} on {devices}", sink)
    summary: dict = {"devices": devices, "jax": jax.__version__, "data": DATA, "recipe": [*RECIPE, *args.overrides]}

    def write() -> None:
        with open(os.path.join(args.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2, default=str)
        with open(os.path.join(args.out, "log.txt"), "w") as f:
            f.write("\n".join(sink) + "\n")

    if jax.default_backend() != "gpu" and not args.allow_cpu:  # device minutes on a CPU are wasted
        summary["error"] = f"no GPU: jax runs on {jax.default_backend()} (pass --allow-cpu to run anyway)"
        log(summary["error"], sink)
        write()
        return 3
    run_dir = os.path.join(tempfile.gettempdir(), "lm-gpu-run")
    shutil.rmtree(run_dir, ignore_errors=True)
    try:
        summary["train"] = train(run_dir, args.minutes, args.overrides, args.first_leg_seconds, sink)
        write()
        shutil.copy(os.path.join(run_dir, "metrics.jsonl"), os.path.join(args.out, "metrics.jsonl"))
        from videopoet.trainer import export

        model_dir = os.path.join(tempfile.gettempdir(), "lm-gpu-model")
        shutil.rmtree(model_dir, ignore_errors=True)
        export.export_run(run_dir, model_dir, root=ROOT)
        summary["parts"] = pack(model_dir, args.out)
        write()
        report = evaluate(model_dir, args.out, args.scenes, sink)
        summary["eval"] = {k: report[k] for k in ("t2v", "i2v", "fp", "v2a", "targets", "settings") if k in report}
    except Exception as exc:  # what was measured so far still comes back
        summary["error"] = f"{type(exc).__name__}: {exc}"
        log(summary["error"], sink)
        write()
        return 1
    write()
    log("done", sink)
    return 0


if __name__ == "__main__":
    sys.exit(main())
