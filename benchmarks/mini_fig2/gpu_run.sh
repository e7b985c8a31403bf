#!/usr/bin/env bash
# Issue 8's sweep on one GPU machine that has PyTorch but no network, Ray or MLflow (the device tool's):
# pydantic travels as wheels in .whl/, the data as lossless WebP in .mini_fig2_data/ (pack_data.py).
#   OUT=/tmp/mf2 BUDGET=540 benchmarks/mini_fig2/gpu_run.sh
# CPU dry run: EXTRA='--probe-steps 5 --max-epochs 2 --set compile=false --set train_subset=128 ...'
# Then, here: untar $OUT/results_*.tar.gz into results/ and `harness report suites/cifar100_mini_fig2.yaml`.
set -uo pipefail
OUT=${OUT:-results/mini_fig2_gpu} BUDGET=${BUDGET:-540}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import pydantic" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
        .whl/pydantic*.whl .whl/annotated_types*.whl .whl/typing_inspection*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  nproc; python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__)"; } | tee "$OUT/machine.txt"
python3 benchmarks/mini_fig2/pack_data.py unpack .mini_fig2_data /tmp/data/cifar100 || exit 1

# CUDA MPS lets the 21 processes' small kernels run side by side; without it they time-slice the GPU.
# Kept only if a CUDA program runs under it.
if command -v nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d; then
    if timeout 60 python3 -c "import torch; x = torch.ones(256, 256, device='cuda'); print('MPS ok', float((x @ x).sum()))"; then
        echo "MPS: on" | tee -a "$OUT/machine.txt"
    else
        echo quit | nvidia-cuda-mps-control; sleep 2; echo "MPS: failed, off" | tee -a "$OUT/machine.txt"
    fi
else
    echo "MPS: not available" | tee -a "$OUT/machine.txt"
fi
python3 benchmarks/mini_fig2/gpu_run.py "${SUITE:-suites/cifar100_mini_fig2.yaml}" --data-dir /tmp/data --out "$OUT" \
    --budget-s "$((BUDGET - SECONDS))" ${EXTRA:-}  # EXTRA: e.g. a CPU dry run's --set overrides
