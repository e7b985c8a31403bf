#!/usr/bin/env bash
# The prepared GPU run of issue 5: `harness bench` for WRN-28-10 Cut-MixMo, M = 2, b = 4, against the
# reference pipeline in the same process. Made for the device tool's machines (no network: pydantic,
# missing there, is carried as wheels in .whl/); runs anywhere with a GPU:
#   OUT=results/gpu_bench benchmarks/gpu_bench.sh
# CIFAR-shaped synthetic data (32 px, 100 classes): the real files do not travel to the device
# machine, and throughput does not depend on pixel values. Smaller settings for a CPU dry run:
#   DEPTH=10 WIDTH=1 SIZE=512 STEPS=2 LOADER_STEPS=5 WORKERS=2 OUT=/tmp/gb benchmarks/gpu_bench.sh
set -uo pipefail
OUT=${OUT:-results/gpu_bench}
DEPTH=${DEPTH:-28} WIDTH=${WIDTH:-10} SIZE=${SIZE:-8000} STEPS=${STEPS:-50} WARMUP=${WARMUP:-5}
LOADER_STEPS=${LOADER_STEPS:-200} WORKERS=${WORKERS:-10}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import pydantic" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi";
  python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } | tee "$OUT/machine.txt"

bench() {  # name, then harness bench arguments
    local name=$1; shift
    echo "=== $name"
    python3 -m harness bench --set dataset=synthetic --set synthetic_size="$SIZE" --set synthetic_classes=100 \
        --set synthetic_resolution=32 --set depth="$DEPTH" --set width="$WIDTH" --set method=cut_mixmo --set M=2 \
        --set b=4 --warmup "$WARMUP" --steps "$STEPS" --loader-steps "$LOADER_STEPS" --json "$OUT/$name.json" "$@"
}
{
# 0. no host synchronisation inside a training step, for every method
python3 benchmarks/sync_check.py
# 1. the reference pipeline (authors' way, WORKERS loader workers) against the eager lean step, batch 64
bench eager --batch-size 64 --precision fp32 bf16 --compile false --reference-workers "$WORKERS"
# 2. torch.compile, batch 64 and 256 (bf16, channels_last)
bench compiled --batch-size 64 256 --precision bf16 --compile false true --no-reference
# 3. CUDA graphs through torch.compile's reduce-overhead mode
bench graphs --batch-size 64 256 --precision bf16 --compile reduce-overhead --no-reference
# 4. where the time of a bf16 eager step at batch 256 goes
python3 benchmarks/profile_step.py --set depth="$DEPTH" --set width="$WIDTH" --set batch_size=256 --set precision=bf16 \
    --steps 5 --rows 30 > "$OUT/profile.txt" 2>&1; head -c 6000 "$OUT/profile.txt"
} 2>&1 | tee "$OUT/log.txt"
