"""Teacher-forced loss and top-1 accuracy of a run on the object's tokens against the background's.

    python longrun/experiments/object_tokens.py RUN [SCENES_PER_SPLIT] [STEP]

The evaluation's scenes (``videopoet eval``: seen and held-out combinations, one object) are rendered
at the run's clip geometry and tokenized with the run's tokenizers; the t2v and i2v sequences are
built from the true tokens, as training builds them. A latent position is an *object* position where
any pixel of the frames it encodes (frame 0 for latent frame 0, then four frames per latent frame)
inside its patch differs from the background render: where the object is. Everything else is
background. Reported per task: the share of object positions, and loss / top-1 on each part, also
for the first object position of each latent frame in raster order (the token that decides where the
object is and what colour it has, before any other token of that frame shows it).
"""

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np

from videopoet.pipelines.synth.render import render_background
from videopoet.trainer import evaluate, generation, model, tasks

run_dir = sys.argv[1]
per_split = int(sys.argv[2]) if len(sys.argv) > 2 else 8
step = int(sys.argv[3]) if len(sys.argv) > 3 else None
gen = generation.Generator.from_run(run_dir, step, video_tokenizer="default", audio_tokenizer="default")
sp = gen.spec
tl, lh, lw = sp.latent
scenes = evaluate.eval_scenes(sp, per_split, 1234)


def object_mask(scene) -> np.ndarray:
    """bool [tl, lh, lw]: the latent positions whose pixels show the object."""
    frames = scene["frames"].astype(np.int16)
    bg = render_background(scene["attrs"]["background"], sp.width, sp.height)
    bg = np.clip(np.rint(bg), 0, 255).astype(np.int16)
    px = np.abs(frames - bg[None]).max(-1) > 8  # [T, H, W]
    ph, pw = sp.height // lh, sp.width // lw
    cells = px.reshape(px.shape[0], lh, ph, lw, pw).any(axis=(2, 4))  # [T, lh, lw]
    out = np.zeros((tl, lh, lw), bool)
    out[0] = cells[0]
    for t in range(1, tl):
        out[t] = cells[4 * t - 3 : 4 * t + 1].any(0)
    return out


@jax.jit
def fwd(params, tokens, valid, prefix_len, emb, text_index):
    logits = model.forward(gen.model, params, tokens, valid, prefix_len, emb, text_index)
    logp = jax.nn.log_softmax(logits, -1)
    return logp, jnp.argmax(logits, -1)


for task in ("t2v", "i2v"):
    rows = {"object": [], "background": [], "first object": []}
    share = []
    for s in scenes:
        codes = gen.encode_video(s["frames"])
        req = generation.Request(task, prompt=s["caption"]) if task == "t2v" else None
        req = req or generation.Request(task, image=s["frames"][0])
        rec, variant = gen.request_record(req)[:2]
        rec = dataclasses.replace(rec, video=codes)
        ex = tasks.build(task, rec, gen.opts, variant)
        given = 1 if task == "i2v" else 0
        mask = object_mask(s)[given:]
        n = mask.size
        o = ex.prefix_len  # the output's first video token (BOV_O ends the prefix)
        assert np.array_equal(ex.tokens[o : o + n], gen.vocab.visual_to_global(codes[given:]).reshape(-1))
        emb = None
        if task == "t2v":
            emb = gen.text_enc.embed(ex.text_ids[None], ex.text_mask[None])
        logp, pred = fwd(
            gen.params,
            jnp.asarray(ex.tokens[None]),
            jnp.asarray(ex.valid[None]),
            jnp.asarray([ex.prefix_len]),
            emb,
            jnp.asarray(ex.text_index[None]),
        )
        logp, pred = np.asarray(logp[0]), np.asarray(pred[0])
        q = np.arange(o - 1, o - 1 + n)  # position q predicts token q + 1
        target = ex.tokens[q + 1]
        nll = -logp[q, target]
        hit = pred[q] == target
        flat = mask.reshape(-1)
        share.append(flat.mean())
        rows["object"].append((nll[flat].mean(), hit[flat].mean()))
        rows["background"].append((nll[~flat].mean(), hit[~flat].mean()))
        per_frame = flat.reshape(len(mask), -1)
        for t in range(len(mask)):
            idx = np.flatnonzero(per_frame[t])
            if idx.size:
                j = t * per_frame.shape[1] + idx[0]
                rows["first object"].append((nll[j], hit[j]))
    print(f"{task}: object positions {np.mean(share):.3f} of the output ({len(scenes)} scenes)")
    for name, r in rows.items():
        a = np.array(r)
        print(f"  {name:13s} loss {a[:, 0].mean():.3f} top1 {a[:, 1].mean():.3f} (n={len(a)})")
