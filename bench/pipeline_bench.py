"""Pipeline benchmark: end-to-end clips/s per core against a decode-only baseline, same run.

    python bench/pipeline_bench.py [--clips 24] [--shards 4] [--synth small] [--config tiny]
                                   [--cores 1] [--json] [key=value ...]

1. writes a synthetic corpus (``videopoet corpus synth``; default the ``small`` world: 160x128 /
   128x128 / 128x224 H.264 at 12 fps with AAC) unless ``--corpus DIR`` is given;
2. **decode-only** (child process): for every video, probe + decord decode of exactly the frames the
   pipeline's clips use, resampled to 8 fps, resized + centre-cropped to the bucket
   (:func:`videopoet.media.decode_clips`, the pipeline's own decode call);
3. **end-to-end** (child process): :func:`videopoet.pipelines.shard.process_shard` over every shard
   (read, validate, decode, audio, captions, conditions, batched tokenization, ArrayRecord write,
   done markers), after compiling every bucket shape once (one-off XLA compilation reported apart);
4. **tokenizers alone** (child process): the same tokenizers on exactly the clips the job encodes,
   prepared beforehand, in full batches per array shape (the ceiling of the tokenize stage);
5. **beam** (child process): the whole Beam job (DirectRunner, 1 worker) for its wall time.

Each child is pinned to ``--cores`` CPU cores (``sched_setaffinity``), so "per core" means per core,
and reports its own peak RSS. Prints a table (or JSON) with the ratio end-to-end / decode-only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def _pin(cores: int) -> list[int]:
    avail = sorted(os.sched_getaffinity(0))
    use = avail[: max(1, cores)]
    os.sched_setaffinity(0, set(use))
    return use


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_decode(args) -> dict:
    from videopoet import media
    from videopoet.media.webdataset import Sample, iter_samples
    from videopoet.pipelines import inputs, prepare
    from videopoet.pipelines.config import load_pipeline_config

    cfg = load_pipeline_config(args.config, args.overrides)
    uris = inputs.list_input_shards(args.corpus)
    clips = 0
    t0 = time.perf_counter()
    for uri in uris:
        for s in iter_samples(uri):
            if not isinstance(s, Sample):
                continue
            pick = prepare.pick_member(s, prepare.VIDEO_EXTS)
            if pick is None:
                continue
            info = media.probe_video(pick[1])
            _, h, w = prepare.bucket_of(info.height, info.width, cfg)
            d = media.decode_clips(
                pick[1],
                info,
                fps=cfg.fps,
                height=h,
                width=w,
                clip_frames=cfg.clip_frames,
                stride=cfg.clip_stride,
                max_clips=cfg.max_clips_per_video,
            )
            clips += len(d.clips)
    wall = time.perf_counter() - t0
    return {"mode": "decode", "clips": clips, "wall_s": wall, "clips_per_s": clips / wall, "peak_rss_mb": _rss_mb()}


def child_e2e(args) -> dict:
    from collections import Counter

    from videopoet.pipelines import inputs, shard, tokenize
    from videopoet.pipelines.config import load_pipeline_config
    from videopoet.schemas.store import DatasetStore

    cfg = load_pipeline_config(args.config, args.overrides)
    uris = inputs.list_input_shards(args.corpus)
    t0 = time.perf_counter()
    toks = tokenize.load_tokenizers(cfg)
    load_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        st = DatasetStore(d)
        warm_s = tokenize.warmup_tokenizers(toks, cfg)  # compiles every shape once
        work = st.begin("bench", "v1", cfg)
        timing: Counter = Counter()
        clips = records = 0
        tokens: Counter = Counter()
        t0 = time.perf_counter()
        for uri in uris:
            s = shard.process_shard(uri, cfg, toks, work)
            clips += s.stats.clips + s.stats.images
            records += s.stats.records
            timing.update(s.timing)
            tokens.update(s.stats.tokens)
        wall = time.perf_counter() - t0
    stages_s = {k: round(v, 3) for k, v in sorted(timing.items()) if k != "total"}
    return {
        "mode": "e2e",
        "clips": clips,
        "records": records,
        "wall_s": wall,
        "clips_per_s": clips / wall,
        "tokens_per_s": {k: round(v / wall, 1) for k, v in sorted(tokens.items())},
        "stage_s": stages_s,
        "tokenizer_load_s": load_s,
        "warmup_shard_s": warm_s,
        "peak_rss_mb": _rss_mb(),
        "tokenizers": {k: v["name"] for k, v in toks.lineage().items()},
    }


def child_tokenizer(args) -> dict:
    """The tokenizers alone on exactly the clips the job encodes (frames, COMMIT condition clips, 2x
    frames, audio windows), decoded and prepared beforehand, in full batches of the job's batch size
    per array shape over the whole corpus (the last padded as the job pads it): the ceiling for the
    job's tokenize stage."""
    from collections import Counter

    import numpy as np

    from videopoet.pipelines import inputs, prepare, tokenize
    from videopoet.pipelines.config import load_pipeline_config

    cfg = load_pipeline_config(args.config, args.overrides)
    toks = tokenize.load_tokenizers(cfg)
    tokenize.warmup_tokenizers(toks, cfg)
    streams: dict[tuple, list] = {}
    audio = []
    clips = 0
    for uri in inputs.list_input_shards(args.corpus):
        for win in prepare.iter_windows(uri, cfg, os.path.basename(uri), "0" * 64, Counter()):
            for it in win.items:
                clips += 1
                arrays = [it.frames] + [
                    toks.video.condition_clip(it.frames[None], k)[0] for k in tokenize.condition_kinds(it, cfg)
                ]
                if it.frames_2x is not None:
                    arrays.append(it.frames_2x)
                for a in arrays:
                    streams.setdefault(a.shape, []).append(a)
                if it.audio is not None:
                    audio.append(it.audio)

    def encode_all(fn, arrs, quantum: int) -> float:
        t0 = time.perf_counter()
        for batch, _ in tokenize.padded_batches(arrs, cfg.batch_size, quantum):
            np.asarray(fn(batch))
        return time.perf_counter() - t0

    # padded as the job pads: video to the tokenizer's call size, audio to the batch
    video_s = sum(
        encode_all(toks.video.encode, arrs, tokenize.video_quantum(toks, cfg, shape)) for shape, arrs in streams.items()
    )
    audio_s = encode_all(toks.audio.encode, audio, cfg.batch_size) if audio else 0.0
    rows = sum(len(a) for a in streams.values()) + len(audio)
    return {
        "mode": "tokenizer",
        "clips": clips,
        "rows": rows,
        "video_s": video_s,
        "audio_s": audio_s,
        "wall_s": video_s + audio_s,
        "clips_per_s": clips / (video_s + audio_s),
        "peak_rss_mb": _rss_mb(),
    }


