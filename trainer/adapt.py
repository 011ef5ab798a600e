"""Task adaptation: a new run that starts from a trained run's weights (``videopoet train --init-from``).

VideoPoet trains in two stages: pretraining on the whole task mixture, then task-specific adaptation
(for instance more text-to-video, fewer other tasks) starting from the pretrained weights. An adapted
run is an ordinary run with its own directory, config, task mixture, schedule and steps; only its
initial parameters come from the source run (the latest checkpoint of a run directory, or one
``RUN/checkpoints/<step>`` directory). The optimizer starts fresh (step 0, zero moments): the source's
moments belong to another schedule and mixture, and a new warm-up is what adaptation expects.

The source must have the same architecture (every model field that gives a parameter its shape or its
meaning) and the same text encoder; otherwise the run is refused in one line naming the fields that
differ. Compute-only fields (``model.dtype``, ``model.attention``, ``model.remat``) may differ. Where the
weights came from is recorded in ``run.json`` (``init_from``: run dir, step, config and dataset
fingerprints); a restart of the adapted run resumes from its own checkpoints and ignores the source.

The source must also have read its tokens from the same tokenizers as this run's datasets (video,
audio and text, as the datasets' manifests record them): a token id is only the same token under the
same tokenizer, so a run on re-tokenized data would silently start from weights that read other codes.
``allow_tokenizer_change`` (``--allow-tokenizer-change``) accepts it on purpose, for instance a tokenizer
refined from the source's (a finer temporal rate: the codes keep their vocabulary, the later latent
frames change meaning); ``init_from.tokenizers_changed`` then records each change.

Growing in depth (``grow=True``, ``videopoet train --init-from RUN --grow model.layers=N``): the new run
may have more layers than the source and nothing else different. The source's blocks keep their order,
spread evenly over the deeper stack (block ``i`` of ``L`` goes to ``i * N // L``), and each block in between
starts as the identity: its attention output and MLP down projections are zero, its other weights from
the run's own seeded init, so the grown model computes exactly the source's logits at step 0 and training
decides what the new blocks add. The placement is recorded in ``init_from.grown``.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp

from videopoet.rundir import checkpoints
from videopoet.schemas.config import to_dict
from videopoet.trainer import checkpoint, model
from videopoet.trainer.config import TrainConfig, load_train_config

# ModelConfig fields that change only how the forward pass is computed, not what it computes
COMPUTE_FIELDS = ("name", "dtype", "attention", "remat", "init_std")
# the datasets' tokenizers whose ids the LM reads and writes (run.json: dataset.tokenizers)
TOKENIZED_MODALITIES = ("video", "audio", "text")


@dataclasses.dataclass(frozen=True)
class Source:
    run_dir: str
    step: int
    cfg: TrainConfig
    info: dict
    grow: bool = False
    tokenizers_changed: dict = dataclasses.field(default_factory=dict)  # modality -> {"from", "to"}

    @property
    def tokenizers(self) -> dict:
        """The source's dataset tokenizer fingerprints by modality (as its run.json records them)."""
        return dict((self.info.get("dataset") or {}).get("tokenizers") or {})

    def record(self) -> dict:
        rec = {
            "run": os.path.abspath(self.run_dir) if "://" not in self.run_dir else self.run_dir,
            "step": self.step,
            "config_fingerprint": checkpoint.numeric_fingerprint(self.cfg),
            "dataset": (self.info.get("dataset") or {}).get("fingerprint"),
            "text_encoder_fingerprint": self.info.get("text_encoder_fingerprint"),
            "tokenizers": self.tokenizers,
        }
        if self.tokenizers_changed:
            rec["tokenizers_changed"] = self.tokenizers_changed
        if self.grow:  # the source's depth; where its blocks went is block_placement(from_layers, model.layers)
            rec["grown"] = {"from_layers": self.cfg.model.layers}
        return rec


def resolve(source: str, grow: bool = False) -> Source:
    """A run directory (its latest checkpoint) or ``RUN/checkpoints/<step>`` (that step); ``grow``: the new
    run may be deeper (see the module docstring)."""
    path = source.rstrip("/")
    step = None
    parent = os.path.dirname(path)
    if os.path.basename(parent) == checkpoints.CHECKPOINTS_DIR and os.path.basename(path).isdigit():
        step, path = int(os.path.basename(path)), os.path.dirname(parent)
    cfg_path = os.path.join(path, checkpoint.CONFIG_FILE)
    if not os.path.exists(cfg_path):
        raise checkpoint.RunError(f"--init-from {source}: not a training run directory (no {checkpoint.CONFIG_FILE})")
    with checkpoints.Checkpoints(path, read_only=True) as c:
        steps = c.all_steps()
    if not steps:
        raise checkpoint.RunError(f"--init-from {source}: the run has no checkpoint")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise checkpoint.RunError(f"--init-from {source}: no checkpoint at step {step} (has {steps})")
    return Source(path, step, load_train_config(cfg_path), checkpoint.read_run_info(path) or {}, grow)


