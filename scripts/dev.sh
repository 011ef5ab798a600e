#!/usr/bin/env bash
# One entry point for a fresh machine: creates .venv (if missing), installs videopoet with its test
# extra, then runs what you asked for.
#   bash scripts/dev.sh quickstart [ARGS]   set-up + `videopoet quickstart`
#   bash scripts/dev.sh test [PYTEST ARGS]  set-up + the full test suite (what CI runs), on parallel workers
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
  python -m pip install --quiet --upgrade pip
  python -m pip install --quiet -e '.[test]'
  touch "$stamp"
fi
cmd="${1:-test}"; shift || true
case "$cmd" in
  setup) echo "videopoet installed in .venv (activate with: . .venv/bin/activate)" ;;
  quickstart) exec videopoet quickstart "$@" ;;
  test)
    # tests run on min(cores, 4) pytest-xdist workers (VIDEOPOET_TEST_WORKERS overrides; 0 = in-process),
    # spread file by file (--dist loadfile: a file's tests run in order on one worker, so module fixtures
    # such as the Ray cluster are set up once and two local Ray clusters never run at once); they share one
    # XLA compilation cache (tests/conftest.py)
    workers="${VIDEOPOET_TEST_WORKERS:-$(python -c 'import os; n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(); print(min(n or 1, 4))')}"
    exec pytest -n "$workers" --dist loadfile "$@" ;;
  *) echo "usage: bash scripts/dev.sh setup|quickstart|test [ARGS]" >&2; exit 2 ;;
esac
