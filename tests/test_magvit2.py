"""MAGVIT-v2 tokenizer: shapes for every preset (``paper`` by shape inference only), causality, LFQ
math against a numpy reference, COMMIT masks, encode/decode errors, save/load, training + resume,
evaluation and the CLI. Fast tests use the ``tiny`` preset (32x32, 5 frames, 6 bits)."""

from __future__ import annotations

import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from videopoet.pipelines.synth import sources
from videopoet.schemas.errors import ConfigError, VideoPoetError
from videopoet.tokenizers import magvit2
from videopoet.tokenizers.magvit2 import lfq, masks
from videopoet.tokenizers.magvit2.config import PRESETS, load_magvit_config
from videopoet.tokenizers.magvit2.data import ClipPool, take
from videopoet.tokenizers.magvit2.model import MagvitVQ, inflate_params
from videopoet.tokenizers.magvit2.tokenizer import (
    CheckpointNotFoundError,
    MagvitTokenizer,
    VideoInputError,
    arch_config,
    param_spec,
)


@pytest.fixture(scope="module")
def tiny():
    return magvit2.load("tiny")


@pytest.fixture(scope="module")
def clips():
    """Four held-out synthetic clips at the tiny size (uint8 [4, 9, 32, 32, 3])."""
    return take(sources.clips("heldout", 0, 9, 32, 32), 4)


def _shapes(preset: str, video_shape):
    """(codes, reconstruction) ShapeDtypeStructs of the preset's network: shape inference, no compute."""
    cfg = load_magvit_config(preset)
    model = MagvitVQ(arch_config(cfg))
    params = param_spec(arch_config(cfg))
    x = jax.ShapeDtypeStruct(video_shape, jnp.float32)
    codes = jax.eval_shape(lambda p, v: model.apply({"params": p}, v, method=MagvitVQ.encode), params, x)
    recon = jax.eval_shape(lambda p, c: model.apply({"params": p}, c, method=MagvitVQ.decode), params, codes)
    return cfg, codes, recon


# ------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize(
    "video, latent",
    [
        ((17, 128, 128), (5, 16, 16)),
        ((17, 224, 128), (5, 28, 16)),  # VideoPoet's portrait 128x224 (W x H) -> (5, 28, 16)
        ((41, 128, 128), (11, 16, 16)),
        ((1, 128, 128), (1, 16, 16)),  # an image is a 1-frame video
    ],
)
def test_paper_shapes(video, latent):
    cfg, codes, recon = _shapes("paper", (2, *video, 3))
    assert cfg.codebook_size == 2**18 and cfg.lfq_bits == 18
    assert codes.shape == (2, *latent) and codes.dtype == jnp.int32
    assert cfg.latent_shape(*video) == latent
    assert recon.shape == (2, *video, 3)


@pytest.mark.parametrize(
    "preset, latent, bits",
    [("tiny", (2, 4, 4), 6), ("small", (5, 8, 8), 10), ("paper", (5, 16, 16), 18)],
)
def test_every_preset_at_its_own_size(preset, latent, bits):
    cfg = load_magvit_config(preset)
    _, codes, recon = _shapes(preset, (1, cfg.frames, cfg.height, cfg.width, 3))
    assert codes.shape == (1, *latent) == (1, *cfg.latent_shape())
    assert recon.shape == (1, cfg.frames, cfg.height, cfg.width, 3)
    assert cfg.codebook_size == 2**bits
    # one more group of 4 frames -> one more latent frame; an image -> one latent frame
    assert _shapes(preset, (1, cfg.frames + 4, cfg.height, cfg.width, 3))[1].shape[1] == latent[0] + 1
    assert _shapes(preset, (1, 1, cfg.height, cfg.width, 3))[1].shape[1] == 1


def test_presets_validate_and_bad_configs_are_refused():
    for name in PRESETS:
        load_magvit_config(name).validate()
    for bad, key in [
        ("frames=6", "frames"),
        ("lfq_bits=0", "lfq_bits"),
        ("height=60", "height"),
        ("channel_mults=[1,2]", "spatial_downsample"),
        ("temporal_downsample=3", "temporal_downsample"),
        ("bogus=1", "bogus"),
        ("adam_b2=1.0", "adam_b2"),
        ("train_frames=4", "train_frames"),
        ("train_frames=-1", "train_frames"),
    ]:
        with pytest.raises(ConfigError, match=key):
            load_magvit_config("tiny", [bad])


# ------------------------------------------------------------------------------------ encode / decode
def test_encode_decode_dtypes_and_shapes(tiny, clips):
    codes = tiny.encode(clips)
    assert codes.shape == (4, 3, 4, 4) and codes.dtype == np.int32
    assert codes.min() >= 0 and codes.max() < 64
    out = tiny.decode(codes)
    assert out.shape == clips.shape and out.dtype == np.uint8
    # deterministic, independent of batching, int64 codes accepted
    np.testing.assert_array_equal(tiny.encode(clips[1:2]), codes[1:2])
    np.testing.assert_array_equal(tiny.decode(codes.astype(np.int64)), out)
    # non-square and longer inputs than the config's size
    assert tiny.encode(np.zeros((1, 13, 32, 48, 3), np.uint8)).shape == (1, 4, 4, 6)


def test_bfloat16_weights_run_the_model_in_bfloat16(tiny, clips):
    """bf16 weights (the GPU bench's model): every conv computes in bf16, the codes mostly agree with fp32."""
    model = MagvitVQ(arch_config(tiny.config))
    p16 = jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.bfloat16), tiny.params)
    x = jnp.asarray(clips, jnp.float32) / 127.5 - 1.0
    z = model.apply({"params": p16}, x.astype(jnp.bfloat16), method=MagvitVQ.encode_latent)
    codes = model.apply({"params": p16}, x.astype(jnp.bfloat16), method=MagvitVQ.encode)
    y = model.apply({"params": p16}, codes, method=MagvitVQ.decode)
    assert z.dtype == jnp.bfloat16 and y.dtype == jnp.bfloat16 and y.shape == clips.shape
    assert float(jnp.mean(codes == tiny.encode(clips))) > 0.8
    y32 = model.apply({"params": tiny.params}, codes, method=MagvitVQ.decode)
    assert y32.dtype == jnp.float32 and float(jnp.max(jnp.abs(y32 - y.astype(jnp.float32)))) < 0.1


def test_causal_first_frame_and_image_is_one_frame_video(tiny, clips):
    v = clips[:2]
    codes = tiny.encode(v)
    changed = v.copy()
    changed[:, 1:] = np.random.default_rng(1).integers(0, 256, changed[:, 1:].shape, dtype=np.uint8)
    later = tiny.encode(changed)
    np.testing.assert_array_equal(later[:, 0], codes[:, 0])
    assert not np.array_equal(later[:, 1:], codes[:, 1:])  # the change is seen by the later latents
    # frames 5.. only feed latent frames 2..: latents 0 and 1 stay
    tail = v.copy()
    tail[:, 5:] = 255 - tail[:, 5:]
    np.testing.assert_array_equal(tiny.encode(tail)[:, :2], codes[:, :2])
    # an image encodes exactly like the first frame of any video that starts with it
    np.testing.assert_array_equal(tiny.encode(v[:, :1])[:, 0], codes[:, 0])
    # decoding is causal too: frame 0 comes from latent frame 0 alone
    other = codes.copy()
    other[:, 1:] = (other[:, 1:] + 17) % 64
    assert_same_frame(tiny.decode(other)[:, 0], tiny.decode(codes)[:, 0])
    assert_same_frame(tiny.decode(codes[:, :1])[:, 0], tiny.decode(codes)[:, 0])


