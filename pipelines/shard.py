"""The unit of work: one input shard in, its output shard, rejects file and done marker out.

Both runners end a shard in :func:`assemble_shard`, which is what makes their outputs
byte-identical: it takes the shard's tokenized windows in order (each the read/prepare rejects met
before it, its records and the samples whose tokenization failed), writes the records to one
ArrayRecord shard and the rejects (read/prepare rejects as they occur, a window's tokenize rejects
right after it) to one JSONL file, checks that every sample read is a record's or a reject, and
marks the shard done in the dataset store with a :class:`~videopoet.schemas.shard_stats.ShardStats`.

* Beam calls :func:`process_shard` per input shard: it reads, prepares and tokenizes the shard's
  windows one after another in the worker and streams them into :func:`assemble_shard`.
* Ray spreads a shard over a read task, tokenizer actors and a writer task; the writer hands the
  actors' results, in window order, to :func:`assemble_shard` (``pipelines/ray/job.py``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from videopoet.pipelines.config import PipelineConfig
from videopoet.pipelines.errors import make_reject
from videopoet.pipelines.inputs import input_name, is_local, open_input
from videopoet.pipelines.prepare import iter_windows
from videopoet.pipelines.tokenize import Tokenizers, tokenize_items
from videopoet.schemas.record import TokenRecord
from videopoet.schemas.shard_stats import ShardStats

__all__ = ["ShardResult", "TokenizedWindow", "assemble_shard", "process_shard", "rejects_bytes", "write_rejects"]


@dataclasses.dataclass
class TokenizedWindow:
    """One tokenization window's results, as :func:`assemble_shard` takes them."""

    rejects: list[dict[str, str]]  # read/prepare rejects met since the previous window, in input order
    samples_in: int  # samples read for this window
    records: list[TokenRecord]  # in input order
    samples: list[str]  # the sample keys of the window's clip items, in order, each once
    failed: dict[str, str]  # sample key -> tokenization error (its records are not in ``records``)


@dataclasses.dataclass
class ShardResult:
    """What :func:`process_shard` did: ``stats`` of the finished shard (None when it was done before)
    and the seconds spent per stage (not stored in the marker)."""

    name: str
    stats: ShardStats | None
    timing: dict[str, float]

    @property
    def skipped(self) -> bool:
        return self.stats is None


def rejects_bytes(rejects: list[dict[str, str]]) -> bytes:
    """The rejects JSONL file's exact bytes (one sorted-key JSON object per line, UTF-8)."""
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rejects).encode("utf-8")


def write_rejects(path: str, rejects: list[dict[str, str]]) -> None:
    """Write the rejects file atomically (temp + rename locally; one PUT on object stores), so two
    attempts at the same shard (a retry, a speculative duplicate) never interleave."""
    import uuid

    import fsspec

    blob = rejects_bytes(rejects)
    if is_local(path):
        local = os.path.abspath(path[len("file://") :] if path.startswith("file://") else path)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        tmp = os.path.join(os.path.dirname(local), f".tmp-{uuid.uuid4().hex[:12]}-{os.path.basename(local)}")
        with open(tmp, "wb") as f:
            f.write(blob)
        os.replace(tmp, local)
    else:
        fs, p = fsspec.core.url_to_fs(path)
        fs.pipe(p, blob)


def assemble_shard(
    name: str,
    source: dict,
    windows: Iterable[TokenizedWindow],
    work,
    fingerprints: dict[str, str],
    timing: Counter | None = None,
) -> ShardStats:
    """Write input shard ``name``'s output shard and rejects file from its ``windows`` (in order) and
    mark it done in ``work``; ``source`` is the input's ``{name, size, sha256, uri}``."""
    from videopoet.schemas.shards import ShardWriter

    timing = timing if timing is not None else Counter()
    rejects: list[dict[str, str]] = []
    counts: Counter = Counter()
    writer = ShardWriter(work.shard_path(name))
    try:
        for win in windows:
            counts["samples_in"] += win.samples_in
            rejects.extend(win.rejects)
            t0 = time.perf_counter()
            for rec in win.records:
                writer.write(rec)
                counts["records"] += 1
                counts["images" if rec.meta.get("is_image") else "clips"] += 1
            timing["write"] += time.perf_counter() - t0
            for key in win.samples:
                if key in win.failed:
                    rejects.append(make_reject(name, key, "tokenize", "tokenize_error", win.failed[key]))
                else:
                    counts["samples_ok"] += 1
        out = writer.close()
    except BaseException:
        writer.abort()
        raise
    t0 = time.perf_counter()
    write_rejects(work.rejects_path(name), rejects)
    timing["write"] += time.perf_counter() - t0
    stats = ShardStats(
        input_name=name,
        outputs=(out,),
        input=dict(source),
        samples_in=int(counts["samples_in"]),
        samples_ok=int(counts["samples_ok"]),
        records=int(counts["records"]),
        clips=int(counts["clips"]),
        images=int(counts["images"]),
        rejects=len(rejects),
        rejects_by_reason=dict(sorted(Counter(r["reason"] for r in rejects).items())),
        tokenizers=dict(fingerprints),
    ).check()
    return work.finish_shard(stats)


def _unique_samples(items) -> list[str]:
    seen: dict[str, None] = {}
    for it in items:
        seen.setdefault(it.sample_key, None)
    return list(seen)


def process_shard(
    input_uri: str, cfg: PipelineConfig, toks: Tokenizers, work, *, on_sample: Callable[[], None] | None = None
) -> ShardResult:
    """Tokenize one input shard into its output shard + rejects file and mark it done in ``work``.

    Resumable: a shard already marked done is skipped (``ShardResult.skipped``). Deterministic:
    records follow the input order; tokenizer batches have a fixed size."""
    name = input_name(input_uri)
    if work.is_done(name):  # one existence check, not a listing: cheap with thousands of shards
        return ShardResult(name, None, {})
    t_start = time.perf_counter()
    timing: Counter = Counter()

    def tokenized(read_from: str, sha: str) -> Iterator[TokenizedWindow]:
        for win in iter_windows(read_from, cfg, name, sha, timing, on_sample=on_sample):
            recs, failed = tokenize_items(win.items, toks, cfg, timing) if win.items else ([], {})
            yield TokenizedWindow(win.rejects, win.samples_in, recs, _unique_samples(win.items), failed)

    t0 = time.perf_counter()
    with open_input(input_uri) as (read_from, sha, size):
        timing["hash"] += time.perf_counter() - t0
        source = {"name": name, "size": int(size), "sha256": sha, "uri": input_uri}
        stats = assemble_shard(name, source, tokenized(read_from, sha), work, toks.fingerprints(), timing)
    timing["total"] = time.perf_counter() - t_start
    return ShardResult(name, stats, dict(timing))
