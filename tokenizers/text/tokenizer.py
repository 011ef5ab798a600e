"""The text tokenizer object: SentencePiece ids + a frozen T5 encoder.

Where the work happens: the **pipelines store text token ids** (``tokenize``) in each TokenRecord,
and the **trainer runs the frozen encoder** (``embed``) on the fly. Ids cost ``4 x L`` bytes per caption
(at most 64 int32 = 256 bytes); storing embeddings instead would cost ``64 x 2048 x 2`` bytes =
256 KiB per caption for T5-XL in bfloat16 (1000x more), and would pin the dataset to one encoder.

Tokenization rule: SentencePiece pieces + ``</s>`` (as Hugging Face's T5 tokenizer does). A caption
longer than ``max_length`` (64) keeps its first ``max_length - 1`` pieces followed by ``</s>``.
Batches are right-padded with ``<pad>`` (id 0) to the longest caption (or to ``max_length`` with
``pad_to_max=True``); ``mask`` is 1 on real tokens, 0 on padding.

``embed`` returns the encoder's last hidden states with padded positions set to 0.

Default (``text.default()``): ``assets/spiece.model`` (SentencePiece trained on 4000 synthetic-corpus
captions, ``videopoet tokenizer train --kind text --data synth --out ...``) + the ``small`` preset T5
encoder with weights drawn from ``numpy.random.default_rng(seed)`` in HF layout at first use (so
they are the same on every machine and need no stored weights).
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cached_property

import jax
import jax.numpy as jnp
import numpy as np

from videopoet.schemas.config import to_dict
from videopoet.schemas.errors import VideoPoetError
from videopoet.tokenizers.text.config import PRESETS, TextConfig, load_text_config, to_hf_config
from videopoet.tokenizers.text.spm import load_sentencepiece
from videopoet.tokenizers.text.t5 import T5Encoder, load_hf_t5, params_from_hf, params_to_hf, random_hf_tensors

ASSETS = os.path.join(os.path.dirname(__file__), "assets")
DEFAULT_SPM = os.path.join(ASSETS, "spiece.model")


class TextInputError(VideoPoetError, ValueError):
    """Captions or ids given to the text tokenizer are malformed."""


class TextEncoder:
    """SentencePiece + T5 encoder. ``tokenize(list[str]) -> (ids, mask)``; ``embed(ids, mask) -> [B,L,D]``."""

    def __init__(self, config: TextConfig, params: dict, spiece: bytes):
        self.config = config
        self.spiece_bytes = spiece
        self.sp = load_sentencepiece(spiece)
        if self.sp.get_piece_size() > config.vocab_size:
            raise TextInputError(
                f"SentencePiece model has {self.sp.get_piece_size()} pieces > encoder vocab_size {config.vocab_size}"
            )
        self.pad_id = max(self.sp.pad_id(), 0)
        self.eos_id = self.sp.eos_id()
        self.params = jax.tree_util.tree_map(jnp.asarray, params)
        self.model = T5Encoder(config)
        self._apply = jax.jit(lambda p, i, m: self.model.apply({"params": p}, i, m))

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over the config, the SentencePiece model bytes and the HF-named encoder weights."""
        h = hashlib.sha256()
        h.update(json.dumps(to_dict(self.config), sort_keys=True, separators=(",", ":")).encode())
        h.update(hashlib.sha256(self.spiece_bytes).digest())
        for name, a in sorted(params_to_hf(jax.device_get(self.params), self.config).items()):
            h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    @property
    def dim(self) -> int:
        return self.config.d_model

    def __repr__(self) -> str:
        return f"TextEncoder({self.config.name}, d={self.dim}, fingerprint={self.fingerprint[:12]})"

    # ------------------------------------------------------------------ tokenize / embed
    def token_ids(self, caption: str) -> list[int]:
        if not isinstance(caption, str):
            raise TextInputError(f"captions must be str, got {type(caption).__name__}")
        pieces = self.sp.encode(caption)
        keep = self.config.max_length - (1 if self.eos_id >= 0 else 0)
        pieces = pieces[:keep]
        return pieces + ([self.eos_id] if self.eos_id >= 0 else [])

    def tokenize(self, captions, pad_to_max: bool = False) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(captions, str):
            raise TextInputError("tokenize expects a list of captions, not one string (wrap it in a list)")
        captions = list(captions)
        if not captions:
            raise TextInputError("tokenize got no captions")
        rows = [self.token_ids(c) for c in captions]
        length = self.config.max_length if pad_to_max else max(1, max(len(r) for r in rows))
        ids = np.full((len(rows), length), self.pad_id, np.int32)
        mask = np.zeros((len(rows), length), np.int32)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        return ids, mask

    def encode_hidden(self, ids, mask) -> np.ndarray:
        """Raw last hidden states (padded positions included, as Hugging Face returns them)."""
        ids, mask = self._check(ids, mask)
        return np.asarray(self._apply(self.params, jnp.asarray(ids), jnp.asarray(mask)), np.float32)

    def embed(self, ids, mask) -> np.ndarray:
        ids, mask = self._check(ids, mask)
        out = self._apply(self.params, jnp.asarray(ids), jnp.asarray(mask))
        return np.asarray(out * jnp.asarray(mask)[..., None], np.float32)

    def _check(self, ids, mask):
        ids, mask = np.asarray(ids), np.asarray(mask)
        if ids.ndim != 2 or ids.shape != mask.shape:
            raise TextInputError(f"ids and mask must both be int [B, L]; got {ids.shape} and {mask.shape}")
        if not (np.issubdtype(ids.dtype, np.integer) and np.issubdtype(mask.dtype, np.integer) or mask.dtype == bool):
            raise TextInputError(f"ids and mask must be integer arrays; got {ids.dtype} and {mask.dtype}")
        if ids.shape[0] == 0 or ids.shape[1] == 0:
            raise TextInputError(f"empty ids: shape {ids.shape}")
        if ids.shape[1] > self.config.max_length:
            raise TextInputError(f"ids have {ids.shape[1]} tokens > max_length {self.config.max_length}")
        if ids.min() < 0 or ids.max() >= self.config.vocab_size:
            raise TextInputError(f"ids must lie in [0, {self.config.vocab_size})")
        return ids.astype(np.int32), mask.astype(np.int32)

    # ------------------------------------------------------------------ storage
    def save(self, directory: str) -> str:
        """Write a Hugging Face layout: config.json + model.safetensors + spiece.model."""
        import fsspec
        import safetensors.numpy as stn

        fs, root = fsspec.core.url_to_fs(directory)
        fs.makedirs(root, exist_ok=True)
        with fs.open(f"{root}/config.json", "w") as f:
            json.dump(to_hf_config(self.config), f, indent=2, sort_keys=True)
        with fs.open(f"{root}/model.safetensors", "wb") as f:
            f.write(stn.save(params_to_hf(jax.device_get(self.params), self.config), metadata={"format": "pt"}))
        with fs.open(f"{root}/spiece.model", "wb") as f:
            f.write(self.spiece_bytes)
        return directory


