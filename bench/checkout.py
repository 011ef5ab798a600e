"""``import videopoet`` from this checkout without installing it: for bench scripts that run where
nothing can be installed (a lent accelerator machine, whose image has jax but not this package).

:func:`ensure_importable` does nothing when ``videopoet`` imports; otherwise it builds a temporary
``videopoet/`` folder of symbolic links, one per ``[tool.setuptools.package-dir]`` entry of
``pyproject.toml`` (the same mapping an install uses, so a new top-level folder is never missed),
puts it first on ``sys.path`` and on ``PYTHONPATH`` (for the subprocesses a bench starts).
"""

from __future__ import annotations

import os
import sys
import tempfile

import tomllib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def package_dirs() -> dict[str, str]:
    """``{"schemas": "schemas", ...}``: the sub-package name under ``videopoet`` -> the checkout's folder."""
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        mapping = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    return {name.split(".", 1)[1]: folder for name, folder in mapping.items() if name.count(".") == 1}


def ensure_importable(probe: str = "videopoet.schemas") -> None:
    try:
        __import__(probe)
        return
    except ImportError:
        pass
    root = tempfile.mkdtemp(prefix="videopoet-src-")
    os.makedirs(os.path.join(root, "videopoet"))
    for name, folder in package_dirs().items():
        os.symlink(os.path.join(REPO, folder), os.path.join(root, "videopoet", name))
    sys.path.insert(0, root)
    os.environ["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    __import__(probe)
