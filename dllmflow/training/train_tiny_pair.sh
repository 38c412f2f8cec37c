#!/usr/bin/env bash
# Trains the shipped pair (AR + block diffusion) and the two diffusion ablations, all four at
# once on one GPU, then (time permitting) measures per-turn latency on that GPU.
#   OUT=/dir bash dllmflow/training/train_tiny_pair.sh [main_seconds] [ablation_seconds]
# Writes $OUT/{ar,diffusion,abl_context,abl_span}.safetensors, $OUT/meta.tgz (configs,
# tokenizers, loss histories and curves, logs) and $OUT/turn_latency_gpu.json.
set -u
export PYTHONPATH=${PYTHONPATH:-.} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
MAIN=${1:-390}
ABL=${2:-230}
WORLDS=${WORLDS:-300}
WORK=${WORK:-/tmp/dllmflow-train}
mkdir -p "$WORK" "$OUT"
python3 -c 'import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())'
python3 -m dllmflow.training.tiny_pair prepare --out "$WORK/data.pt" --worlds "$WORLDS" \
  --workers "$(nproc)" || exit 1
T="python3 -m dllmflow.training.tiny_pair train --data $WORK/data.pt --steps 100000 --no-progress
   --no-resume --checkpoint-every 1000 --lr 1.5e-3 --batch-size 64 ${MODEL_ARGS:-}"
$T --backend ar --out "$WORK/ar" --max-seconds "$MAIN" --loader-workers 2 >"$WORK/ar.log" 2>&1 &
$T --backend diffusion --out "$WORK/diffusion" --max-seconds "$MAIN" --loader-workers 4 \
  >"$WORK/diffusion.log" 2>&1 &
$T --backend diffusion --ablate-context-clean --out "$WORK/abl_context" --max-seconds "$ABL" \
  --loader-workers 2 >"$WORK/abl_context.log" 2>&1 &
$T --backend diffusion --ablate-span-mask --out "$WORK/abl_span" --max-seconds "$ABL" \
  --loader-workers 2 >"$WORK/abl_span.log" 2>&1 &
wait
for m in ar diffusion abl_context abl_span; do
  tail -n 2 "$WORK/$m.log"
  cp "$WORK/$m/model.safetensors" "$OUT/$m.safetensors"
done
tar czf "$OUT/meta.tgz" -C "$WORK" --exclude='*.safetensors' --exclude=train_state.pt \
  --exclude=data.pt .
timeout "${BENCH_SECONDS:-60}" python3 bench/turn_latency.py --device "${BENCH_DEVICE:-cuda}" \
  --ar "$WORK/ar" --diffusion "$WORK/diffusion" --questions "${BENCH_QUESTIONS:-5}" \
  --out "$OUT/turn_latency_gpu.json" >"$WORK/bench.log" 2>&1
tail -c 1500 "$WORK/bench.log"
