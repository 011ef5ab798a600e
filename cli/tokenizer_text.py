"""``videopoet tokenizer train|eval --kind text``.

videopoet tokenizer train --kind text --data captions.txt|DIR|GLOB|synth[:N] --out DIR [--vocab-size 512]
    -> DIR/spiece.model (+ DIR/spiece.json: options, caption count, sha256)
videopoet tokenizer eval --kind text [--ckpt default|PRESET|HF_DIR] [--spiece MODEL] --data CAPTIONS [--json]
    -> tokens per caption, truncation rate (> 64 tokens), unknown-piece rate, embedding shape
"""

from __future__ import annotations

import argparse
import hashlib
import json

from videopoet.cli.common import emit


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", required=True, help="captions .txt (one per line), dir/glob of .txt or .tar shards, or synth[:N]"
    )
    p.add_argument("--out", required=True, help="output directory for spiece.model")
    p.add_argument("--vocab-size", type=int, default=512)
    p.add_argument("--model-type", default="bpe", choices=("unigram", "bpe", "word", "char"))


def train(args: argparse.Namespace) -> int:
    import fsspec

    from videopoet.cli import tokenizer_data
    from videopoet.tokenizers.text.spm import train_sentencepiece

    captions = tokenizer_data.captions(args.data)
    model = train_sentencepiece(captions, args.vocab_size, args.model_type)
    fs, root = fsspec.core.url_to_fs(args.out)
    fs.makedirs(root, exist_ok=True)
    with fs.open(f"{root}/spiece.model", "wb") as f:
        f.write(model)
    from videopoet.tokenizers.text.spm import load_sentencepiece

    info = {
        "out": f"{args.out.rstrip('/')}/spiece.model",
        "captions": len(captions),
        "vocab_size_requested": args.vocab_size,
        "vocab_size": load_sentencepiece(model).get_piece_size(),
        "model_type": args.model_type,
        "sha256": hashlib.sha256(model).hexdigest(),
    }
    with fs.open(f"{root}/spiece.json", "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
    emit(args, info, f"wrote {info['out']} ({info['vocab_size']} pieces from {len(captions)} captions)")
    return 0


def add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", default="default", help="default | preset | Hugging Face T5 directory")
    p.add_argument("--spiece", default=None, help="SentencePiece .model to use instead")
    p.add_argument("--data", default="synth:500", help="captions as for train")


def eval(args: argparse.Namespace) -> int:  # noqa: A001
    import numpy as np

    from videopoet.cli import tokenizer_data
    from videopoet.tokenizers import text

    enc = (
        text.default()
        if args.ckpt == "default" and not args.spiece
        else text.load("small" if args.ckpt == "default" else args.ckpt, spiece=args.spiece)
    )
    captions = tokenizer_data.captions(args.data)
    lengths, unk, truncated = [], 0, 0
    for c in captions:
        pieces = enc.sp.encode(c)
        truncated += len(pieces) + 1 > enc.config.max_length
        unk += sum(p == enc.sp.unk_id() for p in pieces)
        lengths.append(min(len(pieces) + 1, enc.config.max_length))
    ids, mask = enc.tokenize(captions[:8])
    emb = enc.embed(ids, mask)
    m = {
        "captions": len(captions),
        "tokens_mean": float(np.mean(lengths)),
        "tokens_max": int(np.max(lengths)),
        "truncated_fraction": truncated / len(captions),
        "unk_per_caption": unk / len(captions),
        "embedding_shape_first8": list(emb.shape),
        "fingerprint": enc.fingerprint,
        "config": enc.config.name,
    }
    emit(
        args,
        m,
        f"{m['config']}: {m['captions']} captions, {m['tokens_mean']:.1f} tokens mean "
        f"(max {m['tokens_max']}), truncated {m['truncated_fraction']:.1%}, unk/caption {m['unk_per_caption']:.3f}",
    )
    return 0
