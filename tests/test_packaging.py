"""The install layout: every package folder is listed in pyproject and maps to videopoet.<folder>."""

import importlib
import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed():
    cfg = _pyproject()["tool"]["setuptools"]
    listed = set(cfg["packages"])
    mapping = cfg["package-dir"]
    found = set()
    for pkg, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            if any(part.startswith((".", "__")) or part == "assets" for part in rel.parts):
                continue
            found.add(".".join([pkg, *rel.parts]))
    assert found - listed == set(), f"add these to [tool.setuptools] packages: {sorted(found - listed)}"
    assert listed - found == set(), f"listed but missing on disk: {sorted(listed - found)}"


def test_packages_import_from_their_folders():
    for pkg, folder in _pyproject()["tool"]["setuptools"]["package-dir"].items():
        mod = importlib.import_module(pkg)
        assert pathlib.Path(mod.__file__).resolve().parent == (ROOT / folder).resolve()


def test_everything_installs_under_videopoet():
    # DESIGN.md: a top-level `tokenizers` would shadow Hugging Face's package, so nothing installs
    # outside the videopoet namespace.
    cfg = _pyproject()["tool"]["setuptools"]
    assert all(p.startswith("videopoet.") for p in cfg["packages"])
    assert all(p.startswith("videopoet.") for p in cfg["package-dir"])
