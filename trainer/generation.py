"""Generation for every VideoPoet task: inputs -> task prompt -> sampler -> tokens -> pixels / audio.

The prompt of a task is built by the trainer's own layout code (:func:`videopoet.trainer.tasks.build`)
from a :class:`TokenRecord` whose *output* part is a placeholder: the prefix is what the model was
trained on, byte for byte, and the placeholder's tokens tell the sampler what each output position
must be (:func:`plan_from_example`): a special token is forced, a visual position may take any
visual code, an audio position of level ``l`` any code of level ``l`` (so audio comes out level by
level, as trained). Sampled tokens go back into the layout and are read out as video codes
``[T', H', W']`` (given frames first, for i2v / frame prediction / continuation) and audio codes
``[levels, frames]``, which the tokenizers decode.

Tasks (``TASKS``) and their inputs:

    t2v, t2i        --prompt text
    uncond          nothing
    i2v             an image (+ optional text)
    fp              a video: its first ``given`` latent frames are kept, the rest generated
    inpaint         a video + a mask kind (inpaint_center); outpaint: outpaint_left/right/top/bottom/border
    stylize         a video (+ text, + ``first_frame``): its optical flow (and depth, when the run's dataset
                    has depth) rendered and tokenized as the pipeline does (:mod:`videopoet.media.style`)
    v2a             a video -> its audio
    a2v             an audio clip -> a video for it
    avcont          a video with its audio track: the second half of both generated
    long video      :meth:`Generator.long_video`: t2v, then frame prediction on the last second, repeated

:class:`Generator` holds the model, the tokenizers and the clip geometry (:class:`MediaSpec`);
:func:`Generator.from_run` finds the tokenizers and geometry of a run's dataset in its manifest.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, NamedTuple

import numpy as np

from videopoet.schemas.errors import VideoPoetError
from videopoet.schemas.manifest import tokenizer_refs
from videopoet.schemas.record import Lineage, TokenRecord
from videopoet.schemas.tokenizer_ref import MODALITY_KINDS, TokenizerRef
from videopoet.schemas.vocab import NUM_SPECIAL
from videopoet.trainer import sampling, tasks

TASKS = ("t2v", "t2i", "i2v", "fp", "inpaint", "outpaint", "stylize", "v2a", "a2v", "avcont", "uncond")
INPUT_KIND = {
    "stylize": "video",
    "i2v": "image",
    "fp": "video",
    "inpaint": "video",
    "outpaint": "video",
    "v2a": "video",
    "a2v": "audio",
    "avcont": "video",
}
TEXT_TASKS = frozenset({"t2v", "t2i"})
MASK_DEFAULT = {"inpaint": "inpaint_center", "outpaint": "outpaint_border"}


class GenerationError(VideoPoetError, ValueError):
    """A generation request that cannot be served (wrong inputs for the task, bad run, ...)."""


@dataclasses.dataclass(frozen=True)
class MediaSpec:
    """Clip geometry of the run's dataset (the pipeline config) and the tokens it makes."""

    frames: int = 17
    height: int = 64
    width: int = 64
    fps: float = 8.0
    sample_rate: int = 16000
    latent: tuple[int, int, int] = (5, 8, 8)  # (T', H', W')
    audio_frames: int = 106

    @property
    def seconds(self) -> float:
        return self.frames / self.fps

    @property
    def audio_samples(self) -> int:
        return int(round(self.frames / self.fps * self.sample_rate))

    @classmethod
    def of(
        cls,
        video_tok,
        audio_tok=None,
        frames: int = 17,
        height: int = 64,
        width: int = 64,
        fps: float = 8.0,
        sample_rate: int = 16000,
    ) -> MediaSpec:
        latent = tuple(int(x) for x in video_tok.latent_shape(frames, height, width))
        n = int(round(frames / fps * sample_rate))
        af = audio_tok.config.frames_for(n) if audio_tok is not None else 0
        return cls(frames, height, width, fps, sample_rate, latent, int(af))


