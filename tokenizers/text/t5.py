"""T5 / T5 v1.1 encoder in Flax Linen, and loading of Hugging Face checkpoints (safetensors only).

Architecture (pre-norm, no biases anywhere):

    x = shared_embedding[ids]                       (no scaling)
    bias = relative_attention_bias[bucket(k - q)]   (computed once, from block 0's table, shared by all blocks)
    per block:  x += O(softmax(Q K^T + bias + mask_bias) V)   on RMSNorm(x)   (no 1/sqrt(d) scaling: T5)
                x += FFN(RMSNorm(x))    relu: wo(relu(wi x)); gated-gelu: wo(gelu_tanh(wi_0 x) * wi_1 x)
    out = RMSNorm(x)                                (final_layer_norm)

RMSNorm (T5LayerNorm): ``w * x / sqrt(mean(x^2) + eps)`` computed in float32. With ``dtype=bfloat16``
the matmuls run in bfloat16 while the norms and the softmax stay float32; the output is float32.

Hugging Face names -> this module's parameter tree (torch ``Linear`` weights are [out, in]; Flax kernels
[in, out], so they are transposed):

    shared.weight | encoder.embed_tokens.weight                        shared/embedding
    encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight  relative_attention_bias/embedding
    encoder.block.{i}.layer.0.SelfAttention.{q,k,v,o}.weight            block_{i}/{q,k,v,o}/kernel   (T)
    encoder.block.{i}.layer.0.layer_norm.weight                         block_{i}/attn_norm/scale
    encoder.block.{i}.layer.1.DenseReluDense.{wi,wi_0,wi_1,wo}.weight   block_{i}/{wi,wi_0,wi_1,wo}/kernel (T)
    encoder.block.{i}.layer.1.layer_norm.weight                         block_{i}/ffn_norm/scale
    encoder.final_layer_norm.weight                                     final_norm/scale

Decoder weights in a full T5 checkpoint (``decoder.*``, ``lm_head.*``) are ignored.
"""

from __future__ import annotations

import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from videopoet.schemas.errors import VideoPoetError
from videopoet.tokenizers.text.config import TextConfig, from_hf_config


class T5CheckpointError(VideoPoetError, ValueError):
    """A Hugging Face T5 directory is missing files or holds unexpected tensors."""


# ------------------------------------------------------------------------------ position buckets
def relative_position_bucket(relative_position, num_buckets: int = 32, max_distance: int = 128) -> np.ndarray:
    """Bidirectional T5 bucket of ``key_pos - query_pos`` (numpy int array in, int32 array out).

    Half the buckets are for positive offsets (key after query), half for the rest. Within a half,
    the first ``num_buckets // 4`` offsets get a bucket each; larger offsets share logarithmically
    wider buckets up to ``max_distance``; beyond that, the last bucket. Computed in float32 like the
    reference implementation so boundary offsets land in the same bucket.
    """
    rel = np.asarray(relative_position, np.int64)
    half = num_buckets // 2
    bucket = (rel > 0).astype(np.int64) * half
    n = np.abs(rel)
    max_exact = half // 2
    is_small = n < max_exact
    with np.errstate(divide="ignore"):
        scaled = (
            np.log(np.maximum(n, 1).astype(np.float32) / np.float32(max_exact))
            / np.float32(math.log(max_distance / max_exact))
            * np.float32(half - max_exact)
        ).astype(np.int64)
    large = np.minimum(max_exact + scaled, half - 1)
    return (bucket + np.where(is_small, n, large)).astype(np.int32)


def bucket_table(length: int, cfg: TextConfig) -> np.ndarray:
    pos = np.arange(length)
    return relative_position_bucket(
        pos[None, :] - pos[:, None], cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance
    )  # [q, k]


# ------------------------------------------------------------------------------ model
class RMSNorm(nn.Module):
    eps: float = 1e-6

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, -1, keepdims=True) + self.eps)
        return (scale * y).astype(x.dtype)


def _act(name: str):
    if name == "relu":
        return nn.relu
    if name == "silu":
        return nn.silu
    return lambda x: nn.gelu(x, approximate=True)


class T5Block(nn.Module):
    cfg: TextConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, bias):
        cfg = self.cfg
        dense = lambda n, name: nn.Dense(n, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32, name=name)  # noqa: E731
        b, length, _ = x.shape
        inner = cfg.num_heads * cfg.d_kv
        h = RMSNorm(cfg.layer_norm_epsilon, name="attn_norm")(x)
        q = dense(inner, "q")(h).reshape(b, length, cfg.num_heads, cfg.d_kv)
        k = dense(inner, "k")(h).reshape(b, length, cfg.num_heads, cfg.d_kv)
        v = dense(inner, "v")(h).reshape(b, length, cfg.num_heads, cfg.d_kv)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) + bias
        probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
        att = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, length, inner)
        x = x + dense(cfg.d_model, "o")(att).astype(x.dtype)
        h = RMSNorm(cfg.layer_norm_epsilon, name="ffn_norm")(x)
        act = _act(cfg.activation)
        if cfg.gated:
            f = act(dense(cfg.d_ff, "wi_0")(h)) * dense(cfg.d_ff, "wi_1")(h)
        else:
            f = act(dense(cfg.d_ff, "wi")(h))
        return x + dense(cfg.d_model, "wo")(f).astype(x.dtype)


