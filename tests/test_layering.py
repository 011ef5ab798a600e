"""The house's layers, read from the source (AST, nothing imported): the tokenizers sit below the
pipelines, the run-directory and media modules below everything but the schemas, and a tokenizer
loads without importing its training module."""

import ast
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _imports(path: pathlib.Path) -> set[str]:
    """Every module a file imports (``from a.b import c`` gives ``a.b`` and ``a.b.c``), lazy imports included.

    CPython 3.11's AST conversion can refuse a valid file with "SystemError: AST constructor recursion depth
    mismatch" (CPython issue 106905) in a process that has run many other tests; a fresh interpreter reads
    the file then."""
    try:
        return _imports_in_this_process(path)
    except SystemError:
        code = (
            "import json, sys; sys.path.insert(0, sys.argv[1]); import test_layering; "
            "print(json.dumps(sorted(test_layering._imports_in_this_process(test_layering.pathlib.Path(sys.argv[2])))))"
        )
        argv = [sys.executable, "-c", code, str(pathlib.Path(__file__).parent), str(path)]
        return set(json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout))


def _imports_in_this_process(path: pathlib.Path) -> set[str]:
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


def test_a_refused_parse_is_read_by_a_fresh_interpreter(monkeypatch):
    path = ROOT / "tokenizers" / "magvit2" / "tokenizer.py"
    expected = _imports_in_this_process(path)

    def refuse(_path):
        raise SystemError("AST constructor recursion depth mismatch (before=141, after=72)")

    monkeypatch.setattr(sys.modules[__name__], "_imports_in_this_process", refuse)
    assert _imports(path) == expected and expected


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
