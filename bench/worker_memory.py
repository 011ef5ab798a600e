"""Where a pipeline worker's memory goes: resident memory after each phase of a worker's start-up.

    python bench/worker_memory.py [--config small] [key=value ...]     (pipeline config overrides)

One fresh process does what a Beam or Ray worker does before and during its first window, in order,
and reads the kernel's figures after each phase: ``VmRSS`` (resident now) and ``VmHWM`` (the
process's resident high-water mark so far, which is what a per-worker memory limit meets). Phases:
the interpreter with NumPy; JAX and its CPU client (with the CLI's platform choice); Apache Beam
imported; Ray imported; the job's three tokenizers loaded; each shape the pipeline feeds the
tokenizers compiled and run once at the call size the pipeline uses for it (as
``tokenize.warmup_tokenizers`` does, one line per shape); then a second pass over the same shapes
(steady state: the high-water mark should hardly move). For each compiled video shape it also prints
XLA's own temporary-buffer size for one call (``memory_analysis``). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path[:] = [
    p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
]

import numpy as np  # noqa: E402


def kernel_memory_mb() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in MB (Linux ``/proc/self/status``)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) // 1024
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="small")
    ap.add_argument("overrides", nargs="*", help="pipeline config overrides (key=value)")
    args = ap.parse_args(argv)

    phases: list[dict] = []

    def phase(name: str, **extra) -> None:
        phases.append({"phase": name, **kernel_memory_mb(), **extra})

    phase("python + numpy")
    from videopoet.cli.main import default_jax_platforms

    default_jax_platforms()  # what the CLI, and so every worker it starts, runs with
    import jax
    import jax.numpy as jnp

    jnp.zeros(1).block_until_ready()
    phase("jax + CPU client")
    import apache_beam  # noqa: F401

    phase("apache_beam imported")
    import ray  # noqa: F401

    phase("ray imported")
    from videopoet.pipelines import tokenize
    from videopoet.pipelines.config import load_pipeline_config

    cfg = load_pipeline_config(args.config, list(args.overrides))
    toks = tokenize.load_tokenizers(cfg)
    params_mb = {
        m: round(sum(x.nbytes for x in jax.tree_util.tree_leaves(getattr(getattr(toks, m), "params", {}))) / 2**20, 1)
        for m in tokenize.MODALITIES
    }
    phase("tokenizers loaded", params_mb=params_mb)

    shapes: list[tuple[str, tuple[int, ...]]] = []
    clip_shapes = []
    for h, w in cfg.buckets().values():
        for t in (cfg.clip_frames, 1) if cfg.images else (cfg.clip_frames,):
            clip_shapes.append((t, h, w, 3))
        if cfg.sr_pairs:
            clip_shapes.append((cfg.clip_frames, 2 * h, 2 * w, 3))
    for shape in clip_shapes:  # at the call size the pipeline encodes each shape with
        shapes.append(("video", (tokenize.video_quantum(toks, cfg, shape), *shape)))
    if cfg.audio:
        shapes.append(("audio", (cfg.batch_size, cfg.audio_samples)))
    for rnd in ("first", "second"):
        for kind, shape in shapes:
            t0 = time.perf_counter()
            if kind == "video":
                toks.video.encode(np.zeros(shape, np.uint8))
            else:
                toks.audio.encode(np.zeros(shape, np.float32))
            phase(f"{rnd} {kind} call {shape}", seconds=round(time.perf_counter() - t0, 2))
    toks.text.token_ids("a small red circle moves to the left on a blue background")
    phase("text tokenizer call")

    temps = {}
    encode = getattr(toks.video, "_encode", None)
    if encode is not None and hasattr(encode, "lower"):
        for kind, shape in shapes:
            if kind != "video":
                continue
            try:
                analysis = encode.lower(toks.video.params, jnp.zeros(shape, jnp.uint8)).compile().memory_analysis()
                temps[str(shape)] = round(analysis.temp_size_in_bytes / 2**20, 1)
            except Exception as e:  # the analysis is informative only; its absence is reported
                temps[str(shape)] = f"unavailable: {type(e).__name__}"
    out = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, jax {jax.__version__}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "config": args.config,
        "phases": phases,
        "video_xla_temp_mb": temps,
        "peak_mb": kernel_memory_mb()["VmHWM"],
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
