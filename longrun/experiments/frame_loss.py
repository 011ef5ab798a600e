"""Per-latent-frame t2v loss/accuracy of the long run vs a copy-the-previous-frame baseline.

Also split by position: a position *changes* where its code differs from the same position's code in
an adjacent latent frame (where the moving object is, or was); the rest is static (background).
``python longrun/experiments/frame_loss.py RUN BATCHES [--step N] [--data NAME@VERSION --root DIR]``
(default data: the run's own ``synth-long@v1``; another dataset of the same pipeline config measures
clips the run never trained on). The last line is over the trainer's ``target_changed`` positions (a code
that differs from the same position one latent frame earlier): how often the model's argmax there is
the previous frame's code, i.e. predicts that nothing moved."""

import argparse
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from videopoet.trainer import checkpoint, data, model, step

ap = argparse.ArgumentParser()
ap.add_argument("run")
ap.add_argument("batches", type=int)
ap.add_argument("--step", type=int, default=None)
ap.add_argument("--data", default="synth-long@v1")
ap.add_argument("--root", default="longrun/datasets")
args = ap.parse_args()
run = checkpoint.load_run(args.run, step=args.step)
cfg = run.cfg
cfg = dataclasses.replace(cfg, data=cfg.data.measured(mixture={"t2v": 1.0}))
ds, mix = data.open_mixture(args.data, cfg, root=args.root)
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
split = {"changes": [], "static": []}
changed_rows = []  # the trainer's target_changed positions: (loss, top-1, predicts the previous frame's code)
for s in range(args.batches):
    st = s * 11 + 5
    b = mix.global_batch(st)
    bb = {k: jnp.asarray(b[k]) for k in data.BATCH_KEYS}
    emb = text(text.params, bb["text_ids"], bb["text_mask"])
    nll, pred = map(np.asarray, fwd(run.params, bb, emb))
    for i in range(cfg.batch_size):
        rec_idx, task, var, _, _ = mix.slot(st, i)
        v = np.asarray(mix.records[rec_idx].video)
        T, H, W = v.shape
        q = np.flatnonzero(b["target_changed"][i])
        if q.size:
            previous = b["tokens"][i, q + 1 - H * W]  # the same position one latent frame earlier
            changed_rows.append(
                (nll[i, q].mean(), (pred[i, q] == b["targets"][i, q]).mean(), (pred[i, q] == previous).mean())
            )
        flat = voc.visual_to_global(v).reshape(-1)
        tok = b["tokens"][i]
        # find where the output video starts (the last occurrence of the clip's tokens)
        n = flat.size
        starts = [o for o in range(len(tok) - n, -1, -1) if tok[o] == flat[0] and np.array_equal(tok[o : o + n], flat)]
        if not starts:
            continue
        o = starts[0]
        changes = np.zeros(v.shape, bool)
        changes[1:] |= v[1:] != v[:-1]
        changes[:-1] |= v[:-1] != v[1:]
        hit = pred[i, o - 1 : o - 1 + n] == b["targets"][i, o - 1 : o - 1 + n]
        lossv = nll[i, o - 1 : o - 1 + n]
        for name, where in (("changes", changes.reshape(-1)), ("static", ~changes.reshape(-1))):
            if where.any():
                split[name].append((lossv[where].mean(), hit[where].mean(), where.mean()))
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
for name, rows in split.items():
    a = np.array(rows)
    share, loss, top1 = a[:, 2].mean(), a[:, 0].mean(), a[:, 1].mean()
    print(f"{name} positions: {share:.3f} of the clip, loss {loss:.3f} top1 {top1:.3f} (n={len(a)})")
a = np.array(changed_rows)
print(
    f"changed targets (target_changed): loss {a[:, 0].mean():.3f} top1 {a[:, 1].mean():.3f}, "
    f"argmax is the previous latent frame's code {a[:, 2].mean():.3f} (n={len(a)})"
)
