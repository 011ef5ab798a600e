"""Generation speed: the KV-cache sampler against recomputing the full prefix each step, and seconds
per generated clip, per model preset.

    python bench/generation_bench.py [--presets tiny,small] [--batch 1] [--reps 2] [--guidance 1.0]
                                     [--geometry paper] [--param-dtype bfloat16] [--skip-recompute]

For each preset a randomly initialised model (speed does not depend on the weights) samples the
output of a text-to-video prompt laid out by ``trainer.tasks`` (``<bos> <task> <bot_i> T <eot_i>
<bov_o>`` then ``T'H'W'`` visual tokens + ``<eov_o> <eos>``) with the geometry of the preset's
tokenizer (tiny: magvit2-tiny 17x32x32 -> 5x4x4; small and the paper sizes: 17x64x64 -> 5x8x8,
the quickstart's clips). Both paths are compiled first, then timed (median of ``--reps``) in the
same run: tokens/s with the cache, tokens/s recomputing the whole sequence every step, and their
ratio. "Seconds per clip" = sampling + MAGVIT-v2 decoding of the tokens to 17 frames (seeded
tokenizer of the matching preset), per clip of the batch. ``--geometry paper`` gives the paper sizes
their own clips instead (the ``paper`` MAGVIT-v2 at 17x128x224 -> 5x16x28 = 2,240 tokens a clip).

The memory bound: a sampler that reads its weights once per generated token cannot be faster than
``output tokens x weight bytes / HBM bandwidth`` (the block and head matrices; the embedding lookup
reads one row). ``bound_s`` uses the device's bandwidth from the accelerator catalogue
(``--hbm-bandwidth`` overrides; none on a CPU), and ``cache_vs_bound`` is ``bound_s / cache_s``
(1.0 = at the bound). ``--param-dtype bfloat16`` samples from a bfloat16 copy of the weights (what
an inference server holds), halving the bytes read.
Prints one JSON object; BENCHMARKS.md records the results.
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

import jax  # noqa: E402
import numpy as np  # noqa: E402

TOKENIZER = {
    "tiny": ("tiny", 32),
    "small": ("small", 64),
    "300m": ("small", 64),
    "1b": ("small", 64),
    "8b": ("small", 64),
}


def median_time(fn, reps: int) -> float:
    fn()  # compile
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


PAPER_GEOMETRY = ("paper", (128, 224))


def weight_bytes_per_token(params) -> int:
    """Bytes a decode step reads of the weights: every leaf but the token embedding table (one row of it)."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    total = 0
    for path, leaf in flat:
        names = [str(getattr(k, "key", k)) for k in path]
        if "embed" in names and names[-1] == "embedding":
            total += leaf.shape[-1] * leaf.dtype.itemsize
        else:
            total += leaf.size * leaf.dtype.itemsize
    return int(total)


