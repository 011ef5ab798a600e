"""Stylization from the pipeline's own conditions: optical flow rendered as hue = direction on a moving
square, an ONNX depth network checked when it loads, the pipeline's ``style_flow`` / ``style_depth``
streams counted in the manifest, and a tiny run that trains ``stylize`` from them and generates with
``videopoet generate --task stylize`` (tiny tokenizers and model)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="the style extra: pip install 'videopoet[style]'")
onnx = pytest.importorskip("onnx", reason="the test extra builds ONNX models with the onnx package")
pytest.importorskip("onnxruntime", reason="the style extra: pip install 'videopoet[style]'")

from videopoet.cli.main import main  # noqa: E402
from videopoet.media import style  # noqa: E402
from videopoet.schemas.record import STYLE_STREAMS  # noqa: E402


def _moving_square(dx: int, dy: int, frames: int = 5, size: int = 32) -> np.ndarray:
    """A textured 10x10 square moving (dx, dy) pixels a frame over a dark plain background."""
    tex = np.random.default_rng(0).integers(60, 255, (10, 10, 3)).astype(np.uint8)
    out = np.full((frames, size, size, 3), 30, np.uint8)
    for t in range(frames):
        y, x = 11 + dy * t, 11 + dx * t
        out[t, y : y + 10, x : x + 10] = tex
    return out


@pytest.mark.parametrize(
    "dx,dy,hue,rgb",
    [(2, 0, 0, (255, 0, 0)), (0, 2, 90, (128, 255, 0)), (-2, 0, 180, (0, 255, 255)), (0, -2, 270, (128, 0, 255))],
)
def test_flow_render_hue_is_the_direction(dx, dy, hue, rgb):
    frames = _moving_square(dx, dy)
    flow = style.optical_flow(frames)
    assert flow.shape == (5, 32, 32, 2) and flow.dtype == np.float32
    inside = (1, slice(11 + dy + 2, 11 + dy + 8), slice(11 + dx + 2, 11 + dx + 8))  # frame 1's square
    np.testing.assert_allclose(flow[inside].reshape(-1, 2).mean(0), (dx, dy), atol=0.1)
    video = style.flow_video(frames)
    assert video.shape == frames.shape and video.dtype == np.uint8
    hsv = cv2.cvtColor(video.reshape(-1, 32, 3), cv2.COLOR_RGB2HSV).reshape(video.shape)
    assert abs(int(np.median(hsv[inside][..., 0])) * 2 - hue) <= 4  # OpenCV's 8-bit hue is degrees / 2
    assert hsv[inside][..., 2].min() > 230  # the fastest motion in the clip: full value
    np.testing.assert_allclose(video[inside].reshape(-1, 3).mean(0), rgb, atol=6)
    assert video[1, :4, :4].max() == 0  # the still background is black
    assert style.flow_video(np.repeat(frames[:1], 3, axis=0)).max() == 0  # a still clip: no motion, no colour


def _depth_onnx(path, in_shape=("N", 3, "H", "W"), out_rank=4):
    """A tiny depth 'network': the channel mean (brighter = nearer), [N,1,H,W] (or [N,H,W])."""
    from onnx import TensorProto, helper

    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [helper.make_node("ReduceMean", ["image", "axes"], ["depth"], keepdims=1 if out_rank == 4 else 0)]
    out_shape = ["N", 1, "H", "W"] if out_rank == 4 else ["N", "H", "W"]
    graph = helper.make_graph(
        nodes,
        "depth",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("depth", TensorProto.FLOAT, out_shape)],
        initializer=[axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def test_depth_model_interface_checked_when_it_loads(tmp_path):
    model = style.DepthModel(_depth_onnx(tmp_path / "d.onnx"))
    frames = _moving_square(2, 0)
    depth = model.predict(frames)
    assert depth.shape == (5, 32, 32)
    np.testing.assert_allclose(depth, frames.astype(np.float32).mean(-1) / 255.0, atol=1e-5)
    grey = style.render_depth(depth)
    assert grey.shape == frames.shape and grey.max() == 255 and grey.min() == 0
    assert (grey[..., 0] == grey[..., 2]).all()
    fixed = style.DepthModel(_depth_onnx(tmp_path / "f.onnx", in_shape=(1, 3, 16, 16), out_rank=3))
    assert fixed.predict(frames).shape == (5, 32, 32)  # resized to the network's size and back
    with pytest.raises(style.StyleError, match=r"input must be \[N, 3, H, W\]"):
        style.DepthModel(_depth_onnx(tmp_path / "bad.onnx", in_shape=("N", 1, "H", "W")))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(style.StyleError, match="does not load"):
        style.DepthModel(str(tmp_path / "junk.onnx"))
    with pytest.raises(style.StyleError, match="not found"):
        style.DepthModel(str(tmp_path / "missing.onnx"))


# ----------------------------------------------------------------------------------- pipeline
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A synth tiny corpus (3 clips, 1 image) through `pipeline run --style-conditions --depth-model`."""
    from videopoet.pipelines.synth import generate_corpus

    d = tmp_path_factory.mktemp("style")
    corpus = str(d / "corpus")
    generate_corpus(corpus, clips=3, images=1, shards=1, seed=4, config="tiny", progress=False)
    depth = _depth_onnx(d / "depth.onnx")
    root = str(d / "datasets")
    argv = ["pipeline", "run", "--input", os.path.join(corpus, "*.tar"), "--name", "st", "--version", "v1"]
    argv += ["--root", root, "--config", "tiny", "--no-progress", "--json"]
    assert main([*argv, "--style-conditions", "--depth-model", depth]) == 0
    from videopoet.schemas import store

    totals = store.open_dataset("st@v1", root).manifest["totals"]
    return {"root": root, "corpus": corpus, "depth": depth, "dir": d, "totals": totals}


