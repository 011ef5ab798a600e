"""The ahead-of-time compile table: preset x TPU slice x mesh -> GiB per chip, fits, FLOPs per step.

    python bench/aot_table.py [--effort E] [--rows N,N,...] [--write BENCHMARKS.md]

Each row compiles the real train step (trainer/aot.py) for a slice this machine does not have, at the
batch's longest sequence (the paper clip geometry). ``--write`` replaces the section "Ahead-of-time
compile (TPU slices)" of the given Markdown file with the table, the machine, the date and the command.
Prints one JSON object per row.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
import time

ROWS = (  # (preset, slice, overrides)
    ("300m", "v5e-16", ("batch_size=16",)),
    ("300m", "v5e-16", ("batch_size=16", "mesh.data=-1", "mesh.fsdp=1")),
    ("1b", "v5p-32", ("batch_size=32",)),
    ("8b", "v5p-128", ("batch_size=64",)),
    ("8b", "v5p-128", ("batch_size=64", "mesh.data=-1", "mesh.fsdp=1")),
)
SECTION = "## Ahead-of-time compile (TPU slices)"


def _mesh(m: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in m.items() if v != 1) or "1 chip"


def table(reports: list[dict]) -> str:
    head = (
        "| preset | slice | mesh | batch x tokens | GiB/chip (args / temp / total) | HBM GiB | fits | "
        "TFLOP/step | compile s |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r in reports:
        g = r["gib_per_chip"]
        mem = f"{g['arguments']:.1f} / {g['temporaries']:.1f} / {g['total']:.1f}"
        if r["oom"]:
            mem = f"needs {g['total']:.1f} (compiler: out of HBM)"
        flops = f"{r['flops_per_step'] / 1e12:,.0f}" if r["flops_per_step"] else "-"
        rows.append(
            f"| {r['config']} | {r['topology']} ({r['jax_topology'].split(':')[1]}) | {_mesh(r['mesh'])} | "
            f"{r['batch_size']} x {r['seq_len']} | {mem} | {g['hbm']:.0f} | {'yes' if r['fits'] else '**no**'} | "
            f"{flops} | {r['compile_s']:.0f} |"
        )
    return head + "\n".join(rows) + "\n"


def write_section(path: str, body: str) -> None:
    with open(path) as f:
        text = f.read()
    block = f"{SECTION}\n\n{body}"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: block + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block
    with open(path, "w") as f:
        f.write(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--effort", type=float, default=None, help="XLA optimization effort (default: XLA's)")
    ap.add_argument("--rows", default=None, help="comma-separated row indices (default: all)")
    ap.add_argument("--write", default=None, metavar="MD", help="replace the table's section in this file")
    args = ap.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    from videopoet.trainer import aot
    from videopoet.trainer.config import load_train_config

    picked = [ROWS[int(i)] for i in args.rows.split(",")] if args.rows else list(ROWS)
    reports = []
    t0 = time.time()
    for preset, topology, overrides in picked:
        r = aot.compile_report(load_train_config(preset, list(overrides)), topology, effort=args.effort)
        d = r.to_dict()
        reports.append(d)
        print(
            json.dumps(
                {
                    k: d[k]
                    for k in (
                        "config",
                        "topology",
                        "mesh",
                        "fits",
                        "gib_per_chip",
                        "flops_per_step",
                        "compile_s",
                        "oom",
                    )
                }
            ),
            flush=True,
        )
    if args.write:
        cmd = "python bench/aot_table.py" + (f" --effort {args.effort:g}" if args.effort is not None else "")
        cmd += f" --rows {args.rows}" if args.rows else ""
        import jax

        body = (
            f"    {cmd} --write BENCHMARKS.md   # cpu-2c, {datetime.date.today()}, jax {jax.__version__}, "
            f"libtpu {_libtpu_version()}\n\n"
            "The real train step (model, AdamW, frozen T5 text tower, loss) compiled by XLA:TPU for libtpu's\n"
            "compile-only devices of each slice (`videopoet train --dry-run --topology SLICE`), at the longest\n"
            "sequence of the paper geometry (inpainting a 128x224 portrait clip: 4555 tokens). GiB per chip from\n"
            "`memory_analysis()`: arguments (state shard, batch shard, the replicated 1.2B-parameter T5-XL\n"
            "encoder in float32: 4.9 GiB), temporaries, total = arguments + outputs - aliased (donated state) +\n"
            "temporaries + code. TFLOP/step = the compiler's count per chip x chips (full remat: the forward\n"
            "runs twice). A row whose compile ran out of HBM shows the figure XLA's message gave.\n"
            f"{'Compiled at XLA optimization effort ' + format(args.effort, 'g') + ' (faster compiles; memory within a few percent of the default).' if args.effort is not None else ''}\n"  # noqa: E501
            f"Machine shared with other jobs while measured (compile seconds are pessimistic); "
            f"{platform.machine()}, total {time.time() - t0:.0f} s.\n\n" + table(reports)
        )
        write_section(args.write, body)
    return 0


def _libtpu_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("libtpu")
    except PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
