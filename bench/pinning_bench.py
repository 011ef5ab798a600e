"""Local worker pinning: clips/s of the MAGVIT-v2 encoder in one process, and in N concurrent processes
with and without pinning to their share of the cores (``pipelines/pinning.py``'s rule), in one run.

    python bench/pinning_bench.py [--config small] [--workers 2] [--iters 6] [--batch 4]

Each process loads the tokenizer, encodes one batch to compile, then times ``--iters`` batches of
``--batch`` random clips of the config's frames and resolution. Prints one JSON object: clips/s of the lone
process and the sums over the concurrent ones, and their ratios to the lone process.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

CHILD = r"""
import json, os, sys, time
cores = json.loads(sys.argv[1])
if cores:
    os.sched_setaffinity(0, set(cores))
import numpy as np
from videopoet.tokenizers import magvit2
tokenizer = magvit2.load(sys.argv[2])
config = tokenizer.config
iters, batch = int(sys.argv[3]), int(sys.argv[4])
shape = (batch, config.frames, config.height, config.width, 3)
clips = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
np.asarray(tokenizer.encode(clips))
start = time.perf_counter()
for _ in range(iters):
    np.asarray(tokenizer.encode(clips))
print(json.dumps({"cores": cores, "clips_per_s": batch * iters / (time.perf_counter() - start)}))
"""


def _run(plans: list[list[int]], args: argparse.Namespace) -> list[dict]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps(cores), args.config, str(args.iters), str(args.batch)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for cores in plans
    ]
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=1800)
        if p.returncode != 0:
            raise SystemExit(f"a benchmark process exited with status {p.returncode}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    from videopoet.pipelines import pinning

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="small", help="MAGVIT-v2 preset or checkpoint (tokenizer resolver spec)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args()
    t0 = time.time()
    lone = _run([[]], args)[0]["clips_per_s"]
    free = sum(r["clips_per_s"] for r in _run([[]] * args.workers, args))
    plan = pinning.core_plan(args.workers)
    pinned = sum(r["clips_per_s"] for r in _run(plan, args))
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()} {len(pinning.available_cores())} cores",
                "config": args.config,
                "workers": args.workers,
                "core_plan": plan,
                "one_process_clips_per_s": round(lone, 3),
                "unpinned_clips_per_s": round(free, 3),
                "pinned_clips_per_s": round(pinned, 3),
                "unpinned_vs_one": round(free / lone, 3),
                "pinned_vs_one": round(pinned / lone, 3),
                "pinned_vs_unpinned": round(pinned / free, 3),
                "seconds": round(time.time() - t0, 1),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
