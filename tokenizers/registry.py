"""The one way from a tokenizer spec to a tokenizer: ``resolve(spec, kind) -> (tokenizer, TokenizerRef)``.

    from videopoet.tokenizers import registry
    vt, ref = registry.resolve("default", "visual")   # the shipped MAGVIT-v2 checkpoint
    at, ref = registry.resolve("tiny", "audio")       # a preset: seeded initialisation
    tt, ref = registry.resolve("runs/t5", "text")     # a checkpoint directory or fsspec URI
    vt = registry.load(ref)                           # the same tokenizer again, fingerprint checked

Specs: ``default`` (the checkpoint shipped with the package; missing is an error, never a silent
fall-back to a random initialisation), a preset name, a YAML config, or a checkpoint directory /
URI. Kinds: ``visual`` (MAGVIT-v2), ``audio`` (SoundStream), ``text`` (SentencePiece + T5 encoder).
The pipelines record the reference in the dataset manifest; generation, evaluation and
``videopoet data show --decode`` load it back from there.
"""

from __future__ import annotations

import os
from typing import Any

from videopoet.schemas.errors import VideoPoetError
from videopoet.schemas.tokenizer_ref import DEFAULT_SPEC, KINDS, TokenizerRef

__all__ = ["TokenizerError", "load", "resolve"]


class TokenizerError(VideoPoetError):
    """A tokenizer spec that does not resolve, or a tokenizer that is not the one a reference names."""


def _module(kind: str):
    from videopoet.tokenizers import magvit2, soundstream, text

    mods = {"visual": magvit2, "audio": soundstream, "text": text}
    if kind not in mods:
        raise TokenizerError(f"unknown tokenizer kind {kind!r} (one of {', '.join(KINDS)})")
    return mods[kind]


def _canonical(spec: str) -> str:
    """Local paths become absolute, so a reference resolves from any working directory."""
    if spec == DEFAULT_SPEC or "://" in spec or not os.path.exists(spec):
        return spec
    return os.path.abspath(spec)


def resolve(spec: str, kind: str) -> tuple[Any, TokenizerRef]:
    """The tokenizer ``spec`` names and its reference; a spec that does not resolve is one line."""
    mod = _module(kind)
    if not spec:
        raise TokenizerError(f"empty {kind} tokenizer spec (give 'default', a preset or a checkpoint)")
    try:
        tok = mod.default() if spec == DEFAULT_SPEC else mod.load(spec)
    except VideoPoetError:
        raise
    except Exception as e:  # noqa: BLE001 - a bad path or config is the user's to fix
        raise TokenizerError(f"cannot load the {kind} tokenizer {spec!r}: {type(e).__name__}: {e}") from None
    return tok, TokenizerRef(kind, _canonical(spec), str(tok.config.name), tok.fingerprint)


def load(ref: TokenizerRef, hint: str = "") -> Any:
    """The tokenizer ``ref`` names, refused when its fingerprint is not the recorded one."""
    tok, got = resolve(ref.spec, ref.kind)
    if ref.fingerprint and got.fingerprint != ref.fingerprint:
        raise TokenizerError(
            f"the {ref.kind} tokenizer {ref.spec!r} has fingerprint {got.fingerprint[:12]}, not the recorded "
            f"{ref.fingerprint[:12]} ({ref.name or 'unnamed'})" + (f"; {hint}" if hint else "")
        )
    return tok
