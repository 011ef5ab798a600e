"""Evaluation on the synthetic world: generate for scenes the corpus could have held, score them.

:func:`evaluate_model` renders single-object scenes of seen colour x shape combinations and of the
held-out (zero-shot) ones at the run's clip geometry, has the model generate text-to-video,
image-to-video, frame prediction and video-to-audio (on request also long video and stylization)
for them, grades every result with the scorer beside the synthetic world
(:mod:`videopoet.pipelines.synth.score`) and writes the gallery (:mod:`videopoet.trainer.gallery`).
:func:`table` is the seen vs held-out summary; :func:`check_targets` grades a report against the
figures the shipped model is meant to reach (:data:`TARGETS`).
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np

from videopoet.pipelines.synth import load_synth_config, render_audio, render_frames, sample_attrs, sample_key
from videopoet.pipelines.synth.score import analyze_audio, analyze_frames, object_truth, score_clip
from videopoet.trainer import gallery, generation
from videopoet.trainer.config import DEFAULT_EVAL_TASKS, EVAL_TASKS

__all__ = [
    "DEFAULT_EVAL_TASKS",
    "EVAL_TASKS",
    "TARGETS",
    "Target",
    "check_targets",
    "eval_scenes",
    "evaluate_model",
    "table",
    "verdicts",
    "wilson_interval",
]

SPLIT_LABEL = {"train": "seen", "heldout": "heldout"}


HELDOUT_SEED_OFFSET = 10_000
"""A held-out scene's sampling seed index is this plus its index in the split, so that a scene is
generated with the same seed whatever ``per_split`` is (the first scenes of a larger evaluation are
those of a smaller one)."""


def eval_scenes(spec, per_split: int = 8, seed: int = 1234) -> list[dict]:
    """Single-object scenes at the generation geometry: ``per_split`` of seen combinations (train
    split, new scenes: a seed the corpus does not use by default) and of held-out combinations. Each
    has a ``seed_index``: its samples are drawn with seeds ``seed + 1000 * seed_index + sample``."""
    scfg = load_synth_config(
        "small",
        [
            f"sizes=[[{spec.width},{spec.height}]]",
            "portrait_fraction=0.0",
            f"fps={int(round(spec.fps))}",
            f"frames={spec.frames}",
            "two_object_fraction=0.0",
            f"audio_rate={spec.sample_rate}",
        ],
    )
    out = []
    for split in ("train", "heldout"):
        for i in range(per_split):
            attrs = sample_attrs(scfg, seed, split, "video", i, sample_key(split, "video", i))
            obj = object_truth(attrs)[0]
            out.append(
                {
                    "split": SPLIT_LABEL[split],
                    "key": attrs["key"],
                    "caption": attrs["caption"],
                    "want": obj,
                    "frames": render_frames(attrs),
                    "audio": render_audio(attrs),
                    "attrs": attrs,
                    "seed_index": i if split == "train" else HELDOUT_SEED_OFFSET + i,
                }
            )
    return out


def restyled(scene: dict) -> dict:
    """The stylization request of a scene: the same scene with its object in another colour (the next
    one of the world's colours), as caption and as what the scorer should find."""
    import copy

    from videopoet.pipelines.synth.world import COLOURS, make_caption

    names = list(COLOURS)
    attrs = copy.deepcopy(scene["attrs"])
    obj = attrs["objects"][0]
    obj["colour"] = names[(names.index(obj["colour"]) + 1) % len(names)]
    return {**scene, "caption": make_caption(attrs), "want": {**scene["want"], "colour": obj["colour"]}}


def _mean(xs) -> float | None:
    xs = [float(x) for x in xs]
    return round(sum(xs) / len(xs), 4) if xs else None


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion (sound at small ``n`` and at 0 or 1)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, float(centre - half)), min(1.0, float(centre + half)))


def _aggregate(rows: list[dict], keys: tuple[str, ...]) -> dict[str, dict]:
    """Per split: each metric's mean, ``n``, and ``ci95`` (each metric's 95% interval)."""
    out: dict[str, dict] = {}
    for split in ("seen", "heldout"):
        sub = [r for r in rows if r["split"] == split]
        d: dict[str, Any] = {k: _mean(r[k] for r in sub if k in r) for k in keys}
        d["n"] = len(sub)
        d["ci95"] = {}
        for k in keys:
            vals = [bool(r[k]) for r in sub if k in r]
            if vals:
                d["ci95"][k] = [round(x, 4) for x in wilson_interval(sum(vals), len(vals))]
        out[split] = d
    return out


