"""Container images: the content-hash tag (stable, changes exactly when what the image copies changes)
and the Dockerfiles themselves (they copy the whole package, install extras that exist, pin their bases
and the Beam SDK the submitter runs)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from videopoet.infra import images

ROOT = images.source_root()


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of exactly what the images copy (a build context of our own to change)."""
    for rel in sorted(set(images.copied_paths("cpu")) | set(images.copied_paths("tpu"))):
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, tmp_path / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
        else:
            shutil.copy2(src, tmp_path / rel)
    return tmp_path


def test_tag_is_stable_and_shaped():
    tags = {v: images.content_tag(v) for v in images.VARIANTS}
    for v, t in tags.items():
        assert re.fullmatch(rf"{v}-[0-9a-f]{{16}}", t)
        assert images.content_tag(v) == t
    assert len(set(tags.values())) == 3


def test_tag_follows_the_sources_and_nothing_else(tree):
    base = images.content_tag("cpu")
    assert images.content_tag("cpu", tree) == base  # the same content elsewhere: the same tag
    (tree / "trainer" / "__pycache__").mkdir(exist_ok=True)
    (tree / "trainer" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    (tree / "tests").mkdir()
    (tree / "tests" / "test_new.py").write_text("x = 1\n")  # not copied into the image
    assert images.content_tag("cpu", tree) == base
    src = tree / "trainer" / "config.py"
    original = src.read_bytes()
    src.write_bytes(original + b"\n# changed\n")
    changed = images.content_tag("cpu", tree)
    assert changed != base
    src.write_bytes(original)
    assert images.content_tag("cpu", tree) == base
    (tree / "cli" / "new_module.py").write_text("")  # a new source file is part of the image
    assert images.content_tag("cpu", tree) != base
    (tree / "cli" / "new_module.py").unlink()
    for rel in ("pyproject.toml", "infra/images/cpu.Dockerfile"):
        p = tree / rel
        keep = p.read_bytes()
        p.write_bytes(keep + b"\n")
        assert images.content_tag("cpu", tree) != base, rel
        p.write_bytes(keep)
    assert images.content_tag("cpu", tree) == base


def test_a_missing_copy_source_is_one_line_error(tree):
    shutil.rmtree(tree / "cli")
    with pytest.raises(images.ImageError, match="copies 'cli'"):
        images.content_tag("cpu", tree)
    with pytest.raises(images.ImageError, match="unknown image variant 'gpu'"):
        images.content_tag("gpu")


@pytest.mark.parametrize("variant", images.VARIANTS)
def test_dockerfile_installs_the_whole_package(variant):
    import apache_beam

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_dirs = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    copied = set(images.copied_paths(variant))
    assert package_dirs | {"pyproject.toml", "README.md"} == copied  # every package folder, nothing else
    steps = images.dockerfile_instructions(images.dockerfile(variant).read_text())
    froms = [rest.split()[0] for word, rest in steps if word == "FROM"]
    assert froms and all(":" in f and not f.endswith(":latest") for f in froms)
    args = dict(rest.split("=", 1) for word, rest in steps if word == "ARG" and "=" in rest)
    assert args["BEAM_VERSION"] == apache_beam.__version__  # Dataflow wants the launcher's SDK version
    assert froms[0] == "apache/beam_python3.11_sdk:${BEAM_VERSION}"
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    extras = re.search(r'"\.\[([a-z0-9,]+)\]"', runs).group(1).split(",")
    assert set(extras) <= set(pyproject["project"]["optional-dependencies"])
    wanted = {"cpu": set(), "cuda": {"cuda"}, "tpu": {"tpu"}}[variant]
    assert wanted | {"gcp", "gke"} == set(extras)
    assert ("ENTRYPOINT", '["/opt/apache/beam/boot"]') in steps
    ignore = (images.dockerfile(variant).parent / f"{variant}.Dockerfile.dockerignore").read_text().split()
    assert {"**/__pycache__", "**/*.pyc", "**/.*"} <= set(ignore)


def test_module_prints_the_reference_and_the_build_command():
    env_free = [sys.executable, "-m", "videopoet.infra.images"]
    out = subprocess.run(
        env_free + ["cuda", "--registry", "us-docker.pkg.dev/p/r"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"us-docker.pkg.dev/p/r/videopoet:{images.content_tag('cuda')}"
    build = subprocess.run(env_free + ["tpu", "--build"], capture_output=True, text=True, check=True).stdout
    assert build.split()[:4] == ["docker", "build", "-f", "infra/images/tpu.Dockerfile"]
    assert images.resolve("tpu", image="gcr.io/x/mine:1").ref == "gcr.io/x/mine:1"
