"""Training data: verified dataset -> Grain -> task mixture with AGD, curriculum and CFG dropout.

Pipeline::

    store.open_dataset + store.verify            refuse missing/altered shards, fingerprint or schema mismatch
    cache.local_shards (object storage only)      this host's copies, each checked against the manifest's sha256
    grain.MapDataset.source(ArrayRecordDataSource(shards)).map(decode_record)   random access, global index
    index: one pass over the records -> RecordInfo per record (shapes, text, condition streams)
    plan:  every (task, variant) a record supports -> its sequence length; AGD groups = (image|video, length)
    grain.MapDataset.range(steps).map(step -> this process's slice of the global batch of that step)
          .to_iter_dataset(ReadOptions(threads, prefetch))       iterator state = the next step (checkpointed)

**Every global batch is a pure function of (seed, step)** and of the dataset and config, whatever
the number of processes: each process builds only its rows of the same global batch.

* Step -> group: a counter-based hash of (seed, step) draws the image or video side (curriculum:
  ``image_frac_start`` before ``switch_step``, or the first ``switch_fraction`` of the steps, then
  ``image_frac_end``) and
  then one group of that side by weight. A task's mixture weight is spread over the groups holding
  its (record, variant) pairs, in proportion to how many each holds.
* Group -> records (global shuffle): each group has a stream of its eligible records, shuffled anew
  each epoch (permutation seeded by (seed, group, epoch)). Step ``s`` is the ``k``-th step of its
  group (``k`` counted from the schedule), so it takes stream positions ``k*B .. k*B + B - 1``.
* Slot -> task: among the (task, variant) options the record has in the group, by weight (hash of
  (seed, step, slot)). CFG dropout hides the text slot (``cfg_dropout_text``) and/or the input
  streams (``cfg_dropout_inputs``) of a slot: positions stay (the length is the group's), masked.
* AGD: every sequence of a step has the group's length, so there is no sequence padding at all;
  the only masked positions are unused text slots and CFG-hidden conditions. The trainer logs
  ``pad_fraction`` (masked positions / all positions) and ``pad_fraction_without_agd`` (what padding
  every batch to the longest sequence of the plan would have cost).

Records that lack a task's inputs are skipped for that task and counted (``Index.skipped``).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import math
import os
import threading
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from videopoet.schemas import cache, objstore, store
from videopoet.schemas.errors import ConfigError, DatasetError, SchemaVersionError, VerifyError
from videopoet.schemas.manifest import tokenizer_refs
from videopoet.schemas.record import READABLE_VERSIONS, TokenRecord, decode_record
from videopoet.trainer import tasks
from videopoet.trainer.config import TASKS, DataConfig, TrainConfig

BATCH_KEYS = (
    "tokens",
    "valid",
    "text_index",
    "text_ids",
    "text_mask",
    "prefix_len",
    "targets",
    "loss_mask",
    "target_changed",
    "task_id",
)


class DataMismatchError(VerifyError):
    """The dataset is not the one a run was started on (fingerprint mismatch)."""


class NoTrainableTasksError(DatasetError):
    """No task of the mixture can be built from any record of the dataset."""


# ------------------------------------------------------------------------------------- hashing
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def uniform(*keys) -> np.ndarray:
    """Counter-based uniforms in [0, 1) from integer keys (scalars or broadcastable arrays)."""
    h = np.uint64(0x6A09E667F3BCC908)
    with np.errstate(over="ignore"):
        for k in keys:
            h = _mix(h ^ (np.asarray(k).astype(np.uint64) + _GOLDEN))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


# ------------------------------------------------------------------------------------- source
def open_verified(ref: str, root: str | None = None, verify: bool = True, expect_fingerprint: str | None = None):
    """Open ``NAME@VERSION`` (or a version dir) and refuse it unless it verifies."""
    ds = store.open_dataset(ref, root)
    version = ds.manifest.get("record_schema_version")
    if version not in READABLE_VERSIONS:
        raise SchemaVersionError(
            f"dataset {ds.ref} holds TokenRecord schema version {version!r}; "
            f"this trainer reads {sorted(READABLE_VERSIONS)}"
        )
    if expect_fingerprint and ds.fingerprint != expect_fingerprint:
        raise DataMismatchError(
            f"dataset {ds.ref} has fingerprint {ds.fingerprint[:12]}, but this run was trained on "
            f"{expect_fingerprint[:12]}; use the original dataset or a new --out"
        )
    if verify:  # a remote dataset: sizes here, contents as the cache fetches them (local_shards)
        report = store.verify(ds, hashes=not objstore.is_remote(ds.uri))
        if not report.ok:
            more = f" (+{len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
            raise VerifyError(f"dataset {ds.ref} failed verification: {report.problems[0]}{more}")
    return ds


def manifest_vocabulary(ds) -> dict[str, int]:
    """The model vocabulary fields (``visual_size``, ``audio_codebook``, ``audio_levels``) that the dataset's
    tokenizers imply, as its manifest records them; fields it does not record are left out."""
    toks = (ds.manifest.get("lineage") or {}).get("tokenizers") or {}
    video = (toks.get("video") or {}).get("config") or {}
    audio = (toks.get("audio") or {}).get("config") or {}
    out = {}
    if "lfq_bits" in video:
        out["visual_size"] = 2 ** int(video["lfq_bits"])
    if "codebook_size" in audio:
        out["audio_codebook"] = int(audio["codebook_size"])
    if "levels_used" in audio:
        out["audio_levels"] = int(audio["levels_used"])
    return out


def vocabulary_overrides(ds, config, overrides: Sequence[str] = ()) -> list[str]:
    """The dataset's vocabulary (:func:`manifest_vocabulary`) as ``model.*`` overrides to place before the
    user's own: the model's vocabulary follows the tokenizers the dataset was made with unless the
    ``overrides`` or a YAML ``config`` set it. ``ds``: a dataset, or the datasets of a mixture (which agree:
    :func:`check_agreement`; a field only some record is taken from those)."""
    import os

    import yaml

    explicit = {o.split("=", 1)[0].strip() for o in overrides if "=" in o}
    if isinstance(config, str) and os.path.isfile(config):
        with open(config) as f:
            doc = yaml.safe_load(f) or {}
        model = doc.get("model") if isinstance(doc, dict) else None
        explicit |= {f"model.{k}" for k in (model if isinstance(model, dict) else {})}
    vocab: dict[str, int] = {}
    for one in ds if isinstance(ds, list | tuple) else [ds]:
        vocab.update({k: v for k, v in manifest_vocabulary(one).items() if k not in vocab})
    return [f"model.{k}={v}" for k, v in vocab.items() if f"model.{k}" not in explicit]


def check_vocabulary(ds, cfg: TrainConfig) -> None:
    """Refuse a model vocabulary that differs from the dataset's tokenizers (as the manifest records them)."""
    m = cfg.model
    want = [f"model.{k}={v}" for k, v in manifest_vocabulary(ds).items() if getattr(m, k) != v]
    if want:
        raise DataMismatchError(
            f"dataset {ds.ref} was tokenized for a different vocabulary than model {m.name!r}: set {' '.join(want)}"
        )


