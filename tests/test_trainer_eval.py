"""Evaluation during training (trainer/train_eval.py): scored samples in the metrics rows, same run numbers."""

import os

import pytest

from videopoet.rundir.metrics import read_metrics
from videopoet.schemas import store
from videopoet.trainer import checkpoint, synthetic, train
from videopoet.trainer.config import load_train_config

OVR = [
    "steps=4",
    "log_every=2",
    "checkpoint_every=2",
    "mesh.data=1",
    "batch_size=4",
    "data.mixture={t2v: 1.0, fp: 1.0}",
]
EVAL = [
    "eval.every=2",
    "eval.samples=1",
    "eval.tasks=[t2v, fp]",
    "eval.video_tokenizer=tiny",
    "eval.audio_tokenizer=tiny",
]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = str(tmp_path_factory.mktemp("root"))
    store.write_dataset(r, "syn", "1", {"a.tar": synthetic.make_records(8, load_train_config("tiny").model.vocab)})
    return r


def test_eval_rows_do_not_change_the_run(root, tmp_path):
    with_eval, without = str(tmp_path / "with"), str(tmp_path / "without")
    train.train(load_train_config("tiny", [*OVR, *EVAL]), "syn@1", with_eval, root=root)
    train.train(load_train_config("tiny", OVR), "syn@1", without, root=root)
    a, b = read_metrics(with_eval), read_metrics(without)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [2, 4]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # exact: evaluation reads the weights only
    for r in a:
        ev = r["eval"]
        assert set(ev) == {"t2v", "fp", "seconds", "samples"} and ev["samples"] == 1
        assert set(ev["t2v"]) == {"seen", "heldout"}
        assert {"colour", "shape", "motion", "all"} <= set(ev["t2v"]["seen"])
        assert all(0.0 <= v <= 1.0 for split in ev["t2v"].values() for v in split.values())
        assert {"kept", "motion"} <= set(ev["fp"]["seen"])
    assert all("eval" not in r for r in b)
    assert os.path.getsize(os.path.join(with_eval, "loss_curve.png")) > os.path.getsize(
        os.path.join(without, "loss_curve.png")
    )  # the evaluation panel beside the loss
    # eval is not part of the fingerprint: the same run resumes with evaluation off
    assert (
        checkpoint.read_run_info(with_eval)["config_fingerprint"]
        == checkpoint.read_run_info(without)["config_fingerprint"]
    )
    res = train.train(load_train_config("tiny", [*OVR, "steps=4"]), "syn@1", with_eval, root=root)
    assert res["status"] == "completed" and res["resumed_from"] == 4


def test_eval_every_must_be_a_multiple_of_log_every():
    from videopoet.schemas.errors import ConfigError

    with pytest.raises(ConfigError, match="multiple of log_every"):
        load_train_config("tiny", ["log_every=5", "eval.every=7"])
    with pytest.raises(ConfigError, match="tasks must be some of"):
        load_train_config("tiny", ["eval.tasks=[t2i]"])
