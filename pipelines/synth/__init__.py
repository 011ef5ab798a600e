"""videopoet.pipelines.synth: a synthetic, learnable audio-video world written as webdataset shards.

Nothing can be downloaded, so the project makes its own corpus: one or two objects (shapes x
colours x sizes) moving in a direction or bouncing, on varied backgrounds, with a caption in varied
sentence templates and a sound tied to the content (pitch by colour, timbre by shape, loudness by
size, a click on every bounce). See :mod:`.world` for the vocabulary, :mod:`.corpus` for the
shard layout and corruption kinds, :mod:`.config` for the presets (tiny, small, paper).

Held-out combinations (``HELDOUT_COMBOS``, colour x shape), never generated in the ``train`` split
and the only ones in the ``heldout`` split (for zero-shot evaluation)::

    red triangle, green square, blue cross, yellow diamond, purple circle

Python API::

    from videopoet.pipelines.synth import generate_corpus, render_sample, sample_attrs, SynthConfig
    summary = generate_corpus("out/", clips=50, shards=2, seed=0, config="tiny")
    s = render_sample(attrs)   # attrs = the sample's {key}.json -> frames uint8 [T,H,W,3],
                               #   audio float32 [N] (videos), caption, attrs

CLI: ``videopoet corpus synth --out DIR [--clips N] [--shards K] [--seed S] [--with-corrupt]
[--images M] [--split train|heldout] [--config tiny|small|paper|YAML] [key=value ...] [--json]``.
"""

from videopoet.media.encode import encode_jpeg, encode_mp4
from videopoet.pipelines.synth.config import PRESETS, SynthConfig, load_synth_config
from videopoet.pipelines.synth.corpus import (
    CORRUPT_KINDS,
    SynthError,
    build_sample,
    generate_corpus,
    sample_key,
    shard_name,
)
from videopoet.pipelines.synth.render import Sample, render_audio, render_frames, render_sample
from videopoet.pipelines.synth.world import (
    BACKGROUNDS,
    COLOURS,
    HELDOUT_COMBOS,
    MOTIONS,
    PATTERNS,
    SHAPES,
    SIZES,
    SPLITS,
    is_heldout,
    make_caption,
    sample_attrs,
    world_description,
)

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "CORRUPT_KINDS",
    "HELDOUT_COMBOS",
    "MOTIONS",
    "PATTERNS",
    "PRESETS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "Sample",
    "SynthConfig",
    "SynthError",
    "build_sample",
    "encode_jpeg",
    "encode_mp4",
    "generate_corpus",
    "is_heldout",
    "load_synth_config",
    "make_caption",
    "render_audio",
    "render_frames",
    "render_sample",
    "sample_attrs",
    "sample_key",
    "shard_name",
    "world_description",
]