def evaluate_model(
    gen,
    out_dir: str,
    per_split: int = 8,
    samples: int = 1,
    seed: int = 1234,
    options=None,
    tasks: tuple[str, ...] = DEFAULT_EVAL_TASKS,
    progress=None,
    long_seconds: float = 10.0,
) -> dict[str, Any]:
    """Generate and score on the synthetic world; writes clips and ``gallery.html`` under ``out_dir``.

    * ``t2v``: the scene's caption -> colour / shape / motion of the generated object (seen vs held-out
      combinations: the zero-shot question);
    * ``i2v``: the scene's first frame -> ``kept`` (an object of the input's colour and shape is in the
      generated frames) and ``moves`` (it moves);
    * ``fp``: the scene's first latent frames -> ``kept`` and ``motion`` (the whole clip, given frames
      plus generated ones, moves the way the scene does: motion consistency);
    * ``v2a``: the scene's video -> ``audio_colour`` (the pitch of the object's colour) and
      ``audio_clicks`` (clicks iff it bounces);
    * ``long``: the scene's clip continued by repeated frame prediction to ``long_seconds`` ->
      ``colour`` and ``shape`` (the main object of the last clip-length of frames has the colour and
      shape the scorer finds at the start), ``kept`` (both): whether content survives the rounds;
    * ``stylize``: the scene's video (its flow, and depth when the run has it) with a caption naming
      another colour for its object (:func:`restyled`) -> ``colour`` (the generated object has the
      prompt's colour), ``shape`` and ``motion`` (it keeps the input's shape and motion), ``all``;
    * ``reference``: the same scores on the ground-truth clips and on their tokenizer reconstructions
      (the ceilings of what a perfect model could reach).
    """
    os.makedirs(out_dir, exist_ok=True)
    say = progress or (lambda msg: None)
    scenes = eval_scenes(gen.spec, per_split, seed)
    sp = gen.spec
    rows: dict[str, list[dict]] = {t: [] for t in tasks}
    items: list[dict] = []
    tasks = tuple(t for t in tasks if t != "v2a" or (gen.vocab.audio_levels and gen.audio_tok is not None))

    def reqs(task):
        out = []
        for s in scenes:
            for j in range(samples):
                r = generation.Request(task, seed=seed + 1000 * s["seed_index"] + j)
                if task == "t2v":
                    r.prompt = s["caption"]
                elif task == "stylize":
                    r.video, r.prompt = s["frames"], restyled(s)["caption"]
                elif task == "i2v":
                    r.image = s["frames"][0]
                else:
                    r.video = s["frames"]
                out.append((s, j, r))
        return out

    for task in tasks:
        say(f"eval: {task} ({len(scenes) * samples} samples)")
        if task == "long":
            for row, item in _long_rows(gen, scenes, samples, seed, options, long_seconds, out_dir):
                rows[task].append(row)
                items.append(item)
            continue
        batch = reqs(task)
        results = []
        for i in range(0, len(batch), 8):
            results += gen.generate([r for _, _, r in batch[i : i + 8]], options)
        for (s, j, _), res in zip(batch, results, strict=True):
            if task == "stylize":
                s = restyled(s)  # graded against (and shown with) the restyled caption
            want = s["want"]
            row: dict[str, Any] = {"split": s["split"], "key": s["key"], "sample": j}
            if task == "v2a":
                est = analyze_audio(res.audio, sp.sample_rate, max_tones=1)
                row["audio_colour"] = bool(est.colours) and est.colours[0] == want["colour"]
                row["audio_clicks"] = bool(est.clicks) == bool(want["bounces"])
                row["audio"] = est.to_dict()
            else:
                # i2v: the generated frames only (the first frame is the given image, kept as given)
                sc = score_clip(res.frames[res.given_frames :] if task == "i2v" else res.frames, want)
                if task in ("t2v", "stylize"):
                    row.update(colour=sc["colour"], shape=sc["shape"], motion=sc["motion"])
                    row["all"] = row["colour"] and row["shape"] and row["motion"]
                elif task == "i2v":
                    found = [o for o in sc["objects"] if o["colour"] == want["colour"]]
                    row["kept"] = bool(found) and found[0]["shape"] == want["shape"]
                    row["moves"] = bool(found) and found[0]["motion"] not in ("still", "unknown")
                else:
                    row["kept"] = sc["colour"] and sc["shape"]
                    row["motion"] = sc["motion"]
                row["objects"] = sc["objects"]
            rows[task].append(row)
            name = f"{task}_{s['key']}_{j}"
            items.append(gallery.gallery_item(out_dir, name, task, s, res, row, sp))
    report: dict[str, Any] = {}
    keys = {
        "t2v": ("colour", "shape", "motion", "all"),
        "i2v": ("kept", "moves"),
        "fp": ("kept", "motion"),
        "v2a": ("audio_colour", "audio_clicks"),
        "long": ("colour", "shape", "kept"),
        "stylize": ("colour", "shape", "motion", "all"),
    }
    for task in tasks:
        report[task] = _aggregate(rows[task], keys[task])
    report["reference"] = _reference(gen, scenes)
    report["targets"] = check_targets(report)
    # per sample: the verdicts and how many objects the scorer found (0: the model drew none), not the objects
    report["samples"] = {
        t: [{**{k: v for k, v in r.items() if k != "objects"}, **_found(r)} for r in rows[t]] for t in tasks
    }
    report["gallery"] = gallery.write_gallery(out_dir, items, table(report), gen.info, EVAL_TASKS)
    return report


