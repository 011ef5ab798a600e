"""`videopoet train`: train the VideoPoet prefix LM on a pre-tokenized dataset.

    videopoet train --config PRESET|YAML --data NAME@VERSION|PATH [--root DATASETS] --out RUN_DIR
                    [--init-from RUN_OR_DIR [--grow] [--allow-tokenizer-change]] [--json] [--no-progress]
                    [key=value ...]
    videopoet train --dry-run --topology SLICE --config PRESET|YAML [--data NAME@VERSION] [--seq-len N]
                    [--json] [key=value ...]

``--model sr`` trains the super-resolution transformer instead (presets tiny, small, paper_stage1,
paper_stage2, on a dataset built with ``--sr-pairs``; see ``videopoet.cli.train_sr``).

Presets: tiny, small (the quickstart), 300m, 1b, 8b. Overrides use dotted keys, e.g.
``steps=200 batch_size=8 model.layers=4 data.mixture.t2v=2``. A RUN_DIR with checkpoints resumes
from its latest step (same config and dataset required). SIGTERM saves a checkpoint and exits.
``--root`` defaults to ``$VIDEOPOET_ROOT``, else ``./datasets``. ``--data a@1=0.7,b@prod=0.3`` trains on a
weighted mixture of datasets (each global batch from one of them, in proportion; a resume may change
the weights, not the datasets).

Multi-process (one process per host): every process runs the same command; where it runs comes from
the scheduler's environment (Slurm, a GKE JobSet, Cloud TPU VMs, or ``VIDEOPOET_COORDINATOR`` /
``VIDEOPOET_NUM_PROCESSES`` / ``VIDEOPOET_PROCESS_ID`` from our own launchers; see
``videopoet.infra.launch``), and each process reads only its rows of each global batch.
``--dry-run --topology SLICE`` trains nothing: it compiles the real train step for a TPU slice
(``v5p-128``, ``v5e-16``, ``v6e-8x8`` or libtpu's ``v5e:4x4``) on this machine, with the run's mesh and
logical-axis rules, and reports what each chip needs (arguments, outputs, temporaries, generated code)
against its HBM, whether it fits, and the compiler's FLOPs per step; it exits 1 when the step does not
fit. It needs libtpu (``pip install 'videopoet[tpu]'``), no TPU and no dataset (with ``--data`` it uses
the dataset's vocabulary and clip geometry, as training would).
``--init-from RUN_OR_DIR`` starts a new run from a trained run's weights with a fresh optimizer and
its own task mixture, schedule and steps (VideoPoet's task adaptation after pretraining; the model
architecture must be the same, or deeper with ``--grow``: the source's blocks spread over the new
``model.layers``, the others starting as the identity; the source's datasets must have the same
tokenizers as this run's unless ``--allow-tokenizer-change``). ``videopoet submit`` starts such runs.
``--stop-after-step N`` checkpoints and stops after step N (resumable, e.g. to move the run to other machines).
"""

from __future__ import annotations

import argparse

from videopoet.cli.common import add_init_from_flags, add_json_flag, emit
from videopoet.schemas.errors import VideoPoetError


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train the VideoPoet model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        choices=("lm", "sr"),
        default="lm",
        help="lm: the prefix LM (default); sr: the super-resolution transformer (its own presets)",
    )
    p.add_argument(
        "--config",
        default="small",
        help="preset (lm: tiny|small|300m|1b|8b; sr: tiny|small|paper_stage1|paper_stage2) or YAML (default small)",
    )
    p.add_argument(
        "--data",
        default=None,
        metavar="NAME@VERSION",
        help="dataset to train on (or a version dir), or a weighted mixture NAME@VER=WEIGHT,NAME@VER=WEIGHT,...",
    )
    p.add_argument("--root", default=None, help="datasets root (default $VIDEOPOET_ROOT, else ./datasets)")
    p.add_argument("--out", default=None, metavar="RUN_DIR", help="run directory (resumed if it has checkpoints)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--stop-after-step",
        type=int,
        default=None,
        metavar="N",
        help="checkpoint and stop after step N (resume later with the same command)",
    )
    add_init_from_flags(
        p,
        "start a new run from a trained run's weights (its latest step, or RUN/checkpoints/STEP) with a "
        "fresh optimizer and this run's own mixture, schedule and steps (task adaptation); same architecture "
        "(with --model sr: another super-resolution run, its latest step)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="train nothing: compile the step for --topology ahead of time and report its memory per chip",
    )
    p.add_argument("--topology", default=None, metavar="SLICE", help="TPU slice for --dry-run (v5p-128, v5e:4x4)")
    p.add_argument(
        "--seq-len",
        type=int,
        default=None,
        metavar="N",
        help="--dry-run: the batch's sequence length (default: the longest of the run's task layouts)",
    )
    p.add_argument(
        "--compile-effort",
        type=float,
        default=None,
        metavar="E",
        help="--dry-run: XLA's optimization effort in [-1, 1] (default: XLA's own; -1 compiles several times "
        "faster, memory figures within a few percent)",
    )
    add_json_flag(p)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=_run)


def _vocabulary_from_data(args) -> list[str]:
    """The dataset's vocabulary as ``model.*`` overrides placed before the user's own (see
    :func:`videopoet.trainer.data.vocabulary_overrides`)."""
    from videopoet.trainer import data

    datasets = [ds for ds, _ in data.open_datasets(args.data, args.root, verify=False)]
    return data.vocabulary_overrides(datasets, args.config, args.overrides)


