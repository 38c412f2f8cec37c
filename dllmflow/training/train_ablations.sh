#!/usr/bin/env bash
# Trains the two diffusion ablations with the shipped diffusion model's recipe, step for step:
# phase 1 = 3,672 steps at lr 1.5e-3 (warmup 200), phase 2 = 6,672 steps at lr 7.5e-4 (warmup
# 100) from phase 1's weights; batch 64, same data, seed and schedule shape. Both ablations train
# at once on one GPU.
#   OUT=/dir bash dllmflow/training/train_ablations.sh
# Writes $OUT/{diffusion-no-context-clean,diffusion-no-span-mask}.tgz (the checkpoint folders,
# without optimizer state) and the training logs.
set -u
export PYTHONPATH=${PYTHONPATH:-.} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
WORK=${WORK:-/tmp/dllmflow-ablations}
WORLDS=${WORLDS:-300}
PHASE1_STEPS=${PHASE1_STEPS:-3672}
PHASE2_STEPS=${PHASE2_STEPS:-6672}
mkdir -p "$WORK" "$OUT"
python3 -c 'import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())'
[ -f "$WORK/data.pt" ] || python3 -m dllmflow.training.tiny_pair prepare --out "$WORK/data.pt" \
  --worlds "$WORLDS" --workers "$(nproc)" || exit 1
T="python3 -m dllmflow.training.tiny_pair train --backend diffusion --data $WORK/data.pt
   --batch-size 64 --no-progress --checkpoint-every 1000 --loader-workers 6"

ablation() {  # name, flag
  local dir="$WORK/$1"
  $T $2 --out "$dir-phase1" --steps "$PHASE1_STEPS" --lr 1.5e-3 --warmup 200 || return 1
  $T $2 --out "$dir" --init-from "$dir-phase1" --steps "$PHASE2_STEPS" --lr 7.5e-4 \
    --warmup 100 --no-resume || return 1
  cp "$dir-phase1/loss_history.json" "$dir/loss_history_phase1.json"
  tar czf "$OUT/$1.tgz" -C "$WORK" --exclude=train_state.pt "$1"
}
ablation diffusion-no-context-clean --ablate-context-clean >"$WORK/context.log" 2>&1 &
ablation diffusion-no-span-mask --ablate-span-mask >"$WORK/span.log" 2>&1 &
wait
cp "$WORK/context.log" "$WORK/span.log" "$OUT/"
tail -n 3 "$WORK/context.log" "$WORK/span.log"