def _default_spiece() -> bytes:
    if not os.path.exists(DEFAULT_SPM):
        raise TextInputError(
            f"no default SentencePiece model at {DEFAULT_SPM}; make it with\n"
            "  videopoet tokenizer train --kind text --data synth --out tokenizers/text/assets"
        )
    with open(DEFAULT_SPM, "rb") as f:
        return f.read()


def from_preset(cfg: TextConfig, spiece: bytes | None = None) -> TextEncoder:
    params = params_from_hf(random_hf_tensors(cfg, cfg.seed), cfg)
    return TextEncoder(cfg, params, spiece if spiece is not None else _default_spiece())


def load(
    source: str | TextConfig = "small", overrides=(), spiece: str | bytes | None = None, dtype: str | None = None
) -> TextEncoder:
    """A preset (seeded random encoder + the default SentencePiece), a YAML config, or a HF T5 directory.

    ``spiece`` replaces the SentencePiece model (path/URI or bytes); ``dtype`` ("bfloat16") sets the
    compute dtype of a loaded checkpoint.
    """
    sp_bytes = None
    if spiece is not None:
        sp_bytes = spiece if isinstance(spiece, bytes) else load_sentencepiece(spiece).serialized_model_proto()
    if isinstance(source, TextConfig):
        return from_preset(source, sp_bytes)
    if source in PRESETS or str(source).endswith((".yaml", ".yml")):
        return from_preset(load_text_config(source, overrides), sp_bytes)
    extra = {"dtype": dtype} if dtype else {}
    import fsspec

    fs, root = fsspec.core.url_to_fs(source)
    if not fs.exists(root):
        raise TextInputError(f"{source!r} is neither a preset ({', '.join(PRESETS)}) nor an existing directory")
    cfg, params, dir_spiece = load_hf_t5(source, **extra)
    if overrides:
        from videopoet.schemas.config import apply_overrides

        cfg = apply_overrides(cfg, overrides)
    sp = sp_bytes or dir_spiece
    if sp is None:
        raise TextInputError(f"{source}: no spiece.model (give spiece=PATH)")
    return TextEncoder(cfg, params, sp)


def architecture(source: str = "small") -> TextConfig:
    """The encoder config ``load(source)`` would build, without its weights or SentencePiece model: a preset,
    a YAML config, or a Hugging Face directory's ``config.json`` (``"default"`` is the ``small`` preset).
    What an ahead-of-time compile needs: the weights' shapes, not their values."""
    if source == "default":
        return load_text_config("small")
    if source in PRESETS or str(source).endswith((".yaml", ".yml")):
        return load_text_config(source)
    import fsspec

    from videopoet.tokenizers.text.config import from_hf_config

    fs, root = fsspec.core.url_to_fs(source)
    path = f"{root.rstrip('/')}/config.json"
    if not fs.exists(path):
        raise TextInputError(
            f"{source!r} is neither a preset ({', '.join(PRESETS)}) nor a directory with a config.json"
        )
    with fs.open(path, "r") as f:
        hf = json.load(f)
    return from_hf_config(hf, name=str(hf.get("_name_or_path") or "t5"))


def default() -> TextEncoder:
    """The embedded default: shipped SentencePiece model + seeded random ``small`` T5 encoder."""
    return from_preset(load_text_config("small"))