class T5Encoder(nn.Module):
    """ids int [B, L], mask {0,1} [B, L] -> last hidden states float32 [B, L, d_model]."""

    cfg: TextConfig

    @nn.compact
    def __call__(self, ids, mask):
        cfg = self.cfg
        dtype = jnp.bfloat16 if cfg.dtype == "bfloat16" else jnp.float32
        emb = nn.Embed(cfg.vocab_size, cfg.d_model, name="shared", embedding_init=nn.initializers.normal(1.0))
        rel = nn.Embed(
            cfg.relative_attention_num_buckets,
            cfg.num_heads,
            name="relative_attention_bias",
            embedding_init=nn.initializers.normal(1.0),
        )
        length = ids.shape[1]
        buckets = jnp.asarray(bucket_table(length, cfg))
        pos_bias = jnp.transpose(rel(buckets), (2, 0, 1))[None].astype(jnp.float32)  # [1, H, q, k]
        mask_bias = (1.0 - mask[:, None, None, :].astype(jnp.float32)) * jnp.finfo(jnp.float32).min
        bias = pos_bias + mask_bias
        x = emb(ids).astype(dtype)
        for i in range(cfg.num_layers):
            x = T5Block(cfg, dtype, name=f"block_{i}")(x, bias)
        return RMSNorm(cfg.layer_norm_epsilon, name="final_norm")(x).astype(jnp.float32)


# ------------------------------------------------------------------------------ HF weights
def hf_names(cfg: TextConfig) -> dict[str, tuple[tuple[str, ...], bool]]:
    """HF tensor name -> (path in the Flax param tree, transpose?)."""
    out: dict[str, tuple[tuple[str, ...], bool]] = {
        "shared.weight": (("shared", "embedding"), False),
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": (
            ("relative_attention_bias", "embedding"),
            False,
        ),
        "encoder.final_layer_norm.weight": (("final_norm", "scale"), False),
    }
    ffn = ("wi_0", "wi_1", "wo") if cfg.gated else ("wi", "wo")
    for i in range(cfg.num_layers):
        pre = f"encoder.block.{i}.layer"
        for m in ("q", "k", "v", "o"):
            out[f"{pre}.0.SelfAttention.{m}.weight"] = ((f"block_{i}", m, "kernel"), True)
        out[f"{pre}.0.layer_norm.weight"] = ((f"block_{i}", "attn_norm", "scale"), False)
        for m in ffn:
            out[f"{pre}.1.DenseReluDense.{m}.weight"] = ((f"block_{i}", m, "kernel"), True)
        out[f"{pre}.1.layer_norm.weight"] = ((f"block_{i}", "ffn_norm", "scale"), False)
    return out


def params_from_hf(tensors: dict[str, np.ndarray], cfg: TextConfig) -> dict:
    """HF-named numpy tensors -> Flax params (float32), with shape checks."""
    tensors = dict(tensors)
    if "shared.weight" not in tensors and "encoder.embed_tokens.weight" in tensors:
        tensors["shared.weight"] = tensors["encoder.embed_tokens.weight"]
    names = hf_names(cfg)
    missing = [n for n in names if n not in tensors]
    if missing:
        raise T5CheckpointError(f"T5 checkpoint lacks {len(missing)} encoder tensors, e.g. {missing[:3]}")
    params: dict = {}
    for name, (path, transpose) in names.items():
        a = np.asarray(tensors[name])
        a = a.astype(np.float32) if a.dtype != np.float32 else a
        if transpose:
            a = a.T
        node = params
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = a
    _check_shapes(params, cfg)
    return params


def params_to_hf(params: dict, cfg: TextConfig) -> dict[str, np.ndarray]:
    out = {}
    for name, (path, transpose) in hf_names(cfg).items():
        node = params
        for p in path:
            node = node[p]
        a = np.asarray(node, np.float32)
        out[name] = np.ascontiguousarray(a.T if transpose else a)
    return out


