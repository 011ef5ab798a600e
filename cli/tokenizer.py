"""`videopoet tokenizer`: train and evaluate tokenizers."""

from __future__ import annotations

from videopoet.cli.common import stub_group


def register(sub) -> None:
    stub_group(sub, "tokenizer", "train and evaluate tokenizers", 3)
