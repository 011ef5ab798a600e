"""`videopoet submit`: submit jobs to clusters."""

from __future__ import annotations

from videopoet.cli.common import stub_group


def register(sub) -> None:
    stub_group(sub, "submit", "submit jobs to clusters", 5)
