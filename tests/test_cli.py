"""CLI conventions: one entry point, one-line errors with non-zero exits, --json."""

import subprocess
import sys

import pytest

from videopoet.cli.main import build_parser, main

GROUPS = ["corpus", "tokenizer", "pipeline", "data", "train", "generate", "eval", "submit", "quickstart"]


def test_all_design_groups_exist():
    parser = build_parser([])
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(GROUPS) <= set(sub.choices)


def test_unknown_command_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("videopoet: error:")


def test_console_script_runs_and_errors_without_traceback():
    exe = [sys.executable, "-m", "videopoet.cli.main"]
    ok = subprocess.run([*exe, "--help"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "quickstart" in ok.stdout
    bad = subprocess.run(
        [*exe, "data", "info", "nope@v0", "--root", "/nonexistent-root"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode != 0
    assert "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
