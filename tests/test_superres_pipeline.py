"""Super-resolution pairs from the pipeline (``sr_pairs``): every video clip tokenized at the bucket
size and at 2x into the record's SUPERRES_STREAM, counted in the manifest; the low-resolution clip is
the box average of the high-resolution one; a source below 2x is a reject with its reason; the Ray
stage functions write the same bytes as the Beam runner's shard function (tiny tokenizers)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from videopoet import media
from videopoet.pipelines import prepare, shard, testing, tokenize
from videopoet.pipelines.config import load_pipeline_config
from videopoet.schemas.record import SUPERRES_STREAM, SUPERRES_STREAMS, SUPERRES_UPSAMPLED_STREAM

CFG = load_pipeline_config("tiny", ["sr_pairs=true"])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """synth tiny (64x64 / 80x64 / 64x112 sources: 2x the tiny buckets), two images and one video too
    small for a pair, over two shards."""
    from videopoet.pipelines.synth import generate_corpus

    d = str(tmp_path_factory.mktemp("srcorpus"))
    generate_corpus(d, clips=3, images=1, shards=2, seed=1, config="tiny", progress=False)
    testing.write_tar(
        os.path.join(d, "small-00000.tar"),
        [("lowres.mp4", testing.make_video(frames=24, width=48, height=48)), ("lowres.txt", b"a small clip")],
    )
    return d


def test_box_downsample_and_bicubic():
    x = np.arange(2 * 4 * 6 * 3, dtype=np.uint8).reshape(2, 4, 6, 3)
    d = media.box_downsample(x, 2)
    assert d.shape == (2, 2, 3, 3)
    assert d[1, 1, 2, 0] == int(x[1, 2:4, 4:6, 0].astype(int).sum() + 2) // 4  # the mean, halves rounded up
    assert media.upsample_bicubic(d, 2).shape == x.shape
    with pytest.raises(ValueError, match="multiple"):
        media.box_downsample(x[:, :3], 2)


def test_pipeline_emits_pairs_counted_in_the_manifest(tmp_path, corpus):
    from videopoet.cli.main import main
    from videopoet.schemas import store
    from videopoet.schemas.shards import read_records

    root = str(tmp_path / "ds")
    rc = main(
        [
            "pipeline", "run", "--input", os.path.join(corpus, "*.tar"), "--name", "sr", "--version", "v1",
            "--root", root, "--config", "tiny", "--sr-pairs", "--no-progress", "--json",
        ]
    )  # fmt: skip
    assert rc == 0
    ds = store.open_dataset("sr@v1", root)
    toks = tokenize.load_tokenizers(CFG)
    assert ds.manifest["lineage"]["pipeline_config"]["sr_pairs"] is True
    recs = [r for p in ds.shard_paths() for r in read_records(p)]
    videos = [r for r in recs if not r.meta["is_image"]]
    assert videos and any(r.meta["is_image"] for r in recs)
    for r in recs:
        if r.meta["is_image"]:
            assert SUPERRES_STREAM not in r.conditions
            continue
        hi, up = r.conditions[SUPERRES_STREAM], r.conditions[SUPERRES_UPSAMPLED_STREAM]
        t, h, w = r.video.shape
        assert hi.shape == up.shape == (t, 2 * h, 2 * w) and hi.dtype == up.dtype == np.int32
        # the upsampled stream is the tokenizer's codes of the decoded bucket-size clip, bicubic 2x
        decoded = toks.video.decode(r.video[None])[0]
        assert np.array_equal(up, toks.video.encode(media.upsample_bicubic(decoded, 2)[None])[0])
    tokens = ds.manifest["totals"]["tokens"]
    assert tokens["superres"] == sum(r.conditions[k].size for r in videos for k in SUPERRES_STREAMS) > 0
    assert tokens["condition"] == sum(
        v.size for r in recs for k, v in r.conditions.items() if k not in SUPERRES_STREAMS
    )
    assert ds.manifest["rejects"]["by_reason"] == {"sr_source_too_small": 1}
    (rej,) = list(ds.iter_rejects())
    assert rej["key"] == "lowres" and "at least 64x64" in rej["message"]
    assert store.verify(ds, deep=True).ok


def test_pair_is_exact_and_ray_stages_match_the_beam_shard_function(tmp_path, corpus):
    """The low-resolution clip is the box average of the 2x clip; the Ray runner's stage functions
    (plan_windows -> msgpack items -> tokenize_items -> assemble_shard) give process_shard's bytes."""
    from videopoet.media.webdataset import Sample, iter_samples
    from videopoet.pipelines.ray import windows
    from videopoet.schemas.store import DatasetStore

    toks = tokenize.load_tokenizers(CFG)
    src = os.path.join(corpus, "train-00000.tar")
    sample = next(s for s in iter_samples(src) if isinstance(s, Sample) and "mp4" in s.members)
    items = prepare.prepare_sample(sample, CFG, "train-00000.tar", "0" * 64)
    for it in items:
        assert it.frames_2x.shape[1:3] == (2 * it.frames.shape[1], 2 * it.frames.shape[2])
        assert np.array_equal(it.frames, media.box_downsample(it.frames_2x, 2))
    assert windows.unpack_items(windows.pack_items(items))[0].frames_2x.tobytes() == items[0].frames_2x.tobytes()

    beam = DatasetStore(str(tmp_path / "beam")).begin("b", "v1", CFG)
    shard.process_shard(src, CFG, toks, beam)
    ray = DatasetStore(str(tmp_path / "ray")).begin("r", "v1", CFG)
    rows = list(windows.plan_windows(src, CFG))

    def tokenized():
        for row in rows:
            its = windows.unpack_items(row["items"])
            recs, failed = tokenize.tokenize_items(its, toks, CFG) if its else ([], {})
            import msgpack

            yield shard.TokenizedWindow(
                msgpack.unpackb(row["pre_rejects"], raw=False),
                row["samples_in"],
                recs,
                list(dict.fromkeys(it.sample_key for it in its)),
                failed,
            )

    last = rows[-1]
    source = {"name": "train-00000.tar", "size": last["size"], "sha256": last["sha256"], "uri": src}
    shard.assemble_shard("train-00000.tar", source, tokenized(), ray, toks.fingerprints())
    for path in (beam.shard_path, beam.rejects_path):
        a = path("train-00000.tar")
        b = a.replace(str(tmp_path / "beam"), str(tmp_path / "ray")).replace("/b/", "/r/")
        with open(a.removeprefix("file://"), "rb") as fa, open(b.removeprefix("file://"), "rb") as fb:
            assert fa.read() == fb.read()


