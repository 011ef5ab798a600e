"""Container images for the cluster targets, named by a content-hash tag.

Three variants, one Dockerfile each beside this module: ``cpu`` (CPU hosts, Ray workers, the Beam SDK
harness), ``cuda`` (JAX on NVIDIA GPUs) and ``tpu`` (JAX with libtpu). Each installs this package with
the matching extras and carries Beam's SDK boot so the same image serves Dataflow, Flink and Spark workers.

The tag is ``<variant>-<16 hex digits>``: a SHA-256 over the Dockerfile and every file its ``COPY``
instructions take from the build context (pyproject.toml, README.md and the package folders, without
``__pycache__``, ``*.pyc`` and dot files, as the ``.dockerignore`` beside each Dockerfile filters them).
So a tag changes exactly when what goes into the image changes, and every target names the image by it.
Tags are computed from a source checkout (the folder with pyproject.toml above ``infra/``), the same tree
``docker build`` is run in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shlex
from pathlib import Path

from videopoet.schemas.errors import VideoPoetError

__all__ = [
    "VARIANTS",
    "Image",
    "ImageError",
    "build_argv",
    "content_tag",
    "copied_paths",
    "dockerfile_instructions",
    "image_ref",
    "resolve",
    "source_root",
]

VARIANTS = ("cpu", "cuda", "tpu")
REGISTRY_ENV = "VIDEOPOET_IMAGE_REGISTRY"
HERE = Path(__file__).resolve().parent
_HASH_SCHEME = b"videopoet-image-tag-v1\0"


class ImageError(VideoPoetError):
    """An image could not be named (unknown variant, no source checkout, a Dockerfile we cannot read)."""


@dataclasses.dataclass(frozen=True)
class Image:
    """The image a target runs: its variant and full reference (``registry/videopoet:<content tag>``, or the
    user's own reference)."""

    variant: str
    ref: str


def dockerfile(variant: str, root: Path | None = None) -> Path:
    """The variant's Dockerfile: under ``root`` (a source checkout) when given, else beside this module."""
    if variant not in VARIANTS:
        raise ImageError(f"unknown image variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return (HERE if root is None else Path(root) / "infra" / "images") / f"{variant}.Dockerfile"


def source_root() -> Path:
    """The source checkout the images are built from: the folder holding pyproject.toml above infra/."""
    root = HERE.parent.parent
    if not (root / "pyproject.toml").is_file():
        raise ImageError(
            f"image tags are computed from a videopoet source checkout, and {root} has no "
            "pyproject.toml; run from a checkout or name the image explicitly (--image)"
        )
    return root


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of a Dockerfile: comments dropped, ``\\`` continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    if pending:
        raise ImageError("a Dockerfile ends inside a '\\' continuation")
    return out


def copied_paths(variant: str, root: Path | None = None) -> list[str]:
    """The build-context paths the variant's ``COPY`` instructions take in (``COPY --from=stage`` excluded)."""
    paths: list[str] = []
    for word, rest in dockerfile_instructions(dockerfile(variant, root).read_text()):
        if word not in ("COPY", "ADD"):
            continue
        if rest.startswith("["):
            raise ImageError(f"{variant}.Dockerfile: the JSON form of {word} is not supported here")
        args = shlex.split(rest)
        flags = [a for a in args if a.startswith("--")]
        if any(f.startswith("--from=") for f in flags):
            continue
        sources = [a for a in args if not a.startswith("--")][:-1]
        if not sources:
            raise ImageError(f"{variant}.Dockerfile: {word} {rest!r} names no source")
        paths.extend(sources)
    return paths


def _excluded(name: str) -> bool:
    return name == "__pycache__" or name.endswith(".pyc") or name.startswith(".")


def _files(root: Path, rel: str) -> list[str]:
    top = root / rel
    if top.is_file():
        return [rel]
    if not top.is_dir():
        raise ImageError(f"the Dockerfile copies {rel!r}, which is not in the source checkout {root}")
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if not _excluded(d)]
        for f in filenames:
            if not _excluded(f):
                found.append(os.path.relpath(os.path.join(dirpath, f), root))
    return found


def content_tag(variant: str, root: Path | None = None) -> str:
    """``<variant>-<16 hex>``: SHA-256 of the Dockerfile and of every file it copies (sorted by path), all
    read from the source checkout ``root`` (default: this one)."""
    root = source_root() if root is None else Path(root)
    h = hashlib.sha256(_HASH_SCHEME + variant.encode() + b"\0")
    h.update(dockerfile(variant, root).read_bytes())
    files = sorted({f.replace(os.sep, "/") for rel in copied_paths(variant, root) for f in _files(root, rel)})
    for rel in files:
        data = (root / rel).read_bytes()
        h.update(b"\0" + rel.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return f"{variant}-{h.hexdigest()[:16]}"


def image_ref(tag: str, registry: str | None = None) -> str:
    """``registry/videopoet:tag`` (registry from the argument, else ``$VIDEOPOET_IMAGE_REGISTRY``)."""
    registry = registry if registry is not None else os.environ.get(REGISTRY_ENV, "")
    registry = registry.rstrip("/")
    return f"{registry}/videopoet:{tag}" if registry else f"videopoet:{tag}"


def resolve(variant: str, image: str | None = None, registry: str | None = None) -> Image:
    """The image a target names: ``image`` when the user gave one, else the content-tagged reference."""
    if image:
        dockerfile(variant)  # still validate the variant
        return Image(variant=variant, ref=image)
    return Image(variant=variant, ref=image_ref(content_tag(variant), registry))


def build_argv(variant: str, registry: str | None = None) -> list[str]:
    """The ``docker build`` command for the variant, run from the source checkout."""
    ref = image_ref(content_tag(variant), registry)
    return ["docker", "build", "-f", f"infra/images/{variant}.Dockerfile", "-t", ref, "."]
