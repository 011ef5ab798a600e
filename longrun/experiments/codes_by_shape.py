"""Do the codes tell the shapes apart? Every eval scene re-rendered with each of the five shapes (same
colour, size, path, background): how many codes differ between two shapes, and what the scorer makes of
each round trip, by size and shape.

    python longrun/experiments/codes_by_shape.py shipped|TOKENIZER_DIR SCENES_PER_SPLIT SEED
"""

import collections
import copy
import itertools
import json
import sys

import numpy as np

from videopoet.pipelines.synth import SHAPES, render_frames
from videopoet.pipelines.synth.score import score_clip
from videopoet.trainer import evaluate, generation

tok = sys.argv[1] if sys.argv[1] != "shipped" else None
n, seed = int(sys.argv[2]), int(sys.argv[3])
gen = generation.Generator.from_run("trainer/assets/small", video_tokenizer=tok)
scenes = evaluate.eval_scenes(gen.spec, per_split=n, seed=seed)
diff = collections.defaultdict(list)
acc = collections.defaultdict(list)
got = collections.Counter()
for s in scenes:
    size = s["attrs"]["objects"][0]["size"]
    clips = []
    for shp in SHAPES:
        a = copy.deepcopy(s["attrs"])
        a["objects"][0]["shape"] = shp
        clips.append(render_frames(a))
    codes = np.asarray(gen.video_tok.encode(np.stack(clips)))
    recon = gen.video_tok.decode(codes)
    for i, j in itertools.combinations(range(5), 2):
        diff[size].append(float((codes[i] != codes[j]).sum()))
    for shp, f in zip(SHAPES, recon, strict=True):
        want = dict(s["want"], shape=shp)
        sc = score_clip(f, want)
        acc[(size, shp)].append(sc["shape"])
        got[(shp, sc["objects"][0]["shape"] if sc["objects"] else None)] += 1
out = {
    "tokenizer": sys.argv[1],
    "scenes": len(scenes),
    "seed": seed,
    "codes_differing_between_two_shapes_of_320": {k: round(float(np.mean(v)), 1) for k, v in diff.items()},
    "min_codes_differing": {k: min(v) for k, v in diff.items()},
    "shape_kept": {f"{k[0]}/{k[1]}": round(float(np.mean(v)), 2) for k, v in sorted(acc.items())},
    "shape_kept_by_size": {sz: round(float(np.mean(sum((acc[(sz, s)] for s in SHAPES), []))), 2) for sz in diff},
    "confusion": {f"{a}->{b}": c for (a, b), c in sorted(got.items(), key=str)},
}
print(json.dumps(out))
