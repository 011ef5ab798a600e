"""Record the shipped model's evaluation, ``trainer/assets/small/eval.json``.

    python longrun/record_eval.py [--run default] [--out trainer/assets/small] [--scenes 32]

``videopoet eval --run RUN --scenes 32 --tasks t2v,i2v,fp,v2a --json`` with the model directory's own
sampling settings (its ``sampling.json``), the gallery's path left out (it lies outside the model
directory), and its table printed. The
smaller evaluation that the tests regenerate (``eval-check.json``) is written by the test itself,
under the test suite's XLA flags: ``VIDEOPOET_RECORD=1 pytest tests/test_shipped_model.py``.
"""

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile

from videopoet.cli.main import main as videopoet
from videopoet.trainer import evaluate

SETTINGS = ["--tasks", "t2v,i2v,fp,v2a"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="default")
    p.add_argument("--out", default="trainer/assets/small")
    p.add_argument("--scenes", type=int, default=32)
    args = p.parse_args()
    argv = ["eval", "--run", args.run, "--scenes", str(args.scenes), *SETTINGS]
    with tempfile.TemporaryDirectory() as tmp:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = videopoet([*argv, "--out", os.path.join(tmp, "eval"), "--json"])
        if rc != 0:
            sys.exit(f"record_eval: videopoet {' '.join(argv)} failed ({rc})")
    report = json.loads(out.getvalue())
    report.pop("gallery", None)
    with open(os.path.join(args.out, "eval.json"), "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
        f.write("\n")
    print(evaluate.table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
