#!/usr/bin/env bash
# One entry point for a fresh machine: creates .venv (if missing), installs videopoet with its test
# extra, then runs what you asked for.
#   bash scripts/dev.sh quickstart [ARGS]   set-up + `videopoet quickstart`
#   bash scripts/dev.sh test [PYTEST ARGS]  set-up + lint + the full test suite (what CI runs), on parallel workers
#   bash scripts/dev.sh setup               set-up only
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=".venv/.videopoet-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # setuptools reports every editable install of a package-dir mapping as a warning wall ("Editable
  # installation. Please be careful with folders ..."): informational only, so it is filtered here
  export PYTHONWARNINGS="ignore:Editable installation"
  python -m pip install --quiet --upgrade pip
  python -m pip install --quiet -e '.[test]'
  unset PYTHONWARNINGS
  touch "$stamp"
fi
cmd="${1:-test}"; shift || true
case "$cmd" in
  setup) echo "videopoet installed in .venv (activate with: . .venv/bin/activate)" ;;
  quickstart) exec videopoet quickstart "$@" ;;
  test)
    # lint first: ruff's checks and its formatter, configured in pyproject.toml (fix what it finds:
    # `ruff check --fix . && ruff format .`)
    ruff check --quiet .
    ruff format --check --quiet .
    # tests run on min(cores + 1, 4) pytest-xdist workers (VIDEOPOET_TEST_WORKERS overrides; 0 = in-process):
    # one more than the cores, because a test spends part of its time waiting on the servers and
    # subprocesses it starts (2 workers kept 2 cores 83% busy); one unit of work per file (module
    # fixtures are set up once; the files that start a Ray cluster form one unit: tests/conftest.py's
    # scheduler), slowest files first; one shared XLA compilation cache
    workers="${VIDEOPOET_TEST_WORKERS:-$(python -c 'import os; n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(); print(min((n or 1) + 1, 4))')}"
    exec pytest -n "$workers" --dist loadfile --no-loadscope-reorder --durations=40 "$@" ;;
  *) echo "usage: bash scripts/dev.sh setup|quickstart|test [ARGS]" >&2; exit 2 ;;
esac