@dataclasses.dataclass
class Request:
    """One generation: the task's inputs (already decoded, at the spec's size) and a seed."""

    task: str
    prompt: str | None = None
    video: np.ndarray | None = None  # uint8 [T, H, W, 3]
    image: np.ndarray | None = None  # uint8 [H, W, 3]
    audio: np.ndarray | None = None  # float32 [N]
    mask: str | None = None
    given: int | None = None  # fp / avcont: latent frames given
    first_frame: bool = False  # stylize: the input's first frame is given too
    seed: int = 0


class RequestRecord(NamedTuple):
    """The TokenRecord a request becomes (what the task layout builds its prompt from), and what it gives."""

    record: TokenRecord
    variant: int  # the task's layout variant (the mask kind, the given latent frames, first frame)
    given_video: np.ndarray | None  # the input's video codes placed in the output (i2v, fp, avcont, stylize)
    given_audio: np.ndarray | None  # the input's audio codes placed in the output (avcont)
    given_pixels: int  # pixel frames of the output that come from the input


@dataclasses.dataclass
class Result:
    task: str
    frames: np.ndarray | None  # uint8 [T, H, W, 3] (T = 1 for t2i)
    audio: np.ndarray | None  # float32 [N]
    video_codes: np.ndarray | None
    audio_codes: np.ndarray | None
    tokens: np.ndarray  # the sampled output segment (global ids)
    given_frames: int = 0  # pixel frames that come from the input (i2v / fp / avcont)


# ------------------------------------------------------------------------------------- plans
def plan_from_example(ex: tasks.Example, vocab) -> sampling.OutputPlan:
    """The output plan of a placeholder example: its output tokens are specials (forced) or code 0 of
    their modality / audio level (their range)."""
    out = ex.tokens[ex.prefix_len :]
    lo, hi, forced = [], [], []
    for t in out.tolist():
        if t < NUM_SPECIAL:
            lo.append(0), hi.append(0), forced.append(t)
        elif t < vocab.audio_offset:
            lo.append(vocab.visual_offset), hi.append(vocab.audio_offset), forced.append(-1)
        else:
            level = (t - vocab.audio_offset) // vocab.audio_codebook
            a = vocab.audio_level_offset(level)
            lo.append(a), hi.append(a + vocab.audio_codebook), forced.append(-1)

    def as32(x):
        return np.asarray(x, np.int32)

    return sampling.OutputPlan(as32(lo), as32(hi), as32(forced))


