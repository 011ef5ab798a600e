"""Text tokenizer: SentencePiece training/determinism, tokenize rules (max 64), relative position
buckets, and T5 encoder parity against an independent numpy reference on an HF-layout checkpoint."""

from __future__ import annotations

import hashlib
import json
import math
import os

import numpy as np
import pytest
import safetensors.numpy as stn

from videopoet.pipelines.synth import sources
from videopoet.tokenizers import text
from videopoet.tokenizers.text.spm import load_sentencepiece, read_captions, train_sentencepiece
from videopoet.tokenizers.text.t5 import T5CheckpointError, relative_position_bucket

SPM = os.path.join(os.path.dirname(text.__file__), "assets", "spiece.model")


# ------------------------------------------------------------------------------ numpy reference
def ref_bucket(rel: int, num_buckets: int, max_distance: int) -> int:
    half = num_buckets // 2
    out = half if rel > 0 else 0
    n = abs(rel)
    exact = half // 2
    if n < exact:
        return out + n
    large = exact + int(math.log(n / exact) / math.log(max_distance / exact) * (half - exact))
    return out + min(large, half - 1)


def ref_rmsnorm(x, w, eps):
    return w * x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps)


def ref_t5_encoder(t: dict, hf: dict, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Straightforward float64 T5 encoder forward over HF-named tensors ([out, in] Linear weights)."""
    g = {k: v.astype(np.float64) for k, v in t.items()}
    h_n, d_kv, eps = hf["num_heads"], hf["d_kv"], hf["layer_norm_epsilon"]
    gated = hf["feed_forward_proj"].startswith("gated")
    out = np.zeros(ids.shape + (hf["d_model"],))
    table = g["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    for b in range(ids.shape[0]):
        length = ids.shape[1]
        x = g["shared.weight"][ids[b]]
        bias = np.zeros((h_n, length, length))
        for qi in range(length):
            for ki in range(length):
                bk = ref_bucket(ki - qi, hf["relative_attention_num_buckets"], hf["relative_attention_max_distance"])
                bias[:, qi, ki] = table[bk]
                if mask[b, ki] == 0:
                    bias[:, qi, ki] += np.finfo(np.float32).min
        for i in range(hf["num_layers"]):
            p = f"encoder.block.{i}.layer."
            y = ref_rmsnorm(x, g[p + "0.layer_norm.weight"], eps)
            q = y @ g[p + "0.SelfAttention.q.weight"].T
            k = y @ g[p + "0.SelfAttention.k.weight"].T
            v = y @ g[p + "0.SelfAttention.v.weight"].T
            heads = []
            for h in range(h_n):
                sl = slice(h * d_kv, (h + 1) * d_kv)
                s = q[:, sl] @ k[:, sl].T + bias[h]
                s = np.exp(s - s.max(-1, keepdims=True))
                s /= s.sum(-1, keepdims=True)
                heads.append(s @ v[:, sl])
            x = x + np.concatenate(heads, -1) @ g[p + "0.SelfAttention.o.weight"].T
            y = ref_rmsnorm(x, g[p + "1.layer_norm.weight"], eps)
            if gated:
                a = y @ g[p + "1.DenseReluDense.wi_0.weight"].T
                gelu = 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a**3)))
                f = gelu * (y @ g[p + "1.DenseReluDense.wi_1.weight"].T)
            else:
                f = np.maximum(y @ g[p + "1.DenseReluDense.wi.weight"].T, 0)
            x = x + f @ g[p + "1.DenseReluDense.wo.weight"].T
        out[b] = ref_rmsnorm(x, g["encoder.final_layer_norm.weight"], eps)
    return out


def write_hf_checkpoint(directory, ffn: str, seed: int = 0, sharded: bool = False, with_decoder: bool = False) -> dict:
    """A random T5 encoder checkpoint in Hugging Face layout, written from numpy alone."""
    rng = np.random.default_rng(seed)
    hf = {
        "vocab_size": 600,
        "d_model": 24,
        "d_kv": 6,
        "d_ff": 40,
        "num_layers": 2,
        "num_heads": 4,
        "relative_attention_num_buckets": 8,
        "relative_attention_max_distance": 20,
        "layer_norm_epsilon": 1e-6,
        "feed_forward_proj": ffn,
        "model_type": "t5",
    }
    d, inner, ff = hf["d_model"], hf["num_heads"] * hf["d_kv"], hf["d_ff"]
    t = {
        "shared.weight": rng.normal(0, 1, (hf["vocab_size"], d)),
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": rng.normal(0, 1, (8, 4)),
        "encoder.final_layer_norm.weight": rng.uniform(0.5, 1.5, d),
    }
    for i in range(hf["num_layers"]):
        p = f"encoder.block.{i}.layer."
        for m in "qkv":
            t[p + f"0.SelfAttention.{m}.weight"] = rng.normal(0, d**-0.5, (inner, d))
        t[p + "0.SelfAttention.o.weight"] = rng.normal(0, inner**-0.5, (d, inner))
        t[p + "0.layer_norm.weight"] = rng.uniform(0.5, 1.5, d)
        t[p + "1.layer_norm.weight"] = rng.uniform(0.5, 1.5, d)
        for m in ("wi_0", "wi_1") if ffn.startswith("gated") else ("wi",):
            t[p + f"1.DenseReluDense.{m}.weight"] = rng.normal(0, d**-0.5, (ff, d))
        t[p + "1.DenseReluDense.wo.weight"] = rng.normal(0, ff**-0.5, (d, ff))
    t = {k: np.ascontiguousarray(v, np.float32) for k, v in t.items()}
    extra = {"decoder.block.0.layer.0.SelfAttention.q.weight": np.zeros((inner, d), np.float32)} if with_decoder else {}
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf, f)
    if sharded:
        names = sorted({**t, **extra})
        half = len(names) // 2
        parts = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
        allt = {**t, **extra}
        for fn, ks in parts.items():
            stn.save_file({k: allt[k] for k in ks}, os.path.join(directory, fn), metadata={"format": "pt"})
        with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": {k: fn for fn, ks in parts.items() for k in ks}}, f)
    else:
        stn.save_file({**t, **extra}, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    with open(SPM, "rb") as src, open(os.path.join(directory, "spiece.model"), "wb") as dst:
        dst.write(src.read())
    return {"tensors": t, "config": hf}


# ------------------------------------------------------------------------------ buckets
def test_relative_position_bucket_hand_computed():
    # 32 buckets, max distance 128: 16 per direction, 8 exact, then log-spaced up to 128
    rel = np.array([0, -1, 1, -7, 7, -8, -15, -16, -32, -64, -127, -128, -1000, 20, 128, 1000])
    want = [0, 1, 17, 7, 23, 8, 9, 10, 12, 14, 15, 15, 15, 26, 31, 31]
    np.testing.assert_array_equal(relative_position_bucket(rel, 32, 128), want)


def test_relative_position_bucket_matches_reference_loop():
    rel = np.arange(-200, 201)
    for nb, md in ((32, 128), (8, 20), (64, 256)):
        got = relative_position_bucket(rel, nb, md)
        assert got.tolist() == [ref_bucket(int(r), nb, md) for r in rel]


# ------------------------------------------------------------------------------ parity
@pytest.mark.parametrize("ffn, sharded", [("gated-gelu", False), ("relu", True)])
def test_t5_parity_with_numpy_reference(tmp_path, ffn, sharded):
    ck = write_hf_checkpoint(tmp_path / "t5", ffn, sharded=sharded, with_decoder=True)
    enc = text.load(str(tmp_path / "t5"))
    assert enc.config.feed_forward_proj == ffn and enc.config.d_model == 24
    ids, mask = enc.tokenize(["a red circle moves left", "two big squares bounce around the frame quickly"])
    ids[0, -1] = 599  # a high id of the encoder vocabulary, beyond the SentencePiece pieces (still padded out)
    got = enc.encode_hidden(ids, mask)
    want = ref_t5_encoder(ck["tensors"], ck["config"], ids, mask)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    emb = enc.embed(ids, mask)
    np.testing.assert_allclose(emb, want * mask[..., None], atol=1e-4, rtol=1e-4)
    assert np.all(emb[mask == 0] == 0)


def test_t5_bfloat16_compute_close(tmp_path):
    ck = write_hf_checkpoint(tmp_path / "t5", "gated-gelu")
    enc = text.load(str(tmp_path / "t5"), dtype="bfloat16")
    assert enc.config.dtype == "bfloat16"
    ids, mask = enc.tokenize(["a small green cross drifts upward"])
    got = enc.embed(ids, mask)
    assert got.dtype == np.float32
    want = ref_t5_encoder(ck["tensors"], ck["config"], ids, mask)
    assert np.max(np.abs(got - want)) < 0.15 and np.mean(np.abs(got - want)) < 0.03


def test_t5_checkpoint_errors(tmp_path):
    write_hf_checkpoint(tmp_path / "a", "gated-gelu")
    os.remove(tmp_path / "a" / "model.safetensors")
    (tmp_path / "a" / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(T5CheckpointError, match="pickle"):
        text.load(str(tmp_path / "a"))
    ck = write_hf_checkpoint(tmp_path / "b", "gated-gelu")
    t = dict(ck["tensors"])
    del t["encoder.block.1.layer.1.DenseReluDense.wo.weight"]
    stn.save_file(t, str(tmp_path / "b" / "model.safetensors"))
    with pytest.raises(T5CheckpointError, match="lacks"):
        text.load(str(tmp_path / "b"))
    t = dict(ck["tensors"], **{"encoder.final_layer_norm.weight": np.ones(7, np.float32)})
    stn.save_file(t, str(tmp_path / "b" / "model.safetensors"))
    with pytest.raises(T5CheckpointError, match="shape"):
        text.load(str(tmp_path / "b"))
    with pytest.raises(text.TextInputError, match="neither a preset"):
        text.load(str(tmp_path / "missing"))


def test_t5_parity_with_transformers(tmp_path):
    """Optional: Hugging Face ``T5EncoderModel`` (random, small) vs this encoder, fp32, atol 1e-4.

    Skipped unless ``transformers`` and ``torch`` are importable. To run it:
    ``pip install torch==2.13.0 transformers`` in the venv (not project dependencies), then
    ``pytest tests/test_text.py -k transformers``.
    """
    transformers = pytest.importorskip("transformers", reason="transformers not installed (optional parity test)")
    torch = pytest.importorskip("torch", reason="torch not installed (optional parity test)")
    for ffn in ("gated-gelu", "relu"):
        cfg = transformers.T5Config(
            vocab_size=600,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=3,
            num_heads=4,
            relative_attention_num_buckets=16,
            relative_attention_max_distance=40,
            feed_forward_proj=ffn,
            dropout_rate=0.0,
        )
        torch.manual_seed(0)
        model = transformers.T5EncoderModel(cfg).eval()
        d = tmp_path / ffn
        model.save_pretrained(str(d), safe_serialization=True)
        with open(SPM, "rb") as src, open(d / "spiece.model", "wb") as dst:
            dst.write(src.read())
        enc = text.load(str(d))
        ids, mask = enc.tokenize(
            ["a red circle moves left", "a big blue square bounces around on a striped background"]
        )
        with torch.no_grad():
            want = model(
                input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long)
            ).last_hidden_state.numpy()
        np.testing.assert_allclose(enc.encode_hidden(ids, mask), want, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------ SentencePiece / tokenize
def test_sentencepiece_training_is_deterministic():
    caps = sources.captions(600)
    a = train_sentencepiece(caps, 256)
    b = train_sentencepiece(caps, 256)
    assert hashlib.sha256(a).digest() == hashlib.sha256(b).digest()
    sp = load_sentencepiece(a)
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    assert sp.get_piece_size() == 256
    with pytest.raises(text.CaptionDataError):
        train_sentencepiece(["", "  "])


def test_tokenize_rules():
    enc = text.load("tiny")
    ids, mask = enc.tokenize(["a red circle moves left", "a red circle moves left", ""])
    assert ids.dtype == np.int32 and mask.dtype == np.int32 and ids.shape == mask.shape
    np.testing.assert_array_equal(ids[0], ids[1])  # deterministic
    n = int(mask[0].sum())
    assert ids[0, n - 1] == 1 and np.all(ids[0, n:] == 0)  # </s> then <pad>
    assert ids[2, 0] == 1 and mask[2].sum() == 1  # empty caption -> just </s>
    assert ids.shape[1] == n  # padded to the longest
    ids64, _ = enc.tokenize(["a red circle"], pad_to_max=True)
    assert ids64.shape == (1, 64)


def test_truncation_to_64_tokens():
    enc = text.load("tiny")
    long = " ".join(["a big red circle bounces around the frame"] * 20)
    pieces = enc.sp.encode(long)
    assert len(pieces) > 64
    ids, mask = enc.tokenize([long, "short"])
    assert ids.shape == (2, 64) and mask[0].sum() == 64
    assert ids[0, :63].tolist() == pieces[:63] and ids[0, 63] == 1  # first 63 pieces + </s>
    emb = enc.embed(ids, mask)
    assert emb.shape == (2, 64, enc.config.d_model) and emb.dtype == np.float32


def test_input_errors():
    enc = text.load("tiny")
    with pytest.raises(text.TextInputError, match="list"):
        enc.tokenize("one string")
    with pytest.raises(text.TextInputError, match="no captions"):
        enc.tokenize([])
    with pytest.raises(text.TextInputError, match="str"):
        enc.tokenize([3])
    with pytest.raises(text.TextInputError, match="max_length"):
        enc.embed(np.zeros((1, 65), np.int32), np.ones((1, 65), np.int32))
    with pytest.raises(text.TextInputError, match=r"\[0, 512\)"):
        enc.embed(np.full((1, 3), 512, np.int32), np.ones((1, 3), np.int32))
    with pytest.raises(text.TextInputError, match="B, L"):
        enc.embed(np.zeros((1, 3), np.int32), np.ones((1, 4), np.int32))


def test_default_and_save_round_trip(tmp_path):
    enc = text.default()
    assert enc.config.name == "t5-small-random" and enc.dim == 256
    assert enc.fingerprint == text.default().fingerprint  # deterministic weights
    enc.save(str(tmp_path / "hf"))
    back = text.load(str(tmp_path / "hf"))
    assert back.fingerprint == enc.fingerprint
    ids, mask = enc.tokenize(["a purple circle moves down"])
    np.testing.assert_allclose(back.embed(ids, mask), enc.embed(ids, mask), atol=1e-6)
    assert text.load("tiny").fingerprint != enc.fingerprint


def test_paper_preset_is_t5_v1_1_xl():
    cfg = text.load_text_config("paper")
    assert (cfg.d_model, cfg.num_layers, cfg.num_heads, cfg.d_ff, cfg.d_kv) == (2048, 24, 32, 5120, 64)
    assert cfg.feed_forward_proj == "gated-gelu" and cfg.max_length == 64
    # storage cost of embeddings vs ids (documented in the tokenizer module)
    assert 64 * cfg.d_model * 2 == 256 * 1024 and 64 * 4 == 256


def test_read_captions_sources(tmp_path):
    (tmp_path / "caps.txt").write_text("a red circle\n\nA blue square moves left\n")
    assert read_captions(str(tmp_path / "caps.txt")) == ["a red circle", "A blue square moves left"]
    d = tmp_path / "dir"
    d.mkdir()
    (d / "0.txt").write_text("one  caption\n")
    (d / "1.txt").write_text("two")
    assert read_captions(str(d)) == ["one caption", "two"]
    with pytest.raises(text.CaptionDataError):
        read_captions(str(tmp_path / "none*.txt"))


def test_cli_train_text(tmp_path, capsys):
    from videopoet.cli.main import main

    (tmp_path / "caps.txt").write_text("\n".join(sources.captions(300)))
    outs = []
    for i in range(2):
        assert (
            main(
                [
                    "tokenizer",
                    "train",
                    "--kind",
                    "text",
                    "--data",
                    str(tmp_path / "caps.txt"),
                    "--out",
                    str(tmp_path / f"o{i}"),
                    "--vocab-size",
                    "200",
                    "--json",
                ]
            )
            == 0
        )
        outs.append(json.loads(capsys.readouterr().out))
    assert outs[0]["sha256"] == outs[1]["sha256"] and outs[0]["vocab_size"] == 200
    sp = load_sentencepiece(str(tmp_path / "o0" / "spiece.model"))
    assert sp.get_piece_size() == 200


def test_shipped_spiece_matches_recipe():
    """assets/spiece.model is `videopoet tokenizer train --kind text --data synth --vocab-size 512`."""
    with open(SPM, "rb") as f:
        shipped = f.read()
    assert train_sentencepiece(sources.captions(4000), 512) == shipped


def test_load_from_fsspec_memory():
    enc = text.load("tiny")
    enc.save("memory://videopoet-test/t5tiny")
    back = text.load("memory://videopoet-test/t5tiny")
    assert back.fingerprint == enc.fingerprint
