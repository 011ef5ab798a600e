"""Task adaptation (`videopoet train --init-from`, trainer/adapt.py): a trained run's weights, a fresh optimizer."""

import json

import jax
import numpy as np
import pytest

from videopoet.cli.main import main
from videopoet.rundir.metrics import read_metrics
from videopoet.schemas import store
from videopoet.trainer import adapt, checkpoint, model, synthetic, train
from videopoet.trainer.config import load_train_config

OVR = ["log_every=1", "mesh.data=1", "batch_size=4", "data.mixture={t2v: 1.0, fp: 1.0}"]


def _lineage(video_fingerprint: str) -> dict:
    """A manifest lineage naming the video tokenizer (fingerprint only: what the check compares)."""
    bits = int(np.log2(load_train_config("tiny").model.vocab.visual_size))
    ref = {"kind": "visual", "spec": "x", "name": "magvit2-x", "config": {"lfq_bits": bits}}
    return {"tokenizers": {"video": {**ref, "fingerprint": video_fingerprint}}}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = str(tmp_path_factory.mktemp("root"))
    recs = synthetic.make_records(12, load_train_config("tiny").model.vocab)
    store.write_dataset(r, "syn", "1", {"a.tar": recs}, lineage=_lineage("a" * 64))
    # the same records under another video tokenizer (a re-tokenized corpus)
    store.write_dataset(r, "syn-retok", "1", {"a.tar": recs}, lineage=_lineage("b" * 64))
    return r


@pytest.fixture(scope="module")
def source(root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("src") / "pre")
    res = train.train(load_train_config("tiny", [*OVR, "steps=40", "checkpoint_every=20"]), "syn@1", out, root=root)
    assert res["status"] == "completed"
    return out


def _equal(a, b) -> bool:
    return all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x, y: bool(np.array_equal(x, y)), a, b)))


def test_initial_state_holds_the_source_weights_and_a_fresh_optimizer(source):
    cfg = load_train_config("tiny", [*OVR, "steps=5", "data.mixture={t2v: 1.0}", "learning_rate=0.0001"])
    trainer = train._trainer(cfg)
    state = adapt.initial_state(trainer, adapt.resolve(source))
    assert int(state["step"]) == 0
    assert _equal(state["params"], checkpoint.load_run(source).params)
    fresh = trainer.init()
    assert _equal(state["opt_state"], fresh["opt_state"])  # zero moments, count 0
    assert not _equal(state["params"], fresh["params"])
    # a checkpoint dir of the source: that step's weights
    early = adapt.resolve(f"{source}/checkpoints/20")
    assert early.step == 20
    assert _equal(adapt.initial_state(trainer, early)["params"], checkpoint.load_run(source, step=20).params)


