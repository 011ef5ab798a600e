"""Training on a weighted mixture of datasets (`--data a@1=0.7,b@prod=0.3`): proportions, exact resume, a
weight change on resume, vocabulary agreement, one-line errors (tiny preset, tiny synthetic datasets)."""

import glob
import json
import os

import numpy as np
import pytest

from videopoet.cli.main import main
from videopoet.rundir.loop import Hook
from videopoet.rundir.metrics import read_metrics
from videopoet.schemas import lifecycle, store
from videopoet.trainer import data, synthetic, train
from videopoet.trainer.config import load_train_config

OVR = [
    "steps=8",
    "log_every=1",
    "checkpoint_every=4",
    "data.mixture={t2v: 1.0, fp: 1.0}",
    "mesh.data=1",
    "batch_size=4",
]


def _lineage(bits: int) -> dict:
    return {
        "tokenizers": {
            "video": {
                "kind": "visual",
                "spec": "x",
                "name": "magvit2-x",
                "fingerprint": "a" * 64,
                "config": {"lfq_bits": bits},
            }
        }
    }


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = str(tmp_path_factory.mktemp("root"))
    vocab = load_train_config("tiny").model.vocab
    bits = int(np.log2(vocab.visual_size))
    store.write_dataset(r, "a", "1", {"a.tar": synthetic.make_records(10, vocab, seed=1)}, lineage=_lineage(bits))
    store.write_dataset(r, "b", "1", {"b.tar": synthetic.make_records(6, vocab, seed=2)}, lineage=_lineage(bits))
    lifecycle.tag(store.DatasetStore(r), "b@1", "prod")
    store.write_dataset(r, "c", "1", {"c.tar": synthetic.make_records(4, vocab, seed=3)}, lineage=_lineage(bits - 1))
    store.write_dataset(r, "d", "1", {"d.tar": synthetic.make_records(4, vocab, seed=4)}, lineage=_lineage(bits))
    return r


def _mix(root, spec, *ovr):
    return data.open_dataset_mixture(spec, load_train_config("tiny", [*OVR, *ovr]), root)[1]


def test_spelling_parses_normalizes_and_refuses_bad_input():
    assert data.parse_data_spec("a@1") == [("a@1", 1.0)]
    assert data.parse_data_spec("a@1=0.7,b@prod=0.3") == [("a@1", 0.7), ("b@prod", 0.3)]
    assert data.parse_data_spec("a@1=3, b@2") == [("a@1", 0.75), ("b@2", 0.25)]
    for bad, why in [
        ("a@1=0,b@1=1", "positive"),
        ("a@1=-1,b@1", "positive"),
        ("a@1=x,b@1", "not a number"),
        ("a@1=nan,b@1", "positive"),
        ("a@1,,b@1", "empty"),
        ("a@1,a@1", "twice"),
        ("", "empty"),
    ]:
        with pytest.raises(data.DataSpecError, match=why):
            data.parse_data_spec(bad)


def test_counts_follow_the_weights_deterministically(root):
    mix = _mix(root, "a@1=0.7,b@prod=0.3", "steps=200")
    steps = mix.steps_drawn(200)
    assert steps == {"a": 140, "b": 60}
    for n in (7, 10, 33, 101):  # every prefix holds each dataset's share within one step
        got = mix.steps_drawn(n)
        assert abs(got["a"] - 0.7 * n) < 1 and abs(got["b"] - 0.3 * n) < 1, (n, got)
    again = _mix(root, "b@1=0.3,a@1=0.7", "steps=200")  # the spelling's order does not matter
    for s in range(12):
        x, y = mix.global_batch(s), again.global_batch(s)
        assert x["dataset"] == y["dataset"] and x["group"] == y["group"]
        assert all(np.array_equal(x[k], y[k]) for k in data.BATCH_KEYS)
    # a batch's rows come from its dataset's own records (its task mixture, groups, shuffles)
    b = mix.global_batch(0)
    part = mix.parts[mix.names.index(b["dataset"])]
    assert b["group"].split("/", 1)[1] in {g.name for g in part.plan.groups}
    assert mix.records_drawn(200) == {"a": 560, "b": 240}
    # the record names every dataset with its fingerprint and weight; its fingerprint is the datasets'
    rec = mix.record()
    assert [(e["name"], e["weight"]) for e in rec["mixture"]] == [("a", 0.7), ("b", 0.3)]
    assert rec["fingerprint"] == data.mixture_fingerprint({e["name"]: e["fingerprint"] for e in rec["mixture"]})
    assert rec["ref"] == "a@1=0.7,b@1=0.3" and rec["schedule"] == [{"from_step": 0, "weights": {"a": 0.7, "b": 0.3}}]