def _found(row: dict) -> dict:
    return {"objects_found": len(row["objects"])} if "objects" in row else {}


def _long_rows(gen, scenes, samples: int, seed: int, options, seconds: float, out_dir: str):
    """(row, gallery item) per scene and sample of the long-video row: the scene's clip continued by
    :meth:`~videopoet.trainer.generation.Generator.long_videos` to ``seconds``, its last clip-length of
    frames graded against the main object the scorer finds at the start."""
    sp = gen.spec
    todo = [(s, j) for s in scenes for j in range(samples)]
    for i in range(0, len(todo), 8):
        chunk = todo[i : i + 8]
        clips = gen.long_videos(
            [None] * len(chunk),
            seconds,
            [seed + 1000 * s["seed_index"] + j for s, j in chunk],
            options,
            [s["frames"] for s, _ in chunk],
        )
        for (s, j), frames in zip(chunk, clips, strict=True):
            start = analyze_frames(s["frames"])
            end = analyze_frames(frames[-sp.frames :])
            row: dict[str, Any] = {"split": s["split"], "key": s["key"], "sample": j, "frames": int(frames.shape[0])}
            row["colour"] = bool(start and end and end[0].colour == start[0].colour)
            row["shape"] = row["colour"] and end[0].shape == start[0].shape
            row["kept"] = row["colour"] and row["shape"]
            row["objects"] = [o.to_dict() for o in end]
            result = generation.Result("long", frames, None, None, None, np.zeros(0, np.int32), sp.frames)
            item = gallery.gallery_item(out_dir, f"long_{s['key']}_{j}", "long", s, result, row, sp)
            yield row, item


def _reference(gen, scenes) -> dict[str, dict]:
    """Scores of the ground-truth clips and of their tokenizer reconstructions."""
    sp = gen.spec
    frames = np.stack([s["frames"] for s in scenes])
    recon = gen.video_tok.decode(gen.video_tok.encode(frames))
    out = {}
    for name, clips in (("ground_truth", frames), ("tokenizer", recon)):
        rows = []
        for s, f in zip(scenes, clips, strict=True):
            sc = score_clip(f, s["want"], s["audio"] if name == "ground_truth" else None, sp.sample_rate)
            r = {"split": s["split"], "colour": sc["colour"], "shape": sc["shape"], "motion": sc["motion"]}
            r["all"] = r["colour"] and r["shape"] and r["motion"]
            if "audio_colour" in sc:
                r["audio_colour"], r["audio_clicks"] = sc["audio_colour"], sc["audio_clicks"]
            rows.append(r)
        out[name] = _aggregate(
            rows,
            ("colour", "shape", "motion", "all") + (("audio_colour", "audio_clicks") if name == "ground_truth" else ()),
        )
    return out


