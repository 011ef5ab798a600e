"""`videopoet train`: train the VideoPoet model."""

from __future__ import annotations

from videopoet.cli.common import stub_group


def register(sub) -> None:
    stub_group(sub, "train", "train the VideoPoet model", 6)
