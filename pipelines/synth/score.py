"""Attribute scorer for the synthetic world: what did a clip draw, and what does its audio say?

Simple image and signal analysis (numpy only, no learned models), good enough to grade generated
clips automatically because the synthetic world (:mod:`videopoet.pipelines.synth.world`) is
simple: saturated objects from a fixed palette on dark backgrounds, a tone per object whose pitch
is set by its colour, and a click at every bounce.

Frames (uint8 ``[T, H, W, 3]``, any size; an image is ``T = 1``):

* **colour** - every pixel is assigned the nearest palette colour (``COLOURS``) when it lies within
  ``FG_DISTANCE`` of it; backgrounds lie >= 113 away from every palette colour, so what remains is
  the objects. A colour with enough pixels (in enough frames) is an object.
* **shape** - per object and frame, the mask is compared with each shape's template (the same
  outline the renderer draws, centred on the mask's centroid, with the radius that gives the mask's
  area) by IoU; the shape with the best IoU summed over the frames wins.
* **motion** - the centroid track: a reversal of direction along an axis, or a diagonal path, is
  ``bounce``; otherwise the dominant axis and sign of the net displacement give
  ``left/right/up/down``; a track that barely moves is ``still``.

Audio (float32 ``[N]`` mono):

* **pitch -> colour** - the spectrum's strongest peaks between 150 and 900 Hz, matched to the
  colours' pitches (a minor third apart, so the nearest in log frequency is unambiguous);
* **clicks** - the bounce click is a 1.8 kHz burst: frames whose energy in a narrow band around it
  stands far above that band's median are click onsets.

:func:`score_clip` grades frames (+ audio) against a scene's attributes (``{key}.json``) or a
prompt's wanted attributes; :func:`check_ground_truth` measures the scorer on corpus clips.

How well it grades ground-truth corpus clips (per attribute, at native size and at the
tokenizer's geometry) is measured by ``python -m videopoet.pipelines.synth.score --data 'D/*.tar'``;
the figures are in BENCHMARKS.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from videopoet.pipelines.synth.render import shape_distance
from videopoet.pipelines.synth.world import COLOURS, DIRECTIONS, SHAPES

__all__ = [
    "AudioEstimate",
    "ObjectEstimate",
    "FG_DISTANCE",
    "analyze_audio",
    "analyze_frames",
    "check_ground_truth",
    "detect_clicks",
    "estimate_pitches",
    "motion_from_track",
    "object_truth",
    "score_clip",
]

PALETTE_NAMES = tuple(COLOURS)
PALETTE = np.array([COLOURS[c].rgb for c in PALETTE_NAMES], np.float32)  # [C, 3]
PITCHES = np.array([COLOURS[c].pitch_hz for c in PALETTE_NAMES], np.float64)
SHAPE_NAMES = tuple(SHAPES)
FG_DISTANCE = 75.0  # RGB distance under which a pixel counts as palette colour (backgrounds: >= 113)
CLICK_HZ = 1800.0
# area of each shape's outline in units of r^2 (the renderer's geometry, see render.shape_distance)
_AREA = {
    "circle": math.pi,
    "square": 1.7**2,
    "diamond": 2 * 1.1**2,
    "triangle": 0.75 * math.sqrt(3) * 1.1**2,
    "cross": 2 * 2 * 0.7 - 0.7**2,
}


@dataclass
class ObjectEstimate:
    colour: str
    shape: str | None  # None when the object was never large enough to judge
    motion: str  # left | right | up | down | bounce | still | unknown
    pixels: float  # mean mask area (pixels) over the frames where it is seen
    frames_seen: int
    track: list[tuple[float, float]] = field(default_factory=list)  # centroid (x, y) per frame seen, in [0, 1]
    reversals: list[int] = field(default_factory=list)  # frame indices where the track turned around
    shape_scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "colour": self.colour,
            "shape": self.shape,
            "motion": self.motion,
            "pixels": round(self.pixels, 1),
            "frames_seen": self.frames_seen,
            "reversals": self.reversals,
            "shape_scores": {k: round(v, 3) for k, v in self.shape_scores.items()},
        }


# ----------------------------------------------------------------------------------------- frames
def palette_labels(frames: np.ndarray, max_distance: float = FG_DISTANCE) -> np.ndarray:
    """int8 [T, H, W]: index of the nearest palette colour, or -1 for background."""
    f = np.asarray(frames, np.float32)
    d2 = ((f[..., None, :] - PALETTE) ** 2).sum(-1)  # [T,H,W,C]
    idx = d2.argmin(-1)
    near = np.take_along_axis(d2, idx[..., None], -1)[..., 0] <= max_distance**2
    return np.where(near, idx, -1).astype(np.int8)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a bool [H, W] mask."""
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    return lab == (1 + int(np.argmax(sizes)))


