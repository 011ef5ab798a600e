"""Training data: verified dataset -> Grain -> task mixture with AGD, curriculum and CFG dropout.

Pipeline::

    store.open_dataset + store.verify            refuse missing/altered shards, fingerprint or schema mismatch
    grain.MapDataset.source(ArrayRecordDataSource(shards)).map(decode_record)   random access, global index
    index: one pass over the records -> RecordInfo per record (shapes, text, condition streams)
    plan:  every (task, variant) a record supports -> its sequence length; AGD groups = (image|video, length)
    grain.MapDataset.range(steps).map(step -> this process's slice of the global batch of that step)
          .to_iter_dataset(ReadOptions(threads, prefetch))       iterator state = the next step (checkpointed)

**Every global batch is a pure function of (seed, step)** and of the dataset and config, whatever
the number of processes: each process builds only its rows of the same global batch.

* Step -> group: a counter-based hash of (seed, step) draws the image or video side (curriculum:
  ``image_frac_start`` for the first ``switch_fraction`` of the steps, then ``image_frac_end``) and
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
import threading
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from videopoet.schemas import store
from videopoet.schemas.errors import DatasetError, SchemaVersionError, VerifyError
from videopoet.schemas.record import READABLE_VERSIONS, TokenRecord, decode_record
from videopoet.trainer import tasks as T
from videopoet.trainer.config import TASKS, DataConfig, TrainConfig

BATCH_KEYS = ("tokens", "valid", "text_index", "text_ids", "text_mask", "prefix_len", "targets", "loss_mask", "task_id")


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
            f"dataset {ds.ref} holds TokenRecord schema version {version!r}; this trainer reads {sorted(READABLE_VERSIONS)}"
        )
    if expect_fingerprint and ds.fingerprint != expect_fingerprint:
        raise DataMismatchError(
            f"dataset {ds.ref} has fingerprint {ds.fingerprint[:12]}, but this run was trained on "
            f"{expect_fingerprint[:12]}; use the original dataset or a new --out"
        )
    if verify:
        report = store.verify(ds)
        if not report.ok:
            more = f" (+{len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
            raise VerifyError(f"dataset {ds.ref} failed verification: {report.problems[0]}{more}")
    return ds


def check_vocabulary(ds, cfg: TrainConfig) -> None:
    """Refuse a model vocabulary that differs from the dataset's tokenizers (as the manifest records them)."""
    toks = (ds.manifest.get("lineage") or {}).get("tokenizers") or {}
    m = cfg.model
    video = (toks.get("video") or {}).get("config") or {}
    audio = (toks.get("audio") or {}).get("config") or {}
    want = []
    if "lfq_bits" in video and 2 ** int(video["lfq_bits"]) != m.visual_size:
        want.append(f"model.visual_size={2 ** int(video['lfq_bits'])}")
    if "codebook_size" in audio and int(audio["codebook_size"]) != m.audio_codebook:
        want.append(f"model.audio_codebook={audio['codebook_size']}")
    if "levels_used" in audio and int(audio["levels_used"]) != m.audio_levels:
        want.append(f"model.audio_levels={audio['levels_used']}")
    if want:
        raise DataMismatchError(
            f"dataset {ds.ref} was tokenized for a different vocabulary than model {m.name!r}: set {' '.join(want)}"
        )


def record_source(paths: Sequence[str]) -> grain.MapDataset:
    """Grain MapDataset of TokenRecords over ArrayRecord shards (global index across shards)."""
    local = [p[len("file://"):] if p.startswith("file://") else p for p in paths]
    if any("://" in p for p in local):
        raise DatasetError("the trainer reads local shards; copy remote datasets to a local root first")
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
            "groups": [{"name": g.name, "tasks": list(g.tasks), "records": int(g.records.size),
                        "weight": round(g.weight, 6)} for g in self.groups],
            "eligible": dict(self.eligible),
            "skipped": {k: dict(v) for k, v in self.skipped.items() if v},
        }


def task_options(cfg: TrainConfig) -> T.TaskOptions:
    d = cfg.data
    return T.TaskOptions(vocab=cfg.model.vocab, text_len=d.text_len, fp_given_frames=tuple(d.fp_given_frames),
                         avcont_given_frames=d.avcont_given_frames)


