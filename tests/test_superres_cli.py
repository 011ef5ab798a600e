"""`videopoet train --model sr` on a pipeline dataset's super-resolution pairs: trains, resumes to
bit-identical parameters, refuses bad input in one line (tiny presets, tiny tokenizers)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from videopoet.cli.main import main
from videopoet.schemas.record import Lineage, TokenRecord
from videopoet.schemas.store import write_dataset


@pytest.fixture(scope="module")
def root(sr_root):
    """The session's ``sr@v1`` (tests/conftest.py)."""
    return sr_root


def train_sr(capsys, root, out, *extra) -> dict:
    argv = ["train", "--model", "sr", "--config", "tiny", "--data", "sr@v1", "--root", root, "--out", out, "--json"]
    assert main([*argv, *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_train_sr_trains_and_resumes_bit_exact(capsys, root, tmp_path):
    from videopoet.trainer.superres import train

    a = train_sr(capsys, root, str(tmp_path / "a"), "steps=4", "checkpoint_every=2", "log_every=2")
    assert a["status"] == "completed" and a["step"] == 4 and a["model"] == "sr"
    assert a["pairs"] >= 1 and a["data"]["dataset"]["ref"] == "sr@v1" and np.isfinite(a["last"]["loss"])
    assert a["pairs"] + a["data"]["skipped"]["other_grid"] >= 4  # the portrait clips have another grid

    b_dir = str(tmp_path / "b")
    b = train_sr(capsys, root, b_dir, "steps=4", "checkpoint_every=2", "log_every=2", "--stop-after-step", "2")
    assert b["status"] == "stopped" and b["step"] == 2
    b = train_sr(capsys, root, b_dir, "steps=4", "checkpoint_every=2", "log_every=2")
    assert b["resumed_from"] == 2 and b["step"] == 4
    cfg_a, params_a, step_a = train.load_run(str(tmp_path / "a"))
    cfg_b, params_b, step_b = train.load_run(b_dir)
    assert step_a == step_b == 4 and cfg_a == cfg_b and cfg_a.text_encoder == "tiny"
    same = jax.tree_util.tree_map(lambda x, y: bool(np.array_equal(np.asarray(x), np.asarray(y))), params_a, params_b)
    assert all(jax.tree_util.tree_leaves(same))


def one_line_error(capsys, argv) -> str:
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("videopoet: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_train_sr_errors_are_one_line(capsys, root, tmp_path):
    rec = TokenRecord(
        key="x/000",
        lineage=Lineage("x.tar", "0" * 64, "x"),
        video=np.zeros((5, 4, 4), np.int32),
        meta={"is_image": False},
    )
    write_dataset(root, "plain", "v1", {"x.tar": [rec]})
    base = ["train", "--model", "sr", "--config", "tiny", "--root", root, "--out", str(tmp_path / "r")]
    assert "--sr-pairs" in one_line_error(capsys, [*base, "--data", "plain@v1"])
    err = one_line_error(capsys, [*base, "--data", "sr@v1", "model.grid=[5,16,16]", "model.windows=[[1,16,2]]"])
    assert "no pair has the model's grid [5, 16, 16]" in err and "[5, 8, 8]" in err
    err = one_line_error(capsys, [*base, "--data", "sr@v1", "--init-from", str(tmp_path)])
    assert "not a super-resolution run" in err
    assert "text_dim" in one_line_error(capsys, [*base, "--data", "sr@v1", "model.text_dim=48"])