def shard_files(ds, progress=None) -> list[str]:
    """Local paths of the shards of ``ds``: its own files for a local dataset; for one on object storage
    this host's checked copies (:func:`videopoet.schemas.cache.local_shards`: each one's sha256
    equals the manifest's before it is used, a shard missing from the bucket is named)."""
    if objstore.is_remote(ds.uri):
        return cache.local_shards(ds, progress=progress)
    return [p[len("file://") :] if p.startswith("file://") else p for p in ds.shard_paths()]


def record_source(paths: Sequence[str]) -> grain.MapDataset:
    """Grain MapDataset of TokenRecords over local ArrayRecord shards (global index across shards)."""
    local = [p[len("file://") :] if p.startswith("file://") else p for p in paths]
    remote = [p for p in local if objstore.is_remote(p)]
    if remote:
        raise DatasetError(
            f"record_source reads local shard files, got {remote[0]} (open the dataset with "
            "open_mixture, which fetches remote shards into this host's cache)"
        )
    src = grain.sources.ArrayRecordDataSource(local)
    return grain.MapDataset.source(src).map(decode_record)


class ListSource:
    """In-memory records as a Grain data source (tests, tools)."""

    def __init__(self, records: Sequence[TokenRecord]):
        self._records = list(records)

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i):
        return self._records[i]


# ------------------------------------------------------------------------------------- index + plan
@dataclasses.dataclass
class Group:
    name: str  # e.g. "video/L391"
    image: bool
    length: int
    records: np.ndarray  # int64 global record indices (sorted)
    options: list[list[tuple[str, int, float]]]  # per record: (task, variant, weight)
    weight: float  # share of the mixture before the curriculum
    tasks: tuple[str, ...]


@dataclasses.dataclass
class Plan:
    groups: list[Group]
    skipped: dict[str, dict[str, int]]  # task -> reason -> records
    eligible: dict[str, int]  # task -> records
    max_length: int

    def summary(self) -> dict[str, Any]:
        return {
            "groups": [
                {"name": g.name, "tasks": list(g.tasks), "records": int(g.records.size), "weight": round(g.weight, 6)}
                for g in self.groups
            ],
            "eligible": dict(self.eligible),
            "skipped": {k: dict(v) for k, v in self.skipped.items() if v},
        }


def task_options(cfg: TrainConfig) -> tasks.TaskOptions:
    d = cfg.data
    return tasks.TaskOptions(
        vocab=cfg.model.vocab,
        text_len=d.text_len,
        fp_given_frames=tuple(d.fp_given_frames),
        avcont_given_frames=d.avcont_given_frames,
    )


