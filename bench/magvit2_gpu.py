"""MAGVIT-v2 on a lent GPU in one bounded call: the bf16 ``paper`` figure, then a GPU training run.

    python3 bench/magvit2_gpu.py [--out DIR (default $OUT)] [--minutes 4] [--skip-bench] [key=value ...]

Made for the device tool (one H100/H200, 10 minutes a command, nothing installable there): it runs
from the checkout without installing the package (``videopoet.<folder>`` is mapped onto the repo's
folders in a temp dir when ``import videopoet`` fails: ``bench/checkout.py``) and needs only jax, flax, optax, orbax,
numpy, Pillow, PyYAML, msgpack, fsspec, safetensors, tqdm and matplotlib.

1. **bench** (unless ``--skip-bench``): ``bench/magvit2_bench.py --presets paper,small --dtype
   bfloat16 --batch 8 --matmul-n 8192 --peak-tflops 989`` -> ``bench.json`` (encode/decode clips/s,
   achieved FLOP/s as a fraction of the chip's dense bf16 peak and of a bf16 matmul timed in the
   same process).
2. **train**: continues the shipped ``small`` checkpoint (``--init-from``) on the synthetic world
   with GPU-sized batches for ``--minutes`` of training: a first leg (a quarter of the budget, at
   least ``--first-leg-seconds``) measures the step rate (compilation left out), then the run is resumed
   with a total step count that fills the budget and a cosine learning-rate tail over its last 40%
   (resume may set both: ``steps``, ``lr_decay_steps``). ``key=value`` overrides change the recipe (``RECIPE`` below).
3. **eval** of the EMA weights on the 32 held-out clips the CPU README uses (no H.264 there: PyAV is
   not on that machine; rerun ``videopoet tokenizer eval`` here on the returned model for it) ->
   ``eval.json``, ``recon_grid.png``.
4. **export**: ``model/config.yaml`` + ``model/model.safetensors`` (float16, ~8 MB: ship it with
   ``cp`` into ``tokenizers/magvit2/assets/small`` once the CPU eval confirms it), ``metrics.jsonl``,
   ``loss_curve.png``.

At most 8 files come back from the device's ``$OUT``; this writes exactly those 7 plus ``summary.json``.
The same script runs on a CPU with a tiny budget and batch and ``--allow-cpu``
(``tests/test_bench_magvit2_gpu.py`` runs it so), and so, bench included, in a Python 3.12 environment
holding only the packages above at the device image's versions (BENCHMARKS.md names them). Without
``--allow-cpu`` a jax that finds no GPU stops at once (exit 3, ``summary.json`` says why) instead of
spending device minutes on its CPU; a bench that overruns its 5 minutes is recorded as an error and the
training still runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checkout  # noqa: E402  (bench/checkout.py: import videopoet from this checkout)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the GPU continuation of the shipped checkpoint: whole 17-frame clips in batches of 32 (the CPU
# recipe's stage 4 used 9-frame crops in batches of 2), a pool 4x the CPU one so a long run sees
# fresh clips, the CPU stage's entropy weight; lr warm-up then (set at resume) a cosine tail
RECIPE = (
    "image_steps=0",
    "batch_size=32",
    "train_frames=0",
    "pool_clips=8192",
    "learning_rate=0.0002",
    "warmup_steps=50",
    "entropy_weight_start=0.05",
    "lr_min_ratio=0.05",
    "log_every=10",
    "checkpoint_every=100000",
)
PEAK_BF16_TFLOPS = 989.0  # H100 / H200 SXM dense bf16 (the spec sheet; a plain matmul reaches ~80% of it)


def log(msg: str) -> None:
    print(f"[magvit2_gpu {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_bench(out: str) -> dict:
    cmd = [
        sys.executable,
        os.path.join(REPO, "bench", "magvit2_bench.py"),
        "--presets",
        "paper,small",
        "--dtype",
        "bfloat16",
        "--batch",
        "8",
        "--matmul-n",
        "8192",
        "--peak-tflops",
        str(PEAK_BF16_TFLOPS),
        "--json",
    ]
    t0 = time.time()
    try:  # a bench that overruns costs its 5 minutes, never the training leg that follows
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        log("bench timed out after 300 s")
        return {"error": "timeout after 300 s"}
    if res.returncode:
        log(f"bench failed (rc {res.returncode}): {res.stderr[-1500:]}")
        return {"error": res.stderr[-1500:]}
    rows = json.loads(res.stdout)
    with open(os.path.join(out, "bench.json"), "w") as f:
        json.dump(rows, f, indent=2)
    for r in rows:
        log(
            f"bench {r['preset']}: encode {r['encode_clips_per_s']:.1f} clips/s ({r.get('encode_vs_peak', 0):.3f} of "
            f"peak, {r['encode_vs_matmul']:.3f} of matmul), decode {r['decode_clips_per_s']:.1f} clips/s; "
            f"matmul {r.get('matmul_vs_peak', 0):.2f} of peak ({time.time() - t0:.0f} s)"
        )
    return {"rows": rows, "seconds": round(time.time() - t0, 1)}


def read_metrics(run_dir: str) -> list[dict]:
    """The run's logged records (none yet: empty)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def seconds_per_step(recs: list[dict], leg_starts: list[int]) -> float:
    """Median seconds per step between consecutive log records of the same leg (each leg's clock starts at
    0, and its first record carries the compilation, so only the gaps after it count)."""
    bounds = set(leg_starts)
    gaps = sorted(
        (b["time"] - a["time"]) / (b["step"] - a["step"])
        for i, (a, b) in enumerate(zip(recs, recs[1:], strict=False), start=1)
        if i not in bounds and b["step"] > a["step"]
    )
    if not gaps:
        raise RuntimeError(f"the first training leg logged {len(recs)} records: too few to time a step")
    return gaps[len(gaps) // 2]


def train(
    out: str,
    minutes: float,
    overrides: list[str],
    init_from: str,
    first_leg_s: float = 60.0,
    config: str = "small",
    grace_s: float = 120.0,
) -> dict:
    from videopoet.pipelines.synth import sources
    from videopoet.tokenizers.magvit2.config import load_magvit_config
    from videopoet.tokenizers.magvit2.data import take
    from videopoet.tokenizers.magvit2.train import train_run

    run_dir = os.path.join(tempfile.gettempdir(), "magvit2-gpu-run")
    shutil.rmtree(run_dir, ignore_errors=True)
    budget = minutes * 60.0
    first = max(budget / 4.0, first_leg_s)
    big = ["steps=1000000", "lr_decay_steps=0"]
    cfg = load_magvit_config(config, list(RECIPE) + list(overrides) + big)
    t0 = time.time()
    pool = take(sources.clips("train", cfg.seed, cfg.frames, cfg.height, cfg.width), cfg.pool_clips)
    log(f"pool of {len(pool)} synthetic train clips rendered in {time.time() - t0:.0f} s (once for every leg)")

    def source():
        return iter(pool)

    t0 = time.time()
    log(
        f"train leg 1: {first:.0f} s to time a step (batch {cfg.batch_size} x {cfg.train_frames or cfg.frames} "
        f"frames, pool {cfg.pool_clips})"
    )
    train_run(cfg, run_dir, source, progress=False, max_seconds=first, init_from=init_from)
    leg_starts = [0]
    for _ in range(3):  # compilation can eat the first leg: time a few more steps (the run resumes)
        logged = len(read_metrics(run_dir))
        if logged >= 4:
            break
        leg_starts.append(logged)
        train_run(cfg, run_dir, source, progress=False, max_seconds=first_leg_s / 2)
    recs = read_metrics(run_dir)
    done, sec = int(recs[-1]["step"]), seconds_per_step(recs, leg_starts)
    left = budget - (time.time() - t0)
    more = max(int(left / sec), 10)
    total = done + more
    tail = max(int(0.4 * total), 1)
    tail = min(tail, more)  # the tail starts after the steps already taken
    log(f"leg 1: {done} steps, {sec:.3f} s/step; leg 2: to step {total} with the lr tail over the last {tail}")
    cfg2 = load_magvit_config(config, list(RECIPE) + list(overrides) + [f"steps={total}", f"lr_decay_steps={tail}"])
    # past the budget by at most grace_s (a slow step or a checkpoint); it stops early (saved) if it must
    summary = train_run(cfg2, run_dir, source, progress=False, max_seconds=max(left, 0.0) + grace_s)
    summary.update(seconds_per_step=sec, leg1_steps=done, wall_s=round(time.time() - t0, 1))
    for name in ("metrics.jsonl", "loss_curve.png"):
        if os.path.exists(os.path.join(run_dir, name)):
            shutil.copy(os.path.join(run_dir, name), os.path.join(out, name))
    summary["run_dir"] = run_dir
    return summary


def evaluate_run(out: str, run_dir: str, clips: int = 32) -> dict:
    from videopoet.pipelines.synth import sources
    from videopoet.tokenizers import magvit2
    from videopoet.tokenizers.magvit2.data import take
    from videopoet.tokenizers.magvit2.evaluate import evaluate, save_grid

    tok = magvit2.load(run_dir)
    cfg = tok.config
    data = take(sources.clips("heldout", 0, cfg.frames, cfg.height, cfg.width), clips)
    groups, region = sources.clip_breakdown("heldout", 0, cfg.frames, cfg.height, cfg.width, len(data))
    m = evaluate(tok, data, out_dir=None, h264=False, groups=groups, region=region)
    save_grid(data, tok.decode(tok.encode(data[:4])), os.path.join(out, "recon_grid.png"))
    with open(os.path.join(out, "eval.json"), "w") as f:
        json.dump(m, f, indent=2)
    tok.save(os.path.join(out, "model"), dtype="float16")
    log(
        f"eval on {m['clips']} held-out clips: PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}, "
        f"codes used {m['codebook_usage']:.3f}; fingerprint {tok.fingerprint[:16]}"
    )
    return {k: m[k] for k in ("psnr", "psnr_median", "ssim", "codebook_usage", "codebook_perplexity", "bpp")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT"), help="where the results go (default $OUT)")
    ap.add_argument(
        "--minutes",
        type=float,
        default=4.0,
        help="training budget in minutes (default 4: with the bench, the pool and the eval the call stays "
        "inside the device tool's 10-minute command limit)",
    )
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument(
        "--first-leg-seconds",
        type=float,
        default=60.0,
        help="least length of the first (step-timing) leg: it must outlast compilation (default 60)",
    )
    ap.add_argument(
        "--grace-seconds",
        type=float,
        default=120.0,
        help="how far the second leg may run past the budget before it stops early, saved (default 120)",
    )
    ap.add_argument("--init-from", default=None, help="model to continue (default: the shipped small checkpoint)")
    ap.add_argument("--eval-clips", type=int, default=32, help="held-out clips to evaluate (default 32, as the README)")
    ap.add_argument(
        "--config",
        default="small",
        help="preset or YAML of the run (default small; --init-from must have its architecture)",
    )
    ap.add_argument(
        "--allow-cpu",
        action="store_true",
        help="run without a GPU (the CPU test); otherwise a jax without its GPU plugin stops at once",
    )
    ap.add_argument("overrides", nargs="*", help="recipe overrides key=value")
    args = ap.parse_args(argv)
    if not args.out:
        ap.error("--out (or $OUT) is required")
    os.makedirs(args.out, exist_ok=True)
    checkout.ensure_importable("videopoet.tokenizers.magvit2")
    import jax

    from videopoet.tokenizers.magvit2.tokenizer import ASSETS

    init_from = args.init_from or os.path.join(ASSETS, "small")

    devices = [f"{d.platform}:{d.device_kind}" for d in jax.devices()]
    log(f"jax {jax.__version__} on {devices}")
    summary: dict = {
        "devices": devices,
        "jax": jax.__version__,
        "config": args.config,
        "recipe": list(RECIPE) + args.overrides,
    }
    if jax.default_backend() != "gpu" and not args.allow_cpu:  # minutes of device time on a CPU are wasted
        summary["error"] = f"no GPU: jax runs on {jax.default_backend()} (pass --allow-cpu to run anyway)"
        log(summary["error"])
        with open(os.path.join(args.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2, default=str)
        return 3
    if not args.skip_bench:
        summary["bench"] = run_bench(args.out)
    if args.minutes > 0:
        t = train(
            args.out, args.minutes, args.overrides, init_from, args.first_leg_seconds, args.config, args.grace_seconds
        )
        summary["train"] = {k: v for k, v in t.items() if k != "run_dir"}
        summary["eval"] = evaluate_run(args.out, t["run_dir"], args.eval_clips)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
