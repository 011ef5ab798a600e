"""Write the synthetic corpus as webdataset tar shards plus ``corpus.json``.

Layout of ``OUT``::

    {split}-00000.tar ...   webdataset shards; members ``{key}.{ext}``, sorted, keys without dots
    corpus.json             seed, config, counts, shard sha256s, held-out list, corrupt samples

Sample keys: ``{split}_v{i:06d}`` (video: ``.mp4`` H.264 + AAC, ``.txt``, ``.json``),
``{split}_i{i:06d}`` (image: ``.jpg``, ``.txt``, ``.json``) and ``{split}_x{i:06d}`` (corrupt, with
``--with-corrupt``). The j-th sample (videos, then images, then corrupt ones) goes to shard
``j % shards``; a sample's content depends only on (seed, split, kind, i, config).

Corrupt samples (``CORRUPT_KINDS``) always have a ``{key}.json`` whose ``"corrupt"`` field names
the corruption; good samples have no ``"corrupt"`` field. ``corpus.json`` lists them as well:

* ``truncated_mp4``    the mp4 cut to a third of its bytes (no moov atom left)
* ``empty_mp4``        a zero-byte ``.mp4``
* ``not_video_mp4``    text and random bytes named ``.mp4``
* ``missing_caption``  a good ``.mp4`` and ``.json`` but no ``.txt``
* ``bad_utf8_caption`` a good ``.mp4``; the ``.txt`` is not valid UTF-8

Same arguments => byte-identical shards and ``corpus.json`` (tar headers carry a fixed mtime,
uid/gid 0 and no user names; see :mod:`videopoet.media.encode` for the codecs).
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from videopoet.media.encode import encode_jpeg, encode_mp4
from videopoet.pipelines.synth.config import SynthConfig, load_synth_config
from videopoet.pipelines.synth.render import render_sample
from videopoet.pipelines.synth.world import HELDOUT_COMBOS, SPLITS, _sample_rng, sample_attrs, world_description
from videopoet.schemas.config import config_fingerprint, to_dict
from videopoet.schemas.errors import VideoPoetError

__all__ = [
    "CORPUS_FORMAT",
    "CORRUPT_KINDS",
    "SynthError",
    "build_sample",
    "generate_corpus",
    "sample_key",
    "shard_name",
]

CORPUS_FORMAT = "videopoet-synth-corpus"
CORPUS_FORMAT_VERSION = 1
CORRUPT_KINDS = ("truncated_mp4", "empty_mp4", "not_video_mp4", "missing_caption", "bad_utf8_caption")
TAR_MTIME = 946684800  # 2000-01-01T00:00:00Z, fixed so shards are reproducible
_KIND_LETTER = {"video": "v", "image": "i", "corrupt": "x"}


class SynthError(VideoPoetError, ValueError):
    """Bad arguments to the synthetic corpus generator, or its output could not be written."""


def sample_key(split: str, kind: str, index: int) -> str:
    return f"{split}_{_KIND_LETTER[kind]}{index:06d}"


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.tar"


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _mp4(sample, cfg: SynthConfig) -> bytes:
    return encode_mp4(
        sample.frames,
        sample.audio,
        cfg.fps,
        cfg.audio_rate,
        crf=cfg.crf,
        preset=cfg.x264_preset,
        keyint=cfg.keyint,
        audio_bitrate=cfg.audio_bitrate,
    )


def build_sample(attrs: dict, cfg: SynthConfig) -> dict[str, bytes]:
    """The members (ext -> bytes) of a good sample from its attributes."""
    sample = render_sample(attrs)
    media = (
        ("mp4", _mp4(sample, cfg))
        if attrs["kind"] == "video"
        else ("jpg", encode_jpeg(sample.frames[0], cfg.jpeg_quality))
    )
    return {media[0]: media[1], "txt": sample.caption.encode("utf-8"), "json": _json_bytes(attrs)}


def _build_corrupt(attrs: dict, cfg: SynthConfig, kind: str, seed: int, split: str, index: int) -> dict[str, bytes]:
    attrs = {**attrs, "corrupt": kind}
    caption = attrs["caption"].encode("utf-8")
    members: dict[str, bytes] = {"json": _json_bytes(attrs), "txt": caption}
    if kind == "empty_mp4":
        members["mp4"] = b""
    elif kind == "not_video_mp4":
        rng = _sample_rng(seed, split, "corrupt", index)
        members["mp4"] = b"This is not a video.\n" + rng.integers(0, 256, 2048, dtype=np.uint8).tobytes()
    else:
        good = _mp4(render_sample(attrs), cfg)
        if kind == "truncated_mp4":
            members["mp4"] = good[: len(good) // 3]
        elif kind == "missing_caption":
            members["mp4"] = good
            del members["txt"]
        elif kind == "bad_utf8_caption":
            members["mp4"] = good
            members["txt"] = b"\xff\xfe" + caption[:8] + b"\xc3\x28" + caption[8:]
        else:
            raise SynthError(f"unknown corruption kind {kind!r}")
    return members


class _HashingWriter:
    def __init__(self, f):
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.f.write(data)


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), TAR_MTIME, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    tar.addfile(info, io.BytesIO(data))


# A planned sample: (key, kind, build) with build() -> (members, attrs).
_Plan = tuple[str, str, Callable[[], tuple[dict[str, bytes], dict]]]


def _plan(cfg: SynthConfig, seed: int, split: str, clips: int, images: int, with_corrupt: bool) -> list[_Plan]:
    plans: list[_Plan] = []

    def good(kind: str, i: int):
        key = sample_key(split, kind, i)

        def build():
            attrs = sample_attrs(cfg, seed, split, kind, i, key)
            return build_sample(attrs, cfg), attrs

        return key, kind, build

    def bad(ckind: str, i: int):
        key = sample_key(split, "corrupt", i)

        def build():
            attrs = sample_attrs(cfg, seed, split, "video", i, key, stream="corrupt")
            return _build_corrupt(attrs, cfg, ckind, seed, split, i), {**attrs, "corrupt": ckind}

        return key, "corrupt", build

    plans += [good("video", i) for i in range(clips)]
    plans += [good("image", i) for i in range(images)]
    if with_corrupt:
        n = 0
        for ckind in CORRUPT_KINDS:
            for _ in range(cfg.corrupt_per_kind):
                plans.append(bad(ckind, n))
                n += 1
    return plans


def _assign(plans: list[_Plan], shards: int) -> list[list[_Plan]]:
    """The j-th planned sample (videos, then images, then corrupt ones) goes to shard j % shards;
    within a shard, samples are sorted by key."""
    out: list[list[_Plan]] = [[] for _ in range(shards)]
    for j, p in enumerate(plans):
        out[j % shards].append(p)
    return [sorted(s, key=lambda p: p[0]) for s in out]


def _read_json(fs, path: str) -> dict | None:
    try:
        if not fs.exists(path):
            return None
        with fs.open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
        return data if isinstance(data, dict) and data.get("format") == CORPUS_FORMAT else None
    except (OSError, ValueError):
        return None


def generate_corpus(
    out: str,
    *,
    clips: int = 64,
    shards: int = 2,
    seed: int = 0,
    images: int = 0,
    split: str = "train",
    with_corrupt: bool = False,
    config: str | SynthConfig | dict | None = None,
    overrides: Sequence[str] = (),
    progress: bool | None = None,
) -> dict:
    """Write ``out/{split}-{i:05d}.tar`` shards and ``out/corpus.json``; return this split's entry.

    ``progress``: a tqdm bar on stderr (None: only when stderr is a terminal). ``out`` may be any
    fsspec URL. Shards this split wrote earlier into ``out`` that the new run does not write again
    are removed; other splits' entries in ``corpus.json`` are kept.
    """
    import fsspec
    from tqdm import tqdm

    cfg = load_synth_config(config, overrides)
    if split not in SPLITS:
        raise SynthError(f"unknown split {split!r} (one of {', '.join(SPLITS)})")
    for name, v in (("clips", clips), ("images", images), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise SynthError(f"--{name} must be a non-negative integer, got {v!r}")
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise SynthError(f"--shards must be a positive integer, got {shards!r}")
    plans = _plan(cfg, seed, split, clips, images, with_corrupt)
    if not plans:
        raise SynthError("nothing to generate: give --clips or --images > 0 (or --with-corrupt)")
    if shards > len(plans):
        raise SynthError(f"--shards {shards} is more than the {len(plans)} samples to write")

    try:
        fs, root = fsspec.core.url_to_fs(out)
        fs.makedirs(root, exist_ok=True)
    except (OSError, ValueError) as e:
        raise SynthError(f"cannot create output directory {out}: {e}") from None
    corpus_path = f"{root.rstrip('/')}/corpus.json"
    previous = _read_json(fs, corpus_path)

    t0 = time.perf_counter()
    orientation: Counter = Counter()
    n_objects: Counter = Counter()
    corrupt: list[dict] = []
    shard_entries: list[dict] = []
    bar = tqdm(
        total=len(plans),
        desc=f"synth {split}",
        unit="sample",
        file=sys.stderr,
        disable=(None if progress is None else not progress),
        leave=False,
    )
    try:
        for s, group in enumerate(_assign(plans, shards)):
            name = shard_name(split, s)
            final = f"{root.rstrip('/')}/{name}"
            tmp = f"{final}.partial"
            try:
                with fs.open(tmp, "wb") as f:
                    w = _HashingWriter(f)
                    with tarfile.open(fileobj=w, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
                        for key, kind, build in group:
                            members, attrs = build()
                            for ext in sorted(members):
                                _add_member(tar, f"{key}.{ext}", members[ext])
                            if kind == "corrupt":
                                corrupt.append({"key": key, "kind": attrs["corrupt"], "shard": name})
                            else:
                                orientation[f"{kind}_{attrs['orientation']}"] += 1
                                n_objects[f"{kind}_{len(attrs['objects'])}"] += 1
                            bar.update(1)
                fs.mv(tmp, final)
            except OSError as e:
                raise SynthError(f"cannot write shard {final}: {e}") from None
            shard_entries.append({"path": name, "samples": len(group), "bytes": w.size, "sha256": w.sha.hexdigest()})
    finally:
        bar.close()

    entry = {
        "seed": seed,
        "split": split,
        "config": to_dict(cfg),
        "config_fingerprint": config_fingerprint(cfg),
        "counts": {
            "samples": len(plans),
            "videos": clips,
            "images": images,
            "corrupt": dict(sorted(Counter(c["kind"] for c in corrupt).items())),
            "by_orientation": dict(sorted(orientation.items())),
            "by_object_count": dict(sorted(n_objects.items())),
        },
        "shards": shard_entries,
        "corrupt": sorted(corrupt, key=lambda c: c["key"]),
    }
    # Remove shards of this split that an earlier run wrote and this one did not.
    written = {e["path"] for e in shard_entries}
    if previous is not None:
        for old in previous.get("splits", {}).get(split, {}).get("shards", []):
            p = old.get("path") if isinstance(old, dict) else None
            if isinstance(p, str) and p not in written and "/" not in p and p.endswith(".tar"):
                try:
                    fs.rm(f"{root.rstrip('/')}/{p}")
                except (OSError, FileNotFoundError):
                    pass
    splits = dict(previous.get("splits", {})) if previous is not None else {}
    splits[split] = entry
    doc = {
        "format": CORPUS_FORMAT,
        "format_version": CORPUS_FORMAT_VERSION,
        "generator": "videopoet.pipelines.synth",
        "heldout_combos": [list(c) for c in HELDOUT_COMBOS],
        "corrupt_kinds": list(CORRUPT_KINDS),
        "world": world_description(),
        # The split just written, at top level for convenience; every split under "splits".
        **entry,
        "splits": dict(sorted(splits.items())),
    }
    try:
        with fs.open(corpus_path + ".partial", "wb") as f:
            f.write((json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8"))
        fs.mv(corpus_path + ".partial", corpus_path)
    except OSError as e:
        raise SynthError(f"cannot write {corpus_path}: {e}") from None
    return {**entry, "out": out, "corpus_json": corpus_path, "seconds": round(time.perf_counter() - t0, 3)}