def _shape_scores(mask: np.ndarray) -> dict[str, float]:
    """IoU of the mask with each shape's outline at the mask's centroid and area."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    area = float(len(xs))
    cy, cx = ys.mean() + 0.5, xs.mean() + 0.5
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xx + 0.5 - cx, yy + 0.5 - cy
    out = {}
    for s in SHAPE_NAMES:
        r = math.sqrt(area / _AREA[s])
        tmpl = shape_distance(s, dx, dy, r) < 0
        inter = float(np.count_nonzero(tmpl & mask))
        union = float(np.count_nonzero(tmpl | mask))
        out[s] = inter / union if union else 0.0
    return out


def motion_from_track(track: np.ndarray, min_move: float = 0.04) -> tuple[str, list[int]]:
    """(motion, reversal frame indices) from centroids [N, 2] in frame fractions (x, y)."""
    track = np.asarray(track, np.float64)
    if len(track) < 2:
        return ("still" if len(track) == 1 else "unknown"), []
    step = np.diff(track, axis=0)
    reversals: set[int] = set()
    span = np.ptp(track, axis=0)
    for a in range(2):
        v = step[:, a]
        # ignore jitter: a step counts when it moves by more than 0.5% of the frame
        sig = np.where(np.abs(v) > 0.005, np.sign(v), 0.0)
        nz = np.nonzero(sig)[0]
        if span[a] < min_move / 2:
            continue
        for i, j in zip(nz[:-1], nz[1:], strict=True):
            if sig[i] != sig[j]:
                # a real turn: the path on both sides of it moves by a visible amount
                before, after = track[: j + 1, a], track[j:, a]
                turn = track[j, a]
                if (
                    abs(turn - before.min() if sig[i] > 0 else before.max() - turn) > 0.02
                    and abs(after.max() - turn if sig[j] > 0 else turn - after.min()) > 0.02
                ):
                    reversals.add(int(j))
    net = track[-1] - track[0]
    path = np.abs(step).sum(0)
    if reversals:
        return "bounce", sorted(reversals)
    if max(abs(net[0]), abs(net[1])) < min_move:
        return "still", []
    ax = int(np.argmax(np.abs(net)))
    if min(path) > 0.35 * max(path) and min(abs(net)) > min_move:  # diagonal: only bouncers move diagonally
        return "bounce", []
    for name, (ddx, ddy) in DIRECTIONS.items():
        if (ddx if ax == 0 else ddy) == np.sign(net[ax]) and (ddy if ax == 0 else ddx) == 0:
            return name, []
    return "unknown", []  # pragma: no cover - every (axis, sign) has a direction


def analyze_frames(frames: np.ndarray, min_fraction: float = 0.002) -> list[ObjectEstimate]:
    """The objects in uint8 frames [T, H, W, 3] (or one image [H, W, 3]), largest first."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T,H,W,3], got shape {frames.shape}")
    t, h, w, _ = frames.shape
    labels = palette_labels(frames)
    min_px = max(4.0, min_fraction * h * w)
    objects: list[ObjectEstimate] = []
    for ci, name in enumerate(PALETTE_NAMES):
        counts = (labels == ci).reshape(t, -1).sum(1)
        seen = np.nonzero(counts >= min_px)[0]
        if len(seen) < max(1, math.ceil(0.3 * t)):
            continue
        track, scores, areas = [], {s: 0.0 for s in SHAPE_NAMES}, []
        tracked_frames = []
        for i in seen:
            full = labels[i] == ci
            m = _largest_component(full)
            # an object is one compact blob: scattered pixels of a colour (noise, texture) are not
            if m.sum() < min_px or m.sum() < 0.6 * full.sum():
                continue
            ys, xs = np.nonzero(m)
            track.append(((xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h))
            tracked_frames.append(int(i))
            areas.append(float(len(xs)))
            # shapes are judged on masks clear of the frame's edges (a clipped outline misleads)
            if ys.min() > 0 and xs.min() > 0 and ys.max() < h - 1 and xs.max() < w - 1:
                for s, v in _shape_scores(m).items():
                    scores[s] += v
        if len(track) < max(1, math.ceil(0.3 * t)):
            continue
        if not any(scores.values()):  # every mask touched an edge: judge the clipped ones
            for i in tracked_frames:
                for s, v in _shape_scores(_largest_component(labels[i] == ci)).items():
                    scores[s] += v
        total = sum(scores.values())
        shape = max(scores, key=scores.get) if total > 0 else None
        motion, rev = motion_from_track(np.array(track))
        objects.append(
            ObjectEstimate(
                colour=name,
                shape=shape,
                motion=motion,
                pixels=float(np.mean(areas)),
                frames_seen=len(track),
                track=[(round(float(x), 4), round(float(y), 4)) for x, y in track],
                reversals=[tracked_frames[r] for r in rev],
                shape_scores={s: v / max(1, len(track)) for s, v in scores.items()},
            )
        )
    objects.sort(key=lambda o: -o.pixels * o.frames_seen)
    return objects


# ------------------------------------------------------------------------------------------ audio
@dataclass
class AudioEstimate:
    pitches: list[float]  # strongest tone frequencies (Hz), loudest first
    colours: list[str]  # the palette colour of each pitch
    clicks: list[float]  # click onset times (seconds)
    rms: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "pitches": [round(p, 1) for p in self.pitches],
            "colours": self.colours,
            "clicks": [round(c, 3) for c in self.clicks],
            "rms": round(self.rms, 4),
        }


