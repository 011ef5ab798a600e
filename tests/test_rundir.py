"""videopoet.rundir: hooks every N steps, stop conditions that save first, metrics kept across a resume,
the config record's resume check, and Orbax save / restore / subtree reads."""

import json
import os
import signal

import numpy as np
import pytest

from videopoet.rundir import checkpoints, record
from videopoet.rundir.loop import Hook, Run
from videopoet.rundir.metrics import MetricsLog, Panel, read_metrics


def _loop(run_dir, total, start=0, hooks=(), stop_after=None, **kw):
    """A loop whose 'state' is the step count; returns (steps saved, steps each hook saw, run)."""
    saved, seen = [], {h: [] for h in ("every1", "every3")}
    run = Run(
        run_dir,
        total_steps=total,
        start_step=start,
        save=lambda n, s: saved.append((n, s)),
        checkpoint_every=4,
        progress=False,
        panels=(Panel("loss", ("loss",)),),
        **kw,
    )
    run.add_log_hook(lambda info: {"loss": float(info.metrics["loss"])}, every=2)
    run.add_hook(lambda info: seen["every1"].append(info.step))
    run.add_hook(Hook(lambda info: seen["every3"].append((info.step, info.run.last_row.get("step"))), every=3))
    for h in hooks:
        run.add_hook(h)
    step = start
    with run:
        while step < total:
            step += 1
            if run.step_done(step, step, {"loss": np.float32(1.0 / step)}):
                break
    return saved, seen, run


def test_hooks_every_n_and_the_last_step(tmp_path):
    saved, seen, run = _loop(str(tmp_path), 10)
    assert seen["every1"] == list(range(1, 11))
    # every 3rd step and the last one; the log hook ran first, so the row of a logged step is there
    assert seen["every3"] == [(3, 2), (6, 6), (9, 8), (10, 10)]
    assert saved == [(4, 4), (8, 8), (10, 10)] and run.status == "completed" and run.saved_step == 10
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [2, 4, 6, 8, 10]
    assert run.plot() == os.path.join(str(tmp_path), "loss_curve.png") and os.path.getsize(run.plot()) > 0
    with pytest.raises(ValueError, match="every"):
        Hook(lambda info: None, every=0)


def test_a_hook_stop_and_sigterm_save_the_step_then_stop(tmp_path):
    def stop_at_5(info):
        if info.step == 5:
            info.run.request_stop()

    saved, _, run = _loop(str(tmp_path / "a"), 10, hooks=[Hook(stop_at_5)])
    assert saved == [(4, 4), (5, 5)] and run.status == "stopped"

    def sigterm_at_6(info):
        if info.step == 6:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    saved, _, run = _loop(str(tmp_path / "b"), 10, hooks=[Hook(sigterm_at_6)])
    assert saved == [(4, 4), (6, 6)] and run.status == "sigterm"
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is put back
    saved, _, run = _loop(str(tmp_path / "c"), 10, max_seconds=0)
    assert saved == [(1, 1)] and run.status == "time limit"


def test_a_resume_drops_rows_past_its_checkpoint(tmp_path):
    out = str(tmp_path)
    _loop(out, 6)  # rows 2, 4, 6; checkpoints 4, 6
    with open(os.path.join(out, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": 8, "loss": 9.0}) + "\n")  # logged after the last checkpoint, then killed
    saved, _, _ = _loop(out, 10, start=6)
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 10] and rows[3]["loss"] == pytest.approx(1 / 8)
    assert saved == [(8, 8), (10, 10)]


def test_record_config_refuses_other_fields_and_rewrites_changeable_ones(tmp_path):
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        lr: float = 0.1
        steps: int = 10
        inner: dict = dataclasses.field(default_factory=lambda: {"a": 1, "b": 2})

    def load(path):
        with open(path) as f:
            return Cfg(**json.load(f))

    kw = dict(filename="config.json", load=load, changeable=("steps", "inner.b"), error=KeyError)
    assert record.record_config(str(tmp_path), Cfg(), **kw) is None
    assert record.record_config(str(tmp_path), Cfg(steps=20, inner={"a": 1, "b": 3}), **kw) == Cfg()
    assert load(tmp_path / "config.json").steps == 20
    with pytest.raises(KeyError, match=r"differs in: inner\.a, lr"):
        record.record_config(str(tmp_path), Cfg(lr=0.2, inner={"a": 0, "b": 3}), **kw)


def test_checkpoints_round_trip_and_subtree(tmp_path):
    import jax.numpy as jnp

    state = {"params": {"w": jnp.arange(6.0).reshape(2, 3)}, "opt": {"mu": jnp.ones(4)}, "step": jnp.int32(3)}
    with checkpoints.Checkpoints(str(tmp_path), max_to_keep=1, async_save=True) as ckpts:
        ckpts.save(3, state, meta={"step": 3})
        ckpts.save(5, dict(state, step=jnp.int32(5)))
    with checkpoints.Checkpoints(str(tmp_path)) as ckpts:
        assert ckpts.all_steps() == [5]  # max_to_keep
        back, meta = ckpts.restore(5, checkpoints.abstract(state))
        assert meta is None and int(back["step"]) == 5
    step, sub = checkpoints.read_subtree(str(tmp_path), {"params": checkpoints.abstract(state["params"])})
    assert step == 5 and set(sub) == {"params"}
    np.testing.assert_array_equal(sub["params"]["w"], np.arange(6.0).reshape(2, 3))
    with pytest.raises(FileNotFoundError, match="no checkpoint at step 4"):
        checkpoints.read_subtree(str(tmp_path), {"params": checkpoints.abstract(state["params"])}, step=4)


def test_a_non_lead_metrics_log_writes_nothing_and_closes(tmp_path):
    log = MetricsLog(str(tmp_path / "run"), enabled=False)
    assert log.write(3, {"loss": 1.0}) == {"loss": 1.0, "step": 3}
    log.close()  # a non-lead process of a multi-process run closes its log on SIGTERM too
    assert not (tmp_path / "run").exists()
