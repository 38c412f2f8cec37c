# The device calls of the sixth run, as they ran (one H200, one session). Calls 1-3 and 5 ran
# back to back on one machine (/root/keep lives only while it stays warm); call 4 (the same
# evaluations) failed at once (pydantic missing: .whl gained its wheels for call 5). Calls 6-7
# ran on a fresh machine with the final decoding code; their scripts are the last two below.
# .dev1/: the first 52,000,000 bytes of the base GGUF, episodes.jsonl.xz (the fourth run's
# generator command, 33,000 episodes), the base's tokenizer files; .whl/: gguf, jsonschema,
# pydantic, pydantic-settings and their wheels; .dev2/: the rest of the GGUF, the shipped (d6)
# diffusion adapter; .dev3/: the AR adapter.

# ---- call 1: wheels, tokenizer, data and the first part of the GGUF into /root/keep; turn examples
set -euo pipefail
K=/root/keep; mkdir -p $K/site $K/tok $K/data
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $K/site .whl/*.whl
tar -xJf .dev1/tok.tar.xz -C $K/tok
cp .dev1/gguf.part1 $K/
xz -T16 -dc .dev1/episodes.jsonl.xz > $K/data/episodes.jsonl
export PYTHONPATH=$K/site:$PWD PYTHONUNBUFFERED=1
( time python3 -m dllmflow.training.pair prepare --episodes $K/data/episodes.jsonl --base $K/tok \
    --out $K/data/agent.pt --workers 16 ) 2>&1 | tee $OUT/prepare.log

# ---- call 2 (STEPS=470 SECS=450): the base from the GGUF, then d7 = d6 + 470 steps at 3e-4
K=/root/keep
export PYTHONPATH=$K/site:$PWD PYTHONUNBUFFERED=1 DLLMFLOW_STATE_DIR=$K/state PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
cat $K/gguf.part1 .dev2/gguf.part2 > $K/base.gguf
cp -r .dev2/diffusion $K/d6
sha256sum $K/base.gguf | tee $OUT/import.log
( time python3 -c 'import sys; from dllmflow.models.base_import import import_gguf; import_gguf(sys.argv[1], sys.argv[2])' \
  $K/base.gguf $K/state/models/smollm2-135m ) 2>&1 | tail -n 5 | tee -a $OUT/import.log
python3 -m dllmflow.training.pair train --kind diffusion --base $K/state/models/smollm2-135m --data $K/data/agent.pt \
  --out $K/d7 --init-adapter $K/d6 --steps ${STEPS:-450} \
  --lr 3e-4 --micro-batches 2 --max-seconds ${SECS:-440} 2>&1 | tee $OUT/diffusion7.log
tar -cf $OUT/d7.tar -C $K d7

# ---- call 3 (STEPS=420 SECS=370): d8 = d7 + 414 steps at 1.5e-4 (its evaluations failed: no pydantic)
# Call 3: d8 = d7 + more steps at a lower rate, then the diffusion half (d8) on both sets.
set -uo pipefail
K=/root/keep
[ -f $K/d7/adapter.safetensors ] || { echo "no adapter from call 2 on this machine"; exit 3; }
export PYTHONPATH=$K/site:$PWD PYTHONUNBUFFERED=1 DLLMFLOW_STATE_DIR=$K/state PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
python3 -m dllmflow.training.pair train --kind diffusion --base $K/state/models/smollm2-135m --data $K/data/agent.pt \
  --out $K/d8 --init-adapter $K/d7 --steps ${STEPS:-450} --lr 1.5e-4 --micro-batches 2 \
  --max-seconds ${SECS:-400} 2>&1 | tee $OUT/diffusion8.log
tar -cf $OUT/d8.tar -C $K d8
cp -r .dev3/ar $K/ar
bash .dev3/ev.sh d8 "reworded prose" 0.97 hold
ls -la $OUT

# ---- .dev3/ev.sh
# ev.sh ADAPTER "SETS" TAU hold|nohold|ar: the shipped policy slot filled from /root/keep, then
# 60 questions of each set, 60 episodes batched; results into $OUT/gpu.tgz (appended per call).
K=/root/keep; C=dllmflow/checkpoints/smollm2-135m; mkdir -p $C/diffusion $C/ar $OUT/gpu
cp $K/ar/* $C/ar/; [ "$1" = ar ] || cp $K/$1/* $C/diffusion/
half=diffusion; [ "$1" = ar ] && half=ar
flag=""; [ "$4" = nohold ] && flag=--no-hold-repeats
for s in $2; do
  t0=$(date +%s); tag=${s}_$1_$4
  timeout ${EVAL_TIMEOUT:-100} python3 -m dllmflow.models.evaluation --policy smollm2-135m/$half \
    --corpus bench/evalsets/$s/corpus.jsonl --qa bench/evalsets/$s/questions.jsonl --questions 60 \
    --concurrency 60 --device cuda --tau $3 $flag --out $OUT/gpu/gpu_$tag.json \
    --episodes-out $OUT/gpu/gpu_$tag.episodes.jsonl 2> $OUT/gpu/gpu_$tag.log
  echo "$tag rc=$? $(( $(date +%s) - t0 )) s $(grep -o '"accuracy": [0-9.]*' $OUT/gpu/gpu_$tag.json)"
done
(cd $OUT && tar -czf gpu_$1_$4.tgz gpu && rm -rf gpu)

# ---- call 5 (call 4 was the same without the wheels)
# Call 5: the missing wheels (pydantic for the settings the loader reads), then every evaluation.
set -uo pipefail
K=/root/keep; [ -f $K/d8/adapter.safetensors ] || { echo "no adapter from call 3 on this machine"; exit 3; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $K/site .whl/*.whl
export PYTHONPATH=$K/site:$PWD PYTHONUNBUFFERED=1 DLLMFLOW_STATE_DIR=$K/state
bash .dev3/ev.sh d8 "reworded prose" 0.97 hold
bash .dev3/ev.sh ar "reworded prose" 0.9 ar
bash .dev3/ev.sh d8 "reworded prose" 0.97 nohold
bash .dev3/ev.sh d6 "reworded prose" 0.97 hold
ls -la $OUT

# ---- call 6 (fresh machine)
# Call 1 (fresh machine): wheels and the first part of the GGUF into /root/keep.
set -euo pipefail
K=/root/keep; mkdir -p $K/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $K/site .whl/*.whl
cp .dev1/gguf.part1 $K/ && ls -la $K

# ---- call 7
# Call 2: the base from the GGUF; the shipped pair's diffusion half (d6) with the turn prefix after
# the assistant header (the repair's fix) and the repeat hold, 60 questions of each set.
set -uo pipefail
K=/root/keep; [ -f $K/gguf.part1 ] || { echo "call 1 did not run on this machine"; exit 3; }
export PYTHONPATH=$K/site:$PWD PYTHONUNBUFFERED=1 DLLMFLOW_STATE_DIR=$K/state
cat $K/gguf.part1 .dev2/gguf.part2 > $K/base.gguf
python3 -c 'import sys; from dllmflow.models.base_import import import_gguf; import_gguf(sys.argv[1], sys.argv[2])' \
  $K/base.gguf $K/state/models/smollm2-135m > $OUT/import.log 2>&1
C=dllmflow/checkpoints/smollm2-135m; mkdir -p $C/diffusion; cp .dev2/diffusion/* $C/diffusion/
for s in reworded prose; do t0=$(date +%s)
  timeout 80 python3 -m dllmflow.models.evaluation --policy smollm2-135m/diffusion \
    --corpus bench/evalsets/$s/corpus.jsonl --qa bench/evalsets/$s/questions.jsonl --questions 60 \
    --concurrency 60 --device cuda --tau 0.97 --out $OUT/gpu_${s}_d6_fixed.json \
    --episodes-out $OUT/gpu_${s}_d6_fixed.episodes.jsonl 2> $OUT/gpu_${s}_d6_fixed.log
  echo "$s rc=$? $(( $(date +%s) - t0 )) s"; grep -o '"accuracy": [0-9.]*\|"invalid[a-z_]*": [0-9.]*\|"repaired_turns": [0-9]*' $OUT/gpu_${s}_d6_fixed.json
done
