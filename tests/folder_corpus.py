"""A folder corpus for the tests: media files in nested folders and a Parquet table of their captions.

``make_folder_corpus(dir)`` takes the clips of a small synthetic corpus out of their tars and lays them
out the way public video-text sets arrive: ``clips/{group}/{name}.mp4`` plus ``captions.parquet``
(columns ``path``, ``caption``, ``source``). The table names three of the four files, names one file that
is not there, names the first file a second time, and has a row whose path leaves the folder, so every
folder-level reject code appears once. Returns ``(folder, table, good_keys)``.
"""

from __future__ import annotations

import os

EXPECTED_REJECTS = {"missing_file": 1, "no_metadata": 1, "duplicate_key": 1, "unsafe_path": 1}


def make_folder_corpus(base: str) -> tuple[str, str, list[str]]:
    import glob

    import pyarrow
    import pyarrow.parquet

    from videopoet.media.webdataset import Sample, iter_samples
    from videopoet.pipelines.synth import generate_corpus

    synth = os.path.join(base, "synth")
    generate_corpus(synth, clips=4, shards=1, seed=5, config="tiny", progress=False)
    clips = [s for p in sorted(glob.glob(os.path.join(synth, "*.tar"))) for s in iter_samples(p)]
    assert len(clips) == 4 and all(isinstance(s, Sample) and "mp4" in s.members for s in clips)
    folder = os.path.join(base, "corpus")
    rows, keys = [], []
    for i, s in enumerate(clips):
        rel = f"clips/g{i % 2}/clip.{i}.mp4"  # a dot in the name: the key is clips/g0/clip_0
        os.makedirs(os.path.join(folder, os.path.dirname(rel)), exist_ok=True)
        with open(os.path.join(folder, rel), "wb") as f:
            f.write(s.members["mp4"])
        if i < 3:
            rows.append({"path": rel, "caption": s.members["txt"].decode(), "source": f"synth-{i}"})
            keys.append(f"clips/g{i % 2}/clip_{i}")
    rows.append({"path": "clips/g9/gone.mp4", "caption": "a clip that was never downloaded", "source": "x"})
    rows.append({"path": rows[0]["path"], "caption": "the first clip, captioned twice", "source": "y"})
    rows.append({"path": "../outside.mp4", "caption": "escapes the folder", "source": "z"})
    table = os.path.join(base, "captions.parquet")
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), table)
    return folder, table, sorted(keys)
