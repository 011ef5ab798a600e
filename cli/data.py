"""`videopoet data`: list, inspect, verify, diff and show versioned datasets.

    videopoet data list                      [--root DATASETS] [--json]
    videopoet data info    NAME@VERSION|PATH [--root DATASETS] [--json]
    videopoet data verify  NAME@VERSION|PATH [--root DATASETS] [--deep] [--json]   exit 1 on any problem
    videopoet data diff    A B               [--root DATASETS] [--json]
    videopoet data show    NAME@VERSION|PATH [--limit N] [--decode OUT_DIR] [--rejects]

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
    lines = [f"{'dataset':32s} {'records':>9s} {'size':>10s}  created               fingerprint"]
    for it in items:
        if "error" in it:
            lines.append(f"{it['ref']:32s} unreadable: {it['error']}")
            continue
        lines.append(f"{it['ref']:32s} {it['records']:>9d} {_fmt_bytes(it['bytes']):>10s}  {it['created']}  "
                     f"{it['fingerprint'][:16]}")
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
        + (" (" + ", ".join(f"{k} {v}" for k, v in info["rejects_by_reason"].items()) + ")"
           if info["rejects_by_reason"] else ""),
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
    lines = [f"{d['a']} -> {d['b']}: " + ("same content (fingerprints equal)" if d["same_fingerprint"]
                                           else "content differs")]
    lin = d.get("lineage", {})
    if "inputs" in lin:
        for k, v in lin["inputs"].items():
            if v:
                lines.append(f"  inputs {k}: {', '.join(v)}")
    for kind, t in lin.get("tokenizers", {}).items():
        lines.append(f"  tokenizer {kind}: {t['name'][0]} {str(t['fingerprint'][0])[:12]} -> "
                     f"{t['name'][1]} {str(t['fingerprint'][1])[:12]}")
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


def _load_tokenizer(kind: str, entry: dict[str, Any], override: str | None):
    """The tokenizer a manifest names, checked against its recorded fingerprint."""
    from videopoet.schemas.errors import DatasetError

    source = override or entry.get("source") or "default"
    if kind == "video":
        from videopoet.tokenizers import magvit2 as mod
    elif kind == "audio":
        from videopoet.tokenizers import soundstream as mod
    else:
        raise DatasetError(f"cannot decode {kind} tokens")
    tok = mod.default() if source == "default" else mod.load(source)
    want = entry.get("fingerprint")
    if want and tok.fingerprint != want:
        raise DatasetError(
            f"the {kind} tokenizer {source!r} has fingerprint {tok.fingerprint[:12]}, but the dataset was made "
            f"with {want[:12]}; pass --{kind}-tokenizer PATH with the right checkpoint")
    return tok


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
        toks = ds.manifest["lineage"].get("tokenizers", {})
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
                        vt = _load_tokenizer("video", toks.get("video", {}), args.video_tokenizer)
                    if rec.audio is not None and at is None:
                        at = _load_tokenizer("audio", toks.get("audio", {}), args.audio_tokenizer)
                    summ["decoded"] = _decode_record(rec, vt, at, args.decode)
                sys.stdout.write(json.dumps(summ, sort_keys=True) + "\n")
                n += 1
    return 0


def _decode_record(rec, vt, at, out_dir: str) -> str:
    import numpy as np

    from videopoet.pipelines.synth.encode import encode_jpeg, encode_mp4

    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in rec.key)
    wave = None
    if rec.audio is not None:
        wave = np.asarray(at.decode(rec.audio[None]))[0]
    if rec.video is not None:
        frames = np.asarray(vt.decode(rec.video[None]))[0]
        if frames.shape[0] == 1 and wave is None:
            path = os.path.join(out_dir, f"{safe}.jpg")
            with open(path, "wb") as f:
                f.write(encode_jpeg(frames[0]))
            return path
        fps = int(round(rec.lineage.fps)) or 8
        path = os.path.join(out_dir, f"{safe}.mp4")
        with open(path, "wb") as f:
            f.write(encode_mp4(frames, wave, fps=fps, audio_rate=at.config.sample_rate if at else 16000))
        return path
    if wave is not None:
        import soundfile as sf

        path = os.path.join(out_dir, f"{safe}.wav")
        sf.write(path, wave, at.config.sample_rate)
        return path
    return ""


def register(sub) -> None:
    p = sub.add_parser("data", help="list, inspect, verify, diff and show datasets",
                       description="Versioned token datasets under a root (default $VIDEOPOET_ROOT or ./datasets).")
    dsub = p.add_subparsers(dest="action", metavar="ACTION")
    dsub.required = True

    def common(q):
        q.add_argument("--root", default=None, metavar="DATASETS",
                       help="datasets root (default $VIDEOPOET_ROOT, else ./datasets); local or fsspec URI")
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
    q.add_argument("--decode", default=None, metavar="OUT_DIR",
                   help="detokenize each record to OUT_DIR (mp4 with audio, jpg, or wav) to look at")
    q.add_argument("--video-tokenizer", default=None, metavar="CKPT", help="override the manifest's video tokenizer")
    q.add_argument("--audio-tokenizer", default=None, metavar="CKPT", help="override the manifest's audio tokenizer")
    q.add_argument("--rejects", action="store_true", help="show the rejects (JSON lines) instead of records")
    q.add_argument("--root", default=None, metavar="DATASETS", help="datasets root")
    q.set_defaults(func=_show)
