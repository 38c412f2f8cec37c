#!/usr/bin/env bash
# The real pair (and the tiny pair) on the out-of-distribution sets, offline episodes on CPU:
# AR and diffusion in two processes side by side (one torch thread each), 8 episodes batched.
# Run from the repository root: bash bench/results/real_pair/run_cpu.sh [N_QUESTIONS]
# (TINY=0 leaves out the tiny pair, whose results do not change when the real pair is retrained;
# TAU=0.97 sets the diffusion half's commit threshold, default 0.9; OUT=DIR writes the results
# there; EXTRA="--no-repair" passes options to every evaluation)
set -euo pipefail
N=${1:-30}
TINY=${TINY:-1}
OUT=${OUT:-bench/results/real_pair}
mkdir -p "$OUT"
run() {  # pair-half set
  local name=${1//\//-}
  python -m dllmflow.models.evaluation --policy "$1" --corpus "bench/evalsets/$2/corpus.jsonl" \
    --qa "bench/evalsets/$2/questions.jsonl" --questions "$N" --concurrency 8 --threads 1 ${TAU:+--tau "$TAU"} ${EXTRA:-} \
    --out "$OUT/$2_$name.json" --episodes-out "$OUT/$2_$name.episodes.jsonl" 2>"$OUT/$2_$name.log"
}
for half in ar diffusion; do
  (for set in reworded prose; do run "smollm2-135m/$half" "$set"; done) &
done
wait
[[ $TINY == 1 ]] || exit 0
for half in ar diffusion; do
  (for set in reworded prose; do run "$half" "$set"; done) &
done
wait
