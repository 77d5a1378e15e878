#!/usr/bin/env bash
# npm run bench:ops -- our CPU conv kernels vs oneDNN on ResNeXt-50 32x4d shapes (batch 8).
# oneDNN (Debian libdnnl-dev) is installed here for the benchmark only; it is never a dependency
# of the package. Our kernel sources are compiled with the package's flags (-O3, no -march), so
# the run-time ISA selection is what users get; only the driver uses -march=native.
# Env: BENCH_REPS (default 10), RESNEXT_NUM_THREADS, RESNEXT_CPU_ISA, OMP_NUM_THREADS.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ ! -f /usr/include/oneapi/dnnl/dnnl.hpp ]; then
  echo "bench:ops: installing libdnnl-dev (oneDNN) for the benchmark"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get install -y libdnnl-dev || { $SUDO apt-get update && $SUDO apt-get install -y libdnnl-dev; }
fi

out=build/bench-ops
mkdir -p "$out" bench/results
objs=()
for src in native/cpu/parallel.cc native/cpu/gemm*.cc native/cpu/conv2d*.cc; do
  obj="$out/$(basename "${src%.cc}").o"
  g++ -std=c++17 -O3 -pthread -Inative -c "$src" -o "$obj" &
  objs+=("$obj")
done
g++ -std=c++17 -O3 -march=native -pthread -Inative -c bench/ops/bench_ops.cc -o "$out/bench_ops.o" &
wait
g++ -pthread "$out/bench_ops.o" "${objs[@]}" -ldnnl -o "$out/bench_ops"

threads="${RESNEXT_NUM_THREADS:-$(nproc)}"
RESNEXT_NUM_THREADS="$threads" OMP_NUM_THREADS="${OMP_NUM_THREADS:-$threads}" \
  "$out/bench_ops" "${BENCH_REPS:-10}" bench/results/ops.json
