"""Generation keeps what the user gave (Generator.keep_given): continuation, image-to-video, long video,
inpainting and outpainting on a real H.264 clip, measured as PSNR of the kept frames / region."""

from __future__ import annotations

import numpy as np
import pytest

from videopoet import media
from videopoet.cli.generate import read_input, write_output
from videopoet.trainer import generation
from videopoet.trainer.config import load_train_config

CFG = load_train_config("tiny")


def psnr(a, b) -> float:
    err = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if err == 0 else float(10 * np.log10(255.0**2 / err))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import jax

    from videopoet.media.encode import encode_mp4
    from videopoet.pipelines.synth import load_synth_config, render_audio, render_frames, sample_attrs
    from videopoet.tokenizers import magvit2, soundstream, text
    from videopoet.trainer import model

    vt, at, te = magvit2.load("tiny"), soundstream.load("tiny"), text.load("tiny")
    spec = generation.MediaSpec.of(vt, at, frames=17, height=32, width=32)
    params = model.init_params(CFG.model, jax.random.PRNGKey(0))
    gen = generation.Generator(model.build(CFG.model), params, CFG, vt, at, te, spec)
    scfg = load_synth_config(
        "tiny", ["sizes=[[32,32]]", "portrait_fraction=0.0", "frames=17", "two_object_fraction=0.0"]
    )
    attrs = sample_attrs(scfg, 5, "train", "video", 0, "k")
    path = tmp_path_factory.mktemp("in") / "clip.mp4"  # a real H.264 + AAC file, decoded as a user's input is
    path.write_bytes(encode_mp4(render_frames(attrs), render_audio(attrs), 8, 16000))
    video, audio = read_input(str(path), "video", spec, need_audio=True)
    return gen, video, audio


def _written(tmp_path, frames, fps=8):
    """The frames as the user gets them: written to mp4 and decoded back."""
    out = str(tmp_path / "out.mp4")
    write_output(out, frames, None, fps)
    with open(out, "rb") as f:
        return media.decode_frames(f.read(), fps=fps).frames


@pytest.mark.slow
def test_generation_keeps_the_given_frames_and_regions(setup, tmp_path):
    from videopoet.tokenizers.magvit2 import masks

    gen, video, audio = setup
    vt = gen.video_tok
    recon = vt.decode(vt.encode(video[None]))[0]  # what placing the given tokens alone would show
    figures = {}

    fp = gen.generate([generation.Request("fp", video=video, given=2, seed=1)])[0]
    k = fp.given_frames
    assert k == 5 and fp.frames.shape == video.shape
    np.testing.assert_array_equal(fp.frames[:k], video[:k])  # the input's own frames, exactly
    figures["fp"] = (psnr(_written(tmp_path, fp.frames)[:k], video[:k]), psnr(recon[:k], video[:k]))

    i2v = gen.generate([generation.Request("i2v", image=video[0], seed=1)])[0]
    np.testing.assert_array_equal(i2v.frames[0], video[0])
    figures["i2v"] = (psnr(_written(tmp_path, i2v.frames)[0], video[0]), psnr(recon[0], video[0]))

    for task, kind in (("inpaint", "inpaint_center"), ("outpaint", "outpaint_border"), ("outpaint", "outpaint_left")):
        res = gen.generate([generation.Request(task, video=video, mask=kind, seed=1)])[0]
        hidden = masks.make_mask(kind, 17, 32, 32, align=vt.config.spatial_downsample)
        assert hidden.any() and (~hidden).any()
        np.testing.assert_array_equal(res.frames[~hidden], video[~hidden])  # outside the mask: the input
        assert not np.array_equal(res.frames[hidden], video[hidden])  # inside: generated
        written = _written(tmp_path, res.frames)
        figures[kind] = (psnr(written[~hidden], video[~hidden]), psnr(recon[~hidden], video[~hidden]))

    av = gen.generate([generation.Request("avcont", video=video, audio=audio, seed=1)])[0]
    np.testing.assert_array_equal(av.frames[: av.given_frames], video[: av.given_frames])
    n = int(round(av.given_frames / 8 * 16000))
    np.testing.assert_array_equal(av.audio[:n], audio[:n])

    # long video from the clip: continuation rounds build on the kept frames
    long = gen.long_video(None, seconds=4.0, seed=2, first=fp.frames)
    assert long.shape[0] == 32
    np.testing.assert_array_equal(long[:k], video[:k])
    np.testing.assert_array_equal(long[:17], fp.frames)

    for name, (kept, tok) in figures.items():
        print(f"{name}: kept {kept:.1f} dB after writing the mp4 (tokens alone: {tok:.1f} dB)")
        assert kept > 27.0 and kept > tok, name