def read_output(
    ex: tasks.Example,
    out: np.ndarray,
    vocab,
    latent: tuple[int, int, int],
    given_video: np.ndarray | None,
    given_audio: np.ndarray | None,
    audio_frames: int,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(video codes [T', H', W'] incl. given frames, audio codes [levels, F] incl. given frames)."""
    _, h, w = latent
    vis = out[(out >= vocab.visual_offset) & (out < vocab.audio_offset)]
    aud = out[out >= vocab.audio_offset]
    video = None
    if vis.size:
        gen = vocab.visual_from_global(vis).reshape(-1, h, w)
        video = gen if given_video is None else np.concatenate([given_video, gen])
    audio = None
    if aud.size:
        levels = vocab.audio_levels
        gen = vocab.audio_from_global(aud.reshape(levels, -1))
        audio = gen if given_audio is None else np.concatenate([given_audio, gen], axis=1)
    return video, audio


# ------------------------------------------------------------------------------------- generator
class Generator:
    def __init__(
        self,
        model,
        params,
        train_cfg,
        video_tok,
        audio_tok,
        text_enc,
        spec: MediaSpec,
        options: sampling.SamplingOptions | None = None,
        info: dict | None = None,
        style_kinds: tuple[str, ...] = ("flow",),
        depth_model: str = "",
    ):
        self.model, self.params, self.cfg = model, params, train_cfg
        # stylize: the conditions of the run's dataset (its pipeline's style_conditions) and their depth network
        self.style_kinds, self.depth_model = tuple(style_kinds), depth_model
        self.video_tok, self.audio_tok, self.text_enc = video_tok, audio_tok, text_enc
        self.spec = spec
        self.options = options or sampling.SamplingOptions()
        self.info = info or {}
        self.vocab = train_cfg.model.vocab
        self.opts = tasks.TaskOptions(
            vocab=self.vocab,
            text_len=train_cfg.data.text_len,
            fp_given_frames=tuple(train_cfg.data.fp_given_frames),
            avcont_given_frames=train_cfg.data.avcont_given_frames,
        )
        if video_tok.codebook_size != self.vocab.visual_size:
            raise GenerationError(
                f"the video tokenizer has {video_tok.codebook_size} codes, the model {self.vocab.visual_size}"
            )
        if (
            audio_tok is not None
            and self.vocab.audio_levels
            and (
                audio_tok.config.codebook_size != self.vocab.audio_codebook
                or audio_tok.config.levels_used != self.vocab.audio_levels
            )
        ):
            raise GenerationError("the audio tokenizer's codebook/levels differ from the model's vocabulary")
        if text_enc is not None and text_enc.dim != train_cfg.model.text_dim:
            raise GenerationError(
                f"the text encoder has width {text_enc.dim}, the model expects {train_cfg.model.text_dim}"
            )

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_run(
        cls,
        run_dir: str,
        step: int | None = None,
        video_tokenizer: str | None = None,
        audio_tokenizer: str | None = None,
        options: sampling.SamplingOptions | None = None,
        depth_model: str | None = None,
    ) -> Generator:
        from videopoet.trainer.checkpoint import load_run

        run = load_run(run_dir, step)
        return cls.from_parts(
            run.model,
            run.params,
            run.cfg,
            _dataset_manifest(run.info),
            video_tokenizer,
            audio_tokenizer,
            options,
            {"run": run_dir, "step": run.step},
            depth_model,
        )

    @classmethod
    def from_parts(
        cls,
        model,
        params,
        train_cfg,
        manifest: dict,
        video_tokenizer: str | None = None,
        audio_tokenizer: str | None = None,
        options: sampling.SamplingOptions | None = None,
        info: dict | None = None,
        depth_model: str | None = None,
    ) -> Generator:
        """A generator for ``params`` of a model trained on the dataset of ``manifest``: its tokenizers
        (unless overridden) and clip geometry (evaluation during training uses the live weights)."""
        pcfg = (manifest.get("lineage") or {}).get("pipeline_config", {})
        refs = tokenizer_refs(manifest) if manifest else {}
        vt = _load_tokenizer("video", video_tokenizer, refs)
        at = _load_tokenizer("audio", audio_tokenizer, refs) if train_cfg.model.audio_levels else None
        res = int(pcfg.get("resolution", vt.config.height))
        spec = MediaSpec.of(
            vt,
            at,
            frames=int(pcfg.get("clip_frames", 17)),
            height=res,
            width=res,
            fps=float(pcfg.get("fps", 8.0)),
            sample_rate=int(pcfg.get("sample_rate", 16000)),
        )
        text_enc = _load_text(train_cfg.text_encoder)
        info = {**(info or {}), "tokenizers": {"video": repr(vt), "audio": repr(at)}}
        kinds, depth = _style_of(manifest, depth_model)
        return cls(model, params, train_cfg, vt, at, text_enc, spec, options, info, kinds, depth)

    # ---------------------------------------------------------------- records
    def _text(self, prompt: str | None) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        if not prompt or self.text_enc is None:
            return None, np.zeros(self.opts.text_len, np.int32), np.zeros(self.opts.text_len, np.int32)
        ids = np.asarray(self.text_enc.token_ids(prompt), np.int32)
        slot_ids, slot_mask = tasks.text_slot(ids, self.opts.text_len)
        return ids, slot_ids, slot_mask

    def encode_video(self, video: np.ndarray) -> np.ndarray:
        """The video tokenizer's codes int32 [T', H', W'] of uint8 frames [T, H, W, 3]."""
        return self.video_tok.encode(np.asarray(video, np.uint8)[None])[0]

    def request_record(self, r: Request) -> RequestRecord:
        """The record of a request, as generation builds its prompt (the output positions hold zeros)."""
        sp, (tl, h, w) = self.spec, self.spec.latent
        levels = self.vocab.audio_levels
        zeros_v = np.zeros((tl, h, w), np.int32)
        zeros_a = np.zeros((levels, sp.audio_frames), np.int32) if levels else None
        text_ids, _, _ = self._text(r.prompt)
        video, audio, conds, variant = zeros_v, None, {}, 0
        given_v = given_a = None
        given_px = 0
        if r.task == "t2i":
            video = zeros_v[:1]
        elif r.task == "i2v":
            img = self.encode_video(r.image[None])  # [1, H', W']
            video = np.concatenate([img, zeros_v[1:]])
            given_v, given_px = img, 1
        elif r.task == "fp":
            codes = self.encode_video(r.video)
            k = self._given(r.given, "fp")
            video = np.concatenate([codes[:k], zeros_v[k:]])
            given_v, given_px = codes[:k], 1 + 4 * (k - 1) if k else 0
        elif r.task in ("inpaint", "outpaint"):
            kinds = tasks.INPAINT_KINDS if r.task == "inpaint" else tasks.OUTPAINT_KINDS
            kind = r.mask or MASK_DEFAULT[r.task]
            if kind not in kinds:
                raise GenerationError(f"--mask {kind!r} is not a {r.task} mask (one of {', '.join(kinds)})")
            conds = {kind: self.video_tok.encode_condition(np.asarray(r.video, np.uint8)[None], kind)[0]}
            variant = kinds.index(kind)
        elif r.task == "stylize":
            conds = self._style_conditions(r.video)
            if r.first_frame:
                first = self.encode_video(r.video)[:1]
                video = np.concatenate([first, zeros_v[1:]])
                given_v, given_px, variant = first, 1, 1
        elif r.task == "v2a":
            video = self.encode_video(r.video)
            audio = zeros_a
        elif r.task == "a2v":
            audio = self._encode_audio(r.audio)
        elif r.task == "avcont":
            codes = self.encode_video(r.video)
            acodes = self._encode_audio(r.audio)
            k = self._given(r.given, "avcont")
            a = tasks.audio_split(acodes.shape[1], tl, k)
            video = np.concatenate([codes[:k], zeros_v[k:]])
            audio = np.concatenate([acodes[:, :a], np.zeros_like(acodes[:, a:])], axis=1)
            given_v, given_a, given_px = codes[:k], acodes[:, :a], 1 + 4 * (k - 1)
            variant = k
        if r.task == "fp":
            variant = self._given(r.given, "fp")
        rec = TokenRecord(
            key="generate",
            lineage=Lineage("generate", "0" * 64, "generate"),
            video=video,
            audio=audio,
            text_ids=text_ids,
            caption=r.prompt,
            conditions=conds,
            meta={"bucket": "square"},
        )
        return RequestRecord(rec, variant, given_v, given_a, given_px)

    def _style_conditions(self, video: np.ndarray) -> dict[str, np.ndarray]:
        """The stylize condition streams of a clip: its flow / depth renders, tokenized (as the pipeline does)."""
        from videopoet.media import style
        from videopoet.schemas.record import STYLE_STREAMS

        if "depth" in self.style_kinds and not self.depth_model:
            raise GenerationError(
                "the run's dataset has depth conditions; give --depth-model PATH.onnx (the network it was made with)"
            )
        try:
            renders = style.style_videos(np.asarray(video, np.uint8), self.style_kinds, self.depth_model)
        except style.StyleError as e:
            raise GenerationError(str(e)) from None
        return {STYLE_STREAMS[k]: self.encode_video(v) for k, v in renders.items()}

    def _given(self, given: int | None, task: str) -> int:
        tl = self.spec.latent[0]
        if task == "avcont":
            k = given or self.opts.avcont_given_frames or tl // 2
        else:
            k = given or (self.opts.fp_given_frames[0] if self.opts.fp_given_frames else max(1, tl // 2))
        if not 1 <= k < tl:
            raise GenerationError(f"{task}: given latent frames must lie in [1, {tl - 1}], got {k}")
        if task == "fp" and self.opts.fp_given_frames and k not in self.opts.fp_given_frames:
            raise GenerationError(f"fp: the run trained with given frames {list(self.opts.fp_given_frames)}, not {k}")
        return int(k)

    def _encode_audio(self, wave: np.ndarray) -> np.ndarray:
        if self.audio_tok is None:
            raise GenerationError("this run has no audio vocabulary")
        n = self.spec.audio_samples
        w = np.zeros(n, np.float32)
        src = np.asarray(wave, np.float32).reshape(-1)[:n]
        w[: src.size] = src
        return self.audio_tok.encode(w[None])[0][: self.vocab.audio_levels, : self.spec.audio_frames]

    def check_request(self, r: Request) -> None:
        if r.task not in TASKS:
            raise GenerationError(f"unknown task {r.task!r} (one of {', '.join(TASKS)})")
        need = INPUT_KIND.get(r.task)
        if r.task in TEXT_TASKS and not r.prompt:
            raise GenerationError(f"{r.task} needs --prompt TEXT")
        if need == "image" and r.image is None:
            raise GenerationError(f"{r.task} needs an image (--input FILE.png|jpg)")
        if need == "video" and r.video is None:
            raise GenerationError(f"{r.task} needs a video (--input FILE.mp4)")
        if need == "audio" and r.audio is None:
            raise GenerationError(f"{r.task} needs audio (--input FILE.wav)")
        if r.task == "avcont" and r.audio is None:
            raise GenerationError("avcont needs a video with an audio track")
        if r.task in ("v2a", "a2v", "avcont") and not self.vocab.audio_levels:
            raise GenerationError(f"{r.task}: this run's vocabulary has no audio")
        if r.mask is not None and r.task not in ("inpaint", "outpaint"):
            raise GenerationError(f"--mask applies to inpaint and outpaint, not {r.task}")
        if r.first_frame and r.task != "stylize":
            raise GenerationError(f"--first-frame applies to stylize, not {r.task}")
        sp = self.spec
        if r.video is not None and tuple(r.video.shape) != (sp.frames, sp.height, sp.width, 3):
            raise GenerationError(
                f"video must be uint8 [{sp.frames},{sp.height},{sp.width},3], got {tuple(r.video.shape)}"
            )
        if r.image is not None and tuple(r.image.shape) != (sp.height, sp.width, 3):
            raise GenerationError(f"image must be uint8 [{sp.height},{sp.width},3], got {tuple(r.image.shape)}")

    # ---------------------------------------------------------------- generate
    def generate(
        self, requests: list[Request], options: sampling.SamplingOptions | None = None, decode: bool = True
    ) -> list[Result]:
        """Generate a batch of requests of one task (one compiled shape)."""
        if not requests:
            return []
        kinds = {r.task for r in requests}
        if len(kinds) != 1:
            raise GenerationError(f"one task per batch, got {sorted(kinds)}")
        task = kinds.pop()
        for r in requests:
            self.check_request(r)
        built, examples = [], []
        for r in requests:
            rec, variant, gv, ga, gpx = self.request_record(r)
            try:
                ex = tasks.build(task, rec, self.opts, variant)
            except tasks.MissingInputsError as e:
                raise GenerationError(f"{task}: the inputs do not make a {task} prompt ({e.reason})") from None
            built.append((gv, ga, gpx))
            examples.append(ex)
        prompt = sampling.Prompt.stack(examples)
        plan = plan_from_example(examples[0], self.vocab)
        text_emb = None
        if (prompt.text_index >= 0).any() and self.text_enc is not None:
            ids = np.stack([e.text_ids for e in examples])
            mask = np.stack([e.text_mask for e in examples])
            text_emb = (
                self.text_enc.embed(ids, mask)
                if mask.any()
                else np.zeros((len(examples), self.opts.text_len, self.text_enc.dim), np.float32)
            )
        out = sampling.sample(
            self.model,
            self.params,
            prompt,
            plan,
            options or self.options,
            text_emb=text_emb,
            seeds=[r.seed for r in requests],
        )
        results = []
        for ex, (gv, ga, gpx), row in zip(examples, built, out, strict=True):
            vc, ac = read_output(ex, row, self.vocab, self.spec.latent, gv, ga, self.spec.audio_frames)
            results.append(Result(task, None, None, vc, ac, row, gpx))
        if decode:
            self.decode(results)
            for r, res in zip(requests, results, strict=True):
                self.keep_given(r, res)
        return results

    def keep_given(self, r: Request, res: Result) -> Result:
        """Put what the user gave back into a decoded result: the input's own frames at the start of a
        continuation (fp, avcont: ``res.given_frames`` frames; i2v: the first frame) and of its audio
        (avcont), and the input's pixels outside the hidden region of an inpainting / outpainting mask.

        By compositing pixels, on top of placing the given tokens: the given frames' (or the visible
        region's) tokens are in the sequence the model conditions on, but decoding them gives the
        tokenizer's reconstruction of the input, not the input (a few dB below it, blurred detail; the
        visible region of a condition is also blurred across the mask edge). What the user gave is
        kept exactly; only what the model made is decoded from tokens. Long videos build on these
        results, so their first frames are the input's as well."""
        sp = self.spec
        if res.frames is None:
            return res
        frames = np.array(res.frames, np.uint8)
        if r.task == "i2v" and r.image is not None:
            frames[0] = r.image
        elif r.task == "stylize" and r.first_frame and r.video is not None:
            frames[0] = np.asarray(r.video, np.uint8)[0]
        elif r.task in ("fp", "avcont") and r.video is not None and res.given_frames:
            frames[: res.given_frames] = np.asarray(r.video, np.uint8)[: res.given_frames]
        elif r.task in ("inpaint", "outpaint") and r.video is not None:
            from videopoet.tokenizers.magvit2 import masks

            kind = r.mask or MASK_DEFAULT[r.task]
            hidden = masks.make_mask(
                kind, sp.frames, sp.height, sp.width, align=self.video_tok.config.spatial_downsample
            )
            frames = np.where(hidden[..., None], frames, np.asarray(r.video, np.uint8))
        res.frames = frames
        if r.task == "avcont" and r.audio is not None and res.audio is not None and res.given_frames:
            n = min(res.audio.shape[0], int(round(res.given_frames / sp.fps * sp.sample_rate)))
            audio = np.array(res.audio, np.float32)
            audio[:n] = np.asarray(r.audio, np.float32).reshape(-1)[:n]
            res.audio = audio
        return res

    def decode(self, results: list[Result]) -> list[Result]:
        vids = [r for r in results if r.video_codes is not None]
        if vids:
            shapes = {r.video_codes.shape for r in vids}
            for shape in shapes:
                group = [r for r in vids if r.video_codes.shape == shape]
                frames = self.video_tok.decode(np.stack([r.video_codes for r in group]))
                for r, f in zip(group, frames, strict=True):
                    r.frames = f
        auds = [r for r in results if r.audio_codes is not None]
        if auds and self.audio_tok is not None:
            waves = self.audio_tok.decode(np.stack([r.audio_codes for r in auds]))
            n = self.spec.audio_samples
            for r, wv in zip(auds, waves, strict=True):  # F * hop samples: pad the last partial hop to the clip length
                r.audio = np.pad(wv[:n], (0, max(0, n - wv.shape[0])))
        return results

    def long_video(
        self,
        prompt: str,
        seconds: float,
        seed: int = 0,
        options: sampling.SamplingOptions | None = None,
        first: np.ndarray | None = None,
    ) -> np.ndarray:
        """Text-to-video (or ``first`` clip given), then repeated frame prediction on the last second.

        Each round re-encodes the last ``1 + 4k`` frames (about one second) as the start of a new clip,
        generates the rest of it, and appends the new frames. Returns uint8 [T, H, W, 3].
        """
        return self.long_videos([prompt], seconds, [seed], options, None if first is None else [first])[0]

    def long_videos(
        self,
        prompts: list[str | None],
        seconds: float,
        seeds: list[int],
        options: sampling.SamplingOptions | None = None,
        firsts: list[np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """:meth:`long_video` for several prompts (or first clips) at once: every round is one batch."""
        sp = self.spec
        tl = sp.latent[0]
        # the latent frames covering the last second: 1 + 4(k-1) >= fps frames
        k = max(1, min(tl - 1, 1 + int(np.ceil((sp.fps - 1) / 4))))
        if self.opts.fp_given_frames and k not in self.opts.fp_given_frames:
            k = min(self.opts.fp_given_frames, key=lambda x: abs(x - k))
        ctx = 1 + 4 * (k - 1)
        if firsts is None:
            reqs = [Request("t2v", prompt=p, seed=s) for p, s in zip(prompts, seeds, strict=True)]
            clips = [r.frames for r in self.generate(reqs, options)]
        else:
            clips = [np.asarray(f, np.uint8) for f in firsts]
        want = int(round(seconds * sp.fps))
        rnd = 1
        while min(c.shape[0] for c in clips) < want:
            given = []
            for c in clips:
                clip = np.zeros((sp.frames, sp.height, sp.width, 3), np.uint8)
                clip[:ctx] = c[-ctx:]
                given.append(clip)
            reqs = [Request("fp", video=g, given=k, seed=s + rnd) for g, s in zip(given, seeds, strict=True)]
            res = self.generate(reqs, options)
            clips = [np.concatenate([c, r.frames[ctx:]]) for c, r in zip(clips, res, strict=True)]
            rnd += 1
        return [c[:want] if want >= sp.frames else c for c in clips]


# ------------------------------------------------------------------------------------- loading
def _dataset_manifest(info: dict) -> dict:
    """The manifest of the dataset a run was trained on ({} when it cannot be read); a model directory
    carries the part generation needs (:mod:`videopoet.trainer.export`)."""
    if info.get("dataset_manifest"):
        return info["dataset_manifest"]
    uri = (info.get("dataset") or {}).get("uri")
    if not uri:
        return {}
    import fsspec

    try:
        with fsspec.open(f"{str(uri).rstrip('/')}/manifest.json", "r") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _style_of(manifest: dict, depth_model: str | None) -> tuple[tuple[str, ...], str]:
    """(style kinds, depth network path) for stylize: the dataset's ``style_conditions`` (flow alone
    for a run whose dataset has none: the trainer then had no stylize examples), and its depth network
    (``depth_model`` overrides the path the dataset was made with; a network whose content differs
    from the one the manifest records is refused)."""
    import os

    lineage = manifest.get("lineage") or {}
    pcfg = lineage.get("pipeline_config") or {}
    kinds = tuple(pcfg.get("style_conditions") or ("flow",))
    if "depth" not in kinds:
        if depth_model:
            raise GenerationError("--depth-model: the run's dataset has no depth condition (flow only)")
        return kinds, ""
    path = depth_model or str(pcfg.get("depth_model") or "")
    if not path or not os.path.isfile(path):
        return kinds, ""  # refused when a stylize request needs it (other tasks do not)
    want = ((lineage.get("style") or {}).get("depth_model") or {}).get("sha256")
    if want:
        from videopoet.schemas.shards import sha256_of

        if sha256_of(path)[0] != want:
            raise GenerationError(
                f"depth model {path} differs from the network the run's dataset was made with (sha256 {want[:12]}...)"
            )
    return kinds, path


def _load_tokenizer(modality: str, override: str | None, refs: dict[str, TokenizerRef]):
    """The tokenizer the run's dataset was made with (``refs``, fingerprint checked), or ``override``."""
    from videopoet.tokenizers import registry

    if override:
        return registry.resolve(override, MODALITY_KINDS[modality])[0]
    if modality not in refs:
        raise GenerationError(
            f"the run's dataset records no {modality} tokenizer; give --{modality}-tokenizer PRESET|DIR"
        )
    return registry.load(refs[modality], hint=f"give --{modality}-tokenizer PRESET|DIR")


def _load_text(spec: str):
    from videopoet.tokenizers import registry

    return registry.resolve(spec, "text")[0]


def load_generator(run_dir: str, **kw) -> Generator:
    from videopoet.trainer.checkpoint import run_dir_exists

    if not run_dir_exists(run_dir):
        raise GenerationError(f"run directory not found: {run_dir}")
    return Generator.from_run(run_dir, **kw)


def describe(results: list[Result]) -> list[dict[str, Any]]:
    return [
        {
            "task": r.task,
            "frames": None if r.frames is None else list(r.frames.shape),
            "audio_samples": None if r.audio is None else int(r.audio.shape[0]),
            "video_codes": None if r.video_codes is None else list(r.video_codes.shape),
            "audio_codes": None if r.audio_codes is None else list(r.audio_codes.shape),
        }
        for r in results
    ]
