"""Extending a finished run (trainer/extend.py): a wsd run of N steps continued to M equals a run of M steps."""

import jax
import numpy as np
import pytest

from videopoet.rundir.metrics import read_metrics
from videopoet.schemas import store
from videopoet.schemas.errors import ConfigError
from videopoet.trainer import checkpoint, extend, synthetic, train
from videopoet.trainer.config import load_train_config

OVR = [
    "log_every=1",
    "checkpoint_every=4",
    "keep_checkpoints=1",
    "data.mixture={t2v: 1.0, fp: 1.0, t2i: 1.0}",
    "mesh.data=1",
    "batch_size=4",
    "lr_schedule=wsd",
    "decay_steps=4",
    "warmup_steps=2",
    "data.switch_step=3",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("root"))
    cfg = load_train_config("tiny")
    recs = synthetic.make_records(12, cfg.model.vocab, images=4)
    store.write_dataset(root, "syn", "1", {"a.tar": recs})
    return root


def _cfg(steps, *more):
    return load_train_config("tiny", [*OVR, f"steps={steps}", *more])


def _losses(run_dir):
    return {r["step"]: r["loss"] for r in read_metrics(run_dir) if "loss" in r}


def test_wsd_schedule_is_the_same_before_the_decay_whatever_steps():
    a, b = _cfg(10), _cfg(16)
    assert (a.decay_start, b.decay_start) == (6, 12)
    (lr_a, im_a), (lr_b, im_b) = extend.schedule(a, 10), extend.schedule(b, 16)
    peak = np.float32(a.learning_rate)
    assert lr_a[:7].tolist() == lr_b[:7].tolist() and lr_a[6] == peak and lr_a[7] < lr_b[7] == peak
    assert lr_a[1] == a.learning_rate / 2 and lr_a[9] == pytest.approx(a.learning_rate * (1 - 0.9 * 3 / 4))
    assert im_a.tolist() == im_b[:10].tolist()
    assert extend.first_difference(a, b) == 7  # the decay's first step still has the peak rate
    # a fraction of steps moves: the curriculum switch with it, the decay length with it
    assert extend.first_difference(_cfg(10, "data.switch_step=0"), _cfg(16, "data.switch_step=0")) == 3
    frac = extend.first_difference(
        _cfg(10, "decay_steps=0", "decay_fraction=0.4"), _cfg(20, "decay_steps=0", "decay_fraction=0.4")
    )
    assert frac == 7
    with pytest.raises(ConfigError, match="exactly one of decay_steps"):
        load_train_config("tiny", ["lr_schedule=wsd"])
    with pytest.raises(ConfigError, match="exceed steps"):
        _cfg(5)


def test_extended_run_equals_a_run_trained_to_m_bit_for_bit(dataset, tmp_path):
    short, ext_dir, full = str(tmp_path / "short"), str(tmp_path / "ext"), str(tmp_path / "full")
    res = train.train(_cfg(10), "syn@1", short, root=dataset)
    assert res["status"] == "completed" and res["step"] == 10
    # the decay-start checkpoint (6) is kept beside the latest (10) although keep_checkpoints=1
    with checkpoint.open_checkpoints(short, _cfg(10)) as c:
        assert c.all_steps() == [6, 10]
    short_losses = _losses(short)
    train.train(_cfg(10), "syn@1", ext_dir, root=dataset)
    ext = train.train(_cfg(16), "syn@1", ext_dir, root=dataset)
    assert ext["status"] == "completed" and ext["step"] == 16 and ext["resumed_from"] == 6
    assert ext["extension"] == {
        "from_steps": 10,
        "to_steps": 16,
        "resume_step": 6,
        "dropped": [10],
        "first_difference": 7,
    }
    ref = train.train(_cfg(16), "syn@1", full, root=dataset)
    assert ref["step"] == 16
    a, b = _losses(ext_dir), _losses(full)
    assert sorted(a) == sorted(b) == list(range(1, 17))
    assert a == b  # the extended run is the M-step run, every step bit for bit
    assert all(short_losses[s] == b[s] for s in range(1, 7))  # the short run up to its decay start
    assert any(short_losses[s] != b[s] for s in range(8, 11))  # its decay steps were other numbers
    pa, pb = checkpoint.load_run(ext_dir).params, checkpoint.load_run(full).params
    assert all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x, y: bool(np.array_equal(x, y)), pa, pb)))
    info = checkpoint.read_run_info(ext_dir)
    assert info["extensions"][0]["resume_step"] == 6 and info["config"]["steps"] == 16
    # the extended run extends again (its own decay start, 12, was kept)
    again = train.train(_cfg(20), "syn@1", ext_dir, root=dataset)
    assert again["resumed_from"] == 12 and again["step"] == 20


def test_extension_refused_without_a_checkpoint_before_the_change(dataset, tmp_path):
    out = str(tmp_path / "r")
    cfg = _cfg(10, "data.switch_step=0")  # the switch at 25% of the steps moves when steps grows
    train.train(cfg, "syn@1", out, root=dataset)
    with pytest.raises(checkpoint.RunError, match=r"cannot extend .*changes from step 3.*data.switch_step"):
        train.train(_cfg(16, "data.switch_step=0"), "syn@1", out, root=dataset)
    assert checkpoint.load_run(out).cfg.steps == 10  # nothing was changed
    with pytest.raises(checkpoint.RunError, match="different config"):
        train.train(_cfg(16, "seed=1"), "syn@1", out, root=dataset)
