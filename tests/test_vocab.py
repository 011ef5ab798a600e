import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videopoet.schemas.errors import VocabularyError
from videopoet.schemas.vocab import NUM_SPECIAL, Special, Task, Vocabulary


def test_paper_sizes():
    v = Vocabulary.paper()
    assert v.visual_offset == 256
    assert v.audio_offset == 256 + 262_144
    assert v.size == 256 + 262_144 + 4096 == 266_496
    r = v.ranges()
    assert r["visual"] == (256, 262_400)
    assert r["audio_l0"] == (262_400, 263_424) and r["audio_l3"] == (265_472, 266_496)


def test_from_tokenizer_configs():
    from videopoet.tokenizers.magvit2.config import PRESETS as MAGVIT2_PRESETS
    from videopoet.tokenizers.soundstream.config import PRESETS as SOUNDSTREAM_PRESETS

    assert Vocabulary.from_tokenizers(MAGVIT2_PRESETS["paper"](), SOUNDSTREAM_PRESETS["paper"]()) == Vocabulary.paper()
    tiny = Vocabulary.from_tokenizers(MAGVIT2_PRESETS["tiny"](), SOUNDSTREAM_PRESETS["tiny"]())
    assert (tiny.visual_size, tiny.audio_levels, tiny.audio_codebook) == (64, 2, 64)
    assert tiny.size == 256 + 64 + 128
    assert Vocabulary.from_tokenizers(MAGVIT2_PRESETS["tiny"]()).size == 256 + 64


def test_special_and_task_ids_fit_the_special_range():
    ids = [int(s) for s in Special] + [int(t) for t in Task]
    assert len(ids) == len(set(ids))
    assert all(0 <= i < NUM_SPECIAL for i in ids)


def test_visual_round_trip_and_bounds():
    v = Vocabulary(visual_size=64, audio_levels=2, audio_codebook=8)
    codes = np.arange(64).reshape(4, 4, 4)
    ids = v.visual_to_global(codes)
    assert ids.dtype == np.int32 and ids.min() == 256 and ids.max() == 319
    np.testing.assert_array_equal(v.visual_from_global(ids), codes)
    with pytest.raises(VocabularyError, match="visual code 64 outside"):
        v.visual_to_global([64])
    with pytest.raises(VocabularyError, match="visual code -1 outside"):
        v.visual_to_global([-1])
    with pytest.raises(VocabularyError, match="visual token id 320 outside"):
        v.visual_from_global([320])  # first audio id
    with pytest.raises(VocabularyError, match="must be integers"):
        v.visual_to_global(np.array([1.0]))


def test_audio_levels_use_disjoint_ranges():
    v = Vocabulary(visual_size=64, audio_levels=2, audio_codebook=8)
    codes = np.array([[0, 7, 3], [0, 7, 3]])  # [levels, frames]
    ids = v.audio_to_global(codes)
    np.testing.assert_array_equal(ids, [[320, 327, 323], [328, 335, 331]])
    np.testing.assert_array_equal(v.audio_from_global(ids), codes)
    with pytest.raises(VocabularyError, match="audio code 8 outside"):
        v.audio_to_global([[8], [0]])
    with pytest.raises(VocabularyError, match="3 audio levels given"):
        v.audio_to_global(np.zeros((3, 2), int))
    with pytest.raises(VocabularyError, match="range of level 1"):
        v.audio_from_global([[320], [320]])  # level-0 id in level-1 row
    np.testing.assert_array_equal(v.modality([0, 255, 256, 319, 320, 335]), [0, 0, 1, 1, 2, 2])
    with pytest.raises(VocabularyError, match="token id 336 outside"):
        v.modality([336])


@settings(max_examples=50, deadline=None)
@given(
    bits=st.integers(1, 18),
    levels=st.integers(1, 4),
    cb=st.integers(2, 1024),
    seed=st.integers(0, 2**31 - 1),
)
def test_round_trip_property(bits, levels, cb, seed):
    v = Vocabulary(visual_size=2**bits, audio_levels=levels, audio_codebook=cb)
    rng = np.random.default_rng(seed)
    vis = rng.integers(0, 2**bits, size=(2, 3, 3))
    aud = rng.integers(0, cb, size=(2, levels, 5))  # batch, levels, frames
    gv, ga = v.visual_to_global(vis), v.audio_to_global(aud)
    assert gv.max() < v.audio_offset and ga.min() >= v.audio_offset and ga.max() < v.size
    np.testing.assert_array_equal(v.visual_from_global(gv), vis)
    np.testing.assert_array_equal(v.audio_from_global(ga), aud)
    assert set(np.unique(v.modality(np.concatenate([gv.ravel(), ga.ravel()])))) <= {1, 2}
