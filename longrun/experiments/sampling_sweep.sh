#!/usr/bin/env bash
# t2v eval of the long run under different sampling settings (longrun/README.md, experiments)
cd "$(dirname "$0")/../.."
mkdir -p "${OUT:-/tmp/longrun-exp}"
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" JAX_PLATFORMS=cpu
for s in "t1:--temperature 1.0" "greedy:--temperature 0" "t07k50:--temperature 0.7 --top-k 50" "cfg3:--temperature 1.0 --guidance 3"; do
  name=${s%%:*}; args=${s#*:}
  echo "== $name ($args)"
  nice -n 10 .venv/bin/videopoet eval --run longrun/run --tasks t2v --scenes 4 --samples 2 --out ${OUT:-/tmp/longrun-exp}/eval_$name --json $args \
     --video-tokenizer default --audio-tokenizer default > ${OUT:-/tmp/longrun-exp}/eval_$name.json 2> ${OUT:-/tmp/longrun-exp}/eval_$name.err
  echo "rc $?"; .venv/bin/python -c "import json,sys; r=json.load(open('${OUT:-/tmp/longrun-exp}/eval_$name.json')); print(json.dumps(r.get('t2v'), indent=None))"
done