def test_a_window_is_one_padded_stream_per_shape_and_tokens_do_not_depend_on_batch_partners(corpus):
    """All of a window's video-tokenizer clips (frames, COMMIT condition clips, 2x frames) share one
    stream per array shape: the padding rows counted are at most one batch per shape, and every
    record equals the one its item gets when tokenized alone."""
    from collections import Counter

    from videopoet.media.webdataset import Sample, iter_samples

    toks = tokenize.load_tokenizers(CFG)
    items = []
    for name in ("train-00000.tar", "train-00001.tar"):
        for sample in iter_samples(os.path.join(corpus, name)):
            if isinstance(sample, Sample):
                items.extend(prepare.prepare_sample(sample, CFG, name, "0" * 64))
    assert len({it.shape_key for it in items}) >= 2 and any(it.meta["is_image"] for it in items)
    timing: Counter = Counter()
    recs, failed = tokenize.tokenize_items(items, toks, CFG, timing)
    assert failed == {} and len(recs) == len(items)
    shapes, upsampled = Counter(), Counter()  # clips encoded per shape; upsampled pairs per 2x shape
    for it in items:
        shapes[it.frames.shape] += 1 + len(tokenize.condition_kinds(it, CFG))
        if it.frames_2x is not None:
            shapes[it.frames_2x.shape] += 1
            upsampled[it.frames_2x.shape] += 1
    audio = sum(it.audio is not None for it in items)
    batch = CFG.batch_size
    # on a CPU the video tokenizer encodes in calls of at most CPU_VIDEO_CALL_CLIPS clips and
    # CPU_VIDEO_CALL_PIXELS frame pixels, and a stream's last batch is padded to a whole call for its
    # shape, not to the batch; audio is padded to the batch
    assert toks.video.max_batch == tokenize.CPU_VIDEO_CALL_CLIPS < batch
    calls = {shape: toks.video.call_size(*shape[:3]) for shape in shapes}
    for (t, h, w, _), call in calls.items():
        assert 1 <= call <= tokenize.CPU_VIDEO_CALL_CLIPS
        assert call == 1 or call * t * h * w <= tokenize.CPU_VIDEO_CALL_PIXELS
    assert timing["encoded_rows"] == sum(shapes.values()) + sum(upsampled.values()) + audio
    video_pad = sum(-n % calls[shape] for shape, n in shapes.items())
    upsampled_pad = sum(-n % calls[shape] for shape, n in upsampled.items())
    assert video_pad < sum(-n % batch for n in shapes.values())  # this corpus has streams where they differ
    assert timing["padded_rows"] == video_pad + upsampled_pad + (-audio % batch if audio else 0)
    # the same tokens as one call of the whole batch
    same = [it.frames for it in items if it.frames.shape == items[0].frames.shape][:batch]
    assert len(same) > toks.video.max_batch
    whole = type(toks.video)(toks.video.config, toks.video.params, max_batch=batch)
    assert np.array_equal(toks.video.encode(np.stack(same)), whole.encode(np.stack(same)))
    # a pixel budget of one such clip encodes them one per call: the same tokens again
    t, h, w, _ = same[0].shape
    single = type(toks.video)(toks.video.config, toks.video.params, max_batch=batch, max_call_pixels=t * h * w + 1)
    assert single.call_size(t, h, w) == 1 and single.call_size(1, h, w) == batch
    assert np.array_equal(single.encode(np.stack(same)), whole.encode(np.stack(same)))
    for it, rec in zip(items, recs, strict=True):
        ((alone,), _) = tokenize.tokenize_items([it], toks, CFG)
        assert np.array_equal(alone.video, rec.video)
        assert alone.conditions.keys() == rec.conditions.keys()
        for kind, tokens in rec.conditions.items():
            assert np.array_equal(alone.conditions[kind], tokens), kind
        assert (alone.audio is None and rec.audio is None) or np.array_equal(alone.audio, rec.audio)
