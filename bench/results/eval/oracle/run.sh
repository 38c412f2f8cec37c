#!/usr/bin/env bash
# Oracle-only eval of 20 held-out generated questions (eval world 0, seed 900000; never trained on)
# on a private embedded stack. Usage: bash bench/results/eval/oracle/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../../../private_stack.sh"
python -c "from dllmflow.world.generator import generate_eval_world, write_world; \
write_world(generate_eval_world(0), '$here/world')"
rm -rf "$here/out"
dllmflow eval --questions "$here/world/questions.jsonl" --corpus "$here/world/corpus.jsonl" \
  --policies oracle --concurrency 4 --limit 20 --name oracle-heldout-20 --out "$here/out"
