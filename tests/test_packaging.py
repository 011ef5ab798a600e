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
    data = {p for p in listed - found if _folder_of(p, mapping).is_dir()}
    assert listed - found - data == set(), f"listed but missing on disk: {sorted(listed - found - data)}"
    # data packages hold files only (schemas, shipped checkpoints), and every data folder is listed, so
    # setuptools installs them without "package would be ignored" warnings
    for pkg in data:
        assert not list(_folder_of(pkg, mapping).glob("*.py")), f"{pkg} has Python files but no __init__.py"
    for pkg, folder in mapping.items():
        for sub in (ROOT / folder).rglob("*"):
            rel = sub.relative_to(ROOT / folder)
            if sub.is_dir() and ("assets" in rel.parts or rel.parts == ("json",)) and "__pycache__" not in rel.parts:
                assert ".".join([pkg, *rel.parts]) in listed, f"data folder {sub} is not listed as a package"


def _folder_of(package: str, mapping: dict) -> pathlib.Path:
    for pkg, folder in mapping.items():
        if package == pkg or package.startswith(pkg + "."):
            return (
                ROOT / folder / pathlib.Path(*package[len(pkg) + 1 :].split(".")) if package != pkg else ROOT / folder
            )
    raise AssertionError(f"{package} is under no package-dir entry")


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


def test_the_checkout_fits_one_device_call():
    """The device tool carries the working tree and the bench's wheels in one call of at most 64 MiB
    (bench/device_wheels.sh); the trainer part's wheels take ~5 MiB, so the tracked files stay under 58."""
    import subprocess

    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    sizes = [(ROOT / p).stat().st_size for p in listed.decode().split("\0") if p and (ROOT / p).is_file()]
    assert len(sizes) > 100
    assert sum(sizes) < 58 * 2**20, f"tracked files take {sum(sizes) / 2**20:.1f} MiB"
