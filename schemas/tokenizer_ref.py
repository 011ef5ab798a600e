"""A tokenizer's identity as data: which kind, how to get it again, what it is called, its hash.

A dataset manifest records one :class:`TokenizerRef` per modality (``lineage.tokenizers``), so that
whoever reads the dataset later (``videopoet data show --decode``, generation, evaluation) resolves
the very same tokenizer through ``videopoet.tokenizers.registry`` and can prove it is the same one by
its fingerprint::

    kind         visual | audio | text
    spec         what the registry resolves: "default" (the shipped checkpoint), a preset name
                 (tiny, small, paper: a seeded initialisation), a YAML config, or a checkpoint
                 directory / fsspec URI
    name         the tokenizer config's name (e.g. magvit2-small), for people reading the manifest
    fingerprint  sha256 over the tokenizer's architecture and weights

Manifests of version 1 recorded the spec as display text (``source``: "default (shipped)", "tiny
preset, seeded init", a path); :func:`from_v1_entry` reads those.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from videopoet.schemas.errors import DatasetError

__all__ = ["DEFAULT_SPEC", "KINDS", "MODALITY_KINDS", "TokenizerRef", "from_v1_entry"]

KINDS = ("visual", "audio", "text")
# the manifest's lineage.tokenizers keys (modalities) -> the tokenizer kind that serves each
MODALITY_KINDS = {"video": "visual", "audio": "audio", "text": "text"}
DEFAULT_SPEC = "default"


@dataclasses.dataclass(frozen=True)
class TokenizerRef:
    kind: str
    spec: str
    name: str
    fingerprint: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise DatasetError(f"tokenizer kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not self.spec:
            raise DatasetError(f"the {self.kind} tokenizer reference has an empty spec")

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "spec": self.spec, "name": self.name, "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TokenizerRef:
        try:
            return cls(str(d["kind"]), str(d["spec"]), str(d.get("name", "")), str(d["fingerprint"]))
        except KeyError as e:
            raise DatasetError(f"tokenizer reference lacks {e.args[0]!r}: {dict(d)}") from None

    def describe(self) -> str:
        """One line for people: ``magvit2-small [default] 9e6b894c8f8b``."""
        return f"{self.name} [{self.spec}] {self.fingerprint[:12]}"


_V1_PRESET = " preset, seeded init"


def from_v1_entry(modality: str, entry: Mapping[str, Any]) -> TokenizerRef:
    """The reference a version-1 manifest entry ``{name, fingerprint, config, source}`` stands for.

    Version 1 wrote ``source`` as display text: ``default (shipped)`` for the shipped checkpoint,
    ``<preset> preset, seeded init`` for a preset (``small preset, seeded init (no shipped checkpoint
    yet)`` when the shipped checkpoint was missing and the small preset was used instead), and the
    spec itself for a checkpoint directory, URI or YAML file."""
    kind = MODALITY_KINDS.get(modality)
    if kind is None:
        raise DatasetError(f"unknown tokenizer modality {modality!r} in the manifest")
    source = str(entry.get("source") or "")
    if source == "default (shipped)" or not source:
        spec = DEFAULT_SPEC
    elif _V1_PRESET in source:
        spec = source.split(_V1_PRESET)[0]
    else:
        spec = source
    return TokenizerRef(kind, spec, str(entry.get("name", "")), str(entry.get("fingerprint", "")))
