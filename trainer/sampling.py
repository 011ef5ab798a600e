"""Autoregressive sampling from the prefix LM with its KV cache, under ``jit`` with static shapes.

One call generates the output segment of a batch of prompts of the same task::

    out = sample(model, params, prompt, plan, options, text_emb=..., seeds=...)

* ``prompt`` (:class:`Prompt`): tokens / valid / text_index / cond ``[B, P]``; the prefix ends
  with the output's begin token (``<bov_o>`` / ``<boa_o>``), as :mod:`videopoet.trainer.tasks`
  lays it out, so the whole prompt is the bidirectional prefix.
* ``plan`` (:class:`OutputPlan`): the output's layout, one entry per generated position: the
  half-open id range the token must come from (visual codes, or audio level ``l``'s codes: audio
  is generated **level by level**, all frames of level 0 first, because that is how the trainer
  lays it out) or a forced token (``<eov_o>``, ``<boa_o>``, ...). Logits outside the range are
  masked, so every sampled token decodes.
* :class:`SamplingOptions`: temperature (0 = greedy), top-k, top-p, classifier-free guidance scale,
  and which conditions the unconditional rows drop (``text`` and/or ``inputs``: the positions the
  trainer's CFG dropout hides). With guidance, conditional and unconditional rows run as one batch
  of ``2B`` rows; the guided logits ``u + s * (c - u)`` pick one token that both rows append.
* ``seeds`` ``[B]``: each row draws from its own key (``fold_in(PRNGKey(seed), step)``), so the
  same seed gives the same tokens, and a row's draws do not depend on its batch neighbours.

``use_cache=False`` recomputes the full sequence every step (the reference and the benchmark's
baseline); greedy decoding gives identical tokens both ways (``tests/test_sampling.py``).

The compiled function is cached per (model config, shapes, static options).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from videopoet.schemas.errors import VideoPoetError
from videopoet.trainer import model
from videopoet.trainer.tasks import COND_INPUT, COND_TEXT

__all__ = ["OutputPlan", "Prompt", "SamplingError", "SamplingOptions", "sample", "filter_logits"]


class SamplingError(VideoPoetError, ValueError):
    """Bad sampling options or prompt shapes."""


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 1.0  # 0 = greedy (argmax)
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off (nucleus sampling)
    guidance: float = 1.0  # classifier-free guidance scale; 1 = off (no unconditional rows)
    drop_text: bool = True  # unconditional rows hide the text slot
    drop_inputs: bool = False  # ... and/or the input streams (video / audio / condition tokens)
    use_cache: bool = True

    def validate(self) -> None:
        if self.temperature < 0:
            raise SamplingError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise SamplingError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise SamplingError(f"top_p must lie in (0, 1], got {self.top_p}")
        if self.guidance < 0:
            raise SamplingError(f"guidance must be >= 0, got {self.guidance}")
        if self.guidance != 1.0 and not (self.drop_text or self.drop_inputs):
            raise SamplingError("guidance needs an unconditional row: set drop_text and/or drop_inputs")


@dataclasses.dataclass(frozen=True)
class Prompt:
    tokens: np.ndarray  # int32 [B, P]
    valid: np.ndarray  # bool [B, P]
    text_index: np.ndarray  # int32 [B, P] (-1 off the text slot)
    cond: np.ndarray  # int8 [B, P]: tasks.COND_TEXT / COND_INPUT positions (what CFG may hide)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.tokens.shape)  # type: ignore[return-value]

    @classmethod
    def stack(cls, examples) -> Prompt:
        """From task Examples' prefixes (``tokens[:prefix_len]``); all must share one prefix length."""
        lens = {int(e.prefix_len) for e in examples}
        if len(lens) != 1:
            raise SamplingError(f"prompts of one batch need one prefix length, got {sorted(lens)}")
        p = lens.pop()
        return cls(
            tokens=np.stack([e.tokens[:p] for e in examples]).astype(np.int32),
            valid=np.stack([e.valid[:p] for e in examples]).astype(bool),
            text_index=np.stack([e.text_index[:p] for e in examples]).astype(np.int32),
            cond=np.stack([e.cond[:p] for e in examples]).astype(np.int8),
        )


