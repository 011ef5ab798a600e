"""SoundStream encode/decode and T5 text-embedding throughput on this machine.

    python bench/audio_text_bench.py [--presets small,paper] [--text-presets small] [--batch 8] [--reps 5]

SoundStream: seconds of 16 kHz audio encoded / decoded per wall second (real-time factor; > 1 is
faster than real time) on 2.125 s clips (VideoPoet's audio length, 106 frames x 4 levels), steady
state after compilation. Text: captions per second through tokenize + the frozen T5 encoder.
Both report achieved FLOP/s (XLA's cost analysis of the compiled function) as a fraction of a plain
float32 matmul's FLOP/s measured in the same run, and the process's peak RSS.
Prints one JSON object; BENCHMARKS.md records the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time

sys.path[:] = [
    p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def timeit(fn, reps: int) -> float:
    fn()  # warm-up / compile
    best = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best.append(time.perf_counter() - t0)
    return float(np.median(best))


def matmul_flops(n: int = 1024, reps: int = 5) -> float:
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    sec = timeit(lambda: f(a).block_until_ready(), reps)
    return 2 * n**3 / sec


def flops_of(jitted, *args) -> float:
    try:
        ca = jitted.lower(*args).compile().cost_analysis()
        ca = ca[0] if isinstance(ca, (list, tuple)) else ca
        return float(ca.get("flops", 0.0))
    except Exception:  # noqa: BLE001 - cost analysis is best effort on some backends
        return 0.0


def bench_soundstream(preset: str, batch: int, reps: int, peak: float) -> dict:
    from videopoet.tokenizers import soundstream

    tok = soundstream.default() if preset == "small" else soundstream.load(preset)
    sr = tok.config.sample_rate
    n = int(round(2.125 * sr))
    rng = np.random.default_rng(0)
    wave = (0.3 * rng.standard_normal((batch, n))).astype(np.float32)
    codes = tok.encode(wave)
    enc_s = timeit(lambda: tok.encode(wave), reps)
    dec_s = timeit(lambda: tok.decode(codes), reps)
    frames = tok.config.frames_for(n)
    x = jnp.asarray(wave[:, : frames * tok.config.hop])
    ef = flops_of(tok._encode, tok.variables, x)
    df = flops_of(tok._decode, tok.variables, jnp.asarray(codes))
    audio_s = batch * n / sr
    return {
        "preset": preset,
        "checkpoint": "shipped default" if preset == "small" else "seeded init",
        "batch": batch,
        "clip_seconds": 2.125,
        "codes_shape": list(codes.shape),
        "encode_s": round(enc_s, 4),
        "decode_s": round(dec_s, 4),
        "encode_audio_s_per_s": round(audio_s / enc_s, 1),
        "decode_audio_s_per_s": round(audio_s / dec_s, 1),
        "encode_flops_frac_of_matmul": round(ef / enc_s / peak, 3) if ef else None,
        "decode_flops_frac_of_matmul": round(df / dec_s / peak, 3) if df else None,
    }


def bench_text(preset: str, batch: int, reps: int, peak: float) -> dict:
    from videopoet.pipelines.synth import sources
    from videopoet.tokenizers import text

    enc = text.default() if preset == "small" else text.load(preset)
    caps = sources.captions(batch, seed=1)

    def run():
        ids, mask = enc.tokenize(caps)
        return enc.embed(ids, mask)

    sec = timeit(run, reps)
    ids, mask = enc.tokenize(caps)
    fl = flops_of(enc._apply, enc.params, jnp.asarray(ids), jnp.asarray(mask))
    return {
        "preset": preset,
        "config": enc.config.name,
        "batch": batch,
        "tokens_per_caption": int(ids.shape[1]),
        "seconds": round(sec, 4),
        "captions_per_s": round(batch / sec, 1),
        "flops_frac_of_matmul": round(fl / sec / peak, 3) if fl else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="small,paper")
    ap.add_argument("--text-presets", default="small")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--text-batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    peak = matmul_flops()
    out = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, jax {jax.__version__} on {jax.default_backend()}",
        "date": time.strftime("%Y-%m-%d"),
        "matmul_gflops": round(peak / 1e9, 1),
        "soundstream": [bench_soundstream(p, args.batch, args.reps, peak) for p in args.presets.split(",") if p],
        "text": [bench_text(p, args.text_batch, args.reps, peak) for p in args.text_presets.split(",") if p],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
