"""Helpers shared by the CLI groups: output in text or --json, and user errors."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

# The argv being parsed (set by videopoet.cli.main.build_parser).
ARGV: list[str] = []


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def add_sampling_flags(p: argparse.ArgumentParser) -> None:
    """``--temperature --top-k --top-p --guidance``; one not given takes the model directory's
    ``sampling.json`` value (the shipped model's measured settings), else the library default."""
    why = "default: the model's sampling.json, else {}"
    p.add_argument("--temperature", type=float, default=None, help=f"0 = greedy ({why.format(1.0)})")
    p.add_argument("--top-k", type=int, default=None, help=f"0 = off ({why.format(0)})")
    p.add_argument("--top-p", type=float, default=None, help=f"1 = off ({why.format(1.0)})")
    p.add_argument(
        "--guidance", type=float, default=None, help=f"classifier-free guidance scale, 1 = off ({why.format(1.0)})"
    )


def sampling_options(args: argparse.Namespace):
    """The validated SamplingOptions of ``args.run``: the flags given, over its ``sampling.json``."""
    from videopoet.trainer import export
    from videopoet.trainer.sampling import SamplingOptions

    given = {k: getattr(args, k) for k in export.SAMPLING_KEYS if getattr(args, k, None) is not None}
    options = SamplingOptions(**{**export.sampling_defaults(args.run), **given})
    options.validate()
    return options


def add_init_from_flags(p: argparse.ArgumentParser, source_help: str) -> None:
    """``--init-from RUN_OR_DIR [--grow] [--allow-tokenizer-change]``: a run that starts from a trained
    run's weights (``videopoet train`` and ``videopoet submit train`` alike; ``trainer/adapt.py``)."""
    p.add_argument("--init-from", default=None, metavar="RUN_OR_DIR", help=source_help)
    p.add_argument(
        "--grow",
        action="store_true",
        help="with --init-from: this run may have more layers (model.layers) than the source; its blocks are "
        "spread over the deeper stack and the new ones start as the identity",
    )
    p.add_argument(
        "--allow-tokenizer-change",
        action="store_true",
        help="with --init-from: accept a source trained on datasets of other tokenizers (say, a finer "
        "temporal rate of the same MAGVIT-v2); refused otherwise, since its weights read other codes",
    )


def emit(args: argparse.Namespace, obj: Any, text: str | None = None) -> None:
    """Print ``obj`` as JSON under --json, else ``text`` (or a readable dump of ``obj``)."""
    if getattr(args, "json", False):
        json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
    else:
        print(text if text is not None else json.dumps(obj, indent=2, sort_keys=True, default=str))


def add_folder_corpus_flags(p: argparse.ArgumentParser) -> None:
    """``--metadata`` and its options: ``--input DIR`` is then a folder of media files (local or fsspec)."""
    g = p.add_argument_group("a folder corpus (media files + a metadata table)")
    g.add_argument(
        "--metadata",
        metavar="TABLE",
        help="CSV, TSV, JSONL or Parquet table of the files in the --input folder (a path and a caption column)",
    )
    g.add_argument("--path-column", default="path", metavar="C", help="the table's file column (default path)")
    g.add_argument("--caption-column", default="caption", metavar="C", help="the caption column (default caption)")
    g.add_argument(
        "--samples-per-shard", type=int, default=256, metavar="N", help="samples per input unit (default 256)"
    )


def input_spec(args: argparse.Namespace) -> str:
    """``--input`` as the pipelines take it: a shard glob, or (with ``--metadata``) a folder-corpus spec."""
    if not getattr(args, "metadata", None):
        return args.input
    from videopoet.pipelines.folder import FolderCorpus

    corpus = FolderCorpus(
        folder=args.input,
        table=args.metadata,
        path_column=args.path_column,
        caption_column=args.caption_column,
        samples_per_shard=args.samples_per_shard,
    )
    return corpus.to_json()
