#!/usr/bin/env bash
# The Python packages bench/accelerator.py needs that the device tool's machine image lacks, as
# CPython 3.12 manylinux wheels in .whl/ (ignored by git; carried with the call), and the check that
# the working tree plus the wheels fit what one call carries (64 MiB).
#   bash bench/device_wheels.sh            trainer part (grain, ArrayRecord, jsonschema and theirs)
#   bash bench/device_wheels.sh pipeline   also the pipeline part (PyAV, decord)
# Then, with the device tool:
#   run(carry=[".whl"], timeout_s=590, command="python3 -m pip install -q --no-index --no-deps --no-compile
#       --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site && PYTHONUNBUFFERED=1
#       python3 bench/accelerator.py")
# The import closure behind these lists was read from sys.modules after each bench ran on this machine,
# against the device image's package list (../.library/device/KINDS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
core=(grain==0.2.18 array-record==0.8.6 portpicker==1.6.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1
      referencing==0.37.0 rpds-py==2026.9.1 rfc3339-validator==0.1.4 jsonpointer==3.12)
pipeline=(av==18.1.0 decord==0.6.0)
want=("${core[@]}")
if [ "${1:-}" = "pipeline" ]; then want+=("${pipeline[@]}"); fi
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
PY="${PYTHON:-python3}"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 \
  --platform manylinux1_x86_64 -d .whl "${want[@]}"
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s}')
wheels=$(du -cb .whl/*.whl | tail -1 | cut -f1)
total=$((tree + wheels))
printf 'working tree %.1f MiB + wheels %.1f MiB = %.1f MiB (a call carries 64 MiB)\n' \
  "$(echo "$tree / 1048576" | bc -l)" "$(echo "$wheels / 1048576" | bc -l)" "$(echo "$total / 1048576" | bc -l)"
if [ "$total" -gt $((64 * 1048576)) ]; then
  echo "too large for one device call: carry fewer wheels (drop 'pipeline') or make the tree smaller" >&2
  exit 1
fi
