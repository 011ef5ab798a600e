"""The MAGVIT-v2 perceptual loss: the LPIPS-style VGG-16 distance against a numpy reference, the
safetensors loader and its errors, and training with it (the term reaches the gradients, the run
records the weights' sha256 and refuses to resume with other weights)."""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy as stn

from videopoet.pipelines.synth import sources
from videopoet.schemas.errors import ConfigError
from videopoet.tokenizers.magvit2 import perceptual
from videopoet.tokenizers.magvit2.config import load_magvit_config

WIDTHS = (4, 6, 8, 8, 8)  # a narrow VGG-16: every layer and tap of the real one, few channels


@pytest.fixture(scope="module")
def vgg_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("vgg")
    trunk, full = str(d / "trunk.safetensors"), str(d / "full.safetensors")
    perceptual.write_vgg_like(trunk, WIDTHS, seed=1)
    perceptual.write_vgg_like(full, WIDTHS, seed=1, lin=True)
    lins = {k: v for k, v in stn.load_file(full).items() if k.startswith("lin")}
    heads = str(d / "lins.safetensors")
    stn.save_file(lins, heads)
    return {"trunk": trunk, "full": full, "heads": heads}


def _images(seed, n=2, size=16):
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


# ------------------------------------------------------------------- numpy reference (torch layout)
def _np_conv(x, w, b):
    """x [N,H,W,C]; w torch [O,C,3,3]: cross-correlation with zero padding 1."""
    n, h, wd, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((n, h, wd, w.shape[0]), np.float64)
    for i in range(3):
        for j in range(3):
            out += np.einsum("nhwc,oc->nhwo", xp[:, i : i + h, j : j + wd], w[:, :, i, j])
    return out + b


def _np_distance(tensors, x, y):
    def feats(v):
        h = (v.astype(np.float64) - perceptual.SHIFT) / perceptual.SCALE
        taps = []
        for i in perceptual.CONV_INDICES:
            h = np.maximum(_np_conv(h, tensors[f"features.{i}.weight"], tensors[f"features.{i}.bias"]), 0)
            if i in perceptual.TAP_AFTER:
                taps.append(h)
            if i in perceptual.POOL_AFTER:
                n, hh, ww, c = h.shape
                h = h.reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))
        return taps

    total = np.zeros(x.shape[0])
    for k, (a, b) in enumerate(zip(feats(x), feats(y), strict=True)):
        ua = a / (np.sqrt((a**2).sum(-1, keepdims=True)) + 1e-10)
        ub = b / (np.sqrt((b**2).sum(-1, keepdims=True)) + 1e-10)
        lin = tensors.get(f"lin{k}.model.1.weight")
        wts = lin.reshape(-1) if lin is not None else 1.0
        total += (((ua - ub) ** 2) * wts).sum(-1).mean(axis=(1, 2))
    return total


@pytest.mark.parametrize("which", ["trunk", "full"])
def test_distance_matches_numpy_reference(vgg_files, which):
    weights, _ = perceptual.load_weights(vgg_files[which])
    x, y = _images(0), _images(1)
    got = np.asarray(jax.jit(perceptual.distance)(weights, jnp.asarray(x), jnp.asarray(y)))
    want = _np_distance(stn.load_file(vgg_files[which]), x, y)
    assert got.shape == (2,) and np.all(want > 0)
    np.testing.assert_allclose(got, want, rtol=2e-4)


def test_distance_is_zero_on_equal_images_symmetric_and_grows_with_noise(vgg_files):
    weights, _ = perceptual.load_weights(vgg_files["full"])
    x = jnp.asarray(_images(0, size=32))
    noise = jnp.asarray(_images(5, size=32))
    assert np.allclose(np.asarray(perceptual.distance(weights, x, x)), 0.0, atol=1e-6)
    d_small = np.asarray(perceptual.distance(weights, x, x + 0.05 * noise))
    d_big = np.asarray(perceptual.distance(weights, x, x + 0.5 * noise))
    np.testing.assert_allclose(d_small, np.asarray(perceptual.distance(weights, x + 0.05 * noise, x)), rtol=1e-5)
    assert np.all(d_big > d_small) and np.all(d_small > 0)
    with pytest.raises(perceptual.PerceptualWeightsError, match="16 x 16"):
        perceptual.distance(weights, x[:, :8, :8], x[:, :8, :8])


