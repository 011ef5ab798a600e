"""`videopoet tokenizer train|eval --kind magvit2|soundstream|text`.

Each kind implements ``videopoet.cli.tokenizer_<kind>`` with ``add_train_args(parser)``,
``train(args) -> int``, ``add_eval_args(parser)`` and ``eval(args) -> int``; what ``--data`` means is
:mod:`videopoet.cli.tokenizer_data`. This module only dispatches, so the kinds stay independent of
one another.
"""

from __future__ import annotations

import argparse
import importlib

from videopoet.cli import common
from videopoet.cli.common import add_json_flag

KINDS = ("magvit2", "soundstream", "text")


def _kind_module(kind: str):
    return importlib.import_module(f"videopoet.cli.tokenizer_{kind}")


def _kind_from_argv() -> str | None:
    argv = common.ARGV
    for i, tok in enumerate(argv):
        if tok == "--kind" and i + 1 < len(argv):
            return argv[i + 1]
        if tok.startswith("--kind="):
            return tok.split("=", 1)[1]
    return None


def _dispatch(action: str):
    def run(args: argparse.Namespace) -> int:
        return getattr(_kind_module(args.kind), action)(args)

    return run


def register(sub) -> None:
    p = sub.add_parser("tokenizer", help="train and evaluate tokenizers")
    tsub = p.add_subparsers(dest="action", metavar="ACTION")
    tsub.required = True
    # Kind-specific flags are added for the kind named on the command line (all kinds for --help).
    named = _kind_from_argv()
    for action, help_ in (("train", "train a tokenizer"), ("eval", "evaluate a tokenizer")):
        ap = tsub.add_parser(action, help=help_)
        ap.add_argument("--kind", required=True, choices=KINDS)
        add_json_flag(ap)
        if named in KINDS:
            getattr(_kind_module(named), f"add_{action}_args")(ap)
        else:
            ap.add_argument("rest", nargs=argparse.REMAINDER, help="kind-specific options")
        ap.set_defaults(func=_dispatch(action))
