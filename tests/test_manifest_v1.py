"""Datasets written before a manifest format change still open.

``tests/data/manifest_v1_root/`` is a datasets root written by the code of manifest version 1 (the
tokenizers recorded as display text such as ``default (shipped)``), made with::

    videopoet corpus synth --out corpus --clips 2 --images 1 --shards 1 --config tiny --with-corrupt
    videopoet pipeline run --input 'corpus/train-*.tar' --name tiny --version v1 --root ROOT --config tiny
    videopoet pipeline run --input 'corpus/train-*.tar' --name shipped --version v1 --root ROOT --config tiny \\
        video_tokenizer=default audio_tokenizer=default text_tokenizer=default

(the ``.locks`` and ``.log`` folders dropped). It is never rewritten: it stands for data users made.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "manifest_v1_root")
FINGERPRINTS = {
    "tiny@v1": "6c9dcdaf790b64e9",
    "shipped@v1": "8bc7f9f8bef5377e",
}


@pytest.fixture
def v1_root(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(FIXTURE, root)
    return str(root)


@pytest.mark.parametrize("ref", sorted(FINGERPRINTS))
def test_v1_dataset_opens_and_verifies(v1_root, ref):
    from videopoet.schemas.store import DatasetStore

    store = DatasetStore(v1_root)
    ds = store.open(ref)
    assert ds.manifest["manifest_version"] == 1
    assert ds.fingerprint.startswith(FINGERPRINTS[ref])
    assert ds.info()["totals"]["records"] == 7
    report = store.verify(ref, deep=True)
    assert report.ok, report.to_json()


def test_v1_tokenizer_strings_map_to_references(v1_root):
    from videopoet.schemas.manifest import tokenizer_refs
    from videopoet.schemas.store import DatasetStore

    store = DatasetStore(v1_root)
    tiny = tokenizer_refs(store.open("tiny@v1").manifest)
    assert {m: (r.kind, r.spec, r.name) for m, r in tiny.items()} == {
        "video": ("visual", "tiny", "magvit2-tiny"),
        "audio": ("audio", "tiny", "soundstream-tiny"),
        "text": ("text", "tiny", "t5-tiny-random"),
    }
    shipped = tokenizer_refs(store.open("shipped@v1").manifest)
    assert {m: (r.kind, r.spec) for m, r in shipped.items()} == {
        "video": ("visual", "default"),
        "audio": ("audio", "default"),
        "text": ("text", "default"),
    }
    assert shipped["video"].fingerprint.startswith("9e6b894c8f8b")


def test_v1_cli_info_verify_show(v1_root, capsys):
    from videopoet.cli.main import main

    assert main(["data", "info", "shipped@v1", "--root", v1_root, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["totals"]["records"] == 7 and info["tokenizers"]["video"]["name"] == "magvit2-small"
    assert main(["data", "verify", "tiny@v1", "--root", v1_root, "--deep"]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["data", "show", "tiny@v1", "--root", v1_root]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 7 and len({r["key"] for r in rows}) == 7


def test_v1_shipped_dataset_decodes(v1_root, tmp_path, capsys):
    """The defect that made tokenizer identity data: ``default (shipped)`` used not to resolve."""
    from videopoet import media
    from videopoet.cli.main import main

    out = tmp_path / "decoded"
    assert main(["data", "show", "shipped@v1", "--root", v1_root, "--decode", str(out)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    written = sorted(os.path.basename(p) for r in rows for p in r["decoded"])
    assert sum(w.endswith(".mp4") for w in written) == 6 and sum(w.endswith(".wav") for w in written) == 6
    assert sum(w.endswith(".jpg") for w in written) == 1
    for name in written:
        blob = (out / name).read_bytes()
        if name.endswith(".mp4"):
            assert media.decode_frames(blob, fps=8.0).frames.shape == (17, 32, 32, 3)
            assert media.extract_audio_track(blob, 16000).size >= 106 * 320 - 1024
        elif name.endswith(".wav"):
            assert media.decode_audio(blob, 16000).shape == (106 * 320,)  # 106 SoundStream frames, hop 320
        else:
            assert media.decode_image(blob).shape == (32, 32, 3)


def test_v1_dataset_trains(v1_root, tmp_path, capsys):
    from videopoet.cli.main import main

    out = str(tmp_path / "run")
    rc = main(
        [
            "train",
            "--config",
            "tiny",
            "--data",
            "tiny@v1",
            "--root",
            v1_root,
            "--out",
            out,
            "--json",
            "steps=2",
            "mesh.data=1",
        ]
    )
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["status"] == "completed" and res["step"] == 2
    with open(os.path.join(out, "run.json")) as f:
        run = json.load(f)
    assert run["dataset"]["fingerprint"].startswith(FINGERPRINTS["tiny@v1"])
    assert set(run["dataset"]["tokenizers"]) == {"video", "audio", "text"}