def assert_same_frame(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to one level at a rounding boundary on a few pixels.

    The two decodes are different XLA programs (another latent length), so a float that lands on a .5
    can round either way depending on the CPU's vectorisation; a decoder that let later latents reach
    frame 0 moves whole regions by tens of levels.
    """
    difference = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    assert difference.max() <= 1, f"frame 0 differs by up to {difference.max()} levels"
    assert np.count_nonzero(difference) <= max(1, actual.size // 1000), f"{np.count_nonzero(difference)} pixels differ"


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((5, 32, 32, 3), np.uint8), r"\[B,T,H,W,3\]"),
        (np.zeros((1, 5, 32, 32), np.uint8), r"\[B,T,H,W,3\]"),
        (np.zeros((1, 5, 32, 32, 3), np.float32), "uint8"),
        (np.zeros((1, 6, 32, 32, 3), np.uint8), r"1 \+ 4k"),
        (np.zeros((1, 4, 32, 32, 3), np.uint8), r"1 \+ 4k"),
        (np.zeros((1, 5, 30, 32, 3), np.uint8), "multiples of 8"),
        (np.zeros((0, 5, 32, 32, 3), np.uint8), "empty"),
        ([np.zeros((5, 32, 32, 3), np.uint8)], "list"),
    ],
)
def test_encode_errors(tiny, bad, match):
    with pytest.raises(VideoInputError, match=match) as e:
        tiny.encode(bad)
    assert isinstance(e.value, VideoPoetError) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.full((1, 2, 4, 4), 64, np.int32), r"\[0, 64\)"),
        (np.full((1, 2, 4, 4), -1, np.int32), r"\[0, 64\)"),
        (np.zeros((1, 2, 4, 4), np.float32), "integer"),
        (np.zeros((2, 4, 4), np.int32), r"\[B,T',H',W'\]"),
    ],
)
def test_decode_errors(tiny, bad, match):
    with pytest.raises(VideoInputError, match=match) as e:
        tiny.decode(bad)
    assert isinstance(e.value, VideoPoetError) and "\n" not in str(e.value)


# ------------------------------------------------------------------------------------ LFQ
def test_codes_bits_round_trip():
    codes = np.arange(2**10)
    bits = np.asarray(lfq.codes_to_bits(codes, 10))
    assert bits.shape == (1024, 10) and set(np.unique(bits)) == {0, 1}
    np.testing.assert_array_equal(bits[5], [1, 0, 1, 0, 0, 0, 0, 0, 0, 0])  # bit i has weight 2**i
    np.testing.assert_array_equal(np.asarray(lfq.bits_to_codes(bits)), codes)
    # 18 bits (the paper's codebook): random codes survive codes -> latent -> quantize -> codes
    c18 = np.random.default_rng(0).integers(0, 2**18, 1000)
    lat = lfq.codes_to_latent(c18, 18, scale=0.5)
    assert set(np.unique(np.asarray(lat))) == {-0.5, 0.5}
    q, back = lfq.quantize(lat, 0.5)
    np.testing.assert_array_equal(np.asarray(back), c18)
    np.testing.assert_array_equal(np.asarray(q), np.asarray(lat))


def _np_entropies(z, scale, tau):
    """Reference: the explicit softmax over all 2^B codes (no factorization)."""
    b = z.shape[-1]
    cb = np.array(list(itertools.product([0, 1], repeat=b)))[:, ::-1]  # row c = bits of code c (LSB first)
    cb = (cb * 2.0 - 1.0) * scale
    d = ((z[:, None, :] - cb[None]) ** 2).sum(-1)  # [N, C]
    logits = -d / tau
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    ent = lambda q: -(q * np.log(np.clip(q, 1e-30, 1))).sum(-1)  # noqa: E731
    return ent(p).mean(), ent(p.mean(0)), p


@pytest.mark.parametrize("scale, tau", [(1.0, 0.5), (0.5, 0.1), (1.0, 2.0)])
def test_entropy_terms_match_numpy_reference(scale, tau):
    z = np.random.default_rng(1).normal(size=(64, 5)) * 0.3
    per_ref, cb_ref, p_ref = _np_entropies(z, scale, tau)
    # the factorized bit probabilities are the reference's marginals
    bitsets = np.asarray(lfq.codes_to_bits(np.arange(32), 5))
    marg = p_ref @ bitsets
    np.testing.assert_allclose(np.asarray(lfq.bit_probs(jnp.asarray(z, jnp.float32), scale, tau)), marg, atol=1e-5)
    per, cb = lfq.entropy_terms(jnp.asarray(z, jnp.float32), scale, tau, exact_max_bits=12)
    assert float(per) == pytest.approx(per_ref, rel=1e-4, abs=1e-5)
    assert float(cb) == pytest.approx(cb_ref, rel=1e-4, abs=1e-5)
    # the per-bit approximation (used above exact_max_bits) is an upper bound on the codebook entropy
    _, approx = lfq.entropy_terms(jnp.asarray(z, jnp.float32), scale, tau, exact_max_bits=2)
    assert float(approx) >= float(cb) - 1e-5
    loss, aux = lfq.entropy_loss(jnp.asarray(z, jnp.float32), scale, tau, gamma=0.7)
    assert float(loss) == pytest.approx(per_ref - 0.7 * cb_ref, rel=1e-4, abs=1e-5)
    assert set(aux) == {"per_sample_entropy", "codebook_entropy"}


def test_entropy_extremes():
    # confident and spread over all codes: per-sample -> 0, codebook -> log(C)
    codes = np.arange(16)
    z = np.asarray(lfq.codes_to_latent(codes, 4)) * 5.0
    per, cb = lfq.entropy_terms(jnp.asarray(z), 1.0, 0.01)
    assert float(per) < 1e-4 and float(cb) == pytest.approx(np.log(16), abs=1e-4)
    # every sample on one code: codebook entropy -> 0
    per, cb = lfq.entropy_terms(jnp.asarray(np.tile(z[:1], (16, 1))), 1.0, 0.01)
    assert float(cb) < 1e-4
    # a single sample: the per-bit bound is exact
    one = jnp.asarray(np.random.default_rng(2).normal(size=(1, 14)) * 0.01, jnp.float32)
    exact = lfq.entropy_terms(one[:, :10], 1.0, 0.05, exact_max_bits=12)[1]
    bound = lfq.entropy_terms(one[:, :10], 1.0, 0.05, exact_max_bits=4)[1]
    assert float(exact) == pytest.approx(float(bound), rel=1e-4)


def test_commitment_and_straight_through():
    z = jnp.asarray(np.random.default_rng(3).normal(size=(8, 6)), jnp.float32)
    s = 0.7
    ref = np.mean((np.asarray(z) - np.sign(np.asarray(z)) * s) ** 2)
    assert float(lfq.commitment_loss(z, s)) == pytest.approx(ref, rel=1e-5)
    g = jax.grad(lambda x: lfq.commitment_loss(x, s))(z)  # the quantized target is a constant
    np.testing.assert_allclose(np.asarray(g), 2 * (np.asarray(z) - np.sign(np.asarray(z)) * s) / z.size, rtol=1e-5)
    w = jnp.arange(48.0).reshape(8, 6)
    g = jax.grad(lambda x: jnp.sum(lfq.quantize(x, s)[0] * w))(z)  # straight-through: identity gradient
    np.testing.assert_allclose(np.asarray(g), np.asarray(w))


def test_codebook_stats():
    u = lfq.codebook_stats(np.arange(64).repeat(3), 64)
    assert u["usage"] == 1.0 and u["used"] == 64 and u["perplexity"] == pytest.approx(64.0)
    one = lfq.codebook_stats(np.full(100, 7), 64)
    assert one["usage"] == 1 / 64 and one["perplexity"] == pytest.approx(1.0)
    two = lfq.codebook_stats(np.array([0, 0, 0, 1]), 4)
    h = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    assert two["perplexity"] == pytest.approx(np.exp(h)) and two["usage"] == 0.5


# ------------------------------------------------------------------------------------ masks
def test_mask_regions():
    T, H, W = 17, 64, 64
    m = masks.make_mask("inpaint_center", T, H, W)
    assert m.shape == (T, H, W) and m[:, 16:48, 16:48].all() and m.sum() == T * 32 * 32
    assert masks.make_mask("outpaint_left", T, H, W).sum(axis=(0, 1)).nonzero()[0].tolist() == list(range(16))
    assert masks.make_mask("outpaint_right", T, H, W).sum(axis=(0, 1)).nonzero()[0].tolist() == list(range(48, 64))
    assert masks.make_mask("outpaint_top", T, H, W).sum(axis=(0, 2)).nonzero()[0].tolist() == list(range(16))
    assert masks.make_mask("outpaint_bottom", T, H, W).sum(axis=(0, 2)).nonzero()[0].tolist() == list(range(48, 64))
    border = masks.make_mask("outpaint_border", T, H, W)
    assert not border[:, 16:48, 16:48].any() and border.sum() == T * (64 * 64 - 32 * 32)
    fut = masks.make_mask("future", T, H, W, keep_frames=5)
    assert not fut[:5].any() and fut[5:].all()
    # unaligned sizes round to whole tokens
    m = masks.make_mask("outpaint_left", 1, 64, 64, ratio=0.3)  # 19.2 px -> 16 px (2 tokens)
    assert m[0, 0].sum() == 16
    for kind in masks.MASK_KINDS:
        assert masks.make_mask(kind, T, H, W).any()
    with pytest.raises(masks.MaskError, match="unknown mask kind"):
        masks.make_mask("nope", T, H, W)
    with pytest.raises(masks.MaskError, match="ratio"):
        masks.make_mask("inpaint_center", T, H, W, ratio=1.5)
    with pytest.raises(masks.MaskError, match="keep_frames"):
        masks.make_mask("future", T, H, W, keep_frames=0)


@pytest.mark.parametrize("kind", masks.MASK_KINDS)
def test_token_mask_is_aligned_with_pixels(kind):
    T, H, W = 17, 64, 64
    pm = masks.make_mask(kind, T, H, W)
    tm = masks.token_mask(kind, T, H, W)
    assert tm.shape == (5, 8, 8)
    # every token is wholly hidden or wholly visible (edges on the 8-pixel grid) ...
    blocks = pm.reshape(T, 8, 8, 8, 8)
    assert np.all(blocks.all(axis=(2, 4)) == blocks.any(axis=(2, 4)))
    # ... and a token is hidden exactly when a pixel of its causal frame group is
    groups = [pm[:1]] + [pm[1 + 4 * i : 5 + 4 * i] for i in range(4)]
    for t, g in enumerate(groups):
        np.testing.assert_array_equal(tm[t], g.reshape(len(g), 8, 8, 8, 8).any(axis=(0, 2, 4)))
    if kind == "inpaint_center":
        assert tm[:, 2:6, 2:6].all() and tm.sum() == 5 * 16
    if kind == "future":
        assert not tm[:2].any() and tm[2:].all()


def test_apply_mask_and_condition_tokens(tiny, clips):
    v = clips[:2]
    masked = masks.apply_mask(v, "inpaint_center", align=8)
    hidden = masks.make_mask("inpaint_center", 9, 32, 32, align=8)
    assert (masked[:, hidden] == masks.FILL_VALUE).all()
    np.testing.assert_array_equal(masked[:, ~hidden], v[:, ~hidden])
    np.testing.assert_array_equal(masks.apply_mask(v[0], "inpaint_center", align=8), masked[0])  # [T,H,W,3] too
    cond = tiny.encode_condition(v, "inpaint_center")
    np.testing.assert_array_equal(cond, tiny.encode(masked))
    np.testing.assert_array_equal(tiny.condition_clip(v, "inpaint_center"), masked)
    assert not np.array_equal(cond, tiny.encode(v))
    # future-frame conditions keep the visible prefix's tokens (causal encoder)
    fut = tiny.encode_condition(v, "future", keep_frames=5)
    np.testing.assert_array_equal(fut[:, :2], tiny.encode(v)[:, :2])
    with pytest.raises(masks.MaskError):
        masks.apply_mask(v[0, 0], "future")


# ------------------------------------------------------------------------------------ storage
def test_save_load_round_trip(tiny, clips, tmp_path):
    d = str(tmp_path / "exp")
    tiny.save(d)
    assert sorted(os.listdir(d)) == ["config.yaml", "model.safetensors"]
    back = magvit2.load(d)
    assert back.fingerprint == tiny.fingerprint and back.config == tiny.config
    np.testing.assert_array_equal(back.encode(clips), tiny.encode(clips))
    # a half-precision export: half the bytes, read back as float32, fingerprint of the rounded weights
    half = str(tmp_path / "half")
    tiny.save(half, dtype="float16")
    size = lambda p: os.path.getsize(os.path.join(p, "model.safetensors"))  # noqa: E731
    assert size(half) < 0.55 * size(d)
    hb = magvit2.load(half)
    assert hb.fingerprint != tiny.fingerprint and hb.fingerprint == magvit2.load(half).fingerprint
    assert all(np.asarray(x).dtype == np.float32 for x in jax.tree_util.tree_leaves(hb.params))
    import safetensors.numpy as stn

    meta = stn.safe_open(os.path.join(half, "model.safetensors"), "np").metadata()
    assert meta["fingerprint"] == hb.fingerprint
    assert (hb.encode(clips) == tiny.encode(clips)).mean() > 0.9  # rounding flips at most a few bits
    # fsspec URIs work the same way
    tiny.save("memory://videopoet-test/mv-tiny")
    assert magvit2.load("memory://videopoet-test/mv-tiny").fingerprint == tiny.fingerprint


def test_fingerprint_follows_weights_and_config(tiny):
    assert magvit2.load("tiny").fingerprint == tiny.fingerprint
    assert magvit2.load("tiny", ["seed=1"]).fingerprint != tiny.fingerprint
    # training-only fields do not change what encode/decode compute, so not the fingerprint either ...
    same = magvit2.load("tiny", ["learning_rate=0.5", "pool_clips=7", "name=renamed", "steps=99"])
    assert same.fingerprint == tiny.fingerprint
    # ... the network fields do, even with the very same weights
    assert MagvitTokenizer(load_magvit_config("tiny", ["lfq_scale=2.0"]), tiny.params).fingerprint != tiny.fingerprint


def test_load_errors(tmp_path, tiny):
    with pytest.raises(CheckpointNotFoundError, match="neither a preset"):
        magvit2.load(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointNotFoundError, match="config.yaml"):
        magvit2.load(str(tmp_path / "empty"))
    # weights of another architecture under this config
    d = tmp_path / "wrong"
    tiny.save(str(d))
    cfg_text = (d / "config.yaml").read_text().replace("channels: 8", "channels: 16")
    (d / "config.yaml").write_text(cfg_text)
    with pytest.raises(CheckpointNotFoundError, match="do not match"):
        magvit2.load(str(d))


def test_default_is_the_shipped_small_checkpoint():
    d = os.path.join(os.path.dirname(magvit2.__file__), "assets", "small")
    if not os.path.exists(os.path.join(d, "model.safetensors")):
        with pytest.raises(CheckpointNotFoundError) as e:
            magvit2.default()
        assert "\n" not in str(e.value)
        return
    vt = magvit2.default()
    assert vt.config.name == "magvit2-small" and vt.config.lfq_bits == 10
    # the shipped network is the `small` preset's (its config also records the fine-tuning recipe)
    from videopoet.tokenizers.magvit2.tokenizer import arch_config

    assert arch_config(vt.config) == arch_config(load_magvit_config("small"))
    assert (vt.config.height, vt.config.width, vt.config.frames) == (64, 64, 17)
    from safetensors import safe_open

    with safe_open(os.path.join(d, "model.safetensors"), "np") as f:  # the recorded one is what loading gives
        assert f.metadata()["fingerprint"] == vt.fingerprint
    clip = take(sources.clips("heldout", 0, 17, 64, 64), 2)
    codes = vt.encode(clip)
    assert codes.shape == (2, 5, 8, 8)
    from videopoet.tokenizers.magvit2.evaluate import psnr

    trained = psnr(clip, vt.decode(codes))
    untrained = magvit2.load("small")  # same architecture: the compiled functions are shared
    assert trained > 24.0 and trained > psnr(clip, untrained.decode(untrained.encode(clip))) + 5.0  # 26.0 / 8.3 dB


@pytest.mark.slow
def test_shipped_checkpoint_meets_what_its_readme_claims():
    """The shipped checkpoint meets the figures its assets/small/README.md states on the 32 held-out clips
    (PSNR, code usage, bits per pixel), so the README and the checkpoint cannot drift apart."""
    from videopoet.tokenizers.magvit2.evaluate import evaluate

    if not os.path.exists(os.path.join(os.path.dirname(magvit2.__file__), "assets", "small", "model.safetensors")):
        pytest.skip("no shipped checkpoint")
    m = evaluate(magvit2.default(), take(sources.clips("heldout", 0, 17, 64, 64), 32), h264=False)
    assert m["clips"] == 32 and m["latent_shape"] == [5, 8, 8] and m["bpp"] == pytest.approx(0.046, abs=1e-3)
    assert m["codebook_usage"] >= 0.5 and m["psnr"] >= 27.0, (m["codebook_usage"], m["psnr"])


# ------------------------------------------------------------------------------------ training
def test_tiny_training_reduces_loss(clips):
    from videopoet.tokenizers.magvit2.train import init_state, make_train_step

    cfg = load_magvit_config("tiny")  # the batch shape train_run uses, so the compiled step is shared
    state = init_state(cfg, cfg, cfg.frames)
    step = make_train_step(cfg, cfg)
    batch = jnp.asarray(clips[:2, :5])
    hist = []
    for _ in range(15):
        state, m = step(state, batch)
        hist.append({k: float(v) for k, v in m.items()})
    assert int(state["step"]) == 15
    assert make_train_step(load_magvit_config("tiny", ["steps=7", "seed=3"]), cfg) is step  # one compile
    first, last = hist[0], hist[-1]
    assert last["l2"] < 0.5 * first["l2"], (first, last)
    assert last["loss"] < first["loss"] and last["psnr"] > first["psnr"] + 3
    assert all(np.isfinite(h["loss"]) for h in hist)


def test_inflation_starts_as_the_image_model(clips):
    from videopoet.tokenizers.magvit2.config import image_config
    from videopoet.tokenizers.magvit2.tokenizer import init_params

    cfg = load_magvit_config("tiny")
    img_params = init_params(image_config(cfg), seed=3)
    assert img_params["encoder"]["conv_in"]["conv"]["kernel"].shape[0] == 1  # 1x3x3 kernels
    vid = inflate_params(img_params, init_params(cfg, seed=4))
    k = np.asarray(vid["encoder"]["conv_in"]["conv"]["kernel"])
    assert k.shape[0] == 3 and not k[:2].any()
    np.testing.assert_array_equal(k[2], np.asarray(img_params["encoder"]["conv_in"]["conv"]["kernel"])[0])
    image_tok = MagvitTokenizer(image_config(cfg), img_params)
    video_tok = MagvitTokenizer(cfg, vid)
    frame = clips[:2, :1]
    still = np.repeat(frame, 9, axis=1)  # a still video: every latent frame is the image's codes
    got = video_tok.encode(still)
    for t in range(got.shape[1]):
        np.testing.assert_array_equal(got[:, t], image_tok.encode(frame)[:, 0])


def test_clip_pool_batches_are_a_function_of_seed_and_step(clips):
    pool = ClipPool(clips, seed=5)
    np.testing.assert_array_equal(pool.batch(3, 4), ClipPool(clips, seed=5).batch(3, 4))
    assert not np.array_equal(pool.batch(3, 4), pool.batch(4, 4))
    assert pool.batch(0, 3, frames=5).shape == (3, 5, 32, 32, 3)


def test_pools_take_the_configured_clips_and_evenly_spaced_frames():
    from videopoet.tokenizers.magvit2.train import build_pools, image_frame_indices

    assert image_frame_indices(17, 3).tolist() == [0, 8, 16]  # the default: first, middle, last
    assert image_frame_indices(17, 5).tolist() == [0, 4, 8, 12, 16]
    assert image_frame_indices(5, 99).tolist() == [0, 1, 2, 3, 4] and image_frame_indices(1, 3).tolist() == [0]
    cfg = load_magvit_config("tiny", ["pool_clips=3", "image_frames_per_clip=5"])
    vpool, ipool = build_pools(cfg, sources.clips("train", 0, cfg.frames, cfg.height, cfg.width))
    assert vpool.clips.shape == (3, cfg.frames, cfg.height, cfg.width, 3)
    assert ipool.clips.shape == (3 * min(5, cfg.frames), 1, cfg.height, cfg.width, 3)
    np.testing.assert_array_equal(ipool.clips[cfg.frames - 1, 0], vpool.clips[0, -1])  # clip 0's last frame
    with pytest.raises(ValueError, match="pool_clips"):
        load_magvit_config("tiny", ["pool_clips=0"])


def test_synth_clips_deterministic_and_split():
    a = take(sources.clips("train", 0, 5, 32, 32), 2)
    b = take(sources.clips("train", 0, 5, 32, 32), 2)
    h = take(sources.clips("heldout", 0, 5, 32, 32), 2)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, 5, 32, 32, 3) and a.dtype == np.uint8
    assert not np.array_equal(a, h)


def _run_cfg(*over):
    return load_magvit_config("tiny", ["checkpoint_every=1", "log_every=1", *over])


def _tiny_source():
    return sources.clips("train", 0, 5, 32, 32)


def test_train_run_checkpoints_and_resume(tmp_path):
    """Video-only runs (the compiled step is the one test_tiny_training_reduces_loss built)."""
    from videopoet.tokenizers.magvit2.train import TrainConfigMismatchError, train_run

    out = str(tmp_path / "b")
    first = train_run(_run_cfg("steps=2"), out, _tiny_source(), pool_size=4, progress=False)
    assert first["step"] == 2 and not first["stopped_early"]
    assert os.path.exists(tmp_path / "b" / "loss_curve.png")
    exported = magvit2.load(out)
    assert exported.fingerprint == first["fingerprint"]  # the exported EMA weights
    assert exported.config.pool_clips == 4  # the run records the pool it trained from
    # resumed longer, ending in a learning-rate decay (a schedule tail may be chosen at resume time)
    resumed = train_run(_run_cfg("steps=3", "lr_decay_steps=2"), out, _tiny_source(), pool_size=4, progress=False)
    assert resumed["step"] == 3 and resumed["fingerprint"] != first["fingerprint"]
    rows = [json.loads(x) for x in open(tmp_path / "b" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2, 3] and {r["phase"] for r in rows} == {"video"}
    lr = _run_cfg().learning_rate
    assert [r["lr"] for r in rows] == pytest.approx([lr, lr, lr / 2])  # tiny: no warm-up; cosine half-way at step 3
    # a run directory holding only checkpoints loads the latest step's EMA weights
    os.remove(tmp_path / "b" / "model.safetensors")
    assert magvit2.load(out).fingerprint == resumed["fingerprint"]
    with pytest.raises(TrainConfigMismatchError, match="seed"):
        train_run(_run_cfg("steps=3", "seed=9"), out, _tiny_source(), pool_size=4, progress=False)


def test_init_from_fine_tunes_a_trained_model(tmp_path):
    """--init-from: a new run starts from the source's exported weights; mismatches are refused clearly."""
    from videopoet.tokenizers.magvit2.train import TrainConfigMismatchError, train_run

    train_run(_run_cfg("steps=1"), str(tmp_path / "src"), _tiny_source(), pool_size=4, progress=False)
    # zero fine-tuning steps export exactly the weights it started from
    same = train_run(
        _run_cfg("steps=0"),
        str(tmp_path / "ft0"),
        _tiny_source(),
        pool_size=4,
        progress=False,
        init_from=str(tmp_path / "src"),
    )
    assert same["init_from"] == str(tmp_path / "src")
    a = magvit2.load(str(tmp_path / "src")).params
    b = magvit2.load(str(tmp_path / "ft0")).params
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
    # one step from the source differs from one step from scratch, and from the source itself
    train_run(
        _run_cfg("steps=1", "learning_rate=0.0001"),
        str(tmp_path / "ft1"),
        _tiny_source(),
        pool_size=4,
        progress=False,
        init_from=str(tmp_path / "src"),
    )
    moved = jax.tree_util.tree_leaves(
        jax.tree_util.tree_map(
            lambda x, y: bool(np.any(np.asarray(x) != np.asarray(y))), a, magvit2.load(str(tmp_path / "ft1")).params
        )
    )
    assert any(moved)
    rows = [json.loads(x) for x in open(tmp_path / "ft1" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1] and rows[0]["phase"] == "video"
    with pytest.raises(TrainConfigMismatchError, match="lfq_bits"):
        train_run(
            _run_cfg("steps=1", "lfq_bits=4"),
            str(tmp_path / "bad"),
            _tiny_source(),
            pool_size=4,
            progress=False,
            init_from=str(tmp_path / "src"),
        )


def test_grow_params_adds_identity_residual_blocks():
    """grow_params: a model grown to more residual blocks (level_res_blocks) encodes and decodes exactly
    what it computed before; each new block's last conv is zero (an identity block), the rest of it keeps
    its init; a parameter with no place or another shape is refused."""
    from videopoet.tokenizers.magvit2.model import grow_params
    from videopoet.tokenizers.magvit2.tokenizer import init_params

    cfg = load_magvit_config("tiny")
    big = load_magvit_config("tiny", ["level_res_blocks=[1,1,2,3]"])
    assert [big.res_blocks(i) for i in range(4)] == [1, 1, 2, 3] and cfg.res_blocks(3) == 1
    src = init_params(cfg, 3)
    grown = grow_params(src, init_params(big, 0))
    assert set(grown["encoder"]) - set(src["encoder"]) == {"down2_res1", "down3_res1", "down3_res2"}
    assert set(grown["decoder"]) - set(src["decoder"]) == {"up2_res1", "up3_res1", "up3_res2"}
    new = grown["decoder"]["up3_res2"]
    assert not np.any(np.asarray(new["conv2"]["conv"]["kernel"])) and np.any(np.asarray(new["conv1"]["conv"]["kernel"]))
    a, b = MagvitTokenizer(cfg, src), MagvitTokenizer(big, grown)
    video = take(sources.clips("heldout", 0, 5, 32, 32), 2)
    codes = a.encode(video)
    np.testing.assert_array_equal(b.encode(video), codes)
    np.testing.assert_array_equal(b.decode(codes), a.decode(codes))
    assert b.fingerprint != a.fingerprint
    with pytest.raises(ValueError, match="no place"):  # shrinking
        grow_params(grown, init_params(cfg, 0))
    with pytest.raises(ValueError, match="shape"):
        grow_params(src, init_params(load_magvit_config("tiny", ["channels=16"]), 0))
    with pytest.raises(ValueError, match="level_res_blocks"):
        load_magvit_config("tiny", ["level_res_blocks=[1,2]"])


def test_init_from_grows_a_smaller_model(tmp_path):
    """--init-from a model with fewer residual blocks: the run starts from it grown (identical codes and
    reconstructions), records the grown source in OUT/init_from, and trains the new blocks."""
    from videopoet.tokenizers.magvit2.train import TrainConfigMismatchError, train_run

    src_dir = str(tmp_path / "src")
    train_run(_run_cfg("steps=1"), src_dir, _tiny_source(), pool_size=4, progress=False)
    src = magvit2.load(src_dir)
    out = str(tmp_path / "grown")
    train_run(
        _run_cfg("steps=1", "level_res_blocks=[1,1,1,2]", "learning_rate=0.01"),
        out,
        _tiny_source(),
        pool_size=4,
        progress=False,
        init_from=src_dir,
    )
    start = magvit2.load(str(tmp_path / "grown" / "init_from"))
    assert start.config.level_res_blocks == (1, 1, 1, 2)
    video = take(sources.clips("heldout", 0, 5, 32, 32), 2)
    codes = src.encode(video)
    np.testing.assert_array_equal(start.encode(video), codes)
    np.testing.assert_array_equal(start.decode(codes), src.decode(codes))
    trained = magvit2.load(out).params["decoder"]["up3_res1"]["conv2"]["conv"]["kernel"]
    assert np.any(np.asarray(trained))  # the zero-initialised conv of the new block moved
    with pytest.raises(TrainConfigMismatchError, match="no place"):  # fewer blocks than the source: refused
        train_run(
            _run_cfg("steps=1"), str(tmp_path / "shrink"), _tiny_source(), pool_size=4, progress=False, init_from=out
        )


def test_finer_time_params_start_a_network_at_twice_the_temporal_rate(tmp_path):
    """finer_time_params: a temporal_downsample=4 model as the start of the same network at 2 (5 frames
    give 3 latent frames instead of 2). Every parameter has the finer network's shape; the encoder is the
    source's; the decoder upsampler that no longer doubles time makes exactly the frames the source's made
    at the end of each latent frame. --init-from accepts such a source and refuses a coarser rate."""
    from videopoet.tokenizers.magvit2.model import DepthToSpaceUp, finer_time_params, temporal_down_levels
    from videopoet.tokenizers.magvit2.tokenizer import flatten, init_params
    from videopoet.tokenizers.magvit2.train import TrainConfigMismatchError, init_weights_from

    coarse = load_magvit_config("tiny")
    fine = load_magvit_config("tiny", ["temporal_downsample=2"])
    assert coarse.latent_shape(5, 32, 32)[0] == 2 and fine.latent_shape(5, 32, 32)[0] == 3
    (level,) = set(temporal_down_levels(coarse)) - set(temporal_down_levels(fine))
    src = init_params(coarse, 3)
    out = finer_time_params(src, coarse, fine)
    want = {k: v.shape for k, v in flatten(init_params(fine, 0)).items()}
    got, before = flatten(out), flatten(src)
    assert {k: v.shape for k, v in got.items()} == want
    changed = sorted(k for k in got if got[k].shape != before[k].shape)
    assert changed == [f"decoder/up{level + 1}/conv/conv/bias", f"decoder/up{level + 1}/conv/conv/kernel"]
    for k in got:
        if k not in changed:
            np.testing.assert_array_equal(got[k], before[k])
    features = coarse.channels * coarse.channel_mults[level]
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 3, 4, 4, coarse.channels * coarse.channel_mults[level + 1]))
    y_src = DepthToSpaceUp(features, coarse.temporal_kernel, True).apply(
        {"params": src["decoder"][f"up{level + 1}"]}, x
    )
    y_fine = DepthToSpaceUp(features, coarse.temporal_kernel, False).apply(
        {"params": out["decoder"][f"up{level + 1}"]}, x
    )
    assert y_src.shape[1] == 5 and y_fine.shape[1] == 3
    np.testing.assert_allclose(np.asarray(y_fine), np.asarray(y_src[:, 0::2]), rtol=1e-6, atol=1e-6)

    MagvitTokenizer(coarse, src).save(str(tmp_path / "coarse"))
    MagvitTokenizer(fine, out).save(str(tmp_path / "fine"))
    started = init_weights_from(fine, str(tmp_path / "coarse"))
    for k, v in flatten(started).items():
        np.testing.assert_array_equal(v, got[k])
    assert MagvitTokenizer(fine, started).encode(take(_tiny_source(), 1)).shape == (1, 3, 4, 4)
    with pytest.raises(TrainConfigMismatchError, match="not a finer rate"):
        init_weights_from(coarse, str(tmp_path / "fine"))