def nearest_colour_for_pitch(hz: float) -> str:
    return PALETTE_NAMES[int(np.argmin(np.abs(np.log2(PITCHES / max(hz, 1e-6)))))]


def estimate_pitches(
    wave: np.ndarray, rate: int = 16000, max_tones: int = 2, rel_threshold: float = 0.25
) -> list[float]:
    """Fundamental frequencies of the strongest tones (150-900 Hz), loudest first.

    The spectrum of the whole clip (Hann window) is searched for peaks near the palette pitches; a
    harmonic of a stronger tone (within 2% of an integer multiple) is not a tone of its own.
    """
    x = np.asarray(wave, np.float64).reshape(-1)
    if x.size < rate // 10 or not np.any(x):
        return []
    n = 1 << int(math.ceil(math.log2(x.size)))
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size), n))
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    # the candidate tones are the palette pitches: measure each one's peak within +-3%
    amps = []
    for p in PITCHES:
        band = (freqs > p * 0.97) & (freqs < p * 1.03)
        amps.append(spec[band].max() if band.any() else 0.0)
    amps = np.array(amps)
    order = np.argsort(-amps)
    top = amps[order[0]]
    out: list[float] = []
    for k in order:
        if amps[k] < rel_threshold * top or len(out) >= max_tones:
            break
        p = PITCHES[k]
        if any(abs(p / q - round(p / q)) < 0.02 and round(p / q) >= 2 for q in out):
            continue
        band = (freqs > p * 0.97) & (freqs < p * 1.03)
        out.append(float(freqs[band][np.argmax(spec[band])]))
    return out


def detect_clicks(
    wave: np.ndarray, rate: int = 16000, hop_s: float = 0.01, ratio: float = 0.035, min_gap_s: float = 0.12
) -> list[float]:
    """Onset times (s) of bounce clicks: bursts around 1.8 kHz over the stationary spectrum.

    The tones are stationary, so each frequency bin's median over time is their spectrum; what a
    frame has above it in the click band is transient energy. A frame whose transient band energy
    exceeds ``ratio`` times the median frame energy is a click (the first 30 ms and the last 30 ms,
    the fade-in and -out, are skipped).
    """
    x = np.asarray(wave, np.float64).reshape(-1)
    hop = max(1, int(hop_s * rate))
    win = 2 * hop
    if x.size < 4 * win:
        return []
    nfr = (x.size - win) // hop + 1
    idx = np.arange(win)[None, :] + hop * np.arange(nfr)[:, None]
    mag = np.abs(np.fft.rfft(x[idx] * np.hanning(win), axis=1))
    freqs = np.fft.rfftfreq(win, 1.0 / rate)
    band = (freqs >= CLICK_HZ - 100) & (freqs <= CLICK_HZ + 100)
    resid = np.maximum(mag[:, band] - np.median(mag[:, band], axis=0), 0.0)
    e = (resid**2).sum(1)
    level = max(float(np.median((mag**2).sum(1))), 1e-12)
    edge = int(math.ceil(0.03 * rate / hop))
    hits = [i for i in np.nonzero(e > ratio * level)[0] if edge <= i < nfr - edge]
    out: list[float] = []
    last = -1e9
    for i in hits:
        t = i * hop / rate
        if t - last >= min_gap_s:
            out.append(round(t, 3))
            last = t
    return out


