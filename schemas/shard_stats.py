"""What one finished input shard produced: the done marker of the dataset store, as a typed record.

A runner builds a :class:`ShardStats` when it has written an input shard's output shard(s) and
rejects file, and hands it to ``WorkDir.finish_shard``; the store writes it as the shard's done
marker (``stats/<stem>.json``), reads it back in ``WorkDir.done_shards`` and sums the markers into
the manifest at commit. The JSON layout::

    {input_name, input {name, size, sha256, uri}, outputs [{path, records, bytes, sha256, tokens}],
     samples_in, samples_ok, records, clips, images, rejects {records, by_reason}, tokenizers}

``tokenizers`` (modality -> fingerprint) lets a resumed build refuse shards that other tokenizers
made. Every sample read is a record's sample or a reject: ``samples_ok + rejects == samples_in``
(:meth:`ShardStats.check`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from videopoet.schemas.errors import DatasetError

__all__ = ["ShardStats"]


@dataclasses.dataclass(frozen=True)
class ShardStats:
    input_name: str
    outputs: tuple[dict[str, Any], ...]  # ShardWriter.close() of each output shard
    input: dict[str, Any] | None = None  # {name, size, sha256, uri}
    samples_in: int = 0
    samples_ok: int = 0
    records: int = 0
    clips: int = 0
    images: int = 0
    rejects: int = 0
    rejects_by_reason: dict[str, int] = dataclasses.field(default_factory=dict)
    tokenizers: dict[str, str] | None = None  # modality -> fingerprint

    @property
    def tokens(self) -> dict[str, int]:
        """Tokens per kind over the outputs."""
        out: dict[str, int] = {}
        for o in self.outputs:
            for k, v in (o.get("tokens") or {}).items():
                out[k] = out.get(k, 0) + int(v)
        return out

    def check(self) -> ShardStats:
        """The nothing-lost invariant; a violation is a bug in the runner."""
        if self.samples_ok + self.rejects != self.samples_in:
            raise DatasetError(
                f"{self.input_name}: {self.samples_in} samples in but {self.samples_ok} ok + "
                f"{self.rejects} rejected (a bug; please report)"
            )
        return self

    def to_marker(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "input_name": self.input_name,
            "outputs": [dict(o) for o in self.outputs],
            "samples_in": int(self.samples_in),
            "samples_ok": int(self.samples_ok),
            "records": int(self.records),
            "clips": int(self.clips),
            "images": int(self.images),
            "rejects": {"records": int(self.rejects), "by_reason": dict(sorted(self.rejects_by_reason.items()))},
        }
        if self.input is not None:
            d["input"] = dict(self.input)
        if self.tokenizers is not None:
            d["tokenizers"] = dict(self.tokenizers)
        return d

    @classmethod
    def from_marker(cls, d: Mapping[str, Any]) -> ShardStats:
        rj = d.get("rejects") or {}
        return cls(
            input_name=str(d["input_name"]),
            outputs=tuple(dict(o) for o in d.get("outputs", [])),
            input=dict(d["input"]) if d.get("input") else None,
            samples_in=int(d.get("samples_in", 0)),
            samples_ok=int(d.get("samples_ok", 0)),
            records=int(d.get("records", 0)),
            clips=int(d.get("clips", 0)),
            images=int(d.get("images", 0)),
            rejects=int(rj.get("records", 0)),
            rejects_by_reason={str(k): int(v) for k, v in (rj.get("by_reason") or {}).items()},
            tokenizers=dict(d["tokenizers"]) if d.get("tokenizers") is not None else None,
        )
