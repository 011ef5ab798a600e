"""`videopoet data`: list, inspect, verify and diff datasets."""

from __future__ import annotations

from videopoet.cli.common import stub_group


def register(sub) -> None:
    stub_group(sub, "data", "list, inspect, verify and diff datasets", 2)
