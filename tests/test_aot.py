"""Ahead-of-time compile of the train step for TPU slices this machine does not have (trainer/aot.py,
`videopoet train --dry-run --topology`, `videopoet submit train --topology`).

The compiles are XLA:TPU's own, through libtpu's compile-only devices; the paper-size ones take 30-60 s
each on 2 cores and are marked slow. They skip, saying why, only where libtpu is not installed
(`pip install 'videopoet[tpu]'`; the test extra includes it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from videopoet.infra.request import RequestError, SubmitRequest
from videopoet.trainer import aot
from videopoet.trainer.config import load_train_config

needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None and not os.environ.get("TPU_LIBRARY_PATH"),
    reason="libtpu is not installed (pip install 'videopoet[tpu]')",
)


# ------------------------------------------------------------------------------ no compiler needed
def test_slice_names():
    assert aot.slice_of("v5e:4x4").name == "v5e-16"
    assert aot.slice_of("v5p-128").jax_topology == "v5p:4x4x4"
    assert aot.slice_of("V6E-8x8").chips == 64
    with pytest.raises(aot.AotError, match="unknown accelerator"):
        aot.slice_of("v9z-8")
    with pytest.raises(aot.AotError, match="GPU"):
        aot.slice_of("h100-80gb")


def test_longest_sequence_is_inpainting_a_portrait_clip():
    """Paper geometry: 17 frames of 128 wide x 224 high -> 5 x 28 x 16 = 2240 tokens; inpainting holds the
    text slot, the condition clip and the output clip (the longest layout of trainer/tasks.py)."""
    cfg = load_train_config("300m")
    video, text = 5 * 28 * 16, cfg.data.text_len
    # <bos> <task> <bot_i> T <eot_i> <bov_i> C <eov_i> <source> <res> <bov_o> V <eov_o> <eos>
    assert aot.longest_sequence(cfg) == 2 + (text + 2) + (1 + video + 2) + 1 + 1 + video + 2
    no_conditions = load_train_config("300m", ["data.mixture.inpaint=0", "data.mixture.outpaint=0"])
    assert aot.longest_sequence(no_conditions) < aot.longest_sequence(cfg)


def test_parse_oom_messages():
    a = (
        "RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space hbm. "
        "Used 150.50G of 15.75G hbm. Exceeded hbm capacity by 134.75G."
    )
    used, line = aot.parse_oom(a)
    assert used == int(150.5 * 2**30) and "hbm" in line
    b = (
        "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries "
        "(19.91G) exceeds available HBM (15.75G).\nmore"
    )
    used, line = aot.parse_oom(b)
    assert used == int(19.91 * 2**30) and "\n" not in line
    assert aot.parse_oom("RESOURCE_EXHAUSTED: something else") == (None, "RESOURCE_EXHAUSTED: something else")


def test_bad_requests_are_one_line():
    cfg = load_train_config("tiny")
    with pytest.raises(aot.AotError, match="topology 'v5e-3'"):
        aot.compile_report(cfg, "v5e-3")
    with pytest.raises(RequestError, match="for training runs"):
        SubmitRequest(kind="pipeline", target="local", name="p", run_dir="/tmp/x", topology="v5e-4").validate()


def test_missing_libtpu_is_one_line(monkeypatch):
    monkeypatch.delenv("TPU_LIBRARY_PATH", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(aot.AotError, match="libtpu is not installed"):
        aot.libtpu_path()


# ------------------------------------------------------------------------------ XLA:TPU compiles
@needs_libtpu
def test_mesh_and_batch_must_match_the_slice():
    with pytest.raises(aot.ConfigError, match="needs 8 devices, there are 16"):
        aot.compile_report(load_train_config("tiny", ["mesh.data=8"]), "v5e:4x4")
    with pytest.raises(aot.ConfigError, match="batch_size 4 does not split over the 16 devices"):
        aot.compile_report(load_train_config("tiny"), "v5e:4x4")


@needs_libtpu
def test_tiny_compiles_and_counts_flops():
    cfg = load_train_config("tiny", ["batch_size=16"])
    r = aot.compile_report(cfg, "v5e:2x2")
    assert (r.topology, r.chips, r.device_kind, r.mesh) == (
        "v5e-4",
        4,
        "TPU v5 lite",
        {"data": 4, "fsdp": 1, "tensor": 1},
    )
    assert r.fits and r.argument_bytes > 0 and r.temp_bytes > 0 and r.code_bytes > 0
    assert r.total_bytes == r.argument_bytes + r.output_bytes - r.alias_bytes + r.temp_bytes + r.code_bytes
    assert r.alias_bytes > 0  # the state is donated: the new state reuses its buffers
    assert r.seq_len == aot.longest_sequence(cfg)
    assert r.flops_per_step >= 6 * r.params * r.tokens_per_step * 0.5


# The paper presets at full depth take minutes each to compile on 2 cores (BENCHMARKS.md has their table);
# the tests compile at XLA's lowest optimization effort and a 1024-token batch, and the two that must fit
# keep the preset's widths, vocabulary and T5-XL text tower but 2 of its blocks (each block adds the same
# per-chip shard and temporaries; the full-depth figures are the benchmark's).
FAST = {"seq_len": 1024, "effort": -1.0}


@needs_libtpu
@pytest.mark.slow
def test_300m_fits_a_v5e_16():
    r = aot.compile_report(load_train_config("300m", ["batch_size=16", "model.layers=2"]), "v5e-16", **FAST)
    assert r.fits, r.text()
    assert r.mesh == {"data": 1, "fsdp": 16, "tensor": 1} and r.seq_len == 1024
    assert 0 < r.total_bytes <= r.hbm_bytes == 16 * 2**30
    # the replicated float32 T5-XL encoder (1.2B parameters) is most of each chip's arguments
    assert r.argument_bytes > 4.5 * 2**30


@needs_libtpu
@pytest.mark.slow
def test_8b_with_fsdp_fits_a_v5p_32():
    cfg = load_train_config("8b", ["batch_size=16", "model.layers=2"])
    r = aot.compile_report(cfg, "v5p-32", **FAST)
    assert r.fits, r.text()
    assert r.chips == 16 and r.mesh["fsdp"] == 16 and r.hbm_bytes == 95 * 2**30
    # parameters and both Adam moments in float32, sharded over 16 chips, are part of each chip's arguments
    assert r.argument_bytes >= 12 * r.params / 16
    # the compiler's count against 6 x parameters x tokens, leaving out the input embedding (a lookup, not a
    # matmul); full remat recomputes the forward
    d, vocab = cfg.model.d_model, cfg.model.vocab_size
    ratio = r.flops_per_step / (6 * (r.params - vocab * d) * r.tokens_per_step)
    assert 0.5 < ratio < 2.0, ratio


@needs_libtpu
@pytest.mark.slow
def test_data_parallel_that_does_not_fit_and_the_cli_says_so():
    """Every chip on the data axis holds the whole model and its Adam state: ``1b`` cut to 4 layers still has
    its 2^18-token embedding and head (1.3B x 16 bytes > a v5e chip's 16 GiB); 4 layers keep the compile
    short (~10 s; 8b on a v5p-8, the same refusal, took ~100 s)."""
    env = {**os.environ, "XLA_FLAGS": os.environ.get("VIDEOPOET_TEST_XLA_OPT", "")}
    argv = ["train", "--dry-run", "--topology", "v5e-4", "--config", "1b", "model.layers=4", "batch_size=4"]
    argv += ["mesh.data=-1", "mesh.fsdp=1", "--seq-len", "1024", "--compile-effort", "-1", "--json"]
    p = subprocess.run(
        [sys.executable, "-m", "videopoet.cli.main", *argv], capture_output=True, text=True, env=env, timeout=1200
    )
    assert p.returncode == 1, p.stderr[-2000:]
    out = json.loads(p.stdout)
    assert out["fits"] is False and out["mesh"] == {"data": 4, "fsdp": 1, "tensor": 1}
    assert out["total_bytes"] > out["hbm_bytes"] > 0 and "HBM" in out["oom"]
    assert "libtpu" not in p.stderr.lower() and "Traceback" not in p.stderr


@needs_libtpu
def test_cli_bad_topology_is_one_line():
    p = subprocess.run(
        [sys.executable, "-m", "videopoet.cli.main", "train", "--dry-run", "--topology", "v5e-3", "--config", "tiny"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("videopoet: error: topology 'v5e-3'"), p.stderr


@needs_libtpu
def test_submit_compiles_first_and_refuses_what_does_not_fit(tmp_path):
    from videopoet.infra import targets

    def request(**kw):
        base = {
            "kind": "train",
            "target": "gke",
            "name": "vp-aot",
            "run_dir": str(tmp_path / "run"),
            "config": "tiny",
            "overrides": ("batch_size=16",),
            "data": "synth@v1",
            "accelerator": "v5e-4",
            "verify_data": False,
            "image": "us-docker.pkg.dev/p/r/videopoet:test",
            "dry_run": True,
            "topology": "accelerator",
        }
        return SubmitRequest(**{**base, **kw})

    res = targets.dry_run(request(), str(tmp_path / "artifacts"))
    assert res.detail["aot"]["topology"] == "v5e-4" and res.detail["aot"]["fits"] is True
    # the logits of 2^18 sequences per chip cannot fit 16 GiB
    with pytest.raises(RequestError, match="does not fit v5e-4: .* GiB per chip needed, 16 GiB HBM"):
        targets.dry_run(request(overrides=("batch_size=1048576",)), str(tmp_path / "artifacts2"))
    with pytest.raises(RequestError, match="multi-slice"):
        request(slices=2).validate()
