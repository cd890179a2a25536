#!/usr/bin/env bash
# One-shot check on a GPU machine: build with CUDA kernels, check that CMake refuses a compiler whose
# libstdc++ breaks next to torch's, run the CUDA tests, then the population, throughput and
# catalog benchmarks on the GPU, as much as the time budget allows.
# Stages run in that order of priority, each capped so that the whole script ends within
# GPU_CHECK_BUDGET_S (default 560 s). Logs go to $OUT (default bench/results/gpu), at most
# 8 files. Needs python3 with torch (CUDA), scikit-build-core, pybind11, CMake, ninja, pytest and
# hypothesis; no network.
#
#   bash bench/gpu_check.sh            # from the repository root
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# the benchmarks' JSON, packed into one file at the end ($OUT holds at most 8)
export DEEPSTOCK_BENCH_OUT=${DEEPSTOCK_BENCH_OUT:-bench/results/gpu-json}
# -P for every python, xdist workers included: the source tree (which holds no compiled _C) stays
# off sys.path, so the installed build is what runs.
export PYTHONSAFEPATH=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-16}
# The system g++, whose libstdc++ is the one torch loads, as C++ and nvcc host compiler (CMake checks
# both). The GPU image's CXX and CUDAHOSTCXX (/opt/gcc, whose libstdc++ is a static archive) linked
# another libstdc++ into _C: every error an op raised then crashed the process in ostream code.
IMAGE_CXX=${CXX:-} IMAGE_CUDAHOSTCXX=${CUDAHOSTCXX:-}
if [ -x /usr/bin/g++ ]; then export CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++; fi
PY=${PYTHON:-python3}
DEADLINE=$((SECONDS + ${GPU_CHECK_BUDGET_S:-560}))
status=0

stage() { echo "== $1 ($(date +%T), $((DEADLINE - SECONDS)) s left)"; }
# capped SECONDS CMD...: run CMD for at most SECONDS, never past the deadline
capped() {
  local cap=$1; shift
  local left=$((DEADLINE - SECONDS - 5))
  ((left < cap)) && cap=$left
  if ((cap < 10)); then echo "skipped: no time left"; return 124; fi
  timeout --signal=INT --kill-after=10 "$cap" "$@"
}
# The pipelines below keep the stage's own exit code in PIPESTATUS[0].
check() { local rc=$1; [ "$rc" = 0 ] || { echo "  -> exit $rc"; status=1; }; }

stage "machine"
{ nvidia-smi; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
torch.cuda.get_device_name(0))"; } > "$OUT/machine.txt" 2>&1
tail -3 "$OUT/machine.txt"

stage "build"
if ! capped 240 $PY -m pip install --no-build-isolation --no-deps -Cbuild-dir=build/gpu . \
    > "$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"
  echo "build failed"
  exit 1
fi
$PY -c "import deepstock_fast as d; print(d.build_info())" | tee -a "$OUT/machine.txt"

stage "libstdc++ check"
# CMake must refuse compilers whose libstdc++ breaks next to torch's: configure (CUDA on) with the
# image's own CXX and CUDAHOSTCXX, expecting a refusal that names the fix.
if [ -n "$IMAGE_CXX$IMAGE_CUDAHOSTCXX" ] && [ "$IMAGE_CXX$IMAGE_CUDAHOSTCXX" != "$CXX$CUDAHOSTCXX" ]; then
  {
    echo "image CXX: $IMAGE_CXX, CUDAHOSTCXX: $IMAGE_CUDAHOSTCXX"
    cmake_bin=$($PY -c "import cmake; print(cmake.CMAKE_BIN_DIR + '/cmake')" 2>/dev/null || echo cmake)
    CXX=${IMAGE_CXX:-$CXX} CUDAHOSTCXX=${IMAGE_CUDAHOSTCXX:-$CUDAHOSTCXX} capped 90 "$cmake_bin" \
      -S . -B build/libstdcxx-check -DPython_EXECUTABLE="$(command -v $PY)" \
      -Dpybind11_DIR="$($PY -m pybind11 --cmakedir)" 2>&1 | grep -A12 "CMake Error\|check passed"
    echo "configure exit code with the image's compilers: ${PIPESTATUS[0]} (a refusal is non-zero)"
  } >> "$OUT/machine.txt" 2>&1
  tail -4 "$OUT/machine.txt"
else
  echo "no other compilers in this image" | tee -a "$OUT/machine.txt"
fi

stage "CUDA tests"
# The CUDA tests compare every op and env step on the GPU with the CPU path and the reference;
# GPU_CHECK_TESTS=all runs the whole suite instead (about 5 minutes with 8 workers).
if $PY -c "import xdist" 2>/dev/null; then par=(-n 8); else par=(); fi
if [ "${GPU_CHECK_TESTS:-cuda}" = all ]; then tests=(tests); else tests=(tests/test_cuda.py); fi
OMP_NUM_THREADS=2 capped 330 $PY -m pytest -q -rs -p no:cacheprovider "${par[@]}" "${tests[@]}" \
  2>&1 | tee "$OUT/tests.log" | tail -12
check "${PIPESTATUS[0]}"

stage "population benchmark"
# DS populations of up to 1024 members against single runs (setup, one member after another,
# takes a good part of the time at K = 1024); then PPO and DDPG populations
capped 170 $PY bench/population.py --device cuda --members 1 16 256 1024 --epochs 5 \
  --sequential 1 2>&1 | tee "$OUT/population.log" | tail -12
check "${PIPESTATUS[0]}"
capped 100 $PY bench/population.py --device cuda --algos ppo ddpg --members 1 16 64 \
  --rl-steps 8192 --sequential 1 2>&1 | tee "$OUT/population_rl.log" | tail -12
check "${PIPESTATUS[0]}"

stage "throughput benchmark"
capped 100 $PY bench/throughput.py --device cuda --log2-batch 16 20 22 --max-lead 1 4 \
  2>&1 | tee "$OUT/throughput.log" | tail -30
check "${PIPESTATUS[0]}"

stage "catalog benchmark"
# one DS + Base policy for a synthetic catalog of 1M SKUs with a time split, against the
# per-SKU baselines searched on the training period (data written by 16 processes)
capped 200 $PY bench/catalog.py --device cuda --skus 1000000 --workers 16 --epochs 100 \
  --batch-size 65536 --validation-skus 65536 --data-dir /tmp/catalog 2>&1 \
  | tee "$OUT/catalog.log" | tail -20
check "${PIPESTATUS[0]}"

tar czf "$OUT/results-json.tgz" -C "$DEEPSTOCK_BENCH_OUT" . 2>/dev/null
stage "done (status $status)"
exit $status
