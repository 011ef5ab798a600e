"""The Ray pre-tokenization job (``videopoet pipeline run --runner ray``), on Ray Data.

    from_items(input shards not yet done)             one block per input shard (the unit of work)
      -> flat_map(plan_windows)                       CPU tasks: read, validate, decode, clip, audio
      -> map_batches(TokenizeWindows, concurrency=N)  actor pool; each actor loads the tokenizers once
      -> groupby(shard).map_groups(write_shard)       one task per shard: ShardWriter + rejects + done marker
    then, on the driver: commit through the dataset store (manifest last) and print the summary.

Same stages, store and commit as the Beam job (:mod:`videopoet.pipelines.driver`,
:mod:`videopoet.pipelines.shard`), and the same tokenization windows (:mod:`.windows`), so both
runners write byte-identical shards and the same fingerprint.

Cluster: ``address=None`` starts a local Ray on 127.0.0.1 for the job and shuts it down at the end;
``address="127.0.0.1:6379"`` (or ``auto``, or ``ray://host:10001``) joins a running cluster, whose
workers must be able to import ``videopoet`` (same environment, or a ``runtime_env``). Inside a Ray
Jobs API job (``ray job submit -- videopoet pipeline run --runner ray ...``) the job's own cluster
is used (``RAY_ADDRESS`` is set there).

Fault tolerance: Ray restarts a tokenizer actor that dies and retries the tasks it held; every
write is idempotent (a shard is written to a temporary name and renamed; its done marker is written
atomically after it; re-running a window yields the same bytes), so a killed worker or node costs
time, never a lost or duplicated record.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from typing import Any

import msgpack
import numpy as np

from videopoet.pipelines import driver, pinning
from videopoet.pipelines.config import PipelineConfig
from videopoet.pipelines.errors import PipelineError
from videopoet.pipelines.ray import windows
from videopoet.pipelines.shard import TokenizedWindow, assemble_shard
from videopoet.pipelines.tokenize import load_tokenizers, tokenize_items
from videopoet.schemas.config import from_dict, to_dict
from videopoet.schemas.record import decode_record, encode_record
from videopoet.schemas.shard_stats import ShardStats

__all__ = ["TokenizeWindows", "run_ray", "write_shard_group"]


class TokenizeWindows:
    """Actor: tokenizes windows in batches. Loads the tokenizers once, checks their fingerprints."""

    def __init__(self, cfg: dict[str, Any], fingerprints: dict[str, str], cores: dict[str, Any] | None = None):
        if cores:  # actors of a local cluster claim their share of the cores before the tokenizers load
            pinning.claim_cores(cores["dir"], cores["workers"])
        self.cfg = from_dict(PipelineConfig, cfg)
        self.toks = load_tokenizers(self.cfg)
        got = self.toks.fingerprints()
        if got != fingerprints:
            diff = sorted(k for k in got if got[k] != fingerprints.get(k))
            raise PipelineError(
                f"a Ray worker loaded different tokenizers than the driver ({', '.join(diff)}); "
                f"give every node the same checkpoints"
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        out: dict[str, list] = {
            k: []
            for k in (
                "shard",
                "uri",
                "window",
                "final",
                "samples_in",
                "sha256",
                "size",
                "pre_rejects",
                "results",
                "timing",
            )
        }
        for i in range(len(batch["shard"])):
            items = windows.unpack_items(batch["items"][i])
            timing: Counter = Counter(msgpack.unpackb(batch["timing"][i], raw=False))
            t0 = time.perf_counter()
            recs, failed = tokenize_items(items, self.toks, self.cfg, timing) if items else ([], {})
            timing["tokenize_wall"] += time.perf_counter() - t0
            seen: list[str] = []
            for it in items:
                if it.sample_key not in seen:
                    seen.append(it.sample_key)
            result = {"records": [encode_record(r) for r in recs], "failed": failed, "samples": seen}
            for k in ("shard", "uri", "window", "final", "samples_in", "sha256", "size", "pre_rejects"):
                out[k].append(batch[k][i])
            out["results"].append(msgpack.packb(result, use_bin_type=True))
            out["timing"].append(msgpack.packb(dict(timing)))
        return out


def write_shard_group(
    group: dict[str, np.ndarray], cfg: dict[str, Any], root: str, name: str, version: str, fingerprints: dict[str, str]
) -> dict[str, Any]:
    """All windows of one input shard -> :func:`assemble_shard` (output shard, rejects file, done marker)."""
    pcfg = from_dict(PipelineConfig, cfg)
    order = np.argsort(np.asarray(group["window"], dtype=np.int64), kind="stable")
    windows_seen = [int(group["window"][i]) for i in order]
    shard = str(group["shard"][order[0]])
    if windows_seen != list(range(len(windows_seen))) or not bool(group["final"][order[-1]]):
        raise PipelineError(f"{shard}: windows {windows_seen} are incomplete (a bug; please report)")
    work = driver.open_work(root, name, version, pcfg)
    if work.is_done(shard):  # a retried task after the marker was written: nothing to redo
        return {"shard": [shard], "marker": [json.dumps(work.done_shards()[shard].to_marker())], "timing": [b""]}
    timing: Counter = Counter()

    def tokenized():
        for i in order:
            res = msgpack.unpackb(group["results"][i], raw=False)
            for k, v in msgpack.unpackb(group["timing"][i], raw=False).items():
                timing[k] += v
            yield TokenizedWindow(
                rejects=msgpack.unpackb(group["pre_rejects"][i], raw=False),
                samples_in=int(group["samples_in"][i]),
                records=[decode_record(blob) for blob in res["records"]],
                samples=list(res["samples"]),
                failed=dict(res["failed"]),
            )

    last = order[-1]
    source = {
        "name": shard,
        "size": int(group["size"][last]),
        "sha256": str(group["sha256"][last]),
        "uri": str(group["uri"][last]),
    }
    stats = assemble_shard(shard, source, tokenized(), work, fingerprints, timing)
    return {"shard": [shard], "marker": [json.dumps(stats.to_marker())], "timing": [msgpack.packb(dict(timing))]}


def _plan(row: dict[str, Any], cfg: dict[str, Any]) -> list[dict[str, Any]]:
    return list(windows.plan_windows(row["uri"], from_dict(PipelineConfig, cfg)))


def _is_loopback(address: str) -> bool:
    host = address.split("://")[-1].rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def _init_ray(address: str | None, num_cpus: int | None):
    """Join ``address`` (or RAY_ADDRESS), else start a local Ray on loopback. Returns whether we started it."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet = {"log_to_driver": False, "logging_level": "WARNING"}
    if address:
        ray.init(address=address, _node_ip_address="127.0.0.1" if _is_loopback(address) else None, **quiet)
        return True
    ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=num_cpus, **quiet)
    return True


