"""The scorer on tokenizer round trips of the evaluation scenes (the eval's ``ref:tokenizer`` rows) for
any video tokenizer, by split and by object size, with each clip's PSNR.

    python longrun/experiments/tokenizer_roundtrip.py shipped|TOKENIZER_DIR SCENES_PER_SPLIT SEED
"""

import collections
import json
import sys

import numpy as np

from videopoet.pipelines.synth.score import score_clip
from videopoet.tokenizers.magvit2.evaluate import psnr
from videopoet.trainer import evaluate, generation

tok = sys.argv[1] if sys.argv[1] != "shipped" else None
n, seed = int(sys.argv[2]), int(sys.argv[3])
gen = generation.Generator.from_run("trainer/assets/small", video_tokenizer=tok)
scenes = evaluate.eval_scenes(gen.spec, per_split=n, seed=seed)
clips = np.stack([s["frames"] for s in scenes])
codes = np.concatenate([np.asarray(gen.video_tok.encode(clips[i : i + 8])) for i in range(0, len(clips), 8)])
recon = np.concatenate([np.asarray(gen.video_tok.decode(codes[i : i + 8])) for i in range(0, len(codes), 8)])
acc = collections.defaultdict(list)
for s, frames in zip(scenes, recon, strict=True):
    score = score_clip(frames, s["want"])
    size = s["attrs"]["objects"][0]["size"]
    for key in ("colour", "shape", "motion"):
        acc[(s["split"], key)].append(float(score[key]))
        acc[(f"size:{size}", key)].append(float(score[key]))
    acc[(s["split"], "psnr")].append(psnr(frames, s["frames"]))
out = {
    "tokenizer": sys.argv[1],
    "scenes": len(scenes),
    "seed": seed,
    "latent": list(codes.shape[1:]),
    **{f"{group}/{key}": round(float(np.mean(v)), 3) for (group, key), v in sorted(acc.items())},
    "n": {group: len(v) for (group, key), v in acc.items() if key == "colour"},
}
print(json.dumps(out))
