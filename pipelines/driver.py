"""Runner-agnostic job driver: everything around the per-shard work that Beam and Ray share.

    job = prepare_job(input_glob, name, version, root, cfg)   # list + hash inputs, open the store,
                                                              # refuse changed config/tokenizers,
                                                              # detect an already-published version
    if job.already_published: ...                             # rerun of a completed version: no-op
    ... the runner ends each uri of job.todo in shard.assemble_shard (Beam: shard.process_shard) ...
    manifest = commit_job(job, runner={...})                  # through the dataset store, last (or the
                                                              # version another job of this build published)
    summary = summarize(job, manifest, wall_s, timings)       # clips/s, tokens/s, rejects by reason
    print(format_summary(summary))

:class:`ShardProgress` is a progress bar fed by the store's done markers (so it works whatever
process or machine does the work). A worker re-opens the staging area with :func:`open_work`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
from collections import Counter
from typing import Any

from videopoet.pipelines.config import PipelineConfig
from videopoet.pipelines.errors import PipelineError
from videopoet.pipelines.inputs import input_name, input_sha256, list_input_shards
from videopoet.pipelines.tokenize import Tokenizers, load_tokenizers
from videopoet.schemas.config import to_dict
from videopoet.schemas.errors import ImmutableVersionError, PublishedMeanwhileError
from videopoet.schemas.shard_stats import ShardStats

__all__ = [
    "Job",
    "ShardProgress",
    "adopt_published",
    "check_published",
    "commit_job",
    "format_summary",
    "open_work",
    "prepare_job",
    "summarize",
    "version_published",
]


@dataclasses.dataclass
class Job:
    inputs: list[str]  # shard URIs, sorted
    name: str
    version: str
    root: str
    cfg: PipelineConfig
    tokenizers: Tokenizers
    store: Any
    work: Any
    done_before: set[str]  # input names already done when the job started (resume)
    already_published: dict[str, Any] | None  # the manifest, when name@version exists with this content
    # the manifest, when another job of the same build (the same staging area) published name@version
    # while this one ran, holding what this job would have published (:func:`adopt_published`)
    published_meanwhile: dict[str, Any] | None = None

    @property
    def todo(self) -> list[str]:
        return [u for u in self.inputs if input_name(u) not in self.done_before]

    @property
    def input_names(self) -> list[str]:
        return [input_name(u) for u in self.inputs]


def open_work(root: str, name: str, version: str, cfg: PipelineConfig):
    """The staging area of ``name@version`` (a worker's view; the driver created it)."""
    from videopoet.schemas.store import DatasetStore

    return DatasetStore(root).begin(name, version, cfg)


def prepare_job(
    input_glob: str, name: str, version: str, root: str, cfg: PipelineConfig, tokenizers: Tokenizers | None = None
) -> Job:
    """Everything a runner needs before it fans out; raises a one-line error for user mistakes."""
    from videopoet.schemas.store import DatasetStore

    uris = list_input_shards(input_glob)
    toks = tokenizers or load_tokenizers(cfg)
    st = DatasetStore(root)
    work = st.begin(name, version, cfg)  # refuses a different pipeline config (published or unfinished)
    fps = toks.fingerprints()
    if work.committed is not None:
        m = work.committed
        check_published(m, f"{name}@{version}", fps, uris)
        return Job(uris, name, version, root, cfg, toks, st, work, set(input_name(u) for u in uris), m)
    done = work.done_shards()
    for n, marker in done.items():
        old = marker.tokenizers
        if old is not None and old != fps:
            raise ImmutableVersionError(
                f"an unfinished build of {name}@{version} at {work.uri} made {n} with different tokenizers "
                f"(e.g. a trained checkpoint appeared since); delete that directory or use a new version"
            )
    names = {input_name(u) for u in uris}
    extra = sorted(set(done) - names)
    if extra:
        raise ImmutableVersionError(
            f"an unfinished build of {name}@{version} at {work.uri} has input shards "
            f"not in --input ({', '.join(extra[:3])}); use the same inputs or a new version"
        )
    return Job(uris, name, version, root, cfg, toks, st, work, set(done) & names, None)


def check_published(m: dict[str, Any], ref: str, fingerprints: dict[str, str], uris: list[str]) -> None:
    """Refuse (:class:`ImmutableVersionError`) a published manifest ``m`` of ``ref`` made with other
    tokenizers or from other input shards (names and content hashes) than a job of ``uris`` would use;
    the pipeline config was compared when the job opened the store."""
    old_tok = {k: (v or {}).get("fingerprint") for k, v in m["lineage"].get("tokenizers", {}).items()}
    if old_tok != fingerprints:
        changed = sorted(k for k in set(old_tok) | set(fingerprints) if old_tok.get(k) != fingerprints.get(k))
        raise ImmutableVersionError(
            f"{ref} is published with different tokenizers ({', '.join(changed)}); publish under a new version"
        )
    old_inputs = {i["name"]: i["sha256"] for i in m["lineage"].get("inputs", [])}
    if old_inputs != {input_name(u): input_sha256(u) for u in uris}:
        raise ImmutableVersionError(f"{ref} is published from different input shards; publish under a new version")


def style_lineage(cfg: PipelineConfig) -> dict[str, Any]:
    """The manifest's ``lineage.style``: which stylization streams the records carry, how flow was
    estimated and the depth network (its content hash; null when the dataset has no depth)."""
    from videopoet.schemas.record import STYLE_STREAMS
    from videopoet.schemas.shards import sha256_of

    depth = None
    if "depth" in cfg.style_conditions:
        depth = {"path": os.path.basename(cfg.depth_model), "sha256": sha256_of(cfg.depth_model)[0]}
    return {
        "conditions": list(cfg.style_conditions),
        "streams": [STYLE_STREAMS[k] for k in cfg.style_conditions],
        "flow": "opencv-farneback" if "flow" in cfg.style_conditions else "",
        "depth_model": depth,
    }


def version_published(work) -> bool:
    """Whether ``work``'s version is published now; False when the store cannot be asked (an endpoint
    down): then the failure that made a runner ask is the one to report, not this probe's."""
    try:
        return work.store.exists(work.name, work.version)
    except Exception:  # noqa: BLE001 - any store error: unknown, so not published
        return False


def adopt_published(job: Job) -> dict[str, Any] | None:
    """The manifest of ``job``'s version when another job of its build published it meanwhile and it holds
    what this job would publish (the same config, tokenizers and inputs; the outputs are deterministic),
    recorded in ``job.published_meanwhile``; None while it is unpublished; a version published from
    other tokenizers or inputs is refused (:class:`ImmutableVersionError`). A runner whose shard failed
    because the publish took the staging area from under it asks this before reporting the failure."""
    if job.already_published is not None or not version_published(job.work):
        return None
    ref = f"{job.name}@{job.version}"
    m = job.store.open(ref).manifest
    old, ours = m["lineage"].get("pipeline_config_fingerprint"), job.work.config_fingerprint
    if old is not None and ours is not None and old != ours:  # published by a build of another config
        raise ImmutableVersionError(f"{ref} is published with a different pipeline config; publish under a new version")
    check_published(m, ref, job.tokenizers.fingerprints(), job.inputs)
    job.published_meanwhile = m
    return m


def commit_job(job: Job, runner: dict[str, Any]) -> dict[str, Any]:
    """Publish the version through the store (manifest written last, atomically), or accept the one that
    another job of this build published meanwhile (:func:`adopt_published`)."""
    if job.already_published is not None:
        return job.already_published
    if job.published_meanwhile is not None or adopt_published(job) is not None:
        job.store.discard(job.work)  # what this job's shards wrote there after the publish, if any
        return job.published_meanwhile
    want = job.tokenizers.fingerprints()
    for n, mk in job.work.done_shards().items():
        if mk.tokenizers not in (None, want):
            diff = sorted(k for k in want if (mk.tokenizers or {}).get(k) != want[k])
            raise PipelineError(
                f"input shard {n} was tokenized with different tokenizers ({', '.join(diff)}) "
                f"than the driver loaded; give every worker the same checkpoints"
            )
    lineage = {"tokenizers": job.tokenizers.lineage(), "pipeline_config": to_dict(job.cfg), "runner": runner}
    if job.cfg.style_conditions:
        lineage["style"] = style_lineage(job.cfg)
    try:
        return job.store.commit(job.work, lineage, expected_inputs=job.input_names)
    except PublishedMeanwhileError:  # another job of this build published the staging area while this one committed
        if adopt_published(job) is None:
            raise
        return job.published_meanwhile


def summarize(
    job: Job,
    manifest: dict[str, Any],
    wall_s: float,
    timings: dict[str, float] | None = None,
    new_markers: dict[str, ShardStats] | None = None,
) -> dict[str, Any]:
    """End-of-job numbers: this run's clips/s and tokens/s per modality, the dataset's totals."""
    new = new_markers or {}
    run = Counter()
    tokens = Counter()
    for mk in new.values():
        for k in ("samples_in", "samples_ok", "records", "clips", "images", "rejects"):
            run[k] += getattr(mk, k)
        tokens.update(mk.tokens)
    wall = max(wall_s, 1e-9)
    stages = dict(timings or {})
    rows = {"encoded": int(stages.pop("encoded_rows", 0)), "padded": int(stages.pop("padded_rows", 0))}
    rows["padded_fraction"] = round(rows["padded"] / max(rows["encoded"] + rows["padded"], 1), 4)
    return {
        "ref": f"{job.name}@{job.version}",
        "fingerprint": manifest["fingerprint"],
        "no_op": job.already_published is not None,
        "published_meanwhile": job.published_meanwhile is not None,
        "shards": {"total": len(job.inputs), "processed": len(new), "resumed": len(job.done_before)},
        "wall_s": round(wall_s, 3),
        "this_run": {
            **{k: int(v) for k, v in run.items()},
            "clips_per_s": round((run["clips"] + run["images"]) / wall, 3),
            "tokens_per_s": {k: round(v / wall, 1) for k, v in sorted(tokens.items())},
        },
        "totals": manifest["totals"],
        "rejects_by_reason": dict(sorted(manifest["rejects"]["by_reason"].items())),
        "stage_seconds": {k: round(v, 3) for k, v in sorted(stages.items())},
        # tokenizer batch rows of this run: real clips / audio windows, and the zero rows that padded
        # the last batch of each window's streams
        "tokenizer_rows": rows,
        "tokenizers": {m: ref.describe() for m, ref in job.tokenizers.refs.items()},
    }


def format_summary(s: dict[str, Any]) -> str:
    if s["no_op"]:
        return f"{s['ref']} is already published with this content (fingerprint {s['fingerprint'][:16]}); nothing to do"
    r, t = s["this_run"], s["totals"]
    head = f"published {s['ref']}  fingerprint {s['fingerprint'][:16]}"
    if s.get("published_meanwhile"):
        head = (
            f"{s['ref']} was published by another job of the same build while this one ran (fingerprint "
            f"{s['fingerprint'][:16]}), from the same config, tokenizers and inputs"
        )
    lines = [
        head,
        f"  shards: {s['shards']['processed']} processed, {s['shards']['resumed']} already done, "
        f"{s['shards']['total']} total; wall {s['wall_s']:.1f} s",
        f"  this run: {r.get('clips', 0)} clips + {r.get('images', 0)} images from {r.get('samples_in', 0)} samples "
        f"({r.get('rejects', 0)} rejected); {r['clips_per_s']:.2f} clips/s; tokens/s "
        + ", ".join(f"{k} {v:.0f}" for k, v in r["tokens_per_s"].items()),
        f"  dataset: {t['records']} records, {t['samples_in']} samples in, {t['samples_rejected']} rejected, "
        f"tokens " + ", ".join(f"{k} {v}" for k, v in t["tokens"].items()),
        "  rejects by reason: " + (", ".join(f"{k} {v}" for k, v in s["rejects_by_reason"].items()) or "none"),
    ]
    if s["stage_seconds"]:
        lines.append(
            "  stage seconds (summed over workers): " + ", ".join(f"{k} {v:.2f}" for k, v in s["stage_seconds"].items())
        )
    rows = s.get("tokenizer_rows") or {}
    if rows.get("encoded"):
        lines.append(
            f"  tokenizer batches: {rows['encoded']} rows encoded, {rows['padded']} padding rows "
            f"({100 * rows['padded_fraction']:.1f}%)"
        )
    lines.append("  tokenizers: " + "; ".join(f"{k} {v}" for k, v in s["tokenizers"].items()))
    return "\n".join(lines)


class ShardProgress:
    """A tqdm bar over input shards, advanced by polling the store's done markers."""

    def __init__(self, job: Job, enabled: bool | None = None, interval: float = 1.0):
        self.job, self.interval = job, interval
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ShardProgress:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        from tqdm import tqdm

        names = set(self.job.input_names)
        bar = tqdm(
            total=len(names),
            initial=len(self.job.done_before),
            unit="shard",
            file=sys.stderr,
            desc=f"{self.job.name}@{self.job.version}",
            leave=False,
        )
        try:
            while True:
                try:
                    n = len(set(self.job.work.done_shards()) & names)
                    bar.update(n - bar.n)
                except Exception:  # noqa: BLE001 - progress must never break the job
                    pass
                # reading the markers costs one small file each: poll big jobs less often
                if self._stop.wait(max(self.interval, len(names) / 500)):
                    break
        finally:
            bar.close()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
