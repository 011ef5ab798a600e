"""Helpers shared by the CLI groups: output in text or --json, and user errors."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

# The argv being parsed (set by videopoet.cli.main.build_parser).
ARGV: list[str] = []


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def emit(args: argparse.Namespace, obj: Any, text: str | None = None) -> None:
    """Print ``obj`` as JSON under --json, else ``text`` (or a readable dump of ``obj``)."""
    if getattr(args, "json", False):
        json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
    else:
        print(text if text is not None else json.dumps(obj, indent=2, sort_keys=True, default=str))
