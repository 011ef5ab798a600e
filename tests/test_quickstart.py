"""`videopoet quickstart`: the whole path (corpus -> Beam -> verify -> train -> generate -> eval) on
the tiny preset, through the same CLI commands a user runs."""

from __future__ import annotations

import json
import os

import pytest

from videopoet.cli.main import main

pytestmark = pytest.mark.slow


def test_quickstart_tiny_runs_every_step(tmp_path, capsys):
    out = tmp_path / "qs"
    rc = main(
        [
            "quickstart",
            "--out",
            str(out),
            "--preset",
            "tiny",
            "--clips",
            "4",
            "--steps",
            "8",
            "--workers",
            "1",
            "--shipped-scenes",
            "1",
            "--json",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    statuses = {s["step"]: s["status"] for s in summary["steps"]}
    assert rc == 0, summary["steps"]
    assert set(statuses.values()) == {"ok"}, statuses
    assert {"corpus", "pipeline", "verify", "train", "eval"} <= set(statuses)
    assert {k for k in statuses if k.startswith("generate ")} == {
        f"generate {t}" for t in ("t2v", "t2i", "i2v", "v2a", "uncond")
    }
    for fn in ("t2v.mp4", "t2i.png", "i2v.mp4", "v2a.wav", "uncond.mp4"):
        assert os.path.getsize(out / "clips" / fn) > 0, fn
    assert os.path.exists(summary["gallery"])
    # the shipped model beside the quickstart's own
    assert statuses["shipped generate"] == statuses["shipped eval"] == "ok"
    assert os.path.getsize(out / "clips" / "shipped_t2v.mp4") > 0 and os.path.exists(summary["shipped_gallery"])
    both = open(summary["both_gallery"]).read()  # each prompt with both models' clips
    assert summary["both_gallery"] == str(out / "gallery.html")
    assert "src='run/eval/t2v_" in both and "src='eval-default/t2v_" in both and "not evaluated" in both
    # the dataset it made verifies, and a second run reuses everything (published version: no-op)
    assert main(["data", "verify", "synth@v1", "--root", summary["datasets_root"]]) == 0
