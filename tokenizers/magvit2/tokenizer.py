"""The MAGVIT-v2 tokenizer object: load / default / encode / decode / encode_condition / fingerprint.

Storage formats :func:`load` reads (a local directory or an fsspec URI):

* **export** - ``config.yaml`` + ``model.safetensors`` (flat keys ``params/encoder/...``); what
  ships in ``assets/small/`` and what ``train`` writes at the end of a run (the EMA weights).
* **training run** - ``config.yaml`` + ``checkpoints/`` (an Orbax ``CheckpointManager``); the
  latest step's EMA weights are restored (:func:`read_run_params`, through :mod:`videopoet.rundir`, so
  loading never imports the training module).

Never pickled: weights are safetensors or Orbax, configs are YAML read with ``yaml.safe_load``.
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
from videopoet.schemas.config import dump_yaml, to_dict
from videopoet.schemas.errors import VideoPoetError
from videopoet.tokenizers.magvit2 import masks
from videopoet.tokenizers.magvit2.config import PRESETS, MagvitConfig, image_config, load_magvit_config, phase_of
from videopoet.tokenizers.magvit2.model import MagvitVQ, inflate_params, reinflate_params

ASSETS = os.path.join(os.path.dirname(__file__), "assets")
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"


class VideoInputError(VideoPoetError, ValueError):
    """Video or codes given to the tokenizer have the wrong shape, dtype or values."""


class CheckpointNotFoundError(VideoPoetError, FileNotFoundError):
    """No tokenizer checkpoint where one was expected."""


# ------------------------------------------------------------------------------ pytree helpers
def flatten(tree, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k in sorted(tree):
        v = tree[k]
        key = f"{prefix}/{k}" if prefix else str(k)
        if hasattr(v, "items"):
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


def fingerprint_of(cfg: MagvitConfig, params) -> str:
    """sha256 over what decides the tokens: the network fields (``ARCH_FIELDS``, canonical JSON) and
    every parameter (sorted name, dtype, shape, bytes).

    Training-only fields (learning rate, steps, data pool, seed, the run's name, ...) are left out, so
    re-exporting the same weights with a different training record keeps the fingerprint a dataset
    manifest recorded, while any change to what ``encode``/``decode`` compute changes it."""
    h = hashlib.sha256()
    arch = {k: v for k, v in to_dict(cfg).items() if k in ARCH_FIELDS}
    if not arch.get("level_res_blocks"):  # the default (num_res_blocks everywhere): fingerprints made before
        arch.pop("level_res_blocks", None)  # the field existed stay valid
    h.update(json.dumps(arch, sort_keys=True, separators=(",", ":")).encode())
    for name, arr in flatten({"params": params}).items():
        a = np.ascontiguousarray(arr)
        h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


ARCH_FIELDS = (
    "lfq_bits",
    "temporal_downsample",
    "spatial_downsample",
    "channels",
    "channel_mults",
    "num_res_blocks",
    "level_res_blocks",
    "temporal_kernel",
    "norm_groups",
    "adaptive_norm",
    "lfq_scale",
)


def arch_config(config: MagvitConfig) -> MagvitConfig:
    """The config with every field the network does not read reset (a cache key for compiled code)."""
    base = MagvitConfig()
    return dataclasses.replace(
        config, **{f.name: getattr(base, f.name) for f in dataclasses.fields(config) if f.name not in ARCH_FIELDS}
    )


@functools.lru_cache(maxsize=16)
def _compiled(arch: MagvitConfig):
    model = MagvitVQ(arch)

    def enc(params, video_u8):
        x = video_u8.astype(jnp.float32) / 127.5 - 1.0
        return model.apply({"params": params}, x, method=MagvitVQ.encode)

    def dec(params, codes):
        y = model.apply({"params": params}, codes, method=MagvitVQ.decode)
        return jnp.clip(jnp.round((y + 1.0) * 127.5), 0, 255).astype(jnp.uint8)

    return jax.jit(enc), jax.jit(dec)


@functools.lru_cache(maxsize=16)
def param_spec(arch: MagvitConfig):
    """Parameter shapes of the network (``jax.eval_shape``, no compute)."""
    s = arch.spatial_downsample
    model = MagvitVQ(arch)
    return jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 1, s, s, 3), jnp.float32)), jax.random.PRNGKey(0))[
        "params"
    ]


def seeded_init(spec, seed: int, zero_modules=("scale", "shift")):
    """Deterministic numpy init of a Linen param tree (compiling ``model.init`` takes ~15 s on CPU).

    A pure function of (seed, parameter path, shape): kernels ~ N(0, 1/fan_in) (LeCun normal),
    biases 0, norm scales 1; the adaptive-norm projections (modules ``scale`` / ``shift``) start at
    0, so each decoder norm starts as a plain GroupNorm.
    """
    import zlib

    def init(path, leaf):
        names = [str(getattr(k, "key", k)) for k in path]
        shape, leafname = tuple(leaf.shape), names[-1]
        if (
            leafname == "kernel"
            and not (len(names) > 1 and names[-2] in zero_modules)
            and not (len(names) > 2 and names[-3] in zero_modules)
        ):
            fan_in = int(np.prod(shape[:-1]))
            rng = np.random.default_rng([seed, zlib.crc32("/".join(names).encode())])
            return jnp.asarray(rng.standard_normal(shape, np.float32) / np.sqrt(fan_in), leaf.dtype)
        if leafname == "scale":
            return jnp.asarray(np.ones(shape, leaf.dtype))
        return jnp.asarray(np.zeros(shape, leaf.dtype))

    return jax.tree_util.tree_map_with_path(init, spec)


def init_params(config: MagvitConfig, seed: int = 0):
    return seeded_init(param_spec(arch_config(config)), seed)


class MagvitTokenizer:
    """Video <-> MAGVIT-v2 codes. ``encode``: uint8 [B,T,H,W,3] -> int32 [B,T',H',W'] (T = 1 + 4k)."""

    def __init__(self, config: MagvitConfig, params, max_batch: int = 8, max_call_pixels: int | None = None):
        self.config = config
        self.params = jax.tree_util.tree_map(jnp.asarray, params)
        # clips per compiled call: at most ``max_batch``, and (when set) at most ``max_call_pixels``
        # frame pixels (clips x T x H x W) so that a call's XLA temporaries, which grow with its
        # pixels, stay bounded whatever the clip shape; at least one clip
        self.max_batch = max_batch
        self.max_call_pixels = max_call_pixels
        self._encode, self._decode = _compiled(arch_config(config))

    @classmethod
    def init(cls, config: MagvitConfig, seed: int | None = None) -> MagvitTokenizer:
        return cls(config, init_params(config, config.seed if seed is None else seed))

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint_of(self.config, self.params)

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        return self.config.latent_shape(frames, height, width)

    def __repr__(self) -> str:
        return f"MagvitTokenizer({self.config.name}, fingerprint={self.fingerprint[:12]})"

    # ------------------------------------------------------------------ checks
    def check_video(self, video) -> np.ndarray:
        cfg = self.config
        if isinstance(video, (list, tuple)):
            raise VideoInputError("encode expects one uint8 array [B,T,H,W,3], not a list (stack clips of equal shape)")
        v = np.asarray(video)
        if v.ndim != 5 or v.shape[-1] != 3:
            raise VideoInputError(
                f"encode expects uint8 video [B,T,H,W,3]; got shape {v.shape} "
                "(use video[None] for one clip, image[None, None] for one image)"
            )
        if v.dtype != np.uint8:
            raise VideoInputError(f"encode expects uint8 pixels in [0, 255], got dtype {v.dtype}")
        b, t, h, w, _ = v.shape
        if min(b, t, h, w) == 0:
            raise VideoInputError(f"empty video: shape {v.shape}")
        if (t - 1) % cfg.temporal_downsample:
            raise VideoInputError(
                f"frame count must be 1 + {cfg.temporal_downsample}k (1, 5, 9, 13, 17, ...); got T={t}"
            )
        if h % cfg.spatial_downsample or w % cfg.spatial_downsample:
            raise VideoInputError(f"height and width must be multiples of {cfg.spatial_downsample}; got {h}x{w} (HxW)")
        return v

    def check_codes(self, codes) -> np.ndarray:
        c = np.asarray(codes)
        if c.ndim != 4:
            raise VideoInputError(f"decode expects int codes [B,T',H',W']; got shape {c.shape}")
        if not np.issubdtype(c.dtype, np.integer):
            raise VideoInputError(f"decode expects integer codes, got dtype {c.dtype}")
        if c.size == 0:
            raise VideoInputError(f"empty codes: shape {c.shape}")
        lo, hi = int(c.min()), int(c.max())
        if lo < 0 or hi >= self.codebook_size:
            raise VideoInputError(f"codes must lie in [0, {self.codebook_size}); got [{lo}, {hi}]")
        return c.astype(np.int32)

    # ------------------------------------------------------------------ encode / decode
    def call_size(self, frames: int, height: int, width: int) -> int:
        """Clips of ``frames`` x ``height`` x ``width`` that one compiled encode call takes."""
        n = self.max_batch
        if self.max_call_pixels is not None:
            n = min(n, self.max_call_pixels // (frames * height * width))
        return max(1, n)

    def _batched(self, fn, arr, call: int):
        outs = [np.asarray(fn(self.params, jnp.asarray(arr[i : i + call]))) for i in range(0, arr.shape[0], call)]
        return np.concatenate(outs, axis=0)

    def encode(self, video) -> np.ndarray:
        """uint8 [B,T,H,W,3] -> int32 [B, 1 + (T-1)/4, H/8, W/8]."""
        v = self.check_video(video)
        return self._batched(self._encode, v, self.call_size(*v.shape[1:4])).astype(np.int32)

    def decode(self, codes) -> np.ndarray:
        """int32 [B,T',H',W'] -> uint8 [B, 1 + 4(T'-1), 8H', 8W', 3]."""
        return self._batched(self._decode, self.check_codes(codes), self.max_batch).astype(np.uint8)

    def encode_condition(self, video, mask_kind: str, ratio: float | None = None, keep_frames: int = 5) -> np.ndarray:
        """COMMIT condition tokens: the clip with the ``mask_kind`` region filled, then :meth:`encode`."""
        v = self.check_video(video)
        masked = masks.apply_mask(
            v, mask_kind, ratio=ratio, keep_frames=keep_frames, align=self.config.spatial_downsample
        )
        return self.encode(masked)

    def condition_clip(self, video, mask_kind: str, ratio: float | None = None, keep_frames: int = 5) -> np.ndarray:
        """The masked clip :meth:`encode_condition` tokenizes (uint8, same shape)."""
        return masks.apply_mask(
            self.check_video(video),
            mask_kind,
            ratio=ratio,
            keep_frames=keep_frames,
            align=self.config.spatial_downsample,
        )

    # ------------------------------------------------------------------ storage
    def save(self, directory: str, dtype: str | None = None) -> str:
        """Write the export format (config.yaml + model.safetensors) to a local dir or fsspec URI.

        ``dtype="float16"`` stores the weights at half size (what ``assets/small`` ships); they are
        read back as float32, and the stored fingerprint is that of the rounded weights, so it is
        what the loaded tokenizer reports.
        """
        import fsspec
        import safetensors.numpy as stn

        fs, root = fsspec.core.url_to_fs(directory)
        fs.makedirs(root, exist_ok=True)
        with fs.open(f"{root}/{CONFIG_FILE}", "w") as f:
            f.write(dump_yaml(self.config))
        params = jax.tree_util.tree_map(np.asarray, self.params)
        fingerprint = self.fingerprint
        if dtype is not None:
            params = jax.tree_util.tree_map(lambda a: a.astype(dtype) if a.dtype.kind == "f" else a, params)
            fingerprint = fingerprint_of(self.config, _as_float32(params))
        flat = flatten({"params": params})
        blob = stn.save(flat, metadata={"fingerprint": fingerprint})
        with fs.open(f"{root}/{WEIGHTS_FILE}", "wb") as f:
            f.write(blob)
        return directory


def _as_float32(params):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32) if np.asarray(a).dtype.kind == "f" else a, params)


def read_config(directory: str) -> MagvitConfig:
    import fsspec

    fs, root = fsspec.core.url_to_fs(directory)
    path = f"{root}/{CONFIG_FILE}"
    if not fs.exists(path):
        raise CheckpointNotFoundError(f"{directory}: no {CONFIG_FILE} (not a MAGVIT-v2 checkpoint)")
    return load_magvit_config(fs.unstrip_protocol(path) if "://" in directory else path)


def load_dir(directory: str) -> MagvitTokenizer:
    import fsspec
    import safetensors.numpy as stn

    cfg = read_config(directory)
    fs, root = fsspec.core.url_to_fs(directory)
    if fs.exists(f"{root}/{WEIGHTS_FILE}"):
        with fs.open(f"{root}/{WEIGHTS_FILE}", "rb") as f:
            params = unflatten(stn.load(f.read())).get("params")
        params = _as_float32(params) if params else params  # half-precision exports compute in float32
    elif fs.exists(f"{root}/{checkpoints.CHECKPOINTS_DIR}"):
        params = read_run_params(directory, cfg)
    else:
        raise CheckpointNotFoundError(f"{directory}: neither {WEIGHTS_FILE} nor checkpoints/")
    if not params:
        raise CheckpointNotFoundError(f"{directory}: no 'params' in the weights")
    check_params(cfg, params, directory)
    return MagvitTokenizer(cfg, params)


INIT_FROM_DIR = "init_from"  # RUN/init_from/: the export a run started from (--init-from), kept with the run


def read_run_params(run_dir: str, cfg: MagvitConfig):
    """EMA params of the latest checkpoint of a training run, as video-model params.

    Only the EMA weights are read (not the optimizer moments). A checkpoint still in the image phase is
    inflated exactly as the run will inflate it (:func:`to_video_params`): on 1-frame clips the result
    *is* the image model, so a long image-first stage can be evaluated on images (``tokenizer eval
    --frames 1``) before it reaches its video phase; on longer clips it is the sample-and-hold video
    model the video phase starts from."""
    with checkpoints.Checkpoints(run_dir, read_only=True) as ckpts:
        step = ckpts.latest_step()
        if step is None:
            raise CheckpointNotFoundError(f"{run_dir}: {checkpoints.CHECKPOINTS_DIR}/ holds no steps")
        phase = phase_of(cfg, step)
        spec = param_spec(arch_config(image_config(cfg) if phase == "image" else cfg))
        _, state = ckpts.restore_subtree(step, {"ema": spec})
    ema = state["ema"]
    if phase == "image":
        ema = to_video_params(cfg, ema, init_source_params(run_dir))
    return ema


def init_source_params(run_dir: str):
    """The (float32) video params a run started from (``RUN/init_from/``), or None."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(run_dir)
    if not fs.exists(f"{root}/{INIT_FROM_DIR}"):
        return None
    return load_dir(f"{run_dir.rstrip('/')}/{INIT_FROM_DIR}").params


def to_video_params(cfg: MagvitConfig, image_params, src=None):
    """Image-phase params -> the causal video model the run's video phase starts from.

    A run started from a video model ``src`` (``--init-from`` with ``image_steps > 0``: its
    :func:`init_source_params`) keeps that model's temporal taps and adds what the image phase learnt
    (:func:`~.model.reinflate_params`); a run from scratch (``src`` None) inflates
    (:func:`~.model.inflate_params`). Either way the result computes exactly what the image model
    computes on 1-frame clips."""
    if src is not None:
        return reinflate_params(image_params, src)
    return inflate_params(image_params, param_spec(arch_config(cfg)), cfg)


def param_shapes(params) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in flatten({"params": params}).items()}


def check_params(cfg: MagvitConfig, params, where: str) -> None:
    expected = param_spec(arch_config(cfg))
    want = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(expected)[0]:
        want["params/" + "/".join(str(getattr(k, "key", k)) for k in path)] = tuple(leaf.shape)
    got = param_shapes(params)
    if got != want:
        missing = sorted(set(want) - set(got))[:3]
        extra = sorted(set(got) - set(want))[:3]
        raise CheckpointNotFoundError(
            f"{where}: weights do not match the config's architecture (missing {missing}, unexpected {extra})"
        )


def load(source: str | MagvitConfig = "small", overrides=()) -> MagvitTokenizer:
    """A preset name (seeded random init), a YAML config (random init), or a checkpoint dir / URI."""
    if isinstance(source, MagvitConfig):
        return MagvitTokenizer.init(source)
    if isinstance(source, str) and source in PRESETS:
        return MagvitTokenizer.init(load_magvit_config(source, overrides))
    if isinstance(source, str) and source.endswith((".yaml", ".yml")):
        return MagvitTokenizer.init(load_magvit_config(source, overrides))
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
    "videopoet tokenizer train --kind magvit2 --config small --data synth --out runs/magvit2-small, then "
    "magvit2.load('runs/magvit2-small').save('tokenizers/magvit2/assets/small', dtype='float16')"
)


def default() -> MagvitTokenizer:
    """The trained ``small`` checkpoint shipped in ``tokenizers/magvit2/assets/small/``."""
    d = os.path.join(ASSETS, "small")
    if not os.path.exists(os.path.join(d, WEIGHTS_FILE)):
        raise CheckpointNotFoundError(
            f"no shipped MAGVIT-v2 checkpoint at {d}; train one with: {DEFAULT_COMMAND} "
            "(see tokenizers/magvit2/README.md; or use magvit2.load('small') for an untrained, seeded model)"
        )
    return load_dir(d)
