#!/usr/bin/env bash
# AR vs DLLM vs routed vs oracle on 100 held-out generated questions (eval world 0, seed 900000,
# never used in training), as real Temporal episodes on a private embedded stack (CPU).
# Usage: bash bench/results/eval/models/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../../../private_stack.sh"
python -c "from dllmflow.world.generator import generate_eval_world, write_world; \
write_world(generate_eval_world(0, n_questions=100), '$here/world')"
rm -rf "$here/out"
dllmflow eval --questions "$here/world/questions.jsonl" --corpus "$here/world/corpus.jsonl" \
  --policies ar,diffusion,routed,oracle --concurrency 4 --name models-heldout-100 \
  --out "$here/out"
