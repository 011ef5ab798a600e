"""``videopoet tokenizer train|eval --kind soundstream`` (dispatched from ``videopoet.cli.tokenizer``).

    videopoet tokenizer train --kind soundstream --config small --data synth --out runs/ss [--steps N] [key=value ...]
    videopoet tokenizer eval  --kind soundstream --ckpt runs/ss|default|PRESET --data synth:heldout [--json]

``--data``: ``synth[:train|heldout]`` (synthetic-corpus audio mixed with generic tones),
``synth-world[:SPLIT]``, ``synth-tones[:SPLIT]``, or a directory / glob / fsspec URI of wav/flac files.
"""

from __future__ import annotations

import argparse
import sys

from videopoet.cli.common import emit


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="small", help="preset (tiny|small|paper) or YAML (default: small)")
    p.add_argument("--data", default="synth", help="synth[:SPLIT] | synth-world | synth-tones | audio dir/glob/URI")
    p.add_argument("--out", required=True, help="run directory (resumed when it holds checkpoints)")
    p.add_argument("--steps", type=int, default=2000, help="total training steps (default 2000)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm bar")
    p.add_argument(
        "--init-from", default=None, help="start a new run from this run/export directory's weights (fine-tune)"
    )
    p.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. batch_size=8)")


def train(args: argparse.Namespace) -> int:
    from videopoet.cli.tokenizer_data import audio_waves
    from videopoet.tokenizers.soundstream import train as soundstream_train
    from videopoet.tokenizers.soundstream.config import load_soundstream_config

    cfg = load_soundstream_config(args.config, args.overrides)
    waves = audio_waves(args.data, cfg.sample_rate, 34000, cfg.seed, "train")
    log = (
        None
        if args.json
        else (
            lambda m: print(
                f"step {m['step']}: loss {m['loss']:.4f} wave_l1 {m['wave_l1']:.4f} "
                f"stft {m['stft']:.3f} si-snr {m['si_snr']:.2f} dB",
                file=sys.stderr,
            )
        )
    )
    out = soundstream_train.train(
        cfg,
        waves,
        args.out,
        args.steps,
        log_every=args.log_every,
        ckpt_every=args.ckpt_every,
        progress=not (args.no_progress or args.json),
        log=log,
        init_from=args.init_from,
    )
    out["out"] = args.out
    emit(args, out, f"trained {cfg.name} to step {out['step']} in {args.out} (fingerprint {out['fingerprint'][:16]})")
    return 0


def add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", default="default", help="run/export dir or URI, 'default' (shipped), or a preset")
    p.add_argument("--data", default="synth-world:heldout", help="as for train (default synth-world:heldout)")
    p.add_argument("--clips", type=int, default=64, help="number of 2.125 s clips to evaluate")
    p.add_argument("--seed", type=int, default=0)


def eval(args: argparse.Namespace) -> int:  # noqa: A001 - the dispatcher's name
    from videopoet.cli.tokenizer_data import audio_waves
    from videopoet.tokenizers import registry
    from videopoet.tokenizers.soundstream.evaluate import evaluate

    tok, _ = registry.resolve(args.ckpt, "audio")
    waves = audio_waves(args.data, tok.config.sample_rate, 34000, args.seed, "heldout")
    m = evaluate(tok, waves, max_clips=args.clips)
    text = (
        f"{m['config']} on {m['clips']} clips: SI-SNR {m['si_snr_db']:.2f} dB, mel distance {m['mel_distance']:.3f}, "
        f"usage per level {[round(u, 3) for u in m['usage_per_level']]}, bitrate {m['bitrate_bps']:.0f} b/s"
    )
    emit(args, m, text)
    return 0
