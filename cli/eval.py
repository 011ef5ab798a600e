"""`videopoet eval`: generate and score automatically on the synthetic world.

    videopoet eval --run RUN_DIR [--scenes N] [--samples K] [--tasks t2v,i2v,fp,v2a,long,stylize] [--out DIR] [--json]

Single-object scenes of seen colour x shape combinations and of the held-out (zero-shot) ones are
rendered at the run's clip geometry; the model generates text-to-video from their captions,
image-to-video from their first frame, frame prediction from their first latent frames and
video-to-audio from their video. The attribute scorer (``videopoet.pipelines.synth.score``) grades
colour / shape / motion, motion consistency and the audio cue (pitch by colour, clicks on bounces).
Prints a seen vs held-out table (``--json``: everything) and writes ``RUN_DIR/eval/gallery.html``
with every prompt beside its clip. The ``ref:`` rows score the ground-truth clips and their
tokenizer reconstructions: the ceiling a perfect model could reach.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

from videopoet.cli.common import add_json_flag, add_sampling_flags, emit, sampling_options


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="score generated samples on the synthetic world",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--run", required=True, metavar="RUN_DIR", help="training run directory, model directory, or default (shipped)"
    )
    p.add_argument("--scenes", type=int, default=4, help="scenes per split (seen, held-out); default 4")
    p.add_argument("--samples", type=int, default=1, help="samples per scene and task; default 1")
    p.add_argument(
        "--tasks",
        default="t2v,i2v,fp,v2a",
        help="comma-separated subset of t2v,i2v,fp,v2a,long,stylize (long: the scene's clip continued to "
        "--long-seconds; stylize: the scene's motion with a caption naming another colour)",
    )
    p.add_argument("--long-seconds", type=float, default=10.0, help="length of the long-video row's clips (s)")
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="clips + gallery.html (default RUN_DIR/eval; ./eval-NAME for a model directory)",
    )
    p.add_argument("--seed", type=int, default=1234)
    add_sampling_flags(p)
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
    p.add_argument("--video-tokenizer", default=None, metavar="PRESET|DIR")
    p.add_argument("--audio-tokenizer", default=None, metavar="PRESET|DIR")
    add_json_flag(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    import fsspec

    from videopoet.schemas import objstore
    from videopoet.trainer import evaluate, generation

    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    bad = [t for t in tasks if t not in evaluate.EVAL_TASKS]
    if bad or not tasks:
        raise generation.GenerationError(
            f"--tasks: unknown task {bad[0] if bad else '(none)'!r} (choose from {','.join(evaluate.EVAL_TASKS)})"
        )
    if "long" in tasks and not 0 < args.long_seconds <= 600:
        raise generation.GenerationError(f"--long-seconds must lie in (0, 600], got {args.long_seconds}")
    if not 1 <= args.scenes <= 1000 or not 1 <= args.samples <= 100:
        raise generation.GenerationError("--scenes must lie in [1, 1000] and --samples in [1, 100]")
    options = sampling_options(args)
    gen = generation.load_generator(
        args.run,
        step=args.step,
        video_tokenizer=args.video_tokenizer,
        audio_tokenizer=args.audio_tokenizer,
        options=options,
    )
    from videopoet.trainer import export

    # a model directory (the shipped one above all) is read-only: its evaluation goes to ./eval-NAME
    model_dir = export.is_model_dir(export.resolve(args.run))
    name = os.path.basename(os.path.normpath(args.run))
    out_dir = args.out or (f"eval-{name}" if model_dir else f"{args.run.rstrip('/')}/eval")
    say = None if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    remote = objstore.is_remote(out_dir)
    work_dir = tempfile.mkdtemp(prefix="videopoet-eval-") if remote else out_dir  # clips are written locally
    try:
        report = evaluate.evaluate_model(
            gen,
            work_dir,
            per_split=args.scenes,
            samples=args.samples,
            seed=args.seed,
            options=options,
            tasks=tasks,
            progress=say,
            long_seconds=args.long_seconds,
        )
        if remote:  # then uploaded beside the run
            fs, root = fsspec.core.url_to_fs(out_dir)
            fs.put(f"{work_dir}/", f"{root.rstrip('/')}/", recursive=True)
            report["gallery"] = f"{out_dir.rstrip('/')}/{os.path.relpath(report['gallery'], work_dir)}"
    finally:
        if remote:
            shutil.rmtree(work_dir, ignore_errors=True)
    report["run"] = args.run
    report["step"] = gen.info.get("step")
    report["settings"] = {
        "scenes": args.scenes,
        "samples": args.samples,
        "seed": args.seed,
        "temperature": options.temperature,
        "top_k": options.top_k,
        "top_p": options.top_p,
        "guidance": options.guidance,
    }
    text = f"{evaluate.table(report)}\n\ngallery: {report['gallery']}"
    emit(args, report, text)
    return 0
