"""The evaluation gallery writes GIFs (through videopoet.media.encode) that decode to the clip."""

from __future__ import annotations

import types

import numpy as np
import pytest
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
    # read back at the clip's own size: the enlargement undone, every frame as generated
    assert np.array_equal(gallery.read_clip(str(tmp_path), "i2v_x_0", 32, 32), _frames())
    with pytest.raises(gallery.GalleryError, match="t2v_x_0.gif is missing"):
        gallery.read_clip(str(tmp_path), "t2v_x_0", 32, 32)
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


def _eval_dir(path, names, caption="a red square"):
    """An evaluation directory with an i2v item per name (the gallery's own writer)."""
    spec = types.SimpleNamespace(fps=8.0, sample_rate=16000)
    path.mkdir()
    items = []
    for i, name in enumerate(names):
        scene = {
            "split": "seen",
            "caption": f"{caption} {name}",
            "want": {"colour": "red", "shape": "square", "motion": "left"},
            "frames": _frames(),
        }
        res = types.SimpleNamespace(frames=_frames(), audio=None)
        items.append(gallery.gallery_item(str(path), name, "i2v", scene, res, {"kept": i % 2 == 0}, spec))
    gallery.write_gallery(str(path), items, f"TABLE {path.name}", {"run": path.name}, ("i2v",))
    return path


def test_side_by_side_puts_each_prompt_in_one_row_with_a_column_per_evaluation(tmp_path):
    import html
    import re

    a = _eval_dir(tmp_path / "a", ["i2v_k1_0", "i2v_k2_0"])
    b = _eval_dir(tmp_path / "b", ["i2v_k1_0"])
    (tmp_path / "out").mkdir()
    page = gallery.write_side_by_side(
        str(tmp_path / "out" / "both.html"), [("model A", str(a)), ("model B", str(b))], ("t2v", "i2v")
    )
    text = open(page).read()
    assert "TABLE a" in text and "TABLE b" in text and "<th>model A</th><th>model B</th>" in text
    rows = re.findall(r"<tr>(<td>.*?)</tr>", text)
    assert len(rows) == 2 and "<h2>t2v</h2>" not in text
    # row 1: both columns, their own clips (linked relative to the page), the input once
    cells = re.findall(r"<td>(.*?)</td>", rows[0])
    assert "k1_0" in cells[0] and cells[0].count("title='input'") == 1
    assert "src='../a/i2v_k1_0.gif'" in cells[1] and "src='../b/i2v_k1_0.gif'" in cells[2]
    for cell in cells[1:]:
        src = html.unescape(re.search(r"src='([^']+)'", cell).group(1))
        assert (tmp_path / "out" / src).exists()
    # row 2: only A made it
    cells = re.findall(r"<td>(.*?)</td>", rows[1])
    assert "src='../a/i2v_k2_0.gif'" in cells[1] and cells[2] == "not evaluated"
    assert "class='bad'>kept" in cells[1]


def test_side_by_side_refuses_a_directory_without_a_gallery(tmp_path):
    import pytest

    a = _eval_dir(tmp_path / "a", ["i2v_k1_0"])
    with pytest.raises(gallery.GalleryError, match="gallery.json"):
        gallery.write_side_by_side(str(tmp_path / "p.html"), [("A", str(a)), ("B", str(tmp_path))], ("i2v",))