def child_beam(args) -> dict:
    from videopoet.pipelines.beam import run_beam
    from videopoet.pipelines.config import load_pipeline_config

    cfg = load_pipeline_config(args.config, args.overrides)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        s = run_beam(args.corpus, "bench", "v1", d, cfg, workers=1, progress=False)
        wall = time.perf_counter() - t0
    n = s["this_run"]["clips"] + s["this_run"]["images"]
    return {"mode": "beam", "clips": n, "wall_s": wall, "clips_per_s_incl_startup": n / wall, "peak_rss_mb": _rss_mb()}


def _run_child(mode: str, args) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        mode,
        "--corpus",
        args.corpus,
        "--config",
        args.config,
        "--cores",
        str(args.cores),
        *args.overrides,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{mode} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=None, help="existing shard glob/dir (default: write a synth corpus)")
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--images", type=int, default=0)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--synth", default="small", help="synth world preset (default small)")
    ap.add_argument("--config", default="tiny", help="pipeline config preset/YAML (default tiny)")
    ap.add_argument("--cores", type=int, default=1)
    ap.add_argument("--skip-beam", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if args.child:
        _pin(args.cores)
        res = {"decode": child_decode, "e2e": child_e2e, "tokenizer": child_tokenizer, "beam": child_beam}[args.child](
            args
        )
        print(json.dumps(res))
        return 0
    tmp = None
    if args.corpus is None:
        from videopoet.pipelines.synth import generate_corpus

        tmp = tempfile.TemporaryDirectory()
        generate_corpus(
            tmp.name,
            clips=args.clips,
            images=args.images,
            shards=args.shards,
            seed=0,
            config=args.synth,
            progress=False,
        )
        args.corpus = os.path.join(tmp.name, "*.tar")
    # decode-only is short and the machine noisy: measure it before and after the end-to-end run
    # (and after the Beam run) and use the median
    decs = [_run_child("decode", args)]
    e2e = _run_child("e2e", args)
    decs.append(_run_child("decode", args))
    alone = _run_child("tokenizer", args)
    beam = None if args.skip_beam else _run_child("beam", args)
    decs.append(_run_child("decode", args))
    dec = sorted(decs, key=lambda d: d["clips_per_s"])[len(decs) // 2]
    dec = {**dec, "all_clips_per_s": [round(d["clips_per_s"], 2) for d in decs]}
    tok_s = sum(v for k, v in e2e["stage_s"].items() if k.startswith("tokenize"))
    rest = max(e2e["wall_s"] - tok_s, 1e-9)
    encoded, padded = e2e["stage_s"].get("encoded_rows", 0), e2e["stage_s"].get("padded_rows", 0)
    res = {
        "cores": args.cores,
        "config": args.config,
        "overrides": args.overrides,
        "synth": args.synth,
        "decode_only": dec,
        "end_to_end": e2e,
        "beam": beam,
        "ratio_e2e_vs_decode": e2e["clips_per_s"] / dec["clips_per_s"],
        # the pipeline's own overhead: everything but the tokenizers' compute, vs decode-only
        "ratio_e2e_without_tokenizer_compute_vs_decode": (e2e["clips"] / rest) / dec["clips_per_s"],
        "tokenizer_share_of_e2e_wall": tok_s / e2e["wall_s"],
        "tokenizer_alone": alone,
        # the job's tokenize stage against the same tokenizers alone on the same clips
        "ratio_tokenize_stage_vs_tokenizer_alone": alone["wall_s"] / max(tok_s, 1e-9),
        "ratio_e2e_vs_tokenizer_alone": e2e["clips_per_s"] / alone["clips_per_s"],
        "padded_fraction": padded / max(encoded + padded, 1),
    }
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        c = args.cores
        print(
            f"pipeline benchmark: {dec['clips']} clips, config {args.config} {' '.join(args.overrides)}, "
            f"synth {args.synth}, {c} core(s)"
        )
        print(
            f"  decode-only : {dec['clips_per_s'] / c:8.2f} clips/s/core   peak RSS {dec['peak_rss_mb']:.0f} MB   "
            f"(median of {dec['all_clips_per_s']})"
        )
        print(
            f"  end-to-end  : {e2e['clips_per_s'] / c:8.2f} clips/s/core   peak RSS {e2e['peak_rss_mb']:.0f} MB   "
            f"ratio {res['ratio_e2e_vs_decode']:.2f}"
        )
        print(
            f"    without the tokenizers' compute: {e2e['clips'] / rest / c:8.2f} clips/s/core, ratio "
            f"{res['ratio_e2e_without_tokenizer_compute_vs_decode']:.2f} (tokenizers take "
            f"{100 * res['tokenizer_share_of_e2e_wall']:.0f}% of the end-to-end wall time)"
        )
        print("    stages (s): " + ", ".join(f"{k} {v}" for k, v in e2e["stage_s"].items()))
        print(
            f"  tokenizers alone: {alone['clips_per_s'] / c:8.2f} clips/s/core ({alone['rows']} rows in "
            f"{alone['wall_s']:.1f} s); the job's tokenize stage at "
            f"{res['ratio_tokenize_stage_vs_tokenizer_alone']:.2f} of it (padding "
            f"{100 * res['padded_fraction']:.1f}% of the rows), end-to-end at "
            f"{res['ratio_e2e_vs_tokenizer_alone']:.2f}"
        )
        print("    tokens/s  : " + ", ".join(f"{k} {v}" for k, v in e2e["tokens_per_s"].items()))
        print(
            f"    one-off   : tokenizer load {e2e['tokenizer_load_s']:.1f} s, "
            f"warm-up (XLA compile of every bucket shape) {e2e['warmup_shard_s']:.1f} s"
        )
        if beam:
            print(
                f"  beam job    : {beam['wall_s']:.1f} s wall incl. start-up and load "
                f"({beam['clips_per_s_incl_startup']:.2f} clips/s), peak RSS {beam['peak_rss_mb']:.0f} MB"
            )
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