def test_heads_in_a_second_file_and_lpips_slice_names_load_the_same(vgg_files, tmp_path):
    full, sha_full = perceptual.load_weights(vgg_files["full"])
    two, sha_two = perceptual.load_weights(f"{vgg_files['trunk']},{vgg_files['heads']}")
    x, y = jnp.asarray(_images(2)), jnp.asarray(_images(3))
    np.testing.assert_array_equal(
        np.asarray(perceptual.distance(full, x, y)), np.asarray(perceptual.distance(two, x, y))
    )
    assert sha_full != sha_two and len(sha_two) == 64  # the digest covers the files, in order
    # the LPIPS package's names: net.sliceK.N.weight for the trunk
    slice_of = {0: 1, 2: 1, 5: 2, 7: 2, 10: 3, 12: 3, 14: 3, 17: 4, 19: 4, 21: 4, 24: 5, 26: 5, 28: 5}
    renamed = {
        (f"net.slice{slice_of[int(k.split('.')[1])]}.{k.split('.', 1)[1]}" if k.startswith("features") else k): v
        for k, v in stn.load_file(vgg_files["full"]).items()
    }
    path = str(tmp_path / "lpips.safetensors")
    stn.save_file(renamed, path)
    lp, _ = perceptual.load_weights(path)
    np.testing.assert_array_equal(
        np.asarray(perceptual.distance(lp, x, y)), np.asarray(perceptual.distance(full, x, y))
    )
    # no heads: every channel weighs 1, exactly as heads of ones
    trunk, _ = perceptual.load_weights(vgg_files["trunk"])
    ones = dict(trunk, lins=[jnp.ones(c) for c in WIDTHS])
    np.testing.assert_allclose(
        np.asarray(perceptual.distance(trunk, x, y)), np.asarray(perceptual.distance(ones, x, y)), rtol=1e-6
    )


def test_bad_weight_files_give_one_line_errors(vgg_files, tmp_path):
    good = stn.load_file(vgg_files["full"])

    def write(name, tensors):
        p = str(tmp_path / name)
        stn.save_file(tensors, p)
        return p

    cases = {
        "missing": ({k: v for k, v in good.items() if k != "features.14.bias"}, "missing 1 tensors"),
        "shape": (dict(good, **{"features.5.weight": good["features.5.weight"][:, :3]}), r"features.5 has weight"),
        "nan": (dict(good, **{"features.0.bias": np.full_like(good["features.0.bias"], np.nan)}), "non-finite"),
        "heads": ({k: v for k, v in good.items() if k != "lin3.model.1.weight"}, "lin0..lin4 expected"),
        "headshape": (dict(good, **{"lin1.model.1.weight": np.ones((1, 5, 1, 1), np.float32)}), r"lin1 has shape"),
    }
    for name, (tensors, match) in cases.items():
        with pytest.raises(perceptual.PerceptualWeightsError, match=match) as e:
            perceptual.load_weights(write(name + ".safetensors", tensors))
        assert "\n" not in str(e.value)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x80\x04 not safetensors at all")
    with pytest.raises(perceptual.PerceptualWeightsError, match="not a safetensors file"):
        perceptual.load_weights(str(junk))
    with pytest.raises(perceptual.PerceptualWeightsError, match="no such file"):
        perceptual.load_weights(str(tmp_path / "absent.safetensors"))
    with pytest.raises(perceptual.PerceptualWeightsError, match="more than one file"):
        perceptual.load_weights(f"{vgg_files['full']},{vgg_files['heads']}")
    with pytest.raises(ConfigError, match="perceptual_checkpoint"):
        load_magvit_config("tiny", ["perceptual_weight=0.1"])
    with pytest.raises(ConfigError, match="perceptual_frames"):
        load_magvit_config("tiny", ["perceptual_frames=-1"])


def test_video_loss_scores_the_drawn_frames(vgg_files):
    weights, _ = perceptual.load_weights(vgg_files["trunk"])
    real = jnp.asarray(np.stack([_images(s, n=5) for s in (0, 1)]))  # [2 clips, 5 frames, 16, 16, 3]
    recon = real.at[:, 0].add(0.3)  # only frame 0 differs
    d0 = np.asarray(perceptual.distance(weights, real[:, 0], recon[:, 0]))
    np.testing.assert_allclose(float(perceptual.video_loss(weights, real, recon)), d0.mean() / 5, rtol=1e-5)
    seen = set()
    for i in range(12):
        got = float(perceptual.video_loss(weights, real, recon, frames=2, key=jax.random.PRNGKey(i)))
        # each clip contributes d0/2 when frame 0 was drawn, else 0; the loss averages the 2 clips
        options = {
            round(v, 5): k for k, v in {(a, b): (a * d0[0] + b * d0[1]) / 4 for a in (0, 1) for b in (0, 1)}.items()
        }
        match = [k for v, k in options.items() if abs(v - got) < 1e-4 * max(1.0, abs(v))]
        assert match, (got, options)
        seen.add(match[0])
    assert len(seen) > 1  # the draw changes with the key
    a = perceptual.video_loss(weights, real, recon, frames=2, key=jax.random.PRNGKey(3))
    assert float(a) == float(perceptual.video_loss(weights, real, recon, frames=2, key=jax.random.PRNGKey(3)))


def _cfg(vgg, *over):
    return load_magvit_config(
        "tiny",
        [
            "checkpoint_every=1",
            "log_every=1",
            "perceptual_weight=0.1",
            f"perceptual_checkpoint={vgg}",
            "perceptual_frames=2",
            *over,
        ],
    )


