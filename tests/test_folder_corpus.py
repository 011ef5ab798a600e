"""Folder corpora (videopoet.pipelines.folder): a folder of media files + a metadata table, read by the
pipeline directly and packed into webdataset shards by `videopoet corpus pack`, with the same fingerprint."""

from __future__ import annotations

import csv
import glob
import json
import os
import shutil

import pytest
from folder_corpus import EXPECTED_REJECTS, make_folder_corpus

from videopoet.cli.main import main
from videopoet.pipelines import folder as folder_corpus
from videopoet.pipelines.errors import PipelineError
from videopoet.pipelines.inputs import input_name, input_sha256, list_input_shards, open_input
from videopoet.schemas import store
from videopoet.schemas.shards import read_records


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_folder_corpus(str(tmp_path_factory.mktemp("folder")))


def _spec(folder, table, per=4, **kw) -> str:
    return folder_corpus.FolderCorpus(folder, table, samples_per_shard=per, **kw).to_json()


def _units(folder, table, per=4, **kw) -> dict[str, str]:
    return {input_name(u): input_sha256(u) for u in list_input_shards(_spec(folder, table, per, **kw))}


def test_every_row_and_file_is_accounted_for(corpus):
    folder, table, keys = corpus
    counts = folder_corpus.plan_counts(folder_corpus.FolderCorpus(folder, table, samples_per_shard=4))
    assert counts["samples"] == len(keys) + sum(EXPECTED_REJECTS.values()) == 7
    assert counts["rejected"] == EXPECTED_REJECTS
    refs = list_input_shards(_spec(folder, table))
    assert [input_name(u) for u in refs] == ["captions-00000.tar", "captions-00001.tar"]
    # a unit opens as a tar whose samples are the plan's (rejects as json-only records), the same bytes twice
    import tarfile

    with open_input(refs[0]) as (path, sha, size):
        names = tarfile.open(path).getnames()
        assert os.path.getsize(path) == size
    with open_input(refs[0]) as (_, sha_again, _):
        assert sha_again == sha
    assert names[:3] == ["clips/g0/clip_0.json", "clips/g0/clip_0.mp4", "clips/g0/clip_0.txt"]


def test_a_moved_folder_and_a_csv_table_give_the_same_units(corpus, tmp_path):
    folder, table, _ = corpus
    want = _units(folder, table)
    moved = str(tmp_path / "elsewhere" / "videos")
    shutil.copytree(folder, moved)
    shutil.copy(table, tmp_path / "captions.parquet")
    assert _units(moved, str(tmp_path / "captions.parquet")) == want
    # the same table as CSV (every column read as text) and as JSON lines
    import pyarrow.parquet

    rows = pyarrow.parquet.read_table(table).to_pylist()
    with open(tmp_path / "captions.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(tmp_path / "captions.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    assert _units(folder, str(tmp_path / "captions.csv")) == want
    assert _units(folder, str(tmp_path / "captions.jsonl")) == want
    # a different cut is a different set of units
    assert _units(folder, table, per=2).keys() != want.keys()


def test_pipeline_on_the_folder_and_on_its_packed_shards(corpus, tmp_path, capsys):
    folder, table, keys = corpus
    root = str(tmp_path / "datasets")
    common = ["--root", root, "--config", "tiny", "--no-progress", "--json"]
    argv = ["pipeline", "run", "--input", folder, "--metadata", table, "--samples-per-shard", "4"]
    assert main([*argv, "--name", "clips", "--version", "direct", *common]) == 0
    direct = json.loads(capsys.readouterr().out)
    ds = store.open_dataset("clips@direct", root)
    t = ds.manifest["totals"]
    assert t["samples_in"] == 7 and t["samples_rejected"] == 4
    by_reason = ds.manifest["rejects"]["by_reason"]
    assert by_reason == EXPECTED_REJECTS
    recorded = {r.lineage.sample_key for p in ds.shard_paths() for r in read_records(p)}
    assert sorted(recorded) == keys
    rejected = {(r["key"], r["reason"]) for r in ds.iter_rejects()}
    assert ("clips/g9/gone", "missing_file") in rejected and ("clips/g1/clip_3", "no_metadata") in rejected
    assert store.verify(ds, deep=True).ok

    out = str(tmp_path / "packed")
    assert main(["corpus", "pack", "--input", folder, "--metadata", table, "--samples-per-shard", "4", "--out", out,
                 "--no-progress", "--json"]) == 0  # fmt: skip
    packed = json.loads(capsys.readouterr().out)
    assert packed["rejected"] == EXPECTED_REJECTS and len(packed["shards"]) == 2
    assert sorted(os.listdir(out)) == ["captions-00000.tar", "captions-00001.tar", "pack.json"]
    assert {s["name"]: s["sha256"] for s in packed["shards"]} == _units(folder, table)
    argv = ["pipeline", "run", "--input", os.path.join(out, "*.tar"), "--name", "clips", "--version", "packed"]
    assert main([*argv, *common]) == 0
    assert json.loads(capsys.readouterr().out)["fingerprint"] == direct["fingerprint"] == ds.fingerprint


def test_bad_tables_and_folders_are_one_line_errors(corpus, tmp_path):
    folder, table, _ = corpus
    with pytest.raises(PipelineError, match="no column 'text'.*columns: path, caption, source"):
        list_input_shards(_spec(folder, table, caption_column="text"))
    with pytest.raises(PipelineError, match="does not exist or is not a folder"):
        list_input_shards(_spec(str(tmp_path / "nowhere"), table))
    with pytest.raises(PipelineError, match="metadata table .* does not exist"):
        list_input_shards(_spec(folder, str(tmp_path / "none.csv")))
    with pytest.raises(PipelineError, match="not .csv, .tsv, .jsonl or .parquet"):
        list_input_shards(_spec(folder, str(tmp_path / "t.xlsx")))
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(PipelineError, match="cannot read metadata table"):
        list_input_shards(_spec(folder, str(tmp_path / "broken.parquet")))


def test_a_corpus_changed_after_listing_is_refused(corpus, tmp_path):
    folder, table, _ = corpus
    copy = str(tmp_path / "copy")
    shutil.copytree(folder, copy)
    refs = list_input_shards(_spec(copy, table))
    os.remove(sorted(glob.glob(os.path.join(copy, "clips", "g1", "*.mp4")))[0])
    # the process that listed the corpus keeps its plan, and finds the file gone when it reads it
    with pytest.raises(PipelineError, match="cannot read clips/g1/clip.1.mp4 from"):
        with open_input(refs[0]):
            pass
    # a worker lists the corpus again, and refuses a plan other than the one the job listed
    folder_corpus._cached_plan.cache_clear()
    with pytest.raises(PipelineError, match="changed after the job listed it"):
        with open_input(refs[0]):
            pass


def test_a_folder_corpus_in_a_bucket_gives_the_same_units(corpus, s3_server):
    import fsspec

    folder, table, _ = corpus
    bucket = s3_server.new_bucket()
    fs = fsspec.filesystem("s3")
    fs.put(f"{folder}/", f"{bucket}/corpus/", recursive=True)
    fs.put(table, f"{bucket}/meta/captions.parquet")
    assert _units(f"{bucket}/corpus", f"{bucket}/meta/captions.parquet") == _units(folder, table)
