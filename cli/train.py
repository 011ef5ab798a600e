"""`videopoet train`: train the VideoPoet prefix LM on a pre-tokenized dataset.

    videopoet train --config PRESET|YAML --data NAME@VERSION|PATH [--root DATASETS] --out RUN_DIR
                    [--json] [--no-progress] [key=value ...]

Presets: tiny, small (the quickstart), 300m, 1b, 8b. Overrides use dotted keys, e.g.
``steps=200 batch_size=8 model.layers=4 data.mixture.t2v=2``. A RUN_DIR with checkpoints resumes
from its latest step (same config and dataset required). SIGTERM saves a checkpoint and exits.
``--root`` defaults to ``$VIDEOPOET_ROOT``, else ``./datasets``.

Multi-process (one process per host): set ``VIDEOPOET_COORDINATOR=host:port``,
``VIDEOPOET_NUM_PROCESSES`` and ``VIDEOPOET_PROCESS_ID`` (or ``VIDEOPOET_DISTRIBUTED=auto`` on Slurm /
TPU pods); every process runs the same command and reads only its rows of each global batch.
"""

from __future__ import annotations

import argparse

from videopoet.cli.common import add_json_flag, emit


def register(sub) -> None:
    p = sub.add_parser("train", help="train the VideoPoet model", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="small", help="preset (tiny|small|300m|1b|8b) or YAML file (default small)")
    p.add_argument("--data", required=True, metavar="NAME@VERSION", help="dataset to train on (or a version dir)")
    p.add_argument("--root", default=None, help="datasets root (default $VIDEOPOET_ROOT, else ./datasets)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory (resumed if it has checkpoints)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json_flag(p)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from videopoet.trainer.config import load_train_config
    from videopoet.trainer.sharding import initialize_distributed
    from videopoet.trainer.train import Hooks, train

    initialize_distributed()  # multi-process runs: VIDEOPOET_COORDINATOR / _NUM_PROCESSES / _PROCESS_ID

    overrides = list(args.overrides) + (["progress=false"] if args.no_progress or args.json else [])
    cfg = load_train_config(args.config, overrides)

    def on_log(step: int, row: dict) -> None:
        if args.json or not (args.no_progress or not cfg.progress):
            return
        print(f"step {step:6d}  loss {row['loss']:.4f}  tok/s {row['tokens_per_s']:.0f}  "
              f"data {row['data_wait_s'] * 1e3:.0f} ms  compute {row['compute_s'] * 1e3:.0f} ms", flush=True)

    res = train(cfg, args.data, args.out, root=args.root, hooks=Hooks(on_log=on_log))
    last = res.get("last") or {}
    text = (f"{res['status']} at step {res['step']} -> {res['run_dir']}\n"
            f"  loss {last.get('loss', float('nan')):.4f} (unigram baseline {res['unigram_baseline']:.4f})\n"
            f"  checkpoint step {res['checkpoint']}, loss curve {res['loss_curve']}")
    emit(args, {k: v for k, v in res.items()}, text)
    return 0 if res["status"] in ("completed", "stopped") else 143  # 128 + SIGTERM: preempted, resumable
