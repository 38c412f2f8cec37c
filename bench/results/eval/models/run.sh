#!/usr/bin/env bash
# AR vs DLLM vs routed vs oracle on 100 held-out generated questions (eval world 0, seed 900000,
# never used in training), as real Temporal episodes on a private embedded stack (CPU).
# Usage: bash bench/results/eval/models/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
state=$(mktemp -d)
eval "$(python - <<'PY'
import socket
names = ["POSTGRES", "REDIS", "TEMPORAL", "TEMPORAL_UI", "RAY", "RAY_DASHBOARD", "API"]
socks = [socket.socket() for _ in names]
for s in socks:
    s.bind(("127.0.0.1", 0))
for n, s in zip(names, socks):
    print(f"export DLLMFLOW_{n}_PORT={s.getsockname()[1]}")
PY
)"
export DLLMFLOW_STATE_DIR=$state
python -c "from dllmflow.models.world import generate_eval_world, write_world; \
write_world(generate_eval_world(0, n_questions=100), '$here/world')"
dllmflow up
trap 'dllmflow down; rm -rf "$state"' EXIT
rm -rf "$here/out"
dllmflow eval --questions "$here/world/questions.jsonl" --corpus "$here/world/corpus.jsonl" \
  --policies ar,diffusion,routed,oracle --concurrency 4 --name models-heldout-100 \
  --out "$here/out"