def _check_shapes(params: dict, cfg: TextConfig) -> None:
    expect = jax.eval_shape(
        lambda: T5Encoder(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2), jnp.int32))
    )["params"]
    flat_e = {
        "/".join(str(getattr(k, "key", k)) for k in kp): v.shape
        for kp, v in jax.tree_util.tree_leaves_with_path(expect)
    }
    flat_p = {
        "/".join(str(getattr(k, "key", k)) for k in kp): np.shape(v)
        for kp, v in jax.tree_util.tree_leaves_with_path(params)
    }
    for k, shape in flat_e.items():
        if flat_p.get(k) != tuple(shape):
            raise T5CheckpointError(f"T5 weight {k}: shape {flat_p.get(k)} does not match config {tuple(shape)}")


def _read_safetensors(fs, path: str, wanted: set[str]) -> dict[str, np.ndarray]:
    """The wanted tensors of one safetensors file; local files are read lazily (only those tensors)."""
    import safetensors.numpy as stn
    from safetensors import safe_open

    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        out = {}
        with safe_open(path, framework="numpy") as f:
            for k in f.keys():
                if k in wanted:
                    out[k] = f.get_tensor(k)
        return out
    with fs.open(path, "rb") as f:
        return {k: v for k, v in stn.load(f.read()).items() if k in wanted}


def load_hf_t5(directory: str, **config_extra) -> tuple[TextConfig, dict, bytes | None]:
    """Read a HF T5 directory (local or fsspec): (config, Flax params, spiece.model bytes or None).

    Weights: ``model.safetensors`` or sharded ``model-XXXXX-of-YYYYY.safetensors`` listed in
    ``model.safetensors.index.json``. ``pytorch_model.bin`` is refused (it is a pickle).
    """
    import fsspec

    fs, root = fsspec.core.url_to_fs(directory)
    root = root.rstrip("/")
    if not fs.exists(f"{root}/config.json"):
        raise T5CheckpointError(f"{directory}: no config.json (not a Hugging Face T5 directory)")
    with fs.open(f"{root}/config.json", "r") as f:
        hf = json.load(f)
    name = hf.get("_name_or_path") or directory.rstrip("/").split("/")[-1]
    cfg = from_hf_config(hf, name=str(name) or "t5", **config_extra)
    names = set(hf_names(cfg)) | {"encoder.embed_tokens.weight"}
    if fs.exists(f"{root}/model.safetensors"):
        tensors = _read_safetensors(fs, f"{root}/model.safetensors", names)
    elif fs.exists(f"{root}/model.safetensors.index.json"):
        with fs.open(f"{root}/model.safetensors.index.json", "r") as f:
            weight_map = json.load(f).get("weight_map", {})
        tensors = {}
        for shard in sorted({v for k, v in weight_map.items() if k in names}):
            tensors.update(_read_safetensors(fs, f"{root}/{shard}", names))
    elif fs.exists(f"{root}/pytorch_model.bin"):
        raise T5CheckpointError(
            f"{directory}: only pytorch_model.bin (a pickle, never loaded here); convert it to safetensors, "
            "e.g. with transformers: T5EncoderModel.from_pretrained(d).save_pretrained(d, safe_serialization=True)"
        )
    else:
        raise T5CheckpointError(f"{directory}: no model.safetensors or model.safetensors.index.json")
    params = params_from_hf(tensors, cfg)
    spiece = None
    if fs.exists(f"{root}/spiece.model"):
        with fs.open(f"{root}/spiece.model", "rb") as f:
            spiece = f.read()
    return cfg, params, spiece


def random_hf_tensors(cfg: TextConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded numpy init in HF layout (T5's init scales), independent of jax's RNG."""
    rng = np.random.default_rng(seed)
    out = {}
    inner = cfg.num_heads * cfg.d_kv
    for name in hf_names(cfg):
        if name == "shared.weight":
            a = rng.normal(0, 1.0, (cfg.vocab_size, cfg.d_model))
        elif "relative_attention_bias" in name:
            a = rng.normal(0, cfg.d_model**-0.5, (cfg.relative_attention_num_buckets, cfg.num_heads))
        elif name.endswith("layer_norm.weight"):
            a = np.ones(cfg.d_model)
        elif ".SelfAttention.q." in name:
            a = rng.normal(0, (cfg.d_model * cfg.d_kv) ** -0.5, (inner, cfg.d_model))
        elif ".SelfAttention.o." in name:
            a = rng.normal(0, inner**-0.5, (cfg.d_model, inner))
        elif ".SelfAttention." in name:
            a = rng.normal(0, cfg.d_model**-0.5, (inner, cfg.d_model))
        elif name.endswith("wo.weight"):
            a = rng.normal(0, cfg.d_ff**-0.5, (cfg.d_model, cfg.d_ff))
        else:
            a = rng.normal(0, cfg.d_model**-0.5, (cfg.d_ff, cfg.d_model))
        out[name] = a.astype(np.float32)
    return out
