#!/usr/bin/env bash
# Reruns the sweep's base variant alone with the code as it is now, to check the variants were
# comparable: the tree is shared and sampler/kernel changes landed while the sweep ran (each
# variant's worker imports the code when it starts). Greedy decoding is deterministic, so
# output-neutral changes reproduce the base run question for question.
#   flock /tmp/dllmflow-measure.lock bash bench/results/eval/sweep/recheck_base.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
world=$here/../models/world
source "$here/../../../private_stack.sh"
rm -rf "$here/recheck"
dllmflow eval sweep --questions "$world/questions.jsonl" --corpus "$world/corpus.jsonl" \
  --policies diffusion --concurrency 4 --variants base --name sweep-recheck-base \
  --out "$here/recheck"
