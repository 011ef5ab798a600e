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


def test_change_weight_weighs_changed_video_targets_in_the_objective_only():
    import dataclasses

    import jax

    from videopoet.trainer import step

    cfg = load_train_config("tiny", ["mesh.data=1", "batch_size=4", "data.mixture={t2v: 1.0, fp: 1.0}"])
    recs = synthetic.make_records(8, cfg.model.vocab)
    for r in recs[::2]:  # half the clips hold their last latent frame still: its codes are not changed
        r.video[2] = r.video[1]
    host = data.Mixture(recs, cfg).global_batch(0)
    batch = {k: jax.numpy.asarray(v) for k, v in host.items() if k in data.BATCH_KEYS}
    changed, mask = host["target_changed"], host["loss_mask"]
    assert changed.any() and (mask & ~changed).any() and not (changed & ~mask).any()
    trainer = step.make_trainer(cfg)
    params = trainer.init()["params"]
    emb = trainer.text(trainer.text.params, batch["text_ids"], batch["text_mask"])

    def loss(b, weight):
        objective, metrics = step.loss_and_metrics(trainer.model, params, b, emb, weight)
        return float(objective), float(metrics["loss"])

    plain_objective, plain = loss(batch, 0.0)
    weighted_objective, weighted_logged = loss(batch, 3.0)
    _, changed_only = loss({**batch, "loss_mask": batch["target_changed"]}, 0.0)
    n, n_changed = mask.sum(), changed.sum()
    assert plain_objective == plain and weighted_logged == plain  # the logged loss is the plain mean
    expected = (plain * n + 3.0 * changed_only * n_changed) / (n + 3.0 * n_changed)
    assert weighted_objective == pytest.approx(expected, rel=1e-5) and weighted_objective != pytest.approx(plain)
    # an option added at its neutral value keeps the fingerprints that runs recorded before it existed
    assert checkpoint.numeric_fingerprint(cfg) != checkpoint.numeric_fingerprint(
        dataclasses.replace(cfg, change_weight=3.0)
    )


def test_shipped_pretraining_run_keeps_its_recorded_fingerprints():
    import json
    import pathlib

    from videopoet.trainer import extend

    run = pathlib.Path(__file__).parents[1] / "longrun" / "run3"
    cfg = load_train_config(str(run / "config.yaml"))
    meta = json.loads((run / "checkpoints" / "18000" / "meta" / "metadata").read_text())
    assert checkpoint.numeric_fingerprint(cfg) == meta["config_fingerprint"]
    assert extend.fingerprint(cfg) == meta["extend_fingerprint"]
