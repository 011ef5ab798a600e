"""Is the object's shape in the codes? A classifier from the first latent frame's codes around the object
(3 x 3 tokens, 10 bits each) to its shape, trained on the scenes of seed 7 and tested on those of seed
8, by size; beside it what the scorer reads from the decoded first frame.

    python longrun/experiments/shape_probe.py shipped|TOKENIZER_DIR SCENES_PER_SPLIT
"""

import copy
import json
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from videopoet.pipelines.synth import SHAPES, render_frames
from videopoet.pipelines.synth.score import score_clip
from videopoet.trainer import evaluate, generation

tok = sys.argv[1] if sys.argv[1] != "shipped" else None
n = int(sys.argv[2])
gen = generation.Generator.from_run("trainer/assets/small", video_tokenizer=tok)
bits = gen.video_tok.codebook_size.bit_length() - 1


def features(seed):
    X, y, size, dec_ok = [], [], [], []
    for s in evaluate.eval_scenes(gen.spec, per_split=n, seed=seed):
        o = s["attrs"]["objects"][0]
        frames = []
        for shp in SHAPES:
            a = copy.deepcopy(s["attrs"])
            a["objects"][0]["shape"] = shp
            a["frames"] = 1
            frames.append(render_frames(a))
        frames = np.stack(frames)
        codes = np.asarray(gen.video_tok.encode(frames))[:, 0]  # [5, 8, 8]
        recon = np.asarray(gen.video_tok.decode(codes[:, None]))
        gy, gx = codes.shape[1:]
        cy, cx = min(int(o["y0"] * gy), gy - 1), min(int(o["x0"] * gx), gx - 1)  # the top-left of the 3 x 3 patch
        for k, shp in enumerate(SHAPES):
            pad = np.pad(codes[k], 1, mode="edge")
            patch = pad[cy : cy + 3, cx : cx + 3].reshape(-1)  # the 3 x 3 tokens centred on the object
            X.append(((patch[:, None] >> np.arange(bits)) & 1).reshape(-1))
            y.append(k)
            size.append(o["size"])
            sc = score_clip(recon[k], dict(s["want"], shape=shp, motion="left"))
            dec_ok.append(sc["shape"])
    return np.array(X, np.float32), np.array(y), np.array(size), np.array(dec_ok)


Xa, ya, _, _ = features(7)
Xb, yb, sb, db = features(8)
out = {"tokenizer": sys.argv[1], "train_rows": len(ya), "test_rows": len(yb)}
for name, clf in (
    ("logistic", LogisticRegression(max_iter=2000, C=1.0)),
    ("mlp", MLPClassifier((128,), max_iter=600, random_state=0)),
):
    clf.fit(Xa, ya)
    pred = clf.predict(Xb)
    out[name] = {sz: round(float(np.mean(pred[sb == sz] == yb[sb == sz])), 3) for sz in ("small", "medium", "large")}
out["scorer_on_decoded_first_frame"] = {
    sz: round(float(np.mean(db[sb == sz])), 3) for sz in ("small", "medium", "large")
}
print(json.dumps(out))
