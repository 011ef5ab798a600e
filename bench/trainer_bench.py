"""Trainer benchmark: Grain loader throughput vs the train step's consumption, step time, MFU.

    python bench/trainer_bench.py [--config small] [--data NAME@VER --root DATASETS] [--steps 20] [--json]
                                  [--latent 5,8,8] [--records 96] [key=value ...]

Without ``--data`` it writes a synthetic dataset with the quickstart's shapes (latent 5x8x8 = 320
video tokens, 4 x 106 audio codes, short captions, inpaint/outpaint streams) to a temporary store;
``--latent 5,16,28`` gives the paper's 17x128x224 clips instead.
The loader is measured alone (batches/s through ``Mixture.dataset()`` with its Grain read threads),
then the train step alone on the same batches after compiling every AGD group (steps/s, with the
batches already in memory). ratio = loader batches/s / train steps/s: how many times faster the
input pipeline is than the step that consumes it (goal >= 5 for ``small``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="small")
    p.add_argument("--data", default=None)
    p.add_argument("--root", default=None)
    p.add_argument("--steps", type=int, default=20, help="timed train steps")
    p.add_argument("--loader-batches", type=int, default=40)
    p.add_argument("--latent", default="5,8,8", help="T,H,W of the synthetic dataset's video latents")
    p.add_argument("--records", type=int, default=96, help="video records of the synthetic dataset (+ 1/4 images)")
    p.add_argument("--json", action="store_true")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)

    import jax

    from videopoet.schemas import store
    from videopoet.trainer import data, metrics, step, synthetic
    from videopoet.trainer.config import load_train_config

    # curriculum off: batches follow the mixture average (the curriculum only reorders image vs video steps)
    cfg = load_train_config(args.config, ["mesh.data=1", "steps=100000", "data.curriculum=false", *args.overrides])
    tmp = None
    if args.data is None:
        tmp = tempfile.mkdtemp(prefix="trainer-bench-")
        latent = tuple(int(x) for x in args.latent.split(","))
        n = args.records
        recs = synthetic.make_records(n, cfg.model.vocab, latent=latent, audio_frames=106, images=n // 4)
        cut = len(recs) * 5 // 8
        store.write_dataset(tmp, "bench", "1", {"a.tar": recs[:cut], "b.tar": recs[cut:]})
        args.data, args.root = "bench@1", tmp
    _, mix = data.open_mixture(args.data, cfg, args.root)

    # ---- loader alone
    it = iter(mix.dataset())
    next(it)
    t = time.perf_counter()
    batches = [next(it) for _ in range(args.loader_batches)]
    loader_s = (time.perf_counter() - t) / args.loader_batches

    # ---- train step alone (every group compiled first)
    tr = step.make_trainer(cfg)
    state = tr.init()
    seen = {}
    for b in batches:
        if b["group"] not in seen:
            seen[b["group"]] = b
    t = time.perf_counter()
    for b in seen.values():  # compile each AGD group once
        state, m = tr.step(state, b)
        float(m["loss"])
    compile_s = time.perf_counter() - t
    n = min(args.steps, len(batches))
    flops = 0.0
    t = time.perf_counter()
    for b in batches[:n]:
        state, m = tr.step(state, b)
        float(m["loss"])
        flops += metrics.step_flops(cfg.model, b["tokens"].shape[1], b["prefix_len"])
    step_s = (time.perf_counter() - t) / n
    peak, src = metrics.device_peak_flops()
    tokens = sum(b["tokens"].size for b in batches[:n])
    masked = sum(int((~b["valid"]).sum()) for b in batches[:n])
    padded = sum(b["tokens"].shape[0] * (mix.plan.max_length - b["tokens"].shape[1]) for b in batches[:n])
    res = {
        "config": cfg.name,
        "device": str(jax.devices()[0].device_kind),
        "devices": jax.device_count(),
        "cpu_cores": os.cpu_count(),
        "batch_size": cfg.batch_size,
        "dtype": cfg.model.dtype,
        "remat": cfg.model.remat,
        "attention": cfg.model.attention,
        "params": int(sum(x.size for x in jax.tree_util.tree_leaves(state["params"]))),
        "groups": len(mix.plan.groups),
        "compile_and_first_steps_s": compile_s,
        "loader_batches_per_s": 1.0 / loader_s,
        "train_steps_per_s": 1.0 / step_s,
        "loader_to_step_ratio": step_s / loader_s,
        "step_time_s": step_s,
        "tokens_per_s": tokens / (step_s * n),
        "mfu": flops / (step_s * n) / peak,
        "peak_flops": peak,
        "peak_source": src,
        "pad_fraction": masked / tokens,
        "pad_fraction_without_agd": (masked + padded) / (tokens + padded),
        "mean_seq_len": float(np.mean([b["tokens"].shape[1] for b in batches[:n]])),
    }
    if args.json:
        json.dump(res, sys.stdout, indent=2)
        print()
    else:
        for k, v in res.items():
            print(f"{k:28s} {v:.4g}" if isinstance(v, float) else f"{k:28s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
