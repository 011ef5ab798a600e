"""`videopoet corpus synth`: write the synthetic audio-video corpus (webdataset tar shards).
`videopoet corpus pack`: turn a folder of media files + a metadata table into webdataset tar shards.

    videopoet corpus pack --input DIR --metadata TABLE --out DIR [--path-column C] [--caption-column C]
                          [--samples-per-shard N] [--json]

    videopoet corpus synth --out DIR [--clips N] [--shards K] [--seed S] [--with-corrupt]
                           [--images M] [--split train|heldout] [--config tiny|small|paper|YAML]
                           [key=value ...] [--json]

Writes ``DIR/{split}-{i:05d}.tar`` and ``DIR/corpus.json``; see ``videopoet.pipelines.synth``.
"""

from __future__ import annotations

import argparse

from videopoet.cli.common import add_folder_corpus_flags, add_json_flag, emit


def _synth(args: argparse.Namespace) -> int:
    from videopoet.pipelines.synth import generate_corpus

    summary = generate_corpus(
        args.out,
        clips=args.clips,
        shards=args.shards,
        seed=args.seed,
        images=args.images,
        split=args.split,
        with_corrupt=args.with_corrupt,
        config=args.config,
        overrides=args.overrides,
        progress=None if not args.no_progress else False,
    )
    c = summary["counts"]
    n_bad = sum(c["corrupt"].values())
    text = (
        f"wrote {len(summary['shards'])} {args.split} shard(s) to {args.out}: {c['videos']} videos, "
        f"{c['images']} images, {n_bad} corrupt in {summary['seconds']:.1f}s ({summary['corpus_json']})"
    )
    emit(args, summary, text)
    return 0


def _pack(args: argparse.Namespace) -> int:
    from videopoet.pipelines.folder import FolderCorpus, pack
    from videopoet.schemas.errors import VideoPoetError

    if not args.metadata:
        raise VideoPoetError("corpus pack needs --metadata TABLE (the captions of the --input folder's files)")
    corpus = FolderCorpus(args.input, args.metadata, args.path_column, args.caption_column, args.samples_per_shard)
    summary = pack(corpus, args.out, progress=None if not args.no_progress else False)
    bad = summary["rejected"]
    text = f"packed {summary['samples']} sample(s) into {len(summary['shards'])} shard(s) in {args.out}" + (
        f"; recorded as rejects: {', '.join(f'{k} {v}' for k, v in bad.items())}" if bad else ""
    )
    emit(args, summary, text)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "corpus",
        help="corpora: synthetic ones (synth), folders packed into shards (pack)",
        description="Synthetic corpora, and folder corpora packed into webdataset shards.",
    )
    csub = p.add_subparsers(dest="action", metavar="ACTION")
    csub.required = True
    s = csub.add_parser(
        "synth",
        help="write the synthetic audio-video corpus as webdataset shards",
        description="Write DIR/{split}-NNNNN.tar webdataset shards of synthetic clips ({key}.mp4 H.264+AAC, "
        "{key}.txt, {key}.json) and images ({key}.jpg, .txt, .json), plus DIR/corpus.json. "
        "Same arguments give byte-identical shards.",
    )
    s.add_argument("--out", required=True, metavar="DIR", help="output directory (local path or fsspec URL)")
    s.add_argument("--clips", type=int, default=64, metavar="N", help="video clips to write (default 64)")
    s.add_argument("--images", type=int, default=0, metavar="M", help="still images to write (default 0)")
    s.add_argument("--shards", type=int, default=2, metavar="K", help="tar shards to spread them over (default 2)")
    s.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    s.add_argument(
        "--split",
        choices=("train", "heldout"),
        default="train",
        help="train: never the held-out colour x shape combinations; heldout: only them",
    )
    s.add_argument(
        "--with-corrupt",
        action="store_true",
        help="add bad samples (truncated/empty/non-video mp4, missing or non-UTF-8 caption), "
        "each named in its .json 'corrupt' field and in corpus.json",
    )
    s.add_argument(
        "--config", default="small", metavar="PRESET|YAML", help="tiny | small | paper | a YAML file (default small)"
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. fps=8 frames=41")
    add_json_flag(s)
    s.set_defaults(func=_synth)

    k = csub.add_parser(
        "pack",
        help="turn a folder of media files + a metadata table into webdataset shards",
        description="Write the units a pipeline run on the folder reads (pipeline run --input DIR --metadata TABLE) "
        "as OUT/{table}-NNNNN.tar, byte for byte, plus OUT/pack.json: a pipeline run on those shards gives the "
        "same dataset fingerprint. Rows without a file, files without a row, repeated rows are kept as reject "
        "records (missing_file, no_metadata, duplicate_key).",
    )
    k.add_argument("--input", required=True, metavar="DIR", help="the folder of media files (local or fsspec URL)")
    k.add_argument("--out", required=True, metavar="DIR", help="output directory (local path or fsspec URL)")
    add_folder_corpus_flags(k)
    k.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_json_flag(k)
    k.set_defaults(func=_pack)
