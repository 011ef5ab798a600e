"""Synthetic TokenRecords with learnable structure, for tests and benchmarks (no tokenizers needed).

Each clip has an ``attribute`` a (caption ids ``[10 + a, 40 + motion, 1]``) and a ``motion`` m:
latent frame t holds codes ``(base(a) + m * t + position) % visual_size``; audio level l at frame f
is ``(a * 7 + l * 3 + f // 4) % codebook``; inpaint/outpaint conditions are the clip with a
region set to code 0. A model that learns the layout and the dependence on text/first frame beats
the unigram baseline by a wide margin.
"""

from __future__ import annotations

import numpy as np

from videopoet.schemas.record import Lineage, TokenRecord
from videopoet.schemas.vocab import Vocabulary


def make_records(
    n: int,
    vocab: Vocabulary,
    latent: tuple[int, int, int] = (3, 2, 2),
    audio_frames: int = 6,
    images: int = 0,
    seed: int = 0,
    conditions: bool = True,
    attributes: int = 4,
    text_every: int = 1,
) -> list[TokenRecord]:
    """``n`` video records (+ ``images`` one-frame image records); every ``text_every``-th has a caption."""
    rng = np.random.default_rng(seed)
    t, h, w = latent
    out = []
    pos = np.arange(h * w).reshape(h, w)
    for i in range(n + images):
        image = i >= n
        a = int(rng.integers(attributes))
        m = int(rng.integers(1, 3))
        frames = 1 if image else t
        base = (a * 5) % vocab.visual_size
        video = np.stack([(base + m * f + pos) % vocab.visual_size for f in range(frames)]).astype(np.int32)
        audio = None
        if not image and vocab.audio_levels:
            f = np.arange(audio_frames)
            audio = np.stack(
                [(a * 7 + lvl * 3 + f // 4) % vocab.audio_codebook for lvl in range(vocab.audio_levels)]
            ).astype(np.int32)
        conds = {}
        if conditions and not image:
            centre = video.copy()
            centre[:, h // 4 : h - h // 4 or h, w // 4 : w - w // 4 or w] = 0
            left = video.copy()
            left[:, :, : max(1, w // 4)] = 0
            conds = {"inpaint_center": centre, "outpaint_left": left}
        text = np.array([10 + a, 40 + m, 1], np.int32) if i % text_every == 0 else None
        out.append(
            TokenRecord(
                key=f"clip{i:05d}",
                lineage=Lineage("synthetic.tar", "0" * 64, f"clip{i:05d}"),
                video=video,
                audio=audio,
                text_ids=text,
                caption=None if text is None else f"attr {a} motion {m}",
                conditions=conds,
                meta={"bucket": "square", "is_image": image},
            )
        )
    return out
