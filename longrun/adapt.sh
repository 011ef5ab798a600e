#!/usr/bin/env bash
# Task adaptation from the long run's checkpoint (longrun/README.md). Single-threaded XLA on one niced
# core, as longrun/train.sh. LONGRUN_ADAPT_OUT: the run dir (default longrun/adapt); LONGRUN_FROM: the
# pretrained run (default longrun/run); LONGRUN_DATA: its --data (default the first run's synth-long@v1).
set -euo pipefail
cd "$(dirname "$0")/.."
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
export JAX_PLATFORMS=cpu
exec nice -n 19 taskset -c "${LONGRUN_CPU:-0}" .venv/bin/videopoet train --config longrun/adapt.yaml \
    --data "${LONGRUN_DATA:-synth-long@v1}" --root longrun/datasets --out "${LONGRUN_ADAPT_OUT:-longrun/adapt}" \
    --init-from "${LONGRUN_FROM:-longrun/run}" --no-progress "$@"
