#!/usr/bin/env bash
# The prepared GPU run of issue 6: the DeepSpeed engine (bf16, ZeRO 1) beside the torch engine, same
# network, same step, one GPU: WRN-28-10 Cut-MixMo, M = 2, b = 4, CIFAR-shaped synthetic data.
# DeepSpeed, hjson and pydantic travel as wheels in .whl/ (the device machine has no network):
#   OUT=results/gpu_deepspeed benchmarks/gpu_deepspeed.sh
# CPU dry run: DEPTH=10 WIDTH=1 SIZE=512 STEPS=2 OUT=/tmp/gd benchmarks/gpu_deepspeed.sh
set -uo pipefail
OUT=${OUT:-results/gpu_deepspeed}
DEPTH=${DEPTH:-28} WIDTH=${WIDTH:-10} SIZE=${SIZE:-8000} STEPS=${STEPS:-40} WARMUP=${WARMUP:-5}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import pydantic, deepspeed" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch, deepspeed; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__, 'cuda', torch.cuda.is_available())"
  python3 -m harness bench --set dataset=synthetic --set synthetic_size="$SIZE" --set synthetic_classes=100 \
      --set depth="$DEPTH" --set width="$WIDTH" --set method=cut_mixmo --set M=2 --set b=4 \
      --set engine=deepspeed --set zero_stage=1 --engine torch deepspeed --precision bf16 fp32 \
      --batch-size 64 256 --warmup "$WARMUP" --steps "$STEPS" --loader-steps 20 --no-reference --json "$OUT/engines.json"
} 2>&1 | tee "$OUT/log.txt"
