#!/usr/bin/env bash
# Offline held-out eval (dllmflow/models/evaluation.py: in-process episode loop, in-memory search,
# 1 CPU thread) of the two ablation checkpoints, exactly as the shipped diffusion model's
# eval_heldout.json was made (eval world seed 900000, 100 questions, tau 0.9).
#   flock /tmp/dllmflow-measure.lock bash bench/results/eval/sweep/offline/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../../../.."
for name in diffusion-no-context-clean diffusion-no-span-mask; do
  PYTHONPATH=. python -m dllmflow.models.evaluation --questions 100 \
    --policy "dllmflow/checkpoints/$name" --out "$here/$name.json" 2>"$here/$name.log"
done