def test_freeze_encoder_trains_the_decoder_only(tmp_path):
    """freeze_encoder=true: the encoder (so every code) stays bit for bit the source's, the decoder moves
    (here on the moving-weighted loss); without a trained model to start from it is refused."""
    from videopoet.tokenizers.magvit2.train import TrainConfigMismatchError, train_run

    src_dir = str(tmp_path / "src")
    train_run(_run_cfg("steps=1"), src_dir, _tiny_source(), pool_size=4, progress=False)
    ft_dir = str(tmp_path / "ft")
    train_run(
        _run_cfg("steps=2", "freeze_encoder=true", "learning_rate=0.01", "moving_weight=4"),
        ft_dir,
        _tiny_source(),
        pool_size=4,
        progress=False,
        init_from=src_dir,
    )
    src, ft = magvit2.load(src_dir), magvit2.load(ft_dir)
    jax.tree_util.tree_map(np.testing.assert_array_equal, ft.params["encoder"], src.params["encoder"])
    assert any(
        jax.tree_util.tree_leaves(
            jax.tree_util.tree_map(
                lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), ft.params["decoder"], src.params["decoder"]
            )
        )
    )
    clips = take(sources.clips("heldout", 0, 5, 32, 32), 2)
    np.testing.assert_array_equal(ft.encode(clips), src.encode(clips))
    with pytest.raises(TrainConfigMismatchError, match="--init-from"):
        train_run(
            _run_cfg("steps=1", "freeze_encoder=true"),
            str(tmp_path / "bad"),
            _tiny_source(),
            pool_size=4,
            progress=False,
        )


