"""`videopoet submit`: run training or pre-tokenization on a cluster through one launch contract.

    videopoet submit train --target T --run-dir RUN_DIR --config PRESET|YAML --data NAME@VERSION
                           [--name NAME] [--root DATASETS] [--nodes N] [--processes-per-node P]
                           [--gpus-per-node G] [--slices S] [--accelerator A] [--image IMAGE]
                           [--queue Q] [--max-restarts M] [--signal-grace SECONDS] [--time LIMIT]
                           [--env KEY=VALUE ...] [--extra-arg FLAG ...] [--no-verify-data]
                           [--dry-run] [--topology [SLICE]] [--artifacts-dir DIR]
                           [--init-from RUN_OR_DIR [--grow] [--allow-tokenizer-change]] [--json] [key=value ...]
    videopoet submit pipeline --target T --run-dir DIR --input GLOB --data NAME@VERSION
                           [--runner beam|ray] [--workers N] ... [-- runner flags]
    videopoet submit status|logs|cancel JOB --target slurm

Every host runs the ordinary ``videopoet train ... --out RUN_DIR`` (or ``videopoet pipeline run``);
the target only starts it (see ``videopoet.infra.launch`` for how each host finds the others). A
requeued or restarted run lands in the same RUN_DIR and resumes from its latest checkpoint.
``--dry-run`` checks the request and writes the target's artifacts (sbatch script, manifest,
commands) to ``--artifacts-dir`` (default RUN_DIR/submit) without submitting. ``--extra-arg`` passes
a flag unchanged to the submitting tool (e.g. ``--extra-arg=--account=proj`` for sbatch).
``--topology [SLICE]`` (training) first compiles the train step ahead of time for that TPU slice
(default: the ``--accelerator`` slice; see ``videopoet train --dry-run``) and refuses, in one line, a
step that does not fit the chips' HBM; the report goes into the result's ``detail.aot``.
``--init-from RUN_OR_DIR`` submits a task adaptation (``videopoet train --init-from``): the source is
checked here first as the hosts will check it (a run with a checkpoint, the same architecture and
tokenizers), unless the run dir already has a checkpoint (a resubmission resumes and ignores it).
"""

from __future__ import annotations

import argparse
import os
import re

from videopoet.cli.common import add_init_from_flags, add_json_flag, emit
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