def test_pipeline_writes_style_streams_counted_in_the_manifest(built):
    from videopoet.schemas import store
    from videopoet.schemas.shards import read_records, sha256_of

    ds = store.open_dataset("st@v1", built["root"])
    lineage = ds.manifest["lineage"]
    assert lineage["pipeline_config"]["style_conditions"] == ["flow", "depth"]
    assert lineage["style"] == {
        "conditions": ["flow", "depth"],
        "streams": ["style_flow", "style_depth"],
        "flow": "opencv-farneback",
        "depth_model": {"path": "depth.onnx", "sha256": sha256_of(built["depth"])[0]},
    }
    recs = [r for p in ds.shard_paths() for r in read_records(p)]
    videos = [r for r in recs if not r.meta["is_image"]]
    assert videos and len(videos) < len(recs)
    for r in recs:
        names = {STYLE_STREAMS["flow"], STYLE_STREAMS["depth"]}
        if r.meta["is_image"]:
            assert not names & set(r.conditions)
            continue
        for name in names:
            assert r.conditions[name].shape == r.video.shape and r.conditions[name].dtype == np.int32
        assert not np.array_equal(r.conditions["style_flow"], r.video)
    tokens = ds.manifest["totals"]["tokens"]
    assert tokens["style"] == 2 * sum(r.video.size for r in videos) > 0
    assert tokens["condition"] == sum(
        v.size for r in recs for k, v in r.conditions.items() if not k.startswith("style_")
    )
    assert store.verify(ds, deep=True).ok


def test_flow_only_without_a_depth_source_and_bad_depth_models(built, tmp_path, capsys):
    from videopoet.pipelines import driver, prepare, tokenize
    from videopoet.pipelines.config import load_pipeline_config

    cfg = load_pipeline_config("tiny", ["style_conditions=[flow]"])
    assert driver.style_lineage(cfg) == {
        "conditions": ["flow"],
        "streams": ["style_flow"],
        "flow": "opencv-farneback",
        "depth_model": None,
    }
    from videopoet.media.webdataset import iter_samples

    shard = sorted(n for n in os.listdir(built["corpus"]) if n.endswith(".tar"))[0]
    samples = iter_samples(os.path.join(built["corpus"], shard))
    sample = next(s for s in samples if "mp4" in getattr(s, "members", {}))
    items = prepare.prepare_sample(sample, cfg, shard, "0" * 64)
    recs, failed = tokenize.tokenize_items(items, tokenize.load_tokenizers(cfg), cfg)
    assert not failed and all(set(r.conditions) & {"style_flow", "style_depth"} == {"style_flow"} for r in recs)
    base = ["pipeline", "run", "--input", os.path.join(built["corpus"], "*.tar"), "--name", "x", "--version", "v1"]
    base += ["--root", str(tmp_path), "--config", "tiny", "--no-progress"]
    bad = _depth_onnx(tmp_path / "bad.onnx", in_shape=("N", 1, "H", "W"))
    for extra, msg in [
        (["--style-conditions", "--depth-model", bad], r"input must be \[N, 3, H, W\]"),
        (["--depth-model", bad], "goes with --style-conditions"),
        (["style_conditions=[depth]"], "needs depth_model"),
    ]:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert pytest.importorskip("re").search(msg, err), err