def make_plan(infos: Sequence[tasks.RecordInfo], cfg: TrainConfig) -> Plan:
    opts = task_options(cfg)
    weights = {t: w for t, w in cfg.data.mixture.items() if w > 0}
    skipped = {t: collections.Counter() for t in weights}
    eligible = collections.Counter()
    lengths: dict[tuple, int] = {}
    per_group: dict[tuple[bool, int], dict[int, list[tuple[str, int]]]] = collections.defaultdict(dict)
    pairs = collections.Counter()  # task -> (record, variant) pairs
    pairs_in = collections.Counter()  # (task, group key) -> pairs
    for idx, info in enumerate(infos):
        for task in weights:
            reason = tasks.missing(task, info, opts)
            vs = () if reason else tasks.variants(task, info, opts)
            if reason or not vs:
                skipped[task][reason or "no_variant"] += 1
                continue
            eligible[task] += 1
            for v in vs:
                key = (task, v, info)
                if key not in lengths:
                    lengths[key] = tasks.sequence_length(task, v, info, opts)
                bucket = cfg.data.length_bucket
                gk = (task in tasks.IMAGE_TASKS, -(-lengths[key] // bucket) * bucket)
                per_group[gk].setdefault(idx, []).append((task, v))
                pairs[task] += 1
                pairs_in[(task, gk)] += 1
    if not per_group:
        reasons = {t: dict(c) for t, c in skipped.items()}
        raise NoTrainableTasksError(f"no task of the mixture can use any record of the dataset (skipped: {reasons})")
    groups = []
    for gk in sorted(per_group):
        image, length = gk
        recs = sorted(per_group[gk])
        options = []
        for r in recs:
            opts_r = per_group[gk][r]
            nvar = collections.Counter(t for t, _ in opts_r)
            options.append([(t, v, weights[t] / nvar[t]) for t, v in opts_r])
        gw = sum(weights[t] * pairs_in[(t, gk)] / pairs[t] for t in weights if pairs[t] and pairs_in[(t, gk)])
        tasks_in = tuple(t for t in TASKS if pairs_in[(t, gk)])
        groups.append(
            Group(
                name=f"{'image' if image else 'video'}/L{length}",
                image=image,
                length=length,
                records=np.asarray(recs, np.int64),
                options=options,
                weight=gw,
                tasks=tasks_in,
            )
        )
    total = sum(g.weight for g in groups)
    for g in groups:
        g.weight /= total
    return Plan(
        groups=groups,
        skipped={t: dict(c) for t, c in skipped.items()},
        eligible=dict(eligible),
        max_length=max(g.length for g in groups),
    )


# ------------------------------------------------------------------------------------- the mixture
def image_fraction(cfg: TrainConfig, step) -> np.ndarray:
    """P(an image step) at ``step`` under the curriculum (NaN without one)."""
    d = cfg.data
    step = np.asarray(step)
    if not d.curriculum:
        return np.full(step.shape, np.nan)
    switch = d.switch_step if d.switch_step else d.switch_fraction * cfg.steps
    return np.where(step < switch, d.image_frac_start, d.image_frac_end)


class Mixture:
    """Global batches as a pure function of (seed, step); see the module docstring."""

    SALT_SIDE, SALT_GROUP, SALT_OPTION, SALT_DROP_TEXT, SALT_DROP_INPUT = range(5)

    def __init__(
        self,
        records: grain.MapDataset | Sequence[TokenRecord],
        cfg: TrainConfig,
        infos: Sequence[tasks.RecordInfo] | None = None,
        salt: int | None = None,
    ):
        if not isinstance(records, grain.MapDataset):
            records = grain.MapDataset.source(ListSource(records))
        self.records = records
        self.cfg = cfg
        self.salt = salt  # a dataset of a DatasetMixture: its own record shuffles (None: one dataset, as ever)
        self.opts = task_options(cfg)
        self.infos = list(infos) if infos is not None else build_index(records)
        self.plan = make_plan(self.infos, cfg)
        self.batch_size = cfg.batch_size
        self._image = np.array([g.image for g in self.plan.groups])
        self._gweights = np.array([g.weight for g in self.plan.groups])
        self._sched = np.zeros(0, np.int32)  # group of each step
        self._occ = np.zeros(0, np.int64)  # occurrence index of each step within its group
        self._counts = np.zeros(len(self.plan.groups), np.int64)
        self._lock = threading.Lock()
        self._perm_cache: collections.OrderedDict = collections.OrderedDict()

    # ---- schedule
    def image_fraction(self, step) -> np.ndarray:
        return image_fraction(self.cfg, step)

    def _draw_groups(self, steps: np.ndarray) -> np.ndarray:
        seed = self.cfg.seed
        u_side = uniform(seed, steps, self.SALT_SIDE)
        u_grp = uniform(seed, steps, self.SALT_GROUP)
        has_img, has_vid = self._image.any(), (~self._image).any()
        frac = self.image_fraction(steps)
        out = np.empty(steps.shape, np.int32)
        for i in range(steps.size):
            if self.cfg.data.curriculum and has_img and has_vid:
                side = u_side[i] < frac[i]
                w = np.where(self._image == side, self._gweights, 0.0)
            else:
                w = self._gweights
            c = np.cumsum(w / w.sum())
            out[i] = min(int(np.searchsorted(c, u_grp[i], side="right")), len(c) - 1)
        return out

    def _extend(self, upto: int) -> None:
        with self._lock:
            n = self._sched.size
            if upto < n:
                return
            new = max(upto + 1, 2 * n, 1024)
            steps = np.arange(n, new, dtype=np.int64)
            g = self._draw_groups(steps)
            occ = np.empty(g.size, np.int64)
            for gi in range(len(self.plan.groups)):
                sel = g == gi
                occ[sel] = self._counts[gi] + np.arange(int(sel.sum()))
                self._counts[gi] += int(sel.sum())
            self._sched = np.concatenate([self._sched, g])
            self._occ = np.concatenate([self._occ, occ])

    def group_of(self, step: int) -> tuple[int, int]:
        """(group index, occurrence of the group up to this step)."""
        self._extend(step)
        return int(self._sched[step]), int(self._occ[step])

    def _perm(self, gi: int, epoch: int) -> np.ndarray:
        key = (gi, epoch)
        with self._lock:
            p = self._perm_cache.get(key)
            if p is None:
                n = self.plan.groups[gi].records.size
                seed = [self.cfg.seed, gi, epoch, 0x5EED] + ([] if self.salt is None else [self.salt])
                p = np.random.default_rng(seed).permutation(n)
                self._perm_cache[key] = p
                if len(self._perm_cache) > 64:
                    self._perm_cache.popitem(last=False)
            return p

    # ---- batches
    def slot(self, step: int, i: int, where: tuple[int, int] | None = None) -> tuple[int, str, int, bool, bool]:
        """(record index, task, variant, drop_text, drop_inputs) of row ``i`` of the global batch.

        ``where``: (group, occurrence) of the step when a :class:`DatasetMixture` schedules it (default: this
        mixture's own schedule, :meth:`group_of`)."""
        gi, k = self.group_of(step) if where is None else where
        g = self.plan.groups[gi]
        pos = k * self.batch_size + i
        epoch, j = divmod(pos, g.records.size)
        r = int(self._perm(gi, epoch)[j])
        options = g.options[r]
        w = np.array([o[2] for o in options])
        u = uniform(self.cfg.seed, step, i, self.SALT_OPTION)
        c = np.cumsum(w / w.sum())
        task, variant, _ = options[min(int(np.searchsorted(c, u, side="right")), len(c) - 1)]
        d = self.cfg.data
        drop_t = bool(uniform(self.cfg.seed, step, i, self.SALT_DROP_TEXT) < d.cfg_dropout_text)
        drop_i = bool(uniform(self.cfg.seed, step, i, self.SALT_DROP_INPUT) < d.cfg_dropout_inputs)
        return int(g.records[r]), task, int(variant), drop_t, drop_i

    def example(self, step: int, i: int, where: tuple[int, int] | None = None) -> tasks.Example:
        rec_idx, task, variant, drop_t, drop_i = self.slot(step, i, where)
        ex = tasks.build(task, self.records[rec_idx], self.opts, variant)
        return apply_dropout(ex, drop_t, drop_i)

    def local_batch(
        self, step: int, process_index: int = 0, process_count: int = 1, where: tuple[int, int] | None = None
    ) -> dict[str, Any]:
        """Rows ``[p*B/P, (p+1)*B/P)`` of the global batch of ``step`` as numpy arrays (``where`` as in
        :meth:`slot`)."""
        if self.batch_size % process_count:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by {process_count} processes")
        where = self.group_of(step) if where is None else where
        per = self.batch_size // process_count
        rows = [self.example(step, i, where) for i in range(process_index * per, (process_index + 1) * per)]
        gi = where[0]
        out = collate(rows, self.plan.groups[gi].length)
        out["step"] = np.int64(step)
        out["group"] = self.plan.groups[gi].name
        return out

    def global_batch(self, step: int) -> dict[str, Any]:
        return self.local_batch(step, 0, 1)

    def dataset(self, start: int = 0, process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
        """Grain IterDataset of this process's batches for steps ``start .. cfg.steps - 1``."""
        return _step_batches(self, start, process_index, process_count)

    def stats(self) -> dict[str, Any]:
        return {**self.plan.summary(), "max_length": self.plan.max_length}


def _batch_of(mix, step: int, process_index: int, process_count: int) -> dict[str, Any]:
    return mix.local_batch(int(step), process_index, process_count)


def _step_batches(mix, start: int, process_index: int, process_count: int) -> grain.IterDataset:
    """Grain IterDataset of ``mix.local_batch(step)`` for steps ``start .. cfg.steps - 1`` (a :class:`Mixture`
    or a :class:`DatasetMixture`)."""
    fn = functools.partial(_batch_of, mix, process_index=process_index, process_count=process_count)
    ds = grain.MapDataset.range(start, max(start, mix.cfg.steps)).map(fn)
    d = mix.cfg.data
    if d.num_threads == 0 and d.prefetch == 0:
        return ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    return ds.to_iter_dataset(
        grain.ReadOptions(num_threads=max(1, d.num_threads), prefetch_buffer_size=max(1, d.prefetch))
    )


def apply_dropout(ex: tasks.Example, drop_text: bool, drop_inputs: bool) -> tasks.Example:
    if not (drop_text or drop_inputs):
        return ex
    valid = ex.valid.copy()
    text_mask = ex.text_mask
    if drop_text:
        valid &= ex.cond != tasks.COND_TEXT
        text_mask = np.zeros_like(ex.text_mask)
    if drop_inputs:
        valid &= ex.cond != tasks.COND_INPUT
    return dataclasses.replace(ex, valid=valid, text_mask=text_mask)


def pad_example(ex: tasks.Example, length: int) -> tasks.Example:
    """Right-pad to ``length`` with masked PAD positions (only with ``length_bucket > 1``)."""
    n = length - ex.length
    if n < 0:
        raise ValueError(f"example of length {ex.length} does not fit its group length {length}")
    if n == 0:
        return ex

    def pad(a, value):
        return np.concatenate([a, np.full(n, value, a.dtype)])

    return dataclasses.replace(
        ex,
        tokens=pad(ex.tokens, 0),
        valid=pad(ex.valid, False),
        text_index=pad(ex.text_index, -1),
        cond=pad(ex.cond, tasks.COND_NONE),
        changed=pad(ex.changed, False),
    )


def collate(rows: Sequence[tasks.Example], length: int | None = None) -> dict[str, Any]:
    if length is not None:
        rows = [pad_example(r, length) for r in rows]
    lengths = {r.length for r in rows}
    if len(lengths) != 1:
        raise ValueError(f"AGD: one step's sequences must share a length, got {sorted(lengths)}")
    tgts = [r.targets() for r in rows]
    out = {
        "tokens": np.stack([r.tokens for r in rows]),
        "valid": np.stack([r.valid for r in rows]),
        "text_index": np.stack([r.text_index for r in rows]),
        "text_ids": np.stack([r.text_ids for r in rows]),
        "text_mask": np.stack([r.text_mask for r in rows]),
        "prefix_len": np.array([r.prefix_len for r in rows], np.int32),
        "targets": np.stack([t for t, _ in tgts]),
        "loss_mask": np.stack([m for _, m in tgts]),
        "target_changed": np.stack([r.target_changed() for r in rows]),
        "task_id": np.array([tasks.TASK_ID[r.task] for r in rows], np.int32),
    }
    return out


def build_index(records: grain.MapDataset, threads: int = 4) -> list[tasks.RecordInfo]:
    """One pass over the records: their :class:`~videopoet.trainer.tasks.RecordInfo`."""
    ds = records.map(tasks.RecordInfo.of)
    n = len(ds)
    if n == 0:
        raise DatasetError("the dataset holds no records")
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=64))
    return list(it)


def open_mixture(ref: str, cfg: TrainConfig, root: str | None = None, expect_fingerprint: str | None = None):
    """Verify the dataset and build the mixture. Returns (dataset, Mixture)."""
    ds = open_verified(ref, root, cfg.data.verify, expect_fingerprint)
    check_vocabulary(ds, cfg)
    return ds, Mixture(record_source(shard_files(ds)), cfg)


def batch_spec(mix: Mixture) -> dict[str, Any]:
    """Shapes of a batch are per group; this gives the distinct lengths (for compile-ahead)."""
    return {g.name: g.length for g in mix.plan.groups}


def data_config_summary(d: DataConfig) -> dict[str, Any]:
    return dataclasses.asdict(d)


# ------------------------------------------------------------------------------------- several datasets
class DataSpecError(ConfigError):
    """A ``--data`` mixture spelling that cannot be read (``NAME@VER[=WEIGHT][,NAME@VER[=WEIGHT]...]``)."""


def parse_data_spec(spec: str) -> list[tuple[str, float]]:
    """``NAME@VER[=WEIGHT][,NAME@VER[=WEIGHT]...]`` -> [(reference, weight)], weights normalized to sum 1.

    A weight left out is 1. One dataset is ``[(reference, 1.0)]`` (a version dir that exists is one dataset
    whatever characters its path holds)."""
    text = str(spec).strip()
    if not text:
        raise DataSpecError("--data is empty: expected NAME@VERSION or NAME@VER=WEIGHT,NAME@VER=WEIGHT,...")
    if os.path.isdir(text):
        return [(text, 1.0)]
    parts: list[tuple[str, float]] = []
    for item in text.split(","):
        item = item.strip()
        ref, sep, w = item.partition("=")
        ref = ref.strip()
        if not ref:
            raise DataSpecError(f"bad --data {text!r}: an empty dataset entry (expected NAME@VER=WEIGHT,...)")
        weight = 1.0
        if sep:
            try:
                weight = float(w)
            except ValueError:
                raise DataSpecError(f"bad --data {text!r}: weight {w.strip()!r} of {ref} is not a number") from None
            if not math.isfinite(weight) or weight <= 0:
                raise DataSpecError(f"bad --data {text!r}: weight {w.strip()!r} of {ref} must be a positive number")
        if any(ref == r for r, _ in parts):
            raise DataSpecError(f"bad --data {text!r}: {ref} appears twice")
        parts.append((ref, weight))
    total = sum(w for _, w in parts)
    return [(r, w / total) for r, w in parts]


def is_mixture_spec(spec: str | None) -> bool:
    """Whether ``--data`` names several datasets (one dataset, with or without a weight, trains as ever)."""
    return spec is not None and len(parse_data_spec(spec)) > 1


def mixture_fingerprint(fingerprints: dict[str, str]) -> str:
    """The identity of a mixture's data: sha256 over its datasets' (name, fingerprint), not their weights (which
    a resume may change)."""
    body = json.dumps(sorted(fingerprints.items()), separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def check_agreement(datasets: Sequence) -> None:
    """Refuse datasets whose vocabularies (:func:`manifest_vocabulary`) or tokenizers (the manifests' tokenizer
    references) differ: one model reads all of them, so a token id must mean the same in each."""
    first = datasets[0]
    voc0, refs0 = manifest_vocabulary(first), tokenizer_refs(first.manifest)
    for ds in datasets[1:]:
        voc = manifest_vocabulary(ds)
        for k in sorted(set(voc0) & set(voc)):
            if voc[k] != voc0[k]:
                raise DataMismatchError(
                    f"dataset {ds.ref} differs from {first.ref} in its vocabulary: {k} {voc[k]} vs {voc0[k]} "
                    "(the datasets of a mixture must share their tokenizers)"
                )
        refs = tokenizer_refs(ds.manifest)
        for m in sorted(set(refs0) & set(refs)):
            if refs[m].fingerprint != refs0[m].fingerprint:
                raise DataMismatchError(
                    f"dataset {ds.ref} differs from {first.ref} in its tokenizers: tokenizers.{m} "
                    f"{refs[m].fingerprint[:12]} vs {refs0[m].fingerprint[:12]} "
                    "(the datasets of a mixture must share their tokenizers)"
                )


def open_datasets(spec: str, root: str | None = None, verify: bool = True) -> list[tuple[Any, float]]:
    """Open (and, with ``verify``, verify) every dataset of ``--data``: [(dataset, normalized weight)] in the
    spelling's order. Several datasets must have distinct names and agree (:func:`check_agreement`)."""
    out = [(open_verified(ref, root, verify), w) for ref, w in parse_data_spec(spec)]
    names = collections.Counter(ds.name for ds, _ in out)
    twice = [n for n, c in names.items() if c > 1]
    if twice:
        refs = [ds.ref for ds, _ in out if ds.name == twice[0]]
        raise DataSpecError(
            f"dataset {twice[0]} appears more than once in --data ({', '.join(refs)}): one version each"
        )
    check_agreement([ds for ds, _ in out])
    return out


def data_identity(opened: Sequence[tuple[Any, float]]) -> dict[str, Any]:
    """``{"ref", "fingerprint"}`` of the datasets of ``--data`` (:func:`open_datasets`): the dataset's own for
    one dataset; for a mixture the resolved spelling and :func:`mixture_fingerprint`, with every dataset under
    ``mixture``, ordered by name (as the run's record)."""
    opened = sorted(opened, key=lambda o: o[0].name)
    if len(opened) == 1:
        return {"ref": opened[0][0].ref, "fingerprint": opened[0][0].fingerprint}
    return {
        "ref": ",".join(f"{ds.ref}={w:g}" for ds, w in opened),
        "fingerprint": mixture_fingerprint({ds.name: ds.fingerprint for ds, _ in opened}),
        "mixture": [{"name": ds.name, "ref": ds.ref, "fingerprint": ds.fingerprint, "weight": w} for ds, w in opened],
    }


def _name_salt(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:15], 16)


class DatasetMixture:
    """A named, weighted mixture of datasets: each global batch comes from one dataset.

    Step -> dataset: within a *segment* of the schedule (the steps from ``from_step`` on, trained with
    one set of weights) the datasets are interleaved in exact proportion: step ``s`` goes to the dataset
    ``d`` with the largest ``w_d * (n + 1) - c_d`` (``n`` steps of the segment before ``s``, ``c_d`` of them
    from ``d``; ties to the first name), so after any prefix of a segment each dataset has had its share
    within one step (as Grain's proportional mixing of MapDatasets does). Dataset -> group -> records ->
    task: that dataset's own :class:`Mixture` (its AGD groups, curriculum at the global step, its
    record streams shuffled with a salt of its name), for the ``k``-th step of that dataset in the
    group. So the task mixture composes *inside* each dataset: pick a dataset by weight, then a group
    and a task for each row from that dataset's records.

    Every batch is a pure function of (seed, step, schedule). A dataset's position is how many steps
    (and per group, stream positions) it has had; a resume with new weights (:meth:`start_at`) keeps
    the schedule before its step and continues every dataset from its position there with the new
    weights. The datasets are ordered by name, so the spelling's order does not matter.
    """

    def __init__(
        self,
        parts: dict[str, Mixture],
        weights: dict[str, float],
        cfg: TrainConfig,
        sources: dict[str, dict] | None = None,
        schedule: Sequence[dict] | None = None,
    ):
        if len(parts) < 2 or set(parts) != set(weights):
            raise ValueError("a DatasetMixture needs two or more named parts, each with a weight")
        self.names = sorted(parts)
        self.parts = [parts[n] for n in self.names]
        self.cfg = cfg
        self.batch_size = cfg.batch_size
        self.sources = dict(sources or {})
        self.weights = self._normalized(weights)
        self.schedule = [dict(s) for s in schedule] if schedule else [{"from_step": 0, "weights": self.weights}]
        groups = [
            dataclasses.replace(g, name=f"{n}/{g.name}")
            for n, p in zip(self.names, self.parts, strict=True)
            for g in p.plan.groups
        ]
        skipped: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        eligible: collections.Counter = collections.Counter()
        for p in self.parts:
            eligible.update(p.plan.eligible)
            for t, c in p.plan.skipped.items():
                skipped[t].update(c)
        self.plan = Plan(
            groups=groups,
            skipped={t: dict(c) for t, c in skipped.items()},
            eligible=dict(eligible),
            max_length=max(g.length for g in groups),
        )
        self._lock = threading.Lock()
        self._reset()

    def _normalized(self, weights: dict[str, float]) -> dict[str, float]:
        total = sum(weights.values())
        return {n: float(weights[n]) / total for n in self.names}

    def _reset(self) -> None:
        self._ds = np.zeros(0, np.int32)  # dataset of each step
        self._grp = np.zeros(0, np.int32)  # group (within its dataset) of each step
        self._occ = np.zeros(0, np.int64)  # occurrence of that (dataset, group)
        self._gcounts = [np.zeros(len(p.plan.groups), np.int64) for p in self.parts]
        self._seg_counts = [0] * len(self.names)

    # ---- the schedule
    def start_at(self, step: int) -> dict | None:
        """Train from ``step`` on with ``self.weights``: the recorded schedule before ``step`` stays, and a new
        segment starts at ``step`` if the weights differ from those in force there. Returns that segment (a
        weight change) or None."""
        kept = [dict(s) for s in self.schedule if int(s["from_step"]) < step]
        change = None
        if not kept or kept[-1]["weights"] != self.weights:
            change = {"from_step": int(step), "weights": dict(self.weights)}
            if kept:
                change["previous"] = dict(kept[-1]["weights"])
            kept.append(change)
        self.schedule = kept
        with self._lock:
            self._reset()
        return change if step > 0 else None

    def _pick(self, steps: np.ndarray) -> np.ndarray:
        """Dataset of each step (consecutive steps following those already scheduled)."""
        starts = [int(s["from_step"]) for s in self.schedule] + [1 << 62]
        out = np.empty(steps.size, np.int32)
        if not steps.size:
            return out
        first, last = int(steps[0]), int(steps[-1])
        order = range(len(self.names))
        i = 0
        for k in range(len(self.schedule)):
            lo, hi = max(starts[k], first), min(starts[k + 1] - 1, last)
            if lo > hi:
                continue
            w = [float(self.schedule[k]["weights"].get(n, 0.0)) for n in self.names]
            if lo == starts[k]:
                self._seg_counts = [0] * len(self.names)
            c = self._seg_counts
            for n in range(lo - starts[k], hi - starts[k] + 1):
                best = max(order, key=lambda d: (w[d] * (n + 1) - c[d], -d))
                c[best] += 1
                out[i] = best
                i += 1
        return out

    def _extend(self, upto: int) -> None:
        with self._lock:
            n = self._ds.size
            if upto < n:
                return
            new = max(upto + 1, 2 * n, 1024)
            steps = np.arange(n, new, dtype=np.int64)
            ds = self._pick(steps)
            grp = np.empty(steps.size, np.int32)
            occ = np.empty(steps.size, np.int64)
            for di, part in enumerate(self.parts):
                idx = np.flatnonzero(ds == di)
                g = part._draw_groups(steps[idx])
                grp[idx] = g
                for gi in range(len(part.plan.groups)):
                    j = idx[g == gi]
                    occ[j] = self._gcounts[di][gi] + np.arange(j.size)
                    self._gcounts[di][gi] += j.size
            self._ds = np.concatenate([self._ds, ds])
            self._grp = np.concatenate([self._grp, grp])
            self._occ = np.concatenate([self._occ, occ])

    def locate(self, step: int) -> tuple[int, int, int]:
        """(dataset index, group within it, occurrence of that group in that dataset) of ``step``."""
        self._extend(step)
        return int(self._ds[step]), int(self._grp[step]), int(self._occ[step])

    def steps_drawn(self, upto: int) -> dict[str, int]:
        """Steps (global batches) each dataset gives to steps ``0 .. upto - 1``: the datasets' positions."""
        if upto <= 0:
            return dict.fromkeys(self.names, 0)
        self._extend(upto - 1)
        counts = np.bincount(self._ds[:upto], minlength=len(self.names))
        return {n: int(c) for n, c in zip(self.names, counts, strict=True)}

    def records_drawn(self, upto: int) -> dict[str, int]:
        """Records (rows of global batches) each dataset gives to steps ``0 .. upto - 1``."""
        return {n: c * self.batch_size for n, c in self.steps_drawn(upto).items()}

    # ---- batches (the Mixture interface the trainer uses)
    def image_fraction(self, step) -> np.ndarray:
        return image_fraction(self.cfg, step)

    def local_batch(self, step: int, process_index: int = 0, process_count: int = 1) -> dict[str, Any]:
        di, gi, k = self.locate(step)
        out = self.parts[di].local_batch(step, process_index, process_count, where=(gi, k))
        out["group"] = f"{self.names[di]}/{out['group']}"
        out["dataset"] = self.names[di]
        return out

    def global_batch(self, step: int) -> dict[str, Any]:
        return self.local_batch(step, 0, 1)

    def dataset(self, start: int = 0, process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
        """Grain IterDataset of this process's batches for steps ``start .. cfg.steps - 1``."""
        return _step_batches(self, start, process_index, process_count)

    def stats(self) -> dict[str, Any]:
        return {
            **self.plan.summary(),
            "max_length": self.plan.max_length,
            "datasets": {n: p.stats() for n, p in zip(self.names, self.parts, strict=True)},
        }

    def record(self) -> dict[str, Any]:
        """What run.json records as the run's ``dataset``: the resolved spelling, the mixture's fingerprint
        (:func:`mixture_fingerprint`), the first dataset's uri and tokenizers (they agree), every dataset
        with its fingerprint and current weight, and the weight schedule."""
        first = self.sources.get(self.names[0], {})
        return {
            "ref": ",".join(f"{self.sources.get(n, {}).get('ref', n)}={self.weights[n]:g}" for n in self.names),
            "fingerprint": mixture_fingerprint({n: self.sources.get(n, {}).get("fingerprint") for n in self.names}),
            "uri": first.get("uri"),
            "tokenizers": first.get("tokenizers", {}),
            "mixture": [{"name": n, **self.sources.get(n, {}), "weight": self.weights[n]} for n in self.names],
            "schedule": self.schedule,
        }

    def summary(self, upto: int) -> dict[str, dict[str, Any]]:
        """Per dataset: ref, fingerprint, current weight, records drawn by steps ``0 .. upto - 1``."""
        drawn = self.records_drawn(upto)
        return {
            n: {
                "ref": self.sources.get(n, {}).get("ref"),
                "fingerprint": self.sources.get(n, {}).get("fingerprint"),
                "weight": self.weights[n],
                "records_drawn": drawn[n],
            }
            for n in self.names
        }


def dataset_record(ds) -> dict[str, Any]:
    """What run.json records about one dataset (ref, fingerprint, uri, tokenizer fingerprints)."""
    return {
        "ref": ds.ref,
        "fingerprint": ds.fingerprint,
        "uri": ds.uri,
        "tokenizers": {m: ref.fingerprint for m, ref in tokenizer_refs(ds.manifest).items()},
    }


def open_dataset_mixture(spec: str, cfg: TrainConfig, root: str | None = None, previous: dict | None = None):
    """Verify every dataset of a mixture ``spec`` and build the :class:`DatasetMixture`. ``previous``: the
    ``dataset`` record of the run being resumed (run.json), whose weight schedule continues: its datasets
    must all be there with the same fingerprints; datasets it does not name may be added (they had weight 0
    in every segment before the resume step, so the batches up to it are unchanged, and they are drawn from
    their first record on). Returns (datasets, DatasetMixture)."""
    opened = open_datasets(spec, root, cfg.data.verify)
    schedule = None
    if previous:
        before = {e["name"]: e for e in previous.get("mixture") or []}
        now = {ds.name for ds, _ in opened}
        if not before:
            raise DataMismatchError(
                f"this run was trained on one dataset ({previous.get('ref')}); a resume cannot add datasets "
                "(use a new --out)"
            )
        removed = sorted(set(before) - now)
        if removed:
            raise DataMismatchError(
                f"this run was trained on the mixture {previous.get('ref')}; a resume that removes "
                f"{', '.join(removed)} is refused (the batches it gave are part of the run: keep it, with a "
                "smaller weight, or use a new --out)"
            )
        for ds, _ in opened:
            if ds.name not in before:
                continue  # added by this resume
            fp = before[ds.name].get("fingerprint")
            if fp and fp != ds.fingerprint:
                raise DataMismatchError(
                    f"dataset {ds.ref} has fingerprint {ds.fingerprint[:12]}, but this run was trained on "
                    f"{before[ds.name].get('ref')} ({fp[:12]}); use the original dataset or a new --out"
                )
        schedule = previous.get("schedule")
    for ds, _ in opened:
        check_vocabulary(ds, cfg)
    parts = {ds.name: Mixture(record_source(shard_files(ds)), cfg, salt=_name_salt(ds.name)) for ds, _ in opened}
    mix = DatasetMixture(
        parts,
        {ds.name: w for ds, w in opened},
        cfg,
        sources={ds.name: dataset_record(ds) for ds, _ in opened},
        schedule=schedule,
    )
    return [ds for ds, _ in opened], mix
