"""`videopoet generate`: generate with a trained model, for every VideoPoet task.

    videopoet generate --run RUN_DIR --task t2v|t2i|i2v|fp|inpaint|outpaint|stylize|v2a|a2v|avcont|uncond
                       [--prompt TEXT] [--input FILE] [--mask KIND] [--seconds S] [--first-frame] --out FILE
                       [--seed N] [--temperature T] [--top-k K] [--top-p P] [--guidance G] [--json]

Inputs by task: t2v / t2i need --prompt; i2v an image (--input x.png|jpg, optional --prompt); fp,
inpaint, outpaint, stylize and v2a a video (--input x.mp4); a2v an audio file (--input x.wav|flac|mp3|mp4);
avcont a video with an audio track; uncond nothing. Inputs are decoded and resized (scale to
cover, centre crop) to the run's clip geometry with the pipelines' media code.

Outputs: .mp4 for video (H.264; with an AAC track when audio is generated (avcont) or given
(a2v: the input audio)), .png for t2i, .wav (or .mp4: the input video with the new track) for v2a.
--seconds S (t2v, i2v, fp) makes a long video by repeated frame prediction on the last second.
Masks: inpaint_center (inpaint); outpaint_left|right|top|bottom|border (outpaint, default border).
stylize: the input's optical flow (and depth, when the run's dataset has depth: its ONNX network, or
--depth-model M.onnx) rendered and tokenized as the pipeline does, plus --prompt for the new look;
--first-frame also gives the input's first frame (the model continues from it).
--guidance S > 1 runs conditional and unconditional rows together; the unconditional rows hide the
text slot (what the trainer's cfg_dropout_text hides), so it acts on the tasks that take --prompt.
The tokenizers are the ones the run's dataset was made with (from its manifest); --video-tokenizer
/ --audio-tokenizer PRESET|DIR override that (runs trained on in-memory data need them).

--sr SR_RUN runs the super-resolution cascade after the LM (video tasks, one clip): the LM's video
tokens -> the SR run's MaskGIT decoding (its sample config; the prompt, if any, as its text) -> the
2x token grid decoded by the same video tokenizer -> an mp4 at twice the height and width. The given
frames of i2v / fp / avcont and the visible region of inpaint / outpaint come out of the SR model too
(there is no 2x input to composite).
"""

from __future__ import annotations

import argparse
import os

from videopoet.cli.common import add_json_flag, add_sampling_flags, emit, sampling_options

TASKS = ("t2v", "t2i", "i2v", "fp", "inpaint", "outpaint", "stylize", "v2a", "a2v", "avcont", "uncond")
OUT_EXT = {"t2i": (".png",), "v2a": (".wav", ".mp4")}
SR_TASKS = ("t2v", "i2v", "fp", "inpaint", "outpaint", "stylize", "a2v", "avcont", "uncond")  # one video clip out
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def register(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="generate with a trained model (every VideoPoet task)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_generate_args(p)
    p.set_defaults(func=_run)


def add_generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--run", required=True, metavar="RUN_DIR", help="training run directory, model directory, or default (shipped)"
    )
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument(
        "--prompt", default=None, help="text prompt (t2v, t2i; optional for i2v, inpaint, outpaint, stylize)"
    )
    p.add_argument("--input", default=None, metavar="FILE", help="input image / video / audio file")
    p.add_argument("--mask", default=None, metavar="KIND", help="inpaint/outpaint mask kind")
    p.add_argument("--seconds", type=float, default=None, help="long video length in seconds (t2v, i2v, fp)")
    p.add_argument("--given", type=int, default=None, help="fp/avcont: latent frames of the input kept")
    p.add_argument("--first-frame", action="store_true", help="stylize: also give the input's first frame")
    p.add_argument(
        "--depth-model",
        default=None,
        metavar="M.onnx",
        help="stylize: the ONNX depth network of the run's dataset, when it is not at the path the dataset recorded",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="output .mp4 / .png / .wav")
    p.add_argument("--seed", type=int, default=0)
    add_sampling_flags(p)
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
    p.add_argument(
        "--sr",
        default=None,
        metavar="SR_RUN",
        help="super-resolve the generated clip with this `train --model sr` run (2x height and width)",
    )
    p.add_argument("--video-tokenizer", default=None, metavar="PRESET|DIR")
    p.add_argument("--audio-tokenizer", default=None, metavar="PRESET|DIR")
    add_json_flag(p)


