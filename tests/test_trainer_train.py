"""Train loop: learning, bit-exact resume, refusing bad datasets, run-dir layout (tiny preset)."""

import importlib.util
import json
import os

import pytest

from videopoet.rundir.loop import Hook
from videopoet.schemas import store
from videopoet.schemas.errors import SchemaVersionError, VerifyError
from videopoet.trainer import checkpoint, data, synthetic, train
from videopoet.trainer.config import load_train_config

OVR = [
    "steps=10",
    "log_every=1",
    "checkpoint_every=4",
    "data.mixture={t2v: 1.0, fp: 1.0}",
    "mesh.data=1",
    "batch_size=4",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("root"))
    cfg = load_train_config("tiny")
    recs = synthetic.make_records(16, cfg.model.vocab)
    store.write_dataset(root, "syn", "1", {"a.tar": recs[:10], "b.tar": recs[10:]})
    return root


def _losses(run_dir):
    return [r["loss"] for r in _rows(run_dir)]


def _rows(run_dir):
    from videopoet.rundir.metrics import read_metrics

    return read_metrics(run_dir)


def _stop_at_6(info):
    if info.step == 6:
        info.run.request_stop()


def test_resumed_run_equals_uninterrupted_bit_for_bit(dataset, tmp_path):
    import jax

    devices = jax.devices()[:1]
    cfg = load_train_config("tiny", OVR)
    full = train.train(cfg, "syn@1", str(tmp_path / "full"), root=dataset)
    assert full["status"] == "completed" and full["step"] == 10
    part = train.train(cfg, "syn@1", str(tmp_path / "part"), root=dataset, hooks=[Hook(_stop_at_6)])
    assert part["status"] == "stopped" and part["step"] == 6 and part["checkpoint"] == 6
    resumed = train.train(cfg, "syn@1", str(tmp_path / "part"), root=dataset)
    assert resumed["resumed_from"] == 6 and resumed["step"] == 10
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "part")
    assert len(a) == len(b) == 10
    assert a == b  # exact float equality, step by step
    del devices


def test_run_dir_layout_and_load_run(dataset, tmp_path):
    cfg = load_train_config("tiny", OVR)
    out = str(tmp_path / "run")
    train.train(cfg, "syn@1", out, root=dataset)
    for name in ("config.yaml", "run.json", "metrics.jsonl", "loss_curve.png"):
        assert os.path.exists(os.path.join(out, name)), name
    info = json.load(open(os.path.join(out, "run.json")))
    assert info["dataset"]["ref"] == "syn@1" and len(info["dataset"]["fingerprint"]) == 64
    row = _rows(out)[-1]
    for key in ("tasks", "tokens_per_s", "data_wait_s", "compute_s", "mfu", "pad_fraction", "lr", "grad_norm"):
        assert key in row, key
    assert row["pad_fraction_without_agd"] >= row["pad_fraction"]
    if importlib.util.find_spec("tensorboardX"):
        assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(out, "tb")))
    run = checkpoint.load_run(out)
    assert run.step == 10 and run.cfg == cfg
    assert run.params["head"]["kernel"].shape == (cfg.model.d_model, cfg.model.vocab_size)
    # a different config in the same run dir is refused
    with pytest.raises(checkpoint.RunError, match="different config"):
        train.train(load_train_config("tiny", OVR + ["learning_rate=0.1"]), "syn@1", out, root=dataset)


def test_refuses_altered_shard_and_fingerprint_mismatch(dataset, tmp_path):
    import shutil

    root = str(tmp_path / "root")
    shutil.copytree(dataset, root)
    cfg = load_train_config("tiny", OVR)
    ds = store.open_dataset("syn@1", root)
    with pytest.raises(data.DataMismatchError, match="fingerprint"):
        data.open_verified("syn@1", root, expect_fingerprint="0" * 64)
    shard = ds.shard_paths()[0]
    with open(shard, "r+b") as f:
        f.seek(40)
        f.write(b"\x00garbage")
    with pytest.raises(VerifyError, match="altered shard"):
        train.train(cfg, "syn@1", str(tmp_path / "run"), root=root)
    os.remove(shard)
    with pytest.raises(VerifyError, match="missing shard"):
        data.open_verified("syn@1", root)
    mpath = os.path.join(root, "syn", "1", "manifest.json")
    m = json.load(open(mpath))
    m["record_schema_version"] = 99
    json.dump(m, open(mpath, "w"))
    with pytest.raises(SchemaVersionError, match="schema version 99"):
        train.train(cfg, "syn@1", str(tmp_path / "run2"), root=root)


def test_model_learns_below_unigram_baseline(tmp_path):
    cfg = load_train_config(
        "tiny",
        [
            "steps=150",
            "log_every=25",
            "checkpoint_every=150",
            "learning_rate=0.01",
            "warmup_steps=10",
            "batch_size=8",
            "mesh.data=1",
            "data.mixture={t2v: 1.0}",
            "data.cfg_dropout_text=0.0",
            "model.d_model=64",
            "model.mlp_dim=128",
        ],
    )
    recs = synthetic.make_records(32, cfg.model.vocab)
    mix = data.Mixture(recs, cfg)
    res = train.train(cfg, None, str(tmp_path / "run"), mixture=mix)
    rows = _rows(tmp_path / "run")
    assert rows[-1]["loss"] < 0.5 * res["unigram_baseline"], (rows[-1]["loss"], res["unigram_baseline"])
    assert rows[-1]["tasks"]["t2v"]["accuracy"] > 0.5
