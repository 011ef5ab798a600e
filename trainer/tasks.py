"""VideoPoet task builders: one TokenRecord -> one prefix/output token sequence (VideoPoet §4.1, A.5.1).

Layouts (V = video ids [T',H',W'] flattened frame by frame, I = V[:1] (the causal tokenizer's
first latent frame *is* the image), A = audio ids level by level (all frames of level 0, then
level 1, ...), T = the fixed-length text slot (``text_len`` projected T5 embeddings), C = a
condition stream, ``|`` = end of the prefix)::

    uncond   <bos> <VIDEO>                                          <bov_o> | V <eov_o> <eos>
    t2v      <bos> <VIDEO> <bot_i> T <eot_i>                          <bov_o> | V <eov_o> <eos>
    t2i      <bos> <IMAGE> <bot_i> T <eot_i>                          <bov_o> | I
    i2v      <bos> <VIDEO> <bot_i> T <eot_i> <bov_i> V[:1] <eov_i>    <bov_o> | V[1:] <eov_o> <eos>
    fp(k)    <bos> <FRAME_PREDICTION> <bov_i> V[:k] <eov_i>           <bov_o> | V[k:] <eov_o> <eos>
    inpaint  <bos> <INPAINT>  <bot_i> T <eot_i> <bov_i> C <eov_i> <source> <bov_o> | V <eov_o> <eos>
    outpaint <bos> <OUTPAINT> <bot_i> T <eot_i> <bov_i> C <eov_i> <source> <bov_o> | V <eov_o> <eos>
    stylize  <bos> <STYLIZE>  <bot_i> T <eot_i> <bov_i> F <eov_i> [<bov_i> D <eov_i>] <source> <bov_o> | V <eov_o> <eos>
    stylize(first frame)  ... [<bov_i> D <eov_i>] <bov_i> V[:1] <eov_i> <source> <bov_o> | V[1:] <eov_o> <eos>
    v2a      <bos> <AUDIO> <bov_i> V <eov_i>                          <boa_o> | A <eoa_o> <eos>
    a2v      <bos> <AUDIO_TO_VIDEO> <boa_i> A <eoa_i>                 <bov_o> | V <eov_o> <eos>
    avcont(k) <bos> <AUDIO_VIDEO> <bov_i> V[:k] <eov_i> <boa_i> A[:,:a] <eoa_i>
                                        <bov_o> | V[k:] <eov_o> <boa_o> A[:,a:] <eoa_o> <eos>

* ``<res>`` is inserted right before the output's first token when ``meta["bucket"] == "portrait"``.
* The prefix ends *with* the output's begin token (it is known from the task); the model predicts
  everything after it, and the loss covers exactly those tokens.
* Output = what is not given: i2v and frame prediction predict the remaining frames, so every
  ``fp(k)`` has the same total length (one AGD group) and the sampler concatenates given + generated.
  For av continuation ``a = floor(F * k / T')`` audio frames go with the ``k`` given latent frames.
* T2I omits ``<eov_o>``/``<eos>`` so it can continue into video (§4.1); T2V, I2V and uncond share
  the ``<task>`` value VIDEO.
* The text slot is ``text_len`` positions; shorter captions leave masked (invalid) positions, longer
  ones keep their first ``text_len - 1`` pieces and the last (``</s>``). Where text is optional
  (i2v, inpaint, outpaint, stylize) a record without a caption gets a fully masked slot, so the
  length never depends on the caption. Text-required tasks (t2v, t2i) skip captionless records.
* Condition streams: inpaint uses ``conditions["inpaint_center"]``, outpaint one of
  ``outpaint_{left,right,top,bottom,border}`` (tokenizers.magvit2.masks kinds).
* Stylization (§4.1, A.4: the video reconstructed from its optical flow and depth, each rendered as
  a 3-channel video through MAGVIT-v2, plus text, sometimes plus the first frame): F = the record's
  ``style_flow`` stream, D = ``style_depth`` (each present stream, in that order; a dataset without a
  depth source has F alone). Variant 0 gives the streams; variant 1 also gives the first latent
  frame V[:1] and predicts the rest, as i2v does.

A task whose inputs a record lacks raises :class:`MissingInputsError` (with the reason), which the data layer counts.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from videopoet.schemas.record import STYLE_STREAMS, TokenRecord
from videopoet.schemas.vocab import Special, Task, Vocabulary
from videopoet.trainer.config import TASKS

S = Special
TASK_TOKEN = {
    "uncond": Task.VIDEO,
    "t2v": Task.VIDEO,
    "i2v": Task.VIDEO,
    "t2i": Task.IMAGE,
    "fp": Task.FRAME_PREDICTION,
    "inpaint": Task.INPAINT,
    "outpaint": Task.OUTPAINT,
    "stylize": Task.STYLIZE,
    "v2a": Task.AUDIO,
    "a2v": Task.AUDIO_TO_VIDEO,
    "avcont": Task.AUDIO_VIDEO,
}
TASK_ID = {name: i for i, name in enumerate(TASKS)}
INPAINT_KINDS = ("inpaint_center",)
OUTPAINT_KINDS = ("outpaint_left", "outpaint_right", "outpaint_top", "outpaint_bottom", "outpaint_border")
STYLE_KINDS = tuple(STYLE_STREAMS[k] for k in ("flow", "depth"))  # the streams stylize lays out, in order
STYLE_VARIANTS = (0, 1)  # 1: the first latent frame is given too
IMAGE_TASKS = frozenset({"t2i"})  # tasks whose output is an image (the curriculum's "image" side)
TEXT_REQUIRED = frozenset({"t2v", "t2i"})
TEXT_SLOT = frozenset({"t2v", "t2i", "i2v", "inpaint", "outpaint", "stylize"})

# cond kinds (per position): what CFG dropout may hide
COND_NONE, COND_TEXT, COND_INPUT = 0, 1, 2


class MissingInputsError(Exception):
    """The record lacks what the task needs (``reason`` is a short code)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Example:
    """One built sequence. ``tokens`` hold PAD at text positions (the model puts text embeddings there)."""

    task: str
    variant: int
    tokens: np.ndarray  # int32 [S]
    valid: np.ndarray  # bool [S]: attendable (False: empty text slots)
    text_index: np.ndarray  # int32 [S]: text slot index at text positions, -1 elsewhere
    text_ids: np.ndarray  # int32 [text_len] SentencePiece ids (0-padded)
    text_mask: np.ndarray  # int32 [text_len]
    cond: np.ndarray  # int8 [S]: COND_TEXT / COND_INPUT positions (CFG dropout), COND_NONE elsewhere
    prefix_len: int  # positions [0, prefix_len) are the bidirectional prefix
    changed: np.ndarray  # bool [S]: output video codes that differ from the same position one latent frame earlier

    @property
    def length(self) -> int:
        return int(self.tokens.shape[0])

    def targets(self) -> tuple[np.ndarray, np.ndarray]:
        """(targets [S], loss_mask [S]): position q predicts token q+1; loss on the output only."""
        tgt = np.zeros_like(self.tokens)
        tgt[:-1] = self.tokens[1:]
        m = np.zeros(self.tokens.shape, bool)
        m[self.prefix_len - 1 : -1] = True
        m[:-1] &= self.valid[1:]
        return tgt, m

    def target_changed(self) -> np.ndarray:
        """bool [S]: position q's target (token q+1) is a ``changed`` output video code (always inside the
        loss mask: output video positions are valid and predicted)."""
        out = np.zeros(self.tokens.shape, bool)
        out[:-1] = self.changed[1:]
        return out


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    vocab: Vocabulary
    text_len: int
    fp_given_frames: tuple[int, ...] = ()  # empty = 1 .. T'-1
    avcont_given_frames: int = 0  # 0 = T' // 2


