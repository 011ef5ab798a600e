"""`videopoet pipeline run`: pre-tokenize webdataset corpora into a versioned dataset.

    videopoet pipeline run --runner beam|ray --input GLOB|DIR --name NAME --version VER [--root DATASETS]
                           [--metadata TABLE [--path-column C] [--caption-column C] [--samples-per-shard N]]
                           [--workers N] [--config PRESET|YAML] [--sr-pairs] [--style-conditions [--depth-model M.onnx]]
                           [key=value ...] [--dry-run] [--json]
                           [--no-progress] [-- runner flags passed through]

With ``--metadata TABLE`` the input is a folder of media files (mp4, webm, mkv, ...; local or in a bucket)
and a CSV/TSV/JSONL/Parquet table with a path and a caption column, read through the same stages as
tar shards (``videopoet.pipelines.folder``; ``videopoet corpus pack`` writes the same units as tars).

``--sr-pairs`` also tokenizes every video clip at twice the bucket size (super-resolution training
pairs for ``videopoet train --model sr``). ``--style-conditions`` adds every video clip's optical
flow (and, with ``--depth-model``, its depth) rendered as 3-channel videos and tokenized into the
records' ``style_flow`` / ``style_depth`` streams, which the trainer's ``stylize`` task learns from.

Everything after ``--`` goes to the runner unchanged (Beam ``PipelineOptions``, e.g.
``-- --runner=DataflowRunner --project=P --region=R --temp_location=gs://...``).
"""

from __future__ import annotations

import argparse
import os

from videopoet.cli.common import add_folder_corpus_flags, add_json_flag, emit, input_spec
from videopoet.schemas.errors import VideoPoetError


def _runner_parser(base: type) -> type:
    """A parser that keeps everything after ``--`` apart (as ``runner_flags``), untouched."""

    class RunParser(base):
        def parse_known_args(self, args=None, namespace=None):
            args = list(args or [])
            tail: list[str] = []
            if "--" in args:
                i = args.index("--")
                args, tail = args[:i], args[i + 1 :]
            ns, rest = super().parse_known_args(args, namespace)
            ns.runner_flags = tail
            return ns, rest

    return RunParser


def _run(args: argparse.Namespace) -> int:
    from videopoet.pipelines.config import load_pipeline_config

    overrides, runner_flags = list(args.overrides or []), list(getattr(args, "runner_flags", []) or [])
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise VideoPoetError(
            f"unexpected argument {bad[0]!r}: config overrides are key=value; runner flags go after '--'"
        )
    if args.workers < 1:
        raise VideoPoetError(f"--workers must be >= 1, got {args.workers}")
    if getattr(args, "sr_pairs", False):
        overrides.append("sr_pairs=true")
    if getattr(args, "depth_model", None) and not getattr(args, "style_conditions", False):
        raise VideoPoetError("--depth-model goes with --style-conditions")
    if getattr(args, "style_conditions", False):
        import json

        kinds = ["flow", "depth"] if args.depth_model else ["flow"]
        overrides.append(f"style_conditions={json.dumps(kinds)}")
        if args.depth_model:
            overrides.append(f"depth_model={json.dumps(args.depth_model)}")
    cfg = load_pipeline_config(args.config, overrides)
    root = args.root or os.environ.get("VIDEOPOET_ROOT") or "./datasets"
    if args.runner == "ray":
        return _run_ray(args, cfg, root, runner_flags)
    from videopoet.pipelines.beam import run_beam

    summary = run_beam(
        input_spec(args),
        args.name,
        args.version,
        root,
        cfg,
        workers=args.workers,
        runner_args=runner_flags,
        dry_run=args.dry_run,
        progress=False if args.no_progress else None,
    )
    if args.dry_run:
        import json

        text = (
            "dry run: would submit the Beam job with\n  "
            + " ".join(summary["flags"])
            + f"\n  options: {json.dumps(summary['options'], sort_keys=True, default=str)}"
            f"\n  {summary['inputs']} input shard(s) -> {summary['dataset']} under {summary['root']}"
        )
        emit(args, summary, text)
        return 0
    from videopoet.pipelines.driver import format_summary

    emit(args, summary, format_summary(summary))
    return 0


