"""A trained run as a small self-contained model directory, and the one the package ships (``default``).

A model directory holds what generation and evaluation need and nothing of training:

* ``config.yaml``: the run's training config (the model's architecture, its task layouts, the text
  encoder);
* ``model.safetensors``: the parameters (float16 by default: half the size; they are cast back to
  float32 on load), flattened with ``/``-joined names;
* ``run.json``: where it came from (source run, step, and for an adapted run the pretrained run and step it
  started from; the dataset's name and fingerprint) and the part
  of the dataset's manifest that generation reads (the tokenizer references and the pipeline's clip
  geometry), so the dataset itself need not be present;
* ``README.md`` (shipped model only): the commands, seeds and figures that reproduce it;
* ``sampling.json`` (optional): the sampling settings its figures were measured with, which
  ``generate`` and ``eval`` use for every flag not given (:func:`sampling_defaults`).

``videopoet generate/eval --run default`` use :data:`DEFAULT` (``trainer/assets/small``), and any model
directory is a ``--run`` too. :func:`export_run` writes one from a run's checkpoint
(``python -m videopoet.trainer.export RUN_DIR OUT_DIR [--step N] [--root DATASETS]``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from typing import Any

import numpy as np

from videopoet.schemas.errors import VideoPoetError

__all__ = [
    "DEFAULT",
    "MODEL_FILE",
    "SAMPLING_FILE",
    "SAMPLING_KEYS",
    "ExportError",
    "export_run",
    "is_model_dir",
    "load_model_dir",
    "resolve",
    "sampling_defaults",
]

ASSETS = os.path.join(os.path.dirname(__file__), "assets")
DEFAULT = os.path.join(ASSETS, "small")
MODEL_FILE = "model.safetensors"
SAMPLING_FILE = "sampling.json"
SAMPLING_KEYS = {"temperature": float, "top_k": int, "top_p": float, "guidance": float}
DEFAULT_NAME = "default"


class ExportError(VideoPoetError):
    """A model directory that cannot be written or read."""


def resolve(run: str) -> str:
    """``default`` -> the shipped model directory (an error if the package lacks it); else ``run``."""
    if run != DEFAULT_NAME:
        return run
    if not is_model_dir(DEFAULT):
        raise ExportError(f"this installation has no shipped model ({DEFAULT} is missing); give --run RUN_DIR")
    return DEFAULT


def sampling_defaults(run: str) -> dict[str, float | int]:
    """The sampling settings a model directory recommends (its ``sampling.json``: any of temperature,
    top_k, top_p, guidance); {} for a run without one. A file with other keys or values of the wrong
    type is refused in one line rather than half applied."""
    path = os.path.join(resolve(run), SAMPLING_FILE)
    if "://" in str(path) or not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise ExportError(f"{path}: not JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ExportError(f"{path}: expected an object of {', '.join(SAMPLING_KEYS)}")
    out: dict[str, float | int] = {}
    for key, value in raw.items():
        if key.startswith("_"):  # comments, e.g. why these settings
            continue
        kind = SAMPLING_KEYS.get(key)
        if kind is None:
            raise ExportError(f"{path}: unknown setting {key!r} (allowed: {', '.join(SAMPLING_KEYS)})")
        if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and value != int(value)):
            raise ExportError(f"{path}: {key} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        out[key] = kind(value)
    return out


def is_model_dir(path: str) -> bool:
    """Whether ``path`` is a local model directory (config + safetensors parameters, no checkpoints)."""
    return "://" not in str(path) and os.path.isfile(os.path.join(path, MODEL_FILE))


def _flatten(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key in sorted(tree):
        name = f"{prefix}/{key}" if prefix else str(key)
        if "/" in str(key):
            raise ExportError(f"parameter name {key!r} contains '/'")
        value = tree[key]
        if isinstance(value, dict) or hasattr(value, "items"):
            out.update(_flatten(dict(value), name))
        else:
            out[name] = value  # an array (or, for a shape spec, a ShapeDtypeStruct)
    return out


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def _digest(flat: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(flat):
        a = np.ascontiguousarray(flat[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _manifest_under(root: str, dataset: dict, run_dir: str) -> dict:
    """The manifest of the run's dataset under the datasets ``root``: of a single dataset, or of a
    mixture's first member (its members share the tokenizers and clip geometry that generation reads,
    as the trainer checked), every member's fingerprint checked against the one the run recorded."""
    from videopoet.schemas.store import DatasetStore

    store = DatasetStore(root)
    members = dataset.get("mixture") or [{"ref": dataset.get("ref"), "fingerprint": dataset.get("fingerprint")}]
    first = None
    for member in members:
        manifest = store.open(str(member.get("ref"))).manifest
        if manifest.get("fingerprint") != member.get("fingerprint"):
            raise ExportError(f"{member.get('ref')} under {root} is not the dataset {run_dir} was trained on")
        first = manifest if first is None else first
    return first or {}


