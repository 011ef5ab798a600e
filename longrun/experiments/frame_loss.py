"""Per-latent-frame t2v loss/accuracy of the long run vs a copy-the-previous-frame baseline."""

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np

from videopoet.trainer import checkpoint, data, model, step

T2V_ONLY = {"mixture": {"t2v": 1.0}, "cfg_dropout_text": 0.0, "cfg_dropout_inputs": 0.0, "curriculum": False}
run = checkpoint.load_run(sys.argv[1])
cfg = run.cfg
cfg = dataclasses.replace(
    cfg,
    data=dataclasses.replace(
        cfg.data, mixture={"t2v": 1.0}, cfg_dropout_text=0.0, cfg_dropout_inputs=0.0, curriculum=False
    ),
)
ds, mix = data.open_mixture("synth-long@v1", cfg, root="longrun/datasets")
text = step.load_text_tower(cfg)
lm = run.model
voc = cfg.model.vocab


@jax.jit
def fwd(params, batch, emb):
    logits = model.forward(lm, params, batch["tokens"], batch["valid"], batch["prefix_len"], emb, batch["text_index"])
    logp = jax.nn.log_softmax(logits, -1)
    return -jnp.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0], jnp.argmax(logits, -1)


per = {}
copy = {}
for s in range(int(sys.argv[2])):
    st = s * 11 + 5
    b = mix.global_batch(st)
    bb = {k: jnp.asarray(b[k]) for k in data.BATCH_KEYS}
    emb = text(text.params, bb["text_ids"], bb["text_mask"])
    nll, pred = map(np.asarray, fwd(run.params, bb, emb))
    for i in range(cfg.batch_size):
        rec_idx, task, var, _, _ = mix.slot(st, i)
        v = np.asarray(mix.records[rec_idx].video)
        T, H, W = v.shape
        flat = voc.visual_to_global(v).reshape(-1)
        tok = b["tokens"][i]
        # find where the output video starts (the last occurrence of the clip's tokens)
        n = flat.size
        starts = [o for o in range(len(tok) - n, -1, -1) if tok[o] == flat[0] and np.array_equal(tok[o : o + n], flat)]
        if not starts:
            continue
        o = starts[0]
        for t in range(T):
            sl = slice(o + t * H * W - 1, o + (t + 1) * H * W - 1)  # position q predicts q+1
            frame_nll = nll[i, sl]
            acc = (pred[i, sl] == b["targets"][i, sl]).mean()
            per.setdefault(t, []).append((frame_nll.mean(), acc))
            if t > 0:
                copy.setdefault(t, []).append((v[t] == v[t - 1]).mean())
for t in sorted(per):
    a = np.array(per[t])
    c = np.mean(copy[t]) if t in copy else float("nan")
    print(
        f"latent frame {t}: loss {a[:, 0].mean():.3f} top1 {a[:, 1].mean():.3f}  "
        f"copy-previous-frame accuracy {c:.3f}  (n={len(a)})"
    )
