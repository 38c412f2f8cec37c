#!/usr/bin/env bash
# The real pair's recipe on one GPU: import the base from its GGUF, tokenize the agent
# episodes (and prose for the diffusion half's adaptation phase), then train the two halves one
# after the other (side by side, the diffusion half's block-masked attention ran out of memory).
# Same data, tokenizer and agent steps for both.
#
#   GGUF=SmolLM2-135M-Instruct.Q4_1.gguf EPISODES=episodes.jsonl.gz PROSE=prose.jsonl.gz \
#   OUT=runs/pair bash dllmflow/training/train_real_pair.sh
#
# STAGE=prepare|ar|adapt|diffusion runs one stage alone (each reuses what the earlier ones left in
# $OUT and the state dir); MAX_SECONDS bounds each training stage (it stops early, saying so).
set -euo pipefail
: "${EPISODES:?agent episodes JSONL(.gz)}" "${OUT:?output dir}"
STAGE=${STAGE:-all}
STEPS=${STEPS:-720}         # agent fine-tune steps, both halves
ADAPT=${ADAPT:-60}          # diffusion adaptation steps on prose (before the agent steps)
TPB=${TPB:-32768}           # tokens per batch
RANK=${RANK:-24}
LR=${LR:-5e-4}
MICRO=${MICRO:-2}           # diffusion: passes per step (its two noisy copies double the memory)
export DLLMFLOW_STATE_DIR=${DLLMFLOW_STATE_DIR:-$PWD/.dllmflow}
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
BASE=$DLLMFLOW_STATE_DIR/models/smollm2-135m
mkdir -p "$OUT"

if [[ $STAGE == all || $STAGE == prepare ]]; then
  : "${GGUF:?path of the base GGUF}"
  python - "$GGUF" "$BASE" <<'PY'
import sys
from dllmflow.models.base_import import import_gguf
import_gguf(sys.argv[1], sys.argv[2])
print("base ->", sys.argv[2], flush=True)
PY
  python -m dllmflow.training.pair prepare --episodes "$EPISODES" ${PROSE:+--prose "$PROSE"} \
    --base "$BASE" --out "$OUT/agent.pt"
fi

common=(--base "$BASE" --data "$OUT/agent.pt" --steps "$STEPS" --lr "$LR" --rank "$RANK"
        --tokens-per-batch "$TPB" ${MAX_SECONDS:+--max-seconds "$MAX_SECONDS"})
if [[ $STAGE == all || $STAGE == ar ]]; then
  python -m dllmflow.training.pair train --kind ar --out "$OUT/ar" "${common[@]}" 2>&1 \
    | tee "$OUT/ar.log"
fi
# The diffusion half's two phases run as two processes (each fits one device slot): the
# block-diffusion adaptation on prose, then the agent steps from that adapter.
if [[ ( $STAGE == all || $STAGE == adapt ) && -n ${PROSE:-} && $ADAPT -gt 0 ]]; then
  python -m dllmflow.training.pair train --kind diffusion --out "$OUT/diffusion-adapt" \
    --adapt-steps "$ADAPT" --micro-batches "$MICRO" "${common[@]}" --steps 0 2>&1 | tee "$OUT/diffusion-adapt.log"
fi
if [[ $STAGE == all || $STAGE == diffusion ]]; then
  init=()
  [[ -f $OUT/diffusion-adapt/train_summary.json ]] && init=(--init-adapter "$OUT/diffusion-adapt")
  python -m dllmflow.training.pair train --kind diffusion --out "$OUT/diffusion" \
    "${init[@]}" --micro-batches "$MICRO" "${common[@]}" 2>&1 | tee "$OUT/diffusion.log"
fi