class Target(NamedTuple):
    """A figure the model should reach: ``report[task][split][metric] >= threshold``, times the same
    metric of a ``reference`` row (``tokenizer``: what the tokenizer round trip scores) where named."""

    task: str
    split: str
    metric: str
    threshold: float
    reference: str | None = None


TARGETS = (
    Target("t2v", "seen", "colour", 0.8),
    Target("t2v", "seen", "motion", 0.8),
    Target("t2v", "seen", "shape", 0.8, reference="tokenizer"),
    Target("t2v", "heldout", "colour", 0.5),
    Target("t2v", "heldout", "motion", 0.5),
    Target("i2v", "seen", "kept", 0.8),
    Target("v2a", "seen", "audio_colour", 0.8),
)
"""What the shipped ``small`` model is meant to reach (text-to-video on seen and held-out
combinations, image-to-video keeping the given object, video-to-audio's pitch by colour)."""


def check_targets(report: dict, targets=TARGETS) -> list[dict]:
    """One row per target whose task the report holds: the figure and its 95% interval, the goal (a
    reference row's figure scaled by the threshold where the target names one), ``met`` (the figure
    reaches the goal), ``clears`` (the interval's lower bound does: met beyond sampling noise) and
    ``short_by`` (how far the figure is below the goal; 0 when met)."""
    rows = []
    for t in targets:
        if t.task not in report:
            continue
        agg = report[t.task][t.split]
        value, ci = agg[t.metric], agg["ci95"].get(t.metric)
        scale = report["reference"][t.reference][t.split][t.metric] if t.reference else 1.0
        goal = t.threshold * (scale or 0.0)
        met = value is not None and value >= goal - 1e-9
        rows.append(
            {
                "target": f"{t.task} {t.split} {t.metric} >= {goal:.2f}",
                "value": value,
                "ci95": ci,
                "goal": round(goal, 4),
                "met": met,
                "clears": ci is not None and ci[0] >= goal - 1e-9,
                "short_by": 0.0 if met or value is None else round(goal - value, 4),
            }
        )
    return rows


def verdicts(report: dict) -> dict[str, list[list]]:
    """Per task, each sample's ``[split, key, sample, {metric: bool}]``: what the scorer said of it,
    without the measurements behind it (what a rerun with the same seeds is compared on)."""
    out = {}
    for task, rows in report["samples"].items():
        out[task] = [
            [r["split"], r["key"], r["sample"], {k: v for k, v in r.items() if isinstance(v, bool)}] for r in rows
        ]
    return out


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def table(report: dict) -> str:
    """The seen vs held-out table as text: each figure with its 95% interval (n per split on top)."""
    n = {split: next((report[t][split]["n"] for t in EVAL_TASKS if t in report), 0) for split in ("seen", "heldout")}
    lines = [f"{'task':<10} {'metric':<14} {'seen (n=' + str(n['seen']) + ')':>17} {'heldout':>17}"]
    for task in [t for t in EVAL_TASKS if t in report] + ["reference"]:
        groups = report["reference"].items() if task == "reference" else [(task, report[task])]
        for name, agg in groups:
            label = f"ref:{name[:6]}" if task == "reference" else task
            for k in agg["seen"]:
                if k not in ("n", "ci95"):
                    seen, held = (_fmt_ci(agg[split], k) for split in ("seen", "heldout"))
                    lines.append(f"{label:<10} {k:<14} {seen:>17} {held:>17}")
    for row in report.get("targets", ()):
        verdict = "met" if row["met"] else f"short by {row['short_by']:.2f}"
        lines.append(f"target     {row['target']:<32} {_fmt(row['value']):>5}  {verdict}")
    return "\n".join(lines)


def _fmt_ci(agg: dict, key: str) -> str:
    """``0.38 [0.14,0.69]``: the mean and its 95% interval (``-`` without samples)."""
    ci = (agg.get("ci95") or {}).get(key)
    return _fmt(agg[key]) if ci is None else f"{_fmt(agg[key])} [{ci[0]:.2f},{ci[1]:.2f}]"