@dataclasses.dataclass(frozen=True)
class RecordInfo:
    """What eligibility and lengths depend on (kept per record in the data index)."""

    video_shape: tuple[int, ...] | None
    audio_shape: tuple[int, ...] | None
    has_text: bool
    conditions: tuple[str, ...]
    portrait: bool

    @classmethod
    def of(cls, rec: TokenRecord) -> RecordInfo:
        return cls(
            video_shape=None if rec.video is None else tuple(int(s) for s in rec.video.shape),
            audio_shape=None if rec.audio is None else tuple(int(s) for s in rec.audio.shape),
            has_text=rec.text_ids is not None and rec.text_ids.size > 0,
            conditions=tuple(sorted(rec.conditions)),
            portrait=rec.meta.get("bucket") == "portrait",
        )


# ------------------------------------------------------------------------------------- eligibility
def _stream_kinds(task: str) -> tuple[str, ...]:
    return {"inpaint": INPAINT_KINDS, "outpaint": OUTPAINT_KINDS, "stylize": STYLE_KINDS}.get(task, ())


def missing(task: str, info: RecordInfo, opts: TaskOptions) -> str | None:
    """Why ``task`` cannot use this record (a short reason code), or None."""
    if task not in TASK_TOKEN:
        raise ValueError(f"unknown task {task!r}")
    if info.video_shape is None:
        return "no_video"
    if task in TEXT_REQUIRED and not info.has_text:
        return "no_text"
    if task != "t2i" and info.video_shape[0] < 2:
        return "single_frame"  # images train t2i only
    if task in ("v2a", "a2v", "avcont"):
        if info.audio_shape is None:
            return "no_audio"
        if info.audio_shape[0] < opts.vocab.audio_levels:
            return "few_audio_levels"
    kinds = _stream_kinds(task)
    if kinds:
        have = [k for k in kinds if k in info.conditions]
        if not have:
            return f"no_{task}_condition"
    return None


