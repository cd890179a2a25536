#!/usr/bin/env bash
# One-shot check on a GPU machine (about 5-8 minutes on an H100): build with CUDA kernels, run the
# whole test suite (the CUDA tests included) and the throughput benchmark on the GPU. Logs and JSON
# go to $OUT (default bench/results/gpu). Needs python3 with torch (CUDA), scikit-build-core,
# pybind11, CMake, ninja, pytest and hypothesis; no network.
#
#   bash bench/gpu_check.sh            # from the repository root
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-16}
PY=${PYTHON:-python3}
status=0

stage() { echo "== $1 ($(date +%T))"; }

stage "machine"
nvidia-smi | tee "$OUT/nvidia-smi.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

stage "build"
if ! $PY -m pip install --no-build-isolation --no-deps -Cbuild-dir=build/gpu . \
    > "$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"
  echo "build failed"
  exit 1
fi
# -P keeps the source tree (which holds no compiled _C) off sys.path: the installed build is used.
$PY -P -c "import deepstock_fast as d; print(d.build_info())" | tee "$OUT/build_info.txt"

stage "tests"
$PY -P -m pytest tests -q -rs -p no:cacheprovider 2>&1 | tee "$OUT/tests.log" | tail -25
[ "${PIPESTATUS[0]}" = 0 ] || status=1

stage "throughput"
$PY -P bench/throughput.py --device cuda --log2-batch 10 14 18 20 22 --max-lead 1 4 16 \
  2>&1 | tee "$OUT/throughput.log" | tail -40
[ "${PIPESTATUS[0]}" = 0 ] || status=1
cp bench/results/throughput-cuda-*.json "$OUT/" 2>/dev/null

stage "done (status $status)"
exit $status