def _run_ray(args: argparse.Namespace, cfg, root: str, runner_flags: list[str]) -> int:
    if runner_flags:
        raise VideoPoetError(
            "flags after '--' are Beam runner flags; for Ray use --address, --actors, --actor-cpus and --actor-gpus"
        )
    for flag in ("actors", "actor_cpus", "actor_gpus"):
        v = getattr(args, flag)
        if v is not None and v < 0:
            raise VideoPoetError(f"--{flag.replace('_', '-')} must be >= 0, got {v}")
    from videopoet.pipelines.driver import format_summary
    from videopoet.pipelines.ray import run_ray

    summary = run_ray(
        input_spec(args),
        args.name,
        args.version,
        root,
        cfg,
        workers=args.workers,
        address=args.address,
        concurrency=args.actors or None,
        num_cpus_per_actor=args.actor_cpus or 1.0,
        num_gpus_per_actor=args.actor_gpus or 0.0,
        dry_run=args.dry_run,
        progress=False if args.no_progress else None,
    )
    if args.dry_run:
        text = "dry run: would run the Ray job with\n  " + "\n  ".join(f"{k}: {v}" for k, v in summary.items())
        emit(args, summary, text)
        return 0
    emit(args, summary, format_summary(summary))
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "pipeline",
        help="pre-tokenize corpora into versioned datasets",
        description="Pre-tokenize webdataset corpora into versioned ArrayRecord datasets.",
    )
    psub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_runner_parser(type(p)))
    psub.required = True
    r = psub.add_parser(
        "run",
        help="run the pre-tokenization job (Beam or Ray)",
        description="Tokenize webdataset shards (video/image + audio + caption) into NAME@VERSION under the "
        "datasets root: ArrayRecord shards of TokenRecords, rejects with reason codes, manifest.json last. "
        "Resumes an interrupted build of the same NAME@VERSION; a published one is never changed. "
        "Flags after '--' go to the runner unchanged (e.g. -- --runner=DataflowRunner --project=P).",
    )
    r.add_argument("--runner", choices=("beam", "ray"), default="beam", help="beam (default) | ray")
    r.add_argument(
        "--input",
        required=True,
        metavar="GLOB|DIR",
        help="input shards (glob, directory or fsspec URI), or with --metadata a folder of media files",
    )
    r.add_argument("--name", required=True, help="dataset name")
    r.add_argument("--version", required=True, help="dataset version (immutable once published)")
    r.add_argument(
        "--root",
        default=None,
        metavar="DATASETS",
        help="datasets root (default $VIDEOPOET_ROOT, else ./datasets); local or fsspec URI",
    )
    r.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="local worker processes (Beam DirectRunner multi_processing when N > 1)",
    )
    r.add_argument(
        "--config", default="small", metavar="PRESET|YAML", help="tiny | small | paper | YAML (default small)"
    )
    r.add_argument(
        "--address",
        default=None,
        metavar="HOST:PORT",
        help="ray: join this running cluster (default $RAY_ADDRESS, else a local Ray on 127.0.0.1)",
    )
    r.add_argument(
        "--actors",
        type=int,
        default=None,
        metavar="N",
        help="ray: tokenizer actors (each loads the tokenizers once; default --workers)",
    )
    r.add_argument(
        "--actor-cpus", type=float, default=None, metavar="C", help="ray: CPUs per tokenizer actor (default 1)"
    )
    r.add_argument(
        "--actor-gpus", type=float, default=None, metavar="G", help="ray: GPUs per tokenizer actor (default 0)"
    )
    r.add_argument(
        "--sr-pairs",
        action="store_true",
        help="also tokenize every video clip at twice the bucket size: super-resolution training pairs "
        "(the config's sr_pairs=true; sources below 2x the bucket are rejects)",
    )
    r.add_argument(
        "--style-conditions",
        action="store_true",
        help="also tokenize every video clip's optical flow (OpenCV) rendered as a video: the stylize task's "
        "style_flow stream (the config's style_conditions=[flow]); with --depth-model also its depth (style_depth)",
    )
    r.add_argument(
        "--depth-model",
        default=None,
        metavar="M.onnx",
        help="an ONNX depth network (input [N,3,H,W] RGB in [0,1], output [N,1,H,W] or [N,H,W]) for the "
        "style_depth stream; checked when it loads",
    )
    add_folder_corpus_flags(r)
    r.add_argument("--dry-run", action="store_true", help="print the runner options it would submit and exit")
    r.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    r.add_argument("overrides", nargs="*", metavar="key=value", help="pipeline config overrides, e.g. clip_frames=41")
    add_json_flag(r)
    r.set_defaults(func=_run)