def test_moving_weight_puts_the_loss_on_what_moves():
    """moving_pixel_weights: 1 on static pixels and on a 1-frame clip; 1 + w x |x - mean over time| where
    a square crosses a static background, largest in the frames the square covers a pixel."""
    from videopoet.tokenizers.magvit2.train import moving_pixel_weights

    x = np.full((1, 4, 8, 8, 3), -0.5, np.float32)
    for t in range(4):  # a white 2 x 2 square moving right by 2 px per frame along rows 3-4
        x[0, t, 3:5, 2 * t : 2 * t + 2] = 1.0
    w = np.asarray(moving_pixel_weights(jnp.asarray(x), 10.0))
    assert w.shape == (1, 4, 8, 8, 1)
    static = np.ones((8, 8), bool)
    static[3:5] = False
    np.testing.assert_array_equal(w[0, :, static, 0], 1.0)
    # the square's own pixels: |1 - mean(1, -0.5, -0.5, -0.5)| = 1.125 -> 1 + 11.25; the same pixel in
    # the other frames: |-0.5 - (-0.125)| = 0.375 -> 1 + 3.75
    np.testing.assert_allclose(w[0, 1, 3:5, 2:4, 0], 12.25, rtol=1e-6)
    np.testing.assert_allclose(w[0, 0, 3:5, 2:4, 0], 4.75, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(moving_pixel_weights(jnp.asarray(x[:, :1]), 10.0)), 1.0)


