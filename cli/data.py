"""`videopoet data`: list, inspect, verify, diff and show versioned datasets.

    videopoet data list                      [--root DATASETS] [--json]
    videopoet data info    NAME@VERSION|PATH [--root DATASETS] [--json]
    videopoet data verify  NAME@VERSION|PATH [--root DATASETS] [--deep] [--json]   exit 1 on any problem
    videopoet data diff    A B               [--root DATASETS] [--json]
    videopoet data show    NAME@VERSION|PATH [--limit N] [--decode OUT_DIR] [--rejects]
    videopoet data tag     NAME@VERSION TAG  [--root DATASETS] [--json]   point NAME@TAG at a version (logged)
    videopoet data rm      NAME@VERSION      [--force] [--root DATASETS]  refused while tagged, unless --force
    videopoet data gc      [--older-than 24h] [--dry-run] [--root DATASETS] [--json]
    videopoet data log     NAME              [--root DATASETS] [--json]   publishes, removals, tag moves; oldest first

Wherever NAME@VERSION is taken, NAME@TAG and NAME@latest (the newest version) work too.

``--root`` defaults to ``$VIDEOPOET_ROOT``, else ``./datasets``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from videopoet.cli.common import add_json_flag, emit


def _store(args):
    from videopoet.schemas.store import DatasetStore

    return DatasetStore(args.root)


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _list(args) -> int:
    items = _store(args).list()
    lines = [f"{'dataset':32s} {'records':>9s} {'size':>10s}  {'created':20s}  {'fingerprint':16s}  tags"]
    for it in items:
        if "error" in it:
            lines.append(f"{it['ref']:32s} unreadable: {it['error']}")
            continue
        tags = ", ".join([*it["tags"], *(["(latest)"] if it["latest"] else [])])
        lines.append(
            f"{it['ref']:32s} {it['records']:>9d} {_fmt_bytes(it['bytes']):>10s}  {it['created']:20s}  "
            f"{it['fingerprint'][:16]}  {tags}"
        )
    if not items:
        lines = [f"no datasets under {args.root or os.environ.get('VIDEOPOET_ROOT') or './datasets'}"]
    emit(args, items, "\n".join(lines))
    return 0


def _info(args) -> int:
    info = _store(args).open(args.dataset).info()
    t = info["totals"]
    lines = [
        f"{info['ref']}  ({info['uri']})",
        f"  fingerprint  {info['fingerprint']}",
        f"  created      {info['created']}  by videopoet {info['package_version']}"
        + (f" on {info['runner'].get('name')}" if info["runner"].get("name") else ""),
        f"  inputs       {info['inputs']} shard(s), {t['samples_in']} sample(s)",
        f"  records      {t['records']} in {t['shards']} shard(s), {_fmt_bytes(t['bytes'])}",
        "  tokens       " + ", ".join(f"{k} {v:,}" for k, v in t["tokens"].items()),
        f"  rejects      {t['samples_rejected']}"
        + (
            " (" + ", ".join(f"{k} {v}" for k, v in info["rejects_by_reason"].items()) + ")"
            if info["rejects_by_reason"]
            else ""
        ),
    ]
    for kind, tok in info["tokenizers"].items():
        lines.append(f"  tokenizer    {kind}: {tok.get('name')} {str(tok.get('fingerprint'))[:16]}")
    emit(args, info, "\n".join(lines))
    return 0


def _verify(args) -> int:
    from videopoet.schemas.errors import VerifyError

    rep = _store(args).verify(args.dataset, deep=args.deep)
    if args.json:
        emit(args, rep.to_json())
    elif rep.ok:
        print(f"{rep.ref}: OK ({rep.checked_files} files re-hashed{', records read' if args.deep else ''})")
    else:
        for p in rep.problems:
            print(f"{rep.ref}: {p}")
    if not rep.ok:
        if args.json:
            return VerifyError.exit_code
        raise VerifyError(f"{rep.ref} failed verification: {len(rep.problems)} problem(s)")
    return 0


def _diff(args) -> int:
    from videopoet.schemas.manifest import diff_manifests

    st = _store(args)
    d = diff_manifests(st.open(args.a).manifest, st.open(args.b).manifest)
    lines = [
        f"{d['a']} -> {d['b']}: "
        + ("same content (fingerprints equal)" if d["same_fingerprint"] else "content differs")
    ]
    lin = d.get("lineage", {})
    if "inputs" in lin:
        for k, v in lin["inputs"].items():
            if v:
                lines.append(f"  inputs {k}: {', '.join(v)}")
    for kind, t in lin.get("tokenizers", {}).items():
        lines.append(
            f"  tokenizer {kind}: {t['name'][0]} {str(t['fingerprint'][0])[:12]} -> "
            f"{t['name'][1]} {str(t['fingerprint'][1])[:12]}"
        )
        for key, (x, y) in t["config"].items():
            lines.append(f"      {key}: {x!r} -> {y!r}")
    for key, (x, y) in lin.get("pipeline_config", {}).items():
        lines.append(f"  config {key}: {x!r} -> {y!r}")
    if "package_version" in lin:
        lines.append(f"  code version: {lin['package_version'][0]} -> {lin['package_version'][1]}")
    for key, (x, y) in lin.get("runner", {}).items():
        lines.append(f"  runner {key}: {x!r} -> {y!r} (not part of the fingerprint)")
    sh = d.get("shards", {})
    for k in ("added", "removed"):
        if sh.get(k):
            lines.append(f"  shards {k}: {', '.join(sh[k])}")
    for c in sh.get("changed", []):
        lines.append(f"  shard changed: {c['path']} ({c['records'][0]} -> {c['records'][1]} records)")
    for key, (x, y) in d.get("totals", {}).items():
        lines.append(f"  totals.{key}: {x} -> {y}")
    for key, (x, y) in d.get("rejects_by_reason", {}).items():
        lines.append(f"  rejects {key}: {x} -> {y}")
    emit(args, d, "\n".join(lines))
    return 0


def _load_tokenizer(modality: str, refs: dict[str, Any], override: str | None):
    """The tokenizer the manifest names (or ``override``), checked against the recorded fingerprint."""
    import dataclasses

    from videopoet.schemas.errors import DatasetError
    from videopoet.tokenizers import registry

    if modality not in refs:
        if override is None:
            raise DatasetError(f"the dataset records no {modality} tokenizer; pass --{modality}-tokenizer CKPT")
        return registry.resolve(override, {"video": "visual", "audio": "audio"}[modality])[0]
    ref = refs[modality] if override is None else dataclasses.replace(refs[modality], spec=override)
    return registry.load(ref, hint=f"pass --{modality}-tokenizer CKPT with the checkpoint it was made with")


def _show(args) -> int:
    from videopoet.schemas.record import record_summary
    from videopoet.schemas.shards import ShardReader

    ds = _store(args).open(args.dataset)
    if args.rejects:
        for i, r in enumerate(ds.iter_rejects()):
            if args.limit is not None and i >= args.limit:
                break
            sys.stdout.write(json.dumps(r, sort_keys=True) + "\n")
        return 0
    vt = at = None
    if args.decode:
        from videopoet.schemas.manifest import tokenizer_refs

        refs = tokenizer_refs(ds.manifest)
        os.makedirs(args.decode, exist_ok=True)
    n = 0
    for path in ds.shard_paths():
        with ShardReader(path) as reader:
            for rec in reader:
                if args.limit is not None and n >= args.limit:
                    return 0
                summ = record_summary(rec)
                if args.decode:
                    if rec.video is not None and vt is None:
                        vt = _load_tokenizer("video", refs, args.video_tokenizer)
                    if rec.audio is not None and at is None:
                        at = _load_tokenizer("audio", refs, args.audio_tokenizer)
                    summ["decoded"] = _decode_record(rec, vt, at, args.decode)
                sys.stdout.write(json.dumps(summ, sort_keys=True) + "\n")
                n += 1
    return 0


def _decode_record(rec, vt, at, out_dir: str) -> list[str]:
    """Write a record's tokens back as media: an image as ``KEY.jpg``, a clip as ``KEY.mp4`` (with its
    audio track), its audio also as ``KEY.wav``; returns the paths written."""
    import numpy as np

    from videopoet.media.encode import encode_jpeg, encode_mp4, encode_wav

    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in rec.key)
    written = []

    def put(ext: str, blob: bytes) -> None:
        path = os.path.join(out_dir, f"{safe}.{ext}")
        with open(path, "wb") as f:
            f.write(blob)
        written.append(path)

    wave = None
    if rec.audio is not None:
        wave = np.asarray(at.decode(rec.audio[None]))[0]
    if rec.video is not None:
        frames = np.asarray(vt.decode(rec.video[None]))[0]
        if frames.shape[0] == 1 and wave is None:
            put("jpg", encode_jpeg(frames[0]))
        else:
            fps = int(round(rec.lineage.fps)) or 8
            put("mp4", encode_mp4(frames, wave, fps=fps, audio_rate=at.config.sample_rate if at else 16000))
    if wave is not None:
        put("wav", encode_wav(wave, at.config.sample_rate))
    return written


def register(sub) -> None:
    p = sub.add_parser(
        "data",
        help="list, inspect, verify, diff and show datasets",
        description="Versioned token datasets under a root (default $VIDEOPOET_ROOT or ./datasets).",
    )
    dsub = p.add_subparsers(dest="action", metavar="ACTION")
    dsub.required = True

    def common(q):
        q.add_argument(
            "--root",
            default=None,
            metavar="DATASETS",
            help="datasets root (default $VIDEOPOET_ROOT, else ./datasets); local or fsspec URI",
        )
        add_json_flag(q)

    q = dsub.add_parser("list", help="every published name@version under the root")
    common(q)
    q.set_defaults(func=_list)
    q = dsub.add_parser("info", help="counts, tokens per modality, rejects by reason, lineage")
    q.add_argument("dataset", metavar="NAME@VERSION|PATH")
    common(q)
    q.set_defaults(func=_info)
    q = dsub.add_parser("verify", help="re-hash every shard; exit 1 naming each missing, truncated or altered one")
    q.add_argument("dataset", metavar="NAME@VERSION|PATH")
    q.add_argument("--deep", action="store_true", help="also read every record and check the counts")
    common(q)
    q.set_defaults(func=_verify)
    q = dsub.add_parser("diff", help="what changed between two versions (lineage, config keys, shards)")
    q.add_argument("a", metavar="A")
    q.add_argument("b", metavar="B")
    common(q)
    q.set_defaults(func=_diff)
    q = dsub.add_parser("show", help="records as JSON lines (key, lineage, token shapes)")
    q.add_argument("dataset", metavar="NAME@VERSION|PATH")
    q.add_argument("--limit", type=int, default=None, metavar="N", help="at most N records")
    q.add_argument(
        "--decode",
        default=None,
        metavar="OUT_DIR",
        help="detokenize each record to OUT_DIR (mp4 with audio, jpg, or wav) to look at",
    )
    q.add_argument("--video-tokenizer", default=None, metavar="CKPT", help="override the manifest's video tokenizer")
    q.add_argument("--audio-tokenizer", default=None, metavar="CKPT", help="override the manifest's audio tokenizer")
    q.add_argument("--rejects", action="store_true", help="show the rejects (JSON lines) instead of records")
    q.add_argument("--root", default=None, metavar="DATASETS", help="datasets root")
    q.set_defaults(func=_show)
    _register_lifecycle(dsub, common)


# ------------------------------------------------------------------------------ lifecycle: tag, rm, gc, log
def _tag(args) -> int:
    from videopoet.schemas import lifecycle

    ev = lifecycle.tag(_store(args), args.dataset, args.tag)
    name = args.dataset.split("@", 1)[0]
    if not ev["moved"]:
        text = f"{name}@{ev['tag']} already points at {name}@{ev['new']}"
    elif ev["old"] is None:
        text = f"{name}@{ev['tag']} -> {name}@{ev['new']}"
    else:
        text = f"{name}@{ev['tag']} moved: {ev['old']} -> {ev['new']}"
    emit(args, ev, text)
    return 0


def _rm(args) -> int:
    from videopoet.schemas import lifecycle

    out = lifecycle.remove(_store(args), args.dataset, force=args.force)
    extra = f" (and tags {', '.join(out['tags_removed'])})" if out["tags_removed"] else ""
    emit(args, out, f"removed {out['ref']}{extra}")
    return 0


def _gc(args) -> int:
    from videopoet.schemas import lifecycle

    items = lifecycle.gc(_store(args), lifecycle.parse_age(args.older_than), dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    lines = [f"{verb} {it.kind}: {it.path} ({_fmt_bytes(it.bytes)}, untouched {_fmt_age(it.age_s)})" for it in items]
    lines.append(f"{verb} {len(items)} item(s), {_fmt_bytes(sum(it.bytes for it in items))}")
    emit(args, {"dry_run": args.dry_run, "items": [it.to_json() for it in items]}, "\n".join(lines))
    return 0


def _fmt_age(s: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            return f"{s / n:.1f}{unit}"
    return f"{s:.0f}s"


def _log(args) -> int:
    from videopoet.schemas import lifecycle

    events = lifecycle.log(_store(args), args.name)
    lines = []
    for e in events:
        if e["event"] in ("tag", "untag"):
            what = f"tag {e['tag']}: {e.get('old') or '-'} -> {e.get('new') or '-'}"
        elif e["event"] == "publish":
            what = f"publish {e.get('version')} ({str(e.get('fingerprint'))[:16]})"
        else:
            tags = e.get("tags_removed") or []
            what = f"rm {e.get('version')}" + (f" (tags {', '.join(tags)})" if tags else "")
        lines.append(f"{e['time']}  {e.get('by', '?'):24s}  {what}")
    emit(args, events, "\n".join(lines) or f"no events for {args.name}")
    return 0


def _register_lifecycle(dsub, common) -> None:
    q = dsub.add_parser("tag", help="point NAME@TAG at a version; the move is logged")
    q.add_argument("dataset", metavar="NAME@VERSION", help="the version (or a tag, or NAME@latest) to point at")
    q.add_argument("tag", metavar="TAG")
    common(q)
    q.set_defaults(func=_tag)
    q = dsub.add_parser("rm", help="remove a published version (refused while a tag points at it)")
    q.add_argument("dataset", metavar="NAME@VERSION")
    q.add_argument("--force", action="store_true", help="also remove the tags that point at it (logged)")
    common(q)
    q.set_defaults(func=_rm)
    q = dsub.add_parser("gc", help="remove abandoned builds, orphaned files and old leases")
    q.add_argument(
        "--older-than",
        default="24h",
        metavar="AGE",
        help="only what nothing touched for AGE (90s, 30m, 24h, 7d; default 24h)",
    )
    q.add_argument("--dry-run", action="store_true", help="list what would be removed, with sizes; remove nothing")
    common(q)
    q.set_defaults(func=_gc)
    q = dsub.add_parser("log", help="a dataset's log: publishes, removals and tag moves, with time and user@host")
    q.add_argument("name", metavar="NAME")
    common(q)
    q.set_defaults(func=_log)
