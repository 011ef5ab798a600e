"""`videopoet corpus`: synthetic corpora (videopoet corpus synth)."""

from __future__ import annotations

from videopoet.cli.common import stub_group


def register(sub) -> None:
    stub_group(sub, "corpus", "synthetic corpora (videopoet corpus synth)", 2)