def analyze_audio(wave: np.ndarray, rate: int = 16000, max_tones: int = 2) -> AudioEstimate:
    x = np.asarray(wave, np.float32).reshape(-1)
    pitches = estimate_pitches(x, rate, max_tones=max_tones)
    return AudioEstimate(
        pitches=pitches,
        colours=[nearest_colour_for_pitch(p) for p in pitches],
        clicks=detect_clicks(x, rate),
        rms=float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0,
    )


# ---------------------------------------------------------------------------------------- scoring
def object_truth(attrs: dict, start_s: float = 0.0, seconds: float | None = None) -> list[dict]:
    """The objects of a scene as the scorer sees them: colour, shape, motion, bounces in the window."""
    end = float("inf") if seconds is None else start_s + seconds
    out = []
    for o in attrs["objects"]:
        out.append(
            {
                "colour": o["colour"],
                "shape": o["shape"],
                "motion": o["motion"],
                "bounces": [b - start_s for b in o.get("bounces", ()) if start_s < b <= end],
            }
        )
    return out


def score_clip(
    frames: np.ndarray, want: dict | list[dict], audio: np.ndarray | None = None, audio_rate: int = 16000
) -> dict[str, Any]:
    """Grade frames (+ audio) against the wanted object(s) {colour, shape, motion}.

    Returns per-attribute booleans for the first wanted object (the one a single-object prompt
    names): ``colour`` (the dominant object, the largest, has that colour; with several wanted
    objects, an object of that colour was found), ``shape`` and ``motion`` (of that
    object), and with audio ``audio_colour`` (the loudest tone is that colour's pitch) and
    ``audio_clicks`` (clicks present iff the wanted object bounces off a wall in the clip; only
    when ``bounces`` is given).
    """
    wants = [want] if isinstance(want, dict) else list(want)
    objs = analyze_frames(frames)
    first = wants[0]
    # single-object prompts: the dominant object must be the wanted one; with several wanted
    # objects, any detected object of the first wanted colour counts
    pool = objs if len(wants) > 1 else objs[:1]
    found = next((o for o in pool if o.colour == first["colour"]), None)
    res: dict[str, Any] = {
        "colour": found is not None,
        "shape": bool(found is not None and "shape" in first and found.shape == first["shape"]),
        "motion": bool(found is not None and "motion" in first and found.motion == first["motion"]),
        "objects": [o.to_dict() for o in objs],
    }
    if audio is not None:
        est = analyze_audio(audio, audio_rate, max_tones=len(wants))
        res["audio_colour"] = bool(est.colours) and est.colours[0] in {w["colour"] for w in wants}
        if all("bounces" in w for w in wants):
            res["audio_clicks"] = bool(est.clicks) == any(len(w["bounces"]) > 0 for w in wants)
        res["audio"] = est.to_dict()
    return res


# ------------------------------------------------------------------------------ ground-truth check
def iter_corpus(paths: list[str]):
    """(attrs, mp4 bytes) of the good video samples in synthetic-corpus webdataset shards."""
    import json
    import tarfile

    for path in paths:
        with tarfile.open(path, "r") as tar:
            members: dict[str, dict[str, bytes]] = {}
            for m in tar.getmembers():
                if not m.isfile():
                    continue
                key, _, ext = m.name.partition(".")
                members.setdefault(key, {})[ext] = tar.extractfile(m).read()
        for key in sorted(members):
            mem = members[key]
            if "json" not in mem or "mp4" not in mem:
                continue
            attrs = json.loads(mem["json"])
            if attrs.get("corrupt") or attrs.get("kind") != "video":
                continue
            yield attrs, mem["mp4"]