def architecture_differences(a, b) -> list[str]:
    """``model.FIELD A != B`` for each architecture field that differs between two model configs (the
    LM's :class:`ModelConfig`, or the super-resolution model's, whose ``init_from`` checks the same way)."""
    da, db = to_dict(a), to_dict(b)
    return [f"model.{k} {da[k]} != {db[k]}" for k in sorted(da) if k not in COMPUTE_FIELDS and da[k] != db[k]]


def block_placement(source_layers: int, layers: int) -> list[int]:
    """Where each of the source's blocks goes in a stack of ``layers`` (evenly spread, order kept)."""
    return [i * layers // source_layers for i in range(source_layers)]


def tokenizer_changes(theirs: dict | None, ours: dict | None) -> dict:
    """``{modality: {"from": theirs, "to": ours}}`` for each tokenizer fingerprint (by modality) that both the
    source run's datasets (``theirs``) and this run's (``ours``) record and that differs."""
    theirs, ours = theirs or {}, ours or {}
    return {
        m: {"from": theirs[m], "to": ours[m]}
        for m in TOKENIZED_MODALITIES
        if theirs.get(m) and ours.get(m) and theirs[m] != ours[m]
    }


def check(
    src: Source,
    cfg: TrainConfig,
    text_fingerprint: str | None,
    tokenizers: dict | None = None,
    allow_tokenizer_change: bool = False,
) -> Source:
    """Refuse a source whose architecture or text encoder differs from ``cfg``'s (one line); with
    ``src.grow`` the run may have more layers than the source, and must. ``text_fingerprint`` None: the
    text encoder is not compared (a check before the encoder is loaded). ``tokenizers``: this run's
    dataset tokenizer fingerprints by modality; a source trained on others is refused unless
    ``allow_tokenizer_change``. Returns the source with its accepted tokenizer changes recorded."""
    diff = architecture_differences(src.cfg.model, cfg.model)
    if src.grow:
        theirs, ours = src.cfg.model.layers, cfg.model.layers
        if ours <= theirs:
            raise checkpoint.RunError(
                f"--init-from {src.run_dir} --grow: this run needs more layers than the source's {theirs} "
                f"(got model.layers={ours})"
            )
        diff = [d for d in diff if not d.startswith("model.layers ")]
    if diff:
        raise checkpoint.RunError(
            f"--init-from {src.run_dir}: its model differs from this run's ({', '.join(diff)}); "
            f"adaptation keeps the architecture{' (--grow adds layers only)' if src.grow else ''}"
        )
    theirs = src.info.get("text_encoder_fingerprint")
    if theirs and text_fingerprint is not None and theirs != text_fingerprint:
        raise checkpoint.RunError(
            f"--init-from {src.run_dir}: it was trained with text encoder {theirs[:12]}, this run's "
            f"{cfg.text_encoder!r} is {text_fingerprint[:12]}"
        )
    changed = tokenizer_changes(src.tokenizers, tokenizers)
    if changed and not allow_tokenizer_change:
        what = ", ".join(f"{m} {c['from'][:12]} -> {c['to'][:12]}" for m, c in changed.items())
        raise checkpoint.RunError(
            f"--init-from {src.run_dir}: its datasets were tokenized by other tokenizers than this run's "
            f"({what}), so its weights read other codes; pass --allow-tokenizer-change if that is intended"
        )
    return dataclasses.replace(src, tokenizers_changed=changed)


def initial_state(trainer, src: Source):
    """A fresh training state (step 0, fresh optimizer moments) holding the source's parameters, placed
    with the trainer's shardings."""
    check(src, trainer.cfg, trainer.text.fingerprint)
    spec = jax.eval_shape(lambda r: model.init_params(src.cfg.model, r), jax.random.PRNGKey(0))
    _, loaded = checkpoints.read_subtree(src.run_dir, {"params": spec}, src.step)
    state = trainer.init()
    params = loaded["params"]
    if trainer.cfg.model.layers != src.cfg.model.layers:
        params = grown_params(params, jax.device_get(state["params"]), src.cfg.model.layers)
    params = jax.device_put(params, trainer.state_shardings["params"])
    # AdamW's initial state does not depend on the parameters' values (zero moments, count 0)
    return {"params": params, "opt_state": state["opt_state"], "step": state["step"]}


def grown_params(source: dict, fresh: dict, source_layers: int) -> dict:
    """The deeper model's parameters: ``fresh`` (its own init) with the source's embedding, text projection,
    final norm, head and blocks in place, and every other block made the identity (zero output
    projections of its attention and MLP, so it adds nothing to the residual stream)."""
    layers = sum(1 for k in fresh if k.startswith("block_"))
    placed = {f"block_{j}": f"block_{i}" for i, j in enumerate(block_placement(source_layers, layers))}
    out = {}
    for name, value in fresh.items():
        if name in placed:
            out[name] = source[placed[name]]
        elif name.startswith("block_"):
            attn, mlp = dict(value["attn"]), dict(value["mlp"])
            attn["o"] = {"kernel": jnp.zeros_like(attn["o"]["kernel"])}
            mlp["down"] = {"kernel": jnp.zeros_like(mlp["down"]["kernel"])}
            out[name] = {**value, "attn": attn, "mlp": mlp}
        else:
            out[name] = source[name]
    return out
