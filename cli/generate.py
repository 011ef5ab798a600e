"""`videopoet generate`: generate with a trained model."""

from __future__ import annotations

from videopoet.cli.common import stub_group


def register(sub) -> None:
    stub_group(sub, "generate", "generate with a trained model", 7)
    stub_group(sub, "eval", "score generated samples on the synthetic world", 7)
