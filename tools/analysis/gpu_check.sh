#!/usr/bin/env bash
# One GPU, under 8 minutes, everything a reviewer of the scan kernels needs, printed (and copied to $OUT if set):
#   1. the ops tests compiled on the GPU (fp32/fp16/bf16 inputs, every backend path; VMAMBA_TEST_GPU=1),
#   2. the scan benchmark at batch 128: ms, GB/s and % of the HBM peak, fused op vs the unfused chain,
#   3. VMamba-T and vanilla-T against mmpretrain's Swin-T: inference and training img/s and peak memory.
#
#   bash tools/analysis/gpu_check.sh            # from the repository root, with the project installed
#
# Each step has its own time limit, so one slow step cannot take the others' time; the exit status is that of
# the first step that failed.
set -u
cd "$(dirname "$0")/../.."
out=${OUT:-$(mktemp -d)}
export PYTHONUNBUFFERED=1
status=0
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "=== $name ($(date +%H:%M:%S), limit ${limit}s)"
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc"
  [ "$status" -ne 0 ] || status=$rc
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
python -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'
step ops_tests 150 env VMAMBA_TEST_GPU=1 python -m pytest tests/ops -q -x -p no:cacheprovider
step bench_scan 120 python tools/analysis/bench_scan.py --batch 128 --dtypes bf16 --d-states 1 16 --no-ref
step models 180 python tools/analysis/benchmark.py tiny vanilla_tiny --compare swin --device cuda --batch 128 \
  --out "$out/benchmark.json"
echo "outputs in $out"
exit "$status"
