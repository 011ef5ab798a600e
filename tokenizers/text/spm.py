"""SentencePiece: train on captions (in memory, deterministic) and load a ``.model``.

Training uses ``SentencePieceTrainer.train(sentence_iterator=..., model_writer=...)`` so nothing is
read from or written to the working directory. Ids follow the T5 convention: ``<pad>`` 0,
``</s>`` 1, ``<unk>`` 2, no ``<s>``. Determinism: one thread, the input in the given order, no
sampling of the input (``input_sentence_size=0``, no shuffling) -> identical ``.model`` bytes for
identical captions and options. The default model type is BPE: on a small caption corpus (the
synthetic world has ~90 distinct words) SentencePiece's unigram trainer finds only ~130 seed pieces
and splits words into letters, while BPE reaches the requested size and keeps words whole.

Caption sources (:func:`read_captions`): a ``.txt`` file (one caption per line), a directory or glob
of ``.txt`` files (each file one caption, as in webdataset samples), or webdataset ``.tar`` shards
(their ``*.txt`` members, read with the hardened reader :mod:`videopoet.media.webdataset`). The CLI
resolves ``synth[:N]`` to the synthetic corpus's captions (``videopoet.pipelines.synth.sources``).
"""

from __future__ import annotations

import glob
import io
import os
from collections.abc import Iterable, Iterator

from videopoet.media import webdataset
from videopoet.schemas.errors import VideoPoetError


class CaptionDataError(VideoPoetError, ValueError):
    """Captions for SentencePiece training could not be found or read."""


def train_sentencepiece(
    captions: Iterable[str],
    vocab_size: int = 512,
    model_type: str = "bpe",
    character_coverage: float = 1.0,
) -> bytes:
    """Train a SentencePiece model on captions; returns the serialized ``.model`` bytes."""
    import sentencepiece as spm

    sentences = [c.strip() for c in captions if c and c.strip()]
    if not sentences:
        raise CaptionDataError("no captions to train SentencePiece on")
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=buf,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            pad_id=0,
            eos_id=1,
            unk_id=2,
            bos_id=-1,
            num_threads=1,
            input_sentence_size=0,
            shuffle_input_sentence=False,
            hard_vocab_limit=False,  # a small caption corpus may support fewer pieces than asked for
            minloglevel=2,
        )
    except RuntimeError as e:
        raise CaptionDataError(f"SentencePiece training failed: {e}") from None
    return buf.getvalue()


def load_sentencepiece(model: bytes | str):
    """A SentencePieceProcessor from ``.model`` bytes or a path / fsspec URI."""
    import sentencepiece as spm

    if isinstance(model, str):
        import fsspec

        try:
            with fsspec.open(model, "rb") as f:
                model = f.read()
        except FileNotFoundError:
            raise CaptionDataError(f"SentencePiece model not found: {model}") from None
    sp = spm.SentencePieceProcessor()
    try:
        sp.LoadFromSerializedProto(model)
    except (RuntimeError, OSError) as e:
        raise CaptionDataError(f"not a SentencePiece model: {e}") from None
    return sp


def _tar_captions(path: str) -> Iterator[str]:
    """The ``.txt`` members of a webdataset shard (the hardened reader; refused samples and captions that
    are not UTF-8 are skipped)."""
    for sample in webdataset.iter_samples(path):
        if not isinstance(sample, webdataset.Sample):
            continue
        for ext, blob in sorted(sample.members.items()):
            if ext == "txt" or ext.endswith(".txt"):
                try:
                    yield blob.decode("utf-8")
                except UnicodeDecodeError:
                    continue


def read_captions(source: str) -> list[str]:
    """A captions .txt (one per line), a dir/glob of .txt files or .tar shards (``synth[:N]``, the synthetic
    corpus's captions, is resolved by the CLI)."""
    if os.path.isdir(source):
        files = sorted(os.path.join(r, f) for r, _, fs in os.walk(source) for f in fs if f.endswith((".txt", ".tar")))
    elif "://" in source:
        import fsspec

        fs, _, paths = fsspec.get_fs_token_paths(source)
        files = sorted(fs.unstrip_protocol(p) for p in paths)
    else:
        files = sorted(glob.glob(source, recursive=True))
    if not files:
        raise CaptionDataError(f"no caption files match {source!r}")
    out: list[str] = []
    single = len(files) == 1 and files[0].endswith(".txt")
    for p in files:
        if p.endswith(".tar"):
            out.extend(_tar_captions(p))
        elif p.endswith(".txt"):
            import fsspec

            with fsspec.open(p, "rt", encoding="utf-8", errors="replace") as f:
                text = f.read()
            if single:
                out.extend(line for line in text.splitlines() if line.strip())
            else:
                out.append(" ".join(text.split()))
    if not out:
        raise CaptionDataError(f"no captions in {source!r}")
    return out