# ----------------------------------------------------------------------------------- train + generate
@pytest.mark.slow
def test_stylize_trains_from_the_streams_and_generates(built, capsys):
    from videopoet.media.encode import encode_mp4
    from videopoet.pipelines.synth import load_synth_config, render_frames, sample_attrs
    from videopoet.trainer import train
    from videopoet.trainer.config import load_train_config

    out = str(built["dir"] / "run")
    cfg = load_train_config(
        "tiny",
        ["steps=2", "log_every=1", "checkpoint_every=2", "mesh.data=1", "batch_size=2", "data.mixture={stylize: 1.0}"],
    )
    train.train(cfg, "st@v1", out, root=built["root"])
    with open(os.path.join(out, "metrics.jsonl")) as f:
        assert all(set(json.loads(line)["tasks"]) == {"stylize"} for line in f if '"tasks"' in line)
    with open(os.path.join(out, "run.json")) as f:
        info = json.load(f)
    plan = info["plan"]
    clips = built["totals"]["records"] - 1  # every video clip; the image (one frame) is skipped with its reason
    assert plan["eligible"]["stylize"] == clips and plan["skipped"]["stylize"] == {"single_frame": 1}
    # both variants (streams alone; streams + the first frame) train, each its own AGD length group
    assert sorted(g["records"] for g in plan["groups"] if g["tasks"] == ["stylize"]) == [clips, clips]

    scfg = load_synth_config("tiny", ["sizes=[[32,32]]", "portrait_fraction=0.0", "frames=17"])
    clip = render_frames(sample_attrs(scfg, 0, "train", "video", 0, "k"))
    path = built["dir"] / "clip.mp4"
    path.write_bytes(encode_mp4(clip, None, 8))
    target = str(built["dir"] / "styled.mp4")
    argv = ["generate", "--run", out, "--task", "stylize", "--input", str(path), "--prompt", "a blue circle"]
    assert main([*argv, "--first-frame", "--out", target, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["frames"] == 17 and res["size"] == [32, 32] and os.path.getsize(target) > 0
    assert main([*argv, "--first-frame", "--out", target, "--depth-model", "nope.onnx"]) == 2
    assert "depth model not found" in capsys.readouterr().err
    # a model directory keeps what stylize needs: the dataset's style conditions and depth network hash
    from videopoet.trainer import export, generation

    model_dir = str(built["dir"] / "model")
    rec = export.export_run(out, model_dir)
    assert rec["dataset_manifest"]["lineage"]["style"]["conditions"] == ["flow", "depth"]
    assert generation._style_of(rec["dataset_manifest"], None) == (("flow", "depth"), built["depth"])
    with pytest.raises(generation.GenerationError, match="differs from the network"):
        generation._style_of(rec["dataset_manifest"], _depth_onnx(built["dir"] / "other.onnx", out_rank=3))
    # the eval row: the scene's motion with a caption naming another colour, graded by the scorer
    ev = str(built["dir"] / "ev")
    assert main(["eval", "--run", out, "--scenes", "1", "--tasks", "stylize", "--out", ev, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert set(rep["stylize"]["seen"]) == {"colour", "shape", "motion", "all", "n", "ci95"}
    assert rep["stylize"]["heldout"]["n"] == 1 and "t2v" not in rep
    for s in rep["samples"]["stylize"]:
        assert s["all"] == (s["colour"] and s["shape"] and s["motion"])
        assert os.path.exists(os.path.join(ev, f"stylize_{s['key']}_{s['sample']}_input.gif"))
    assert "<h2>stylize</h2>" in open(os.path.join(ev, "gallery.html")).read()


def test_restyled_caption_names_another_colour():
    from videopoet.trainer import evaluate, generation

    scene = evaluate.eval_scenes(generation.MediaSpec(frames=5, height=32, width=32), per_split=1)[0]
    new = evaluate.restyled(scene)
    assert new["want"]["colour"] != scene["want"]["colour"] and new["want"]["colour"] in new["caption"]
    assert {k: v for k, v in new["want"].items() if k != "colour"} == {
        k: v for k, v in scene["want"].items() if k != "colour"
    }
    assert new["frames"] is scene["frames"]  # the input clip is the scene's own
