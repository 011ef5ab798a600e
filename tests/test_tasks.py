"""Exact token layouts of every VideoPoet task on a tiny vocabulary (trainer/tasks.py)."""

import dataclasses

import numpy as np
import pytest

from videopoet.schemas.record import Lineage, TokenRecord
from videopoet.schemas.vocab import Special, Task, Vocabulary
from videopoet.trainer import tasks

VOCAB = Vocabulary(visual_size=16, audio_levels=2, audio_codebook=8)  # visual 256.., audio l0 272.., l1 280..
OPTS = tasks.TaskOptions(vocab=VOCAB, text_len=4)
V = list(range(256, 262))  # video codes 0..5 as global ids, frames [256,257] [258,259] [260,261]
A0, A1 = [272, 273, 274], [283, 284, 285]  # audio level 0 codes 0..2, level 1 codes 3..5
C = list(range(265, 271))  # condition codes 9..14
T = [0, 0, 0, 0]  # the text slot (PAD in tokens; embeddings go there)


def record(text=True, audio=True, conditions=("inpaint_center",), portrait=False, frames=3):
    return TokenRecord(
        key="k",
        lineage=Lineage("s.tar", "0" * 64, "k"),
        video=np.arange(frames * 2, dtype=np.int32).reshape(frames, 1, 2),
        audio=np.arange(6, dtype=np.int32).reshape(2, 3) if audio else None,
        text_ids=np.array([7, 8, 1], np.int32) if text else None,
        conditions={c: np.arange(9, 9 + frames * 2, dtype=np.int32).reshape(frames, 1, 2) for c in conditions},
        meta={"bucket": "portrait"} if portrait else {"bucket": "square"},
    )


def toks(ex):
    return ex.tokens.tolist()


def test_t2v_layout_text_slot_and_loss_mask():
    ex = tasks.build("t2v", record(), OPTS)
    assert toks(ex) == [
        Special.BOS,
        Task.VIDEO,
        Special.BOT_I,
        *T,
        Special.EOT_I,
        Special.BOV_O,
        *V,
        Special.EOV_O,
        Special.EOS,
    ]
    assert ex.prefix_len == 9
    assert ex.text_index.tolist() == [-1, -1, -1, 0, 1, 2, 3] + [-1] * 10
    assert ex.text_ids.tolist() == [7, 8, 1, 0] and ex.text_mask.tolist() == [1, 1, 1, 0]
    assert ex.valid.tolist() == [True] * 6 + [False] + [True] * 10  # the empty 4th text slot is masked
    assert ex.cond.tolist() == [0, 0, 0, 1, 1, 1, 1] + [0] * 10
    tgt, m = ex.targets()
    assert tgt[:-1].tolist() == toks(ex)[1:]
    # position 8 (<bov_o>) predicts the first video token; the last position predicts nothing
    assert np.flatnonzero(m).tolist() == list(range(8, 16))


def test_uncond_shares_video_task_token_and_has_no_text():
    ex = tasks.build("uncond", record(text=False), OPTS)
    assert toks(ex) == [Special.BOS, Task.VIDEO, Special.BOV_O, *V, Special.EOV_O, Special.EOS]
    assert ex.prefix_len == 3 and (ex.text_index == -1).all() and ex.text_mask.sum() == 0


def test_t2i_is_first_latent_frame_without_eov_eos():
    ex = tasks.build("t2i", record(), OPTS)
    assert toks(ex) == [Special.BOS, Task.IMAGE, Special.BOT_I, *T, Special.EOT_I, Special.BOV_O, 256, 257]
    img = TokenRecord(
        key="i", lineage=Lineage("s", "0", "i"), video=np.array([[[3, 4]]], np.int32), text_ids=np.array([5], np.int32)
    )
    assert toks(tasks.build("t2i", img, OPTS))[-2:] == [259, 260]