def variants(task: str, info: RecordInfo, opts: TaskOptions) -> tuple[int, ...]:
    """Variant numbers of a task for this record: given latent frames (fp), condition stream index."""
    t = info.video_shape[0] if info.video_shape else 0
    if task == "fp":
        ks = opts.fp_given_frames or tuple(range(1, t))
        return tuple(k for k in ks if 1 <= k < t)
    if task == "avcont":
        return (opts.avcont_given_frames or t // 2,) if t >= 2 else ()
    if task == "stylize":
        return STYLE_VARIANTS
    kinds = _stream_kinds(task)
    if kinds:
        return tuple(i for i, k in enumerate(kinds) if k in info.conditions)
    return (0,)


# ------------------------------------------------------------------------------------- building
class _Seq:
    def __init__(self, text_len: int):
        self.tok: list[np.ndarray] = []
        self.cond: list[np.ndarray] = []
        self.valid: list[np.ndarray] = []
        self.changed: list[np.ndarray] = []
        self.text_len = text_len
        self.text_start = -1
        self.text_valid = 0
        self.n = 0

    def add(self, ids, cond: int = COND_NONE, changed: np.ndarray | None = None) -> None:
        ids = np.asarray(ids, np.int32).reshape(-1)
        self.tok.append(ids)
        self.cond.append(np.full(ids.shape, cond, np.int8))
        self.valid.append(np.ones(ids.shape, bool))
        self.changed.append(np.zeros(ids.shape, bool) if changed is None else np.asarray(changed, bool).reshape(-1))
        self.n += ids.size

    def special(self, *tokens: int) -> None:
        self.add(np.array([int(t) for t in tokens], np.int32))

    def text(self, n_valid: int) -> None:
        self.text_start = self.n
        self.text_valid = n_valid
        self.tok.append(np.zeros(self.text_len, np.int32))
        self.cond.append(np.full(self.text_len, COND_TEXT, np.int8))
        v = np.zeros(self.text_len, bool)
        v[:n_valid] = True
        self.valid.append(v)
        self.changed.append(np.zeros(self.text_len, bool))
        self.n += self.text_len

    def mark_prefix_end(self) -> None:
        self.prefix_len = self.n


def text_slot(text_ids: np.ndarray | None, text_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut/pad caption ids to ``text_len``: (ids int32 [text_len], mask int32 [text_len])."""
    ids = np.zeros(text_len, np.int32)
    mask = np.zeros(text_len, np.int32)
    if text_ids is None or np.asarray(text_ids).size == 0:
        return ids, mask
    t = np.asarray(text_ids, np.int32).reshape(-1)
    if t.size > text_len:
        t = np.concatenate([t[: text_len - 1], t[-1:]])
    ids[: t.size] = t
    mask[: t.size] = 1
    return ids, mask


def frame_changes(video: np.ndarray, start: int) -> np.ndarray:
    """bool [T' - start, H', W']: for latent frames ``start`` onwards, the codes that differ from the same
    position one latent frame earlier (the clip's first latent frame has none before it)."""
    changed = np.zeros(video[start:].shape, bool)
    first = max(start, 1)
    changed[first - start :] = video[first:] != video[first - 1 : -1]
    return changed


def audio_split(frames: int, t_latent: int, k: int) -> int:
    """Audio frames that go with the first ``k`` of ``t_latent`` latent frames (av continuation)."""
    return (frames * k) // t_latent


def build(task: str, rec: TokenRecord, opts: TaskOptions, variant: int | None = None) -> Example:
    """Build ``task`` from ``rec``. Raises :class:`MissingInputsError` when the record lacks the task's inputs."""
    info = RecordInfo.of(rec)
    reason = missing(task, info, opts)
    if reason:
        raise MissingInputsError(reason)
    allowed = variants(task, info, opts)
    if not allowed:
        raise MissingInputsError("no_variant")
    if variant is None:
        variant = allowed[0]
    elif variant not in allowed:
        raise MissingInputsError("no_variant")
    vocab = opts.vocab
    video = vocab.visual_to_global(rec.video) if rec.video is not None else None
    t_lat = video.shape[0] if video is not None else 0
    audio = None
    if task in ("v2a", "a2v", "avcont"):
        audio = vocab.audio_to_global(np.asarray(rec.audio)[: vocab.audio_levels])  # [levels, F]

    def flat_audio(a):
        return a.reshape(-1)  # level by level: all frames of level 0, then level 1, ...

    text_ids, text_mask = text_slot(rec.text_ids if task in TEXT_SLOT else None, opts.text_len)
    seq = _Seq(opts.text_len)
    seq.special(S.BOS, TASK_TOKEN[task])
    if task in TEXT_SLOT:
        seq.special(S.BOT_I)
        seq.text(int(text_mask.sum()))
        seq.special(S.EOT_I)

    k = variant
    if task == "i2v":
        k = 1
    if task in ("i2v", "fp", "avcont"):
        seq.special(S.BOV_I)
        seq.add(video[:k], COND_INPUT)
        seq.special(S.EOV_I)
    if task == "v2a":
        seq.special(S.BOV_I)
        seq.add(video, COND_INPUT)
        seq.special(S.EOV_I)
    a_split = 0
    if task == "a2v":
        seq.special(S.BOA_I)
        seq.add(flat_audio(audio), COND_INPUT)
        seq.special(S.EOA_I)
    if task == "avcont":
        a_split = audio_split(audio.shape[1], t_lat, k)
        seq.special(S.BOA_I)
        seq.add(flat_audio(audio[:, :a_split]), COND_INPUT)
        seq.special(S.EOA_I)
    if task in ("inpaint", "outpaint"):
        name = _stream_kinds(task)[variant]
        cond = vocab.visual_to_global(rec.conditions[name])
        seq.special(S.BOV_I)
        seq.add(cond, COND_INPUT)
        seq.special(S.EOV_I, S.SOURCE)
    if task == "stylize":
        for name in STYLE_KINDS:
            if name in rec.conditions:
                seq.special(S.BOV_I)
                seq.add(vocab.visual_to_global(rec.conditions[name]), COND_INPUT)
                seq.special(S.EOV_I)
        k = variant  # 1: the first latent frame is given
        if k:
            seq.special(S.BOV_I)
            seq.add(video[:k], COND_INPUT)
            seq.special(S.EOV_I)
        seq.special(S.SOURCE)
    if info.portrait and video is not None:
        seq.special(S.RES)

    if task == "v2a":
        seq.special(S.BOA_O)
        seq.mark_prefix_end()
        seq.add(flat_audio(audio))
        seq.special(S.EOA_O, S.EOS)
    else:
        seq.special(S.BOV_O)
        seq.mark_prefix_end()
        if task == "t2i":
            seq.add(video[:1])
        else:
            start = k if task in ("i2v", "fp", "avcont", "stylize") else 0
            seq.add(video[start:], changed=frame_changes(video, start))
            seq.special(S.EOV_O)
            if task == "avcont":
                seq.special(S.BOA_O)
                seq.add(flat_audio(audio[:, a_split:]))
                seq.special(S.EOA_O)
            seq.special(S.EOS)

    tokens = np.concatenate(seq.tok)
    text_index = np.full(tokens.shape, -1, np.int32)
    if seq.text_start >= 0:
        text_index[seq.text_start : seq.text_start + opts.text_len] = np.arange(opts.text_len, dtype=np.int32)
    return Example(
        task=task,
        variant=int(variant),
        tokens=tokens,
        valid=np.concatenate(seq.valid),
        text_index=text_index,
        text_ids=text_ids,
        text_mask=text_mask,
        cond=np.concatenate(seq.cond),
        prefix_len=int(seq.prefix_len),
        changed=np.concatenate(seq.changed),
    )


def _dummy(info: RecordInfo) -> TokenRecord:
    from videopoet.schemas.record import Lineage

    def z(shape):
        return None if shape is None else np.zeros(shape, np.int32)

    return TokenRecord(
        key="dummy",
        lineage=Lineage("", "", ""),
        video=z(info.video_shape),
        audio=z(info.audio_shape),
        text_ids=np.ones(1, np.int32),  # lengths never depend on the caption
        conditions={c: np.zeros(info.video_shape, np.int32) for c in info.conditions if info.video_shape},
        meta={"bucket": "portrait"} if info.portrait else {},
    )


def sequence_length(task: str, variant: int, info: RecordInfo, opts: TaskOptions) -> int:
    """Length of ``build(task, record, opts, variant)`` for any record with this info."""
    return build(task, _dummy(info), opts, variant).length
