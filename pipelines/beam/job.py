"""The Beam pre-tokenization job (``videopoet pipeline run --runner beam``).

    Create(input shard URIs) -> Reshuffle -> ParDo(TokenizeShard) -> done markers in the store
    then, on the driver: commit through the dataset store (manifest last) and print the summary.

* Runner: the DirectRunner by default; ``workers > 1`` adds ``--direct_running_mode=multi_processing
  --direct_num_workers=N``. Any other flags (``--runner=DataflowRunner --project ...``) pass through
  to ``PipelineOptions`` unchanged; ``dry_run`` returns the options it would submit without running.
* Unit of work: one input shard (:func:`videopoet.pipelines.shard.process_shard`), so work is
  resumable and the output does not depend on the number of workers or on retries.
* Tokenizers are loaded once per worker process through ``apache_beam.utils.shared.Shared``; the
  DirectRunner's local worker processes first claim their share of the cores
  (:mod:`videopoet.pipelines.pinning`).
* Metrics: Beam counters ``videopoet/{shards,samples_in,records,clips,images,rejects,
  reject_<reason>,tokens_<kind>,ms_<stage>,encoded_rows,padded_rows}``; progress from the store's done markers.
"""

from __future__ import annotations

import os
import time
from typing import Any

from videopoet.pipelines import driver, pinning, shard
from videopoet.pipelines.beam import quiet
from videopoet.pipelines.config import PipelineConfig
from videopoet.pipelines.errors import PipelineError
from videopoet.pipelines.inputs import list_input_shards
from videopoet.pipelines.tokenize import Tokenizers, load_tokenizers
from videopoet.schemas.config import from_dict, to_dict
from videopoet.schemas.errors import VideoPoetError

__all__ = ["TokenizeShard", "build_options", "run_beam"]

NAMESPACE = "videopoet"


