"""The ``videopoet`` command. Each group lives in its own module with a ``register(subparsers)``.

User mistakes (``VideoPoetError``) print one line on stderr and exit non-zero; no traceback. So do
object-storage failures (an unreachable endpoint, missing credentials, no such bucket:
``objstore.storage_error``).
"""

from __future__ import annotations

import argparse
import glob
import importlib
import importlib.util
import logging
import os
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


def default_jax_platforms(environ=os.environ) -> None:
    """Keep JAX from probing a TPU that is not there.

    The ``tpu`` extra (libtpu, for compiling a TPU program on any machine) makes JAX try the TPU backend
    first in every process, which on a machine without TPU chips prints several lines of libtpu errors
    before falling back. Without TPU device nodes and with no platform chosen by the user, the CLI asks
    for the GPU (when a CUDA plugin is installed) and the CPU instead; TPU VMs are left alone.
    """
    if environ.get("JAX_PLATFORMS") or importlib.util.find_spec("libtpu") is None:
        return
    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):
        return
    cuda = any(
        importlib.util.find_spec(f"jax_plugins.xla_cuda{v}")
        for v in (12, 13)
        if importlib.util.find_spec("jax_plugins")
    )
    environ["JAX_PLATFORMS"] = "cuda,cpu" if cuda else "cpu"


def main(argv: list[str] | None = None) -> int:
    default_jax_platforms()
    # gcsfs logs every retry with its traceback; the failure itself reaches the user as one line (below)
    logging.getLogger("gcsfs").setLevel(logging.CRITICAL)
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
    except Exception as e:  # object storage unreachable, no credentials, no such bucket: one line, no traceback
        from videopoet.schemas import objstore

        line = objstore.storage_error(e, _argument_values(args))
        if line is None:
            raise
        print(f"videopoet: error: {line}", file=sys.stderr)
        return 1
    return int(rc or 0)


def _argument_values(args: argparse.Namespace) -> list[str]:
    """Every string the command was given (flags and key=value overrides), to name its remote paths."""
    out: list[str] = []
    for value in vars(args).values():
        for v in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(v, str):
                out.append(v)
    return out


if __name__ == "__main__":
    sys.exit(main())