def test_deflated_video_model_is_the_video_model_on_images():
    """deflate_params: the image model (temporal kernel 1) computes what the video model computes on
    1-frame clips; reinflate_params of unchanged image params gives the video params back exactly."""
    from videopoet.tokenizers.magvit2.config import image_config
    from videopoet.tokenizers.magvit2.model import deflate_params, reinflate_params

    cfg = load_magvit_config("tiny")
    video = MagvitTokenizer.init(cfg, seed=3)
    image = MagvitTokenizer(image_config(cfg), deflate_params(video.params))
    assert image.params["encoder"]["conv_in"]["conv"]["kernel"].shape[0] == 1
    frames = take(sources.clips("heldout", 0, 1, 32, 32), 3)
    np.testing.assert_array_equal(video.encode(frames), image.encode(frames))
    codes = video.encode(frames)
    diff = np.abs(video.decode(codes).astype(int) - image.decode(codes).astype(int))
    assert diff.max() <= 1  # float summation order only
    back = reinflate_params(image.params, video.params)
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, jax.tree_util.tree_map(np.asarray, video.params))


@pytest.mark.slow
def test_init_from_with_an_image_phase_continues_the_video_model(tmp_path):
    """--init-from with image_steps > 0: the image phase starts from the deflated source, the video phase
    keeps the source's temporal taps (plus what the image phase learnt, on the current-frame tap), the
    source travels with the run (OUT/init_from), and a resume without the flag gives the same weights."""
    from videopoet.tokenizers.magvit2.config import image_config
    from videopoet.tokenizers.magvit2.model import deflate_params
    from videopoet.tokenizers.magvit2.train import train_run

    src_dir = str(tmp_path / "src")
    train_run(_run_cfg("steps=2", "learning_rate=0.01"), src_dir, _tiny_source(), pool_size=4, progress=False)
    src = magvit2.load(src_dir).params
    cfg = _run_cfg("image_steps=2", "steps=0")
    out = str(tmp_path / "a")
    straight = train_run(cfg, out, _tiny_source(), pool_size=4, progress=False, init_from=src_dir)
    jax.tree_util.tree_map(np.testing.assert_array_equal, magvit2.load(str(tmp_path / "a" / "init_from")).params, src)
    rows = [json.loads(x) for x in open(tmp_path / "a" / "metrics.jsonl")]
    assert [r["phase"] for r in rows] == ["image", "image"]
    # after the phase: earlier taps are the source's, the current-frame tap moved by the image phase's change
    final = magvit2.load(out).params
    k_src = np.asarray(src["encoder"]["down0_res0"]["conv1"]["conv"]["kernel"])
    k_new = np.asarray(final["encoder"]["down0_res0"]["conv1"]["conv"]["kernel"])
    np.testing.assert_array_equal(k_new[:-1], k_src[:-1])
    assert np.any(k_new[-1] != k_src[-1])
    # on 1-frame clips the final video model is the image model the phase ended with
    image = MagvitTokenizer(image_config(cfg), deflate_params(final))
    frames = take(sources.clips("heldout", 0, 1, 32, 32), 2)
    np.testing.assert_array_equal(magvit2.load(out).encode(frames), image.encode(frames))
    # stopped in the image phase and resumed without --init-from: bit for bit the same model
    cut_dir = str(tmp_path / "b")
    cut = train_run(cfg, cut_dir, _tiny_source(), pool_size=4, progress=False, init_from=src_dir, max_seconds=0)
    assert cut["stopped_early"] and cut["step"] == 1
    # loading it mid-image-phase re-inflates onto the source as the run will: the past taps are the source's
    mid = magvit2.load(cut_dir).params["encoder"]["down0_res0"]["conv1"]["conv"]["kernel"]
    np.testing.assert_array_equal(np.asarray(mid)[:-1], k_src[:-1])
    resumed = train_run(cfg, cut_dir, _tiny_source(), pool_size=4, progress=False)
    assert resumed["fingerprint"] == straight["fingerprint"]


