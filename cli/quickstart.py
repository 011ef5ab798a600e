"""`videopoet quickstart`: the whole path on the embedded defaults, in one command.

    videopoet quickstart [--out DIR] [--clips N] [--steps N] [--workers N] [--json]

Runs the same commands a user would, in process and with their own argument parsing (so the
quickstart cannot drift from the CLI), each with its own progress display:

    1. corpus synth      the synthetic audio-video world (with a few corrupt samples, to show rejects)
    2. pipeline run      the Beam pre-tokenization job with the shipped tokenizers
    3. data verify/info  re-hash the committed dataset and show its counts
    4. train             the `small` VideoPoet model on it
    5. generate          a few clips for several tasks
    6. eval              automatic scoring on the synthetic world + an HTML gallery
    7. the shipped model (``--run default``, the long run's adapted checkpoint): the same text-to-video prompt
       and its own evaluation, so the quickstart's short run can be read beside a long one; both
       tables are printed and ``DIR/gallery.html`` shows each prompt with both models' clips

A step whose command has not been built yet is reported as skipped (with its issue) and the steps
that need its output are skipped too; everything else still runs. Re-running with the same
``--out`` reuses what is already there (the corpus is byte-identical, a committed dataset version
is a no-op, training resumes from its last checkpoint).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import Any

from videopoet.cli.common import add_json_flag
from videopoet.schemas.errors import VideoPoetError

GENERATE_TASKS = (
    ("t2v", ["--prompt", "a small red circle moves to the left on a blue background"], "t2v.mp4"),
    ("t2i", ["--prompt", "a large green square on a gray background"], "t2i.png"),
    ("i2v", ["--input", "{image}"], "i2v.mp4"),
    ("v2a", ["--input", "{video}"], "v2a.wav"),
    ("uncond", [], "uncond.mp4"),
)


def _run(argv: list[str]) -> int:
    from videopoet.cli.main import build_parser

    parser = build_parser(argv)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


class _Steps:
    def __init__(self, quiet_json: bool):
        self.results: list[dict[str, Any]] = []
        self.json = quiet_json
        self.failed_or_skipped: set[str] = set()

    def run(self, name: str, argv: list[str], needs: tuple[str, ...] = ()) -> bool:
        missing = [n for n in needs if n in self.failed_or_skipped]
        if missing:
            self._record(name, "skipped", 0.0, f"needs {', '.join(missing)}")
            return False
        self._say(f"\n== {name}: videopoet {' '.join(argv)}")
        t0 = time.time()
        try:
            if self.json:  # keep stdout for the final JSON: the commands' own output goes to stderr
                with contextlib.redirect_stdout(sys.stderr):
                    rc = _run(argv)
            else:
                rc = _run(argv)
        except VideoPoetError as e:
            self._record(name, "failed", time.time() - t0, str(e))
            return False
        except SystemExit as e:  # argparse refused the arguments
            self._record(name, "failed", time.time() - t0, f"the command's arguments were refused (exit {e.code})")
            return False
        status = "ok" if rc == 0 else "failed"
        self._record(name, status, time.time() - t0, "" if rc == 0 else f"exit code {rc}")
        return rc == 0

    def _record(self, name: str, status: str, seconds: float, note: str) -> None:
        if status != "ok":
            self.failed_or_skipped.add(name)
        self.results.append({"step": name, "status": status, "seconds": round(seconds, 1), "note": note})
        self._say(f"-- {name}: {status} ({seconds:.1f}s){': ' + note if note else ''}")

    def _say(self, msg: str) -> None:
        print(msg, file=sys.stderr if self.json else sys.stdout, flush=True)


def quickstart(args: argparse.Namespace) -> int:
    out = os.path.abspath(args.out)
    corpus = os.path.join(out, "corpus")
    root = os.path.join(out, "datasets")
    run_dir = os.path.join(out, "run")
    clips_dir = os.path.join(out, "clips")
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    s = _Steps(args.json)
    s.run(
        "corpus",
        [
            "corpus",
            "synth",
            "--out",
            corpus,
            "--clips",
            str(args.clips),
            "--images",
            str(args.clips // 4),
            "--shards",
            "2",
            "--with-corrupt",
            "--seed",
            "0",
            "--config",
            args.preset,
        ],
    )
    s.run(
        "pipeline",
        [
            "pipeline",
            "run",
            "--runner",
            "beam",
            "--input",
            os.path.join(corpus, "train-*.tar"),
            "--name",
            "synth",
            "--version",
            "v1",
            "--root",
            root,
            "--workers",
            str(args.workers),
            "--config",
            args.preset,
        ],
        needs=("corpus",),
    )
    s.run("verify", ["data", "verify", "synth@v1", "--root", root], needs=("pipeline",))
    s.run("info", ["data", "info", "synth@v1", "--root", root], needs=("pipeline",))
    s.run(
        "train",
        [
            "train",
            "--config",
            args.preset,
            "--data",
            "synth@v1",
            "--root",
            root,
            "--out",
            run_dir,
            f"steps={args.steps}",
        ],
        needs=("verify",),
    )
    os.makedirs(clips_dir, exist_ok=True)
    samples = _example_inputs(corpus, clips_dir)
    for task, extra, fn in GENERATE_TASKS:
        if any("{" in x for x in extra) and not samples:
            continue
        extra = [x.format(**samples) for x in extra]
        s.run(
            f"generate {task}",
            ["generate", "--run", run_dir, "--task", task, *extra, "--out", os.path.join(clips_dir, fn)],
            needs=("train",),
        )
    s.run("eval", ["eval", "--run", run_dir], needs=("train",))
    shipped_gallery = both_gallery = None
    if args.shipped_scenes > 0:
        from videopoet.trainer import checkpoint

        if checkpoint.run_dir_exists("default"):
            task, extra, fn = GENERATE_TASKS[0]
            s.run(
                "shipped generate",
                [
                    "generate",
                    "--run",
                    "default",
                    "--task",
                    task,
                    *extra,
                    "--out",
                    os.path.join(clips_dir, f"shipped_{fn}"),
                ],
            )
            shipped_eval = os.path.join(out, "eval-default")
            argv = ["eval", "--run", "default", "--scenes", str(args.shipped_scenes), "--out", shipped_eval]
            if s.run("shipped eval", argv):
                shipped_gallery = os.path.join(shipped_eval, "gallery.html")
                if "eval" not in s.failed_or_skipped:
                    from videopoet.trainer import evaluate, gallery

                    columns = [
                        (f"the quickstart's run ({args.steps} steps)", os.path.join(run_dir, "eval")),
                        ("the shipped model (--run default)", shipped_eval),
                    ]
                    both_gallery = gallery.write_side_by_side(
                        os.path.join(out, "gallery.html"), columns, evaluate.EVAL_TASKS
                    )
    summary = {
        "out": out,
        "corpus": corpus,
        "datasets_root": root,
        "dataset": "synth@v1",
        "run": run_dir,
        "clips": clips_dir,
        "gallery": os.path.join(run_dir, "eval", "gallery.html"),
        "shipped_gallery": shipped_gallery,
        "both_gallery": both_gallery,
        "seconds": round(time.time() - t0, 1),
        "steps": s.results,
    }
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"\nquickstart finished in {summary['seconds']:.0f}s")
        for r in s.results:
            print(f"  {r['step']:18s} {r['status']:8s} {r['seconds']:7.1f}s  {r['note']}")
        print(
            f"  corpus    {corpus}\n  datasets  {root}  (synth@v1)\n  run       {run_dir}\n"
            f"  clips     {clips_dir}\n  gallery   {summary['gallery']}"
            + (f"\n  shipped   {shipped_gallery}  (the shipped model, --run default)" if shipped_gallery else "")
            + (f"\n  both      {both_gallery}  (each prompt with both models' clips)" if both_gallery else "")
        )
    failed = [r for r in s.results if r["status"] == "failed"]
    return 1 if failed else 0


def _example_inputs(corpus: str, clips_dir: str) -> dict[str, str]:
    """An image and a video from the corpus, as files the generate tasks can take as --input."""
    import glob
    import tarfile

    out: dict[str, str] = {}
    for shard in sorted(glob.glob(os.path.join(corpus, "train-*.tar"))):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                base = os.path.basename(m.name)
                if not m.isfile() or "/" in m.name or base.startswith("."):
                    continue
                kind = (
                    "video" if base.endswith(".mp4") and "_v" in base else ("image" if base.endswith(".jpg") else None)
                )
                if kind and kind not in out:
                    dst = os.path.join(clips_dir, f"input_{kind}{os.path.splitext(base)[1]}")
                    with open(dst, "wb") as f:
                        f.write(tar.extractfile(m).read())
                    out[kind] = dst
        if len(out) == 2:
            break
    return out if len(out) == 2 else {}


def register(sub) -> None:
    p = sub.add_parser(
        "quickstart",
        help="the whole path on the embedded defaults",
        description="Synthetic corpus -> Beam pre-tokenization -> verify -> train small -> "
        "generate -> eval, on the embedded defaults.",
    )
    p.add_argument(
        "--out", default="quickstart_out", metavar="DIR", help="where everything goes (default ./quickstart_out)"
    )
    p.add_argument("--clips", type=int, default=48, metavar="N", help="synthetic video clips (default 48)")
    p.add_argument("--steps", type=int, default=300, metavar="N", help="training steps (default 300)")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="pipeline workers (default 2)")
    p.add_argument(
        "--preset",
        choices=("small", "tiny"),
        default="small",
        help="small: the embedded defaults (default); tiny: seconds-long smoke run with seeded tokenizers",
    )
    p.add_argument(
        "--shipped-scenes",
        type=int,
        default=4,
        metavar="N",
        help="scenes per split for evaluating the shipped model (--run default) too; 0: skip it (default 4)",
    )
    add_json_flag(p)
    p.set_defaults(func=quickstart)
