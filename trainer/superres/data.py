"""Super-resolution training pairs and their batches.

:class:`DatasetPairs` reads the pairs of a pipeline dataset built with ``sr_pairs`` (the TokenRecord's
``SUPERRES_STREAM`` is the high-resolution half, its ``video`` the low-resolution half, its caption
ids the text) through the LM trainer's reader (:func:`videopoet.trainer.data.open_verified`,
``shard_files``, ``record_source``): an index pass keeps the records whose shapes fit the model's
grids, and a batch decodes its records and runs the frozen text encoder on their captions.

A :class:`PairSet` holds, per example, the high-resolution codes [T, H, W], the low-resolution codes of
the same clip [T, h, w] and its caption's text embeddings [L, text_dim] with their mask [L], and
optionally the upsampled guess [T, H, W] (the pipeline's ``SUPERRES_UPSAMPLED_STREAM``). A batch
is a pure function of (seed, step) (:meth:`PairSet.batch`), so a resumed run sees the batches an
uninterrupted run would.

:func:`synthetic_pairs` makes a pair set whose high-resolution codes are a fixed function of the
low-resolution code under them, the position inside its 2x2 (``scale``) cell and the caption's class:
a model must read both conditions to predict them, which is what the training tests check.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from videopoet.schemas.errors import VideoPoetError
from videopoet.schemas.record import SUPERRES_STREAM, SUPERRES_UPSAMPLED_STREAM
from videopoet.trainer.superres.config import SRModelConfig, SRTrainConfig
from videopoet.trainer.tasks import text_slot


class PairError(VideoPoetError, ValueError):
    """Pairs whose shapes or codes do not fit the model's config."""


@dataclasses.dataclass(frozen=True)
class PairSet:
    high: np.ndarray  # int32 [N, T, H, W]
    low: np.ndarray  # int32 [N, T, h, w]
    text_emb: np.ndarray  # float32 [N, L, text_dim]
    text_mask: np.ndarray  # bool [N, L]
    upsampled: np.ndarray | None = None  # int32 [N, T, H, W]: the upsampled guess (model.upsampled_input)

    def __len__(self) -> int:
        return int(self.high.shape[0])

    def check(self, cfg: SRModelConfig, text_len: int) -> None:
        """Raise :class:`PairError` naming the first array that does not fit ``cfg``."""
        n = len(self)
        want = {
            "high": (n, *cfg.grid),
            "low": (n, *cfg.low_grid),
            "text_emb": (n, text_len, cfg.text_dim),
            "text_mask": (n, text_len),
        }
        if n < 1:
            raise PairError("the pair set is empty")
        if cfg.upsampled_input:
            if self.upsampled is None:
                raise PairError("model.upsampled_input: these pairs carry no upsampled guess")
            want["upsampled"] = (n, *cfg.grid)
        for name, shape in want.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise PairError(f"pairs: {name} has shape {list(got)}, the config needs {list(shape)}")
        for name in ("high", "low", "upsampled") if cfg.upsampled_input else ("high", "low"):
            codes = getattr(self, name)
            if codes.min() < 0 or codes.max() >= cfg.codebook_size:
                raise PairError(f"pairs: {name} codes must lie in [0, {cfg.codebook_size}) (lfq_bits {cfg.lfq_bits})")

    def batch(self, seed: int, step: int, batch_size: int) -> dict[str, np.ndarray]:
        """The examples of ``step``: a random draw (with replacement) from (seed, step) alone."""
        idx = np.random.default_rng([seed, step]).integers(0, len(self), batch_size)
        out = {
            "high": self.high[idx].astype(np.int32),
            "low": self.low[idx].astype(np.int32),
            "text_emb": self.text_emb[idx].astype(np.float32),
            "text_mask": self.text_mask[idx].astype(bool),
        }
        if self.upsampled is not None:
            out["upsampled"] = self.upsampled[idx].astype(np.int32)
        return out

    def subset(self, idx) -> PairSet:
        idx = np.asarray(idx)
        up = None if self.upsampled is None else self.upsampled[idx]
        return PairSet(self.high[idx], self.low[idx], self.text_emb[idx], self.text_mask[idx], up)

    def fingerprint(self) -> str:
        """sha256 over the arrays (dtype, shape and bytes): a resumed run must see the same pairs."""
        h = hashlib.sha256()
        for name in ("high", "low", "text_emb", "text_mask", "upsampled"):
            if getattr(self, name) is None:
                continue
            a = np.ascontiguousarray(getattr(self, name))
            h.update(f"{name}:{a.dtype.str}:{list(a.shape)};".encode())
            h.update(a.tobytes())
        return h.hexdigest()

    def describe(self) -> dict:
        return {"source": "arrays", "pairs": len(self)}


