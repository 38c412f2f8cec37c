# Run 10's device calls as planned (NOT run: no device machine was lent in the session that wrote
# them). Staging: as ../run9/device_calls.sh (.dev1/.dev2 the base GGUF in two parts, .dev3 the AR adapter,
# .dev4 episodes.jsonl.xz + tok.tar.xz, .dev5 the shipped d6 adapter, .whl the wheels), the tree
# copied without the shipped checkpoints, bench/results and docs. Order: c1 c2 c3 c4 c5 on one warm machine.

# ---- .run10/env.sh
# Shared by the calls of run 11: wheels and state under /root/keep (lives while the machine stays warm).
K=/root/keep
export PYTHONPATH=$K/site:$PWD PYTHONUNBUFFERED=1 DLLMFLOW_STATE_DIR=$K/state
C=dllmflow/checkpoints/smollm2-135m

# ---- .run10/c1.sh
# Run 10, call 1 (fresh machine; carry .whl .dev3 .dev4 .dev5 .run10): wheels, tokenizer, adapters,
# the agent data prepared; the CUDA-graph tests on the GPU; the peer-loop bench (1B shape).
set -uo pipefail
source .run10/env.sh; mkdir -p $K/site $K/tok $K/data $K/ar $K/d6
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $K/site .whl/*.whl
python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers', transformers.__version__, 'triton', triton.__version__)"
tar -xJf .dev4/tok.tar.xz -C $K/tok
cp .dev3/ar/* $K/ar/; cp .dev5/diffusion/* $K/d6/
xz -T16 -dc .dev4/episodes.jsonl.xz > $K/data/episodes.jsonl
( time python3 -m dllmflow.training.pair prepare --episodes $K/data/episodes.jsonl --base $K/tok \
    --out $K/data/agent.pt --workers 16 ) > $OUT/prepare.log 2>&1; echo "prepare rc=$?"; tail -4 $OUT/prepare.log
timeout 240 python3 -m pytest -q -x tests/models/test_graphs.py -p no:cacheprovider \
  -k "cuda_graphs_decode or emulated" 2>&1 | tail -6 | tee $OUT/pytest_graphs.log
G=""; grep -q " passed" $OUT/pytest_graphs.log && ! grep -q "failed\|error" $OUT/pytest_graphs.log || G="--no-cuda-graphs"
echo "peer bench flags: ${G:-graphs on}"
timeout ${PEER_TIMEOUT:-300} python3 bench/peer_loop.py --shape 1b --device cuda $G --out $OUT > $OUT/peer_loop.log 2>&1
echo "peer rc=$?"; grep -v -i warning $OUT/peer_loop.log | grep -v '^ \|^{$\|^}$' | head -20
python3 -c "import json; d=json.load(open('$OUT/peer_loop_1b_cuda.json')); print(d['ratios']); print(d['identical'])" 2>&1 | tail -2

# ---- .run10/c2.sh
# Run 10, call 2 (carry .dev1 .run10): the first part of the base GGUF.
set -euo pipefail
source .run10/env.sh; [ -f $K/data/agent.pt ] || { echo "call 1 did not run on this machine"; exit 3; }
cp .dev1/gguf.part1 $K/ && ls -la $K | head

# ---- .run10/c3.sh
# Run 10, call 3 (carry .dev2 .run10): the base from the GGUF; the AR half continued from the
# shipped second-run adapter to the diffusion half's 1,683 agent steps (963 more), same data.
set -uo pipefail
source .run10/env.sh; [ -f $K/gguf.part1 ] || { echo "call 2 did not run on this machine"; exit 3; }
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
cat $K/gguf.part1 .dev2/gguf.part2 > $K/base.gguf
( time python3 -c 'import sys; from dllmflow.models.base_import import import_gguf; import_gguf(sys.argv[1], sys.argv[2])' \
  $K/base.gguf $K/state/models/smollm2-135m ) > $OUT/import.log 2>&1; echo "import rc=$?"; tail -3 $OUT/import.log
python3 -m dllmflow.training.pair train --kind ar --base $K/state/models/smollm2-135m \
  --data $K/data/agent.pt --out $K/ar3 --init-adapter $K/ar --steps ${STEPS:-963} --lr 3e-4 \
  --max-seconds ${SECS:-400} > $OUT/ar3.log 2>&1; echo "train rc=$?"
grep -v -i warning $OUT/ar3.log | tail -4
tar -cf $OUT/ar3.tar -C $K ar3 && ls -la $OUT

# ---- .run10/ev.sh
# ev.sh HALF ADAPTER "SETS" TAU TAG: the shipped slot of HALF filled from /root/keep/ADAPTER, then
# 60 questions of each set, 60 episodes batched, into $OUT/gpu/gpu_SET_ADAPTER_TAG.*
K=/root/keep; C=dllmflow/checkpoints/smollm2-135m; mkdir -p $C/$1 $OUT/gpu
cp $K/$2/* $C/$1/
for s in $3; do
  t0=$(date +%s); tag=${s}_$2_$5
  timeout ${EVAL_TIMEOUT:-200} python3 -m dllmflow.models.evaluation --policy smollm2-135m/$1 \
    --corpus bench/evalsets/$s/corpus.jsonl --qa bench/evalsets/$s/questions.jsonl --questions 60 \
    --concurrency 60 --device cuda --tau $4 ${EXTRA:-} --out $OUT/gpu/gpu_$tag.json \
    --episodes-out $OUT/gpu/gpu_$tag.episodes.jsonl 2> $OUT/gpu/gpu_$tag.log
  echo "$tag rc=$? $(( $(date +%s) - t0 )) s $(grep -o '"accuracy": [0-9.]*\|"invalid_action_rate": [0-9.]*\|"p50_s": [0-9.]*' $OUT/gpu/gpu_$tag.json | tr '\n' ' ')"
done

# ---- .run10/c4.sh
# Run 10, call 4 (carry .run10): the continued AR half (ar3) and the shipped diffusion half (d6),
# 60 questions of each set, side by side on the GPU (d6 from a copy of the tree), CUDA graphs on.
set -uo pipefail
source .run10/env.sh; [ -f $K/ar3/adapter.safetensors ] || { echo "no ar3 adapter"; exit 3; }
rm -rf /tmp/t2 && mkdir /tmp/t2 && cp -r dllmflow bench .run10 /tmp/t2/
(cd /tmp/t2 && PYTHONPATH=$K/site:/tmp/t2 bash .run10/ev.sh diffusion d6 "reworded prose" 0.97 run10) &
bash .run10/ev.sh ar ar3 "reworded prose" 0.97 run10
wait
(cd $OUT && tar -czf gpu_run10.tgz gpu && rm -rf gpu); ls -la $OUT

# ---- .run10/c5.sh
# Run 10, call 5 (carry .run10): the real pair through bench/serving.py (in-process scheduler):
# bf16 at 1/4/16/32 concurrent with CUDA graphs and with eager passes; float32 with graphs at
# 1 and 32 (token identity).
set -uo pipefail
source .run10/env.sh
cp $K/ar3/* $C/ar/; cp $K/d6/* $C/diffusion/
timeout 300 python3 bench/serving.py --transport inprocess --device cuda --threads 4 \
  --ar-checkpoint $C/ar --diffusion-checkpoint $C/diffusion --weights auto --levels 1,4,16,32 \
  --cuda-graphs --name serving_real_pair_graphs_bf16 --out $OUT > $OUT/serving_bf16.log 2>&1; echo "bf16 rc=$?"
timeout 300 python3 bench/serving.py --transport inprocess --device cuda --threads 4 \
  --ar-checkpoint $C/ar --diffusion-checkpoint $C/diffusion --weights auto --levels 1,4,16,32 \
  --name serving_real_pair_eager_bf16 --out $OUT > $OUT/serving_eager.log 2>&1; echo "eager rc=$?"
timeout 200 python3 bench/serving.py --transport inprocess --device cuda --threads 4 --dtype float32 \
  --ar-checkpoint $C/ar --diffusion-checkpoint $C/diffusion --weights auto --levels 1,32 --max-new-tokens 64 \
  --cuda-graphs --name serving_real_pair_graphs_fp32 --out $OUT > $OUT/serving_fp32.log 2>&1; echo "fp32 rc=$?"
for f in $OUT/serving_real_pair_*.json; do python3 - "$f" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for name, b in d["backends"].items():
    for lv in b["levels"]:
        keys = ("concurrency", "tokens_per_s", "throughput_ratio", "identical_to_alone", "latency_p50_s")
        print(sys.argv[1].rsplit("/", 1)[-1], name, {k: lv[k] for k in keys})
PY
done