@pytest.mark.slow
def test_resume_across_inflation_is_bit_for_bit(tmp_path):
    """image step -> inflation -> video steps, straight or stopped and resumed: the same weights."""
    from videopoet.tokenizers.magvit2.train import train_run

    straight = train_run(
        _run_cfg("image_steps=1", "steps=2"), str(tmp_path / "a"), _tiny_source(), pool_size=4, progress=False
    )
    assert straight["step"] == 3
    rows = [json.loads(x) for x in open(tmp_path / "a" / "metrics.jsonl")]
    assert [r["phase"] for r in rows] == ["image", "video", "video"]
    first = train_run(
        _run_cfg("image_steps=1", "steps=1"), str(tmp_path / "b"), _tiny_source(), pool_size=4, progress=False
    )
    assert first["step"] == 2
    resumed = train_run(
        _run_cfg("image_steps=1", "steps=2"), str(tmp_path / "b"), _tiny_source(), pool_size=4, progress=False
    )
    assert resumed["step"] == 3 and resumed["fingerprint"] == straight["fingerprint"]


@pytest.mark.slow
def test_image_phase_can_be_lengthened_on_resume_but_not_after_inflation(tmp_path):
    """A run stopped in its image phase may resume with more image steps (bit for bit what a run that
    asked for them at the start gives); once inflated, image_steps is fixed."""
    from videopoet.tokenizers.magvit2.train import TrainConfigMismatchError, train_run

    straight = train_run(
        _run_cfg("image_steps=3", "steps=1"), str(tmp_path / "a"), _tiny_source(), pool_size=4, progress=False
    )
    out = str(tmp_path / "b")
    cut = train_run(
        _run_cfg("image_steps=2", "steps=1"), out, _tiny_source(), pool_size=4, progress=False, max_seconds=0
    )  # stops after its first step, in the image phase
    assert cut["stopped_early"] and cut["step"] == 1
    # an image-phase run loads (inflated): on 1-frame clips it is exactly its image model
    from videopoet.rundir import checkpoints
    from videopoet.tokenizers.magvit2.config import image_config
    from videopoet.tokenizers.magvit2.train import state_template

    cfg = _run_cfg("image_steps=2", "steps=1")
    with checkpoints.Checkpoints(out, read_only=True) as ckpts:
        image_ema = ckpts.restore(1, checkpoints.abstract(state_template(cfg, 1)))[0]["ema"]
    image_tok = MagvitTokenizer(image_config(cfg), image_ema)
    loaded = magvit2.load(out)
    assert loaded.config.temporal_kernel == cfg.temporal_kernel > 1
    frame = take(sources.clips("heldout", 0, 1, 32, 32), 2)
    codes = loaded.encode(frame)
    np.testing.assert_array_equal(codes, image_tok.encode(frame))
    np.testing.assert_array_equal(loaded.decode(codes), image_tok.decode(codes))
    fresh = jax.tree_util.tree_leaves(magvit2.load(cfg).params)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(loaded.params), fresh, strict=True))
    longer = train_run(_run_cfg("image_steps=3", "steps=1"), out, _tiny_source(), pool_size=4, progress=False)
    assert longer["step"] == 4 and longer["fingerprint"] == straight["fingerprint"]
    rows = [json.loads(x) for x in open(tmp_path / "b" / "metrics.jsonl")]
    assert [r["phase"] for r in rows] == ["image", "image", "image", "video"]
    with pytest.raises(TrainConfigMismatchError, match="only during the image phase"):
        train_run(_run_cfg("image_steps=2", "steps=2"), out, _tiny_source(), pool_size=4, progress=False)


