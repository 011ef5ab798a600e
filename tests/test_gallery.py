"""The evaluation gallery writes GIFs (through videopoet.media.encode) that decode to the clip."""

from __future__ import annotations

import types

import numpy as np
from PIL import Image

from videopoet.trainer import gallery


def _frames(t=5, h=32, w=32):
    f = np.zeros((t, h, w, 3), np.uint8)
    for i in range(t):
        f[i, :, : 4 * (i + 1)] = (255, 0, 0)
    return f


def test_gallery_item_gifs_decode(tmp_path):
    spec = types.SimpleNamespace(fps=8.0, sample_rate=16000)
    scene = {
        "split": "seen",
        "caption": "a red square",
        "want": {"colour": "red", "shape": "square", "motion": "left"},
        "frames": _frames(),
    }
    res = types.SimpleNamespace(frames=_frames(), audio=None)
    item = gallery.gallery_item(str(tmp_path), "i2v_x_0", "i2v", scene, res, {"kept": True}, spec)
    assert item["gif"] == "i2v_x_0.gif" and item["input_gif"] == "i2v_x_0_input.gif"
    with Image.open(tmp_path / item["gif"]) as im:
        assert im.n_frames == 5
        assert im.size == (128, 128)  # 32 px repeated 4x to the 128-px minimum
        im.seek(2)
        rgb = np.asarray(im.convert("RGB"))
    assert (rgb[:, : 4 * 3 * 4] == (255, 0, 0)).all() and (rgb[:, 4 * 3 * 4 :] == 0).all()
    page = gallery.write_gallery(str(tmp_path), [item], "TABLE", {"run": "r"}, ("t2v", "i2v"))
    text = open(page).read()
    assert "<pre>TABLE</pre>" in text and "i2v_x_0.gif" in text and "<h2>i2v</h2>" in text
    assert "<h2>t2v</h2>" not in text


def test_v2a_item_is_an_mp4_with_audio(tmp_path):
    from videopoet import media

    spec = types.SimpleNamespace(fps=8.0, sample_rate=16000)
    scene = {
        "split": "heldout",
        "caption": "c",
        "want": {"colour": "red", "shape": "square", "motion": "left"},
        "frames": _frames(17),
    }
    wave = (0.2 * np.sin(2 * np.pi * 440 * np.arange(34000) / 16000)).astype(np.float32)
    item = gallery.gallery_item(str(tmp_path), "v2a_x_0", "v2a", scene, types.SimpleNamespace(audio=wave), {}, spec)
    blob = (tmp_path / item["video"]).read_bytes()
    assert media.decode_frames(blob, fps=8.0).frames.shape[1:3] == (128, 128)
    assert media.extract_audio_track(blob, 16000).size > 30000