def test_cli_adapted_run_starts_where_the_source_ended(root, source, tmp_path, capsys):
    adapted, scratch = str(tmp_path / "adapted"), str(tmp_path / "scratch")
    common = [
        "train",
        "--config",
        "tiny",
        "--data",
        "syn@1",
        "--root",
        root,
        "--json",
        *OVR[:3],
        "data.mixture={t2v: 1.0}",
        "steps=3",
        "warmup_steps=1",
        "learning_rate=0.001",
    ]
    assert main([*common, "--out", adapted, "--init-from", source]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["init_from"]["step"] == 40 and res["step"] == 3
    assert main([*common, "--out", scratch]) == 0
    capsys.readouterr()
    first_adapted = read_metrics(adapted)[0]["loss"]
    first_scratch = read_metrics(scratch)[0]["loss"]
    src_end = float(np.mean([r["loss"] for r in read_metrics(source)[-5:]]))
    assert first_adapted < 0.7 * first_scratch  # the pretrained weights, not a fresh init
    assert first_adapted < 2 * src_end + 0.5
    info = checkpoint.read_run_info(adapted)
    assert info["init_from"]["step"] == 40 and info["config"]["data"]["mixture"] == {"t2v": 1.0}
    # its model directory says which pretrained run and step it was adapted from
    from videopoet.trainer import export

    rec = export.export_run(adapted, str(tmp_path / "model"))
    assert rec["source"]["step"] == 3 and rec["source"]["init_from"] == info["init_from"]
    # a restart resumes from the adapted run's own checkpoint (the source is not read again)
    assert main([*common[:-3], "steps=4", "warmup_steps=1", "learning_rate=0.001", "--out", adapted]) == 2
    capsys.readouterr()  # (cosine: not extendable) ...
    assert main([*common, "--out", adapted, "--init-from", source]) == 0  # same config: already complete
    assert json.loads(capsys.readouterr().out)["resumed_from"] == 3


def test_architecture_mismatch_is_one_line(root, source, tmp_path, capsys):
    args = [
        "train",
        "--config",
        "tiny",
        "--data",
        "syn@1",
        "--root",
        root,
        "--out",
        str(tmp_path / "r"),
        *OVR,
        "steps=2",
        "model.layers=3",
        "model.mlp_dim=48",
        "--init-from",
        source,
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("videopoet: error: --init-from") and "\n" not in err
    assert "model.layers 2 != 3" in err and "model.mlp_dim 64 != 48" in err
    assert not (tmp_path / "r" / "config.yaml").exists()  # nothing recorded: the same --out can be reused
    assert main(args[:-2] + ["--init-from", str(tmp_path / "nope")]) == 2
    assert "not a training run directory" in capsys.readouterr().err
    # compute-only fields may differ
    ok = [a for a in args if not a.startswith("model.")]
    ok.insert(ok.index("--init-from"), "model.attention=einsum")
    ok[ok.index("--out") + 1] = str(tmp_path / "ok")
    assert main(ok) == 0


def test_grown_model_starts_as_the_source_and_trains(root, source, tmp_path, capsys):
    """--grow: 2 layers -> 5; at step 0 the deeper model's logits equal the source's exactly, the source's
    blocks sit at 0 and 2, the new ones are the identity; then the run trains and records the growth."""
    cfg = load_train_config("tiny", [*OVR, "steps=5", "model.layers=5"])
    trainer = train._trainer(cfg)
    src = adapt.resolve(source, grow=True)
    assert adapt.block_placement(2, 5) == [0, 2]
    params = adapt.initial_state(trainer, src)["params"]
    old = checkpoint.load_run(source).params
    assert _equal(params["block_0"], old["block_0"]) and _equal(params["block_2"], old["block_1"])
    for new in ("block_1", "block_3", "block_4"):
        assert not np.any(np.asarray(params[new]["attn"]["o"]["kernel"]))
        assert not np.any(np.asarray(params[new]["mlp"]["down"]["kernel"]))
        assert np.any(np.asarray(params[new]["attn"]["q"]["kernel"]))  # its own init: it can learn
    rng = np.random.default_rng(0)
    tokens = jax.numpy.asarray(rng.integers(0, cfg.model.vocab_size, (2, 24)), jax.numpy.int32)
    valid = jax.numpy.ones((2, 24), bool)
    prefix = jax.numpy.asarray([5, 9], jax.numpy.int32)
    deep = model.forward(model.build(cfg.model), jax.device_get(params), tokens, valid, prefix)
    shallow = model.forward(model.build(src.cfg.model), old, tokens, valid, prefix)
    assert np.array_equal(np.asarray(deep), np.asarray(shallow))

    args = ["train", "--config", "tiny", "--data", "syn@1", "--root", root, "--json", *OVR[:3]]
    args += ["data.mixture={t2v: 1.0}", "steps=3", "warmup_steps=1", "learning_rate=0.001", "model.layers=4"]
    out = str(tmp_path / "grown")
    assert main([*args, "--out", out, "--init-from", source, "--grow"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["step"] == 3 and res["init_from"]["grown"] == {"from_layers": 2}
    first = read_metrics(out)[0]["loss"]
    assert first < 2 * float(np.mean([r["loss"] for r in read_metrics(source)[-5:]])) + 0.5
    after = checkpoint.load_run(out).params
    assert np.any(np.asarray(after["block_1"]["attn"]["o"]["kernel"]))  # the new blocks were trained
    # refusals, one line each: not deeper; another field differs; --grow without --init-from
    for extra, why in (
        (["model.layers=2"], "needs more layers than the source's 2"),
        (["model.mlp_dim=48"], "model.mlp_dim 64 != 48"),
    ):
        assert main([*args, *extra, "--out", str(tmp_path / "no"), "--init-from", source, "--grow"]) == 2
        err = capsys.readouterr().err.strip()
        assert why in err and "\n" not in err
    assert main([*args, "--out", str(tmp_path / "no"), "--grow"]) == 2
    assert "--grow deepens the prefix LM of --init-from" in capsys.readouterr().err
    assert not (tmp_path / "no" / "config.yaml").exists()  # nothing recorded


def test_a_source_trained_on_other_tokenizers_is_refused_unless_allowed(root, source, tmp_path, capsys):
    args = ["train", "--config", "tiny", "--data", "syn-retok@1", "--root", root, "--json", *OVR, "steps=1"]
    args += ["--init-from", source]
    out = str(tmp_path / "r")
    assert main([*args, "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("videopoet: error: --init-from") and "\n" not in err
    assert f"video {'a' * 12} -> {'b' * 12}" in err and "--allow-tokenizer-change" in err
    assert not (tmp_path / "r" / "config.yaml").exists()  # nothing recorded: the same --out can be reused
    assert main([*args, "--out", out, "--allow-tokenizer-change"]) == 0
    capsys.readouterr()
    rec = checkpoint.read_run_info(out)["init_from"]
    assert rec["tokenizers"]["video"] == "a" * 64
    assert rec["tokenizers_changed"] == {"video": {"from": "a" * 64, "to": "b" * 64}}
    # the same tokenizers: accepted without the flag, and nothing recorded as changed
    same = str(tmp_path / "same")
    assert main([*[a if a != "syn-retok@1" else "syn@1" for a in args], "--out", same]) == 0
    capsys.readouterr()
    assert "tokenizers_changed" not in checkpoint.read_run_info(same)["init_from"]
    # the flag means nothing without --init-from
    assert main([*args[: args.index("--init-from")], "--out", str(tmp_path / "x"), "--allow-tokenizer-change"]) == 2
    assert "--allow-tokenizer-change" in capsys.readouterr().err
