"""The evaluation gallery: ``gallery.html`` with every prompt beside the clip the model made for it.

Generated clips are written as looping GIFs (``videopoet.media.encode.encode_gif``), enlarged by
whole-pixel repetition so that 32- or 64-pixel clips stay legible; video-to-audio results as mp4s
of the input video with the generated audio track. :func:`gallery_item` writes one result's files,
:func:`write_gallery` the page (a summary table on top, then one section per task).
"""

from __future__ import annotations

import html
import json
import math
import os
from typing import Any

import numpy as np

from videopoet.media.encode import encode_gif, encode_mp4

__all__ = ["gallery_item", "upscale", "write_gallery"]


def upscale(frames: np.ndarray, min_side: int = 128) -> np.ndarray:
    """uint8 [T,H,W,3] repeated by a whole factor until the short side is at least ``min_side``."""
    f = max(1, int(math.ceil(min_side / max(1, min(frames.shape[1:3])))))
    return np.repeat(np.repeat(frames, f, axis=1), f, axis=2) if f > 1 else frames


def _write(path: str, blob: bytes) -> None:
    with open(path, "wb") as f:
        f.write(blob)


def gallery_item(out_dir: str, name: str, task: str, scene: dict, res, row: dict, spec) -> dict[str, Any]:
    """Write one result's media under ``out_dir`` (named ``name``); returns its gallery entry."""
    item = {"task": task, "split": scene["split"], "caption": scene["caption"], "want": scene["want"], "row": row}
    if task == "v2a":  # the input video with the generated audio track
        _write(
            os.path.join(out_dir, f"{name}.mp4"),
            encode_mp4(upscale(scene["frames"]), np.clip(res.audio, -1, 1), int(round(spec.fps)), spec.sample_rate),
        )
        item["video"] = f"{name}.mp4"
        return item
    _write(os.path.join(out_dir, f"{name}.gif"), encode_gif(upscale(np.asarray(res.frames, np.uint8)), spec.fps))
    item["gif"] = f"{name}.gif"
    if task in ("i2v", "fp", "long", "stylize"):
        _write(os.path.join(out_dir, f"{name}_input.gif"), encode_gif(upscale(scene["frames"]), spec.fps))
        item["input_gif"] = f"{name}_input.gif"
    return item


def write_gallery(out_dir: str, items: list[dict], summary: str, info: dict, tasks: tuple[str, ...]) -> str:
    """``out_dir/gallery.html``: ``info`` and the ``summary`` table, then the items of each of ``tasks``."""
    esc = html.escape
    parts = [
        "<!doctype html><meta charset='utf-8'><title>videopoet eval</title>",
        "<style>body{font-family:sans-serif;background:#111;color:#ddd}td,th{padding:4px 8px;vertical-align:top}"
        "img,video{image-rendering:pixelated;width:160px}.ok{color:#6c6}.bad{color:#e66}"
        "section{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;width:340px}</style>",
        f"<h1>videopoet eval</h1><p>{esc(json.dumps(info, default=str))}</p>",
        f"<pre>{esc(summary)}</pre>",
    ]
    for task in tasks:
        sub = [it for it in items if it["task"] == task]
        if not sub:
            continue
        parts.append(f"<h2>{task}</h2><section>")
        for it in sub:
            media = ""
            if "input_gif" in it:
                media += f"<img src='{esc(it['input_gif'])}' title='input'>"
            if "gif" in it:
                media += f"<img src='{esc(it['gif'])}'>"
            if "video" in it:
                media += f"<video src='{esc(it['video'])}' controls loop></video>"
            marks = " ".join(
                f"<span class='{'ok' if v else 'bad'}'>{esc(k)}</span>"
                for k, v in it["row"].items()
                if isinstance(v, bool)
            )
            want = it["want"]
            parts.append(
                f"<figure>{media}<figcaption><b>[{esc(it['split'])}]</b> {esc(it['caption'])}<br>"
                f"want: {esc(want['colour'])} {esc(want['shape'])} {esc(want['motion'])}<br>{marks}"
                "</figcaption></figure>"
            )
        parts.append("</section>")
    path = os.path.join(out_dir, "gallery.html")
    with open(path, "w") as f:
        f.write("\n".join(parts))
    return path
