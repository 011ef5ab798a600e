"""Does the long run's LM use the caption? t2v loss with the true caption vs another row's caption vs none,
and how different the text tower's embeddings of different captions are."""

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np

from videopoet.trainer import checkpoint, data, step

run_dir = sys.argv[1]
run = checkpoint.load_run(run_dir)
cfg = run.cfg
cfg = dataclasses.replace(cfg, data=cfg.data.measured(mixture={"t2v": 1.0}))
ds, mix = data.open_mixture("synth-long@v1", cfg, root="longrun/datasets")
text = step.load_text_tower(cfg)
lm = run.model


@jax.jit
def per_row(params, batch, text_emb):
    from videopoet.trainer import model

    logits = model.forward(
        lm, params, batch["tokens"], batch["valid"], batch["prefix_len"], text_emb, batch["text_index"]
    )
    logp = jax.nn.log_softmax(logits, -1)
    nll = -jnp.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]
    m = batch["loss_mask"].astype(jnp.float32)
    return (nll * m).sum(-1) / jnp.maximum(m.sum(-1), 1), nll, m


res = {"true": [], "shuffled": [], "none": []}
caps = []
for s in range(int(sys.argv[2]) if len(sys.argv) > 2 else 6):
    b = mix.global_batch(s * 7 + 3)
    b = {k: v for k, v in b.items() if k in data.BATCH_KEYS}
    emb = text(text.params, jnp.asarray(b["text_ids"]), jnp.asarray(b["text_mask"]))
    for name in res:
        bb = dict(b)
        if name == "shuffled":
            bb["text_ids"] = np.roll(b["text_ids"], 1, axis=0)
            bb["text_mask"] = np.roll(b["text_mask"], 1, axis=0)
        if name == "none":
            bb["text_mask"] = np.zeros_like(b["text_mask"])
        e = text(text.params, jnp.asarray(bb["text_ids"]), jnp.asarray(bb["text_mask"]))
        row_loss, nll, m = per_row(run.params, {k: jnp.asarray(v) for k, v in bb.items()}, e)
        res[name].append(np.asarray(row_loss))
    # embedding similarity across rows (mean-pooled over valid text tokens)
    mk = np.asarray(b["text_mask"])[..., None].astype(np.float32)
    pooled = (np.asarray(emb) * mk).sum(1) / np.maximum(mk.sum(1), 1)
    caps.append(pooled)
for k, v in res.items():
    v = np.concatenate(v)
    print(f"t2v loss with {k:9s} caption: {v.mean():.4f} (rows {v.size})")
P = np.concatenate(caps)
Pn = P / np.linalg.norm(P, axis=1, keepdims=True)
C = Pn @ Pn.T
off = C[~np.eye(len(C), dtype=bool)]
print(
    f"pooled text embeddings: cosine between different rows mean {off.mean():.4f} min {off.min():.4f}; "
    f"norm mean {np.linalg.norm(P, axis=1).mean():.3f}"
)