def check_ground_truth(
    paths: list[str],
    resize: tuple[int, int] | None = None,
    clip_frames: int | None = None,
    fps: float = 8.0,
    limit: int | None = None,
) -> dict[str, Any]:
    """Scorer accuracy on corpus clips: per attribute, the fraction graded right.

    ``resize`` (height, width) scales + centre-crops with the pipelines' :func:`resize_center_crop`;
    ``clip_frames`` keeps the first frames at ``fps`` (the tokenizer's 17 frames at 8 fps). Colour,
    shape and motion are graded on single-object scenes per object (every object of two-object
    scenes counts for colour); audio colour and clicks on every clip. An object cropped out of a
    resized frame is not counted.
    """
    from videopoet.media import decode_frames, extract_audio_track, resize_center_crop

    hits: dict[str, list[bool]] = {k: [] for k in ("colour", "shape", "motion", "audio_colour", "audio_clicks")}
    failures: list[dict] = []
    n = 0
    for attrs, blob in iter_corpus(paths):
        if limit is not None and n >= limit:
            break
        n += 1
        frames = decode_frames(blob, fps=fps).frames
        seconds = None
        if clip_frames:
            frames = frames[:clip_frames]
            seconds = len(frames) / fps
        if resize:
            frames = resize_center_crop(frames, *resize)
        truth = object_truth(attrs, 0.0, seconds)
        objs = analyze_frames(frames)
        by_colour = {o.colour: o for o in objs}
        for t in truth:
            hits["colour"].append(t["colour"] in by_colour)
            if len(truth) == 1 and t["colour"] in by_colour:
                o = by_colour[t["colour"]]
                hits["shape"].append(o.shape == t["shape"])
                hits["motion"].append(o.motion == t["motion"])
                if o.shape != t["shape"] or o.motion != t["motion"]:
                    failures.append({"key": attrs["key"], "truth": t, "got": o.to_dict()})
        wave = extract_audio_track(blob, 16000)
        if wave is not None:
            if seconds is not None:
                wave = wave[: int(round(seconds * 16000))]
            est = analyze_audio(wave, 16000, max_tones=len(truth))
            hits["audio_colour"].append(set(est.colours) == {t["colour"] for t in truth})
            want_click = any(t["bounces"] for t in truth)
            hits["audio_clicks"].append(bool(est.clicks) == want_click)
            if set(est.colours) != {t["colour"] for t in truth} or bool(est.clicks) != want_click:
                failures.append({"key": attrs["key"], "truth": truth, "audio": est.to_dict()})
    acc = {k: (round(float(np.mean(v)), 4) if v else None) for k, v in hits.items()}
    return {"clips": n, "accuracy": acc, "counts": {k: len(v) for k, v in hits.items()}, "failures": failures}


def _main(argv=None) -> int:
    """``python -m videopoet.pipelines.synth.score --data 'DIR/*.tar' [--fps 8] [--clip-frames 17] [--resize 64]``:
    the scorer's accuracy on ground-truth corpus clips (``videopoet corpus synth`` shards), as JSON."""
    import argparse
    import glob

    ap = argparse.ArgumentParser(description=_main.__doc__)
    ap.add_argument("--data", required=True, help="glob of synthetic-corpus shards")
    ap.add_argument("--fps", type=float, default=8.0)
    ap.add_argument("--clip-frames", type=int, default=None)
    ap.add_argument("--resize", type=int, default=None, help="square side to resize + centre-crop to")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args(argv)
    paths = sorted(glob.glob(args.data))
    if not paths:
        ap.error(f"no shards match {args.data!r}")
    r = check_ground_truth(
        paths,
        resize=(args.resize, args.resize) if args.resize else None,
        clip_frames=args.clip_frames,
        fps=args.fps,
        limit=args.limit,
    )
    print(
        json.dumps(
            {
                "data": args.data,
                "fps": args.fps,
                "clip_frames": args.clip_frames,
                "resize": args.resize,
                "clips": r["clips"],
                "accuracy": r["accuracy"],
                "counts": r["counts"],
                "failures": r["failures"][:10],
            },
            indent=1,
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
