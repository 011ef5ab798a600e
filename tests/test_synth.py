"""`videopoet corpus synth`: decodable, content-tied, deterministic webdataset shards."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from videopoet.cli.main import main
from videopoet.pipelines.synth import (
    COLOURS,
    CORRUPT_KINDS,
    HELDOUT_COMBOS,
    SHAPES,
    SynthConfig,
    SynthError,
    generate_corpus,
    load_synth_config,
    render_audio,
    render_sample,
    sample_attrs,
)


def read_shard(path: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key, ext = m.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return samples


def read_all(d: Path, split: str = "train") -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    for p in sorted(d.glob(f"{split}-*.tar")):
        out.update(read_shard(p))
    return out


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    import av

    with av.open(io.BytesIO(data)) as c:
        s = c.streams.audio[0]
        rate = s.rate
        chunks = [f.to_ndarray() for f in c.decode(s)]
    return np.concatenate(chunks, axis=1)[0].astype(np.float32), rate


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    rc = main(
        [
            "corpus",
            "synth",
            "--out",
            str(d),
            "--clips",
            "50",
            "--shards",
            "2",
            "--config",
            "tiny",
            "--images",
            "6",
            "--with-corrupt",
            "--seed",
            "3",
            "--no-progress",
            "--json",
        ]
    )
    assert rc == 0
    doc = json.loads((d / "corpus.json").read_text())
    return d, doc, read_all(d)


def good(samples, kind):
    out = {}
    for key, m in samples.items():
        attrs = json.loads(m["json"])
        if "corrupt" not in attrs and attrs["kind"] == kind:
            out[key] = (m, attrs)
    return out


# ------------------------------------------------------------------------------------- layout


def test_layout_and_corpus_json(corpus, capsys):
    d, doc, samples = corpus
    shards = sorted(p.name for p in d.glob("*.tar"))
    assert shards == ["train-00000.tar", "train-00001.tar"]
    assert [s["path"] for s in doc["shards"]] == shards
    for s in doc["shards"]:
        assert s["sha256"] == sha256(d / s["path"]) and s["bytes"] == (d / s["path"]).stat().st_size
    assert doc["seed"] == 3 and doc["split"] == "train" and doc["config"]["fps"] == 8
    assert doc["counts"]["videos"] == 50 and doc["counts"]["images"] == 6
    assert doc["counts"]["samples"] == 50 + 6 + len(CORRUPT_KINDS) == len(samples)
    assert sorted(map(tuple, doc["heldout_combos"])) == sorted(HELDOUT_COMBOS)
    assert doc["splits"]["train"]["shards"] == doc["shards"]
    for p in d.glob("*.tar"):
        with tarfile.open(p) as tar:
            members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        for m in members:
            key, ext = m.name.split(".", 1)
            assert "/" not in m.name and ext in {"mp4", "jpg", "txt", "json"} and key.startswith("train_")
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (946684800, 0, 0, "", "", 0o644)


# ------------------------------------------------------------------------------------- videos


def test_videos_decode_with_decord(corpus):
    import decord

    _, _, samples = corpus
    videos = good(samples, "video")
    assert len(videos) == 50
    sizes = Counter()
    for m, attrs in videos.values():
        vr = decord.VideoReader(io.BytesIO(m["mp4"]))
        assert len(vr) == attrs["frames"] == 41
        assert abs(vr.get_avg_fps() - 8) < 1e-6
        frame = vr[len(vr) - 1].asnumpy()
        assert frame.shape == (attrs["height"], attrs["width"], 3)
        sizes[(attrs["width"], attrs["height"])] += 1
    assert set(sizes) <= {(64, 64), (80, 64), (64, 112)}
    assert sizes[(64, 112)] >= 1 and sizes[(64, 64)] + sizes[(80, 64)] > sizes[(64, 112)]


def test_decoded_frames_match_rendered_ground_truth(corpus):
    import decord

    _, _, samples = corpus
    for key, (m, attrs) in list(good(samples, "video").items())[:4]:
        vr = decord.VideoReader(io.BytesIO(m["mp4"]))
        decoded = vr.get_batch(list(range(len(vr)))).asnumpy().astype(np.float32)
        truth = render_sample(attrs).frames.astype(np.float32)
        assert decoded.shape == truth.shape
        assert np.abs(decoded - truth).mean() < 6.0, key
        # The objects move: first and last frames differ.
        assert np.abs(truth[0] - truth[-1]).mean() > 0.5


def test_audio_track_pitch_matches_colour(corpus):
    import librosa

    _, _, samples = corpus
    checked = 0
    for key, (m, attrs) in good(samples, "video").items():
        wave, rate = decode_audio(m["mp4"])
        assert rate == attrs["audio_rate"] == 16000
        assert abs(len(wave) / rate - attrs["seconds"]) < 0.2
        if len(attrs["objects"]) != 1:
            continue
        y = librosa.resample(wave, orig_sr=rate, target_sr=22050)
        f0 = float(np.median(librosa.yin(y, fmin=150, fmax=1000, sr=22050)))
        want = COLOURS[attrs["objects"][0]["colour"]].pitch_hz
        assert abs(f0 - want) / want < 0.03, (key, f0, want, attrs["objects"][0]["shape"])
        # FFT: the strongest peak is the fundamental.
        spec = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
        freqs = np.fft.rfftfreq(len(wave), 1 / rate)
        assert abs(freqs[int(np.argmax(spec))] - want) / want < 0.02
        checked += 1
        if checked >= 6:
            break
    assert checked >= 3


def test_audio_loudness_by_size_and_clicks_on_bounces():
    cfg = load_synth_config("tiny")
    attrs = sample_attrs(cfg, 0, "train", "video", 0, "k")
    base = {
        **attrs,
        "objects": [{**attrs["objects"][0], "shape": "circle", "colour": "red", "motion": "left", "bounces": []}],
    }
    rms = {}
    for size in ("small", "medium", "large"):
        o = {**base["objects"][0], "size": size}
        rms[size] = float(np.sqrt(np.mean(render_audio({**base, "objects": [o]}) ** 2)))
    assert rms["small"] < rms["medium"] < rms["large"]
    o = {**base["objects"][0], "bounces": [1.0, 3.0]}
    wave = render_audio({**base, "objects": [o]}).astype(np.float64)
    hp = np.diff(wave)  # the 220 Hz tone is nearly flat after differencing; the 1.8 kHz click is not
    rate = attrs["audio_rate"]

    def win(t):
        return float(np.sqrt(np.mean(hp[int(t * rate) : int((t + 0.03) * rate)] ** 2)))

    assert win(1.0) > 3 * win(2.0) and win(3.0) > 3 * win(2.0)


# ------------------------------------------------------------------------------------- captions


def test_captions_match_attributes(corpus):
    _, _, samples = corpus
    firsts = set()
    for m, attrs in {**good(samples, "video"), **good(samples, "image")}.values():
        caption = m["txt"].decode("utf-8")
        assert caption == attrs["caption"] == render_sample(attrs).caption
        words = caption.lower().replace(".", " ").replace(",", " ").split()
        for o in attrs["objects"]:
            assert o["colour"] in words and o["shape"] in words, (caption, attrs["objects"])
        for c in COLOURS:
            if c in words:
                assert c in {o["colour"] for o in attrs["objects"]}, caption
        firsts.add(" ".join(words[:2]))
    assert len(firsts) >= 5  # varied sentence templates


def test_images(corpus):
    from PIL import Image

    _, _, samples = corpus
    images = good(samples, "image")
    assert len(images) == 6
    for m, attrs in images.values():
        im = Image.open(io.BytesIO(m["jpg"]))
        assert im.format == "JPEG" and im.size == (attrs["width"], attrs["height"])
        assert all(o["motion"] == "still" for o in attrs["objects"])
        truth = render_sample(attrs).frames[0].astype(np.float32)
        assert np.abs(np.asarray(im.convert("RGB"), np.float32) - truth).mean() < 6.0


# ------------------------------------------------------------------------------------- held-out


def _combos(samples):
    return [(o["colour"], o["shape"]) for m in samples.values() for o in json.loads(m["json"])["objects"]]


def test_heldout_never_in_train(corpus):
    _, _, samples = corpus
    assert not set(_combos(samples)) & set(HELDOUT_COMBOS)
    # And over many sampled scenes (cheap: attributes only); every other combination occurs.
    cfg = load_synth_config("tiny")
    seen = Counter()
    for i in range(1500):
        for o in sample_attrs(cfg, 7, "train", "video" if i % 2 else "image", i, "k")["objects"]:
            seen[(o["colour"], o["shape"])] += 1
    assert not set(seen) & set(HELDOUT_COMBOS)
    assert len(seen) == len(COLOURS) * len(SHAPES) - len(HELDOUT_COMBOS)


def test_heldout_split_only_heldout(tmp_path):
    rc = main(
        [
            "corpus",
            "synth",
            "--out",
            str(tmp_path),
            "--clips",
            "4",
            "--images",
            "3",
            "--shards",
            "1",
            "--config",
            "tiny",
            "--no-progress",
        ]
    )
    assert rc == 0
    rc = main(
        [
            "corpus",
            "synth",
            "--out",
            str(tmp_path),
            "--clips",
            "8",
            "--images",
            "4",
            "--shards",
            "1",
            "--split",
            "heldout",
            "--config",
            "tiny",
            "--no-progress",
        ]
    )
    assert rc == 0
    samples = read_all(tmp_path, "heldout")
    assert len(samples) == 12 and all(k.startswith("heldout_") for k in samples)
    combos = _combos(samples)
    assert combos and set(combos) <= set(HELDOUT_COMBOS)
    doc = json.loads((tmp_path / "corpus.json").read_text())
    assert set(doc["splits"]) == {"train", "heldout"} and doc["split"] == "heldout"
    assert (tmp_path / "train-00000.tar").exists()


# ------------------------------------------------------------------------------------- corrupt


def test_with_corrupt_produces_each_kind(corpus):
    import decord

    _, doc, samples = corpus
    bad = {}
    for m in samples.values():
        attrs = json.loads(m["json"])  # every corrupt sample keeps its .json
        if "corrupt" in attrs:
            bad[attrs["corrupt"]] = m
    assert set(bad) == set(CORRUPT_KINDS)
    assert sorted(c["kind"] for c in doc["corrupt"]) == sorted(CORRUPT_KINDS)
    assert doc["counts"]["corrupt"] == {k: 1 for k in CORRUPT_KINDS}
    for kind in ("truncated_mp4", "not_video_mp4"):
        with pytest.raises(RuntimeError):  # decord's DECORDError
            decord.VideoReader(io.BytesIO(bad[kind]["mp4"]))
    assert bad["empty_mp4"]["mp4"] == b""
    assert (
        "txt" not in bad["missing_caption"] and len(decord.VideoReader(io.BytesIO(bad["missing_caption"]["mp4"]))) == 41
    )
    with pytest.raises(UnicodeDecodeError):
        bad["bad_utf8_caption"]["txt"].decode("utf-8")
    assert len(decord.VideoReader(io.BytesIO(bad["bad_utf8_caption"]["mp4"]))) == 41


# ------------------------------------------------------------------------------------- determinism


def _run(out: Path, seed: int, config="tiny", overrides=(), clips=10) -> dict[str, str]:
    generate_corpus(
        str(out),
        clips=clips,
        shards=2,
        seed=seed,
        images=2,
        with_corrupt=True,
        config=config,
        overrides=overrides,
        progress=False,
    )
    return {p.name: sha256(p) for p in sorted(out.iterdir())}


def test_deterministic_shards(tmp_path):
    a = _run(tmp_path / "a", 5)
    b = _run(tmp_path / "b", 5)
    assert a == b and "corpus.json" in a and "train-00001.tar" in a
    c = _run(tmp_path / "c", 6)
    assert c["train-00000.tar"] != a["train-00000.tar"] and c["train-00001.tar"] != a["train-00001.tar"]


def test_deterministic_at_small_sizes(tmp_path):
    # 160-pixel-wide frames (the small preset) once gave different x264 output run to run.
    kw = dict(config="small", overrides=["frames=16", "portrait_fraction=0.0"], clips=6)
    assert _run(tmp_path / "a", 1, **kw) == _run(tmp_path / "b", 1, **kw) == _run(tmp_path / "c", 1, **kw)


def test_samples_independent_of_shard_count(tmp_path):
    generate_corpus(str(tmp_path / "a"), clips=6, shards=1, seed=2, config="tiny", progress=False)
    generate_corpus(str(tmp_path / "b"), clips=6, shards=3, seed=2, config="tiny", progress=False)
    assert read_all(tmp_path / "a") == read_all(tmp_path / "b")


def test_rerun_with_fewer_shards_removes_stale_ones(tmp_path):
    generate_corpus(str(tmp_path), clips=3, shards=3, config="tiny", progress=False)
    generate_corpus(str(tmp_path), clips=3, shards=2, config="tiny", progress=False)
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["train-00000.tar", "train-00001.tar"]


# ------------------------------------------------------------------------------------- config, CLI


def test_presets_and_yaml(tmp_path):
    assert load_synth_config("tiny").frames / load_synth_config("tiny").fps >= 41 / 8
    small = load_synth_config(None)
    assert small == SynthConfig() and small.frames * 8 / small.fps >= 41
    paper = load_synth_config("paper")
    assert paper.fps == 24 and min(paper.sizes[0]) >= 256
    y = tmp_path / "synth.yaml"
    y.write_text("preset: tiny\nfps: 10\n")
    cfg = load_synth_config(str(y), ["frames=50"])
    assert (cfg.fps, cfg.frames, cfg.sizes) == (10, 50, ((64, 64), (80, 64)))


@pytest.mark.parametrize(
    "argv",
    [
        ["--clips", "0"],
        ["--clips", "2", "--shards", "5"],
        ["--clips", "-1"],
        ["fps=0"],
        ["sizes=[[63,64]]"],
        ["nope=1"],
        ["--config", "nope"],
    ],
)
def test_cli_errors_are_one_line_exit_2(tmp_path, capsys, argv):
    rc = main(["corpus", "synth", "--out", str(tmp_path), "--config", "tiny", "--no-progress", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("videopoet: error:")


def test_cli_json_summary_and_fsspec_memory(capsys):
    rc = main(
        [
            "corpus",
            "synth",
            "--out",
            "memory://synth-test",
            "--clips",
            "2",
            "--shards",
            "1",
            "--config",
            "tiny",
            "--json",
            "--no-progress",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"]["videos"] == 2 and len(summary["shards"]) == 1
    import fsspec

    fs = fsspec.filesystem("memory")
    data = fs.cat("/synth-test/train-00000.tar")
    assert hashlib.sha256(data).hexdigest() == summary["shards"][0]["sha256"]


def test_generate_corpus_rejects_unknown_split(tmp_path):
    with pytest.raises(SynthError):
        generate_corpus(str(tmp_path), clips=1, shards=1, split="test", config="tiny")