@pytest.mark.slow
def test_training_with_gan_and_lecam_runs(clips):
    from videopoet.tokenizers.magvit2.train import init_state, make_train_step

    cfg = load_magvit_config("tiny", ["frames=9", "gan_weight=0.1"])
    state = init_state(cfg, cfg, cfg.frames)
    step = make_train_step(cfg, cfg)
    for _ in range(3):
        state, m = step(state, jnp.asarray(clips[:2]))
    assert np.isfinite(float(m["d_loss"])) and np.isfinite(float(m["g_adv"]))
    assert float(jnp.abs(state["lecam"]).sum()) > 0  # the LeCam EMAs moved


# ------------------------------------------------------------------------------------ evaluation / CLI
def test_evaluate_reports_metrics_and_writes_artifacts(tiny, clips, tmp_path):
    from PIL import Image

    from videopoet.tokenizers.magvit2.evaluate import evaluate, psnr, ssim

    m = evaluate(tiny, clips[:2], out_dir=str(tmp_path), h264_clips=1)
    for key in (
        "psnr",
        "ssim",
        "bpp",
        "codebook_usage",
        "codebook_perplexity",
        "codebook_used",
        "h264",
        "latent_shape",
        "fingerprint",
    ):
        assert key in m, key
    assert m["clips"] == 2 and m["shape"] == [9, 32, 32] and m["latent_shape"] == [3, 4, 4]
    assert m["bpp"] == pytest.approx(6 * 3 * 4 * 4 / (9 * 32 * 32))
    assert 0 < m["codebook_usage"] <= 1 and 1 <= m["codebook_perplexity"] <= 64
    assert set(m["h264"]) >= {"bpp", "psnr", "crf", "tokenizer_psnr_same_clips", "target_bpp"} and m["h264"]["psnr"] > 0
    grid = np.asarray(Image.open(tmp_path / "recon_grid.png"))
    assert grid.shape == (4 * 32, 5 * 32, 3)  # (orig, recon) rows for 2 clips, 5 frames each
    assert os.path.getsize(tmp_path / "recon.mp4") > 0
    assert json.load(open(tmp_path / "metrics.json"))["psnr"] == pytest.approx(m["psnr"])
    # the metric functions themselves
    a = clips[0]
    assert psnr(a, a) > 100 and ssim(a, a) == pytest.approx(1.0)
    noisy = np.clip(a.astype(int) + np.random.default_rng(0).integers(-8, 9, a.shape), 0, 255).astype(np.uint8)
    assert 25 < psnr(a, noisy) < 40 and 0 < ssim(a, noisy) < 1


