"""The cascade after the LM: its video tokens -> super-resolution MaskGIT decoding -> the 2x clip.

:class:`Upsampler` holds a trained super-resolution run (:func:`videopoet.trainer.superres.train.load_run`),
its text encoder and the video tokenizer that decodes the high-resolution grid. MAGVIT-v2 is fully
convolutional, so the tokenizer that made the LM's low-resolution tokens decodes the 2x token grid too
(the pipeline's ``sr_pairs`` tokenized the 2x clips with it). A model with ``upsampled_input`` also
gets the LM's codes decoded, bicubic-upsampled 2x and encoded again, as the pipeline made its
training guesses. The run's dataset names the video
tokenizer its pairs were made with: a generator whose tokenizer has another fingerprint is refused,
because the SR model's codes would mean something else to it.
"""

from __future__ import annotations

import json

import numpy as np

from videopoet.schemas.errors import VideoPoetError
from videopoet.trainer.superres import sample as sr_sample
from videopoet.trainer.superres.config import SampleConfig, SRTrainConfig


class CascadeError(VideoPoetError, ValueError):
    """A super-resolution run that cannot follow this generator (grid, vocabulary, tokenizer)."""


def _dataset_video_fingerprint(info: dict) -> str | None:
    """The video tokenizer fingerprint the SR run's dataset records (None when unknown)."""
    uri = (((info.get("data") or {}).get("dataset")) or {}).get("uri")
    if not uri:
        return None
    import fsspec

    try:
        with fsspec.open(f"{str(uri).rstrip('/')}/manifest.json", "r") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    video = ((manifest.get("lineage") or {}).get("tokenizers") or {}).get("video") or {}
    return video.get("fingerprint")


class Upsampler:
    """Super-resolution of the LM's video codes: ``upsample(codes, prompt, seed)`` -> (2x codes, 2x frames)."""

    def __init__(self, cfg: SRTrainConfig, params, video_tok, text_enc, *, info: dict | None = None):
        self.cfg, self.params, self.video_tok, self.text = cfg, params, video_tok, text_enc
        self.info = dict(info or {})
        if video_tok.codebook_size != cfg.model.codebook_size:
            raise CascadeError(
                f"the super-resolution run has {cfg.model.codebook_size} codes, the video tokenizer "
                f"{video_tok.codebook_size}"
            )
        if text_enc.dim != cfg.model.text_dim:
            raise CascadeError(f"the text encoder has width {text_enc.dim}, the SR model expects {cfg.model.text_dim}")

    @classmethod
    def from_run(cls, run_dir: str, video_tok, step: int | None = None) -> Upsampler:
        from videopoet.tokenizers import registry
        from videopoet.trainer.superres import train

        cfg, params, found = train.load_run(run_dir, step)
        info = train.read_info(run_dir) or {}
        want = _dataset_video_fingerprint(info)
        if want and getattr(video_tok, "fingerprint", want) != want:
            raise CascadeError(
                f"{run_dir} was trained on pairs of video tokenizer {want[:12]}, the generator decodes with "
                f"{video_tok.fingerprint[:12]}"
            )
        text = registry.resolve(cfg.text_encoder, "text")[0]
        return cls(cfg, params, video_tok, text, info={"run": run_dir, "step": found})

    def check_codes(self, codes: np.ndarray) -> None:
        if tuple(codes.shape) != tuple(self.cfg.model.low_grid):
            raise CascadeError(
                f"the LM made a {list(codes.shape)} token grid; the super-resolution run takes "
                f"{list(self.cfg.model.low_grid)}"
            )

    def upsample(
        self, codes: np.ndarray, prompt: str | None = None, seed: int = 0, options: SampleConfig | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(high-resolution codes int32 [T', 2H', 2W'], uint8 frames [T, 2H, 2W, 3]) for the LM's codes
        [T', H', W'] and its prompt (None: no text, the unconditional text branch)."""
        from videopoet.trainer.tasks import text_slot

        codes = np.asarray(codes, np.int32)
        self.check_codes(codes)
        ids = np.asarray(self.text.token_ids(prompt), np.int32) if prompt else None
        slot_ids, slot_mask = text_slot(ids, self.cfg.text_len)
        if slot_mask.any():
            emb = self.text.embed(slot_ids[None], slot_mask[None])
        else:
            emb = np.zeros((1, self.cfg.text_len, self.text.dim), np.float32)
        upsampled = None
        if self.cfg.model.upsampled_input:
            from videopoet.pipelines.tokenize import upsampled_codes

            upsampled = upsampled_codes(self.video_tok, codes[None])
        high = sr_sample.decode(
            self.cfg.model,
            self.params,
            codes[None],
            emb,
            slot_mask[None].astype(bool),
            seed,
            options or self.cfg.sample,
            upsampled=upsampled,
        )
        frames = self.video_tok.decode(high)[0]
        return high[0], np.asarray(frames, np.uint8)
