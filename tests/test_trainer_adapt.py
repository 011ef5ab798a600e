"""Task adaptation (`videopoet train --init-from`, trainer/adapt.py): a trained run's weights, a fresh optimizer."""

import json

import jax
import numpy as np
import pytest

from videopoet.cli.main import main
from videopoet.rundir.metrics import read_metrics
from videopoet.schemas import store
from videopoet.trainer import adapt, checkpoint, synthetic, train
from videopoet.trainer.config import load_train_config

OVR = ["log_every=1", "mesh.data=1", "batch_size=4", "data.mixture={t2v: 1.0, fp: 1.0}"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = str(tmp_path_factory.mktemp("root"))
    recs = synthetic.make_records(12, load_train_config("tiny").model.vocab)
    store.write_dataset(r, "syn", "1", {"a.tar": recs})
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
