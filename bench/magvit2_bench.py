"""MAGVIT-v2 benchmark: encode / decode clips/s per preset, achieved FLOP/s against a plain matmul.

    python bench/magvit2_bench.py [--presets tiny,small,paper] [--reps N] [--json] [--dtype float32|bfloat16]
                                  [--batch N] [--matmul-n N] [--peak-tflops T]

On a GPU (``bench/magvit2_gpu.py`` runs it so): ``--dtype bfloat16 --batch 8 --matmul-n 8192
--peak-tflops 989`` adds ``encode_vs_peak`` (achieved FLOP/s over the chip's dense bf16 peak) and
``matmul_vs_peak`` (what a plain bf16 matmul reaches of it, the ceiling in practice).

For each preset (in its own child process, so each reports its own peak RSS):

1. the tokenizer with seeded weights (``magvit2.load(PRESET)``; speed does not depend on training);
2. ``encode`` (uint8 video -> codes) and ``decode`` (codes -> uint8 video) are compiled ahead of time
   with ``jax.jit(f).lower(...).compile()`` (compile time reported apart), and their FLOPs come from
   the compiled executable's ``cost_analysis()``;
3. each is timed over ``reps`` calls (median; after one untimed call when reps > 1) at the preset's
   clip size and batch
   (tiny 8 x 5x32x32, small 4 x 17x64x64, paper 1 x 17x128x128, fewer reps for paper);
4. a plain ``[n, n] @ [n, n]`` float32 matmul (n = 2048) is timed in the same child: the matmul
   FLOP/s is what this machine does on dense work right now, so ``encode FLOP/s / matmul FLOP/s``
   is the model's efficiency whatever else is running on the machine.

Prints a markdown table (or ``--json``: one object per preset). ``--flops-only`` compiles and counts
FLOPs without running (for ``paper`` where a machine is too slow or too busy to time it).

``--conv`` times the model's causal convolution (``model.TapConv3d``: per-temporal-tap 2D convs) against
one ``lax`` 3D convolution with the same kernel, on layer shapes of the ``tiny`` and ``small`` presets,
forward and forward+backward, in the same process (ratio = 3D time / per-tap time).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

BATCH = {"tiny": 8, "small": 4, "paper": 1}
REPS = {"tiny": 10, "small": 5, "paper": 1}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _time(fn, reps: int) -> float:
    """Median seconds per call over ``reps`` calls, after one untimed call (none when reps == 1: the
    executables are compiled ahead of time, so a first call has no compile in it)."""
    import jax

    if reps > 1:
        jax.block_until_ready(fn())
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def _flops(compiled) -> float:
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0]
    return float(ca.get("flops", 0.0)) if ca else 0.0


def matmul_flops(n: int = 2048, reps: int = 5, dtype: str = "float32") -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32)).astype(dtype)
    f = jax.jit(lambda x, y: x @ y).lower(a, a).compile()
    sec = _time(lambda: f(a, a), reps)
    return {"n": n, "seconds": sec, "flops": 2.0 * n**3, "flop_per_s": 2.0 * n**3 / sec, "xla_flops": _flops(f)}


def child(
    preset: str,
    reps: int,
    dtype: str,
    flops_only: bool = False,
    batch: int | None = None,
    matmul_n: int = 2048,
    peak_tflops: float | None = None,
) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from videopoet.tokenizers import magvit2
    from videopoet.tokenizers.magvit2.model import MagvitVQ
    from videopoet.tokenizers.magvit2.tokenizer import arch_config, param_spec

    t0 = time.perf_counter()
    b = batch or BATCH[preset]
    cast = jnp.dtype(dtype)
    if flops_only:  # shapes only: nothing is materialised
        cfg = magvit2.load_magvit_config(preset)
        params = jax.tree_util.tree_map(
            lambda leaf: jax.ShapeDtypeStruct(leaf.shape, cast), param_spec(arch_config(cfg))
        )
    else:
        tok = magvit2.load(preset)
        cfg = tok.config
        params = jax.tree_util.tree_map(lambda p: jnp.asarray(p, cast), tok.params)
    init_s = time.perf_counter() - t0
    model = MagvitVQ(arch_config(cfg))

    def enc(p, v):
        x = (v.astype(jnp.float32) / 127.5 - 1.0).astype(cast)
        return model.apply({"params": p}, x, method=MagvitVQ.encode)

    def dec(p, c):
        y = model.apply({"params": p}, c, method=MagvitVQ.decode).astype(jnp.float32)
        return jnp.clip(jnp.round((y + 1.0) * 127.5), 0, 255).astype(jnp.uint8)

    shape = (b, cfg.frames, cfg.height, cfg.width, 3)
    video = (
        jax.ShapeDtypeStruct(shape, jnp.uint8)
        if flops_only
        else jnp.asarray(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
    )
    row = {
        "preset": preset,
        "dtype": dtype,
        "batch": b,
        "clip": [cfg.frames, cfg.height, cfg.width],
        "latent": list(cfg.latent_shape()),
        "params_m": round(sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params)) / 1e6, 3),
        "init_s": round(init_s, 2),
        "reps": reps,
    }
    t0 = time.perf_counter()
    enc_c = jax.jit(enc).lower(params, video).compile()
    row["encode_compile_s"] = round(time.perf_counter() - t0, 2)
    codes = jax.ShapeDtypeStruct((b, *cfg.latent_shape()), jnp.int32) if flops_only else enc_c(params, video)
    t0 = time.perf_counter()
    dec_c = jax.jit(dec).lower(params, codes).compile()
    row["decode_compile_s"] = round(time.perf_counter() - t0, 2)
    if flops_only:  # compile + cost analysis, no execution (a preset too slow to run on this machine)
        for name, fn in (("encode", enc_c), ("decode", dec_c)):
            row[f"{name}_gflop_per_clip"] = _flops(fn) / b / 1e9
        row["peak_rss_mb"] = _rss_mb()
        return row
    mm = matmul_flops(matmul_n, dtype=dtype)
    for name, fn, args in (("encode", enc_c, (params, video)), ("decode", dec_c, (params, codes))):
        sec = _time(lambda fn=fn, args=args: fn(*args), reps)
        fl = _flops(fn)
        row[f"{name}_s_per_batch"] = sec
        row[f"{name}_clips_per_s"] = b / sec
        row[f"{name}_gflop_per_clip"] = fl / b / 1e9
        row[f"{name}_flop_per_s"] = fl / sec
        row[f"{name}_vs_matmul"] = (fl / sec) / mm["flop_per_s"]
        if peak_tflops:
            row[f"{name}_vs_peak"] = (fl / sec) / (peak_tflops * 1e12)
    mm2 = matmul_flops(matmul_n, dtype=dtype)  # again after the model: the machine's load may have changed
    row["matmul"] = {"n": matmul_n, "dtype": dtype}
    if peak_tflops:
        row["peak_tflops"] = peak_tflops
        row["matmul_vs_peak"] = max(mm["flop_per_s"], mm2["flop_per_s"]) / (peak_tflops * 1e12)
    row["matmul_gflop_per_s"] = [mm["flop_per_s"] / 1e9, mm2["flop_per_s"] / 1e9]
    row["peak_rss_mb"] = _rss_mb()
    row["devices"] = [str(d) for d in jax.devices()][:1]
    return row


CONV_SHAPES = [  # (B, T_padded, H, W, C_in, C_out, spatial stride): tiny/small encoder layers
    (8, 7, 32, 32, 3, 8, 1),
    (8, 7, 32, 32, 8, 8, 1),
    (8, 7, 32, 32, 8, 16, 2),
    (4, 19, 64, 64, 3, 32, 1),
    (4, 19, 64, 64, 32, 32, 1),
    (4, 19, 32, 32, 64, 64, 1),
    (4, 7, 8, 8, 64, 64, 1),
]


def conv_compare(reps: int = 5) -> list[dict]:
    import jax
    import numpy as np

    from videopoet.tokenizers.magvit2.model import TapConv3d

    rows = []
    for b, t, h, w, c, o, s in CONV_SHAPES:
        x = jax.numpy.asarray(np.random.default_rng(0).normal(size=(b, t, h, w, c)).astype(np.float32))
        mod = TapConv3d(o, (3, 3, 3), (1, s, s), jax.nn.initializers.lecun_normal())
        params = mod.init(jax.random.PRNGKey(0), x)

        def lax3d(p, x, s=s):
            k = p["params"]
            return (
                jax.lax.conv_general_dilated(
                    x, k["kernel"], (1, s, s), [(0, 0), (1, 1), (1, 1)], dimension_numbers=("NTHWC", "THWIO", "NTHWC")
                )
                + k["bias"]
            )

        row = {"shape": [b, t, h, w, c, o], "stride": s}
        for name, f in (("lax3d", lax3d), ("taps", mod.apply)):
            fwd = jax.jit(f)
            bwd = jax.jit(jax.grad(lambda p, x, f=f: f(p, x).sum(), argnums=(0, 1)))
            np.testing.assert_allclose(
                np.asarray(fwd(params, x)), np.asarray(jax.jit(mod.apply)(params, x)), rtol=1e-3, atol=1e-3
            )
            row[f"{name}_fwd_ms"] = 1e3 * _time(lambda fwd=fwd, params=params, x=x: fwd(params, x), reps)
            row[f"{name}_fwdbwd_ms"] = 1e3 * _time(lambda bwd=bwd, params=params, x=x: bwd(params, x), reps)
        row["fwd_ratio"] = row["lax3d_fwd_ms"] / row["taps_fwd_ms"]
        row["fwdbwd_ratio"] = row["lax3d_fwdbwd_ms"] / row["taps_fwdbwd_ms"]
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,small,paper")
    ap.add_argument("--reps", type=int, default=None, help="timed calls per function (default per preset)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--batch",
        type=int,
        default=None,
        help="clips per call (default per preset: tiny 8, small 4, paper 1; a GPU wants more)",
    )
    ap.add_argument(
        "--matmul-n", type=int, default=2048, help="side of the baseline matmul, in --dtype (a GPU wants 8192)"
    )
    ap.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the accelerator's dense peak in --dtype (H200/H100 SXM bf16: 989): adds *_vs_peak",
    )
    ap.add_argument("--flops-only", action="store_true", help="compile and count FLOPs, do not time")
    ap.add_argument("--conv", action="store_true", help="per-tap 2D vs lax 3D causal conv, layer by layer")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.conv:
        rows = conv_compare(args.reps or 5)
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(
            "| layer (B,T,H,W,Cin,Cout) | stride | lax 3D fwd ms | per-tap fwd ms | ratio | "
            "lax 3D fwd+bwd ms | per-tap fwd+bwd ms | ratio |"
        )
        print("|" + "---|" * 8)
        for r in rows:
            print(
                f"| {tuple(r['shape'])} | {r['stride']} | {r['lax3d_fwd_ms']:.1f} | {r['taps_fwd_ms']:.1f} | "
                f"{r['fwd_ratio']:.1f} | {r['lax3d_fwdbwd_ms']:.1f} | {r['taps_fwdbwd_ms']:.1f} | "
                f"{r['fwdbwd_ratio']:.1f} |"
            )
        return 0
    if args.child:
        print(
            json.dumps(
                child(
                    args.child,
                    args.reps or REPS[args.child],
                    args.dtype,
                    args.flops_only,
                    args.batch,
                    args.matmul_n,
                    args.peak_tflops,
                )
            )
        )
        return 0
    rows = []
    for preset in args.presets.split(","):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", preset, "--dtype", args.dtype]
        if args.reps:
            cmd += ["--reps", str(args.reps)]
        if args.flops_only:
            cmd += ["--flops-only"]
        if args.batch:
            cmd += ["--batch", str(args.batch)]
        cmd += ["--matmul-n", str(args.matmul_n)]
        if args.peak_tflops:
            cmd += ["--peak-tflops", str(args.peak_tflops)]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode:
            print(out.stderr[-2000:], file=sys.stderr)
            return out.returncode
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        if not args.json:
            print(f"# {preset} done", file=sys.stderr)
    if args.json or args.flops_only:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        "| preset | clip (T,H,W) -> latent | batch | params | encode clips/s | decode clips/s | "
        "encode GFLOP/clip | decode GFLOP/clip | encode / matmul FLOP/s | decode / matmul FLOP/s | "
        "matmul GFLOP/s | compile enc/dec s | peak RSS MB |"
    )
    print("|" + "---|" * 13)
    for r in rows:
        print(
            f"| {r['preset']} | {tuple(r['clip'])} -> {tuple(r['latent'])} | {r['batch']} | {r['params_m']}M | "
            f"{r['encode_clips_per_s']:.3g} | {r['decode_clips_per_s']:.3g} | {r['encode_gflop_per_clip']:.3g} | "
            f"{r['decode_gflop_per_clip']:.3g} | {r['encode_vs_matmul']:.2f} | {r['decode_vs_matmul']:.2f} | "
            f"{r['matmul_gflop_per_s'][0]:.0f} / {r['matmul_gflop_per_s'][1]:.0f} | "
            f"{r['encode_compile_s']:.0f} / {r['decode_compile_s']:.0f} | {r['peak_rss_mb']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
