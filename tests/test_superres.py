"""The super-resolution transformer (videopoet.trainer.superres): windows, factorization, training,
MaskGIT decoding, run directories. Tiny preset, CPU."""

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from videopoet.rundir.loop import Hook
from videopoet.schemas.config import ConfigError
from videopoet.trainer.superres import config, data, model, sample, train

# the tiny preset on 2 latent frames instead of the pipeline's 5: these library tests train and
# decode many times, and the grid's length is their cost
SHORT = ["model.grid=[2,8,8]", "model.windows=[[1,8,2],[1,2,8],[2,4,4]]"]


@pytest.fixture(scope="module")
def tiny():
    return config.load_sr_config("tiny", SHORT)


@pytest.fixture(scope="module")
def pairs(tiny):
    return data.synthetic_pairs(tiny.model, 16, tiny.text_len, seed=3)


@pytest.fixture(scope="module")
def params(tiny):
    return model.init_params(tiny.model, jax.random.PRNGKey(0))


# ------------------------------------------------------------------------------------ config
def test_presets_and_paper_windows():
    s1 = config.load_sr_config("paper_stage1").model
    s2 = config.load_sr_config("paper_stage2").model
    assert s1.grid == (5, 56, 32) and s1.low_grid == (5, 28, 16)
    assert s1.windows == ((1, 56, 4), (1, 8, 32), (5, 8, 8))
    assert s2.grid == (5, 112, 64) and s2.low_grid == (5, 56, 32)
    assert s2.windows == ((1, 112, 2), (1, 4, 64), (5, 8, 8))
    assert s1.factor_size == s2.factor_size == 512 and s1.codebook_size == 2**18
    sp1, sp2 = config.load_sr_config("paper_stage1").sample, config.load_sr_config("paper_stage2").sample
    assert (sp1.steps, sp1.guidance_text, sp1.guidance_lowres) == (24, 4.0, 1.0)
    assert (sp2.steps, sp2.guidance_text, sp2.guidance_lowres) == (24, 8.0, 2.0)
    for name, nominal in config.NOMINAL_PARAMS.items():
        n = model.count_params(model.abstract_params(config.MODEL_PRESETS[name]()))
        assert 0.9 * nominal <= n <= 1.1 * nominal, (name, n)


def test_config_rejects_windows_that_do_not_tile():
    with pytest.raises(ConfigError, match="window"):
        config.load_sr_config("tiny", ["model.windows=[[1,3,8]]"])
    with pytest.raises(ConfigError, match="scale"):  # the low-resolution window would be 0.5 wide
        config.load_sr_config("tiny", ["model.windows=[[1,8,1]]"])
    with pytest.raises(ConfigError, match="multiple of factors"):
        config.load_sr_config("tiny", ["model.lfq_bits=7"])


