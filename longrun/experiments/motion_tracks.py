"""How far the text-to-video samples of evaluations move, against how far their scenes move.

    python longrun/experiments/motion_tracks.py NAME=EVAL_DIR [NAME=EVAL_DIR ...] [--scenes 32]
                                                [--seed 1234] [--run default]

For each evaluation (the clip directory of ``videopoet eval``; its ``t2v_KEY_0.gif`` matched by the
scene's key, so the evaluations must share ``--seed``), over the scenes whose caption names a straight
motion (left, right, up, down): the scorer's motion of the dominant object against the caption's (a
confusion row per wanted motion), and the object's net displacement along the wanted direction (frame
fractions, first to last tracked frame) beside the ground-truth render's. A model that copies the
previous latent frame draws an object that hardly moves; the scorer then reads its jitter at the latent
frame boundaries as ``bounce``.
"""

import argparse
import collections
import os
import sys

import numpy as np

from videopoet.pipelines.synth.score import analyze_frames
from videopoet.pipelines.synth.world import DIRECTIONS
from videopoet.trainer import evaluate, gallery, generation

FOUND = ("left", "right", "up", "down", "bounce", "still", "none")


def along(track, motion: str) -> float:
    """Net displacement of a track [(x, y), ...] in the direction ``motion`` names."""
    dx, dy = DIRECTIONS[motion]
    (x0, y0), (x1, y1) = track[0], track[-1]
    return (x1 - x0) * dx + (y1 - y0) * dy


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("evals", nargs="+", metavar="NAME=EVAL_DIR")
    ap.add_argument("--scenes", type=int, default=32, help="scenes per split of the evaluations")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--run", default="default", help="a run of the evaluations' clip geometry")
    args = ap.parse_args()
    spec = generation.load_generator(args.run).spec
    scenes = [s for s in evaluate.eval_scenes(spec, args.scenes, args.seed) if s["want"]["motion"] in DIRECTIONS]
    truth = [along(analyze_frames(s["frames"])[0].track, s["want"]["motion"]) for s in scenes]
    print(f"{len(scenes)} scenes with a straight motion; the renders move {np.mean(truth):.2f} (mean net displacement)")
    for item in args.evals:
        name, sep, path = item.partition("=")
        if not sep or not os.path.isdir(path):
            sys.exit(f"motion_tracks: {item!r} is not NAME=EVAL_DIR")
        confusion: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        moved = []
        for scene in scenes:
            try:
                clip = gallery.read_clip(path, f"t2v_{scene['key']}_0", spec.height, spec.width)
            except gallery.GalleryError as e:
                sys.exit(f"motion_tracks: {e}")
            objects = analyze_frames(clip)
            want = scene["want"]["motion"]
            confusion[want]["none" if not objects else objects[0].motion] += 1
            if objects:
                moved.append(along(objects[0].track, want))
        print(
            f"\n{name}: object found in {len(moved)} of {len(scenes)}; net displacement along the caption's "
            f"direction {np.mean(moved):.2f} (median {np.median(moved):.2f}; renders {np.mean(truth):.2f})"
        )
        print("| wanted \\ found | " + " | ".join(FOUND) + " |")
        print("|---|" + "---|" * len(FOUND))
        for want in DIRECTIONS:
            print(f"| {want} | " + " | ".join(str(confusion[want][f]) for f in FOUND) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
