# The four device calls of the fifth run, as they ran (one H200, one session).
# .dev1/ carried: gguf.part1 (first 55,000,000 bytes of the base GGUF), episodes.jsonl.xz, tok.tar.xz
# (the tokenizer files of the imported base), .whl/ the wheels the device image lacks;
# .dev2/: the rest of the GGUF and the fourth run's diffusion adapter; .dev3/: the AR adapter.
# The calls ran back to back (the device machine keeps /root/keep only while it stays warm).

# ---- .dev1/c1.sh
# Call 1: wheels, tokenizer, data and the first part of the GGUF into /root/keep; turn examples.
set -euo pipefail
K=/root/keep; mkdir -p $K/site $K/tok $K/data
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $K/site .whl/*.whl
tar -xJf .dev1/tok.tar.xz -C $K/tok
cp .dev1/gguf.part1 $K/
xz -T16 -dc .dev1/episodes.jsonl.xz > $K/data/episodes.jsonl
export PYTHONPATH=$K/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv | tee $OUT/gpu.txt
( time python3 -m dllmflow.training.pair prepare --episodes $K/data/episodes.jsonl --base $K/tok \
    --out $K/data/agent.pt --workers 16 ) 2>&1 | tee $OUT/prepare.log
ls -la $K $K/data

# ---- .dev2/c2.sh
# Call 2: the base from the GGUF, then the diffusion half continued from the shipped adapter.
set -euo pipefail
K=/root/keep
[ -f $K/data/agent.pt ] || { echo "no turn examples: call 1 did not run on this machine"; exit 3; }
export PYTHONPATH=$K/site:$PWD PYTHONUNBUFFERED=1 DLLMFLOW_STATE_DIR=$K/state PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
cat $K/gguf.part1 .dev2/gguf.part2 > $K/base.gguf
sha256sum $K/base.gguf | tee $OUT/import.log
( time python3 -c 'import sys; from dllmflow.models.base_import import import_gguf; import_gguf(sys.argv[1], sys.argv[2])' \
  $K/base.gguf $K/state/models/smollm2-135m ) 2>&1 | tail -n 5 | tee -a $OUT/import.log
B=$K/state/models/smollm2-135m
python3 -m dllmflow.training.pair train --kind diffusion --base $B --data $K/data/agent.pt \
  --out $K/d5 --init-adapter .dev2/diffusion --steps ${STEPS:-440} \
  --lr 4e-4 --micro-batches 2 --max-seconds ${SECS:-480} 2>&1 | tee $OUT/diffusion5.log
tar -cf $OUT/d5.tar -C $K d5 && ls -la $OUT

# ---- .dev3/c3.sh
# Call 3: both halves on the two sets (60 q each), the diffusion half from call 2's adapter.
set -uo pipefail
K=/root/keep
[ -f $K/d5/adapter.safetensors ] || { echo "no adapter from call 2 on this machine"; exit 3; }
export PYTHONPATH=$K/site:$PWD PYTHONUNBUFFERED=1 DLLMFLOW_STATE_DIR=$K/state
C=dllmflow/checkpoints/smollm2-135m; mkdir -p $C/diffusion $C/ar
cp $K/d5/* $C/diffusion/; cp .dev3/ar/* $C/ar/
mkdir -p $OUT/gpu; t0=$(date +%s)
ev() { # half set tau tag
  timeout 90 python3 -m dllmflow.models.evaluation --policy smollm2-135m/$1 --corpus bench/evalsets/$2/corpus.jsonl \
    --qa bench/evalsets/$2/questions.jsonl --questions 60 --concurrency 60 --device cuda --tau $3 \
    --out $OUT/gpu/gpu_${2}_$4.json --episodes-out $OUT/gpu/gpu_${2}_$4.episodes.jsonl \
    2> $OUT/gpu/gpu_${2}_$4.log | tail -n 2; echo "$4 $2 done at $(( $(date +%s) - t0 )) s"; }
ev diffusion reworded 0.97 diffusion; ev diffusion prose 0.97 diffusion
ev ar reworded 0.9 ar; ev ar prose 0.9 ar
for s in reworded prose; do [ $(( $(date +%s) - t0 )) -lt 380 ] && ev diffusion $s 0.9 diffusion_tau0.9; done
cd $OUT && tar -czf gpu.tgz gpu && rm -rf gpu; ls -la $OUT

# ---- call 4 (one command line): 222 more steps from d5, then the diffusion half again
K=/root/keep; export PYTHONPATH=$K/site:$PWD PYTHONUNBUFFERED=1 DLLMFLOW_STATE_DIR=$K/state PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
python3 -m dllmflow.training.pair train --kind diffusion --base $K/state/models/smollm2-135m --data $K/data/agent.pt \
  --out $K/d6 --init-adapter $K/d5 --steps 230 --lr 2e-4 --micro-batches 2 --max-seconds 245 2>&1 | tee $OUT/diffusion6.log
tar -cf $OUT/d6.tar -C $K d6; C=dllmflow/checkpoints/smollm2-135m; mkdir -p $C/diffusion $C/ar
cp $K/d6/* $C/diffusion/; cp .dev3/ar/* $C/ar/
for s in reworded prose; do timeout 60 python3 -m dllmflow.models.evaluation --policy smollm2-135m/diffusion \
  --corpus bench/evalsets/$s/corpus.jsonl --qa bench/evalsets/$s/questions.jsonl --questions 60 --concurrency 60 \
  --device cuda --tau 0.97 --out $OUT/gpu6_${s}_diffusion.json --episodes-out $OUT/gpu6_${s}_diffusion.episodes.jsonl \
  2> $OUT/gpu6_${s}.log; done
