"""What XLA's LLVM optimisation level costs and saves on CPU: the compile time and the step time of a MAGVIT-v2
train step, and the run time of a ``small`` encode + decode, at ``--xla_backend_optimization_level=0`` as a
ratio of XLA's default level, each measured in a fresh subprocess of the same run (no compilation cache).

    python bench/xla_opt_level_bench.py [--levels default,0] [--config tiny] [--reps 5] [--json]

The test suite runs at level 0 (``tests/conftest.py``, ``VIDEOPOET_TEST_XLA_OPT``): it compiles hundreds of
tiny programs and runs few big ones. This shows both sides of that trade on the machine at hand.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def child(config: str, reps: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from videopoet.tokenizers import magvit2
    from videopoet.tokenizers.magvit2.config import load_magvit_config
    from videopoet.tokenizers.magvit2.train import init_state, make_train_step

    cfg = load_magvit_config(config)
    frames = cfg.train_frames or cfg.frames
    rng = np.random.default_rng(0)
    batch = jnp.asarray(rng.integers(0, 256, (cfg.batch_size, frames, cfg.height, cfg.width, 3), dtype=np.uint8))
    state = init_state(cfg, cfg, cfg.frames)
    step = make_train_step(cfg, cfg, 0)
    t0 = time.perf_counter()
    lowered = step.lower(state, batch)  # tracing and lowering: the same at every level
    t1 = time.perf_counter()
    compiled = lowered.compile()
    compile_s, trace_s = time.perf_counter() - t1, t1 - t0
    state, m = compiled(state, batch)  # first call: warm-up
    jax.block_until_ready(m)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        state, m = compiled(state, batch)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    # a compute-heavy program: the shipped small tokenizer's encode + decode of 4 clips
    tok = magvit2.default()
    clips = rng.integers(0, 256, (4, tok.config.frames, tok.config.height, tok.config.width, 3), dtype=np.uint8)
    tok.decode(tok.encode(clips))  # compile
    runs = []
    for _ in range(max(reps // 2, 1)):
        t0 = time.perf_counter()
        tok.decode(tok.encode(clips))
        runs.append(time.perf_counter() - t0)
    return {
        "train_step_trace_s": round(trace_s, 3),
        "train_step_compile_s": round(compile_s, 3),
        "train_step_s": round(statistics.median(times), 4),
        "small_codec_4_clips_s": round(statistics.median(runs), 3),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default="default,0", help="comma list; 'default' is XLA's own level (default,0)")
    ap.add_argument("--config", default="tiny", help="MAGVIT-v2 preset whose train step is compiled (default tiny)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.config, args.reps)))
        return 0
    rows = []
    for level in args.levels.split(","):
        flags = "" if level == "default" else f"--xla_backend_optimization_level={int(level)}"
        env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
        env.update(XLA_FLAGS=flags, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", "--config", args.config, "--reps", str(args.reps)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        rows.append({"level": level, **json.loads(out.stdout.strip().splitlines()[-1])})
    base = rows[0]
    for r in rows:
        for k in ("train_step_compile_s", "train_step_s", "small_codec_4_clips_s"):
            r[f"{k}_vs_{base['level']}"] = round(r[k] / base[k], 3)
    res = {"config": args.config, "cpus": len(os.sched_getaffinity(0)), "rows": rows}
    if args.json:
        print(json.dumps(res))
        return 0
    print(
        f"MAGVIT-v2 {args.config} train step and small encode+decode ({res['cpus']} CPUs), "
        f"ratio to level {base['level']}"
    )
    print(f"{'level':>8} {'compile s':>10} {'x':>6} {'step s':>8} {'x':>6} {'small codec s':>14} {'x':>6}")
    for r in rows:
        b = base["level"]
        print(
            f"{r['level']:>8} {r['train_step_compile_s']:>10.2f} {r[f'train_step_compile_s_vs_{b}']:>6.2f} "
            f"{r['train_step_s']:>8.4f} {r[f'train_step_s_vs_{b}']:>6.2f} {r['small_codec_4_clips_s']:>14.3f} "
            f"{r[f'small_codec_4_clips_s_vs_{b}']:>6.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
