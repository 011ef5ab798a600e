"""One resolver from a tokenizer spec to (tokenizer, TokenizerRef); the manifest records the reference."""

from __future__ import annotations

import json
import os

import pytest

from videopoet.schemas.errors import VideoPoetError
from videopoet.schemas.tokenizer_ref import TokenizerRef, from_v1_entry
from videopoet.tokenizers import registry


def test_ref_round_trip_and_validation():
    ref = TokenizerRef("visual", "default", "magvit2-small", "ab" * 32)
    assert TokenizerRef.from_dict(ref.to_dict()) == ref
    assert ref.describe() == "magvit2-small [default] " + "ab" * 6
    with pytest.raises(VideoPoetError, match="kind 'video'"):
        TokenizerRef("video", "default", "x", "f")
    with pytest.raises(VideoPoetError, match="lacks 'spec'"):
        TokenizerRef.from_dict({"kind": "audio", "fingerprint": "f"})


@pytest.mark.parametrize(
    "source, spec",
    [
        ("default (shipped)", "default"),
        ("small preset, seeded init (no shipped checkpoint yet)", "small"),
        ("tiny preset, seeded init", "tiny"),
        ("/data/ckpt/magvit2-run", "/data/ckpt/magvit2-run"),
        ("gs://bucket/tok", "gs://bucket/tok"),
        ("conf/magvit.yaml", "conf/magvit.yaml"),
    ],
)
def test_v1_display_strings(source, spec):
    ref = from_v1_entry("video", {"name": "magvit2-x", "fingerprint": "f", "config": {}, "source": source})
    assert ref == TokenizerRef("visual", spec, "magvit2-x", "f")


@pytest.mark.parametrize(
    "kind, name", [("visual", "magvit2-tiny"), ("audio", "soundstream-tiny"), ("text", "t5-tiny-random")]
)
def test_resolve_preset_and_load_back(kind, name):
    tok, ref = registry.resolve("tiny", kind)
    assert ref == TokenizerRef(kind, "tiny", name, tok.fingerprint)
    assert registry.load(ref).fingerprint == tok.fingerprint
    with pytest.raises(registry.TokenizerError, match="not the recorded") as e:
        registry.load(TokenizerRef(kind, "tiny", name, "0" * 64), hint="pass --x")
    assert "\n" not in str(e.value) and str(e.value).endswith("; pass --x")


def test_checkpoint_dir_spec_is_absolute(tmp_path, monkeypatch):
    tok, _ = registry.resolve("tiny", "visual")
    tok.save(str(tmp_path / "ckpt"))
    monkeypatch.chdir(tmp_path)
    loaded, ref = registry.resolve("ckpt", "visual")
    assert ref.spec == str(tmp_path / "ckpt") and ref.fingerprint == tok.fingerprint
    monkeypatch.chdir(os.path.dirname(__file__))
    assert registry.load(ref).fingerprint == tok.fingerprint


def test_bad_specs_are_one_line(tmp_path):
    with pytest.raises(VideoPoetError, match="neither a preset") as e:
        registry.resolve(str(tmp_path / "nowhere"), "audio")
    assert "\n" not in str(e.value)
    with pytest.raises(registry.TokenizerError, match="unknown tokenizer kind"):
        registry.resolve("tiny", "video")


def test_missing_shipped_checkpoint_is_an_error_not_a_random_init(tmp_path, monkeypatch, capsys):
    from videopoet.cli.main import main
    from videopoet.pipelines import tokenize
    from videopoet.pipelines.config import load_pipeline_config
    from videopoet.tokenizers.magvit2 import tokenizer as magvit2_tokenizer

    monkeypatch.setattr(magvit2_tokenizer, "ASSETS", str(tmp_path / "no-assets"))
    with pytest.raises(VideoPoetError, match="no shipped MAGVIT-v2 checkpoint"):
        registry.resolve("default", "visual")
    monkeypatch.setattr(tokenize, "_TOKENIZER_CACHE", {})
    with pytest.raises(VideoPoetError, match="no shipped MAGVIT-v2 checkpoint"):
        tokenize.load_tokenizers(load_pipeline_config("tiny", ["video_tokenizer=default"]))
    rc = main(
        [
            "pipeline",
            "run",
            "--input",
            str(tmp_path),
            "--name",
            "x",
            "--version",
            "v1",
            "--root",
            str(tmp_path / "root"),
            "--config",
            "tiny",
            "--no-progress",
            "video_tokenizer=default",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("videopoet: error: ")


@pytest.fixture(scope="module")
def shipped_dataset(tmp_path_factory):
    """A dataset made by the current code with the shipped (default) tokenizers."""
    from videopoet.pipelines.beam import run_beam
    from videopoet.pipelines.config import load_pipeline_config
    from videopoet.pipelines.synth import generate_corpus

    base = tmp_path_factory.mktemp("shipped")
    generate_corpus(str(base / "corpus"), clips=2, shards=1, seed=0, config="tiny")
    cfg = load_pipeline_config("tiny", ["video_tokenizer=default", "audio_tokenizer=default", "text_tokenizer=default"])
    run_beam(str(base / "corpus" / "*.tar"), "shipped", "v2", str(base / "root"), cfg, workers=1, progress=False)
    return str(base / "root")


def test_manifest_records_references(shipped_dataset):
    from videopoet.schemas.manifest import MANIFEST_VERSION, tokenizer_refs
    from videopoet.schemas.store import DatasetStore

    m = DatasetStore(shipped_dataset).open("shipped@v2").manifest
    assert m["manifest_version"] == MANIFEST_VERSION == 2
    lin = m["lineage"]["tokenizers"]
    assert {k: {f: v[f] for f in ("kind", "spec", "name")} for k, v in lin.items()} == {
        "video": {"kind": "visual", "spec": "default", "name": "magvit2-small"},
        "audio": {"kind": "audio", "spec": "default", "name": "soundstream-small"},
        "text": {"kind": "text", "spec": "default", "name": "t5-small-random"},
    }
    assert all(set(v) == {"kind", "spec", "name", "fingerprint", "config"} for v in lin.values())
    refs = tokenizer_refs(m)
    for modality, ref in refs.items():
        assert ref.fingerprint == lin[modality]["fingerprint"]
        assert registry.load(ref).fingerprint == ref.fingerprint


def test_show_decode_on_shipped_tokenizers(shipped_dataset, tmp_path, capsys):
    from videopoet import media
    from videopoet.cli.main import main

    out = tmp_path / "dec"
    assert main(["data", "show", "shipped@v2", "--root", shipped_dataset, "--decode", str(out)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 4  # 2 videos x 2 clips of 17 frames at 8 fps
    for r in rows:
        mp4, wav = sorted(r["decoded"])
        assert mp4.endswith(".mp4") and wav.endswith(".wav")
        with open(mp4, "rb") as f:
            dec = media.decode_frames(f.read(), fps=8.0)
        assert dec.frames.shape == (17, 32, 32, 3) and dec.frames.std() > 1.0
        with open(wav, "rb") as f:
            wave = media.decode_audio(f.read(), 16000)
        assert wave.shape == (106 * 320,) and float(abs(wave).max()) > 1e-3
    # a tokenizer given by hand is checked against the recorded fingerprint
    rc = main(
        [
            "data",
            "show",
            "shipped@v2",
            "--root",
            shipped_dataset,
            "--decode",
            str(out),
            "--limit",
            "1",
            "--video-tokenizer",
            "tiny",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not the recorded" in err[0] and "--video-tokenizer" in err[0]