def make_plan(infos: Sequence[T.RecordInfo], cfg: TrainConfig) -> Plan:
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
            reason = T.missing(task, info, opts)
            vs = () if reason else T.variants(task, info, opts)
            if reason or not vs:
                skipped[task][reason or "no_variant"] += 1
                continue
            eligible[task] += 1
            for v in vs:
                key = (task, v, info)
                if key not in lengths:
                    lengths[key] = T.sequence_length(task, v, info, opts)
                bucket = cfg.data.length_bucket
                gk = (task in T.IMAGE_TASKS, -(-lengths[key] // bucket) * bucket)
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
        groups.append(Group(name=f"{'image' if image else 'video'}/L{length}", image=image, length=length,
                            records=np.asarray(recs, np.int64), options=options, weight=gw, tasks=tasks_in))
    total = sum(g.weight for g in groups)
    for g in groups:
        g.weight /= total
    return Plan(groups=groups, skipped={t: dict(c) for t, c in skipped.items()}, eligible=dict(eligible),
                max_length=max(g.length for g in groups))


# ------------------------------------------------------------------------------------- the mixture
class Mixture:
    """Global batches as a pure function of (seed, step); see the module docstring."""

    SALT_SIDE, SALT_GROUP, SALT_OPTION, SALT_DROP_TEXT, SALT_DROP_INPUT = range(5)

    def __init__(self, records: grain.MapDataset | Sequence[TokenRecord], cfg: TrainConfig,
                 infos: Sequence[T.RecordInfo] | None = None):
        if not isinstance(records, grain.MapDataset):
            records = grain.MapDataset.source(ListSource(records))
        self.records = records
        self.cfg = cfg
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
        d = self.cfg.data
        step = np.asarray(step)
        if not d.curriculum:
            return np.full(step.shape, np.nan)
        switch = d.switch_fraction * self.cfg.steps
        return np.where(step < switch, d.image_frac_start, d.image_frac_end)

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
                p = np.random.default_rng([self.cfg.seed, gi, epoch, 0x5EED]).permutation(n)
                self._perm_cache[key] = p
                if len(self._perm_cache) > 64:
                    self._perm_cache.popitem(last=False)
            return p

    # ---- batches
    def slot(self, step: int, i: int) -> tuple[int, str, int, bool, bool]:
        """(record index, task, variant, drop_text, drop_inputs) of row ``i`` of the global batch."""
        gi, k = self.group_of(step)
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

    def example(self, step: int, i: int) -> T.Example:
        rec_idx, task, variant, drop_t, drop_i = self.slot(step, i)
        ex = T.build(task, self.records[rec_idx], self.opts, variant)
        return apply_dropout(ex, drop_t, drop_i)

    def local_batch(self, step: int, process_index: int = 0, process_count: int = 1) -> dict[str, Any]:
        """Rows ``[p*B/P, (p+1)*B/P)`` of the global batch of ``step`` as numpy arrays."""
        if self.batch_size % process_count:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by {process_count} processes")
        per = self.batch_size // process_count
        rows = [self.example(step, i) for i in range(process_index * per, (process_index + 1) * per)]
        gi, _ = self.group_of(step)
        out = collate(rows, self.plan.groups[gi].length)
        out["step"] = np.int64(step)
        out["group"] = self.plan.groups[gi].name
        return out

    def global_batch(self, step: int) -> dict[str, Any]:
        return self.local_batch(step, 0, 1)

    def dataset(self, start: int = 0, process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
        """Grain IterDataset of this process's batches for steps ``start .. cfg.steps - 1``."""
        fn = functools.partial(_batch_of, self, process_index=process_index, process_count=process_count)
        ds = grain.MapDataset.range(start, max(start, self.cfg.steps)).map(fn)
        d = self.cfg.data
        if d.num_threads == 0 and d.prefetch == 0:
            return ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
        return ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, d.num_threads), prefetch_buffer_size=max(1, d.prefetch)))

    def stats(self) -> dict[str, Any]:
        return {**self.plan.summary(), "max_length": self.plan.max_length}


def _batch_of(mix: Mixture, step: int, process_index: int, process_count: int) -> dict[str, Any]:
    return mix.local_batch(int(step), process_index, process_count)


def apply_dropout(ex: T.Example, drop_text: bool, drop_inputs: bool) -> T.Example:
    if not (drop_text or drop_inputs):
        return ex
    valid = ex.valid.copy()
    text_mask = ex.text_mask
    if drop_text:
        valid &= ex.cond != T.COND_TEXT
        text_mask = np.zeros_like(ex.text_mask)
    if drop_inputs:
        valid &= ex.cond != T.COND_INPUT
    return dataclasses.replace(ex, valid=valid, text_mask=text_mask)


def pad_example(ex: T.Example, length: int) -> T.Example:
    """Right-pad to ``length`` with masked PAD positions (only with ``length_bucket > 1``)."""
    n = length - ex.length
    if n < 0:
        raise ValueError(f"example of length {ex.length} does not fit its group length {length}")
    if n == 0:
        return ex

    def pad(a, value):
        return np.concatenate([a, np.full(n, value, a.dtype)])

    return dataclasses.replace(ex, tokens=pad(ex.tokens, 0), valid=pad(ex.valid, False),
                               text_index=pad(ex.text_index, -1), cond=pad(ex.cond, T.COND_NONE))


def collate(rows: Sequence[T.Example], length: int | None = None) -> dict[str, Any]:
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
        "task_id": np.array([T.TASK_ID[r.task] for r in rows], np.int32),
    }
    return out


def build_index(records: grain.MapDataset, threads: int = 4) -> list[T.RecordInfo]:
    """One pass over the records: their :class:`~videopoet.trainer.tasks.RecordInfo`."""
    ds = records.map(T.RecordInfo.of)
    n = len(ds)
    if n == 0:
        raise DatasetError("the dataset holds no records")
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=64))
    return list(it)


def open_mixture(ref: str, cfg: TrainConfig, root: str | None = None, expect_fingerprint: str | None = None):
    """Verify the dataset and build the mixture. Returns (dataset, Mixture)."""
    ds = open_verified(ref, root, cfg.data.verify, expect_fingerprint)
    check_vocabulary(ds, cfg)
    return ds, Mixture(record_source(ds.shard_paths()), cfg)


def batch_spec(mix: Mixture) -> dict[str, Any]:
    """Shapes of a batch are per group; this gives the distinct lengths (for compile-ahead)."""
    return {g.name: g.length for g in mix.plan.groups}


def data_config_summary(d: DataConfig) -> dict[str, Any]:
    return dataclasses.asdict(d)
