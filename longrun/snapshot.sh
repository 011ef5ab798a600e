#!/usr/bin/env bash
# Copies a live run dir (LONGRUN_OUT, trained outside the repository so that git never sees files
# changing under it) into longrun/run: config, run.json, metrics, the finished
# checkpoints (never Orbax's in-progress directories), and the log LONGRUN_LOG when set. TensorBoard
# events stay out (metrics.jsonl holds the same rows; the tree must fit one device call), and the
# metrics go in gzipped (metrics.jsonl.gz: gunzip it before resuming from the tree's copy). Then `git add -A longrun && git commit`.
# LONGRUN_DEST / LONGRUN_LOG_DEST: where they go (default longrun/run and longrun/train.log, the first run's).
set -euo pipefail
cd "$(dirname "$0")/.."
src="${LONGRUN_OUT:?set LONGRUN_OUT to the live run dir}"
dest="${LONGRUN_DEST:-longrun/run}"
for try in 1 2 3 4 5; do  # a checkpoint being rotated away while copying: try again
  rm -rf "$dest.new"
  if cp -a "$src"/. "$dest.new"/ 2>/dev/null || { mkdir -p "$dest.new" && cp -a "$src"/. "$dest.new"/; }; then
    find "$dest.new/checkpoints" -maxdepth 1 -name '*orbax-checkpoint-tmp*' -exec rm -rf {} +
    rm -rf "$dest.new/tb"
    # the tree holds the metrics gzipped (its size budget); `gunzip` it before resuming from the tree
    if [ -f "$dest.new/metrics.jsonl" ]; then gzip -9 -n -f "$dest.new/metrics.jsonl"; fi
    # only the latest checkpoint (a decay-start one kept for extensions stays in the live dir): one
    # checkpoint with its Adam moments is 24 MB, two would not fit one device call
    latest=$(find "$dest.new/checkpoints" -mindepth 1 -maxdepth 1 -type d -regex '.*/[0-9]+' -printf '%f\n' 2>/dev/null | sort -n | tail -1)
    find "$dest.new/checkpoints" -mindepth 1 -maxdepth 1 -type d -regex '.*/[0-9]+' ! -name "${latest:-none}" -exec rm -rf {} +
    rm -rf "$dest" && mv "$dest.new" "$dest"
    if [ -n "${LONGRUN_LOG:-}" ]; then cp "$LONGRUN_LOG" "${LONGRUN_LOG_DEST:-longrun/train.log}"; fi
    du -sh longrun
    exit 0
  fi
  sleep 5
done
echo "snapshot: could not copy $src" >&2
exit 1
