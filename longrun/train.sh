#!/usr/bin/env bash
# Starts, resumes or (with a larger steps=N argument) extends the long run; see longrun/README.md.
# One CPU core, lowest priority, single-threaded XLA (the run's numbers depend on the thread count:
# keep these flags for a bit-exact resume). LONGRUN_OUT: the run dir (default longrun/run); LONGRUN_CONFIG
# and LONGRUN_DATA: the run's config and --data (default the first run's: pretrain.yaml, synth-long@v1).
set -euo pipefail
cd "$(dirname "$0")/.."
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
export JAX_PLATFORMS=cpu
exec nice -n 19 taskset -c "${LONGRUN_CPU:-1}" .venv/bin/videopoet train --config "${LONGRUN_CONFIG:-longrun/pretrain.yaml}" \
    --data "${LONGRUN_DATA:-synth-long@v1}" --root longrun/datasets --out "${LONGRUN_OUT:-longrun/run}" --no-progress "$@"
