# The device calls of the seventh run, as they ran (one H200, one session). .dev1/: the first
# 52,000,000 bytes of the base GGUF; .whl/: gguf, jsonschema, pydantic, pydantic-settings and
# their wheels; .dev2/: the rest of the GGUF, the shipped (d6) diffusion adapter, ev.sh; .dev3/:
# the AR adapter, ev.sh. Calls 1-3 ran back to back on one machine, 4-6 on a second one, 7-8 on
# the same second one (still warm). /root/keep lives only while a machine stays warm.

# ---- call 1 and 4 and 7 (.dev1/c1.sh): wheels and the first part of the GGUF into /root/keep
set -euo pipefail
K=/root/keep; mkdir -p $K/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $K/site .whl/*.whl
cp .dev1/gguf.part1 $K/ && ls -la $K

# ---- ev.sh HALF ADAPTER "SETS" TAU TAG (as .dev2/ev.sh and .dev3/ev.sh)
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

# ---- call 2: the base, then the shipped diffusion half on both sets (files tagged `spelling` on
# the machine, renamed here: d6_spelling -> d6_tau097 in call 2, d6_tau099 in call 3, ar_spelling -> ar)
set -uo pipefail
K=/root/keep; [ -f $K/gguf.part1 ] || { echo "call 1 did not run on this machine"; exit 3; }
export PYTHONPATH=$K/site:$PWD PYTHONUNBUFFERED=1 DLLMFLOW_STATE_DIR=$K/state
cat $K/gguf.part1 .dev2/gguf.part2 > $K/base.gguf
python3 -c 'import sys; from dllmflow.models.base_import import import_gguf; import_gguf(sys.argv[1], sys.argv[2])' \
  $K/base.gguf $K/state/models/smollm2-135m > $OUT/import.log 2>&1
mkdir -p $K/d6 && cp .dev2/diffusion/* $K/d6/
bash .dev2/ev.sh diffusion d6 "reworded prose" 0.97 spelling

# ---- call 3: the AR half on both sets; the diffusion half at tau 0.99 (gpu_reworded_d6_tau099);
# the grouped-query decode launch sweep with the old split rule (its files did not come back:
# bench/results/kernels_notes.md quotes its printed lines)
bash .dev3/ev.sh ar ar "reworded prose" 0.97 spelling
bash .dev3/ev.sh diffusion d6 "reworded" 0.99 spelling
timeout 240 python3 bench/kernels.py --quick --tune decode-gqa --out $OUT/k > $OUT/k/kernels_tune.log 2>&1

# ---- call 5 (second machine, after its call 4 = call 1): the base again, then left-to-right commits
# the import as in call 2, then:
EXTRA="--planner-commit-order left_to_right" bash .dev2/ev.sh diffusion d6 "reworded prose" 0.97 planner_l2r
EXTRA="--commit-order left_to_right" bash .dev2/ev.sh diffusion d6 "reworded" 0.97 l2r

# ---- call 6: the new split rule (bench/results/kernels_gqa_splits_h200.*), the decode tests on the GPU
export PYTHONPATH=/root/keep/site:$PWD PYTHONUNBUFFERED=1
timeout 300 python3 bench/kernels.py --quick --tune decode-gqa --out $OUT > $OUT/kernels_tune.log 2>&1
timeout 200 python3 -m pytest -q -x tests/kernels/test_attention.py -k "decode" -p no:cacheprovider

# ---- call 8 (after call 7 = call 1): the import as in call 2, then
EXTRA="--commit-order left_to_right" bash .dev2/ev.sh diffusion d6 "prose" 0.97 l2r
EXTRA="--commit-order left_to_right" bash .dev2/ev.sh diffusion d6 "reworded" 0.9 l2r_tau09