def run_ray(
    input_glob: str,
    name: str,
    version: str,
    root: str,
    cfg: PipelineConfig,
    *,
    workers: int = 1,
    address: str | None = None,
    concurrency: int | None = None,
    num_cpus_per_actor: float = 1.0,
    num_gpus_per_actor: float = 0.0,
    windows_per_call: int = 1,
    dry_run: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run (or resume) the job on Ray and commit ``name@version``; returns the end summary."""
    t_start = time.time()
    job = driver.prepare_job(input_glob, name, version, os.path.abspath(root) if "://" not in root else root, cfg)
    concurrency = concurrency or max(1, workers)
    plan = {
        "runner": "ray",
        "address": address or os.environ.get("RAY_ADDRESS") or "local (127.0.0.1)",
        "tokenizer_actors": concurrency,
        "num_cpus_per_actor": num_cpus_per_actor,
        "num_gpus_per_actor": num_gpus_per_actor,
        "windows_per_call": windows_per_call,
        "inputs": len(job.inputs),
        "todo": len(job.todo),
        "dataset": f"{name}@{version}",
        "root": job.root,
    }
    if dry_run:
        return plan
    if job.already_published is not None:
        return driver.summarize(job, job.already_published, time.time() - t_start)
    new_markers: dict[str, ShardStats] = {}
    timings: Counter = Counter()
    runner = {"name": "ray", "workers": workers, "tokenizer_actors": concurrency, "address": plan["address"]}
    if job.todo:
        import ray
        import ray.data

        started = _init_ray(address, None if address else max(2, workers + 1))
        try:
            cpus = float(ray.cluster_resources().get("CPU", 0))
            if concurrency * num_cpus_per_actor > cpus - 1:
                raise PipelineError(
                    f"{concurrency} tokenizer actor(s) x {num_cpus_per_actor:g} CPU leave no CPU of the cluster's "
                    f"{cpus:g} for the read/decode tasks; use fewer --actors or a bigger cluster"
                )
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = bool(progress) if progress is not None else ctx.enable_progress_bars
            ctx.execution_options.preserve_order = False
            cfg_d, fps = to_dict(job.cfg), job.tokenizers.fingerprints()
            # a cluster of this machine alone: the tokenizer actors are pinned to their share of the cores
            with pinning.worker_slots(concurrency if started else 1) as cores:
                if cores:
                    runner["worker_cores"] = pinning.core_plan(concurrency)
                ds = ray.data.from_items([{"uri": u} for u in job.todo], override_num_blocks=len(job.todo))
                ds = ds.flat_map(_plan, fn_kwargs={"cfg": cfg_d}, num_cpus=1)
                ds = ds.map_batches(
                    TokenizeWindows,
                    fn_constructor_kwargs={"cfg": cfg_d, "fingerprints": fps, "cores": cores},
                    batch_size=windows_per_call,
                    compute=ray.data.ActorPoolStrategy(size=concurrency),
                    num_cpus=num_cpus_per_actor,
                    num_gpus=num_gpus_per_actor or None,
                    batch_format="numpy",
                )
                ds = ds.groupby("shard", num_partitions=len(job.todo)).map_groups(
                    write_shard_group,
                    batch_format="numpy",
                    fn_kwargs={"cfg": cfg_d, "root": job.root, "name": name, "version": version, "fingerprints": fps},
                )
                with driver.ShardProgress(job, enabled=progress):
                    try:
                        rows = ds.take_all()
                    except Exception:  # a shard's failure, unless another job of the build published meanwhile
                        if driver.adopt_published(job) is None:
                            raise
                        rows = []
            for r in rows:
                mk = ShardStats.from_marker(json.loads(r["marker"]))
                new_markers[mk.input_name] = mk
                if r["timing"]:
                    for k, v in msgpack.unpackb(r["timing"], raw=False).items():
                        timings[k] += v
        finally:
            if started:
                ray.shutdown()
    manifest = driver.commit_job(job, runner=runner)
    return driver.summarize(job, manifest, time.time() - t_start, dict(timings), new_markers)
