"""`videopoet pipeline`: pre-tokenize corpora into versioned datasets."""

from __future__ import annotations

from videopoet.cli.common import stub_group


def register(sub) -> None:
    stub_group(sub, "pipeline", "pre-tokenize corpora into versioned datasets", 5)
