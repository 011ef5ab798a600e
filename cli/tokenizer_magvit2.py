"""``videopoet tokenizer train|eval --kind magvit2`` (dispatched from :mod:`videopoet.cli.tokenizer`).

    videopoet tokenizer train --kind magvit2 --config small --data synth --out runs/mv [key=value ...]
    videopoet tokenizer train --kind magvit2 --config small --init-from runs/mv --out runs/mv-ft image_steps=0 ...
    videopoet tokenizer eval  --kind magvit2 --ckpt runs/mv|default|PRESET --data synth:heldout [--json]

``--data``: ``synth[:train|heldout]`` (the synthetic world rendered at the config's size, 8 fps) or a
glob / directory / fsspec URI of webdataset shards (.tar with mp4/webm/mkv/jpg/png members) or media.
"""

from __future__ import annotations

import argparse
import sys

from videopoet.cli.common import emit


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="small", help="preset (tiny|small|paper) or YAML (default: small)")
    p.add_argument("--data", default="synth", help="synth[:SPLIT] | shards glob/dir/URI (default synth)")
    p.add_argument("--out", required=True, help="run directory (resumed when it holds checkpoints)")
    p.add_argument("--steps", type=int, default=None, help="video steps (overrides the config's 'steps')")
    p.add_argument("--image-steps", type=int, default=None, help="image-first steps (overrides 'image_steps')")
    p.add_argument(
        "--init-from",
        default=None,
        help="start a new run from this trained video model (run/export dir or URI): image_steps=0 fine-tunes "
        "it; image_steps>0 first continues it as an image model, then returns to video keeping "
        "its temporal taps",
    )
    p.add_argument(
        "--pool",
        type=int,
        default=None,
        help="clips held in memory and sampled into batches (overrides 'pool_clips', default 256)",
    )
    p.add_argument("--max-minutes", type=float, default=None, help="checkpoint and stop after this long")
    p.add_argument(
        "--perceptual-weights",
        default=None,
        metavar="SAFETENSORS[,SAFETENSORS]",
        help="turn on the perceptual loss with these VGG-16 weights (torchvision names; LPIPS heads "
        "optional): sets perceptual_checkpoint, and perceptual_weight=0.1 unless the config sets one",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm bar")
    p.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. batch_size=8 gan_weight=0.1)")


def train(args: argparse.Namespace) -> int:
    from videopoet.cli.tokenizer_data import video_clips
    from videopoet.tokenizers.magvit2.config import load_magvit_config
    from videopoet.tokenizers.magvit2.train import train_run

    overrides = list(args.overrides)
    if args.perceptual_weights:
        overrides.insert(0, f"perceptual_checkpoint={args.perceptual_weights}")
        if load_magvit_config(args.config, overrides).perceptual_weight <= 0:
            overrides.insert(0, "perceptual_weight=0.1")
    if args.steps is not None:
        overrides.append(f"steps={args.steps}")
    if args.image_steps is not None:
        overrides.append(f"image_steps={args.image_steps}")
    if args.pool is not None:
        overrides.append(f"pool_clips={args.pool}")
    cfg = load_magvit_config(args.config, overrides)
    source = video_clips(args.data, cfg.frames, cfg.height, cfg.width, seed=cfg.seed, split="train")
    log = None if args.json else (lambda line: print(line, file=sys.stderr))
    out = train_run(
        cfg,
        args.out,
        source,
        progress=not (args.no_progress or args.json),
        max_seconds=None if args.max_minutes is None else args.max_minutes * 60,
        log=log,
        init_from=args.init_from,
    )
    emit(
        args,
        out,
        f"trained {cfg.name} to step {out['step']}/{out['total_steps']} in {args.out} "
        f"(fingerprint {out['fingerprint'][:16]}, final {out['final']})",
    )
    return 0


def add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", default="default", help="run/export dir or URI, 'default' (shipped), or a preset")
    p.add_argument("--data", default="synth:heldout", help="as for train (default synth:heldout)")
    p.add_argument("--clips", type=int, default=32, help="number of clips to evaluate")
    p.add_argument("--frames", type=int, default=None, help="frames per clip (default: the config's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write recon_grid.png, recon.mp4 and metrics.json here")
    p.add_argument("--no-h264", action="store_true", help="skip the H.264 rate-distortion comparison")
    p.add_argument(
        "--perceptual-weights",
        default=None,
        metavar="SAFETENSORS[,SAFETENSORS]",
        help="also report the LPIPS-style distance with these VGG-16 weights (as for train)",
    )


def eval(args: argparse.Namespace) -> int:  # noqa: A001 - the dispatcher's name
    from videopoet.cli.tokenizer_data import video_breakdown, video_clips
    from videopoet.tokenizers import registry
    from videopoet.tokenizers.magvit2.data import take
    from videopoet.tokenizers.magvit2.evaluate import evaluate

    tok, _ = registry.resolve(args.ckpt, "visual")
    cfg = tok.config
    frames = args.frames or cfg.frames
    clips = take(video_clips(args.data, frames, cfg.height, cfg.width, seed=args.seed, split="heldout"), args.clips)
    # synthetic scenes are known: the error by background pattern and near objects
    groups, region = video_breakdown(args.data, args.seed, frames, cfg.height, cfg.width, len(clips))
    m = evaluate(
        tok,
        clips,
        out_dir=args.out,
        h264=not args.no_h264,
        groups=groups,
        region=region,
        perceptual_weights=args.perceptual_weights,
    )
    text = (
        f"{cfg.name} on {m['clips']} clips {m['shape']} -> {m['latent_shape']}: PSNR {m['psnr']:.2f} dB, "
        f"SSIM {m['ssim']:.3f}, codebook usage {m['codebook_usage']:.3f} (perplexity {m['codebook_perplexity']:.1f}), "
        f"{m['bpp']:.4f} bpp"
    )
    if "h264" in m:
        h = m["h264"]
        text += (
            f"; H.264 on {h['clips']} clips at {h['bpp']:.4f} bpp (CRF~{h['crf']:.0f}): PSNR {h['psnr']:.2f} dB "
            f"vs the tokenizer's {h['tokenizer_psnr_same_clips']:.2f} dB at {h['target_bpp']:.4f} bpp"
        )
    if "perceptual" in m:
        pm = m["perceptual"]
        text += f"; {'LPIPS' if pm['heads'] else 'perceptual distance (VGG, no LPIPS heads)'} {pm['distance']:.4f}"
    pf = m["psnr_per_frame"]
    if len(pf) > 1:
        text += f"\n  per frame: first {pf[0]:.2f} dB, the others {min(pf[1:]):.2f}-{max(pf[1:]):.2f} dB"
    if "region" in m and m["region"]["psnr_inside"] is not None:
        r = m["region"]
        outside = "-" if r["psnr_outside"] is None else f"{r['psnr_outside']:.2f} dB"
        text += (
            f"\n  within 3 px of objects ({100 * r['fraction']:.0f}% of pixels) {r['psnr_inside']:.2f} dB, "
            f"elsewhere {outside}"
        )
    if "psnr_by_group" in m:
        text += "\n  by background: " + ", ".join(
            f"{g} {v['psnr']:.2f} dB ({v['clips']})" for g, v in m["psnr_by_group"].items()
        )
    emit(args, m, text)
    return 0