def build_options(workers: int = 1, runner_args: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The ``PipelineOptions`` flags: the DirectRunner (multi-processing with N workers) unless the
    runner flags choose another runner, whose flags pass through unchanged."""
    args = list(runner_args)
    chosen = None
    for i, a in enumerate(args):
        if a.startswith("--runner="):
            chosen = a.split("=", 1)[1]
        elif a == "--runner" and i + 1 < len(args):
            chosen = args[i + 1]
    flags: list[str] = []
    if chosen is None:
        flags.append("--runner=DirectRunner")
        chosen = "DirectRunner"
    if chosen in ("DirectRunner", "direct", "BundleBasedDirectRunner") or chosen.endswith("DirectRunner"):
        has_mode = any(a.startswith("--direct_running_mode") for a in args)
        has_n = any(a.startswith("--direct_num_workers") for a in args)
        if not has_mode:
            flags.append(f"--direct_running_mode={'multi_processing' if workers > 1 else 'in_memory'}")
        if not has_n:
            flags.append(f"--direct_num_workers={max(1, workers)}")
        if not any(a.startswith("--default_sdk_harness_log_level") for a in args):
            # local worker processes log every channel they open at INFO; keep warnings and errors
            flags.append("--default_sdk_harness_log_level=WARNING")
    return flags + args


def _flag_values(flags: list[str]) -> dict[str, str]:
    """``--name=value`` and ``--name value`` flags as a dict (the last one wins, as in argparse)."""
    values: dict[str, str] = {}
    for i, flag in enumerate(flags):
        if not flag.startswith("--"):
            continue
        if "=" in flag:
            key, value = flag[2:].split("=", 1)
            values[key] = value
        elif i + 1 < len(flags) and not flags[i + 1].startswith("--"):
            values[flag[2:]] = flags[i + 1]
    return values


def local_workers(flags: list[str]) -> int:
    """How many worker processes the DirectRunner starts on this machine for these flags (1 when it
    runs in the driver's process or another runner runs the job)."""
    value = _flag_values(flags)
    if not value.get("runner", "").endswith("DirectRunner") or value.get("direct_running_mode") != "multi_processing":
        return 1
    raw = value.get("direct_num_workers", "1")
    try:
        workers = int(raw)
    except ValueError:
        workers = 0
    if workers < 1:
        raise PipelineError(f"--direct_num_workers must be a positive whole number, got {raw!r}")
    return workers


class _Loaded:
    """Weak-referenceable holder for the Shared cache."""

    def __init__(self, toks: Tokenizers):
        self.toks = toks


def _beam_dofn_base():
    import apache_beam as beam

    return beam.DoFn


class TokenizeShard(_beam_dofn_base()):
    """ParDo over input shard URIs: tokenizes each into the store's staging area."""

    def __init__(
        self,
        cfg: dict[str, Any],
        root: str,
        name: str,
        version: str,
        fingerprints: dict[str, str] | None = None,
        cores: dict[str, Any] | None = None,
    ):
        from apache_beam.utils import shared

        self.cfg_dict, self.root, self.name, self.version = cfg, root, name, version
        self.fingerprints = fingerprints
        self.cores = cores  # {"dir", "workers"}: local worker processes claim their share of the cores
        self._shared = shared.Shared()

    def setup(self) -> None:
        if self.cores:  # before the tokenizers load: XLA sizes its thread pool from the cores it may use
            pinning.claim_cores(self.cores["dir"], self.cores["workers"])
        self.cfg = from_dict(PipelineConfig, self.cfg_dict)
        key = f"{self.cfg.video_tokenizer}|{self.cfg.audio_tokenizer}|{self.cfg.text_tokenizer}"
        self.loaded = self._shared.acquire(lambda: _Loaded(load_tokenizers(self.cfg)), tag=key)
        got = self.loaded.toks.fingerprints()
        if self.fingerprints is not None and got != self.fingerprints:
            diff = sorted(k for k in got if got[k] != self.fingerprints.get(k))
            raise PipelineError(
                f"a Beam worker loaded different tokenizers than the driver "
                f"({', '.join(diff)}); give every worker the same checkpoints"
            )
        self.work = driver.open_work(self.root, self.name, self.version, self.cfg)

    def process(self, uri: str):
        from apache_beam.metrics import Metrics

        def c(name: str):
            return Metrics.counter(NAMESPACE, name)

        try:
            result = shard.process_shard(uri, self.cfg, self.loaded.toks, self.work, on_sample=c("samples_seen").inc)
        except Exception:
            # another job of this build published the staging area from under this shard: not this job's
            # failure (the driver then accepts that version or refuses it); any other: the shard's failure
            if driver.version_published(self.work):
                c("shards_published_meanwhile").inc()
                return
            raise
        if result.skipped:
            c("shards_skipped").inc()
            return
        stats = result.stats
        c("shards").inc()
        for k in ("samples_in", "samples_ok", "records", "clips", "images", "rejects"):
            c(k).inc(getattr(stats, k))
        for reason, n in stats.rejects_by_reason.items():
            c(f"reject_{reason}").inc(n)
        for k, v in stats.tokens.items():
            c(f"tokens_{k}").inc(v)
        for stage, value in result.timing.items():
            if stage.endswith("_rows"):  # tokenizer batch rows: counts, not seconds
                c(stage).inc(int(value))
            else:
                c(f"ms_{stage}").inc(int(round(value * 1000)))
        c(f"worker_pid_{os.getpid()}").inc()
        yield result.name


def _counters(result) -> dict[str, int]:
    from apache_beam.metrics.metric import MetricsFilter

    out: dict[str, int] = {}
    try:
        q = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    except Exception:  # noqa: BLE001 - some runners do not report metrics
        return out
    for m in q.get("counters", []):
        v = m.committed if m.committed is not None else m.attempted
        out[m.key.metric.name] = out.get(m.key.metric.name, 0) + int(v or 0)
    return out


def run_beam(
    input_glob: str,
    name: str,
    version: str,
    root: str,
    cfg: PipelineConfig,
    *,
    workers: int = 1,
    runner_args: list[str] | tuple[str, ...] = (),
    dry_run: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run (or, with ``dry_run``, describe) the Beam job; returns the summary dict."""
    flags = build_options(workers, runner_args)
    if dry_run:
        from apache_beam.options.pipeline_options import PipelineOptions

        uris = list_input_shards(input_glob)
        opts = PipelineOptions(flags)
        return {
            "dry_run": True,
            "flags": flags,
            "options": opts.get_all_options(drop_default=True),
            "inputs": len(uris),
            "first_input": uris[0],
            "dataset": f"{name}@{version}",
            "root": root,
            "pipeline_config": to_dict(cfg),
        }
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    t0 = time.perf_counter()
    job = driver.prepare_job(input_glob, name, version, root, cfg)
    runner_info = {"name": "beam", "beam_version": beam.__version__, "workers": workers, "flags": flags}
    counters: dict[str, int] = {}
    n_local = local_workers(flags)
    if n_local > 1:
        runner_info["worker_cores"] = pinning.core_plan(n_local)
    if job.already_published is None and job.todo:
        opts = PipelineOptions(flags)
        with driver.ShardProgress(job, enabled=progress), pinning.worker_slots(n_local) as cores:
            p = beam.Pipeline(options=opts)
            _ = (
                p
                | "InputShards" >> beam.Create(job.todo)
                | "Spread" >> beam.Reshuffle()
                | "Tokenize"
                >> beam.ParDo(TokenizeShard(to_dict(cfg), root, name, version, job.tokenizers.fingerprints(), cores))
            )
            try:
                with quiet.quiet_workers():
                    result = p.run()
                    result.wait_until_finish()
            except VideoPoetError:
                raise
            except Exception as e:  # noqa: BLE001 - a worker's failure surfaces as a runner error
                if driver.adopt_published(job) is None:  # not: another job of the build published meanwhile
                    raise PipelineError(
                        f"the Beam job failed ({_last_line(e)}); finished shards are kept - run the same "
                        f"command again to resume"
                    ) from e
                result = None
        counters = _counters(result) if result is not None else {}
    before = set(job.done_before)
    markers = (
        {}
        if job.already_published is not None
        else {n: mk for n, mk in job.work.done_shards().items() if n not in before}
    )
    manifest = driver.commit_job(job, runner_info)
    wall = time.perf_counter() - t0
    timings = {k[3:]: v / 1000 for k, v in counters.items() if k.startswith("ms_")}
    timings.update({k: v for k, v in counters.items() if k.endswith("_rows")})
    summary = driver.summarize(job, manifest, wall, timings, markers)
    summary["runner"] = {
        **runner_info,
        "counters": counters,
        "worker_processes": sum(1 for k in counters if k.startswith("worker_pid_")),
    }
    return summary


def _last_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[-1][:300] if lines else ''}"