def test_i2v_and_frame_prediction_predict_the_remaining_frames():
    ex = tasks.build("i2v", record(), OPTS)
    assert toks(ex) == [
        Special.BOS,
        Task.VIDEO,
        Special.BOT_I,
        *T,
        Special.EOT_I,
        Special.BOV_I,
        256,
        257,
        Special.EOV_I,
        Special.BOV_O,
        *V[2:],
        Special.EOV_O,
        Special.EOS,
    ]
    assert ex.prefix_len == 13 and ex.cond[9:11].tolist() == [2, 2]
    fp1 = tasks.build("fp", record(), OPTS, variant=1)
    fp2 = tasks.build("fp", record(), OPTS, variant=2)
    assert toks(fp1) == [
        Special.BOS,
        Task.FRAME_PREDICTION,
        Special.BOV_I,
        256,
        257,
        Special.EOV_I,
        Special.BOV_O,
        *V[2:],
        Special.EOV_O,
        Special.EOS,
    ]
    assert toks(fp2) == [
        Special.BOS,
        Task.FRAME_PREDICTION,
        Special.BOV_I,
        *V[:4],
        Special.EOV_I,
        Special.BOV_O,
        260,
        261,
        Special.EOV_O,
        Special.EOS,
    ]
    assert fp1.length == fp2.length and fp2.prefix_len == fp1.prefix_len + 2  # one AGD group for all k
    info = tasks.RecordInfo.of(record())
    assert tasks.variants("fp", info, OPTS) == (1, 2)
    assert tasks.variants("fp", info, tasks.TaskOptions(VOCAB, 4, fp_given_frames=(2, 5))) == (2,)


def test_inpaint_outpaint_stylize_use_condition_streams_and_source():
    ex = tasks.build("inpaint", record(text=False), OPTS)
    assert toks(ex) == [
        Special.BOS,
        Task.INPAINT,
        Special.BOT_I,
        *T,
        Special.EOT_I,
        Special.BOV_I,
        *C,
        Special.EOV_I,
        Special.SOURCE,
        Special.BOV_O,
        *V,
        Special.EOV_O,
        Special.EOS,
    ]
    assert ex.valid[3:7].tolist() == [False] * 4  # optional text absent: fully masked slot
    rec = record(conditions=("outpaint_top", "outpaint_border"))
    assert tasks.variants("outpaint", tasks.RecordInfo.of(rec), OPTS) == (2, 4)
    ex = tasks.build("outpaint", rec, OPTS, variant=4)
    assert ex.tokens[1] == Task.OUTPAINT and toks(ex)[9:15] == C
    with pytest.raises(tasks.MissingInputsError, match="no_variant"):
        tasks.build("outpaint", rec, OPTS, variant=0)
    with pytest.raises(tasks.MissingInputsError, match="no_stylize_condition"):
        tasks.build("stylize", rec, OPTS)
    ex = tasks.build("stylize", record(conditions=("style_flow",)), OPTS)
    assert toks(ex) == [
        Special.BOS,
        Task.STYLIZE,
        Special.BOT_I,
        *T,
        Special.EOT_I,
        Special.BOV_I,
        *C,
        Special.EOV_I,
        Special.SOURCE,
        Special.BOV_O,
        *V,
        Special.EOV_O,
        Special.EOS,
    ]
    assert ex.variant == 0 and ex.prefix_len == 18
    # flow then depth, each its own segment; variant 1 also gives the first latent frame and predicts the rest
    both = record(conditions=("style_depth", "style_flow"))
    assert tasks.variants("stylize", tasks.RecordInfo.of(both), OPTS) == (0, 1)
    ex = tasks.build("stylize", both, OPTS, variant=1)
    assert toks(ex) == [
        Special.BOS,
        Task.STYLIZE,
        Special.BOT_I,
        *T,
        Special.EOT_I,
        Special.BOV_I,
        *C,
        Special.EOV_I,
        Special.BOV_I,
        *C,
        Special.EOV_I,
        Special.BOV_I,
        *V[:2],
        Special.EOV_I,
        Special.SOURCE,
        Special.BOV_O,
        *V[2:],
        Special.EOV_O,
        Special.EOS,
    ]
    assert ex.cond[9:15].tolist() == [tasks.COND_INPUT] * 6 and ex.prefix_len == 30


