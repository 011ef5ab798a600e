"""`videopoet quickstart`: the whole path on the embedded defaults."""

from __future__ import annotations

from videopoet.cli.common import stub_group


def register(sub) -> None:
    stub_group(sub, "quickstart", "the whole path on the embedded defaults", 7)