def test_training_with_perceptual_loss_records_and_guards_its_weights(vgg_files, tmp_path):
    from videopoet.tokenizers.magvit2.train import TrainConfigMismatchError, init_state, make_train_step, train_run

    src = lambda: sources.clips("train", 0, 5, 32, 32)  # noqa: E731
    out = str(tmp_path / "run")
    first = train_run(_cfg(vgg_files["full"], "steps=1"), out, src(), pool_size=4, progress=False)
    rec = json.loads(open(os.path.join(out, "metrics.jsonl")).readline())
    assert rec["perceptual"] > 0 and np.isfinite(rec["loss"])
    _, sha = perceptual.load_weights(vgg_files["full"])
    assert json.load(open(os.path.join(out, "perceptual.json"))) == {"checkpoint": vgg_files["full"], "sha256": sha}
    # resuming from a copy of the same weights at another path is fine; other weights are refused
    moved = str(tmp_path / "moved.safetensors")
    shutil.copy(vgg_files["full"], moved)
    again = train_run(_cfg(moved, "steps=2"), out, src(), pool_size=4, progress=False)
    assert again["step"] == 2 and json.load(open(os.path.join(out, "perceptual.json")))["checkpoint"] == moved
    with pytest.raises(TrainConfigMismatchError, match="other perceptual weights"):
        train_run(_cfg(vgg_files["trunk"], "steps=3"), out, src(), pool_size=4, progress=False)
    assert first["fingerprint"] != again["fingerprint"]
    # the term reaches the gradients: the same step with and without it moves the weights differently
    clips = jnp.asarray(np.stack([c for _, c in zip(range(2), src(), strict=False)]))
    cfg_on, cfg_off = _cfg(vgg_files["full"]), _cfg(vgg_files["full"], "perceptual_weight=0")
    s_on, m_on = make_train_step(cfg_on, cfg_on)(init_state(cfg_on, cfg_on, 5), clips)
    s_off, m_off = make_train_step(cfg_off, cfg_off)(init_state(cfg_off, cfg_off, 5), clips)
    assert "perceptual" in m_on and "perceptual" not in m_off
    np.testing.assert_allclose(float(m_on["loss"]) - float(m_off["loss"]), 0.1 * float(m_on["perceptual"]), rtol=1e-4)
    delta = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), s_on["params"], s_off["params"])
    assert max(jax.tree_util.tree_leaves(delta)) > 0


def test_cli_perceptual_weights_flag_turns_the_loss_on(vgg_files, tmp_path, capsys):
    from videopoet.cli.main import main

    out = str(tmp_path / "run")
    assert (
        main(
            [
                "tokenizer",
                "train",
                "--kind",
                "magvit2",
                "--config",
                "tiny",
                "--data",
                "synth",
                "--out",
                out,
                "--steps",
                "1",
                "--pool",
                "2",
                "--perceptual-weights",
                vgg_files["full"],
                "perceptual_frames=2",
                "--json",
            ]
        )
        == 0
    )
    cfg = load_magvit_config(os.path.join(out, "config.yaml"))
    assert cfg.perceptual_weight == 0.1 and cfg.perceptual_checkpoint == vgg_files["full"]
    assert "perceptual" in json.loads(open(os.path.join(out, "metrics.jsonl")).readline())
    capsys.readouterr()
    assert (
        main(
            [
                "tokenizer",
                "train",
                "--kind",
                "magvit2",
                "--config",
                "tiny",
                "--out",
                str(tmp_path / "bad"),
                "--steps",
                "1",
                "--perceptual-weights",
                str(tmp_path / "absent.safetensors"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "absent.safetensors" in err and "no such file" in err and "\n" not in err


def test_eval_reports_the_perceptual_distance(vgg_files, capsys):
    from videopoet.cli.main import main
    from videopoet.tokenizers import magvit2
    from videopoet.tokenizers.magvit2.data import take
    from videopoet.tokenizers.magvit2.evaluate import perceptual_distance

    assert (
        main(
            [
                "tokenizer",
                "eval",
                "--kind",
                "magvit2",
                "--ckpt",
                "tiny",
                "--data",
                "synth:heldout",
                "--clips",
                "2",
                "--no-h264",
                "--perceptual-weights",
                vgg_files["full"],
                "--json",
            ]
        )
        == 0
    )
    m = json.loads(capsys.readouterr().out)
    tok = magvit2.load("tiny")
    clips = take(sources.clips("heldout", 0, 5, 32, 32), 2)
    recon = tok.decode(tok.encode(clips))
    weights, sha = perceptual.load_weights(vgg_files["full"])
    frames = lambda v: jnp.asarray(v.reshape(-1, 32, 32, 3).astype(np.float32) / 127.5 - 1.0)  # noqa: E731
    want = float(np.mean(np.asarray(perceptual.distance(weights, frames(clips), frames(recon)))))
    assert m["perceptual"]["frames"] == 10 and m["perceptual"]["heads"] and m["perceptual"]["weights_sha256"] == sha
    assert m["perceptual"]["distance"] == pytest.approx(want, rel=1e-5) and want > 0
    same = perceptual_distance(
        perceptual.load_weights(vgg_files["trunk"]), clips, clips, batch=3
    )  # batching across clip boundaries
    assert same["distance"] == pytest.approx(0.0, abs=1e-6) and not same["heads"] and same["frames"] == 10