def test_audio_tasks_level_by_level():
    v2a = tasks.build("v2a", record(), OPTS)
    assert toks(v2a) == [
        Special.BOS,
        Task.AUDIO,
        Special.BOV_I,
        *V,
        Special.EOV_I,
        Special.BOA_O,
        *A0,
        *A1,
        Special.EOA_O,
        Special.EOS,
    ]
    assert v2a.prefix_len == 11
    a2v = tasks.build("a2v", record(), OPTS)
    assert toks(a2v) == [
        Special.BOS,
        Task.AUDIO_TO_VIDEO,
        Special.BOA_I,
        *A0,
        *A1,
        Special.EOA_I,
        Special.BOV_O,
        *V,
        Special.EOV_O,
        Special.EOS,
    ]
    av = tasks.build("avcont", record(), OPTS)  # k = 3 // 2 = 1 latent frame, a = 3 * 1 // 3 = 1 audio frame
    assert toks(av) == [
        Special.BOS,
        Task.AUDIO_VIDEO,
        Special.BOV_I,
        256,
        257,
        Special.EOV_I,
        Special.BOA_I,
        272,
        283,
        Special.EOA_I,
        Special.BOV_O,
        *V[2:],
        Special.EOV_O,
        Special.BOA_O,
        273,
        274,
        284,
        285,
        Special.EOA_O,
        Special.EOS,
    ]
    assert av.prefix_len == 11


def test_res_token_for_portrait_bucket():
    ex = tasks.build("t2v", record(portrait=True), OPTS)
    assert toks(ex)[7:10] == [Special.EOT_I, Special.RES, Special.BOV_O] and ex.prefix_len == 10


def test_long_caption_keeps_eos_and_skips_are_reasoned():
    rec = TokenRecord(
        key="k",
        lineage=Lineage("s", "0", "k"),
        video=np.zeros((3, 1, 2), np.int32),
        text_ids=np.array([5, 6, 7, 8, 9, 1], np.int32),
    )
    assert tasks.build("t2v", rec, OPTS).text_ids.tolist() == [5, 6, 7, 1]
    img = TokenRecord(key="i", lineage=Lineage("s", "0", "i"), video=np.zeros((1, 1, 2), np.int32))
    for task, reason in [("t2v", "no_text"), ("uncond", "single_frame"), ("v2a", "single_frame"), ("t2i", "no_text")]:
        with pytest.raises(tasks.MissingInputsError, match=reason):
            tasks.build(task, img, OPTS)
    with pytest.raises(tasks.MissingInputsError, match="no_audio"):
        tasks.build("a2v", record(audio=False), OPTS)
    few = Vocabulary(visual_size=16, audio_levels=3, audio_codebook=8)
    with pytest.raises(tasks.MissingInputsError, match="few_audio_levels"):
        tasks.build("v2a", record(), tasks.TaskOptions(few, 4))


def test_sequence_length_matches_build_for_every_task():
    rec = record(conditions=("inpaint_center", "outpaint_left", "style_flow", "style_depth"), portrait=True)
    info = tasks.RecordInfo.of(rec)
    for task in tasks.TASK_TOKEN:
        for var in tasks.variants(task, info, OPTS):
            assert tasks.sequence_length(task, var, info, OPTS) == tasks.build(task, rec, OPTS, var).length


def test_changed_marks_output_codes_that_differ_from_the_previous_latent_frame():
    rec = record()
    # latent frames [0, 1] -> [0, 2] -> [3, 2]: one code changes per frame
    rec = dataclasses.replace(rec, video=np.array([[[0, 1]], [[0, 2]], [[3, 2]]], np.int32))
    t2v = tasks.build("t2v", rec, OPTS)
    out = slice(t2v.prefix_len, t2v.prefix_len + 6)
    assert t2v.changed[out].tolist() == [False, False, False, True, True, False]  # frame 0 has no frame before
    assert not t2v.changed[: t2v.prefix_len].any() and not t2v.changed[t2v.prefix_len + 6 :].any()
    i2v = tasks.build("i2v", rec, OPTS)  # output frames 1, 2: frame 1 against the given frame 0
    assert i2v.changed[i2v.prefix_len :].tolist() == [False, True, True, False, False, False]
    fp2 = tasks.build("fp", rec, OPTS, variant=2)
    assert fp2.changed[fp2.prefix_len :].tolist() == [True, False, False, False]
    # the target of position q is token q + 1: the flags move one position back, inside the loss mask
    tgt_changed, (_, m) = t2v.target_changed(), t2v.targets()
    assert np.flatnonzero(tgt_changed).tolist() == [p - 1 for p in np.flatnonzero(t2v.changed)]
    assert not (tgt_changed & ~m).any()
    for task in ("uncond", "t2i", "v2a", "inpaint"):
        ex = tasks.build(task, rec, OPTS)
        assert ex.changed.shape == ex.tokens.shape
        assert ex.changed.sum() == (0 if task in ("t2i", "v2a") else 2), task  # t2i / v2a: no later frame out
