"""What the MAGVIT-v2 perceptual loss costs a train step: step time with the VGG-16 term on every frame
and on K frames per clip, as a ratio of the same config's step without it, timed in the same process.

    python bench/magvit2_perceptual_bench.py [--config small] [--frames 0,2,4] [--reps 5] [--json] [--widths ...]

The VGG-16 is full width (64-128-256-512-512 channels unless ``--widths``; seeded weights written to a
temp file by ``perceptual.write_vgg_like``): its cost does not depend on its values. Steps are the video steps of
``--config`` (``batch_size`` clips of ``train_frames`` frames), compiled first, then timed (median of
``--reps`` steps). Prints a table or, with ``--json``, one object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time


def time_step(cfg, reps: int, pweights=None) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from videopoet.tokenizers.magvit2.train import init_state, make_train_step

    frames = cfg.train_frames or cfg.frames
    batch = jnp.asarray(
        np.random.default_rng(0).integers(0, 256, (cfg.batch_size, frames, cfg.height, cfg.width, 3), dtype=np.uint8)
    )
    state = init_state(cfg, cfg, cfg.frames)
    step = make_train_step(cfg, cfg, 0, pweights)
    t0 = time.perf_counter()
    state, m = step(state, batch)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        state, m = step(state, batch)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    return {"compile_plus_first_s": round(compile_s, 2), "step_s": round(statistics.median(times), 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="small")
    ap.add_argument("--frames", default="0,2,4", help="perceptual_frames values to time (0: every frame)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--widths", default="64,128,256,512,512", help="VGG block widths (default: VGG-16's)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from videopoet.tokenizers.magvit2 import perceptual
    from videopoet.tokenizers.magvit2.config import load_magvit_config

    with tempfile.TemporaryDirectory() as tmp:
        vgg = os.path.join(tmp, "vgg16.safetensors")
        perceptual.write_vgg_like(vgg, tuple(int(w) for w in args.widths.split(",")))
        pweights, _ = perceptual.load_weights(vgg)
        base = load_magvit_config(args.config, ["image_steps=0"])
        rows = [{"perceptual_frames": None, **time_step(base, args.reps)}]
        for k in [int(x) for x in args.frames.split(",") if x]:
            cfg = load_magvit_config(
                args.config,
                ["image_steps=0", "perceptual_weight=0.1", f"perceptual_checkpoint={vgg}", f"perceptual_frames={k}"],
            )
            rows.append({"perceptual_frames": k, **time_step(cfg, args.reps, pweights)})
    for r in rows:
        r["vs_without"] = round(r["step_s"] / rows[0]["step_s"], 3)
    import jax

    out = {
        "config": args.config,
        "batch": base.batch_size,
        "frames": base.train_frames or base.frames,
        "size": [base.height, base.width],
        "devices": [d.device_kind for d in jax.devices()][:1],
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.config}: batch {out['batch']} x {out['frames']} frames x {base.height}x{base.width}")
        print("| perceptual | step s | vs without | compile + first step s |\n|---|---|---|---|")
        for r in rows:
            name = (
                "off"
                if r["perceptual_frames"] is None
                else (f"{r['perceptual_frames']} frames / clip" if r["perceptual_frames"] else "every frame")
            )
            print(f"| {name} | {r['step_s']:.3f} | {r['vs_without']:.2f} | {r['compile_plus_first_s']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
