"""videopoet.media as the tokenizers' data path: their shard readers go through the hardened reader and
decode / resize exactly as the pipelines do; the encoders round-trip."""

import io
import tarfile

import numpy as np
import pytest

from videopoet import media
from videopoet.media import encode
from videopoet.pipelines import testing
from videopoet.tokenizers.magvit2.data import VideoDataError, shard_clips
from videopoet.tokenizers.soundstream.data import media_waves
from videopoet.tokenizers.text.spm import read_captions


def _write_tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, blob in members:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return str(path)


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    video = testing.make_video(frames=17, width=64, height=48)
    image = np.zeros((40, 40, 3), np.uint8)
    image[:, 20:] = 200
    path = tmp_path_factory.mktemp("shard") / "s-000.tar"
    members = [
        ("a.mp4", video),
        ("a.txt", b"a red square moves right"),
        ("b.jpg", encode.encode_jpeg(image)),
        ("b.txt", b"a still"),
        ("c.mp4", b"not a video"),
        ("../evil.mp4", video),  # refused by the reader: never decoded
        ("d.wav", encode.encode_wav(np.zeros(1600, np.float32), 16000)),
        ("d.txt", b"\xff\xfe"),
    ]
    return _write_tar(path, members), video, image


def test_shard_clips_resize_as_the_pipelines_and_skip_what_the_reader_refuses(shard):
    path, video, image = shard
    clips = list(shard_clips(path, 5, 32, 32))
    assert len(clips) == 2 and all(c.shape == (5, 32, 32, 3) and c.dtype == np.uint8 for c in clips)
    want = media.resize_center_crop(media.decode_frames(video, fps=8.0).frames[:5], 32, 32)
    np.testing.assert_array_equal(clips[0], want)
    still = media.resize_center_crop(np.repeat(media.decode_image(encode.encode_jpeg(image))[None], 5, 0), 32, 32)
    np.testing.assert_array_equal(clips[1], still)
    with pytest.raises(VideoDataError, match="c.mp4"):
        list(shard_clips(path, 5, 32, 32, skip_errors=False))


def test_media_waves_and_captions_read_shards_through_the_reader(shard):
    path, _, _ = shard
    waves = list(media_waves([path], 16000))
    # a.mp4's audio track and d.wav (c.mp4 has no readable track; ../evil.mp4 is refused)
    assert len(waves) == 2 and waves[0].size > 16000 and waves[1].size == 1600
    assert read_captions(path) == ["a red square moves right", "a still"]  # d.txt is not UTF-8


def test_encoders_round_trip():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(media.decode_image(encode.encode_png(frame)), frame)
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)).astype(np.float32)
    back = media.decode_audio(encode.encode_wav(tone, 16000), 16000)
    assert back.shape == tone.shape and np.max(np.abs(back - tone)) < 1e-3
    from PIL import Image

    frames = np.stack([frame, 255 - frame, frame // 2])  # distinct: Pillow merges repeated frames
    gif = Image.open(io.BytesIO(encode.encode_gif(frames, fps=10)))  # GIF delays are in 10 ms
    assert gif.n_frames == 3 and gif.info["duration"] == 100
    # decode_gif: every frame back; a clip of few flat colours exactly (a GIF holds a 256-colour palette)
    assert media.decode_gif(encode.encode_gif(frames, fps=10)).shape == (3, 24, 32, 3)
    flat = np.zeros((4, 16, 16, 3), np.uint8)
    for t, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 120, 40)]):
        flat[t, :, : 4 * (t + 1)] = colour
    np.testing.assert_array_equal(media.decode_gif(encode.encode_gif(flat, fps=8)), flat)
    for blob, reason in [(b"", "empty_file"), (b"GIF89a-not-really", "undecodable_image")]:
        with pytest.raises(media.MediaError) as err:
            media.decode_gif(blob)
        assert err.value.reason == reason
