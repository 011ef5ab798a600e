"""Super-resolution against bicubic upsampling on held-out synthetic clips.

    python bench/sr_vs_bicubic.py [--train-clips 48] [--eval-clips 8] [--steps 120] [--batch 4]
                                  [--eval-split heldout|train] [--out DIR] [--run NAME]
                                  [key=value ...]   (SR config overrides)

Rerun with the same ``--out`` and arguments to resume: the corpora and the published dataset are
kept, and the SR run continues from its last checkpoint (``checkpoint_every=N`` to save more often).
``--run`` names the SR run inside ``--out`` (default ``sr-run``), so that variants of the model
(say ``model.lowres_skip=true``) train and are measured on the same corpora and dataset.

1. A synthetic ``small`` corpus (train split) goes through the Beam pipeline (``small`` preset, the
   shipped tokenizers) with ``sr_pairs``: 64x64 clips and their 128x128 pairs.
2. A ``small``-preset super-resolution transformer trains on the pairs (``--steps`` x ``--batch``).
3. Held-out clips, never trained on (``--eval-split``), are prepared exactly as the pipeline prepares
   them (the 128x128 clip is the ground truth, the 64x64 clip its 2x2 box average) and their 64x64
   clips tokenized. Then, against the ground truth:

   * ``sr``: the SR model's MaskGIT decoding of the low-resolution tokens (the caption as text),
     decoded by the tokenizer at 128x128 (the cascade of ``videopoet generate --sr``);
   * ``sr_greedy``: the same with token temperature 0 (the most likely code at each step);
   * ``sr_refineF`` (a ``model.upsampled_input`` model): greedy decoding from the upsampled guess, over
     only the fraction F of positions whose guess code the model finds least likely (``sample.refine``);
   * ``bicubic``: the tokenizer's decoding of the low-resolution tokens (64x64), bicubic-upsampled;
   * ``bicubic_tokens``: that bicubic clip encoded and decoded at 128x128 (the upsampled guess of the
     pipeline's ``superres_2x_upsampled`` stream, which a ``model.upsampled_input`` model starts from);
   * ``bicubic_of_pixels``: the true 64x64 pixels bicubic-upsampled (no tokenizer at all);
   * ``tokenizer_2x``: the tokenizer's reconstruction of the 128x128 ground truth itself (encode +
     decode): what a perfect SR model's tokens would decode to.

   ``heldout_code_accuracy``: the fraction of the SR codes (and of the guess's) equal to those
   tokens (the training log's masked-token accuracy is measured on the training pairs).

   ``--eval-split`` picks which clips: ``heldout`` (default), the corpus's ``heldout`` split, whose
   colour x shape combinations the SR model never saw, so a drop there mixes resolution with zero-shot
   attributes; ``train``, new videos of the trained combinations (another seed than the training
   corpus's), so only resolution is measured.

``--methods`` limits the rows (and the decodings) measured; ``--init-from SR_RUN`` starts the SR run
from another one's weights. Besides the means, ``paired_vs_bicubic`` counts, per row, the clips it
scores right where bicubic does not and the reverse (the figure a 1-clip difference needs), and
``per_clip`` lists every clip's scores.

Measures per method (means over the held-out clips): PSNR (dB, over all pixels of a clip), edge
sharpness as the ratio of the mean gradient magnitude (luma, central differences) to the ground
truth's (1 = as sharp; bicubic blurs below 1), and the synthetic-world scorer's colour and shape
accuracy for the main object. Prints one JSON object; BENCHMARKS.md records the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import platform
import shutil
import sys
import tempfile
import time

sys.path[:] = [
    p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
]

import numpy as np  # noqa: E402

METHODS = ("sr", "sr_greedy", "bicubic", "bicubic_tokens", "bicubic_of_pixels", "tokenizer_2x")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def mean_gradient(frames: np.ndarray) -> float:
    """Mean gradient magnitude of the luma (central differences inside the frame)."""
    f = np.asarray(frames, np.float64)
    y = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
    gx = (y[:, 1:-1, 2:] - y[:, 1:-1, :-2]) / 2.0
    gy = (y[:, 2:, 1:-1] - y[:, :-2, 1:-1]) / 2.0
    return float(np.mean(np.sqrt(gx**2 + gy**2)))


def paired_counts(row: list[float], base: list[float]) -> list[int]:
    """[clips scored right by ``row`` and wrong by ``base``, the reverse] (scores are 0 or 1 per clip)."""
    a, b = np.asarray(row), np.asarray(base)
    return [int(np.sum(a > b)), int(np.sum(a < b))]


def eval_items(corpus: str, cfg, grid_hw: tuple[int, int]):
    """(ClipItem, scorer's wanted objects) of the evaluation corpus's video clips in the square bucket."""
    from videopoet.media.webdataset import Sample, iter_samples
    from videopoet.pipelines import prepare
    from videopoet.pipelines.inputs import list_input_shards
    from videopoet.pipelines.synth.score import object_truth

    out = []
    for shard in list_input_shards(os.path.join(corpus, "*.tar")):
        for s in iter_samples(shard):
            if not isinstance(s, Sample) or "json" not in s.members:
                continue
            try:
                items = prepare.prepare_sample(s, cfg, os.path.basename(shard), "0" * 64)
            except prepare.RejectError:
                continue
            attrs = json.loads(s.members["json"].decode("utf-8"))
            for it in items:
                if it.frames_2x is None or it.frames.shape[1:3] != grid_hw:
                    continue
                want = object_truth(attrs, it.lineage.clip_start_s, it.frames.shape[0] / cfg.fps)
                out.append((it, want))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-clips", type=int, default=48)
    ap.add_argument("--eval-clips", type=int, default=8)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--eval-split",
        choices=("heldout", "train"),
        default="heldout",
        help="held-out clips: of combinations never trained on (heldout), or new videos of trained ones (train)",
    )
    ap.add_argument("--out", default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--run", default="sr-run", help="the SR run's directory name inside --out")
    ap.add_argument(
        "--refine",
        type=float,
        nargs="*",
        default=[0.1, 0.25],
        help="with model.upsampled_input: the sr_refineF rows (greedy MaskGIT over the fraction F of "
        "positions whose guess code the model finds least likely; the rest keep the guess)",
    )
    ap.add_argument(
        "--init-from",
        default=None,
        metavar="SR_RUN",
        help="start the SR run from another SR run's latest weights (fresh optimizer, this run's config)",
    )
    ap.add_argument(
        "--methods",
        default=None,
        help="comma-separated rows to measure (default: all); the others' decodings are skipped",
    )
    ap.add_argument("overrides", nargs="*", help="SR config overrides (key=value)")
    args = ap.parse_args(argv)

    import jax

    from videopoet import media
    from videopoet.pipelines import tokenize
    from videopoet.pipelines.beam import run_beam
    from videopoet.pipelines.config import load_pipeline_config
    from videopoet.pipelines.synth import generate_corpus
    from videopoet.pipelines.synth.score import score_clip
    from videopoet.trainer.superres import data as sr_data
    from videopoet.trainer.superres import train as sr_train
    from videopoet.trainer.superres.cascade import Upsampler
    from videopoet.trainer.superres.config import load_sr_config

    work = args.out or tempfile.mkdtemp(prefix="sr-bench-")
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    # the evaluation corpus of new train-split videos has its own directory and marker names, apart
    # from the training corpus's
    eval_name = "heldout" if args.eval_split == "heldout" else "unseen-train"
    train_corpus, eval_corpus = os.path.join(work, "train"), os.path.join(work, eval_name)
    # a rerun with the same --out resumes: corpora, dataset, SR run; another --eval-clips remakes only
    # the evaluation corpus (the training corpus, its dataset and the SR run stay)
    train_done = os.path.join(work, f"corpus-train-{args.train_clips}-{args.seed}.done")
    eval_done = os.path.join(work, f"corpus-{eval_name}-{args.eval_clips}-{args.seed}.done")
    if not os.path.exists(train_done):
        generate_corpus(train_corpus, clips=args.train_clips, shards=2, seed=args.seed, config="small", progress=False)
        open(train_done, "w").close()
    if not os.path.exists(eval_done):
        shutil.rmtree(eval_corpus, ignore_errors=True)
        for stale in glob.glob(os.path.join(work, f"corpus-{eval_name}-*.done")):
            os.remove(stale)
        generate_corpus(
            eval_corpus,
            clips=args.eval_clips,
            shards=1,
            seed=args.seed + 1,  # for the train split: other videos than the training corpus's
            split=args.eval_split,
            config="small",
            progress=False,
        )
        open(eval_done, "w").close()
    times["corpus_s"] = time.perf_counter() - t0

    pcfg = load_pipeline_config("small", ["sr_pairs=true"])
    root = os.path.join(work, "datasets")
    t0 = time.perf_counter()
    summary = run_beam(os.path.join(train_corpus, "*.tar"), "srbench", "v1", root, pcfg, workers=1, progress=False)
    times["pipeline_s"] = time.perf_counter() - t0

    cfg = load_sr_config(
        "small",
        [
            f"steps={args.steps}",
            f"batch_size={args.batch}",
            f"warmup_steps={max(1, args.steps // 10)}",
            f"checkpoint_every={args.steps}",
            f"seed={args.seed}",
            "progress=false",
            *args.overrides,
        ],
    )
    pairs = sr_data.open_dataset_pairs("srbench@v1", cfg, root)
    if os.path.basename(args.run) != args.run or args.run in ("", ".", ".."):
        raise SystemExit(f"--run {args.run!r}: a plain directory name")
    run_dir = os.path.join(work, args.run)
    t0 = time.perf_counter()
    res = sr_train.train(cfg, pairs, run_dir, init_from=args.init_from)
    times["train_s"] = time.perf_counter() - t0

    toks = tokenize.load_tokenizers(pcfg)
    up = Upsampler.from_run(run_dir, toks.video)
    _, lh, lw = cfg.model.low_grid
    down = toks.video.config.spatial_downsample
    greedy = dataclasses.replace(cfg.sample, temperature=0.0)  # the most likely code at each MaskGIT step
    decodings = {"sr": cfg.sample, "sr_greedy": greedy}
    if cfg.model.upsampled_input:  # from the guess, only its least likely positions decoded (greedy)
        decodings |= {f"sr_refine{f:g}": dataclasses.replace(greedy, refine=f) for f in args.refine}
    methods = (*decodings, *(m for m in METHODS if m not in ("sr", "sr_greedy")))
    if args.methods:
        wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = sorted(set(wanted) - set(methods))
        if unknown:
            raise SystemExit(f"--methods: {', '.join(unknown)} not among {', '.join(methods)}")
        methods = tuple(m for m in methods if m in wanted)
        decodings = {m: o for m, o in decodings.items() if m in wanted}
    items = eval_items(eval_corpus, pcfg, (lh * down, lw * down))
    if not items:
        raise SystemExit("no held-out clip fits the SR model's grid")
    t0 = time.perf_counter()
    rows = {m: {"psnr": [], "sharpness": [], "colour": [], "shape": []} for m in methods}
    code_match: dict[str, list[float]] = {m: [] for m in (*decodings, "bicubic_tokens")}
    for i, (it, want) in enumerate(items):
        truth = it.frames_2x
        low_codes = toks.video.encode(it.frames[None])[0]
        truth_codes = toks.video.encode(truth[None])[0]
        outs = {}
        for m, options in decodings.items():
            codes, outs[m] = up.upsample(low_codes, it.caption, seed=args.seed + i, options=options)
            code_match[m].append(float(np.mean(codes == truth_codes)))
        guess = tokenize.upsampled_codes(toks.video, low_codes[None])
        code_match["bicubic_tokens"].append(float(np.mean(guess[0] == truth_codes)))
        if "bicubic" in methods:
            outs["bicubic"] = media.upsample_bicubic(toks.video.decode(low_codes[None])[0], 2)
        if "bicubic_tokens" in methods:
            outs["bicubic_tokens"] = toks.video.decode(guess)[0]
        if "bicubic_of_pixels" in methods:
            outs["bicubic_of_pixels"] = media.upsample_bicubic(it.frames, 2)
        if "tokenizer_2x" in methods:
            outs["tokenizer_2x"] = toks.video.decode(truth_codes[None])[0]
        g_truth = mean_gradient(truth)
        for m, frames in outs.items():
            frames = np.asarray(frames, np.uint8)
            assert frames.shape == truth.shape, (m, frames.shape, truth.shape)
            score = score_clip(frames, want)
            rows[m]["psnr"].append(psnr(frames, truth))
            rows[m]["sharpness"].append(mean_gradient(frames) / max(g_truth, 1e-9))
            rows[m]["colour"].append(float(score["colour"]))
            rows[m]["shape"].append(float(score["shape"]))
    times["eval_s"] = time.perf_counter() - t0
    truth_scores = [score_clip(it.frames_2x, want) for it, want in items]
    # paired against bicubic, clip by clip: [clips this row gets right where bicubic does not, the reverse]
    paired = {}
    if "bicubic" in rows:
        for m in methods:
            if m != "bicubic":
                paired[m] = {k: paired_counts(rows[m][k], rows["bicubic"][k]) for k in ("colour", "shape")}
    out = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "jax": jax.__version__},
        "command": " ".join(["python", "bench/sr_vs_bicubic.py", *(argv if argv is not None else sys.argv[1:])]),
        "train_clips": args.train_clips,
        "pipeline": {k: summary[k] for k in ("records", "samples_rejected", "fingerprint", "seconds") if k in summary},
        "pairs": len(pairs),
        "pairs_skipped": pairs.skipped,
        "sr_config": {
            "preset": cfg.name,
            "steps": cfg.steps,
            "batch_size": cfg.batch_size,
            "sample_steps": cfg.sample.steps,
            "lowres_skip": cfg.model.lowres_skip,
            "upsampled_input": cfg.model.upsampled_input,
            "overrides": list(args.overrides),
        },
        "sr_train": {"final_loss": res["last"].get("loss"), "final_accuracy": res["last"].get("accuracy")},
        "eval_split": args.eval_split,
        "heldout_clips": len(items),
        "ground_truth_scorer": {
            "colour": float(np.mean([s["colour"] for s in truth_scores])),
            "shape": float(np.mean([s["shape"] for s in truth_scores])),
        },
        "methods": {m: {k: round(float(np.mean(v)), 4) for k, v in r.items()} for m, r in rows.items()},
        # the fraction of the SR model's (and the guess's) codes equal to the tokenizer's codes of the 128x128 truth
        "heldout_code_accuracy": {m: round(float(np.mean(v)), 4) for m, v in code_match.items()},
        "paired_vs_bicubic": paired,
        "per_clip": {
            "caption": [it.caption for it, _ in items],
            **{m: {k: r[k] for k in ("colour", "shape", "psnr")} for m, r in rows.items()},
        },
        "seconds": {k: round(v, 1) for k, v in times.items()},
        "work_dir": work,
    }
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
