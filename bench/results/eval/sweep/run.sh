#!/usr/bin/env bash
# The diffusion policy under the base configuration and each ablation/serving variant, on the 100
# held-out questions of bench/results/eval/models (eval world 0, seed 900000, never used in
# training), as real Temporal episodes on a private embedded stack (CPU). Each variant runs on a
# dedicated worker with replicas of its own; one table: out/sweep.md (+ .json, .csv).
# Usage (others benchmark on the same machine; the lock keeps measurements apart):
#   flock /tmp/dllmflow-measure.lock bash bench/results/eval/sweep/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
world=$here/../models/world
source "$here/../../../private_stack.sh"
rm -rf "$here/out"
dllmflow eval sweep --questions "$world/questions.jsonl" --corpus "$world/corpus.jsonl" \
  --policies diffusion --concurrency 4 --name sweep-heldout-100 --out "$here/out"
