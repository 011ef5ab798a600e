"""Generation speed: the KV-cache sampler against recomputing the full prefix each step, and seconds
per generated clip, per model preset.

    python bench/generation_bench.py [--presets tiny,small] [--batch 1] [--reps 2] [--guidance 1.0]

For each preset a randomly initialised model (speed does not depend on the weights) samples the
output of a text-to-video prompt laid out by ``trainer.tasks`` (``<bos> <task> <bot_i> T <eot_i>
<bov_o>`` then ``T'H'W'`` visual tokens + ``<eov_o> <eos>``) with the geometry of the preset's
tokenizer (tiny: magvit2-tiny 17x32x32 -> 5x4x4; small and the paper sizes: 17x64x64 -> 5x8x8,
the quickstart's clips). Both paths are compiled first, then timed (median of ``--reps``) in the
same run: tokens/s with the cache, tokens/s recomputing the whole sequence every step, and their
ratio. "Seconds per clip" = sampling + MAGVIT-v2 decoding of the tokens to 17 frames (seeded
tokenizer of the matching preset), per clip of the batch.
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


def bench_preset(name: str, batch: int, reps: int, guidance: float, skip_recompute: bool) -> dict:
    from videopoet.schemas.record import Lineage, TokenRecord
    from videopoet.tokenizers import magvit2
    from videopoet.trainer import generation, model, sampling, tasks
    from videopoet.trainer.config import load_train_config

    cfg = load_train_config(name)
    tok_preset, res = TOKENIZER[name]
    vt = magvit2.load(tok_preset)
    latent = vt.latent_shape(17, res, res)
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
    }
    base = dict(temperature=1.0, top_k=0, guidance=guidance)

    def run(use_cache):
        o = sampling.SamplingOptions(**base, use_cache=use_cache)
        return lambda: sampling.sample(lm, params, prompt, plan, o, text_emb=emb, seeds=list(range(batch)))

    t_cache = median_time(run(True), reps)
    out["cache_s"] = round(t_cache, 3)
    out["cache_tokens_per_s"] = round(n_tok / t_cache, 1)
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
    out["tokenizer"] = f"magvit2-{tok_preset} (seeded) {res}x{res}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--guidance", type=float, default=1.0)
    ap.add_argument("--skip-recompute", action="store_true", help="only the cached path (large presets)")
    args = ap.parse_args()
    rows = [
        bench_preset(p.strip(), args.batch, args.reps, args.guidance, args.skip_recompute)
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
