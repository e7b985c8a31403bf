#!/usr/bin/env bash
# The prepared GPU run of the grid-cost issue (not run yet: no device was lent to the session that wrote it).
#   OUT=results/grid_cost benchmarks/grid_cost/gpu_run.sh            # on a GPU machine, ~25 min in all
#   PHASES="rates pack" OUT=... benchmarks/grid_cost/gpu_run.sh      # a subset (rates, pack, step256, plan)
# 1. rates:   every shape of the width sweep alone (14 shapes)   -> $OUT/rates/<card>.csv
# 2. pack:    WRN-28-2 and 28-3, 1, 2, 4 and 8 at once            -> the same table (the packing gain)
# 3. step256: the batch-256 step: eager, compiled (default, max-autotune, reduce-overhead), channels_last on/off,
#             and the profile of the eager step, in one process per variant group
# 4. plan:    the width sweep's GPU-hour estimate from the measured table (resources.pack: auto)
# Copy $OUT/rates/*.csv into harness/bench/rates/ afterwards (shipped with the package): `harness run --dry-run` reads them there.
# CPU dry run of the whole script (tiny settings): CPU_DRY_RUN=1 OUT=/tmp/gc benchmarks/grid_cost/gpu_run.sh
set -uo pipefail
OUT=${OUT:-results/grid_cost}
PHASES=${PHASES:-rates pack step256 plan}
SECONDS_EACH=${SECONDS_EACH:-10} WARMUP=${WARMUP:-8}
HERE=benchmarks/grid_cost
EXTRA=()
if [[ -n "${CPU_DRY_RUN:-}" ]]; then
    SECONDS_EACH=1 WARMUP=1
    EXTRA=(--set depth=10 --set compile=false --set precision=fp32 --set synthetic_size=256)
fi
mkdir -p "$OUT/rates"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HARNESS_RATES_DIR="$OUT/rates"
if ! python3 -c "import pydantic" 2>/dev/null; then  # the device machines have no network: wheels travel in .whl/
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi";
  nvidia-smi -q 2>/dev/null | grep -i -m2 "compute mode\|MIG Mode" ;
  command -v nvidia-cuda-mps-control || echo "no nvidia-cuda-mps-control (packed trials time-slice)";
  python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } | tee "$OUT/machine.txt"
started_mps=
if command -v nvidia-cuda-mps-control >/dev/null && [[ ! -e "${CUDA_MPS_PIPE_DIRECTORY:-/tmp/nvidia-mps}/control" ]]; then
    nvidia-cuda-mps-control -d && started_mps=1 && echo "CUDA MPS daemon started for the packed measurements"
fi
{
for phase in $PHASES; do
    echo "=== $phase  $(date +%H:%M:%S)"
    case $phase in
    rates) python3 -m harness bench --suite "$HERE/width_shapes.yaml" --pack 1 --seconds "$SECONDS_EACH" \
               --warmup "$WARMUP" --rates-dir "$OUT/rates" "${EXTRA[@]}" ;;
    pack)  python3 -m harness bench --suite "$HERE/small_widths.yaml" --pack 1 2 4 8 --seconds "$SECONDS_EACH" \
               --warmup "$WARMUP" --rates-dir "$OUT/rates" "${EXTRA[@]}" ;;
    step256)
        for cl in true false; do
            python3 -m harness bench --set dataset=synthetic --set synthetic_size=8000 --set synthetic_classes=100 \
                --set depth=28 --set width=10 --set method=cut_mixmo --set M=2 --set b=4 --set channels_last=$cl \
                --batch-size 256 --precision bf16 --compile false true max-autotune reduce-overhead --no-reference \
                --warmup "$WARMUP" --steps 30 --loader-steps 20 --json "$OUT/step256_channels_last_$cl.json" "${EXTRA[@]}"
        done
        python3 benchmarks/profile_step.py --set depth=28 --set width=10 --set batch_size=256 --set precision=bf16 \
            --steps 5 --rows 30 > "$OUT/profile256.txt" 2>&1; head -c 4000 "$OUT/profile256.txt" ;;
    plan)
        sed 's/^resources:.*/resources: {cpus: 8, gpus: 1, pack: auto}/' suites/cifar100_width_sweep.yaml > "$OUT/width_sweep_packed.yaml"
        python3 -m harness run "$OUT/width_sweep_packed.yaml" --dry-run 2>&1 | sed -n '1,20p' ;;
    esac
done
} 2>&1 | tee "$OUT/log.txt"
if [[ -n "$started_mps" ]]; then echo quit | nvidia-cuda-mps-control; fi
