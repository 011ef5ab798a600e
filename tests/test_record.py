import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from videopoet.schemas.errors import RecordError, SchemaVersionError
from videopoet.schemas.record import Lineage, TokenRecord, decode_record, encode_record, record_summary


def _lineage(**kw):
    base = dict(
        source_shard="train-00000.tar",
        source_sha256="ab" * 32,
        sample_key="k0",
        clip_start_s=0.5,
        frame_indices=(0, 3, 6),
        fps=8.0,
    )
    base.update(kw)
    return Lineage(**base)


def test_round_trip_full_record():
    rng = np.random.default_rng(0)
    rec = TokenRecord(
        key="k0/clip000",
        lineage=_lineage(),
        video=rng.integers(0, 2**18, (5, 16, 16)).astype(np.int32),
        audio=rng.integers(0, 1024, (4, 106)).astype(np.int32),
        text_ids=np.array([5, 9, 1], np.int32),
        caption="a red circle moves left",
        conditions={"inpaint_center": rng.integers(0, 2**18, (5, 16, 16)).astype(np.int32)},
        meta={"bucket": "square", "is_image": False, "n": 3, "x": 0.5},
    )
    blob = encode_record(rec)
    back = decode_record(blob)
    assert back == rec and encode_record(back) == blob
    assert back.latent_shape == (5, 16, 16)
    assert back.token_counts() == {"video": 1280, "audio": 424, "text": 3, "condition": 1280, "superres": 0, "style": 0}
    assert record_summary(back)["conditions"] == {"inpaint_center": [5, 16, 16]}


def test_bytes_are_deterministic_regardless_of_dict_order():
    a = TokenRecord(
        key="k",
        lineage=_lineage(),
        conditions={"b": np.zeros((1, 1, 1), np.int32), "a": np.ones((1, 1, 1), np.int32)},
        meta={"z": 1, "a": 2},
    )
    b = TokenRecord(
        key="k",
        lineage=_lineage(),
        conditions={"a": np.ones((1, 1, 1), np.int32), "b": np.zeros((1, 1, 1), np.int32)},
        meta={"a": 2, "z": 1},
    )
    assert encode_record(a) == encode_record(b)


def test_unknown_version_is_refused():
    rec = TokenRecord(key="k", lineage=_lineage())
    wire = msgpack.unpackb(encode_record(rec), raw=False)
    wire["v"] = 99
    with pytest.raises(SchemaVersionError, match="version 99 is not readable"):
        decode_record(msgpack.packb(wire, use_bin_type=True))
    wire["schema"] = "something.Else"
    with pytest.raises(SchemaVersionError, match="not a TokenRecord"):
        decode_record(msgpack.packb(wire, use_bin_type=True))


@pytest.mark.parametrize("blob", [b"", b"\xc1", b"\x93\x01\x02\x03", msgpack.packb("str")])
def test_garbage_is_a_record_error(blob):
    with pytest.raises((RecordError, SchemaVersionError)):
        decode_record(blob)


def test_object_arrays_and_bad_shapes_are_refused():
    with pytest.raises(RecordError, match="not allowed"):
        encode_record(TokenRecord(key="k", lineage=_lineage(), text_ids=np.array(["a"], object)))
    with pytest.raises(RecordError, match=r"\[T', H', W'\]"):
        encode_record(TokenRecord(key="k", lineage=_lineage(), video=np.zeros((2, 2), np.int32)))
    rec = TokenRecord(key="k", lineage=_lineage(), video=np.zeros((1, 2, 2), np.int32))
    wire = msgpack.unpackb(encode_record(rec), raw=False)
    wire["video"]["data"] = wire["video"]["data"][:-1]
    with pytest.raises(RecordError, match="do not fill shape"):
        decode_record(msgpack.packb(wire, use_bin_type=True))
    wire["video"]["dtype"] = "|O"
    with pytest.raises(RecordError, match="not allowed"):
        decode_record(msgpack.packb(wire, use_bin_type=True))


def int_arrays(dims):
    return hnp.arrays(
        np.int32, hnp.array_shapes(min_dims=dims, max_dims=dims, max_side=6), elements=st.integers(-(2**31), 2**31 - 1)
    )


@settings(max_examples=60, deadline=None)
@given(
    key=st.text(min_size=1, max_size=40),
    caption=st.none() | st.text(max_size=200),
    video=st.none() | int_arrays(3),
    audio=st.none() | int_arrays(2),
    text=st.none() | int_arrays(1),
    conds=st.dictionaries(st.text(min_size=1, max_size=10), int_arrays(3), max_size=3),
    meta=st.dictionaries(
        st.text(max_size=10),
        st.integers(-5, 5) | st.text(max_size=5) | st.booleans() | st.floats(allow_nan=False),
        max_size=4,
    ),
    frames=st.lists(st.integers(0, 10_000), max_size=41),
    start=st.floats(0, 1e4, allow_nan=False),
)
def test_round_trip_property(key, caption, video, audio, text, conds, meta, frames, start):
    rec = TokenRecord(
        key=key,
        lineage=_lineage(frame_indices=tuple(frames), clip_start_s=start),
        video=video,
        audio=audio,
        text_ids=text,
        caption=caption,
        conditions=conds,
        meta=meta,
    )
    blob = encode_record(rec)
    back = decode_record(blob)
    assert back == rec
    assert back.lineage == rec.lineage
    for name in ("video", "audio", "text_ids"):
        a, b = getattr(rec, name), getattr(back, name)
        assert (a is None and b is None) or (np.array_equal(a, b) and b.dtype == np.int32)
