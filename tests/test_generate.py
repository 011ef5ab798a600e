"""Generation for every task: prompts and output plans from the trainer's layouts, the generator on
tiny models, and the `videopoet generate` / `videopoet eval` commands (end to end: slow)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from videopoet.cli.main import main
from videopoet.schemas.record import Lineage, TokenRecord
from videopoet.trainer import generation, tasks
from videopoet.trainer.config import load_train_config

CFG = load_train_config("tiny")
VOCAB = CFG.model.vocab
OPTS = tasks.TaskOptions(vocab=VOCAB, text_len=CFG.data.text_len)
LATENT = (5, 4, 4)
F = 12


def _record(seed=0):
    rng = np.random.default_rng(seed)
    video = rng.integers(0, VOCAB.visual_size, LATENT).astype(np.int32)
    audio = rng.integers(0, VOCAB.audio_codebook, (VOCAB.audio_levels, F)).astype(np.int32)
    conds = {
        "inpaint_center": rng.integers(0, VOCAB.visual_size, LATENT).astype(np.int32),
        "outpaint_border": rng.integers(0, VOCAB.visual_size, LATENT).astype(np.int32),
    }
    return TokenRecord(
        key="k",
        lineage=Lineage("s", "0" * 64, "k"),
        video=video,
        audio=audio,
        text_ids=np.array([5, 6, 1], np.int32),
        conditions=conds,
        meta={"bucket": "square"},
    )


def _placeholder(rec, task, k):
    """What the generator builds: the inputs kept, the output replaced by code 0."""
    video = np.zeros_like(rec.video)
    audio = None
    if task in ("i2v", "fp", "avcont"):
        video[:k] = rec.video[:k]
    if task in ("v2a", "a2v"):
        video, audio = (rec.video, np.zeros_like(rec.audio)) if task == "v2a" else (video, rec.audio)
    if task == "avcont":
        a = tasks.audio_split(F, LATENT[0], k)
        audio = np.concatenate([rec.audio[:, :a], np.zeros_like(rec.audio[:, a:])], axis=1)
    if task == "t2i":
        video = video[:1]
    return TokenRecord(
        key="p",
        lineage=rec.lineage,
        video=video,
        audio=audio,
        text_ids=rec.text_ids,
        conditions=rec.conditions,
        meta=rec.meta,
    )


@pytest.mark.parametrize(
    "task,variant",
    [
        ("t2v", 0),
        ("t2i", 0),
        ("uncond", 0),
        ("i2v", 0),
        ("fp", 2),
        ("inpaint", 0),
        ("outpaint", 4),
        ("v2a", 0),
        ("a2v", 0),
        ("avcont", 2),
    ],
)
def test_plan_and_readout_roundtrip(task, variant):
    """The placeholder's prefix is the real prefix; the plan admits exactly the real output; reading
    the real output back gives the record's codes (given frames first)."""
    rec = _record()
    real = tasks.build(task, rec, OPTS, variant)
    k = 1 if task == "i2v" else variant
    ph = tasks.build(task, _placeholder(rec, task, k), OPTS, variant)
    assert ph.prefix_len == real.prefix_len and ph.length == real.length
    np.testing.assert_array_equal(ph.tokens[: ph.prefix_len], real.tokens[: real.prefix_len])
    plan = generation.plan_from_example(ph, VOCAB)
    out = real.tokens[real.prefix_len :]
    assert plan.length == out.size
    forced = plan.forced >= 0
    np.testing.assert_array_equal(out[forced], plan.forced[forced])
    assert np.all((out[~forced] >= plan.lo[~forced]) & (out[~forced] < plan.hi[~forced]))
    if task in ("v2a", "avcont"):  # audio level by level: the level-0 range comes first, then level 1
        lv = [
            (lo - VOCAB.audio_offset) // VOCAB.audio_codebook
            for lo, f in zip(plan.lo, plan.forced, strict=True)
            if f < 0 and lo >= VOCAB.audio_offset
        ]
        assert lv == sorted(lv) and set(lv) == set(range(VOCAB.audio_levels))
    gv = rec.video[:k] if task in ("i2v", "fp", "avcont") else None
    a = tasks.audio_split(F, LATENT[0], k)
    ga = rec.audio[:, :a] if task == "avcont" else None
    video, audio = generation.read_output(ph, out, VOCAB, LATENT, gv, ga, F)
    if task == "v2a":
        assert video is None
    elif task == "t2i":
        np.testing.assert_array_equal(video, rec.video[:1])
    else:
        np.testing.assert_array_equal(video, rec.video)
    if task in ("v2a", "avcont"):
        np.testing.assert_array_equal(audio, rec.audio)
    else:
        assert audio is None


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["--task", "t2v", "--out", "x.mp4"], "t2v needs --prompt"),
        (["--task", "t2i", "--prompt", "a", "--out", "x.mp4"], "must end in .png"),
        (["--task", "i2v", "--out", "x.mp4"], "i2v needs --input"),
        (["--task", "v2a", "--input", "IMG", "--out", "x.wav"], "needs a video file"),
        (["--task", "fp", "--input", "/nonexistent/v.mp4", "--out", "x.mp4"], "input file not found"),
        (["--task", "uncond", "--input", "IMG", "--out", "x.mp4"], "takes no --input"),
        (["--task", "t2v", "--prompt", "a", "--mask", "inpaint_center", "--out", "x.mp4"], "--mask applies"),
        (["--task", "v2a", "--input", "IMG", "--seconds", "4", "--out", "x.wav"], "--seconds"),
        (["--task", "t2v", "--prompt", "a", "--temperature", "-1", "--out", "x.mp4"], "temperature"),
    ],
)
def test_cli_bad_requests_one_line_exit_2(argv, msg, tmp_path, capsys):
    img = tmp_path / "a.png"
    img.write_bytes(b"\x89PNG")
    argv = [str(img) if a == "IMG" else a for a in argv]
    os.makedirs(tmp_path / "run", exist_ok=True)
    rc = main(["generate", "--run", str(tmp_path / "run"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and msg in err[0], err


def test_cli_missing_run(tmp_path, capsys):
    rc = main(["generate", "--run", str(tmp_path / "nope"), "--task", "uncond", "--out", str(tmp_path / "x.mp4")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "run directory not found" in err[0]


# ----------------------------------------------------------------------------------- tiny model
@pytest.fixture(scope="module")
def generator():
    import jax

    from videopoet.tokenizers import magvit2, soundstream, text
    from videopoet.trainer import model

    vt, at, te = magvit2.load("tiny"), soundstream.load("tiny"), text.load("tiny")
    spec = generation.MediaSpec.of(vt, at, frames=17, height=32, width=32)
    params = model.init_params(CFG.model, jax.random.PRNGKey(0))
    return generation.Generator(model.build(CFG.model), params, CFG, vt, at, te, spec)


def _clip(spec):
    from videopoet.pipelines.synth import load_synth_config, render_audio, render_frames, sample_attrs

    scfg = load_synth_config(
        "tiny",
        [
            f"sizes=[[{spec.width},{spec.height}]]",
            "portrait_fraction=0.0",
            f"frames={spec.frames}",
            "two_object_fraction=0.0",
        ],
    )
    attrs = sample_attrs(scfg, 0, "train", "video", 0, "k")
    return render_frames(attrs), render_audio(attrs)


@pytest.mark.slow
def test_generator_tasks_shapes_and_seeds(generator):
    from videopoet.trainer.sampling import SamplingOptions

    sp = generator.spec
    vid, aud = _clip(sp)
    reqs = [generation.Request("t2v", prompt="a red circle moves left", seed=s) for s in (1, 2, 1)]
    res = generator.generate(reqs, SamplingOptions(temperature=1.0, top_k=8))
    assert [r.frames.shape for r in res] == [(17, 32, 32, 3)] * 3
    np.testing.assert_array_equal(res[0].tokens, res[2].tokens)  # same seed, same tokens
    assert not np.array_equal(res[0].tokens, res[1].tokens)
    fp = generator.generate([generation.Request("fp", video=vid, given=2)])[0]
    given = generator.video_tok.encode(vid[None])[0][:2]
    np.testing.assert_array_equal(fp.video_codes[:2], given)  # the given frames are kept
    av = generator.generate([generation.Request("avcont", video=vid, audio=aud)])[0]
    assert av.frames.shape == (17, 32, 32, 3) and av.audio.shape == (sp.audio_samples,)
    with pytest.raises(generation.GenerationError, match="needs a video"):
        generator.generate([generation.Request("v2a")])
    with pytest.raises(generation.GenerationError, match="not a outpaint mask"):
        generator.generate([generation.Request("outpaint", video=vid, mask="inpaint_center")])
    with pytest.raises(generation.GenerationError, match="one task per batch"):
        generator.generate([generation.Request("uncond"), generation.Request("t2v", prompt="x")])


@pytest.mark.slow
def test_long_video(generator):
    frames = generator.long_video("a blue square moves up", seconds=4.0, seed=3)
    assert frames.shape == (32, 32, 32, 3)


# ----------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from videopoet.schemas import store
    from videopoet.trainer import synthetic, train

    root = str(tmp_path_factory.mktemp("root"))
    out = str(tmp_path_factory.mktemp("run") / "run")
    cfg = load_train_config(
        "tiny",
        ["steps=2", "log_every=1", "checkpoint_every=2", "mesh.data=1", "batch_size=2", "data.mixture={t2v: 1.0}"],
    )
    store.write_dataset(root, "syn", "1", {"a.tar": synthetic.make_records(4, cfg.model.vocab)})
    train.train(cfg, "syn@1", out, root=root)
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    import soundfile as sf

    from videopoet.media.encode import encode_jpeg, encode_mp4
    from videopoet.pipelines.synth import load_synth_config, render_sample, sample_attrs

    d = tmp_path_factory.mktemp("inputs")
    scfg = load_synth_config("tiny", ["sizes=[[64,48]]", "portrait_fraction=0.0", "frames=24"])
    s = render_sample(sample_attrs(scfg, 0, "train", "video", 0, "k"))
    (d / "v.mp4").write_bytes(encode_mp4(s.frames, s.audio, 8))
    (d / "silent.mp4").write_bytes(encode_mp4(s.frames, None, 8))
    (d / "short.mp4").write_bytes(encode_mp4(s.frames[:6], None, 8))
    (d / "i.jpg").write_bytes(encode_jpeg(s.frames[0]))
    (d / "bad.mp4").write_bytes(b"not a video at all")
    sf.write(str(d / "a.wav"), s.audio, 16000)
    return d


TOK = ["--video-tokenizer", "tiny", "--audio-tokenizer", "tiny"]


@pytest.mark.slow
def test_every_task_writes_its_file(run_dir, inputs, tmp_path, capsys):
    import av
    from PIL import Image

    from videopoet import media

    jobs = {
        "t2v": ["--prompt", "a red circle moves left"],
        "t2i": ["--prompt", "a red circle"],
        "uncond": [],
        "i2v": ["--input", "i.jpg"],
        "fp": ["--input", "v.mp4"],
        "inpaint": ["--input", "v.mp4"],
        "outpaint": ["--input", "v.mp4", "--mask", "outpaint_top"],
        "v2a": ["--input", "v.mp4"],
        "a2v": ["--input", "a.wav"],
        "avcont": ["--input", "v.mp4"],
    }
    for task, extra in jobs.items():
        extra = [str(inputs / a) if a.endswith((".jpg", ".mp4", ".wav")) else a for a in extra]
        out = tmp_path / (f"{task}.png" if task == "t2i" else f"{task}.wav" if task == "v2a" else f"{task}.mp4")
        rc = main(["generate", "--run", run_dir, "--task", task, *extra, "--out", str(out), "--json", *TOK])
        res = json.loads(capsys.readouterr().out)
        assert rc == 0 and res["out"] == str(out) and out.exists(), task
        if task == "t2i":
            assert Image.open(out).size == (32, 32)
        elif task == "v2a":
            import soundfile as sf

            assert sf.info(str(out)).frames == 34000
        else:
            blob = out.read_bytes()
            assert media.decode_frames(blob, fps=8).frames.shape[1:] == (32, 32, 3)
            with av.open(str(out)) as c:
                assert bool(c.streams.audio) == (task in ("avcont", "a2v")), task
    # long video, v2a muxed into the input video
    rc = main(
        [
            "generate",
            "--run",
            run_dir,
            "--task",
            "t2v",
            "--prompt",
            "a cat",
            "--seconds",
            "4",
            "--out",
            str(tmp_path / "long.mp4"),
            "--json",
            *TOK,
        ]
    )
    assert rc == 0 and json.loads(capsys.readouterr().out)["frames"] == 32
    rc = main(
        [
            "generate",
            "--run",
            run_dir,
            "--task",
            "v2a",
            "--input",
            str(inputs / "v.mp4"),
            "--out",
            str(tmp_path / "v2a.mp4"),
            *TOK,
        ]
    )
    with av.open(str(tmp_path / "v2a.mp4")) as c:
        assert rc == 0 and c.streams.audio and c.streams.video
    capsys.readouterr()
    # bad media: one line each, exit 2
    for task, name, msg in (
        ("fp", "bad.mp4", "cannot open video"),
        ("avcont", "silent.mp4", "no audio track"),
        ("fp", "short.mp4", "frames at 8 fps"),
    ):
        rc = main(
            [
                "generate",
                "--run",
                run_dir,
                "--task",
                task,
                "--input",
                str(inputs / name),
                "--out",
                str(tmp_path / "x.mp4"),
                *TOK,
            ]
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and msg in err[0], (task, err)


@pytest.mark.slow
def test_eval_command(run_dir, tmp_path, capsys):
    out = tmp_path / "ev"
    rc = main(["eval", "--run", run_dir, "--scenes", "2", "--out", str(out), "--json", *TOK])
    rep = json.loads(capsys.readouterr().out)
    assert rc == 0
    for task in ("t2v", "i2v", "fp", "v2a"):
        assert rep[task]["seen"]["n"] == 2 and rep[task]["heldout"]["n"] == 2
    assert set(rep["t2v"]["seen"]) == {"colour", "shape", "motion", "all", "n", "ci95"}
    for k in ("colour", "shape", "motion", "all"):  # each figure inside its 95% interval
        lo, hi = rep["t2v"]["seen"]["ci95"][k]
        assert 0.0 <= lo <= rep["t2v"]["seen"][k] <= hi <= 1.0
    assert rep["reference"]["ground_truth"]["seen"]["all"] == 1.0  # the scorer on ground truth
    assert rep["settings"] == {
        "scenes": 2,
        "samples": 1,
        "seed": 1234,
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
        "guidance": 1.0,
    }
    assert [t["target"].split(" >=")[0] for t in rep["targets"]] == [
        "t2v seen colour",
        "t2v seen motion",
        "t2v seen shape",
        "t2v heldout colour",
        "t2v heldout motion",
        "i2v seen kept",
        "v2a seen audio_colour",
    ]
    html = (out / "gallery.html").read_text()
    assert html.count("<figure>") == 16 and "heldout" in html
    for s in rep["samples"]["t2v"]:
        assert (out / f"t2v_{s['key']}_{s['sample']}.gif").exists()
        # how many objects the scorer found: a right colour needs one
        assert isinstance(s["objects_found"], int) and (s["objects_found"] > 0 or not s["colour"])
    assert all("objects_found" not in s for s in rep["samples"]["v2a"])
    rc = main(["eval", "--run", run_dir, "--scenes", "1", "--tasks", "t2v", "--out", str(out), *TOK])
    text = capsys.readouterr().out
    assert rc == 0 and "seen" in text and "heldout" in text and "gallery" in text
    assert "t2v        colour" in text and "[" in text  # figures printed with their intervals
    assert "target     t2v seen colour >= 0.80" in text and "i2v" not in text.split("target", 1)[1]


@pytest.mark.slow
def test_eval_long_video_row(run_dir, tmp_path, capsys):
    """The long-video row: each scene's clip continued past several rounds, its end graded against its start."""
    out = tmp_path / "ev"
    argv = ["eval", "--run", run_dir, "--scenes", "1", "--tasks", "long", "--long-seconds", "5"]
    rc = main([*argv, "--out", str(out), "--json", *TOK])
    rep = json.loads(capsys.readouterr().out)
    assert rc == 0 and set(rep) >= {"long", "reference", "samples"} and "t2v" not in rep
    assert set(rep["long"]["seen"]) == {"colour", "shape", "kept", "n", "ci95"} and rep["long"]["heldout"]["n"] == 1
    for s in rep["samples"]["long"]:
        assert s["frames"] == 40  # 5 s at 8 fps: more than two rounds past the 17-frame clip
        assert s["kept"] == (s["colour"] and s["shape"])
        assert (out / f"long_{s['key']}_{s['sample']}.gif").exists()
        assert (out / f"long_{s['key']}_{s['sample']}_input.gif").exists()
    assert "<h2>long</h2>" in (out / "gallery.html").read_text()
    assert main([*argv[:-1], "0", *TOK]) == 2  # --long-seconds 0
    assert "--long-seconds must lie in (0, 600]" in capsys.readouterr().err


def test_targets_are_graded_against_the_goal_and_its_interval():
    from videopoet.trainer.evaluate import Target, check_targets

    def agg(value, lo, hi, n=32):
        return {"colour": value, "shape": value, "n": n, "ci95": {"colour": [lo, hi], "shape": [lo, hi]}}

    report = {
        "t2v": {"seen": agg(0.9, 0.84, 0.97), "heldout": agg(0.45, 0.3, 0.6)},
        "reference": {"tokenizer": {"seen": agg(0.5, 0.3, 0.7), "heldout": agg(0.5, 0.3, 0.7)}},
    }
    targets = (
        Target("t2v", "seen", "colour", 0.8),
        Target("t2v", "heldout", "colour", 0.5),
        Target("t2v", "heldout", "shape", 0.8, reference="tokenizer"),  # 0.45 >= 0.8 x 0.5
        Target("i2v", "seen", "kept", 0.8),  # no i2v row: not graded
    )
    rows = check_targets(report, targets)
    assert [(r["goal"], r["met"], r["clears"], r["short_by"]) for r in rows] == [
        (0.8, True, True, 0.0),
        (0.5, False, False, 0.05),
        (0.4, True, False, 0.0),
    ]
    assert rows[2]["target"] == "t2v heldout shape >= 0.40"


def test_wilson_interval():
    from videopoet.trainer.evaluate import wilson_interval

    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(32, 32)[1] == 1.0 and wilson_interval(32, 32)[0] == pytest.approx(0.8928, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_an_eval_scene_keeps_its_seed_whatever_the_number_of_scenes():
    """The first scenes of a larger evaluation are those of a smaller one, sampled with the same seeds
    (held-out scenes included), so figures at different ``--scenes`` can be compared scene by scene."""
    from videopoet.trainer import evaluate

    spec = generation.MediaSpec(frames=5, height=32, width=32)
    small, large = evaluate.eval_scenes(spec, per_split=2), evaluate.eval_scenes(spec, per_split=5)
    by_key = {s["key"]: (s["seed_index"], s["caption"], s["split"]) for s in large}
    assert len(by_key) == 10 and len({v[0] for v in by_key.values()}) == 10  # distinct seeds
    assert [s["split"] for s in small] == ["seen"] * 2 + ["heldout"] * 2
    for s in small:
        assert by_key[s["key"]] == (s["seed_index"], s["caption"], s["split"])


@pytest.mark.slow
def test_trained_model_generates_what_it_learned(tmp_path):
    """A tiny model trained on learnable synthetic records (t2v + fp) continues their pattern when
    sampled: the generation prompts are the training layouts, and the cached decode path agrees."""
    from videopoet.tokenizers import text
    from videopoet.trainer import checkpoint, data, sampling, synthetic, train

    cfg = load_train_config(
        "tiny",
        [
            "steps=150",
            "log_every=50",
            "checkpoint_every=150",
            "learning_rate=0.01",
            "warmup_steps=10",
            "batch_size=8",
            "mesh.data=1",
            "data.mixture={t2v: 1.0, fp: 1.0}",
            "data.cfg_dropout_text=0.0",
            "model.d_model=64",
            "model.mlp_dim=128",
            "data.fp_given_frames=[1]",
        ],
    )
    recs = synthetic.make_records(32, cfg.model.vocab)
    train.train(cfg, None, str(tmp_path / "run"), mixture=data.Mixture(recs, cfg))
    run = checkpoint.load_run(str(tmp_path / "run"))
    opts = tasks.TaskOptions(vocab=run.cfg.model.vocab, text_len=run.cfg.data.text_len, fp_given_frames=(1,))
    te = text.load(run.cfg.text_encoder)
    vocab = run.cfg.model.vocab
    test = synthetic.make_records(8, vocab, seed=99)  # new clips of the same world
    for task in ("t2v", "fp"):
        exs = [tasks.build(task, r, opts, 1 if task == "fp" else None) for r in test]
        prompt = sampling.Prompt.stack(exs)
        plan = generation.plan_from_example(exs[0], vocab)
        emb = te.embed(np.stack([e.text_ids for e in exs]), np.stack([e.text_mask for e in exs]))
        greedy = sampling.SamplingOptions(temperature=0)
        out = sampling.sample(run.model, run.params, prompt, plan, greedy, text_emb=emb if task == "t2v" else None)
        ref = sampling.sample(
            run.model,
            run.params,
            prompt,
            plan,
            sampling.SamplingOptions(temperature=0, use_cache=False),
            text_emb=emb if task == "t2v" else None,
        )
        np.testing.assert_array_equal(out, ref)
        want = np.stack([e.tokens[e.prefix_len :] for e in exs])
        acc = float((out == want)[:, plan.forced < 0].mean())
        assert acc > 0.6, (task, acc)  # chance: 1/64 per visual token


# ----------------------------------------------------------------------------------- model directories
def test_model_directory_round_trip_and_generation(run_dir, tmp_path, capsys, monkeypatch):
    """A run exported as a model directory (trainer.export): float32 parameters come back exactly and
    generate the same tokens as the run; float16 ones within half precision; it serves --run."""
    import jax

    from videopoet.trainer import checkpoint, export

    ref = checkpoint.load_run(run_dir)
    exact, half = str(tmp_path / "m32"), str(tmp_path / "m16")
    export.export_run(run_dir, exact, dtype="float32")
    rec = export.export_run(run_dir, half)
    assert rec["dtype"] == "float16" and rec["source"]["step"] == ref.step == 2
    m32, m16 = export.load_model_dir(exact), export.load_model_dir(half)
    ref_leaves, m32_leaves = jax.tree_util.tree_leaves(ref.params), jax.tree_util.tree_leaves(m32.params)
    assert all(np.array_equal(a, b) for a, b in zip(ref_leaves, m32_leaves, strict=True))
    for a, b in zip(ref_leaves, jax.tree_util.tree_leaves(m16.params), strict=True):
        assert b.dtype == np.float32 and np.allclose(a, b, rtol=1e-3, atol=1e-4)
    assert m16.cfg == ref.cfg and m16.step == 2
    # the same tokens from the run and from its exact export
    toks = []
    for run in (run_dir, exact):
        gen = generation.load_generator(run, video_tokenizer="tiny", audio_tokenizer="tiny")
        toks.append(gen.generate([generation.Request("t2v", prompt="a red circle", seed=3)])[0].tokens)
    assert np.array_equal(toks[0], toks[1])
    out = tmp_path / "m16.mp4"
    assert main(["generate", "--run", half, "--task", "t2v", "--prompt", "a red circle", "--out", str(out), *TOK]) == 0
    assert out.stat().st_size > 0
    # eval of a model directory writes beside the caller, not into the model directory
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--run", half, "--scenes", "1", "--tasks", "t2v", "--json", *TOK]) == 0
    capsys.readouterr()
    assert (tmp_path / "eval-m16" / "gallery.html").exists() and not os.path.exists(f"{half}/eval")
    # a damaged parameter file is refused in one line
    with open(f"{half}/{export.MODEL_FILE}", "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\x00\x01\x02\x03")
    assert main(["generate", "--run", half, "--task", "t2v", "--prompt", "x", "--out", "y.mp4", *TOK]) != 0
    assert "differs from the digest its run.json records" in capsys.readouterr().err


def test_the_shipped_model_loads_and_says_where_it_came_from():
    from videopoet.trainer import checkpoint, export

    run = checkpoint.load_run("default")
    assert run.run_dir == export.DEFAULT and run.info["dtype"] == "float16"
    assert run.info["dataset"]["fingerprint"] and run.info["dataset_manifest"]["lineage"]["tokenizers"]["video"]
    assert os.path.isfile(os.path.join(export.DEFAULT, "README.md"))


def test_a_model_directory_s_sampling_json_sets_the_flags_not_given(run_dir, tmp_path, capsys):
    """``sampling.json`` beside a model's parameters: ``eval`` (and ``generate``, through the same
    ``cli.common.sampling_options``) samples with it for every flag not given; a given flag wins;
    a file with an unknown key or a wrong type is refused in one line; an export keeps the file."""
    import json as json_module

    from videopoet.trainer import export

    model_dir = str(tmp_path / "m")
    export.export_run(run_dir, model_dir)
    with open(os.path.join(model_dir, export.SAMPLING_FILE), "w") as f:
        json_module.dump({"temperature": 0.5, "top_k": 7, "guidance": 2.0, "_why": "measured"}, f)

    def settings(*flags):
        argv = ["eval", "--run", model_dir, "--scenes", "1", "--tasks", "t2v", "--json", *TOK, *flags]
        assert main([*argv, "--out", str(tmp_path / "ev")]) == 0
        return json_module.loads(capsys.readouterr().out)["settings"]

    got = settings()
    assert (got["temperature"], got["top_k"], got["top_p"], got["guidance"]) == (0.5, 7, 1.0, 2.0)
    got = settings("--temperature", "0", "--guidance", "1")
    assert (got["temperature"], got["top_k"], got["guidance"]) == (0.0, 7, 1.0)
    # a run directory has no such file: the library defaults
    assert export.sampling_defaults(run_dir) == {}
    export.export_run(run_dir, model_dir)  # a new export keeps it
    assert export.sampling_defaults(model_dir) == {"temperature": 0.5, "top_k": 7, "guidance": 2.0}
    for bad, why in [
        ({"temprature": 0.5}, "unknown setting 'temprature'"),
        ({"top_k": 2.5}, "top_k must be an integer"),
    ]:
        with open(os.path.join(model_dir, export.SAMPLING_FILE), "w") as f:
            json_module.dump(bad, f)
        argv = ["generate", "--run", model_dir, "--task", "t2v", "--prompt", "x", "--out", str(tmp_path / "y.mp4")]
        assert main([*argv, *TOK]) != 0
        err = capsys.readouterr().err
        assert why in err and len(err.strip().splitlines()) == 1, err
