"""Prefix-LM model: param counts of the paper presets, prefix-LM masking, KV-cache decoding = full forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from videopoet.schemas.errors import ConfigError
from videopoet.trainer import model
from videopoet.trainer.config import NOMINAL_PARAMS, load_model_config, load_train_config


@pytest.mark.parametrize("name", ["300m", "1b", "8b"])
def test_paper_sizes_by_eval_shape(name):
    cfg = load_model_config(name)
    abstract = model.abstract_params(cfg)
    total = model.count_params(abstract)
    embed = 2 * cfg.vocab_size * cfg.d_model  # embedding + untied output head
    blocks = total - embed - (cfg.text_dim + 1) * cfg.d_model - cfg.d_model  # minus text projection, final norm
    assert blocks == cfg.layers * cfg.block_params()
    assert abs(blocks / NOMINAL_PARAMS[name] - 1) < 0.05, blocks
    assert cfg.vocab_size == 256 + 2**18 + 4 * 1024
    specs = model.logical_axes(cfg)
    assert tuple(specs["embed"]["embedding"]) == ("vocab", "embed")
    assert tuple(specs["block_0"]["attn"]["q"]["kernel"]) == ("embed", "heads", "kv")
    assert tuple(specs["block_0"]["mlp"]["down"]["kernel"]) == ("mlp", "embed")


def test_train_presets_use_their_model_preset():
    from videopoet.trainer.config import MODEL_PRESETS, PRESETS

    for name in PRESETS:
        assert load_train_config(name).model == MODEL_PRESETS[name](), name


def test_configs_validate_and_override():
    cfg = load_train_config("tiny", ["model.layers=3", "data.mixture.t2v=2.5"])
    assert cfg.model.layers == 3 and cfg.data.mixture["t2v"] == 2.5
    for bad in (
        ["model.heads=3", "model.kv_heads=2"],
        ["data.mixture.nope=1"],
        ["model.attention=flash"],
        ["mesh.data=-1", "mesh.fsdp=-1"],
        ["model.head_dim=15"],
    ):
        with pytest.raises(ConfigError):
            load_train_config("tiny", bad)


def _setup(dtype="float32", attention="einsum", **kw):
    cfg = load_model_config("tiny", [f"dtype={dtype}", f"attention={attention}"] + [f"{k}={v}" for k, v in kw.items()])
    lm = model.build(cfg)
    params = model.init_params(cfg, jax.random.PRNGKey(0))
    b, s = 2, 14
    tokens = jax.random.randint(jax.random.PRNGKey(1), (b, s), 0, cfg.vocab_size)
    valid = jnp.ones((b, s), bool).at[0, 4].set(False)
    prefix = jnp.array([6, 8])
    text = jax.random.normal(jax.random.PRNGKey(2), (b, 3, cfg.text_dim))
    text_index = jnp.full((b, s), -1).at[:, 2:5].set(jnp.arange(3))
    return cfg, lm, params, tokens, valid, prefix, text, text_index


def test_prefix_is_bidirectional_output_is_causal():
    cfg, lm, params, tokens, valid, prefix, text, ti = _setup()
    base = model.forward(lm, params, tokens, valid, prefix, text, ti)
    # change an output token (position 10): logits before it are unchanged, after it changed
    t2 = tokens.at[:, 10].set((tokens[:, 10] + 1) % cfg.vocab_size)
    out = model.forward(lm, params, t2, valid, prefix, text, ti)
    np.testing.assert_array_equal(np.asarray(out[:, :10]), np.asarray(base[:, :10]))
    assert np.abs(np.asarray(out[:, 10:] - base[:, 10:])).max() > 1e-4
    # change the last prefix token of example 1 (position 7): every prefix position sees it
    t3 = tokens.at[1, 7].set((tokens[1, 7] + 1) % cfg.vocab_size)
    out = model.forward(lm, params, t3, valid, prefix, text, ti)
    assert np.abs(np.asarray(out[1, 0] - base[1, 0])).max() > 1e-4
    # a masked key (position 4 of example 0) has no influence at all; text embeddings do
    t4 = tokens.at[0, 4].set((tokens[0, 4] + 1) % cfg.vocab_size)
    np.testing.assert_array_equal(
        np.asarray(model.forward(lm, params, t4, valid, prefix, text, ti)[0]), np.asarray(base[0])
    )
    out = model.forward(lm, params, tokens, valid, prefix, -text, ti)
    assert np.abs(np.asarray(out[:, 2] - base[:, 2])).max() > 1e-2  # a text position itself
    assert np.abs(np.asarray(out[:, 0] - base[:, 0])).max() > 0  # and, through attention, the rest of the prefix


def test_fast_attention_matches_einsum():
    ref = _setup(attention="einsum")
    fast = _setup(attention="auto")
    a = model.forward(ref[1], ref[2], *ref[3:5], ref[5], ref[6], ref[7])
    b = model.forward(fast[1], fast[2], *fast[3:5], fast[5], fast[6], fast[7])
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)


@pytest.mark.parametrize("dtype,atol", [("float32", 2e-5), ("bfloat16", 0.1)])
def test_kv_cache_decoding_equals_full_forward(dtype, atol):
    cfg, lm, params, tokens, valid, prefix, text, ti = _setup(dtype=dtype, attention="auto", kv_heads=1)
    full = np.asarray(model.forward(lm, params, tokens, valid, prefix, text, ti))
    b, s = tokens.shape
    cache = model.init_cache(cfg, b, 16)
    n = jnp.array([6, 9])  # prompt lengths differ per example (example 1 includes one output token)
    p = 9
    pvalid = valid[:, :p] & (jnp.arange(p)[None] < n[:, None])
    prefill = jax.jit(lambda *a: model.prefill(lm, *a))
    logits, cache = prefill(params, tokens[:, :p], pvalid, prefix, cache, text, ti[:, :p])
    for i in range(2):
        np.testing.assert_allclose(np.asarray(logits[i, : int(n[i])]), full[i, : int(n[i])], atol=atol)
    step = jax.jit(lambda *a: model.decode_step(lm, *a))
    pos = n
    while int(pos.max()) < s:
        tok = tokens[jnp.arange(b), jnp.minimum(pos, s - 1)]
        out, cache = step(params, tok, pos, cache)
        for i in range(b):
            if int(pos[i]) < s:
                np.testing.assert_allclose(np.asarray(out[i]), full[i, int(pos[i])], atol=atol)
        pos = pos + 1


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_gives_same_gradients(remat):
    cfg, lm, params, tokens, valid, prefix, text, ti = _setup()
    rcfg = load_model_config("tiny", ["dtype=float32", "attention=einsum", f"remat={remat}"])

    def loss(m):
        return lambda p: model.forward(m, p, tokens, valid, prefix, text, ti).mean()

    g1 = jax.grad(loss(lm))(params)
    g2 = jax.grad(loss(model.build(rcfg)))(params)
    for x, y in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)


def test_prefix_lm_flops_count_the_mask_pairs():
    from videopoet.trainer import metrics

    for s, p in [(4, 0), (4, 4), (4, 2), (9, 5), (1, 1)]:
        mask = np.asarray(model.prefix_lm_mask(jnp.ones((1, s), bool), jnp.array([p])))
        assert metrics.attention_pairs(s, p) == int(mask.sum())
    assert metrics.attention_pairs(4, 2) == 11
    cfg = load_model_config("tiny")
    f1 = metrics.step_flops(cfg, 10, [3, 3])
    f2 = metrics.step_flops(cfg, 10, [7, 7])
    assert f2 > f1  # a longer bidirectional prefix attends to more keys
    matmul = cfg.layers * (cfg.block_params() - 2 * cfg.d_model) + cfg.d_model * cfg.vocab_size
    assert f1 == 3 * (2 * matmul * 20 + cfg.layers * 4 * cfg.heads * cfg.head_dim * 2 * metrics.attention_pairs(10, 3))