def check_args(args) -> None:
    """Cheap checks before any model is loaded: one clear line for each mistake."""
    from videopoet.trainer.generation import INPUT_KIND, TEXT_TASKS, GenerationError

    task = args.task
    ext = os.path.splitext(args.out)[1].lower()
    allowed = OUT_EXT.get(task, (".mp4",))
    if ext not in allowed:
        raise GenerationError(f"--out for {task} must end in {' or '.join(allowed)}, got {args.out!r}")
    need = INPUT_KIND.get(task)
    if need and not args.input:
        raise GenerationError(
            f"{task} needs --input FILE "
            f"({'an image' if need == 'image' else 'a video' if need == 'video' else 'an audio file'})"
        )
    if not need and args.input:
        raise GenerationError(f"{task} takes no --input")
    if task in TEXT_TASKS and not args.prompt:
        raise GenerationError(f"{task} needs --prompt TEXT")
    if args.prompt is not None and task in ("uncond", "fp", "v2a", "a2v", "avcont"):
        raise GenerationError(f"{task} takes no --prompt")
    if args.mask and task not in ("inpaint", "outpaint"):
        raise GenerationError(f"--mask applies to inpaint and outpaint, not {task}")
    if getattr(args, "first_frame", False) and task != "stylize":
        raise GenerationError(f"--first-frame applies to stylize, not {task}")
    if getattr(args, "depth_model", None) and task != "stylize":
        raise GenerationError(f"--depth-model applies to stylize, not {task}")
    if getattr(args, "depth_model", None) and not os.path.isfile(args.depth_model):
        raise GenerationError(f"depth model not found: {args.depth_model}")
    if args.seconds is not None:
        if task not in ("t2v", "i2v", "fp"):
            raise GenerationError(f"--seconds (long video) applies to t2v, i2v and fp, not {task}")
        if not 0 < args.seconds <= 600:
            raise GenerationError(f"--seconds must lie in (0, 600], got {args.seconds}")
    if args.input:
        if not os.path.isfile(args.input):
            raise GenerationError(f"input file not found: {args.input}")
        iext = os.path.splitext(args.input)[1].lower()
        if need == "image" and iext not in IMAGE_EXT:
            raise GenerationError(f"{task} needs an image (png/jpg/webp), got {args.input!r}")
        if need == "video" and iext in IMAGE_EXT + (".wav", ".flac", ".mp3", ".ogg"):
            raise GenerationError(f"{task} needs a video file, got {args.input!r}")
    from videopoet.trainer.checkpoint import run_dir_exists

    if not run_dir_exists(args.run):
        raise GenerationError(f"run directory not found: {args.run}")
    if getattr(args, "sr", None):
        if task not in SR_TASKS:
            raise GenerationError(f"--sr super-resolves a generated video clip; {task} makes none")
        if args.seconds is not None:
            raise GenerationError("--sr super-resolves one clip; it does not combine with --seconds")
        if not run_dir_exists(args.sr):
            raise GenerationError(f"super-resolution run directory not found: {args.sr}")
        from videopoet.trainer.superres.train import INFO_FILE, read_info

        if read_info(args.sr) is None:
            raise GenerationError(f"{args.sr} is not a super-resolution run (no {INFO_FILE}; see `train --model sr`)")


def read_input(path: str, kind: str, spec, need_audio: bool = False):
    """Decode + resize an input file to the spec: (video|image|audio array, audio track or None)."""
    from videopoet import media
    from videopoet.trainer.generation import GenerationError

    with open(path, "rb") as f:
        blob = f.read()
    if kind == "image":
        img = media.decode_image(blob)
        return media.resize_center_crop(img[None], spec.height, spec.width)[0], None
    if kind == "audio":
        return media.decode_audio(blob, spec.sample_rate), None
    media.probe_video(blob)  # a clean MediaError for undecodable files, before the frame decoder
    frames = media.decode_frames(blob, fps=spec.fps).frames
    if frames.shape[0] < spec.frames:
        raise GenerationError(
            f"{path}: {frames.shape[0]} frames at {spec.fps:g} fps; the task needs {spec.frames} ({spec.seconds:g} s)"
        )
    video = media.resize_center_crop(frames[: spec.frames], spec.height, spec.width)
    audio = None
    if need_audio:
        audio = media.extract_audio_track(blob, spec.sample_rate)
        if audio is None:
            raise GenerationError(f"{path} has no audio track (avcont continues audio and video)")
    return video, audio