@dataclasses.dataclass(frozen=True)
class OutputPlan:
    """Per output position: allowed id range [lo, hi) when sampled, or the forced token (>= 0)."""

    lo: np.ndarray  # int32 [L]
    hi: np.ndarray  # int32 [L]
    forced: np.ndarray  # int32 [L]; -1 = sample

    @property
    def length(self) -> int:
        return int(self.lo.shape[0])

    @classmethod
    def build(cls, segments) -> OutputPlan:
        """``segments``: ("range", lo, hi, n) for n sampled tokens, or ("token", id)."""
        lo, hi, forced = [], [], []
        for seg in segments:
            if seg[0] == "range":
                _, a, b, n = seg
                lo += [a] * n
                hi += [b] * n
                forced += [-1] * n
            elif seg[0] == "token":
                lo.append(0)
                hi.append(0)
                forced.append(int(seg[1]))
            else:
                raise ValueError(f"unknown plan segment {seg[0]!r}")

        def as32(x):
            return np.asarray(x, np.int32)

        return cls(as32(lo), as32(hi), as32(forced))


# ------------------------------------------------------------------------------------- filtering
def filter_logits(logits: jax.Array, lo, hi, temperature, top_k: int, top_p) -> jax.Array:
    """[B, V] float32 logits -> log-weights with -inf outside [lo, hi), below top-k, outside top-p.

    ``top_k`` is static (0 = off); ``temperature`` and ``top_p`` may be traced (top_p >= 1 = off).
    Temperature is applied first, then top-k, then top-p over the renormalized remainder.
    """
    neg = jnp.finfo(jnp.float32).min
    ids = jnp.arange(logits.shape[-1])
    allowed = (ids >= lo) & (ids < hi)
    x = jnp.where(allowed, logits / jnp.maximum(temperature, 1e-6), neg)
    if top_k:
        kth = jax.lax.top_k(x, min(top_k, x.shape[-1]))[0][..., -1:]
        x = jnp.where(x >= kth, x, neg)
    srt = jnp.sort(x, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(srt, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass of the strictly better tokens
    keep_sorted = before < top_p
    # the smallest kept logit: every token at or above it stays (ties stay together)
    cutoff = jnp.min(jnp.where(keep_sorted, srt, jnp.inf), axis=-1, keepdims=True)
    x = jnp.where((x >= cutoff) | (top_p >= 1.0), x, neg)
    return jnp.where(allowed, x, neg)


def _choose(logits, lo, hi, forced, keys, step, temperature, top_k, top_p, greedy: bool):
    """Next token [B] from logits [B, V]."""
    if greedy:
        neg = jnp.finfo(jnp.float32).min
        ids = jnp.arange(logits.shape[-1])
        tok = jnp.argmax(jnp.where((ids >= lo) & (ids < hi), logits, neg), axis=-1)
    else:
        w = filter_logits(logits, lo, hi, temperature, top_k, top_p)
        step_keys = jax.vmap(lambda k: jax.random.fold_in(k, step))(keys)
        tok = jax.vmap(lambda k, row: jax.random.categorical(k, row))(step_keys, w)
    return jnp.where(forced >= 0, forced, tok).astype(jnp.int32)


def _guide(logits, b: int, guidance, use_guidance: bool):
    if not use_guidance:
        return logits
    cond, uncond = logits[:b], logits[b:]
    return uncond + guidance * (cond - uncond)


# ------------------------------------------------------------------------------------- compiled
@functools.lru_cache(maxsize=32)
def _compiled(cfg, use_cache: bool, greedy: bool, top_k: int, use_guidance: bool):
    lm = model.build(cfg)

    def run(params, tokens, valid, text_index, text_emb, lo, hi, forced, keys, temperature, top_p, guidance):
        rows, p = tokens.shape
        b = keys.shape[0]
        n_out = lo.shape[0]
        total = p + n_out
        prefix_len = jnp.full((rows,), p, jnp.int32)
        choose = functools.partial(_choose, keys=keys, temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy)

        def pick(logits, i):
            tok = choose(_guide(logits, b, guidance, use_guidance), lo[i], hi[i], forced[i], step=i)
            return jnp.concatenate([tok, tok]) if use_guidance else tok

        if use_cache:
            cache = model.init_cache(cfg, rows, total)
            logits, cache = model.prefill(lm, params, tokens, valid, prefix_len, cache, text_emb, text_index)
            first = pick(logits[:, -1], 0)

            def body(carry, i):
                tok, cache = carry
                logits, cache = model.decode_step(lm, params, tok, jnp.full((rows,), p + i - 1, jnp.int32), cache)
                nxt = pick(logits, i)
                return (nxt, cache), tok

            (last, _), toks = jax.lax.scan(body, (first, cache), jnp.arange(1, n_out))
            out = jnp.concatenate([toks.T, last[:, None]], axis=1) if n_out > 1 else first[:, None]
            return out[:b]

        # no cache: the full sequence [rows, total] is recomputed at every step
        seq = jnp.concatenate([tokens, jnp.zeros((rows, n_out), jnp.int32)], axis=1)
        seq_valid = jnp.concatenate([valid, jnp.zeros((rows, n_out), bool)], axis=1)
        tidx = jnp.concatenate([text_index, jnp.full((rows, n_out), -1, jnp.int32)], axis=1)

        def body_nc(carry, i):
            seq, seq_valid = carry
            logits = model.forward(lm, params, seq, seq_valid, prefix_len, text_emb, tidx)
            q = p + i - 1
            tok = pick(jax.lax.dynamic_index_in_dim(logits, q, axis=1, keepdims=False), i)
            seq = jax.lax.dynamic_update_slice(seq, tok[:, None], (0, p + i))
            seq_valid = jax.lax.dynamic_update_slice(seq_valid, jnp.ones((rows, 1), bool), (0, p + i))
            return (seq, seq_valid), None

        (seq, _), _ = jax.lax.scan(body_nc, (seq, seq_valid), jnp.arange(n_out))
        return seq[:b, p:]

    return jax.jit(run)


def _uncond_rows(prompt: Prompt, options: SamplingOptions) -> np.ndarray:
    hide = np.zeros(prompt.cond.shape, bool)
    if options.drop_text:
        hide |= prompt.cond == COND_TEXT
    if options.drop_inputs:
        hide |= prompt.cond == COND_INPUT
    return prompt.valid & ~hide


def sample(
    lm: model.PrefixLM,
    params,
    prompt: Prompt,
    plan: OutputPlan,
    options: SamplingOptions | None = None,
    text_emb=None,
    seeds=None,
) -> np.ndarray:
    """Generate the output segment: int32 [B, plan.length] (forced tokens included)."""
    options = options or SamplingOptions()
    options.validate()
    b, p = prompt.shape
    if plan.length < 1:
        raise SamplingError("the output plan is empty")
    vocab = lm.cfg.vocab_size
    sampled = plan.forced < 0
    if np.any(sampled & ((plan.lo < 0) | (plan.hi > vocab) | (plan.lo >= plan.hi))) or np.any(plan.forced >= vocab):
        raise SamplingError(f"output plan ranges must lie in [0, {vocab})")
    seeds = np.arange(b) if seeds is None else np.asarray(seeds).reshape(-1)
    if seeds.shape[0] != b:
        raise SamplingError(f"{seeds.shape[0]} seeds for {b} prompts")
    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds, jnp.uint32))
    use_guidance = options.guidance != 1.0
    tokens, valid, tidx = prompt.tokens, prompt.valid, prompt.text_index
    if text_emb is None:
        text_emb = np.zeros((b, 1, lm.cfg.text_dim), np.float32)
        tidx = np.full_like(tidx, -1)
    text_emb = np.asarray(text_emb, np.float32)
    if use_guidance:
        tokens = np.concatenate([tokens, tokens])
        valid = np.concatenate([valid, _uncond_rows(prompt, options)])
        tidx = np.concatenate([tidx, tidx])
        text_emb = np.concatenate([text_emb, text_emb])
    fn = _compiled(lm.cfg, options.use_cache, options.temperature == 0, int(options.top_k), use_guidance)
    out = fn(
        params,
        jnp.asarray(tokens, jnp.int32),
        jnp.asarray(valid, bool),
        jnp.asarray(tidx, jnp.int32),
        jnp.asarray(text_emb),
        jnp.asarray(plan.lo),
        jnp.asarray(plan.hi),
        jnp.asarray(plan.forced),
        keys,
        jnp.float32(options.temperature),
        jnp.float32(options.top_p),
        jnp.float32(options.guidance),
    )
    return np.asarray(out, np.int32)