def test_cli_train_and_eval(tmp_path, capsys):
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
                "--image-steps",
                "0",
                "--steps",
                "1",
                "--pool",
                "4",
                "--json",
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res["step"] == 1 and os.path.exists(os.path.join(out, "model.safetensors"))
    art = str(tmp_path / "eval")
    assert (
        main(
            [
                "tokenizer",
                "eval",
                "--kind",
                "magvit2",
                "--ckpt",
                out,
                "--data",
                "synth:heldout",
                "--clips",
                "2",
                "--out",
                art,
                "--json",
            ]
        )
        == 0
    )
    m = json.loads(capsys.readouterr().out)
    assert m["clips"] == 2 and m["fingerprint"] == res["fingerprint"] and "h264" in m
    assert {"psnr", "ssim", "codebook_usage", "codebook_perplexity", "bpp"} <= set(m)
    assert sorted(os.listdir(art)) == ["metrics.json", "recon.mp4", "recon_grid.png"]
    # a bad checkpoint path: exit 2 with one line on stderr
    assert main(["tokenizer", "eval", "--kind", "magvit2", "--ckpt", str(tmp_path / "nope")]) != 0
    err = capsys.readouterr().err.strip()
    assert "nope" in err and "\n" not in err


def test_lr_schedule_warmup_constant_then_cosine_decay():
    from videopoet.tokenizers.magvit2.train import lr_schedule, make_train_step, phase_length

    cfg = load_magvit_config(
        "tiny",
        [
            "warmup_steps=10",
            "lr_decay_steps=40",
            "lr_min_ratio=0.1",
            "steps=100",
            "image_steps=30",
            "learning_rate=0.001",
        ],
    )
    sched = lr_schedule(cfg, cfg.learning_rate, phase_length(cfg, "video"))
    assert float(sched(0)) == pytest.approx(1e-4)  # warm-up starts at lr / warm
    assert float(sched(10)) == pytest.approx(1e-3) and float(sched(59)) == pytest.approx(1e-3)
    assert float(sched(80)) == pytest.approx(1e-4 + 0.9e-3 * 0.5, rel=1e-5)  # half-way down the cosine
    assert float(sched(100)) == pytest.approx(1e-4) and float(sched(500)) == pytest.approx(1e-4)
    # the image phase decays over its own last steps (30 long: the decay is clipped to the phase)
    img = lr_schedule(cfg, cfg.learning_rate, phase_length(cfg, "image"))
    assert float(img(9)) < 1e-3 and float(img(30)) == pytest.approx(1e-4)
    # no decay: constant after warm-up, and the compiled step does not depend on the run length
    flat = load_magvit_config("tiny", ["warmup_steps=10"])
    assert phase_length(flat, "video") == 0 and float(lr_schedule(flat, 1e-3)(10**6)) == pytest.approx(1e-3)
    assert make_train_step(flat, flat, 0) is make_train_step(
        load_magvit_config("tiny", ["warmup_steps=10", "steps=9"]), flat, 0
    )
    with pytest.raises(ValueError, match="lr_min_ratio"):
        load_magvit_config("tiny", ["lr_min_ratio=1.5"])


def test_breakdown_locates_the_error():
    """psnr_per_frame / psnr_by_group / region on clips with a known error: exact values."""
    from videopoet.tokenizers.magvit2.evaluate import breakdown

    clips = np.full((2, 3, 8, 8, 3), 100, np.uint8)
    recon = clips.copy()
    recon[0, 1, :2] += 10  # clip 0, frame 1, rows 0-1 (a quarter of the frame) off by 10
    region = np.zeros((2, 3, 8, 8), bool)
    region[:, :, :2] = True
    out = breakdown(clips, recon, groups=["plain", "stripes"], region=region)
    mse_frame = 100.0 / 4
    exact = 10 * np.log10(255**2 / 1e-10)  # an exact frame: the MSE floor of 1e-10
    want_frame1 = np.mean([10 * np.log10(255**2 / mse_frame), exact])
    assert out["psnr_per_frame"][0] == pytest.approx(exact) and out["psnr_per_frame"][1] == pytest.approx(want_frame1)
    assert out["psnr_by_group"]["plain"]["psnr"] == pytest.approx(10 * np.log10(255**2 / (mse_frame / 3)))
    assert out["psnr_by_group"]["stripes"] == {"clips": 1, "psnr": pytest.approx(exact)}
    assert out["region"]["fraction"] == pytest.approx(0.25)
    inside = 100.0 * (8 * 2) / (2 * 3 * 8 * 2)  # one frame's region of six is off by 10
    assert out["region"]["psnr_inside"] == pytest.approx(10 * np.log10(255**2 / inside))
    assert out["region"]["psnr_outside"] == pytest.approx(exact)
    with pytest.raises(ValueError, match="region mask"):
        breakdown(clips, recon, region=region[:, :1])


def test_synth_breakdown_masks_cover_the_objects():
    from videopoet.pipelines.synth import render_frames

    patterns, masks = sources.clip_breakdown("heldout", 0, 5, 32, 32, 3, margin=2)
    attrs = list(sources.clip_attrs("heldout", 0, 5, 32, 32, count=3))
    assert patterns == [a["background"]["pattern"] for a in attrs] and masks.shape == (3, 5, 32, 32)
    clips = take(sources.clips("heldout", 0, 5, 32, 32), 3)
    for a, m, clip in zip(attrs, masks, clips, strict=True):
        np.testing.assert_array_equal(render_frames(a), clip)  # the attrs are those of sources.clips
        touched = np.any(clip != render_frames(dict(a, objects=[])), axis=-1)
        assert touched.any() and m[touched].all()  # every object pixel is inside
        assert 1.0 < m.sum() / touched.sum() < 10.0  # grown by the margin, not the whole frame