def register(sub) -> None:
    from videopoet.infra.targets import TARGETS

    p = sub.add_parser(
        "submit",
        help="submit training or pre-tokenization to a cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    jobs = p.add_subparsers(
        dest="submit_command", metavar="train|pipeline|status|logs|cancel", parser_class=_runner_parser(type(p))
    )
    jobs.required = True
    targets = ", ".join(TARGETS)
    for kind in ("train", "pipeline"):
        q = jobs.add_parser(
            kind,
            help=f"submit a {'training' if kind == 'train' else 'pre-tokenization'} run",
            description=__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        q.add_argument("--target", required=True, help=f"where to run ({targets})")
        q.add_argument("--run-dir", required=True, help="the run directory every host writes to")
        q.add_argument("--name", default=None, help="run / job name (default: from the run dir)")
        q.add_argument("--config", default="small", help="preset or YAML (default small)")
        q.add_argument(
            "--data",
            required=True,
            metavar="NAME@VERSION",
            help="dataset to train on" if kind == "train" else "dataset to write",
        )
        q.add_argument("--root", default=None, help="datasets root as the hosts see it (default $VIDEOPOET_ROOT)")
        if kind == "pipeline":
            q.add_argument("--input", required=True, metavar="GLOB", help="input webdataset shards")
            q.add_argument("--runner", default="beam", choices=("beam", "ray"))
            q.add_argument("--workers", type=int, default=1)
        q.add_argument("--nodes", type=int, default=1, help="hosts (per slice on TPU)")
        q.add_argument("--processes-per-node", type=int, default=1)
        q.add_argument("--gpus-per-node", type=int, default=0)
        q.add_argument("--slices", type=int, default=1, help="TPU slices (multi-slice)")
        q.add_argument("--accelerator", default=None, help="accelerator type, e.g. v5p-128 or h100-80gb")
        q.add_argument("--image", default=None, help="container image (containerised targets)")
        q.add_argument("--queue", default=None, help="Slurm partition / Kueue queue")
        q.add_argument("--max-restarts", type=int, default=3)
        q.add_argument(
            "--signal-grace",
            type=int,
            default=120,
            metavar="SECONDS",
            help="SIGTERM this long before the scheduler kills a task (time to checkpoint)",
        )
        q.add_argument("--time", default=None, metavar="LIMIT", help="wall-clock limit (Slurm --time)")
        q.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment for every host")
        q.add_argument(
            "--extra-arg", action="append", default=[], metavar="FLAG", help="passed unchanged to the submitting tool"
        )
        q.add_argument("--program", default="videopoet", help="how hosts run the CLI (default 'videopoet')")
        q.add_argument(
            "--no-verify-data",
            action="store_true",
            help="do not verify the dataset here (only the cluster can read it)",
        )
        q.add_argument("--dry-run", action="store_true", help="check and write the artifacts, submit nothing")
        if kind == "train":
            q.add_argument(
                "--topology",
                nargs="?",
                const="accelerator",
                default=None,
                metavar="SLICE",
                help="compile the train step ahead of time for this TPU slice first (default: --accelerator's) "
                "and refuse a step that does not fit its HBM (needs libtpu)",
            )
        if kind == "train":
            add_init_from_flags(
                q,
                "start from a trained run's weights with a fresh optimizer (task adaptation, as 'videopoet "
                "train --init-from'); the path as the hosts see it",
            )
        q.add_argument("--artifacts-dir", default=None, help="where --dry-run writes (default RUN_DIR/submit)")
        add_json_flag(q)
        q.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
        q.set_defaults(func=_submit, kind=kind)
    for action, help_ in (("status", "a job's state"), ("logs", "a job's output"), ("cancel", "cancel a job")):
        q = jobs.add_parser(action, help=help_, description=help_)
        q.add_argument("job", help="job id")
        q.add_argument("--target", required=True, help=f"the job's target ({targets})")
        if action == "logs":
            q.add_argument("--tail", type=int, default=0, help="last N lines only (0 = all)")
            q.add_argument("--errors", action="store_true", help="the error stream instead of the output")
        add_json_flag(q)
        q.set_defaults(func=_job, action=action)


def _default_name(run_dir: str) -> str:
    base = os.path.basename(os.path.normpath(run_dir.split("://", 1)[-1])).lower()
    name = re.sub(r"[^a-z0-9-]+", "-", base).strip("-")[:40].strip("-")
    return name or "run"


def _pairs(items: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise VideoPoetError(f"--env {item!r} is not KEY=VALUE")
        out.append((key, value))
    return tuple(out)


def _host_path(path: str | None) -> str | None:
    """A local path made absolute (hosts start in other directories); URIs as given."""
    return path if path is None or "://" in path else os.path.abspath(path)


def request_from_args(args: argparse.Namespace):
    """The :class:`~videopoet.infra.request.SubmitRequest` a ``submit train|pipeline`` command line asks for."""
    import shlex

    from videopoet.infra.request import SubmitRequest

    run_dir = _host_path(args.run_dir)
    return SubmitRequest(
        kind=args.kind,
        target=args.target,
        name=args.name or _default_name(args.run_dir),
        run_dir=run_dir,
        config=args.config,
        overrides=tuple(args.overrides),
        data=args.data,
        root=args.root or os.environ.get("VIDEOPOET_ROOT"),
        input=getattr(args, "input", None),
        runner=getattr(args, "runner", "beam"),
        workers=getattr(args, "workers", 1),
        runner_args=tuple(getattr(args, "runner_flags", ()) or ()),
        image=args.image,
        accelerator=args.accelerator,
        nodes=args.nodes,
        processes_per_node=args.processes_per_node,
        gpus_per_node=args.gpus_per_node,
        slices=args.slices,
        queue=args.queue,
        max_restarts=args.max_restarts,
        signal_grace_s=args.signal_grace,
        time_limit=args.time,
        env=_pairs(args.env),
        extra_args=tuple(args.extra_arg),
        program=tuple(shlex.split(args.program)),
        verify_data=not args.no_verify_data,
        dry_run=args.dry_run,
        topology=getattr(args, "topology", None),
        init_from=_host_path(getattr(args, "init_from", None)),
        grow=getattr(args, "grow", False),
        allow_tokenizer_change=getattr(args, "allow_tokenizer_change", False),
    )


def _submit(args: argparse.Namespace) -> int:
    from videopoet.infra import targets

    if args.kind == "train" and getattr(args, "runner_flags", None):
        raise VideoPoetError("flags after '--' are pipeline runner flags; a training run takes key=value overrides")
    request = request_from_args(args)
    if request.dry_run:
        res = targets.dry_run(request, args.artifacts_dir)
        text = "dry run: nothing submitted; wrote\n" + "\n".join(f"  {p}" for p in res.artifacts)
        text += "\nevery host runs:\n  " + " ".join(res.command)
        aot = res.detail.get("aot")
        if aot:
            gib = aot["gib_per_chip"]
            text += (
                f"\nahead-of-time compile for {aot['topology']}: {gib['total']:.1f} of {gib['hbm']:.0f} GiB per chip, "
                f"fits; {aot['flops_per_step'] / 1e12:,.0f} TFLOP per step"
            )
    else:
        res = targets.submit(request)
        text = f"{request.target}: {res.status or 'submitted'}"
        text += f" job {res.job_id}" if res.job_id else ""
        text += f" -> {res.run_dir}"
    emit(args, res.to_dict(), text)
    return 0 if res.status not in ("failed", "preempted") else 1


def _job(args: argparse.Namespace) -> int:
    from videopoet.infra import targets

    fn = targets.job_command(args.target, args.action)
    if args.action == "status":
        info = fn(args.job)
        emit(
            args, info, f"job {args.job}: {info.get('state')}" + (f" ({info['reason']})" if info.get("reason") else "")
        )
    elif args.action == "logs":
        text = fn(args.job, tail=args.tail, errors=args.errors)
        emit(args, {"job": args.job, "log": text}, text.rstrip("\n"))
    else:
        fn(args.job)
        emit(args, {"job": args.job, "cancelled": True}, f"job {args.job}: cancel requested")
    return 0