# ------------------------------------------------------------------------------------ shapes
def test_shapes(tiny, params, pairs):
    mc = tiny.model
    b = pairs.batch(0, 0, 3)
    logits = model.SuperResTransformer(mc).apply(
        {"params": params},
        jnp.full((3, *mc.grid), model.MASK),
        b["low"],
        jnp.ones(3, bool),
        b["text_emb"],
        b["text_mask"],
    )
    assert logits.shape == (3, *mc.grid, 2, 8) and logits.dtype == jnp.float32
    codes = jnp.arange(mc.codebook_size)
    assert np.array_equal(model.combine(model.factorize(codes, mc), mc), codes)
    assert int(model.factorize(codes, mc).max()) == mc.factor_size - 1
    x = jnp.arange(2 * mc.tokens * 3).reshape(2, mc.tokens, 3)
    for w in mc.windows:
        parts = model.partition(x, mc.grid, w)
        assert parts.shape == (2 * mc.tokens // int(np.prod(w)), int(np.prod(w)), 3)
        assert np.array_equal(model.merge(parts, mc.grid, w), x)


def test_conditions_change_the_output(tiny, params, pairs):
    """Dropping the low-resolution input or the text changes the logits (both are read)."""
    mc = tiny.model
    b = pairs.batch(0, 1, 2)
    apply = model.SuperResTransformer(mc).apply
    tokens = jnp.full((2, *mc.grid), model.MASK)
    full = apply({"params": params}, tokens, b["low"], jnp.ones(2, bool), b["text_emb"], b["text_mask"])
    no_low = apply({"params": params}, tokens, b["low"], jnp.zeros(2, bool), b["text_emb"], b["text_mask"])
    no_text = apply(
        {"params": params}, tokens, b["low"], jnp.ones(2, bool), b["text_emb"], jnp.zeros_like(b["text_mask"])
    )
    assert float(jnp.abs(full - no_low).max()) > 1e-4
    assert float(jnp.abs(full - no_text).max()) > 1e-4
    assert np.isfinite(np.asarray(no_text)).all()


def test_lowres_skip_is_aligned_and_off_keeps_the_parameter_tree(tiny, params, pairs):
    """``model.lowres_skip``: one more kernel (off: the same tree as before); each high-resolution
    position's skip input is the low-resolution token covering it, so changing one low-resolution
    code changes the skip at exactly the scale_h x scale_w positions under it."""
    low_grid, scale = (2, 3, 2), (1, 2, 2)
    low = jnp.arange(12).reshape(1, 12)
    up = np.asarray(model.upsample_nearest(low, low_grid, scale)).reshape(2, 6, 4)
    tt, yy, xx = np.meshgrid(np.arange(2), np.arange(6), np.arange(4), indexing="ij")
    assert np.array_equal(up, np.asarray(low).reshape(low_grid)[tt, yy // 2, xx // 2])

    on = config.load_sr_config(tiny, ["model.lowres_skip=true"]).model
    p_on = model.init_params(on, jax.random.PRNGKey(0))
    flat_off = {k: v.shape for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    flat_on = {k: v.shape for k, v in jax.tree_util.tree_flatten_with_path(p_on)[0]}
    extra = set(flat_on) - set(flat_off)
    assert not set(flat_off) - set(flat_on) and len(extra) == 1
    assert flat_on[next(iter(extra))] == (on.d_model, on.d_model)

    b = pairs.batch(0, 0, 1)
    tokens = jnp.full((1, *on.grid), model.MASK)

    def skip_out(lowres):
        _, state = model.SuperResTransformer(on).apply(
            {"params": p_on},
            tokens,
            lowres,
            jnp.ones(1, bool),
            b["text_emb"],
            b["text_mask"],
            capture_intermediates=lambda mdl, _: mdl.name == "lowres_skip",
        )
        return np.asarray(state["intermediates"]["lowres_skip"]["__call__"][0]).reshape(*on.grid, on.d_model)

    base = np.asarray(b["low"])
    changed = base.copy()
    changed[0, 1, 2, 3] = (base[0, 1, 2, 3] + 1) % on.codebook_size
    diff = np.abs(skip_out(changed) - skip_out(base)).max(-1) > 0
    want = np.zeros(on.grid, bool)
    want[1, 4:6, 6:8] = True
    assert np.array_equal(diff, want)


def test_upsampled_input_is_used_dropped_with_the_lowres_condition_and_required(tmp_path, tiny):
    """``model.upsampled_input``: a model that sees the guess learns to copy it where codes are not
    predictable otherwise (random high-resolution codes, a guess with 20% of them wrong), one without
    it cannot; the guess is dropped with the low-resolution condition; pairs or a decode without it
    are refused."""
    on = config.load_sr_config(tiny, ["model.upsampled_input=true"])

    def names(tree):
        return {jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}

    flat_off = names(model.init_params(tiny.model, jax.random.PRNGKey(0)))
    flat_on = names(model.init_params(on.model, jax.random.PRNGKey(0)))
    assert flat_off < flat_on and all("upsampled_embed" in k for k in flat_on - flat_off)

    rng = np.random.default_rng(4)
    n, mc = 32, on.model
    high = rng.integers(0, mc.codebook_size, (n, *mc.grid)).astype(np.int32)
    guess = np.where(rng.random(high.shape) < 0.2, rng.integers(0, mc.codebook_size, high.shape), high)
    base = data.synthetic_pairs(mc, n, on.text_len, seed=5)
    with_guess = data.PairSet(high, base.low, base.text_emb, base.text_mask, guess.astype(np.int32))
    without = data.PairSet(high, base.low, base.text_emb, base.text_mask)
    with pytest.raises(data.PairError, match="no upsampled guess"):
        without.check(mc, on.text_len)

    def accuracy(cfg, run, pair_set):
        train.train(cfg, pair_set, run)
        _, trained, _ = train.load_run(run)
        b = {k: jnp.asarray(v) for k, v in pair_set.batch(99, 0, 16).items()}
        quiet = config.load_sr_config(cfg, ["drop_text=0.0", "drop_lowres=0.0", "lowres_noise=0.0"])
        return float(
            np.mean([train.masked_loss(quiet, trained, b, jax.random.PRNGKey(i))[1]["accuracy"] for i in range(4)])
        )

    common = ["steps=80", "warmup_steps=5", "learning_rate=0.01", "checkpoint_every=80", "batch_size=8"]
    got_on = accuracy(config.load_sr_config(on, common), str(tmp_path / "on"), with_guess)
    got_off = accuracy(config.load_sr_config(tiny, common), str(tmp_path / "off"), without)
    _, trained, _ = train.load_run(str(tmp_path / "on"))
    assert got_on > 0.6 and got_off < 0.1, (got_on, got_off)

    b = with_guess.batch(0, 0, 2)
    tokens = jnp.full((2, *mc.grid), model.MASK)
    apply = model.SuperResTransformer(mc).apply
    other = (b["upsampled"] + 1) % mc.codebook_size
    keep, drop = jnp.ones(2, bool), jnp.zeros(2, bool)

    def out(up, k):
        return np.asarray(apply({"params": trained}, tokens, b["low"], k, b["text_emb"], b["text_mask"], up))

    assert not np.allclose(out(b["upsampled"], keep), out(other, keep))
    assert np.array_equal(out(b["upsampled"], drop), out(other, drop))
    with pytest.raises(ValueError, match="upsampled"):
        sample.decode(mc, trained, b["low"], b["text_emb"], b["text_mask"], 0, on.sample)
    greedy = config.SampleConfig(steps=4, temperature=0.0)
    codes = sample.decode(mc, trained, b["low"], b["text_emb"], b["text_mask"], 0, greedy, upsampled=b["upsampled"])
    assert codes.shape == (2, *mc.grid) and np.mean(codes == b["high"]) > 0.5  # chance: 1 / 64


# ------------------------------------------------------------------------------------ windows
def _naive_masked_attention(q, k, v, allowed):
    """Full softmax attention in float64 where query i sees key j iff allowed[i, j]."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(allowed[None, None], logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", p, v)


@pytest.mark.parametrize("implementation", ["einsum", "xla"])
def test_windowed_attention_equals_masked_full_attention(tiny, implementation):
    mc = tiny.model
    rng = np.random.default_rng(0)
    for window in mc.windows:
        low_window = mc.low_window(window)
        for k_grid, k_window in ((mc.grid, window), (mc.low_grid, low_window)):
            nk = int(np.prod(k_grid))
            q = rng.normal(size=(2, mc.tokens, 2, 8)).astype(np.float32)
            k = rng.normal(size=(2, nk, 2, 8)).astype(np.float32)
            v = rng.normal(size=(2, nk, 2, 8)).astype(np.float32)
            got = model.windowed_attention(q, k, v, mc.grid, window, k_grid, k_window, implementation)
            # the reference: window membership from the coordinates themselves
            qc = np.stack(np.meshgrid(*map(np.arange, mc.grid), indexing="ij"), -1).reshape(-1, 3)
            kc = np.stack(np.meshgrid(*map(np.arange, k_grid), indexing="ij"), -1).reshape(-1, 3)
            allowed = np.all(qc[:, None] // np.array(window) == kc[None] // np.array(k_window), axis=-1)
            assert allowed.sum(1).min() == int(np.prod(k_window))
            want = _naive_masked_attention(q, k, v, allowed)
            np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)
            ids_q, ids_k = model.window_ids(mc.grid, window), model.window_ids(k_grid, k_window)
            assert np.array_equal(np.asarray(ids_q)[:, None] == np.asarray(ids_k)[None], allowed)


# ------------------------------------------------------------------------------------ factorization
def test_factorized_loss_equals_cross_entropy_over_the_product_vocabulary(tiny):
    mc = tiny.model
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(5, mc.factors, mc.factor_size)) * 3, jnp.float32)
    codes = jnp.asarray(rng.integers(0, mc.codebook_size, 5), jnp.int32)
    # the unfactorized model: one logit per code of the full codebook, the sum of its factors' logits
    all_codes = jnp.arange(mc.codebook_size)
    f = model.factorize(all_codes, mc)  # [V, factors]
    joint = sum(logits[:, j, f[:, j]] for j in range(mc.factors))  # [5, V]
    want = -jax.nn.log_softmax(joint, -1)[jnp.arange(5), codes]
    got = model.factorized_cross_entropy(logits, codes, mc)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(-model.code_log_probs(logits, codes, mc)), np.asarray(want), rtol=1e-5)
    lp_all = model.code_log_probs(logits[:, None], all_codes[None, :], mc)  # [5, V]: a distribution
    np.testing.assert_allclose(np.asarray(jnp.exp(lp_all).sum(-1)), np.ones(5), rtol=1e-5)


# ------------------------------------------------------------------------------------ training
def _eval_loss(cfg, params, pairs):
    b = {k: jnp.asarray(v) for k, v in pairs.batch(99, 0, 16).items()}
    cfg = config.load_sr_config(cfg, ["drop_text=0.0", "drop_lowres=0.0", "lowres_noise=0.0"])
    loss = jax.jit(lambda p, r: train.masked_loss(cfg, p, b, r)[0])
    losses = [float(loss(params, jax.random.PRNGKey(i))) for i in range(4)]
    return float(np.mean(losses))


def test_training_reduces_the_loss(tmp_path, tiny, pairs):
    cfg = config.load_sr_config(tiny, ["steps=60", "warmup_steps=5", "learning_rate=0.01", "checkpoint_every=60"])
    before = _eval_loss(cfg, train.init_state(cfg)["params"], pairs)
    result = train.train(cfg, pairs, str(tmp_path / "run"))
    assert result["status"] == "completed" and result["step"] == 60
    _, trained, step = train.load_run(str(tmp_path / "run"))
    after = _eval_loss(cfg, trained, pairs)
    assert step == 60
    assert before > 0.9 * np.log(tiny.model.codebook_size)  # starts near uniform over the codes
    assert after < 0.5 * before, (before, after)
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == list(range(5, 61, 5))
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["mask_fraction"] > 0 for r in rows)
    assert os.path.exists(tmp_path / "run" / "loss_curve.png")


def test_checkpoint_round_trip_and_exact_resume(tmp_path, tiny, pairs):
    cfg = config.load_sr_config(tiny, ["steps=6", "checkpoint_every=3", "log_every=3"])
    straight = train.train(cfg, pairs, str(tmp_path / "a"))
    assert straight["step"] == 6 and straight["resumed_from"] is None

    # the same run cut after 3 steps by a hook, then resumed to 6
    cut = train.train(
        cfg, pairs, str(tmp_path / "b"), hooks=[Hook(lambda i: i.run.request_stop("test") if i.step == 3 else None)]
    )
    assert cut["status"] == "test" and cut["step"] == 3
    _, p3, s3 = train.load_run(str(tmp_path / "b"))
    assert s3 == 3
    resumed = train.train(cfg, pairs, str(tmp_path / "b"))
    assert resumed["resumed_from"] == 3 and resumed["step"] == 6

    cfg_a, pa, sa = train.load_run(str(tmp_path / "a"))
    _, pb, sb = train.load_run(str(tmp_path / "b"))
    assert cfg_a == cfg and sa == sb == 6
    leaves_a, leaves_b = jax.tree_util.tree_leaves(pa), jax.tree_util.tree_leaves(pb)
    assert all(np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(p3), leaves_a, strict=True))
    _, p_at3, _ = train.load_run(str(tmp_path / "a"), step=3)
    assert all(
        np.array_equal(x, y)
        for x, y in zip(jax.tree_util.tree_leaves(p_at3), jax.tree_util.tree_leaves(p3), strict=True)
    )

    with pytest.raises(train.SRRunError, match="differs in: learning_rate"):
        train.train(config.load_sr_config(cfg, ["learning_rate=0.5"]), pairs, str(tmp_path / "a"))
    with pytest.raises(train.SRRunError, match="other pairs"):
        train.train(cfg, pairs.subset(range(8)), str(tmp_path / "a"))
    with pytest.raises(train.SRRunError, match="not a super-resolution run"):
        train.load_run(str(tmp_path / "nothing"))


def _guess_pairs(mc, text_len, wrong=0.3, seed=6):
    """Pairs whose upsampled guess is the high-resolution truth with a fraction ``wrong`` of codes changed."""
    base = data.synthetic_pairs(mc, 8, text_len, seed=seed)
    rng = np.random.default_rng(seed)
    guess = np.where(rng.random(base.high.shape) < wrong, (base.high + 1) % mc.codebook_size, base.high)
    return data.PairSet(base.high, base.low, base.text_emb, base.text_mask, guess.astype(np.int32))


def test_correction_weight_counts_the_positions_where_the_guess_is_wrong(tiny):
    """The objective weighs the masked positions whose guess is wrong 1 + W times; ``loss`` stays the
    plain mean, and the positions where the guess is wrong get their own loss and accuracy."""
    on = config.load_sr_config(tiny, ["model.upsampled_input=true"])
    pair_set = _guess_pairs(on.model, on.text_len)
    b = {k: jnp.asarray(v) for k, v in pair_set.batch(0, 0, 4).items()}
    params = model.init_params(on.model, jax.random.PRNGKey(1))
    rng = jax.random.PRNGKey(2)
    plain, m0 = jax.jit(functools.partial(train.masked_loss, on))(params, b, rng)
    weighted_cfg = config.load_sr_config(on, ["correction_weight=3"])
    weighted, m3 = jax.jit(functools.partial(train.masked_loss, weighted_cfg))(params, b, rng)
    masked = np.asarray(jax.jit(functools.partial(train.corrupt, on))(b, rng)["masked"])
    wrong = masked & (np.asarray(b["upsampled"]) != np.asarray(b["high"]))
    n, n_wrong = masked.sum(), wrong.sum()
    assert 0 < n_wrong < n
    np.testing.assert_allclose(float(m3["loss"]), float(plain), rtol=1e-6)
    np.testing.assert_allclose(float(m3["loss_guess_wrong"]), float(m0["loss_guess_wrong"]), rtol=1e-6)
    want = (float(plain) * n + 3 * float(m0["loss_guess_wrong"]) * n_wrong) / (n + 3 * n_wrong)
    np.testing.assert_allclose(float(weighted), want, rtol=1e-5)
    assert abs(float(weighted) - float(plain)) > 1e-4
    with pytest.raises((ConfigError, ValueError), match="upsampled_input"):
        config.load_sr_config(tiny, ["correction_weight=3"])


def test_init_from_starts_from_the_source_with_a_fresh_optimizer(tmp_path, tiny):
    """``init_from``: the first step starts from the source run's parameters (not the seeded init), with
    this run's own loss and schedule; the source is recorded; another model, or a resume that names
    another source, is refused."""
    on = config.load_sr_config(tiny, ["model.upsampled_input=true", "checkpoint_every=3", "log_every=1"])
    pair_set = _guess_pairs(on.model, on.text_len)
    source = str(tmp_path / "source")
    train.train(config.load_sr_config(on, ["steps=3", "learning_rate=0.01", "warmup_steps=1"]), pair_set, source)
    _, src_params, _ = train.load_run(source)

    # a learning rate so small that one step leaves the parameters where they started
    tuned = config.load_sr_config(on, ["steps=1", "learning_rate=1e-9", "warmup_steps=0", "correction_weight=3"])
    run = str(tmp_path / "tuned")
    res = train.train(tuned, pair_set, run, init_from=source)
    assert res["step"] == 1 and res["resumed_from"] is None
    _, got, _ = train.load_run(run)
    fresh = train.init_state(tuned)["params"]
    leaves = list(zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(src_params), strict=True))
    assert max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in leaves) < 1e-6
    assert (
        max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(fresh), strict=True)
        )
        > 1e-3
    )
    info = json.load(open(os.path.join(run, train.INFO_FILE)))
    assert info["init_from"] == {"run_dir": os.path.abspath(source), "step": 3, "config": "tiny"}
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    assert 0.0 <= rows[-1]["accuracy_guess_wrong"] <= 1.0 and rows[-1]["loss_guess_wrong"] > 0

    # resumed from its own checkpoint, naming the same source; refused without it or with another one
    longer = config.load_sr_config(tuned, ["steps=2"])
    assert train.train(longer, pair_set, run, init_from=source)["resumed_from"] == 1
    with pytest.raises(train.SRRunError, match="was started from"):
        train.train(config.load_sr_config(tuned, ["steps=3"]), pair_set, run)
    with pytest.raises(train.SRRunError, match="model.lowres_skip"):
        other = config.load_sr_config(tuned, ["model.lowres_skip=true"])
        train.train(other, pair_set, str(tmp_path / "x"), init_from=source)
    with pytest.raises(train.SRRunError, match="not a super-resolution run"):
        train.train(tuned, pair_set, str(tmp_path / "y"), init_from=str(tmp_path / "nothing"))
    # a source whose pairs came from other tokenizers reads other codes: refused, naming the tokenizer
    info_path = os.path.join(source, train.INFO_FILE)
    src_info = json.load(open(info_path))
    src_info["data"]["dataset"] = {"fingerprint": "f" * 64, "tokenizers": {"video": "a" * 64, "text": "c" * 64}}
    json.dump(src_info, open(info_path, "w"))
    assert train.init_from_source(source, tuned, tokenizers={"video": "a" * 64, "text": "c" * 64})["step"] == 3
    assert train.init_from_source(source, tuned, tokenizers={"video": "a" * 64})["step"] == 3  # text not recorded
    with pytest.raises(train.SRRunError, match=f"tokenizers.video {'a' * 12} != {'b' * 12}"):
        train.init_from_source(source, tuned, tokenizers={"video": "b" * 64, "text": "c" * 64})


def test_pairs_are_checked(tiny, pairs):
    with pytest.raises(data.PairError, match="low has shape"):
        data.PairSet(pairs.high, pairs.high, pairs.text_emb, pairs.text_mask).check(tiny.model, tiny.text_len)
    with pytest.raises(data.PairError, match="codes must lie"):
        data.PairSet(pairs.high + 64, pairs.low, pairs.text_emb, pairs.text_mask).check(tiny.model, tiny.text_len)


# ------------------------------------------------------------------------------------ MaskGIT
def test_maskgit_decoding(tiny, params, pairs):
    mc = tiny.model
    b = pairs.batch(0, 2, 3)
    opts = config.SampleConfig(steps=4)
    args = (mc, params, b["low"], b["text_emb"], b["text_mask"])
    first = sample.decode(*args, 7, opts)
    assert first.shape == (3, *mc.grid) and first.dtype == np.int32
    assert first.min() >= 0 and first.max() < mc.codebook_size  # every position filled with a code
    assert np.array_equal(sample.decode(*args, 7, opts), first)  # deterministic under a seed
    assert not np.array_equal(sample.decode(*args, 8, opts), first)

    # guidance 0 through the three guided passes equals the conditional model alone
    guided0 = sample.decode(*args, 7, opts, guided=True)
    assert np.array_equal(guided0, first)
    strong = config.SampleConfig(steps=4, guidance_text=3.0, guidance_lowres=2.0)
    assert not np.array_equal(sample.decode(*args, 7, strong), first)

    # one greedy step: every code is the conditional model's most likely one
    greedy = sample.decode(*args, 0, config.SampleConfig(steps=1, temperature=0.0, choice_temperature=0.0))
    logits = model.SuperResTransformer(mc).apply(
        {"params": params},
        jnp.full((3, *mc.grid), model.MASK),
        b["low"],
        jnp.ones(3, bool),
        b["text_emb"],
        b["text_mask"],
    )
    assert np.array_equal(greedy, np.asarray(model.combine(jnp.argmax(logits, -1), mc)))

    # codes already known stay; the rest are filled
    init = np.full((3, *mc.grid), model.MASK, np.int32)
    init[:, 0] = b["high"][:, 0]
    filled = sample.decode(*args, 7, opts, init_tokens=init)
    assert np.array_equal(filled[:, 0], b["high"][:, 0]) and filled.min() >= 0


def test_the_schedule_runs_over_the_positions_masked_at_the_start(tiny, params, pairs):
    """With half the codes given, a 2-step decode equals a by-hand MaskGIT over the N masked positions:
    step 0 samples every masked code and keeps the N - floor(N cos(pi/4)) most confident, step 1
    (with its own samples) fills the rest; the given codes never change."""
    mc = tiny.model
    b = pairs.batch(0, 2, 2)
    init = np.asarray(b["high"], np.int32).copy()
    init[np.random.default_rng(0).random(init.shape) < 0.5] = model.MASK
    opts = config.SampleConfig(steps=2, temperature=1.0, choice_temperature=0.0)
    got = sample.decode(mc, params, b["low"], b["text_emb"], b["text_mask"], 5, opts, init_tokens=init)

    def sampled(tokens, step):
        logits = model.SuperResTransformer(mc).apply(
            {"params": params}, jnp.asarray(tokens), b["low"], jnp.ones(2, bool), b["text_emb"], b["text_mask"]
        )
        logits = logits.reshape(2, mc.tokens, mc.factors, mc.factor_size)
        key = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(5), step))[0]
        picked = jax.random.categorical(key, logits, axis=-1)
        lp = jax.nn.log_softmax(logits, -1)
        conf = jnp.sum(jnp.take_along_axis(lp, picked[..., None], -1)[..., 0], -1)
        return np.asarray(model.combine(picked, mc)), np.asarray(conf)

    want = init.reshape(2, -1).copy()
    codes, conf = sampled(init, 0)
    for row in range(2):
        unknown = np.flatnonzero(want[row] < 0)
        fill = unknown.size - int(np.floor(unknown.size * np.cos(np.pi / 4)))
        assert 1 < fill < unknown.size
        chosen = unknown[np.argsort(-conf[row, unknown], kind="stable")[:fill]]
        want[row, chosen] = codes[row, chosen]
    codes, _ = sampled(want.reshape(init.shape), 1)
    want = np.where(want < 0, codes, want)
    assert np.array_equal(got.reshape(2, -1), want)
    assert np.array_equal(got[init >= 0], init[init >= 0])


def test_refine_decodes_only_the_least_likely_positions_of_the_guess(tiny, pairs):
    """``sample.refine=F``: the guess's codes stay except at the floor(F N) positions whose guess code
    the model (all positions masked, seeing the guess) gives the lowest log-probability; those are
    decoded as MaskGIT decodes given codes. Refused without the guess, with given codes, out of [0, 1]."""
    on = config.load_sr_config(tiny, ["model.upsampled_input=true"])
    mc = on.model
    params = model.init_params(mc, jax.random.PRNGKey(1))
    b = pairs.batch(0, 0, 2)
    guess = np.asarray((b["high"] * 7 + 3) % mc.codebook_size, np.int32)  # a guess unlike the truth
    args = (mc, params, b["low"], b["text_emb"], b["text_mask"], 3)
    opts = config.SampleConfig(steps=4, temperature=0.0, refine=0.25)
    got = sample.decode(*args, opts, upsampled=guess).reshape(2, -1)

    logits = model.SuperResTransformer(mc).apply(
        {"params": params},
        jnp.full(guess.shape, model.MASK),
        b["low"],
        jnp.ones(2, bool),
        b["text_emb"],
        b["text_mask"],
        guess,
    )
    lp = np.asarray(model.code_log_probs(logits, jnp.asarray(guess), mc)).reshape(2, -1)
    k = int(np.floor(0.25 * mc.tokens))
    for row in range(2):
        redo = np.argsort(lp[row], kind="stable")[:k]
        kept = np.setdiff1d(np.arange(mc.tokens), redo)
        assert np.array_equal(got[row, kept], guess.reshape(2, -1)[row, kept])
        assert np.any(got[row, redo] != guess.reshape(2, -1)[row, redo])  # untrained: not its guess back
    init = guess.reshape(2, -1).copy()
    init[np.arange(2)[:, None], np.argsort(lp, axis=1, kind="stable")[:, :k]] = model.MASK
    by_hand = sample.decode(
        *args, dataclasses.replace(opts, refine=0.0), init_tokens=init.reshape(guess.shape), upsampled=guess
    )
    assert np.array_equal(got, by_hand.reshape(2, -1))

    with pytest.raises(ValueError, match="upsampled guess"):
        sample.decode(tiny.model, model.init_params(tiny.model, jax.random.PRNGKey(0)), *args[2:], opts)
    with pytest.raises(ValueError, match="no init_tokens"):
        sample.decode(*args, opts, init_tokens=guess, upsampled=guess)
    with pytest.raises(ValueError, match=r"sample.refine must lie in \[0, 1\]"):
        config.SampleConfig(refine=1.5).validate()


def test_cosine_schedule_masks_fewer_each_step():
    counts = [int(sample.masked_after(s, 24, 1280)) for s in range(24)]
    assert counts[-1] == 0 and counts[0] < 1280
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False))
    assert counts[11] == int(np.floor(1280 * np.cos(np.pi / 2 * 12 / 24)))


@pytest.mark.slow
def test_trained_model_super_resolves_its_pairs(tmp_path, tiny, pairs):
    """After training on the synthetic pairs, MaskGIT decoding reproduces most high-resolution codes
    (the function of the low-resolution code, the cell and the caption's class is learnt)."""
    cfg = config.load_sr_config(
        tiny,
        [
            "steps=150",
            "warmup_steps=10",
            "learning_rate=0.01",
            "checkpoint_every=150",
            "log_every=50",
            "lowres_noise=0.1",
        ],
    )
    train.train(cfg, pairs, str(tmp_path / "run"))
    _, trained, _ = train.load_run(str(tmp_path / "run"))
    b = pairs.batch(5, 0, 8)
    out = sample.decode(
        cfg.model, trained, b["low"], b["text_emb"], b["text_mask"], 0, config.SampleConfig(steps=4, temperature=0.0)
    )
    acc = float((out == b["high"]).mean())
    assert acc > 0.5, acc


def test_cascade_refuses_what_does_not_fit(tiny, params):
    """The Upsampler refuses a tokenizer of another vocabulary, a text encoder of another width and an
    LM grid that is not the SR model's low-resolution grid (one-line errors in generate --sr)."""
    import types

    from videopoet.trainer.superres import cascade

    tok = types.SimpleNamespace(codebook_size=tiny.model.codebook_size, fingerprint="f" * 64)
    text = types.SimpleNamespace(dim=tiny.model.text_dim)
    up = cascade.Upsampler(tiny, params, tok, text)
    up.check_codes(np.zeros(tiny.model.low_grid, np.int32))
    with pytest.raises(cascade.CascadeError, match="token grid"):
        up.check_codes(np.zeros((5, 8, 8), np.int32))
    with pytest.raises(cascade.CascadeError, match="codes"):
        cascade.Upsampler(tiny, params, types.SimpleNamespace(codebook_size=1024), text)
    with pytest.raises(cascade.CascadeError, match="width"):
        cascade.Upsampler(tiny, params, tok, types.SimpleNamespace(dim=7))