class DatasetPairs:
    """The super-resolution pairs of a dataset (module docstring): ``records`` is a random-access
    sequence of TokenRecords (a Grain MapDataset), ``index`` the positions of the usable pairs.

    :meth:`batch` draws exactly as :meth:`PairSet.batch` does (with replacement, from (seed, step)
    alone), so a resumed run sees the batches an uninterrupted run would."""

    def __init__(
        self, records, index, text_encoder, text_len: int, *, dataset: dict, skipped: dict, upsampled: bool = False
    ):
        self.records = records
        self.upsampled = bool(upsampled)  # every pair holds SUPERRES_UPSAMPLED_STREAM
        self.index = np.asarray(index, np.int64)
        self.text = text_encoder
        self.text_len = int(text_len)
        self.dataset = dict(dataset)
        self.skipped = dict(skipped)

    def __len__(self) -> int:
        return int(self.index.size)

    def check(self, cfg: SRModelConfig, text_len: int) -> None:
        if len(self) < 1:
            raise PairError("the pair set is empty")
        if text_len != self.text_len:
            raise PairError(f"pairs: text_len {self.text_len}, the config needs {text_len}")
        if self.text.dim != cfg.text_dim:
            raise PairError(f"the text encoder has width {self.text.dim}, model.text_dim is {cfg.text_dim}")
        if cfg.upsampled_input and not self.upsampled:
            raise PairError(
                f"model.upsampled_input: dataset {self.dataset.get('ref')} has pairs without the upsampled "
                f"guess ({SUPERRES_UPSAMPLED_STREAM}); rebuild it with this version's `pipeline run --sr-pairs`"
            )

    def batch(self, seed: int, step: int, batch_size: int) -> dict[str, np.ndarray]:
        idx = np.random.default_rng([seed, step]).integers(0, len(self), batch_size)
        recs = [self.records[int(self.index[i])] for i in idx]
        slots = [text_slot(r.text_ids, self.text_len) for r in recs]
        ids = np.stack([s[0] for s in slots])
        mask = np.stack([s[1] for s in slots])
        emb = self.text.embed(ids, mask) if mask.any() else np.zeros((batch_size, self.text_len, self.text.dim))
        out = {
            "high": np.stack([r.conditions[SUPERRES_STREAM] for r in recs]).astype(np.int32),
            "low": np.stack([r.video for r in recs]).astype(np.int32),
            "text_emb": np.asarray(emb, np.float32),
            "text_mask": mask.astype(bool),
        }
        if self.upsampled:
            out["upsampled"] = np.stack([r.conditions[SUPERRES_UPSAMPLED_STREAM] for r in recs]).astype(np.int32)
        return out

    def fingerprint(self) -> str:
        """sha256 over the dataset's fingerprint, the pairs used, the text encoder and the text length."""
        h = hashlib.sha256()
        h.update(f"{self.dataset['fingerprint']};{self.text.fingerprint};{self.text_len};".encode())
        h.update(self.index.astype("<i8").tobytes())
        return h.hexdigest()

    def describe(self) -> dict:
        return {"source": "dataset", "pairs": len(self), "dataset": self.dataset, "skipped": self.skipped}


def _pair_info(rec) -> tuple:
    """(video shape, 2x shape or None, min code, max code, has an upsampled guess of the 2x shape) of
    one record (the index pass)."""
    high = rec.conditions.get(SUPERRES_STREAM)
    if high is None or rec.video is None:
        return (None, None, 0, 0, False)
    arrays = [rec.video, high]
    up = rec.conditions.get(SUPERRES_UPSAMPLED_STREAM)
    has_up = up is not None and up.shape == high.shape
    if has_up:
        arrays.append(up)
    lo = min(int(a.min()) for a in arrays)
    hi = max(int(a.max()) for a in arrays)
    return (tuple(rec.video.shape), tuple(high.shape), lo, hi, has_up)


def dataset_has_pairs(ds) -> bool:
    """Whether the dataset's manifest counts super-resolution tokens (built with ``sr_pairs``)."""
    return int(((ds.manifest.get("totals") or {}).get("tokens") or {}).get("superres", 0)) > 0