def bench_preset(
    name: str,
    batch: int,
    reps: int,
    guidance: float,
    skip_recompute: bool,
    geometry: str = "preset",
    param_dtype: str = "float32",
    hbm_bandwidth: float = 0.0,
) -> dict:
    from videopoet.infra import accelerators
    from videopoet.schemas.record import Lineage, TokenRecord
    from videopoet.tokenizers import magvit2
    from videopoet.trainer import generation, model, sampling, tasks
    from videopoet.trainer.config import load_train_config

    cfg = load_train_config(name)
    tok_preset, res = TOKENIZER[name]
    res = (res, res)
    if geometry == "paper" and cfg.model.visual_size == 2**18:
        tok_preset, res = PAPER_GEOMETRY
    vt = magvit2.load(tok_preset)
    latent = vt.latent_shape(17, *res)
    vocab = cfg.model.vocab
    opts = tasks.TaskOptions(vocab=vocab, text_len=cfg.data.text_len)
    rec = TokenRecord(
        key="b",
        lineage=Lineage("b", "0" * 64, "b"),
        video=np.zeros(latent, np.int32),
        text_ids=np.arange(2, 2 + cfg.data.text_len, dtype=np.int32),
    )
    ex = tasks.build("t2v", rec, opts)
    prompt = sampling.Prompt.stack([ex] * batch)
    plan = generation.plan_from_example(ex, vocab)
    params = model.init_params(cfg.model, jax.random.PRNGKey(0))
    if param_dtype != "float32":
        params = jax.tree_util.tree_map(lambda x: x.astype(param_dtype), params)
    lm = model.build(cfg.model)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(batch, cfg.data.text_len, cfg.model.text_dim)).astype(np.float32)
    n_tok = plan.length * batch
    out = {
        "preset": name,
        "params": model.count_params(params),
        "prompt_len": int(ex.prefix_len),
        "output_len": plan.length,
        "latent": list(latent),
        "batch": batch,
        "guidance": guidance,
        "param_dtype": param_dtype,
        "weight_bytes_per_token": weight_bytes_per_token(params),
    }
    base = dict(temperature=1.0, top_k=0, guidance=guidance)

    def run(use_cache):
        o = sampling.SamplingOptions(**base, use_cache=use_cache)
        return lambda: sampling.sample(lm, params, prompt, plan, o, text_emb=emb, seeds=list(range(batch)))

    t_cache = median_time(run(True), reps)
    out["cache_s"] = round(t_cache, 3)
    out["cache_tokens_per_s"] = round(n_tok / t_cache, 1)
    device = jax.devices()[0]
    if hbm_bandwidth <= 0 and device.platform != "cpu":
        found = accelerators.hbm_bandwidth_for_device_kind(device.device_kind)
        hbm_bandwidth = found[0] if found else 0.0
    if hbm_bandwidth > 0:  # one weight read per sampling step: a step makes one token for every row of the batch
        out["hbm_bandwidth"] = hbm_bandwidth  # (guidance's unconditional rows included)
        out["bound_s"] = round(plan.length * out["weight_bytes_per_token"] / hbm_bandwidth, 4)
        out["cache_vs_bound"] = round(out["bound_s"] / t_cache, 3)
    if not skip_recompute:
        t_full = median_time(run(False), max(1, reps // 2))
        out["recompute_s"] = round(t_full, 3)
        out["recompute_tokens_per_s"] = round(n_tok / t_full, 1)
        out["speedup"] = round(t_full / t_cache, 2)
    toks = run(True)()
    # paper sizes sample 2^18 codes; the small tokenizer decodes them modulo its codebook (timing only)
    codes = vocab.visual_from_global(toks[:, : int(np.prod(latent))]).reshape(batch, *latent) % vt.codebook_size
    t_dec = median_time(lambda: vt.decode(codes), reps)
    out["detokenize_s"] = round(t_dec, 3)
    out["seconds_per_clip"] = round((t_cache + t_dec) / batch, 3)
    out["tokenizer"] = f"magvit2-{tok_preset} (seeded) {res[1]}x{res[0]}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--guidance", type=float, default=1.0)
    ap.add_argument("--skip-recompute", action="store_true", help="only the cached path (large presets)")
    ap.add_argument("--geometry", default="preset", choices=("preset", "paper"))
    ap.add_argument("--param-dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--hbm-bandwidth", type=float, default=0.0, help="bytes/s (default: the accelerator catalogue)")
    args = ap.parse_args()
    rows = [
        bench_preset(
            p.strip(),
            args.batch,
            args.reps,
            args.guidance,
            args.skip_recompute,
            geometry=args.geometry,
            param_dtype=args.param_dtype,
            hbm_bandwidth=args.hbm_bandwidth,
        )
        for p in args.presets.split(",")
        if p.strip()
    ]
    print(
        json.dumps(
            {
                "machine": platform.machine(),
                "devices": [str(d) for d in jax.devices()],
                "jax": jax.__version__,
                "load_avg": os.getloadavg(),
                "results": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
