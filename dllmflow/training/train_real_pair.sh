#!/usr/bin/env bash
# The real pair's recipe on one GPU: import the base from its GGUF, tokenize the agent
# episodes (and prose for the diffusion half's adaptation phase), then train both halves at
# once (a 135M model leaves most of an H200 idle). Same data, tokenizer and agent steps for both.
#
#   GGUF=SmolLM2-135M-Instruct.Q4_1.gguf EPISODES=episodes.jsonl.gz PROSE=prose.jsonl.gz \
#   OUT=runs/pair bash dllmflow/training/train_real_pair.sh
set -euo pipefail
: "${GGUF:?path of the base GGUF}" "${EPISODES:?agent episodes JSONL(.gz)}" "${OUT:?output dir}"
STEPS=${STEPS:-600}         # agent fine-tune steps, both halves
ADAPT=${ADAPT:-200}         # diffusion adaptation steps on prose (before the agent steps)
TPB=${TPB:-32768}           # tokens per batch
RANK=${RANK:-24}
LR=${LR:-5e-4}
export DLLMFLOW_STATE_DIR=${DLLMFLOW_STATE_DIR:-$PWD/.dllmflow}
BASE=$DLLMFLOW_STATE_DIR/models/smollm2-135m
mkdir -p "$OUT"

python - "$GGUF" "$BASE" <<'PY'
import sys
from dllmflow.models.base_import import import_gguf
import_gguf(sys.argv[1], sys.argv[2])
print("base ->", sys.argv[2], flush=True)
PY

python -m dllmflow.training.pair prepare --episodes "$EPISODES" ${PROSE:+--prose "$PROSE"} \
  --base "$BASE" --out "$OUT/agent.pt"

common=(--base "$BASE" --data "$OUT/agent.pt" --steps "$STEPS" --lr "$LR" --rank "$RANK"
        --tokens-per-batch "$TPB")
python -m dllmflow.training.pair train --kind ar --out "$OUT/ar" "${common[@]}" \
  > "$OUT/ar.log" 2>&1 &
ar=$!
python -m dllmflow.training.pair train --kind diffusion --out "$OUT/diffusion" \
  --adapt-steps "$([ -n "${PROSE:-}" ] && echo "$ADAPT" || echo 0)" "${common[@]}" \
  > "$OUT/diffusion.log" 2>&1 &
diffusion=$!
status=0
wait $ar || status=1
wait $diffusion || status=1
tail -n 3 "$OUT/ar.log" "$OUT/diffusion.log"
exit $status