def open_dataset_pairs(ref: str, cfg: SRTrainConfig, root: str | None = None, *, text_encoder=None) -> DatasetPairs:
    """The pairs of dataset ``ref`` (``NAME@VERSION`` or a version dir) that fit ``cfg.model``.

    Refuses (:class:`PairError`, one line each) a dataset without pairs (rebuild it with
    ``--sr-pairs``), another vocabulary than the model's, and one whose pairs all have other grids
    than the model's (naming the grids it has). ``text_encoder``: default ``cfg.text_encoder``."""
    import grain

    from videopoet.trainer import data as lm_data

    ds = lm_data.open_verified(ref, root)
    if not dataset_has_pairs(ds):
        raise PairError(
            f"dataset {ds.ref} holds no super-resolution pairs; rebuild it with "
            "`videopoet pipeline run ... --sr-pairs` (pipeline config sr_pairs=true)"
        )
    visual = lm_data.manifest_vocabulary(ds).get("visual_size")
    if visual is not None and visual != cfg.model.codebook_size:
        raise PairError(
            f"dataset {ds.ref} was tokenized with {visual} codes, the model has {cfg.model.codebook_size}: "
            f"set model.lfq_bits={int(visual).bit_length() - 1}"
        )
    if text_encoder is None:
        from videopoet.tokenizers import registry

        text_encoder = registry.resolve(cfg.text_encoder, "text")[0]
    if text_encoder.dim != cfg.model.text_dim:
        raise PairError(
            f"the text encoder {cfg.text_encoder!r} has width {text_encoder.dim}, "
            f"model.text_dim is {cfg.model.text_dim}"
        )
    records = lm_data.record_source(lm_data.shard_files(ds))
    infos = list(records.map(_pair_info).to_iter_dataset(grain.ReadOptions(num_threads=4, prefetch_buffer_size=64)))
    want = (tuple(cfg.model.low_grid), tuple(cfg.model.grid))
    index, skipped, grids = [], {"no_pair": 0, "other_grid": 0}, set()
    upsampled = True
    for i, (low, high, lo, hi, has_up) in enumerate(infos):
        if high is None:
            skipped["no_pair"] += 1
        elif (low, high) != want:
            skipped["other_grid"] += 1
            grids.add(high)
        else:
            if lo < 0 or hi >= cfg.model.codebook_size:
                raise PairError(f"dataset {ds.ref}: record {i} has codes outside [0, {cfg.model.codebook_size})")
            index.append(i)
            upsampled = upsampled and has_up
    if not index:
        have = ", ".join(str(list(g)) for g in sorted(grids))
        raise PairError(
            f"dataset {ds.ref}: no pair has the model's grid {list(cfg.model.grid)} (from {list(cfg.model.low_grid)}); "
            f"its pairs have {have}: set model.grid (and model.windows to fit)"
        )
    from videopoet.trainer.data import dataset_record

    info = dataset_record(ds)  # ref, uri, fingerprint and the tokenizers that made its codes
    return DatasetPairs(records, index, text_encoder, cfg.text_len, dataset=info, skipped=skipped, upsampled=upsampled)


def synthetic_pairs(cfg: SRModelConfig, n: int, text_len: int, *, classes: int = 4, seed: int = 0) -> PairSet:
    """``n`` pairs: random low-resolution codes; each high-resolution code takes its low bits from its
    position inside the scale cell (``cell``: 0 .. sh*sw-1), the next bits from the caption's class (one of
    ``classes``, written into the text embeddings as a one-hot direction over 2 valid slots) and the rest
    from the low-resolution code under it: ``high = (low with its cell and class bits cleared) | class << c
    | cell``, ``c`` = the bits of ``cell``. Predicting it needs the position, the text and the low code."""
    rng = np.random.default_rng(seed)
    st, sh, sw = cfg.scale
    cell_bits = int(np.ceil(np.log2(sh * sw)))
    class_bits = int(np.ceil(np.log2(classes)))
    if st != 1 or cell_bits + class_bits >= cfg.lfq_bits:
        raise PairError(f"synthetic pairs need scale T = 1 and more than {cell_bits + class_bits} LFQ bits")
    low = rng.integers(0, cfg.codebook_size, (n, *cfg.low_grid)).astype(np.int64)
    cls = rng.integers(0, classes, n)
    up = np.repeat(np.repeat(low, sh, axis=2), sw, axis=3)
    _, t, h, w = up.shape
    cell = (np.arange(h)[:, None] % sh) * sw + np.arange(w)[None, :] % sw
    kept = up & ~((1 << (cell_bits + class_bits)) - 1)
    high = kept | (cls[:, None, None, None] << cell_bits) | cell[None, None]
    text = np.zeros((n, text_len, cfg.text_dim), np.float32)
    mask = np.zeros((n, text_len), bool)
    valid = min(2, text_len)
    text[np.arange(n)[:, None], np.arange(valid)[None, :], (cls % cfg.text_dim)[:, None]] = 1.0
    mask[:, :valid] = True
    return PairSet(high.astype(np.int32), low.astype(np.int32), text, mask)
