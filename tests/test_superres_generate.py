"""`videopoet generate ... --sr SR_RUN`: the cascade after the LM writes a 2x clip as an mp4; its
mistakes are one line each (tiny presets, tiny tokenizers)."""

from __future__ import annotations

import json

import pytest
from test_superres_cli import one_line_error, train_sr

from videopoet.cli.main import main


@pytest.fixture(scope="module")
def root(sr_root):
    """The session's ``sr@v1`` (tests/conftest.py)."""
    return sr_root


@pytest.mark.slow  # four compiles: the LM's training step and sampler, the SR step and its decoder
def test_generate_sr_writes_a_2x_clip(capsys, root, tmp_path):
    """The cascade: a tiny LM on the same dataset makes 32x32 t2v tokens, the SR run turns them into
    the 2x grid, the tokenizer decodes it, and the mp4 holds 17 frames of 64x64."""
    from videopoet import media

    lm = str(tmp_path / "lm")
    lm_args = ["train", "--config", "tiny", "--data", "sr@v1", "--root", root, "--out", lm, "--json", "steps=1"]
    assert main([*lm_args, "data.mixture={t2v: 1.0}", "mesh.data=1"]) == 0
    capsys.readouterr()
    sr = str(tmp_path / "sr")
    train_sr(capsys, root, sr, "steps=2", "sample.steps=2")
    out = str(tmp_path / "clip.mp4")
    gen = ["generate", "--run", lm, "--task", "t2v", "--prompt", "a red circle moves left", "--sr", sr]
    assert main([*gen, "--out", out, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["size"] == [64, 64] and res["frames"] == 17 and res["sr"]["step"] == 2
    with open(out, "rb") as f:
        blob = f.read()
    info = media.probe_video(blob)
    assert (info.width, info.height) == (64, 64)
    assert media.decode_frames(blob, fps=8.0).frames.shape == (17, 64, 64, 3)

    assert "t2i makes none" in one_line_error(capsys, [*gen[:4], "t2i", *gen[5:], "--out", str(tmp_path / "x.png")])
    assert "--seconds" in one_line_error(capsys, [*gen, "--out", out, "--seconds", "4"])
    assert "not found" in one_line_error(capsys, [*gen[:-1], str(tmp_path / "nope"), "--out", out])
    assert "is not a super-resolution run" in one_line_error(capsys, [*gen[:-1], lm, "--out", out])
