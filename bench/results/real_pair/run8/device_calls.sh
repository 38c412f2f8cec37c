# The device calls of the eighth run, as they ran (one H200, one machine kept warm between them).
# .dev4/: episodes.jsonl.xz (the fourth run's 33,000 generated episodes), tok.tar.xz (the base's
# tokenizer files); .whl/: gguf, jsonschema, pydantic, pydantic-settings and their wheels;
# .dev1/: the first 52,000,000 bytes of the base GGUF; .dev2/: the rest of it and the shipped
# (d6) diffusion adapter, with ev.sh (run7/device_calls.sh). The tree was copied without the
# shipped checkpoints, bench/results and docs (carry limit).

# ---- .dev4/c0.sh
# Run 8, call 0 (fresh machine): wheels and tokenizer into /root/keep; the fourth run's 33,000
# episodes prepared with each turn's role.
set -euo pipefail
K=/root/keep; mkdir -p $K/site $K/tok $K/data
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $K/site .whl/*.whl
tar -xJf .dev4/tok.tar.xz -C $K/tok
xz -T16 -dc .dev4/episodes.jsonl.xz > $K/data/episodes.jsonl
export PYTHONPATH=$K/site:$PWD PYTHONUNBUFFERED=1
( time python3 -m dllmflow.training.pair prepare --episodes $K/data/episodes.jsonl --base $K/tok \
    --out $K/data/agent.pt --workers 16 ) 2>&1 | tee $OUT/prepare.log
python3 -c "import torch, collections; s=torch.load('$K/data/agent.pt', weights_only=False); print(collections.Counter(s['roles']))" | tee -a $OUT/prepare.log

# ---- .dev1/c1.sh
# Run 8, call 1: the first part of the GGUF into /root/keep.
set -euo pipefail
K=/root/keep; [ -f $K/data/agent.pt ] || { echo "call 0 did not run on this machine"; exit 3; }
cp .dev1/gguf.part1 $K/ && ls -la $K

# ---- .dev2/c2.sh (ran as STEPS=400 SECS=370)
# Run 8, call 2: the base from the GGUF; d9 = d6 + agent steps with the planner's turns drawn
# three times per epoch, lr 1.5e-4.
set -uo pipefail
K=/root/keep; [ -f $K/data/agent.pt ] || { echo "call 1 did not run on this machine"; exit 3; }
export PYTHONPATH=$K/site:$PWD PYTHONUNBUFFERED=1 DLLMFLOW_STATE_DIR=$K/state PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
cat $K/gguf.part1 .dev2/gguf.part2 > $K/base.gguf
( time python3 -c 'import sys; from dllmflow.models.base_import import import_gguf; import_gguf(sys.argv[1], sys.argv[2])' \
  $K/base.gguf $K/state/models/smollm2-135m ) > $OUT/import.log 2>&1
mkdir -p $K/d6 && cp .dev2/diffusion/* $K/d6/
python3 -m dllmflow.training.pair train --kind diffusion --base $K/state/models/smollm2-135m --data $K/data/agent.pt \
  --out $K/d9 --init-adapter $K/d6 --steps ${STEPS:-440} --lr 1.5e-4 --micro-batches 2 \
  --oversample planner=3 --max-seconds ${SECS:-420} 2>&1 | tee $OUT/diffusion9.log | grep -v Warning
tar -cf $OUT/d9.tar -C $K d9

# ---- .dev2/c3.sh
# Run 8, call 3: d9 on 60 questions of each set (the baseline d6: run 7, same command).
set -uo pipefail
K=/root/keep; [ -f $K/d9/adapter.safetensors ] || { echo "call 2 did not run on this machine"; exit 3; }
export PYTHONPATH=$K/site:$PWD PYTHONUNBUFFERED=1 DLLMFLOW_STATE_DIR=$K/state
bash .dev2/ev.sh diffusion d9 "reworded prose" 0.97 run8
(cd $OUT && tar -czf gpu_d9.tgz gpu && rm -rf gpu)
