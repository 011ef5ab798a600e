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


HELDOUT = ["eval.heldout_data=val@1", "eval.heldout_every=2", "eval.heldout_batches=3"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = str(tmp_path_factory.mktemp("root"))
    vocab = load_train_config("tiny").model.vocab
    store.write_dataset(r, "syn", "1", {"a.tar": synthetic.make_records(8, vocab)})
    store.write_dataset(r, "val", "1", {"a.tar": synthetic.make_records(6, vocab, seed=7)})
    return r


@pytest.fixture(scope="module")
def runs(root, tmp_path_factory):
    """The same run trained with sampled evaluation and the held-out loss on, and with both off."""
    base = tmp_path_factory.mktemp("runs")
    with_eval, without = str(base / "with"), str(base / "without")
    train.train(load_train_config("tiny", [*OVR, *EVAL, *HELDOUT]), "syn@1", with_eval, root=root)
    train.train(load_train_config("tiny", OVR), "syn@1", without, root=root)
    return with_eval, without


def test_eval_rows_do_not_change_the_run(root, runs):
    with_eval, without = runs
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
    assert all("eval" not in r and "heldout" not in r for r in b)
    assert os.path.getsize(os.path.join(with_eval, "loss_curve.png")) > os.path.getsize(
        os.path.join(without, "loss_curve.png")
    )  # the evaluation and held-out panels beside the loss
    # eval is not part of the fingerprint: the same run resumes with evaluation off
    assert (
        checkpoint.read_run_info(with_eval)["config_fingerprint"]
        == checkpoint.read_run_info(without)["config_fingerprint"]
    )


def test_heldout_loss_is_the_loss_of_the_saved_weights(root, runs):
    import dataclasses

    import jax
    import numpy as np

    from videopoet.trainer import data, step

    with_eval, _ = runs
    cfg = load_train_config("tiny", [*OVR, *HELDOUT])
    a = read_metrics(with_eval)
    # recomputed by hand from the checkpoint of step 4: the run's mixture on val@1, no dropout, batches 0-2
    measured = dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, cfg_dropout_text=0.0, cfg_dropout_inputs=0.0, curriculum=False)
    )
    _, mix = data.open_mixture("val@1", measured, root)
    run = checkpoint.load_run(with_eval, step=4)
    text = step.load_text_tower(cfg)
    loss_sum = tokens = 0.0
    per_task_tokens: dict[str, float] = {}
    for i in range(3):
        host = mix.global_batch(i)
        batch = {k: jax.numpy.asarray(v) for k, v in host.items() if k in data.BATCH_KEYS}
        emb = text(text.params, batch["text_ids"], batch["text_mask"])
        _, m = step.loss_and_metrics(run.model, run.params, batch, emb)
        loss_sum += float(np.sum(m["task_loss_sum"]))
        tokens += float(np.sum(m["task_tokens"]))
        assert float(np.sum(m["task_tokens"])) == float(np.sum(host["loss_mask"]))
        for task, n in zip(data.TASKS, np.asarray(m["task_tokens"]), strict=True):
            if n:
                per_task_tokens[task] = per_task_tokens.get(task, 0) + float(n)
    held = a[-1]["heldout"]
    assert held["batches"] == 3 and held["tokens"] == int(tokens)
    assert held["loss"] == pytest.approx(loss_sum / tokens, rel=1e-5)
    assert {t: v["tokens"] for t, v in held["tasks"].items()} == {t: int(n) for t, n in per_task_tokens.items()}
    assert set(held["tasks"]) <= {"t2v", "fp"}  # the run's own mixture
    assert a[0]["heldout"]["loss"] != held["loss"]  # the weights changed between steps 2 and 4
    # neither is part of the fingerprint: the same run resumes with both off
    res = train.train(load_train_config("tiny", [*OVR, "steps=4"]), "syn@1", with_eval, root=root)
    assert res["status"] == "completed" and res["resumed_from"] == 4


def test_eval_every_must_be_a_multiple_of_log_every():
    from videopoet.schemas.errors import ConfigError

    with pytest.raises(ConfigError, match="multiple of log_every"):
        load_train_config("tiny", ["log_every=5", "eval.every=7"])
    with pytest.raises(ConfigError, match="tasks must be some of"):
        load_train_config("tiny", ["eval.tasks=[t2i]"])


def test_heldout_config_errors(root, tmp_path):
    from videopoet.schemas.errors import ConfigError, VideoPoetError

    with pytest.raises(ConfigError, match="needs eval.heldout_data"):
        load_train_config("tiny", ["eval.heldout_every=2"])
    with pytest.raises(ConfigError, match="multiple of log_every"):
        load_train_config("tiny", ["log_every=2", "eval.heldout_every=3", "eval.heldout_data=val@1"])
    cfg = load_train_config("tiny", [*OVR, "eval.heldout_data=nope@1", "eval.heldout_every=2"])
    with pytest.raises(VideoPoetError, match="nope"):
        train.train(cfg, "syn@1", str(tmp_path / "run"), root=root)
    assert not os.path.exists(tmp_path / "run" / "run.json")  # refused before the run dir is written
