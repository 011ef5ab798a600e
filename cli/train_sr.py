"""`videopoet train --model sr`: train the super-resolution transformer on a dataset's SR pairs.

    videopoet train --model sr --config tiny|small|paper_stage1|paper_stage2|YAML --data NAME@VERSION
                    --out RUN_DIR [--root DATASETS] [--init-from SR_RUN] [--stop-after-step N] [--json]
                    [--no-progress] [key=value ...]

The dataset must hold super-resolution pairs (built with ``videopoet pipeline run ... --sr-pairs``);
the pairs whose grids fit the model's (``model.grid`` and the low-resolution grid under it) are used,
the rest counted as skipped. ``model.lfq_bits`` follows the dataset's video tokenizer unless set.
A RUN_DIR with checkpoints resumes from its latest step (same config and pairs); batches are a
function of (seed, step), so the resumed run's parameters equal an uninterrupted run's.
``--init-from SR_RUN`` starts a new run from another super-resolution run's latest weights (the same
model, text encoder and text length; a fresh optimizer, this run's schedule, steps and loss options
such as ``correction_weight``); ``superres.json`` records the source and its step.
"""

from __future__ import annotations

import os

import yaml

from videopoet.cli.common import emit
from videopoet.schemas.errors import VideoPoetError


def _lfq_bits_from_data(args) -> list[str]:
    """``model.lfq_bits`` from the dataset's manifest, unless the command line or a YAML config sets it."""
    from videopoet.trainer import data

    explicit = {o.split("=", 1)[0].strip() for o in args.overrides if "=" in o}
    if os.path.isfile(args.config):
        with open(args.config) as f:
            doc = yaml.safe_load(f) or {}
        model = doc.get("model") if isinstance(doc, dict) else None
        explicit |= {f"model.{k}" for k in (model if isinstance(model, dict) else {})}
    ds = data.open_verified(args.data, args.root, verify=False)
    visual = data.manifest_vocabulary(ds).get("visual_size")
    if visual is None or "model.lfq_bits" in explicit:
        return []
    return [f"model.lfq_bits={int(visual).bit_length() - 1}"]


def run(args) -> int:
    from videopoet.rundir.loop import Hook
    from videopoet.trainer.superres import data as sr_data
    from videopoet.trainer.superres import train as sr_train
    from videopoet.trainer.superres.config import load_sr_config

    if args.stop_after_step is not None and args.stop_after_step < 1:
        raise VideoPoetError(f"--stop-after-step must be >= 1, got {args.stop_after_step}")
    overrides = list(args.overrides) + (["progress=false"] if args.no_progress or args.json else [])
    cfg = load_sr_config(args.config, [*_lfq_bits_from_data(args), *overrides])
    pairs = sr_data.open_dataset_pairs(args.data, cfg, args.root)

    def print_row(info) -> None:  # without a progress bar, each logged row is one line
        row = info.run.last_row
        print(f"step {info.step:6d}  loss {row['loss']:.4f}  accuracy {row['accuracy']:.3f}", flush=True)

    hooks = [Hook(print_row, every=cfg.log_every)] if not args.json and not cfg.progress else []
    if args.stop_after_step is not None:
        stop_at = args.stop_after_step
        hooks.append(Hook(lambda info: info.run.request_stop() if info.step >= stop_at else None))
    res = sr_train.train(cfg, pairs, args.out, hooks=hooks, init_from=args.init_from)
    res = {**res, "model": "sr", "config": cfg.name, "pairs": len(pairs), "data": pairs.describe()}
    last = res.get("last") or {}
    text = (
        f"{res['status']} at step {res['step']} -> {res['run_dir']}\n"
        f"  loss {last.get('loss', float('nan')):.4f}, accuracy {last.get('accuracy', float('nan')):.3f} "
        f"on {len(pairs)} pairs of {pairs.dataset['ref']}\n"
        f"  checkpoint step {res['checkpoint']}, loss curve {res['loss_curve']}"
    )
    emit(args, res, text)
    return 0 if res["status"] in ("completed", "stopped") else 143  # 128 + SIGTERM: preempted, resumable
