"""The config record of a run directory and the resume check against it.

A loop writes its typed config beside the run (``config.yaml``, or ``config.json`` for SoundStream);
restarting in the same directory is a resume, which must use the same config except for fields the
loop declares changeable (run length, logging cadence, ...): :func:`record_config` refuses any other
difference and names the fields that differ.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import fsspec

from videopoet.schemas.config import dump_yaml, to_dict


def flat_fields(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flat_fields(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def differing_fields(old: Any, new: Any) -> list[str]:
    """Dotted names of the config fields whose values differ (configs or their dicts)."""
    a, b = flat_fields(to_dict(old)), flat_fields(to_dict(new))
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def config_text(cfg: Any, filename: str) -> str:
    if filename.endswith(".json"):
        return json.dumps(to_dict(cfg), indent=2, sort_keys=True)
    return dump_yaml(cfg)


def record_config(
    run_dir: str,
    cfg: Any,
    *,
    filename: str,
    load: Callable[[str], Any],
    changeable: Iterable[str] | Callable[[Any], Iterable[str]] = (),
    error: type[Exception],
    write: bool = True,
) -> Any | None:
    """Write ``cfg`` to ``RUN/filename``, or check it against the config already there.

    ``load(path)`` reads a recorded config back; ``changeable``: dotted field names a resume may change
    (a name covers the fields under it; the record is then rewritten), or a function of the recorded
    config giving them (it may raise ``error`` itself for a change it refuses); ``write`` False only
    checks (a process other than the lead). Raises ``error`` naming the other fields that differ.
    Returns the config that was recorded before (None for a new run)."""
    fs, root = fsspec.core.url_to_fs(run_dir)
    path = f"{root}/{filename}"
    old = None
    if fs.exists(path):
        old = load(fs.unstrip_protocol(path) if "://" in run_dir else path)
        diff = differing_fields(old, cfg)
        allowed = set(changeable(old) if callable(changeable) else changeable)
        fixed = [k for k in diff if k not in allowed and not any(k.startswith(f"{a}.") for a in allowed)]
        if fixed:
            raise error(
                f"{run_dir} holds a run with a different config (differs in: {', '.join(fixed)}); "
                "resume with the same config or use a new --out"
            )
        if not diff:
            return old
    if not write:
        return old
    fs.makedirs(root, exist_ok=True)
    text = config_text(cfg, filename)
    if "://" in run_dir:  # an object store publishes an object whole
        with fs.open(path, "w") as f:
            f.write(text)
    else:  # renamed into place: another process of the run checking it never reads a partial file
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return old
