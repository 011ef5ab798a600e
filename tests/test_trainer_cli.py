"""`videopoet train` end to end on the tiny preset; SIGTERM saves a checkpoint and the run resumes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from videopoet.cli.main import main
from videopoet.schemas import store
from videopoet.trainer import synthetic
from videopoet.trainer.config import load_train_config


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = str(tmp_path_factory.mktemp("root"))
    recs = synthetic.make_records(12, load_train_config("tiny").model.vocab)
    store.write_dataset(r, "syn", "1", {"a.tar": recs})
    return r


def test_cli_train_json_and_resume(root, tmp_path, capsys):
    out = str(tmp_path / "run")
    args = [
        "train",
        "--config",
        "tiny",
        "--data",
        "syn@1",
        "--root",
        root,
        "--out",
        out,
        "--json",
        "steps=4",
        "mesh.data=1",
        "data.mixture={t2v: 1.0}",
    ]
    assert main(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["status"] == "completed" and res["step"] == 4 and res["checkpoint"] == 4
    # a cosine run cannot be extended (its schedule changes from the end of the warm-up): refused in one line
    assert main(args[:-3] + ["steps=6", "mesh.data=1", "data.mixture={t2v: 1.0}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("videopoet: error: cannot extend") and "lr_schedule=wsd" in err and "\n" not in err
    assert main(args + ["seed=3"]) == 2  # another config: refused
    assert "different config" in capsys.readouterr().err


def test_cli_errors_are_one_line(root, tmp_path, capsys):
    assert main(["train", "--config", "tiny", "--data", "nope@1", "--root", root, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("videopoet: error:") and "\n" not in err
    assert (
        main(
            [
                "train",
                "--config",
                "tiny",
                "--data",
                "syn@1",
                "--root",
                root,
                "--out",
                str(tmp_path / "r"),
                "model.nope=1",
            ]
        )
        == 2
    )
    assert "unknown config key model.nope" in capsys.readouterr().err


def test_model_vocabulary_comes_from_the_dataset(tmp_path, capsys):
    root = str(tmp_path / "root")
    vocab = load_train_config("tiny", ["model.visual_size=128", "model.audio_codebook=32", "model.audio_levels=3"])
    lineage = {
        "tokenizers": {
            "video": {
                "kind": "visual",
                "spec": "x",
                "name": "magvit2-x",
                "fingerprint": "a" * 64,
                "config": {"lfq_bits": 7},
            },
            "audio": {
                "kind": "audio",
                "spec": "x",
                "name": "soundstream-x",
                "fingerprint": "b" * 64,
                "config": {"codebook_size": 32, "levels_used": 3},
            },
        }
    }
    store.write_dataset(root, "voc", "1", {"a.tar": synthetic.make_records(8, vocab.model.vocab)}, lineage=lineage)
    base = ["train", "--config", "tiny", "--data", "voc@1", "--root", root, "--json"]
    out = str(tmp_path / "run")
    assert main([*base, "--out", out, "steps=2", "mesh.data=1", "data.mixture={t2v: 1.0}"]) == 0  # no model.* needed
    capsys.readouterr()
    recorded = load_train_config(os.path.join(out, "config.yaml")).model
    assert (recorded.visual_size, recorded.audio_codebook, recorded.audio_levels) == (128, 32, 3)
    # what the command line sets wins over the manifest, so a mismatch is still refused in one line
    assert main([*base, "--out", str(tmp_path / "other"), "steps=2", "model.visual_size=64"]) == 1
    err = capsys.readouterr().err
    assert "set model.visual_size=128" in err and err.count("\n") == 1


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_143(root, tmp_path):
    out = str(tmp_path / "run")
    cmd = [
        sys.executable,
        "-m",
        "videopoet.cli.main",
        "train",
        "--config",
        "tiny",
        "--data",
        "syn@1",
        "--root",
        root,
        "--out",
        out,
        "--json",
        "steps=100000",
        "checkpoint_every=100000",
        "mesh.data=1",
        "log_every=1",
        "data.mixture={t2v: 1.0}",
    ]
    env = {**os.environ, "XLA_FLAGS": os.environ.get("VIDEOPOET_TEST_XLA_OPT", ""), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    metrics = os.path.join(out, "metrics.jsonl")
    deadline = time.time() + 240
    while time.time() < deadline and not (os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= 3):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    res = json.loads(stdout)
    assert res["status"] == "sigterm" and res["checkpoint"] == res["step"] >= 3
    assert os.path.isdir(os.path.join(out, "checkpoints", str(res["step"])))
