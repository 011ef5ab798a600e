"""The evaluation gallery: ``gallery.html`` with every prompt beside the clip the model made for it.

Generated clips are written as looping GIFs (``videopoet.media.encode.encode_gif``), enlarged by
whole-pixel repetition so that 32- or 64-pixel clips stay legible; video-to-audio results as mp4s
of the input video with the generated audio track. :func:`gallery_item` writes one result's files,
:func:`write_gallery` the page (a summary table on top, then one section per task) and its items as
``gallery.json``, from which :func:`write_side_by_side` puts several evaluations of the same scenes
(two models, say) on one page, a row per prompt and a column per evaluation.
"""

from __future__ import annotations

import html
import json
import math
import os
from typing import Any

import numpy as np

from videopoet.media import decode_gif
from videopoet.media.encode import encode_gif, encode_mp4
from videopoet.schemas.errors import VideoPoetError


class GalleryError(VideoPoetError):
    """An evaluation directory without a readable ``gallery.json``."""


__all__ = ["GalleryError", "gallery_item", "read_clip", "upscale", "write_gallery", "write_side_by_side"]


def upscale(frames: np.ndarray, min_side: int = 128) -> np.ndarray:
    """uint8 [T,H,W,3] repeated by a whole factor until the short side is at least ``min_side``."""
    f = max(1, int(math.ceil(min_side / max(1, min(frames.shape[1:3])))))
    return np.repeat(np.repeat(frames, f, axis=1), f, axis=2) if f > 1 else frames


def read_clip(eval_dir: str, name: str, height: int, width: int) -> np.ndarray:
    """The clip ``name`` of an evaluation directory (``t2v_KEY_SAMPLE``, as :func:`gallery_item` names it)
    back at its own ``height`` x ``width`` pixels: uint8 [T,H,W,3], the GIF's enlargement undone."""
    path = os.path.join(eval_dir, f"{name}.gif")
    if not os.path.isfile(path):
        raise GalleryError(f"{path} is missing (an evaluation of other scenes?)")
    with open(path, "rb") as f:
        clip = decode_gif(f.read())
    return clip[:, :: max(1, clip.shape[1] // height), :: max(1, clip.shape[2] // width)]


def _write(path: str, blob: bytes) -> None:
    with open(path, "wb") as f:
        f.write(blob)


def gallery_item(out_dir: str, name: str, task: str, scene: dict, res, row: dict, spec) -> dict[str, Any]:
    """Write one result's media under ``out_dir`` (named ``name``); returns its gallery entry."""
    item = {
        "name": name,
        "task": task,
        "split": scene["split"],
        "caption": scene["caption"],
        "want": scene["want"],
        "row": row,
    }
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
            media = f"<img src='{esc(it['input_gif'])}' title='input'>" if "input_gif" in it else ""
            media += _media(it, "")
            marks = _marks(it["row"])
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
    with open(os.path.join(out_dir, "gallery.json"), "w") as f:
        json.dump({"info": info, "summary": summary, "items": items}, f, indent=1, default=str)
        f.write("\n")
    return path


def _media(it: dict, prefix: str) -> str:
    esc = html.escape
    out = ""
    if "gif" in it:
        out += f"<img src='{esc(prefix + it['gif'])}'>"
    if "video" in it:
        out += f"<video src='{esc(prefix + it['video'])}' controls loop></video>"
    return out


def _marks(row: dict) -> str:
    esc = html.escape
    return " ".join(
        f"<span class='{'ok' if v else 'bad'}'>{esc(k)}</span>" for k, v in row.items() if isinstance(v, bool)
    )


def write_side_by_side(path: str, columns: list[tuple[str, str]], tasks: tuple[str, ...]) -> str:
    """``path``: one page with a row per prompt (task, split, caption) and a column per ``(label,
    eval_dir)`` of ``columns``, each cell that evaluation's clip and its scores (the media stay in their
    directories, linked relative to ``path``). A prompt one evaluation did not make shows as such."""
    esc = html.escape
    base = os.path.dirname(os.path.abspath(path))
    loaded = []
    for label, eval_dir in columns:
        src = os.path.join(eval_dir, "gallery.json")
        try:
            with open(src) as f:
                page = json.load(f)
            by_name = {it["name"]: it for it in page["items"]}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise GalleryError(f"{src}: not an evaluation's gallery ({type(e).__name__}: {e})") from None
        prefix = os.path.relpath(os.path.abspath(eval_dir), base).replace(os.sep, "/") + "/"
        loaded.append((label, prefix, page, by_name))
    parts = [
        "<!doctype html><meta charset='utf-8'><title>videopoet eval, side by side</title>",
        "<style>body{font-family:sans-serif;background:#111;color:#ddd}td,th{padding:4px 8px;vertical-align:top;"
        "text-align:left}img,video{image-rendering:pixelated;width:160px}.ok{color:#6c6}.bad{color:#e66}</style>",
        "<h1>videopoet eval, side by side</h1>",
    ]
    for label, _, page, _ in loaded:
        parts.append(f"<h3>{esc(label)}</h3><p>{esc(json.dumps(page.get('info', {}), default=str))}</p>")
        parts.append(f"<pre>{esc(str(page.get('summary', '')))}</pre>")
    head = "".join(f"<th>{esc(label)}</th>" for label, _, _, _ in loaded)
    for task in tasks:
        names: list[str] = []
        for _, _, _, by_name in loaded:
            names += [n for n, it in by_name.items() if it["task"] == task and n not in names]
        if not names:
            continue
        parts.append(f"<h2>{esc(task)}</h2><table><tr><th>prompt</th>{head}</tr>")
        for name in names:
            first = next(by_name[name] for _, _, _, by_name in loaded if name in by_name)
            given = [prefix + b[name]["input_gif"] for _, prefix, _, b in loaded if "input_gif" in b.get(name, {})]
            want = first["want"]
            prompt = (
                f"<b>[{esc(first['split'])}]</b> {esc(first['caption'])}<br>"
                f"want: {esc(want['colour'])} {esc(want['shape'])} {esc(want['motion'])}"
            )
            if given:  # the scene's input is the same for every column: shown once
                prompt += f"<br><img src='{esc(given[0])}' title='input'>"
            cells = "".join(
                f"<td>{_media(by_name[name], prefix)}<br>{_marks(by_name[name]['row'])}</td>"
                if name in by_name
                else "<td>not evaluated</td>"
                for _, prefix, _, by_name in loaded
            )
            parts.append(f"<tr><td>{prompt}</td>{cells}</tr>")
        parts.append("</table>")
    with open(path, "w") as f:
        f.write("\n".join(parts))
    return path
