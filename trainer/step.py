"""The train step: frozen T5 text embeddings -> prefix-LM forward -> output-only cross-entropy ->
AdamW (warm-up + cosine, global-norm clipping). Sharded with the mesh of :mod:`.sharding`.

Per-task sums (loss, correct, tokens) come back as ``[len(TASKS)]`` vectors so the loop can log
per-task loss and accuracy whatever tasks a step mixes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from videopoet.schemas.errors import ConfigError
from videopoet.trainer import model, sharding
from videopoet.trainer.config import TASKS, TrainConfig


def lr_schedule(cfg: TrainConfig) -> optax.Schedule:
    """The learning rate of each step. ``wsd``: linear warm-up, the peak until ``cfg.decay_start``, then a
    linear decay to ``min_lr_ratio`` x the peak at ``steps``; the steps before the decay get the same
    rates whatever ``steps`` is, which is what lets a finished run be extended (trainer/extend.py)."""
    peak, warm = cfg.learning_rate, cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, max(warm, 1)), optax.constant_schedule(peak)], [warm]
        )
    if cfg.lr_schedule == "wsd":
        decay = optax.linear_schedule(peak, peak * cfg.min_lr_ratio, max(cfg.decay_length, 1))
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, max(warm, 1)), optax.constant_schedule(peak), decay],
            [warm, cfg.decay_start],
        )
    return optax.warmup_cosine_decay_schedule(
        0.0, peak, warm, max(cfg.steps, warm + 1), end_value=peak * cfg.min_lr_ratio
    )


def optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    def decay_mask(p):  # no decay on norms / biases
        return jax.tree_util.tree_map(lambda x: x.ndim >= 2, p)

    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip) if cfg.grad_clip > 0 else optax.identity(),
        optax.adamw(lr_schedule(cfg), b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=decay_mask),
    )


# ------------------------------------------------------------------------------------- text encoder
@dataclasses.dataclass
class TextTower:
    """The frozen T5 encoder as a pure function of (params, ids, mask)."""

    module: Any
    params: Any
    fingerprint: str
    dim: int

    def __call__(self, params, ids, mask):
        out = self.module.apply({"params": params}, ids, mask)
        return jax.lax.stop_gradient(out * mask[..., None].astype(out.dtype))


def load_text_tower(cfg: TrainConfig) -> TextTower:
    from videopoet.tokenizers import registry

    enc, _ = registry.resolve(cfg.text_encoder, "text")
    if enc.dim != cfg.model.text_dim:
        raise ConfigError(
            f"model.text_dim={cfg.model.text_dim} but the text encoder {cfg.text_encoder!r} has width {enc.dim}"
        )
    return TextTower(enc.model, enc.params, enc.fingerprint, enc.dim)


def abstract_text_tower(cfg: TrainConfig) -> TextTower:
    """The text tower with abstract parameters (``jax.ShapeDtypeStruct`` leaves, nothing materialized): what
    an ahead-of-time compile of the step needs, without drawing or reading the encoder's weights (T5-XL's
    are 1.2B). The fingerprint is empty: there are no weights to hash."""
    from videopoet.tokenizers.text import T5Encoder, architecture

    tcfg = architecture(cfg.text_encoder)
    if tcfg.d_model != cfg.model.text_dim:
        raise ConfigError(
            f"model.text_dim={cfg.model.text_dim} but the text encoder {cfg.text_encoder!r} has width {tcfg.d_model}"
        )
    module = T5Encoder(tcfg)
    ids = jnp.zeros((1, cfg.data.text_len), jnp.int32)
    params = jax.eval_shape(lambda r: module.init(r, ids, ids)["params"], jax.random.PRNGKey(0))
    return TextTower(module, params, "", tcfg.d_model)


def _is_abstract(tree) -> bool:
    leaves = jax.tree_util.tree_leaves(tree)
    return bool(leaves) and all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)


# ------------------------------------------------------------------------------------- loss
def loss_and_metrics(
    lm: model.PrefixLM, params, batch: dict, text_emb, change_weight: float = 0.0
) -> tuple[jax.Array, dict]:
    """(objective, metrics): the objective weighs changed video targets 1 + ``change_weight`` (see
    ``TrainConfig.change_weight``); ``metrics["loss"]`` is the plain mean over the output tokens."""
    logits = model.forward(
        lm, params, batch["tokens"], batch["valid"], batch["prefix_len"], text_emb, batch["text_index"]
    )
    targets, m = batch["targets"], batch["loss_mask"].astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32) * m
    n = jnp.maximum(m.sum(), 1.0)
    loss = (nll * m).sum() / n
    objective = loss
    if change_weight:
        w = m * (1.0 + change_weight * batch["target_changed"].astype(jnp.float32))
        objective = (nll * w).sum() / jnp.maximum(w.sum(), 1.0)
    onehot = jax.nn.one_hot(batch["task_id"], len(TASKS), dtype=jnp.float32)  # [B, tasks]
    metrics = {
        "loss": loss,
        "task_loss_sum": onehot.T @ (nll * m).sum(-1),
        "task_correct": onehot.T @ correct.sum(-1),
        "task_tokens": onehot.T @ m.sum(-1),
        "task_examples": onehot.sum(0),
    }
    return objective, metrics


# ------------------------------------------------------------------------------------- state
def _init_state(cfg: TrainConfig, tx, rng, boxed: bool):
    params = model.init_params(cfg.model, rng, boxed=True)
    state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}
    return state if boxed else nn.meta.unbox(state)


@dataclasses.dataclass
class Trainer:
    """Compiled init and train step for one config on one mesh."""

    cfg: TrainConfig
    mesh: Any
    model: model.PrefixLM
    tx: optax.GradientTransformation
    state_shardings: Any
    init_fn: Callable
    step_fn: Callable
    text: TextTower
    eval_fn: Callable | None = None  # (params, batch, text params) -> loss_and_metrics' metrics, no update

    def init(self, seed: int | None = None):
        return self.init_fn(jax.random.PRNGKey(self.cfg.seed if seed is None else seed))

    def abstract_state(self):
        return jax.eval_shape(self.init_fn, jax.random.PRNGKey(0))

    def step(self, state, batch: dict):
        gb = sharding.global_batch(batch, self.mesh, self.cfg.mesh)
        # traced under the mesh: the model's activation constraints (nn.with_logical_constraint) are
        # no-ops when no mesh is set
        with jax.set_mesh(self.mesh):
            return self.step_fn(state, gb, self.text.params)

    def evaluate(self, params, batch: dict) -> dict:
        """The loss metrics of ``params`` on ``batch`` (this process's rows, as :meth:`step` takes them),
        without a gradient or an update: what the held-out loss of :mod:`.train_eval` runs."""
        gb = sharding.global_batch(batch, self.mesh, self.cfg.mesh)
        with jax.set_mesh(self.mesh):
            return self.eval_fn(params, gb, self.text.params)

    def lower(self, state, batch: dict):
        """The step lowered as :meth:`step` traces it (to inspect it or compile it ahead of time). ``state``
        and ``batch`` may be abstract (``jax.ShapeDtypeStruct`` with shardings, as :mod:`.aot` gives them);
        an abstract batch is already global."""
        gb = batch if _is_abstract(batch) else sharding.global_batch(batch, self.mesh, self.cfg.mesh)
        with jax.set_mesh(self.mesh):
            return self.step_fn.lower(state, gb, self.text.params)


def fit_mesh(cfg: TrainConfig):
    """The mesh for ``cfg``; an automatic data axis (``mesh.data=-1``) in one process shrinks to the
    largest size that divides the global batch (using the first devices) instead of failing."""
    import math

    m = cfg.mesh
    if m.data == -1 and jax.process_count() == 1 and cfg.batch_size % m.fsdp == 0:
        n = len(jax.devices()) // max(1, m.fsdp * m.tensor)
        data = math.gcd(n, cfg.batch_size // m.fsdp) or 1
        if data < n:
            import warnings

            warnings.warn(
                f"batch_size {cfg.batch_size} does not split over {n * m.fsdp} devices; "
                f"training on {data * m.fsdp * m.tensor} of {len(jax.devices())}",
                stacklevel=2,
            )
        m = dataclasses.replace(m, data=data)
    mesh = sharding.make_mesh(m)
    check_batch_split(cfg, mesh)
    return mesh


def check_batch_split(cfg: TrainConfig, mesh) -> None:
    """Refuse a global batch that the mesh's batch axes cannot split evenly (one line)."""
    shards = 1
    for ax in tuple(cfg.mesh.rules.get("batch", ("data", "fsdp"))):
        shards *= mesh.shape[ax]
    if cfg.batch_size % shards:
        raise ConfigError(
            f"batch_size {cfg.batch_size} does not split over the {shards} devices of the batch "
            f"mesh axes {dict(mesh.shape)}; use a multiple of {shards} or a smaller mesh.data"
        )


def make_trainer(cfg: TrainConfig, mesh=None, text: TextTower | None = None) -> Trainer:
    mesh = fit_mesh(cfg) if mesh is None else mesh
    lm = model.build(cfg.model)
    tx = optimizer(cfg)
    text = load_text_tower(cfg) if text is None else text
    rules = list(sharding.rules(cfg.mesh))
    abstract = jax.eval_shape(lambda r: _init_state(cfg, tx, r, boxed=True), jax.random.PRNGKey(0))
    state_sh = sharding.logical_shardings(nn.get_partition_spec(abstract), mesh, cfg.mesh)
    repl = sharding.replicated(mesh)

    def init(rng):
        with nn.logical_axis_rules(rules):
            return _init_state(cfg, tx, rng, boxed=False)

    init_fn = jax.jit(init, out_shardings=state_sh)

    def train_step(state, batch, text_params):
        with nn.logical_axis_rules(rules):
            text_emb = text(text_params, batch["text_ids"], batch["text_mask"])
            grad_fn = jax.value_and_grad(
                lambda p: loss_and_metrics(lm, p, batch, text_emb, cfg.change_weight), has_aux=True
            )
            (_, metrics), grads = grad_fn(state["params"])
            updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
            params = optax.apply_updates(state["params"], updates)
            metrics["grad_norm"] = optax.tree.norm(grads)
            metrics["lr"] = lr_schedule(cfg)(state["step"])
        return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, metrics

    def eval_step(params, batch, text_params):
        with nn.logical_axis_rules(rules):
            text_emb = text(text_params, batch["text_ids"], batch["text_mask"])
            return loss_and_metrics(lm, params, batch, text_emb)[1]

    text_sh = jax.tree_util.tree_map(lambda _: repl, text.params)
    step_fn = jax.jit(
        train_step, in_shardings=(state_sh, None, text_sh), out_shardings=(state_sh, repl), donate_argnums=(0,)
    )
    eval_fn = jax.jit(eval_step, in_shardings=(state_sh["params"], None, text_sh), out_shardings=repl)
    if _is_abstract(text.params):  # an ahead-of-time compile: shapes on the mesh, nothing to place
        text.params = jax.tree_util.tree_map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), text.params, text_sh
        )
    else:
        text.params = jax.device_put(text.params, text_sh)
    return Trainer(cfg, mesh, lm, tx, state_sh, init_fn, step_fn, text, eval_fn)