def export_run(
    run_dir: str, out_dir: str, step: int | None = None, dtype: str = "float16", root: str | None = None
) -> dict[str, Any]:
    """Write ``out_dir`` from the run's checkpoint (latest unless ``step``); returns its run.json record.

    The dataset's manifest is read where the run last saw it, or under the datasets ``root`` (its
    fingerprint must be the run's)."""
    from safetensors.numpy import save_file

    from videopoet.trainer import checkpoint, generation

    if dtype not in ("float16", "float32"):
        raise ExportError(f"dtype must be float16 or float32, got {dtype!r}")
    run = checkpoint.load_run(run_dir, step)
    flat = {k: np.asarray(v).astype(dtype) for k, v in _flatten(run.params).items()}
    dataset = run.info.get("dataset") or {}
    manifest = generation._dataset_manifest(run.info)
    if root is not None:
        manifest = _manifest_under(root, dataset, run_dir)
    if not manifest:
        raise ExportError(
            f"the dataset of {run_dir} cannot be read (its manifest gives the tokenizers and clip geometry); "
            "give --root"
        )
    lineage = manifest.get("lineage") or {}
    record = {
        "format": "videopoet-model/1",
        "source": {
            "run_dir": os.path.abspath(run_dir) if "://" not in run_dir else run_dir,
            "step": run.step,
            # an adapted run (--init-from): the pretrained run and step it started from
            **({"init_from": run.info["init_from"]} if run.info.get("init_from") else {}),
        },
        "dtype": dtype,
        "params_sha256": _digest(flat),
        "dataset": {
            **{k: dataset.get(k) for k in ("ref", "fingerprint", "tokenizers")},
            # a mixture run: its members (name, ref, fingerprint, weight) and the weights' schedule
            **{k: dataset[k] for k in ("mixture", "schedule") if dataset.get(k)},
        },
        "dataset_manifest": {
            "manifest_version": manifest.get("manifest_version"),
            "lineage": {
                "tokenizers": lineage.get("tokenizers"),
                "pipeline_config": lineage.get("pipeline_config"),
                # stylize: which style conditions the dataset had and its depth network's hash
                **({"style": lineage["style"]} if lineage.get("style") else {}),
            },
        },
        "text_encoder": run.info.get("text_encoder"),
        "text_encoder_fingerprint": run.info.get("text_encoder_fingerprint"),
        "unigram_baseline": run.info.get("unigram_baseline"),
        "vocab": run.info.get("vocab"),
    }
    tmp = f"{out_dir.rstrip('/')}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_file(flat, os.path.join(tmp, MODEL_FILE), metadata={"format": record["format"], "step": str(run.step)})
    os.chmod(os.path.join(tmp, MODEL_FILE), 0o644)
    shutil.copyfile(os.path.join(run_dir, checkpoint.CONFIG_FILE), os.path.join(tmp, checkpoint.CONFIG_FILE))
    with open(os.path.join(tmp, checkpoint.RUN_FILE), "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
        f.write("\n")
    if os.path.isdir(out_dir):  # keep what is not ours (a README) and replace the rest
        for name in os.listdir(out_dir):
            if name not in (MODEL_FILE, checkpoint.CONFIG_FILE, checkpoint.RUN_FILE):
                shutil.move(os.path.join(out_dir, name), os.path.join(tmp, name))
        shutil.rmtree(out_dir)
    os.rename(tmp, out_dir)
    return record


def load_model_dir(path: str):
    """A model directory as a :class:`videopoet.trainer.checkpoint.Run` (float32 parameters); the model's
    parameter names and shapes are checked against its config."""
    import jax
    from safetensors.numpy import load_file

    from videopoet.trainer import checkpoint, model
    from videopoet.trainer.config import load_train_config

    cfg = load_train_config(os.path.join(path, checkpoint.CONFIG_FILE))
    with open(os.path.join(path, checkpoint.RUN_FILE)) as f:
        info = json.load(f)
    flat = load_file(os.path.join(path, MODEL_FILE))
    if info.get("params_sha256") and _digest(flat) != info["params_sha256"]:
        raise ExportError(f"{path}/{MODEL_FILE} differs from the digest its run.json records")
    spec = _flatten(jax.eval_shape(lambda r: model.init_params(cfg.model, r), jax.random.PRNGKey(0)))
    if set(spec) != set(flat) or any(tuple(spec[k].shape) != flat[k].shape for k in spec):
        missing = sorted(set(spec) ^ set(flat)) or [k for k in spec if tuple(spec[k].shape) != flat[k].shape]
        raise ExportError(f"{path}: parameters do not match its config (first difference: {missing[0]})")
    params = _unflatten({k: np.asarray(v, np.float32) for k, v in flat.items()})
    return checkpoint.Run(
        cfg=cfg,
        model=model.build(cfg.model),
        params=jax.tree_util.tree_map(jax.numpy.asarray, params),
        step=int((info.get("source") or {}).get("step", 0)),
        info=info,
        run_dir=path,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m videopoet.trainer.export RUN_DIR OUT_DIR [--step N] [--root DATASETS] [--dtype D]``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m videopoet.trainer.export", description=main.__doc__)
    p.add_argument("run_dir")
    p.add_argument("out_dir")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
    p.add_argument("--root", default=None, help="datasets root holding the run's dataset (default: where it was)")
    p.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    args = p.parse_args(argv)
    try:
        rec = export_run(args.run_dir, args.out_dir, args.step, args.dtype, args.root)
    except VideoPoetError as e:
        print(f"videopoet: error: {e}", file=sys.stderr)
        return e.exit_code
    print(json.dumps({"out": args.out_dir, "step": rec["source"]["step"], "params_sha256": rec["params_sha256"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
