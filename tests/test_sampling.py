"""The sampler: KV cache vs full recomputation, seeding, constraints, filtering, guidance."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from videopoet.trainer import model, sampling
from videopoet.trainer.config import MODEL_PRESETS
from videopoet.trainer.tasks import COND_INPUT, COND_TEXT

CFG = MODEL_PRESETS["tiny"]()
VIS = (256, 256 + CFG.visual_size)
AUD0 = (VIS[1], VIS[1] + CFG.audio_codebook)


@pytest.fixture(scope="module")
def model_params():
    """A random tiny model with its attention weights scaled up, so that the context (text, inputs)
    visibly changes its predictions (at init the token embedding alone decides the argmax)."""
    params = model.init_params(CFG, jax.random.PRNGKey(0))
    sharp = jax.tree_util.tree_map_with_path(
        lambda path, x: x * 10.0 if any(getattr(k, "key", None) in ("q", "k", "v", "o") for k in path) else x, params
    )
    return model.build(CFG), sharp


def _prompt(b=3, text_len=4, seed=0):
    """<bos> <task> <bot_i> T <eot_i> <bov_i> V <eov_i> <bov_o>, text slots partly empty."""
    rng = np.random.default_rng(seed)
    vid = rng.integers(*VIS, (b, 6))
    head = np.array([1, 32, 2])
    rows, valid, tidx, cond = [], [], [], []
    for i in range(b):
        t = np.concatenate([head, np.zeros(text_len, int), [3, 4], vid[i], [5, 10]])
        v = np.ones(t.shape, bool)
        v[3 + text_len - 1 - i % 2 : 3 + text_len] = False  # 1 or 2 empty text slots
        ti = np.full(t.shape, -1)
        ti[3 : 3 + text_len] = np.arange(text_len)
        c = np.zeros(t.shape, np.int8)
        c[3 : 3 + text_len] = COND_TEXT
        c[3 + text_len + 2 : 3 + text_len + 8] = COND_INPUT
        rows.append(t), valid.append(v), tidx.append(ti), cond.append(c)
    pr = sampling.Prompt(np.array(rows, np.int32), np.array(valid), np.array(tidx, np.int32), np.array(cond, np.int8))
    emb = rng.normal(size=(b, text_len, CFG.text_dim)).astype(np.float32)
    return pr, emb


PLAN = sampling.OutputPlan.build(
    [
        ("range", *VIS, 12),
        ("token", 11),
        ("token", 12),
        ("range", *AUD0, 5),
        ("range", AUD0[1], AUD0[1] + CFG.audio_codebook, 5),
        ("token", 13),
    ]
)


def _check_plan(out):
    assert out.shape[1] == PLAN.length
    for j in range(PLAN.length):
        if PLAN.forced[j] >= 0:
            assert np.all(out[:, j] == PLAN.forced[j])
        else:
            assert np.all((out[:, j] >= PLAN.lo[j]) & (out[:, j] < PLAN.hi[j])), j


def test_greedy_cache_equals_recompute(model_params):
    lm, params = model_params
    pr, emb = _prompt()
    a = sampling.sample(lm, params, pr, PLAN, sampling.SamplingOptions(temperature=0), text_emb=emb)
    b = sampling.sample(lm, params, pr, PLAN, sampling.SamplingOptions(temperature=0, use_cache=False), text_emb=emb)
    np.testing.assert_array_equal(a, b)
    _check_plan(a)


@pytest.mark.slow
def test_greedy_cache_equals_recompute_with_guidance(model_params):
    lm, params = model_params
    pr, emb = _prompt()
    o = sampling.SamplingOptions(temperature=0, guidance=3.0, drop_inputs=True)
    a = sampling.sample(lm, params, pr, PLAN, o, text_emb=emb)
    b = sampling.sample(
        lm, params, pr, PLAN, sampling.SamplingOptions(**{**o.__dict__, "use_cache": False}), text_emb=emb
    )
    np.testing.assert_array_equal(a, b)


def test_greedy_matches_stepwise_forward_argmax(model_params):
    """Greedy tokens are the argmax of the full forward pass over the prompt + tokens so far."""
    lm, params = model_params
    pr, emb = _prompt(b=2)
    out = sampling.sample(lm, params, pr, PLAN, sampling.SamplingOptions(temperature=0), text_emb=emb)
    p = pr.tokens.shape[1]
    seq = np.concatenate([pr.tokens, out], axis=1)
    valid = np.concatenate([pr.valid, np.ones(out.shape, bool)], axis=1)
    tidx = np.concatenate([pr.text_index, np.full(out.shape, -1)], axis=1)
    logits = np.asarray(
        model.forward(
            lm, params, jnp.asarray(seq), jnp.asarray(valid), jnp.full((2,), p), jnp.asarray(emb), jnp.asarray(tidx)
        )
    )
    for j in range(PLAN.length):
        if PLAN.forced[j] < 0:
            row = logits[:, p + j - 1, PLAN.lo[j] : PLAN.hi[j]]
            np.testing.assert_array_equal(out[:, j], PLAN.lo[j] + row.argmax(-1))


def test_seeded_reproducible(model_params):
    lm, params = model_params
    pr, emb = _prompt()
    o = sampling.SamplingOptions(temperature=1.0, top_k=20, top_p=0.95)
    a = sampling.sample(lm, params, pr, PLAN, o, text_emb=emb, seeds=[5, 6, 7])
    b = sampling.sample(lm, params, pr, PLAN, o, text_emb=emb, seeds=[5, 6, 7])
    np.testing.assert_array_equal(a, b)
    _check_plan(a)
    c = sampling.sample(lm, params, pr, PLAN, o, text_emb=emb, seeds=[8, 9, 10])
    assert not np.array_equal(a, c)
    # the cache does not change what a seed draws
    d = sampling.sample(
        lm,
        params,
        pr,
        PLAN,
        sampling.SamplingOptions(**{**o.__dict__, "use_cache": False}),
        text_emb=emb,
        seeds=[5, 6, 7],
    )
    np.testing.assert_array_equal(a, d)


def test_top_k_one_is_greedy(model_params):
    lm, params = model_params
    pr, emb = _prompt()
    g = sampling.sample(lm, params, pr, PLAN, sampling.SamplingOptions(temperature=0), text_emb=emb)
    k1 = sampling.sample(
        lm, params, pr, PLAN, sampling.SamplingOptions(temperature=1.0, top_k=1), text_emb=emb, seeds=[1, 2, 3]
    )
    np.testing.assert_array_equal(g, k1)
    tiny_p = sampling.sample(lm, params, pr, PLAN, sampling.SamplingOptions(temperature=1.0, top_p=1e-6), text_emb=emb)
    np.testing.assert_array_equal(g, tiny_p)


def test_guidance_zero_is_the_unconditional_model(model_params):
    """guidance 0 samples from the unconditional rows alone: the prompt with its text slot hidden."""
    lm, params = model_params
    pr, emb = _prompt()
    g0 = sampling.sample(lm, params, pr, PLAN, sampling.SamplingOptions(temperature=0, guidance=0.0), text_emb=emb)
    hidden = sampling.Prompt(pr.tokens, pr.valid & (pr.cond != COND_TEXT), pr.text_index, pr.cond)
    plain = sampling.sample(lm, params, hidden, PLAN, sampling.SamplingOptions(temperature=0), text_emb=emb)
    np.testing.assert_array_equal(g0, plain)
    cond = sampling.sample(lm, params, pr, PLAN, sampling.SamplingOptions(temperature=0), text_emb=emb)
    assert not np.array_equal(cond, plain)  # the text matters to this model, so the test means something


def test_filter_logits():
    logits = jnp.log(jnp.array([[0.05, 0.1, 0.4, 0.3, 0.15]], jnp.float32))
    neg = float(jnp.finfo(jnp.float32).min)

    def kept(x):
        return np.nonzero(np.asarray(x)[0] > neg / 2)[0].tolist()

    assert kept(sampling.filter_logits(logits, 0, 5, 1.0, 0, 1.0)) == [0, 1, 2, 3, 4]
    assert kept(sampling.filter_logits(logits, 0, 5, 1.0, 2, 1.0)) == [2, 3]
    assert kept(sampling.filter_logits(logits, 0, 5, 1.0, 0, 0.5)) == [2, 3]  # 0.4 < 0.5, 0.4 + 0.3 covers it
    assert kept(sampling.filter_logits(logits, 0, 5, 1.0, 0, 0.4)) == [2]
    assert kept(sampling.filter_logits(logits, 1, 4, 1.0, 0, 1.0)) == [1, 2, 3]  # range
    assert kept(sampling.filter_logits(logits, 0, 2, 1.0, 0, 0.5)) == [1]  # top-p within the range
    w = sampling.filter_logits(logits, 0, 5, 0.5, 0, 1.0)
    np.testing.assert_allclose(np.asarray(w), np.asarray(logits) * 2, rtol=1e-6)


def test_bad_options(model_params):
    lm, params = model_params
    pr, emb = _prompt()
    for o in (
        sampling.SamplingOptions(temperature=-1),
        sampling.SamplingOptions(top_p=0.0),
        sampling.SamplingOptions(top_k=-2),
        sampling.SamplingOptions(guidance=2.0, drop_text=False, drop_inputs=False),
    ):
        with pytest.raises(sampling.SamplingError):
            sampling.sample(lm, params, pr, PLAN, o, text_emb=emb)
    with pytest.raises(sampling.SamplingError):
        sampling.sample(lm, params, pr, sampling.OutputPlan.build([("range", 0, CFG.vocab_size + 1, 2)]), text_emb=emb)
    with pytest.raises(sampling.SamplingError):
        sampling.sample(lm, params, pr, PLAN, text_emb=emb, seeds=[1])