def _dry_run(args) -> int:
    """``--dry-run --topology``: the ahead-of-time compile report; exit 1 when the step does not fit."""
    from videopoet.trainer import aot
    from videopoet.trainer.config import load_train_config

    if not args.topology:
        raise VideoPoetError("--dry-run compiles for a TPU slice: give --topology SLICE (e.g. v5p-128, v5e:4x4)")
    manifest = None
    vocab: list[str] = []
    if args.data:
        from videopoet.trainer import data

        vocab = _vocabulary_from_data(args)
        manifest = data.open_datasets(args.data, args.root, verify=False)[0][0].manifest  # mixtures agree
    cfg = load_train_config(args.config, [*vocab, *args.overrides])
    report = aot.compile_report(cfg, args.topology, seq_len=args.seq_len, manifest=manifest, effort=args.compile_effort)
    text = report.text()
    if not report.fits:
        text += (
            f"\ndoes not fit: {report.total_bytes / aot.GIB:.1f} GiB per chip needed, "
            f"{report.hbm_bytes / aot.GIB:.0f} GiB HBM"
        )
    emit(args, report.to_dict(), text)
    return 0 if report.fits else 1


def _run(args) -> int:
    if args.dry_run:
        if args.model != "lm":
            raise VideoPoetError("--dry-run (the ahead-of-time compile) is for the prefix LM (--model lm)")
        return _dry_run(args)
    if args.topology or args.seq_len is not None or args.compile_effort is not None:
        raise VideoPoetError("--topology, --seq-len and --compile-effort are for --dry-run (the ahead-of-time compile)")
    missing = [flag for flag, value in (("--data", args.data), ("--out", args.out)) if not value]
    if missing:
        raise VideoPoetError(f"the following arguments are required: {', '.join(missing)}")
    if args.grow and (not args.init_from or args.model != "lm"):
        raise VideoPoetError("--grow deepens the prefix LM of --init-from RUN: give --init-from (and --model lm)")
    if args.allow_tokenizer_change and (not args.init_from or args.model != "lm"):
        raise VideoPoetError("--allow-tokenizer-change is for the prefix LM's --init-from RUN: give --init-from")
    if args.model == "sr":
        from videopoet.cli import train_sr
        from videopoet.trainer import data

        if data.is_mixture_spec(args.data):
            raise VideoPoetError("--model sr trains on one dataset; a mixture of datasets is for the prefix LM")

        return train_sr.run(args)
    from videopoet.infra import launch
    from videopoet.rundir.loop import Hook
    from videopoet.trainer.config import load_train_config
    from videopoet.trainer.train import train

    if args.stop_after_step is not None and args.stop_after_step < 1:
        raise VideoPoetError(f"--stop-after-step must be >= 1, got {args.stop_after_step}")
    spec = launch.detect()
    launch.initialize(spec)  # before anything touches the devices

    overrides = list(args.overrides) + (["progress=false"] if args.no_progress or args.json else [])
    cfg = load_train_config(args.config, [*_vocabulary_from_data(args), *overrides])

    def print_row(info) -> None:  # without a progress bar, each logged row is one line
        row = info.run.last_row
        print(
            f"step {info.step:6d}  loss {row['loss']:.4f}  tok/s {row['tokens_per_s']:.0f}  "
            f"data {row['data_wait_s'] * 1e3:.0f} ms  compute {row['compute_s'] * 1e3:.0f} ms",
            flush=True,
        )
        held = row.get("heldout")
        if held:
            per = " ".join(f"{t} {v['loss']:.3f}" for t, v in held["tasks"].items())
            print(
                f"heldout {info.step:6d}  loss {held['loss']:.4f}  top1 {held['accuracy']:.3f} | {per}  "
                f"({held['seconds']:.0f} s)",
                flush=True,
            )
        ev = row.get("eval")
        if ev:
            parts = [
                f"{task} {split} " + " ".join(f"{k} {v:.2f}" for k, v in agg.items())
                for task, splits in ev.items()
                if isinstance(splits, dict)
                for split, agg in splits.items()
            ]
            print(f"eval {info.step:6d}  " + " | ".join(parts) + f"  ({ev.get('seconds', 0):.0f} s)", flush=True)

    hooks = [Hook(print_row, every=cfg.log_every)] if not args.json and not cfg.progress else []
    if args.stop_after_step is not None:
        stop_at = args.stop_after_step
        hooks.append(Hook(lambda info: info.run.request_stop() if info.step >= stop_at else None))
    identity = launch.run_identity(spec, args.out)
    res = train(
        cfg,
        args.data,
        args.out,
        root=args.root,
        hooks=hooks,
        identity=identity,
        init_from=args.init_from,
        grow=args.grow,
        allow_tokenizer_change=args.allow_tokenizer_change,
    )
    last = res.get("last") or {}
    loss = f"loss {last['loss']:.4f}" if "loss" in last else "no step logged in this session"
    text = (
        f"{res['status']} at step {res['step']} -> {res['run_dir']}\n"
        f"  {loss} (unigram baseline {res['unigram_baseline']:.4f})\n"
        f"  checkpoint step {res['checkpoint']}, loss curve {res['loss_curve']}"
    )
    emit(args, {k: v for k, v in res.items()}, text)
    return 0 if res["status"] in ("completed", "stopped") else 143  # 128 + SIGTERM: preempted, resumable
