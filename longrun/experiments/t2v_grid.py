"""A picture of text-to-video samples of several evaluations of the same scenes, side by side.

    python longrun/experiments/t2v_grid.py OUT.png NAME=EVAL_DIR [NAME=EVAL_DIR ...] [--per-split 3]
                                           [--frames 0,8,16] [--run default]

Each row is one evaluation scene (its caption above it; the first ``--per-split`` seen scenes, then as
many held-out ones), each column group one evaluation's ``t2v_KEY_0.gif`` at the chosen frames. The
scenes are those of ``videopoet eval`` at its default seed, so every EVAL_DIR must come from an
evaluation with the same seed (their clips are matched by the scene's key).
"""

import argparse
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

from videopoet.trainer import evaluate, gallery, generation

CAPTION_H = 14
GAP = 6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("evals", nargs="+", metavar="NAME=EVAL_DIR")
    ap.add_argument("--per-split", type=int, default=3)
    ap.add_argument("--frames", default="0,8,16")
    ap.add_argument("--run", default="default", help="a run of the evaluations' clip geometry")
    args = ap.parse_args()
    columns = []
    for item in args.evals:
        name, sep, path = item.partition("=")
        if not sep or not os.path.isdir(path):
            sys.exit(f"t2v_grid: {item!r} is not NAME=EVAL_DIR")
        columns.append((name, path))
    picks = [int(x) for x in args.frames.split(",")]
    spec = generation.load_generator(args.run).spec
    scenes = evaluate.eval_scenes(spec, args.per_split)
    tiles: list[tuple[str, list[np.ndarray]]] = []
    for scene in scenes:
        row = []
        for _, path in columns:
            try:
                frames = gallery.read_clip(path, f"t2v_{scene['key']}_0", spec.height, spec.width)
            except gallery.GalleryError as e:
                sys.exit(f"t2v_grid: {e}")
            row.append(np.concatenate([frames[min(i, len(frames) - 1)] for i in picks], axis=1))
        tiles.append((f"[{scene['split']}] {scene['caption']}", row))
    th, tw = tiles[0][1][0].shape[:2]
    width = len(columns) * tw + (len(columns) - 1) * GAP
    height = CAPTION_H + len(tiles) * (CAPTION_H + th + GAP)
    canvas = Image.new("RGB", (width, height), (17, 17, 17))
    draw = ImageDraw.Draw(canvas)
    for c, (name, _) in enumerate(columns):
        draw.text((c * (tw + GAP) + 2, 1), name, fill=(230, 230, 230))
    y = CAPTION_H
    for caption, row in tiles:
        draw.text((2, y + 1), caption, fill=(200, 200, 200))
        for c, tile in enumerate(row):
            canvas.paste(Image.fromarray(tile), (c * (tw + GAP), y + CAPTION_H))
        y += CAPTION_H + th + GAP
    canvas.save(args.out, optimize=True)
    print(f"{args.out}: {len(tiles)} scenes x {len(columns)} evaluations, frames {picks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
