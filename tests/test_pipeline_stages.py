"""Runner-agnostic pipeline units (inputs, prepare, tokenize, shard): captions, audio alignment, and the
"nothing lost" guarantee of process_shard over hostile shards (tiny tokenizers, no runner)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from videopoet import media
from videopoet.pipelines import errors, inputs, prepare, shard, testing, tokenize
from videopoet.pipelines.config import load_pipeline_config
from videopoet.schemas.config import ConfigError


@pytest.fixture(scope="module")
def cfg():
    return load_pipeline_config("tiny")


@pytest.fixture(scope="module")
def toks(cfg):
    return tokenize.load_tokenizers(cfg)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return testing.write_hostile_shards(str(tmp_path_factory.mktemp("hostile")))


# ------------------------------------------------------------------------------------- unit level
def test_resample_indices_8fps():
    ts = np.arange(72) / 12.0  # 6 s at 12 fps
    idx = media.resample_indices(ts, 8.0, 6.0)
    assert len(idx) == 48
    assert idx[:5].tolist() == [0, 1, 3, 4, 6]  # frames shown at 0, .125, .25, .375, .5 s
    same = media.resample_indices(np.arange(41) / 8.0, 8.0, 41 / 8.0)
    assert same.tolist() == list(range(41))


def test_decode_clips_geometry_and_stride():
    blob = testing.make_video(41, 80, 64, seed=3)
    info = media.probe_video(blob)
    assert (info.width, info.height, info.has_audio) == (80, 64, True)
    d = media.decode_clips(blob, info, fps=8.0, height=32, width=32, clip_frames=17, stride=8, max_clips=10)
    assert [c.shape for c in d.clips] == [(17, 32, 32, 3)] * 4  # starts 0, 8, 16, 24 (24 + 17 <= 41)
    assert d.starts == [0.0, 1.0, 2.0, 3.0]
    assert d.source_indices[1] == tuple(range(8, 25))
    # decode-only path agrees with the sequential decode (no repeated or skipped frame)
    full = media.decode_frames(blob, fps=8.0)
    assert full.frames.shape[0] == 41 and full.source_indices.tolist() == list(range(41))


def test_media_errors_have_reasons():
    with pytest.raises(media.MediaError) as e:
        media.probe_video(b"")
    assert e.value.reason == "empty_file"
    with pytest.raises(media.MediaError) as e:
        media.probe_video(b"not a video" * 100)
    assert e.value.reason == "undecodable_video"
    bad = testing.garble_frames(testing.make_video(41, 64, 64, audio=False, seed=5))
    info = media.probe_video(bad)
    with pytest.raises(media.MediaError) as e:
        media.decode_clips(bad, info, fps=8.0, height=32, width=32, clip_frames=17, stride=17, max_clips=4)
    assert e.value.reason == "corrupt_frame"
    assert media.extract_audio_track(testing.make_video(9, 64, 64, audio=False)) is None


def test_audio_track_aligned_with_clip():
    blob = testing.make_video(41, 64, 64, seed=1)
    wave, start = media.extract_audio_track(blob, 16000, with_start=True)
    assert abs(start) < 1e-3 and wave.dtype == np.float32
    assert 41 / 8 * 16000 <= wave.size <= 41 / 8 * 16000 + 1024  # AAC pads at most one frame
    sl, pad = prepare.slice_audio(wave, start, 17 / 8, 34000, 16000)
    assert sl.shape == (34000,) and pad == 0
    np.testing.assert_array_equal(sl, wave[34000:68000])
    part = media.extract_audio_track(blob, 16000, until=1.0)  # bounded decode for long media
    assert 2.0 * 16000 <= part.size < 2.3 * 16000 and np.array_equal(part, wave[: part.size])
    tail, pad = prepare.slice_audio(wave, start, 4.0, 34000, 16000)
    assert pad == 34000 - (wave.size - 64000) and np.all(tail[34000 - pad :] == 0)


def test_caption_normalization():
    assert prepare.normalize_caption("  A\tred\u00a0circle\n\x07moves  ") == "A red circle moves"
    assert prepare.normalize_caption("cafe\u0301") == "caf\u00e9"  # NFC


def test_config_validation_and_presets():
    for p in ("tiny", "small", "paper"):
        c = load_pipeline_config(p)
        assert c.clip_frames == 17 and c.fps == 8.0 and c.audio_samples == 34000
    assert load_pipeline_config("paper").buckets() == {"square": (128, 128), "portrait": (224, 128)}
    assert load_pipeline_config("tiny", ["clip_frames=41"]).clip_frames == 41
    with pytest.raises(ConfigError, match="clip_frames"):
        load_pipeline_config("tiny", ["clip_frames=16"])
    with pytest.raises(ConfigError, match="condition"):
        load_pipeline_config("tiny", ["conditions=[bogus]"])
    with pytest.raises(ConfigError, match="unknown config key"):
        load_pipeline_config("tiny", ["nope=1"])


def test_list_input_shards(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for p in ("a/x-0.tar", "a/x-1.tar", "a/notes.txt", "b/x-0.tar"):
        (tmp_path / p).write_bytes(b"")
    got = inputs.list_input_shards(str(tmp_path / "a"))
    assert [os.path.basename(u) for u in got] == ["x-0.tar", "x-1.tar"] and all(os.path.isabs(u) for u in got)
    assert len(inputs.list_input_shards(str(tmp_path / "a" / "*.tar"))) == 2
    with pytest.raises(errors.PipelineError, match="no input shards"):
        inputs.list_input_shards(str(tmp_path / "nothing-*.tar"))
    with pytest.raises(errors.PipelineError, match="unique"):
        inputs.list_input_shards([str(tmp_path / "a" / "*.tar"), str(tmp_path / "b" / "*.tar")])


# ----------------------------------------------------------------------- nothing lost (no runner)
def _outcomes(records_by_shard, rejects):
    got: dict[tuple[str, str], list[str]] = {}
    for source, recs in records_by_shard.items():
        for r in recs:
            k = (source, r.lineage.sample_key)
            if "record" not in got.get(k, []):
                got.setdefault(k, []).append("record")
    for r in rejects:
        got.setdefault((r["source_shard"], r["key"]), []).append(r["reason"])
    return got


def test_process_shard_nothing_lost_on_hostile_inputs(tmp_path, cfg, toks, hostile):
    from videopoet.schemas import shards
    from videopoet.schemas.store import DatasetStore

    st = DatasetStore(str(tmp_path / "ds"))
    work = st.begin("hostile", "v1", cfg)
    recs, rejects = {}, []
    for uri in inputs.list_input_shards(str(os.path.dirname(hostile["shards"][0]))):
        name = inputs.input_name(uri)
        s = shard.process_shard(uri, cfg, toks, work)
        assert s.stats.samples_in == s.stats.samples_ok + s.stats.rejects
        recs[name] = list(shards.read_records(work.shard_path(name)))
        with open(work.rejects_path(name), encoding="utf-8") as f:
            rejects += [json.loads(line) for line in f]
    got = _outcomes(recs, rejects)
    want: dict[tuple[str, str], list[str]] = {}
    for (source, key), outcome in hostile["expect"].items():
        want.setdefault((source, key.split("#")[0]), []).append(outcome)
    assert got == want
    # every reject has the documented fields and a known reason code
    for r in rejects:
        assert set(r) == {"source_shard", "key", "stage", "reason", "message"}
        assert r["reason"] in errors.REJECT_REASONS
    by_key = {r.key: r for rs in recs.values() for r in rs}
    s0 = "hostile-00000"
    # documented handling of the accepted-but-odd samples
    assert by_key[f"{s0}/g_nocap/000"].caption is None and by_key[f"{s0}/g_nocap/000"].text_ids is None
    assert by_key[f"{s0}/j_noaudio/000"].audio is None and by_key[f"{s0}/j_noaudio/000"].meta["has_audio"] is False
    assert by_key[f"{s0}/k_ownwav/001"].meta["audio_origin"] == "wav file"
    assert by_key[f"{s0}/k_ownwav/001"].audio.shape == (toks.audio.levels, 106)
    assert by_key[f"{s0}/l_image/000"].video.shape == (1, 4, 4) and by_key[f"{s0}/l_image/000"].meta["is_image"]
    assert by_key[f"{s0}/m_portrait/000"].meta["bucket"] == "portrait"
    assert by_key[f"{s0}/m_portrait/000"].video.shape == (5, 7, 4)  # 56x32 (HxW) portrait bucket
    assert by_key[f"{s0}/m_portrait/000"].caption == "a tall clip"  # from the .json
    a = by_key[f"{s0}/a_good/001"]
    assert a.lineage.frame_indices == tuple(range(17, 34)) and a.lineage.clip_start_s == 17 / 8
    assert len(a.conditions) == 1 and set(a.conditions) == set(
        tokenize.condition_kinds(
            prepare.ClipItem(a.key, "a_good", 1, None, None, None, a.lineage, {"is_image": False}), cfg
        )
    )
    assert next(iter(a.conditions.values())).shape == (5, 4, 4)
    kinds = {k for rs in recs.values() for r in rs for k in r.conditions}
    assert kinds == {"inpaint_center", "outpaint_border"}  # alternate mode covers both tasks
    assert a.text_ids is not None and a.text_ids.dtype == np.int32
    # the key repeated across shards is kept in both, under distinct record keys
    assert "hostile-00001/a_good/000" in by_key and f"{s0}/a_good/000" in by_key
    # commit reconciles the counts in the manifest and verifies
    m = st.commit(work, {"tokenizers": toks.lineage(), "pipeline_config": cfg})
    n_rec = sum(len(v) for v in recs.values())
    ok_samples = len({(s, r.lineage.sample_key) for s, rs in recs.items() for r in rs})
    assert m["totals"]["records"] == n_rec
    assert m["totals"]["samples_rejected"] == len(rejects) == m["rejects"]["total"]
    assert m["totals"]["samples_in"] == ok_samples + len(rejects)
    assert sum(m["rejects"]["by_reason"].values()) == len(rejects)
    assert st.verify("hostile@v1").ok


def test_process_shard_is_deterministic_and_resumable(tmp_path, cfg, toks, hostile):
    from videopoet.schemas.store import DatasetStore

    uri = hostile["shards"][1]
    outs = []
    for i in range(2):
        work = DatasetStore(str(tmp_path / f"ds{i}")).begin("d", "v1", cfg)
        s = shard.process_shard(uri, cfg, toks, work)
        assert s.skipped is False
        outs.append(s.stats.outputs[0]["sha256"])
        again = shard.process_shard(uri, cfg, toks, work)
        assert again.skipped is True
        assert work.done_shards()[inputs.input_name(uri)].outputs[0]["sha256"] == outs[-1]
    assert outs[0] == outs[1]


def test_padded_batches_pad_the_last_batch_to_a_multiple_of_the_quantum():
    arrs = [np.full((2, 3), i + 1, np.uint8) for i in range(11)]
    got = list(tokenize.padded_batches(arrs, 8, 2))
    assert [(b.shape, n) for b, n in got] == [((8, 2, 3), 8), ((4, 2, 3), 3)]
    assert np.array_equal(np.concatenate([b[:n] for b, n in got]), np.stack(arrs))
    assert not got[1][0][3:].any()  # the padding row is zeros
    assert [(b.shape[0], n) for b, n in tokenize.padded_batches(arrs, 8)] == [(8, 8), (8, 3)]
    assert [(b.shape[0], n) for b, n in tokenize.padded_batches(arrs[:4], 4, 4)] == [(4, 4)]
    for bad in (0, 9):
        with pytest.raises(ValueError, match="quantum"):
            list(tokenize.padded_batches(arrs, 8, bad))


def test_condition_kinds_modes():
    from videopoet.schemas.record import Lineage

    lin = Lineage("s.tar", "0" * 64, "k")
    alt = load_pipeline_config("tiny")
    every = load_pipeline_config("tiny", ["condition_mode=all"])
    clips = [prepare.ClipItem(f"s/k/{c:03d}", "k", c, None, None, None, lin, {"is_image": False}) for c in range(4)]
    got = [tokenize.condition_kinds(c, alt) for c in clips]
    assert all(len(g) == 1 for g in got) and {g[0] for g in got} == {"inpaint_center", "outpaint_border"}
    assert got == [tokenize.condition_kinds(c, alt) for c in clips]  # deterministic
    assert all(tokenize.condition_kinds(c, every) == ("inpaint_center", "outpaint_border") for c in clips)
    img = prepare.ClipItem("s/i/000", "i", 0, None, None, None, lin, {"is_image": True})
    assert tokenize.condition_kinds(img, every) == ()
    assert load_pipeline_config("paper").condition_mode == "all"
    with pytest.raises(ConfigError, match="condition_mode"):
        load_pipeline_config("tiny", ["condition_mode=some"])


def test_prepare_sample_41_frame_option_and_portrait_image():
    from videopoet.media.webdataset import Sample

    cfg41 = load_pipeline_config("tiny", ["clip_frames=41", "clip_stride=8"])
    s = Sample("v", {"mp4": testing.make_video(41, 64, 64, seed=2), "txt": b"x"})
    items = prepare.prepare_sample(s, cfg41, "s.tar", "0" * 64)
    assert len(items) == 1 and items[0].frames.shape == (41, 32, 32, 3)
    assert items[0].audio.shape == (82000,) and items[0].lineage.frame_indices == tuple(range(41))
    img = Sample("i", {"png": _png(40, 90)})
    (it,) = prepare.prepare_sample(img, load_pipeline_config("tiny"), "s.tar", "0" * 64)
    assert it.frames.shape == (1, 56, 32, 3) and it.meta["bucket"] == "portrait" and it.caption is None


def _png(w, h):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


def test_open_input_local_and_object_store(tmp_path):
    """A local shard is read in place; an object-store shard is downloaded once, hashed on the way,
    and the temporary copy is gone afterwards; an unreadable shard is one PipelineError."""
    import hashlib

    import fsspec

    blob = bytes(range(256)) * 1000
    want = hashlib.sha256(blob).hexdigest()
    local = tmp_path / "a.tar"
    local.write_bytes(blob)
    with inputs.open_input(str(local)) as (path, sha, size):
        assert (path, sha, size) == (str(local), want, len(blob))
    with fsspec.open("memory://open-input/b.tar", "wb") as f:
        f.write(blob)
    with inputs.open_input("memory://open-input/b.tar") as (path, sha, size):
        assert (sha, size) == (want, len(blob)) and "://" not in path
        with open(path, "rb") as f:
            assert f.read() == blob
    assert not os.path.exists(path)
    with pytest.raises(errors.PipelineError, match="cannot read input shard"):
        with inputs.open_input("memory://open-input/missing.tar"):
            pass
    with pytest.raises(errors.PipelineError, match="cannot read input shard"):
        with inputs.open_input(str(tmp_path / "missing.tar")):
            pass


def test_shard_stats_marker_round_trip_and_invariant():
    import dataclasses

    from videopoet.schemas.errors import DatasetError
    from videopoet.schemas.shard_stats import ShardStats

    out = {
        "path": "shards/a-00000.array_record",
        "records": 2,
        "bytes": 10,
        "sha256": "ab" * 32,
        "tokens": {"video": 8, "audio": 4, "text": 0, "condition": 8},
    }
    s = ShardStats(
        "a.tar",
        (out,),
        input={"name": "a.tar", "size": 5, "sha256": "cd" * 32, "uri": "/x/a.tar"},
        samples_in=3,
        samples_ok=2,
        records=2,
        clips=2,
        rejects=1,
        rejects_by_reason={"empty_file": 1},
        tokenizers={"video": "f" * 64},
    )
    marker = json.loads(json.dumps(s.to_marker()))
    assert marker["rejects"] == {"records": 1, "by_reason": {"empty_file": 1}} and marker["input_name"] == "a.tar"
    assert ShardStats.from_marker(marker) == s.check()
    assert s.tokens == {"video": 8, "audio": 4, "text": 0, "condition": 8}
    with pytest.raises(DatasetError, match="3 samples in but 1 ok"):
        dataclasses.replace(s, samples_ok=1).check()
