"""Split one input shard's work into tokenization windows, and reassemble their results.

The Ray job spreads one shard over three stages (CPU read/decode task -> tokenizer actor -> writer
task), yet must write byte-identical shards and rejects files to :func:`shard.process_shard`'s.
So the windows here come from the same generator as ``process_shard``'s (``prepare.iter_windows``:
samples in shard order, a window closed as soon as it holds ``4 * batch_size`` clip items), with the
same fixed-size padded tokenizer batches inside a window and rejects in the same order (read/prepare
rejects as they occur, a window's tokenize rejects right after it). tests/test_ray_pipeline.py checks
byte parity with Beam.

Windows travel between Ray workers as msgpack (raw array bytes + dtype + shape; never pickle).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np

from videopoet.pipelines.config import PipelineConfig
from videopoet.pipelines.inputs import input_name, open_input
from videopoet.pipelines.prepare import ClipItem, iter_windows
from videopoet.schemas.record import Lineage

__all__ = ["pack_items", "plan_windows", "unpack_items"]


def _arr(a: np.ndarray | None) -> dict[str, Any] | None:
    if a is None:
        return None
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": a.tobytes()}


def _unarr(d: dict[str, Any] | None) -> np.ndarray | None:
    if d is None:
        return None
    return np.frombuffer(d["data"], dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()


def pack_items(items: list[ClipItem]) -> bytes:
    return msgpack.packb(
        [
            {
                "key": it.key,
                "sample_key": it.sample_key,
                "clip_index": it.clip_index,
                "frames": _arr(it.frames),
                "audio": _arr(it.audio),
                "caption": it.caption,
                "lineage": it.lineage.to_wire(),
                "meta": dict(it.meta),
                "frames_2x": _arr(it.frames_2x),
            }
            for it in items
        ],
        use_bin_type=True,
    )


def unpack_items(blob: bytes) -> list[ClipItem]:
    return [
        ClipItem(
            key=d["key"],
            sample_key=d["sample_key"],
            clip_index=int(d["clip_index"]),
            frames=_unarr(d["frames"]),
            audio=_unarr(d["audio"]),
            caption=d["caption"],
            lineage=Lineage.from_wire(d["lineage"]),
            meta=dict(d["meta"]),
            frames_2x=_unarr(d["frames_2x"]),
        )
        for d in msgpack.unpackb(blob, raw=False)
    ]


def plan_windows(input_uri: str, cfg: PipelineConfig) -> Iterator[dict[str, Any]]:
    """Rows ``{shard, uri, window, items (packed), pre_rejects (JSON list), final, ...}`` of one shard.

    ``pre_rejects`` are the read/prepare rejects that ``process_shard`` records before this window's
    flush; the ``final`` row (always present, possibly with no items) also carries the input's
    sha256/size, ``samples_in`` and the shard's read/decode stage seconds."""
    name = input_name(input_uri)
    timing: Counter = Counter()
    t0 = time.perf_counter()
    with open_input(input_uri) as (read_from, sha, size):
        timing["hash"] += time.perf_counter() - t0
        samples_in = 0
        for index, win in enumerate(iter_windows(read_from, cfg, name, sha, timing)):
            samples_in += win.samples_in
            yield {
                "shard": name,
                "uri": input_uri,
                "window": index,
                "items": pack_items(win.items),
                "pre_rejects": msgpack.packb(win.rejects, use_bin_type=True),
                "final": win.final,
                "samples_in": samples_in if win.final else 0,
                "sha256": sha if win.final else "",
                "size": int(size) if win.final else 0,
                "timing": msgpack.packb({k: float(v) for k, v in timing.items()} if win.final else {}),
            }
