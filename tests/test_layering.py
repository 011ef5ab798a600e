"""The house's layers, read from the source (AST, nothing imported): the tokenizers sit below the
pipelines, the run-directory and media modules below everything but the schemas, and a tokenizer
loads without importing its training module."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _imports(path: pathlib.Path) -> set[str]:
    """Every module a file imports (``from a.b import c`` gives ``a.b`` and ``a.b.c``), lazy imports included."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def _offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in sorted(_imports(path)):
            if name.startswith(forbidden):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    return bad


def test_the_walker_sees_lazy_imports(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("def f():\n    from videopoet.pipelines.synth import sources\n    import videopoet.pipelines\n")
    assert {"videopoet.pipelines.synth", "videopoet.pipelines"} <= _imports(p)


def test_tokenizers_do_not_import_the_pipelines():
    assert _offenders("tokenizers", ("videopoet.pipelines",)) == []


@pytest.mark.parametrize("folder", ["media", "rundir"])
def test_the_bottom_modules_import_only_the_schemas(folder):
    above = ("videopoet.tokenizers", "videopoet.pipelines", "videopoet.trainer", "videopoet.cli", "videopoet.infra")
    assert _offenders(folder, above) == []


@pytest.mark.parametrize("kind", ["magvit2", "soundstream"])
def test_loading_a_tokenizer_does_not_import_its_training_module(kind):
    train = f"videopoet.tokenizers.{kind}.train"
    for name in ("tokenizer.py", "model.py", "config.py", "__init__.py"):
        assert train not in _imports(ROOT / "tokenizers" / kind / name), name