def write_output(path: str, frames=None, audio=None, fps: float = 8.0, rate: int = 16000) -> str:
    """A generated clip to ``.png`` (the first frame), ``.wav`` (the audio) or mp4 (anything else)."""
    import numpy as np

    from videopoet.media import encode

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".png":
        blob = encode.encode_png(np.asarray(frames[0], np.uint8))
    elif ext == ".wav":
        blob = encode.encode_wav(audio, rate)
    else:
        a = None if audio is None else np.clip(np.asarray(audio, np.float32), -1, 1)
        blob = encode.encode_mp4(np.asarray(frames, np.uint8), a, int(round(fps)), int(rate))
    with open(path, "wb") as f:
        f.write(blob)
    return path


def _run(args) -> int:
    import time

    import numpy as np

    from videopoet.trainer import generation

    check_args(args)
    options = sampling_options(args)
    t0 = time.perf_counter()
    gen = generation.load_generator(
        args.run,
        step=args.step,
        video_tokenizer=args.video_tokenizer,
        audio_tokenizer=args.audio_tokenizer,
        options=options,
        depth_model=getattr(args, "depth_model", None),
    )
    sp = gen.spec
    upsampler = None
    if args.sr:
        from videopoet.trainer.superres.cascade import Upsampler

        upsampler = Upsampler.from_run(args.sr, gen.video_tok)
        upsampler.check_codes(np.zeros(sp.latent, np.int32))  # before the LM samples: the grids must fit
    t_load = time.perf_counter() - t0
    kind = generation.INPUT_KIND.get(args.task)
    req = generation.Request(
        args.task,
        prompt=args.prompt,
        mask=args.mask,
        given=args.given,
        first_frame=getattr(args, "first_frame", False),
        seed=args.seed,
    )
    input_audio = None
    if kind:
        data, track = read_input(args.input, kind, sp, need_audio=args.task == "avcont")
        if kind == "image":
            req.image = data
        elif kind == "audio":
            req.audio = input_audio = data
        else:
            req.video, req.audio = data, track
    t1 = time.perf_counter()
    res = gen.generate([req])[0]
    frames, audio = res.frames, res.audio
    if args.seconds is not None:
        frames = gen.long_video(args.prompt, args.seconds, seed=args.seed, first=frames)
    if args.task == "a2v":
        audio = input_audio[: sp.audio_samples]
    if args.task == "v2a" and args.out.lower().endswith(".mp4"):
        frames = req.video
    t_gen = time.perf_counter() - t1
    sr = None
    if upsampler is not None:
        t2 = time.perf_counter()
        _, frames = upsampler.upsample(res.video_codes, args.prompt, seed=args.seed)
        sr = {"run": args.sr, "step": upsampler.info["step"], "seconds": round(time.perf_counter() - t2, 2)}
    write_output(args.out, frames, audio, sp.fps, sp.sample_rate)
    out = {
        "task": args.task,
        "out": args.out,
        "run": args.run,
        "step": gen.info.get("step"),
        "seed": args.seed,
        "frames": None if frames is None else int(frames.shape[0]),
        "seconds": None if frames is None else round(frames.shape[0] / sp.fps, 3),
        "audio_samples": None if audio is None else int(len(audio)),
        "tokens": int(res.tokens.shape[0]),
        "size": None if frames is None else [int(frames.shape[1]), int(frames.shape[2])],  # height, width
        "sr": sr,
        "load_s": round(t_load, 2),
        "generate_s": round(t_gen, 2),
    }
    what = f"{out['frames']} frames" if frames is not None else f"{out['audio_samples']} audio samples"
    if sr is not None:
        what += f" at {frames.shape[2]}x{frames.shape[1]} after super-resolution in {sr['seconds']:.1f} s"
    emit(args, out, f"{args.task}: wrote {args.out} ({what}; {out['tokens']} tokens in {t_gen:.1f} s)")
    return 0
