#!/usr/bin/env bash
# chunk.sh NAME SEED: one more chunk of the long run's corpus (1200 videos + 300 images of the synthetic
# world's train split, seed SEED), tokenized by the Beam pipeline with the shipped tokenizers into
# LONGRUN_DATASETS (default longrun/datasets) as NAME@v1, then verified. One core (LONGRUN_CPU, default 0),
# niced; ~37 min on the 2-core CPU machine. The corpus goes to a temporary directory, removed at the end.
# The same NAME, SEED and tokenizers give the same dataset fingerprint (longrun/README.md lists them).
set -euo pipefail
name=${1:?NAME} seed=${2:?SEED}
cd "$(dirname "$0")/.."
root="${LONGRUN_DATASETS:-longrun/datasets}"
cpu="${LONGRUN_CPU:-0}"
export JAX_PLATFORMS=cpu
corpus=$(mktemp -d "${TMPDIR:-/tmp}/longrun-$name-XXXXXX")
trap 'rm -rf "$corpus"' EXIT
run() { nice -n 10 taskset -c "$cpu" "$@"; }
run .venv/bin/videopoet corpus synth --out "$corpus" --clips 1200 --images 300 --shards 8 --seed "$seed" --no-progress
run .venv/bin/videopoet pipeline run --runner beam --input "$corpus/train-*.tar" --name "$name" --version v1 \
    --root "$root" --workers 1 --no-progress
.venv/bin/videopoet data verify "$name@v1" --root "$root"