def test_weight_change_keeps_the_past_and_continues_positions(root):
    old = _mix(root, "a@1=0.7,b@1=0.3", "steps=100")
    new = _mix(root, "a@1=0.2,b@1=0.8", "steps=100")
    new.schedule = old.schedule
    change = new.start_at(40)
    assert change == {"from_step": 40, "weights": {"a": 0.2, "b": 0.8}, "previous": {"a": 0.7, "b": 0.3}}
    assert new.steps_drawn(40) == old.steps_drawn(40) == {"a": 28, "b": 12}
    for s in range(40):
        assert new.locate(s) == old.locate(s)
    assert new.steps_drawn(100) == {"a": 28 + 12, "b": 12 + 48}
    # each dataset continues from its position: every (dataset, group) stream is read on, never restarted
    seen: dict = {}
    for s in range(100):
        d, g, k = new.locate(s)
        assert k == seen.get((d, g), 0)
        seen[(d, g)] = k + 1
    same = _mix(root, "a@1=0.7,b@1=0.3", "steps=100")
    same.schedule = old.schedule
    assert same.start_at(40) is None and same.schedule == old.schedule


def test_vocabulary_mismatch_names_dataset_and_field(root, tmp_path, capsys):
    with pytest.raises(data.DataMismatchError, match=r"dataset c@1 differs from a@1 in its vocabulary: visual_size"):
        data.open_datasets("a@1=0.5,c@1=0.5", root)
    out = str(tmp_path / "r")
    assert main(["train", "--config", "tiny", "--data", "a@1=0.5,c@1=0.5", "--root", root, "--out", out]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("videopoet: error: dataset c@1 differs") and "visual_size" in err and "\n" not in err


@pytest.mark.parametrize(
    "spec, why",
    [("a@1=0,b@1=1", "must be a positive number"), ("a@1=x,b@1", "not a number"), ("a@1,nope@1", "nope")],
)
def test_bad_spelling_is_one_line(root, tmp_path, capsys, spec, why):
    assert main(["train", "--config", "tiny", "--data", spec, "--root", root, "--out", str(tmp_path / "r")]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("videopoet: error:") and why in err and "\n" not in err


def _stop_at_4(info):
    if info.step == 4:
        info.run.request_stop()


def test_mixture_training_resumes_bit_for_bit_and_honours_new_weights(root, tmp_path):
    cfg = load_train_config("tiny", OVR)
    spec = "a@1=0.7,b@prod=0.3"
    full = train.train(cfg, spec, str(tmp_path / "full"), root=root)
    assert full["status"] == "completed" and full["step"] == 8
    assert full["datasets"]["a"]["records_drawn"] + full["datasets"]["b"]["records_drawn"] == 8 * 4
    assert full["datasets"]["a"]["records_drawn"] == 4 * _mix(root, spec).steps_drawn(8)["a"] in (20, 24)
    rows = read_metrics(str(tmp_path / "full"))
    assert [sum(r["datasets"].values()) for r in rows] == [4 * (i + 1) for i in range(8)]
    assert rows[-1]["datasets"] == {n: d["records_drawn"] for n, d in full["datasets"].items()}
    info = json.load(open(os.path.join(tmp_path / "full", "run.json")))
    ds = info["dataset"]
    assert [(e["name"], e["ref"], e["weight"], len(e["fingerprint"])) for e in ds["mixture"]] == [
        ("a", "a@1", 0.7, 64),
        ("b", "b@1", 0.3, 64),
    ]
    assert len(ds["fingerprint"]) == 64 and ds["uri"]

    part = str(tmp_path / "part")
    res = train.train(cfg, spec, part, root=root, hooks=[Hook(_stop_at_4)])
    assert res["status"] == "stopped" and res["checkpoint"] == 4
    res = train.train(cfg, spec, part, root=root)
    assert res["resumed_from"] == 4 and res["step"] == 8 and res["weight_change"] is None
    assert [r["loss"] for r in read_metrics(part)] == [r["loss"] for r in rows]  # exact, step by step
    assert res["datasets"] == full["datasets"]

    # resume with other weights: the first 4 steps as before, then each dataset from its position
    moved = str(tmp_path / "moved")
    train.train(cfg, spec, moved, root=root, hooks=[Hook(_stop_at_4)])
    res = train.train(cfg, "a@1=0.25,b@1=0.75", moved, root=root)
    assert res["resumed_from"] == 4 and res["weight_change"]["from_step"] == 4
    info = json.load(open(os.path.join(moved, "run.json")))
    assert info["dataset"]["schedule"] == [
        {"from_step": 0, "weights": {"a": 0.7, "b": 0.3}},
        {"from_step": 4, "weights": {"a": 0.25, "b": 0.75}, "previous": {"a": 0.7, "b": 0.3}},
    ]
    assert [e["weight"] for e in info["dataset"]["mixture"]] == [0.25, 0.75]
    got = read_metrics(moved)
    assert [r["loss"] for r in got[:4]] == [r["loss"] for r in rows[:4]]
    before = got[3]["datasets"]
    after = {n: got[-1]["datasets"][n] - before[n] for n in before}
    assert after == {"a": 4, "b": 12}  # 4 steps at 0.25 / 0.75
    assert res["datasets"]["b"]["records_drawn"] == before["b"] + 12
    metas = glob.glob(os.path.join(moved, "checkpoints", "8", "meta", "*"))
    m = json.load(open(next(p for p in metas if os.path.isfile(p))))
    assert m["data_positions"] == {n: v // 4 for n, v in got[-1]["datasets"].items()}

    # a resume may change the weights and add datasets, not drop one: refused in one line
    with pytest.raises(data.DataMismatchError, match="a resume on one dataset is refused"):
        train.train(cfg, "a@1", moved, root=root)
    with pytest.raises(data.DataMismatchError, match="removes b is refused"):
        train.train(cfg, "a@1=0.5,d@1=0.5", moved, root=root)
    single = tmp_path / "single"
    single.mkdir()
    (single / "run.json").write_text(json.dumps({"dataset": {"ref": "a@1", "fingerprint": "0" * 64}}))
    with pytest.raises(data.DataMismatchError, match="trained on one dataset"):
        train.train(cfg, spec, str(single), root=root)


def test_a_resume_may_add_a_dataset_and_keeps_the_batches_before_it(root, tmp_path):
    cfg = load_train_config("tiny", OVR)
    spec = "a@1=0.7,b@1=0.3"
    full = str(tmp_path / "full")
    train.train(cfg, spec, full, root=root)
    grown = str(tmp_path / "grown")
    train.train(cfg, spec, grown, root=root, hooks=[Hook(_stop_at_4)])
    res = train.train(cfg, "a@1=0.5,b@1=0.25,d@1=0.25", grown, root=root)
    assert res["status"] == "completed" and res["resumed_from"] == 4
    assert res["weight_change"] == {
        "from_step": 4,
        "weights": {"a": 0.5, "b": 0.25, "d": 0.25},
        "previous": {"a": 0.7, "b": 0.3},
    }
    rows, before = read_metrics(grown), read_metrics(full)
    assert [r["loss"] for r in rows[:4]] == [r["loss"] for r in before[:4]]  # exact: the past is kept
    assert "d" not in rows[3]["datasets"] or rows[3]["datasets"]["d"] == 0
    drawn = {n: rows[-1]["datasets"][n] - rows[3]["datasets"].get(n, 0) for n in ("a", "b", "d")}
    assert drawn == {"a": 8, "b": 4, "d": 4}  # 4 steps at 0.5 / 0.25 / 0.25, 4 rows each
    info = json.load(open(os.path.join(grown, "run.json")))
    assert [e["name"] for e in info["dataset"]["mixture"]] == ["a", "b", "d"]
    assert [s["from_step"] for s in info["dataset"]["schedule"]] == [0, 4]
    # the grown mixture gives steps 0-3 exactly as the original one did
    old = _mix(root, spec)
    new = _mix(root, "a@1=0.5,b@1=0.25,d@1=0.25")
    new.schedule = info["dataset"]["schedule"]
    for s in range(4):
        x, y = old.global_batch(s), new.global_batch(s)
        assert x["dataset"] == y["dataset"] and all(np.array_equal(x[k], y[k]) for k in data.BATCH_KEYS)
    assert {new.locate(s)[0] for s in range(4, 8)} >= {new.names.index("d")}
    # and it resumes again from its own record (the added dataset is now part of it)
    again = train.train(load_train_config("tiny", [*OVR, "steps=8"]), "a@1=0.5,b@1=0.25,d@1=0.25", grown, root=root)
    assert again["resumed_from"] == 8 and again["weight_change"] is None


def test_cli_json_summary_and_submit_preflight(root, tmp_path, capsys):
    from videopoet.infra import request
    from videopoet.infra.request import SubmitRequest

    out = str(tmp_path / "run")
    args = ["train", "--config", "tiny", "--data", "a@1=0.7,b@prod=0.3", "--root", root, "--out", out, "--json"]
    assert main([*args, "steps=2", "mesh.data=1", "batch_size=4", "data.mixture={t2v: 1.0}"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["status"] == "completed" and res["weight_change"] is None
    assert {n: d["records_drawn"] for n, d in res["datasets"].items()} == {"a": 4, "b": 4}
    assert [d["weight"] for d in res["datasets"].values()] == [0.7, 0.3]
    # submit's preflight verifies every dataset and reports the mixture's identity, as run.json records it
    req = SubmitRequest(
        kind="train",
        target="local",
        name="run",
        run_dir=str(tmp_path / "sub"),
        config="tiny",
        root=root,
        data="b@prod=0.3,a@1=0.7",  # the spelling's order does not matter
    )
    got = request.preflight(req)["dataset"]
    recorded = json.load(open(os.path.join(out, "run.json")))["dataset"]
    assert got["fingerprint"] == recorded["fingerprint"] and got["ref"] == recorded["ref"] == "a@1=0.7,b@1=0.3"
    assert [e["name"] for e in got["mixture"]] == ["a", "b"]


def test_super_resolution_trains_on_one_dataset(root, tmp_path, capsys):
    argv = ["train", "--model", "sr", "--config", "tiny", "--data", "a@1,b@1", "--root", root, "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("videopoet: error: --model sr trains on one dataset") and "\n" not in err


def test_a_mixture_run_exports_from_a_moved_datasets_root(root, tmp_path):
    """``export --root``: every member is found under the new root and checked by fingerprint; the
    model directory records the mixture and its schedule."""
    import shutil

    from videopoet.trainer import export

    run = str(tmp_path / "run")
    train.train(load_train_config("tiny", OVR), "a@1=0.7,b@prod=0.3", run, root=root)
    moved = str(tmp_path / "moved")
    shutil.copytree(root, moved)
    rec = export.export_run(run, str(tmp_path / "model"), root=moved)
    assert [(e["ref"], e["weight"]) for e in rec["dataset"]["mixture"]] == [("a@1", 0.7), ("b@1", 0.3)]
    assert rec["dataset"]["schedule"][0]["weights"] == {"a": 0.7, "b": 0.3}
    assert rec["dataset_manifest"]["lineage"]["tokenizers"]["video"]["name"] == "magvit2-x"
    assert export.load_model_dir(str(tmp_path / "model")).step == 8
    # a member that is not the one trained on (same name and version, other records) is refused
    shutil.rmtree(os.path.join(moved, "b"))
    vocab = load_train_config("tiny").model.vocab
    bits = int(np.log2(vocab.visual_size))
    store.write_dataset(moved, "b", "1", {"b.tar": synthetic.make_records(6, vocab, seed=9)}, lineage=_lineage(bits))
    with pytest.raises(export.ExportError, match="b@1 under .* is not the dataset"):
        export.export_run(run, str(tmp_path / "model2"), root=moved)
