"""The SoundStream tokenizer object: load / default / encode / decode / fingerprint.

Storage formats a tokenizer loads from (a local directory or an fsspec URI):

* **export** - ``config.json`` + ``model.safetensors`` (flat keys ``params/...`` and ``vq/...``).
  This is what ships in ``assets/<preset>/`` and what ``train`` writes at the end of a run.
* **training run** - ``config.json`` + ``checkpoints/`` (an Orbax ``CheckpointManager`` directory);
  the latest step's weights are restored (no optimizer state).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from functools import cached_property

import jax
import jax.numpy as jnp
import numpy as np

from videopoet.rundir import checkpoints
from videopoet.schemas.config import from_dict, to_dict
from videopoet.schemas.errors import VideoPoetError
from videopoet.tokenizers.soundstream.config import PRESETS, SoundStreamConfig, load_soundstream_config
from videopoet.tokenizers.soundstream.model import SoundStream

ASSETS = os.path.join(os.path.dirname(__file__), "assets")
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class AudioInputError(VideoPoetError, ValueError):
    """Audio or codes given to the tokenizer have the wrong shape, dtype or values."""


class CheckpointNotFoundError(VideoPoetError, FileNotFoundError):
    """No tokenizer checkpoint where one was expected."""


def flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k in sorted(tree):
        v = tree[k]
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict) or hasattr(v, "items"):
            out.update(flatten(dict(v), key))
        else:
            out[key] = np.asarray(v)
    return out


def unflatten(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for key, v in flat.items():
        node = tree
        parts = key.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return tree


def fingerprint_of(cfg: SoundStreamConfig, variables: dict) -> str:
    """sha256 over what decides the tokens: the network fields (``ARCH_FIELDS``, canonical JSON) and
    the weights that define encode/decode.

    Those are every ``params/...`` array and ``vq/codebook`` (sorted names, dtype, shape, bytes); the
    EMA training statistics (``vq/cluster_size``, ``vq/embed_sum``) and the training-only config fields
    (learning rate, losses, seed, the name, ...) are left out, so a re-export of the same weights keeps
    the fingerprint a dataset manifest recorded.
    """
    h = hashlib.sha256()
    arch = {k: v for k, v in to_dict(cfg).items() if k in ARCH_FIELDS}
    h.update(json.dumps(arch, sort_keys=True, separators=(",", ":")).encode())
    for name, arr in flatten(variables).items():
        if name in ("vq/cluster_size", "vq/embed_sum"):
            continue
        a = np.ascontiguousarray(arr)
        h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class SoundStreamTokenizer:
    """Audio <-> RVQ codes. ``encode``: float32 [B,N] at 16 kHz -> int32 [B, levels_used, N // hop]."""

    def __init__(self, config: SoundStreamConfig, variables: dict):
        self.config = config
        self.model = SoundStream(config)
        self.variables = jax.tree_util.tree_map(jnp.asarray, {"params": variables["params"], "vq": variables["vq"]})
        self._encode, self._decode = _compiled(arch_config(config))

    # ------------------------------------------------------------------ construction
    @classmethod
    def init(cls, config: SoundStreamConfig, seed: int | None = None) -> SoundStreamTokenizer:
        return cls(config, init_variables(config, config.seed if seed is None else seed))

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint_of(self.config, self.variables)

    @property
    def levels(self) -> int:
        return self.config.levels_used

    def __repr__(self) -> str:
        return f"SoundStreamTokenizer({self.config.name}, fingerprint={self.fingerprint[:12]})"

    # ------------------------------------------------------------------ encode / decode
    def check_wave(self, wave) -> np.ndarray:
        if isinstance(wave, (list, tuple)):
            raise AudioInputError("encode expects one float32 array [B, N], not a list (stack clips of equal length)")
        a = np.asarray(wave)
        if a.ndim != 2:
            raise AudioInputError(
                f"encode expects float32 audio [B, N]; got shape {a.shape} (use wave[None] for one clip)"
            )
        if not np.issubdtype(a.dtype, np.floating):
            raise AudioInputError(
                f"encode expects float audio in [-1, 1], got dtype {a.dtype} (int16 PCM: divide by 32768)"
            )
        if a.shape[0] == 0 or a.shape[1] == 0:
            raise AudioInputError(f"empty audio: shape {a.shape}")
        if a.shape[1] < self.config.hop:
            raise AudioInputError(
                f"audio too short: {a.shape[1]} samples < one frame "
                f"({self.config.hop} samples at {self.config.sample_rate} Hz)"
            )
        if not np.all(np.isfinite(a)):
            raise AudioInputError("audio contains NaN or infinite samples")
        return a.astype(np.float32, copy=False)

    def encode(self, wave) -> np.ndarray:
        """float [B, N] -> int32 [B, levels_used, N // hop]; the trailing N % hop samples are dropped."""
        a = self.check_wave(wave)
        frames = self.config.frames_for(a.shape[1])
        a = a[:, : frames * self.config.hop]
        return np.asarray(self._encode(self.variables, jnp.asarray(a)), np.int32)

    def decode(self, codes) -> np.ndarray:
        """int [B, L, F] (1 <= L <= num_quantizers, usually levels_used) -> float32 [B, F * hop]."""
        c = np.asarray(codes)
        if c.ndim != 3:
            raise AudioInputError(f"decode expects int codes [B, levels, frames]; got shape {c.shape}")
        if not np.issubdtype(c.dtype, np.integer):
            raise AudioInputError(f"decode expects integer codes, got dtype {c.dtype}")
        if c.shape[0] == 0 or c.shape[2] == 0:
            raise AudioInputError(f"empty codes: shape {c.shape}")
        if not 1 <= c.shape[1] <= self.config.num_quantizers:
            raise AudioInputError(f"codes have {c.shape[1]} levels; this tokenizer has 1..{self.config.num_quantizers}")
        if c.min() < 0 or c.max() >= self.config.codebook_size:
            raise AudioInputError(f"codes must lie in [0, {self.config.codebook_size}); got [{c.min()}, {c.max()}]")
        return np.asarray(self._decode(self.variables, jnp.asarray(c, jnp.int32)), np.float32)

    # ------------------------------------------------------------------ storage
    def save(self, directory: str) -> str:
        """Write the export format (config.json + model.safetensors) to a local dir or fsspec URI."""
        import fsspec
        import safetensors.numpy as stn

        fs, root = fsspec.core.url_to_fs(directory)
        fs.makedirs(root, exist_ok=True)
        with fs.open(f"{root}/{CONFIG_FILE}", "w") as f:
            json.dump(to_dict(self.config), f, indent=2, sort_keys=True)
        # embed_sum (EMA training statistic) is not exported: it is codebook * cluster_size again on load
        flat = {
            k: v for k, v in flatten(jax.tree_util.tree_map(np.asarray, self.variables)).items() if k != "vq/embed_sum"
        }
        blob = stn.save(flat, metadata={"fingerprint": self.fingerprint})
        with fs.open(f"{root}/{WEIGHTS_FILE}", "wb") as f:
            f.write(blob)
        return directory


ARCH_FIELDS = (
    "sample_rate",
    "strides",
    "codebook_size",
    "num_quantizers",
    "levels_used",
    "channels",
    "max_channels",
    "code_dim",
    "res_dilations",
    "kernel_size",
)


def arch_config(config: SoundStreamConfig) -> SoundStreamConfig:
    """The config with every field the network does not read reset (a cache key for compiled code)."""
    base = SoundStreamConfig()
    return dataclasses.replace(
        config, **{f.name: getattr(base, f.name) for f in dataclasses.fields(config) if f.name not in ARCH_FIELDS}
    )


@functools.lru_cache(maxsize=16)
def _compiled(arch: SoundStreamConfig):
    model = SoundStream(arch)
    levels = arch.levels_used
    enc = jax.jit(lambda v, w: model.apply(v, w, levels, method=SoundStream.encode))
    dec = jax.jit(lambda v, c: model.apply(v, c, method=SoundStream.decode))
    return enc, dec


@functools.lru_cache(maxsize=16)
def _init_fn(arch: SoundStreamConfig):
    model = SoundStream(arch)
    return jax.jit(lambda key: model.init(key, jnp.zeros((1, arch.hop), jnp.float32)))


def init_variables(config: SoundStreamConfig, seed: int = 0) -> dict:
    variables = _init_fn(arch_config(config))(jax.random.PRNGKey(seed))
    return {"params": variables["params"], "vq": variables["vq"]}


def read_config(directory: str) -> SoundStreamConfig:
    import fsspec

    fs, root = fsspec.core.url_to_fs(directory)
    path = f"{root}/{CONFIG_FILE}"
    if not fs.exists(path):
        raise CheckpointNotFoundError(f"{directory}: no {CONFIG_FILE} (not a SoundStream checkpoint)")
    with fs.open(path, "r") as f:
        return from_dict(SoundStreamConfig, json.load(f))


def read_run_variables(run_dir: str, cfg: SoundStreamConfig | None = None) -> dict:
    """{"params", "vq"} of the latest checkpoint of a training run (the optimizer state is not read)."""
    cfg = cfg or read_config(run_dir)
    spec = jax.eval_shape(lambda: init_variables(cfg))
    try:
        _, state = checkpoints.read_subtree(run_dir, {"params": spec["params"], "vq": spec["vq"]})
    except FileNotFoundError as e:
        raise CheckpointNotFoundError(str(e)) from None
    return {"params": state["params"], "vq": state["vq"]}


def load_dir(directory: str) -> SoundStreamTokenizer:
    import fsspec
    import safetensors.numpy as stn

    cfg = read_config(directory)
    fs, root = fsspec.core.url_to_fs(directory)
    if fs.exists(f"{root}/{WEIGHTS_FILE}"):
        with fs.open(f"{root}/{WEIGHTS_FILE}", "rb") as f:
            flat = stn.load(f.read())
        variables = unflatten(flat)
        vq = variables.get("vq", {})
        if "embed_sum" not in vq and "codebook" in vq and "cluster_size" in vq:
            vq["embed_sum"] = vq["codebook"] * vq["cluster_size"][..., None]
    elif fs.exists(f"{root}/{checkpoints.CHECKPOINTS_DIR}"):
        variables = read_run_variables(directory, cfg)
    else:
        raise CheckpointNotFoundError(f"{directory}: neither {WEIGHTS_FILE} nor checkpoints/")
    if "params" not in variables or "vq" not in variables:
        raise CheckpointNotFoundError(f"{directory}: weights lack 'params' or 'vq'")
    return SoundStreamTokenizer(cfg, variables)


def load(source: str | SoundStreamConfig = "small", overrides=()) -> SoundStreamTokenizer:
    """A preset name (seeded random init), a YAML config (random init), or a checkpoint dir / URI."""
    if isinstance(source, SoundStreamConfig):
        return SoundStreamTokenizer.init(source)
    if isinstance(source, str) and source in PRESETS:
        return SoundStreamTokenizer.init(load_soundstream_config(source, overrides))
    if isinstance(source, str) and source.endswith((".yaml", ".yml")):
        return SoundStreamTokenizer.init(load_soundstream_config(source, overrides))
    if isinstance(source, str):
        import fsspec

        fs, root = fsspec.core.url_to_fs(source)
        if not fs.exists(root):
            raise CheckpointNotFoundError(
                f"{source!r} is neither a preset ({', '.join(PRESETS)}) nor an existing checkpoint directory"
            )
        return load_dir(source)
    raise TypeError(f"load() takes a preset name or a path, got {type(source).__name__}")


DEFAULT_COMMAND = (
    "nice -n 10 videopoet tokenizer train --kind soundstream --config small --data synth --steps 1000 "
    "--out runs/ss-small-a && "
    "nice -n 10 videopoet tokenizer train --kind soundstream --config small --data synth --steps 900 "
    "--init-from runs/ss-small-a --out runs/ss-small learning_rate=0.0003 lr_decay_steps=900 warmup_steps=20 "
    "sisnr_weight=0.3 && "
    "mkdir -p tokenizers/soundstream/assets/small && "
    "cp runs/ss-small/config.json runs/ss-small/model.safetensors tokenizers/soundstream/assets/small/"
)


def default() -> SoundStreamTokenizer:
    """The trained ``small`` checkpoint shipped in ``tokenizers/soundstream/assets/small/``."""
    d = os.path.join(ASSETS, "small")
    if not os.path.exists(os.path.join(d, WEIGHTS_FILE)):
        raise CheckpointNotFoundError(
            f"no shipped SoundStream checkpoint at {d}; train one with:\n  {DEFAULT_COMMAND}\n"
            "(or use soundstream.load('small') for an untrained, seeded model)"
        )
    return load_dir(d)
