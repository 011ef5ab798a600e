"""The synthetic-world attribute scorer: on ground-truth corpus clips and on arbitrary frames."""

from __future__ import annotations

import glob

import numpy as np
import pytest

from videopoet.pipelines.synth import generate_corpus, render_audio, render_frames, score
from videopoet.pipelines.synth.world import COLOURS, SHAPES, bounce_times


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate_corpus(str(out / "train"), clips=40, shards=1, seed=3, config="tiny")
    generate_corpus(str(out / "heldout"), clips=12, shards=1, seed=3, config="tiny", split="heldout")
    return sorted(glob.glob(str(out / "*" / "*.tar")))


@pytest.mark.parametrize("kw", [{}, {"clip_frames": 17, "resize": (64, 64)}], ids=["native", "17f-64x64"])
def test_ground_truth_accuracy(corpus, kw):
    r = score.check_ground_truth(corpus, **kw)
    assert r["clips"] == 52
    assert r["counts"]["shape"] >= 20 and r["counts"]["audio_clicks"] == 52
    for attr, acc in r["accuracy"].items():
        assert acc >= 0.95, (attr, acc, r["failures"][:3])


def _scene(shape, colour, motion="right", size="large", w=96, h=80, frames=17, fps=8, bg="black", pattern="plain"):
    vx = {"left": -0.15, "right": 0.15, "up": 0.0, "down": 0.0, "bounce": 0.8, "still": 0.0}[motion]
    vy = {"left": 0.0, "right": 0.0, "up": -0.15, "down": 0.15, "bounce": 0.7, "still": 0.0}[motion]
    x0 = {"left": 0.7, "right": 0.3}.get(motion, 0.5)
    y0 = {"up": 0.7, "down": 0.3}.get(motion, 0.5)
    obj = {"shape": shape, "colour": colour, "size": size, "motion": motion, "x0": x0, "y0": y0, "vx": vx, "vy": vy}
    attrs = {
        "width": w,
        "height": h,
        "frames": frames,
        "fps": fps,
        "audio_rate": 16000,
        "kind": "video",
        "background": {"colour": bg, "pattern": pattern, "orient": "horizontal", "period": 9, "seed": 1},
        "objects": [obj],
    }
    obj["bounces"] = bounce_times(obj, frames / fps, w, h)
    return attrs


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_shape_and_colour_on_rendered_frames(shape):
    for i, colour in enumerate(COLOURS):
        attrs = _scene(
            shape,
            colour,
            motion=("left", "right", "up", "down")[i % 4],
            bg=("black", "gray", "navy", "brown", "maroon")[i % 5],
            pattern=("plain", "gradient", "stripes", "checkered", "speckled")[i % 5],
        )
        objs = score.analyze_frames(render_frames(attrs))
        assert [o.colour for o in objs] == [colour]
        assert objs[0].shape == shape, (colour, objs[0].shape_scores)
        assert objs[0].motion == attrs["objects"][0]["motion"]


def test_bounce_and_still_and_image():
    attrs = _scene("circle", "cyan", motion="bounce", frames=33)
    assert attrs["objects"][0]["bounces"], "the test scene must hit a wall"
    obj = score.analyze_frames(render_frames(attrs))[0]
    assert obj.motion == "bounce" and obj.reversals
    still = score.analyze_frames(render_frames(_scene("square", "red", motion="still")))[0]
    assert still.motion == "still" and still.shape == "square"
    image = render_frames(_scene("diamond", "yellow", motion="still", frames=1))
    objs = score.analyze_frames(image[0])  # one [H, W, 3] image
    assert (objs[0].colour, objs[0].shape, objs[0].motion) == ("yellow", "diamond", "still")


def test_backgrounds_and_noise_have_no_objects():
    bg = render_frames({**_scene("circle", "red"), "objects": []})
    assert score.analyze_frames(bg) == []
    rng = np.random.default_rng(0)
    dark_noise = rng.integers(0, 70, (5, 32, 32, 3), dtype=np.uint8)
    assert score.analyze_frames(dark_noise) == []
    colour_noise = rng.integers(0, 256, (17, 32, 32, 3), dtype=np.uint8)  # an untrained model's output
    assert score.analyze_frames(colour_noise) == []
    with pytest.raises(ValueError):
        score.analyze_frames(np.zeros((2, 3, 4), np.uint8)[None, None])


def test_motion_from_track():
    t = np.linspace(0, 1, 9)
    assert score.motion_from_track(np.stack([0.2 + 0.5 * t, 0.5 + 0 * t], 1))[0] == "right"
    assert score.motion_from_track(np.stack([0.5 + 0 * t, 0.8 - 0.5 * t], 1))[0] == "up"
    tri = np.concatenate([np.linspace(0.2, 0.8, 5), np.linspace(0.7, 0.4, 4)])
    motion, rev = score.motion_from_track(np.stack([tri, 0.5 + 0 * tri], 1))
    assert motion == "bounce" and rev == [4]
    assert score.motion_from_track(np.stack([0.2 + 0.4 * t, 0.2 + 0.4 * t], 1))[0] == "bounce"  # diagonal
    assert score.motion_from_track(np.full((9, 2), 0.5))[0] == "still"


@pytest.mark.parametrize("colour", list(COLOURS))
def test_pitch_gives_colour(colour):
    attrs = _scene("square", colour, motion="right")
    est = score.analyze_audio(render_audio(attrs), 16000, max_tones=1)
    assert est.colours == [colour]
    assert abs(est.pitches[0] / COLOURS[colour].pitch_hz - 1) < 0.01
    assert est.clicks == []


def test_clicks_at_bounces():
    attrs = _scene("triangle", "green", motion="bounce", frames=33)
    want = attrs["objects"][0]["bounces"]
    est = score.analyze_audio(render_audio(attrs), 16000)
    assert len(est.clicks) >= 1
    for c in est.clicks:  # every click lies at a bounce (10 ms frames, 20 ms windows)
        assert min(abs(c - b) for b in want) < 0.04, (c, want)
    assert score.analyze_audio(np.zeros(16000, np.float32)).clicks == []


def test_score_clip():
    attrs = _scene("cross", "blue", motion="down", frames=17)
    frames, audio = render_frames(attrs), render_audio(attrs)
    want = {"colour": "blue", "shape": "cross", "motion": "down", "bounces": []}
    r = score.score_clip(frames, want, audio)
    assert (r["colour"], r["shape"], r["motion"], r["audio_colour"], r["audio_clicks"]) == (True,) * 5
    wrong = score.score_clip(frames, {"colour": "blue", "shape": "circle", "motion": "up", "bounces": [0.5]}, audio)
    assert (wrong["colour"], wrong["shape"], wrong["motion"], wrong["audio_clicks"]) == (True, False, False, False)
    assert score.score_clip(frames, {"colour": "red", "shape": "cross", "motion": "down"})["colour"] is False
