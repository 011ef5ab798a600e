"""The ``videopoet`` command. Each group lives in its own module with a ``register(subparsers)``.

User mistakes (``VideoPoetError``) print one line on stderr and exit non-zero; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from videopoet.schemas.errors import VideoPoetError

# (module, command) pairs; a module's register() adds its parser(s). Order is the --help order.
GROUPS = (
    "videopoet.cli.corpus",
    "videopoet.cli.tokenizer",
    "videopoet.cli.pipeline",
    "videopoet.cli.data",
    "videopoet.cli.train",
    "videopoet.cli.generate",
    "videopoet.cli.eval",
    "videopoet.cli.submit",
    "videopoet.cli.quickstart",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage otherwise)
        self.exit(2, f"videopoet: error: {message} (see '{self.prog} --help')\n")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """``argv`` lets groups whose flags depend on an earlier flag (tokenizer --kind) see it."""
    from videopoet.cli import common

    common.ARGV = list(sys.argv[1:] if argv is None else argv)
    parser = _Parser(
        prog="videopoet",
        description="VideoPoet: tokenizers, pre-tokenization pipelines, trainer and generation.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for mod in GROUPS:
        importlib.import_module(mod).register(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("videopoet")
    except PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except VideoPoetError as e:
        print(f"videopoet: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("videopoet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
