#!/usr/bin/env bash
# Builds and runs the native kernel checks: default ISA with 2, 1 and 3 threads, AVX2 capped, then
# the portable fallback (RESNEXT_CPU_ISA=scalar).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=build/native-test
mkdir -p "$out"
g++ -O2 -std=c++17 -pthread -Wall -Inative native/cpu/parallel.cc native/cpu/gemm*.cc \
  native/cpu/conv2d*.cc test/native/conv_gemm_test.cc -o "$out/conv_gemm_test"
"$out/conv_gemm_test" 2
"$out/conv_gemm_test" 1 | tail -1
"$out/conv_gemm_test" 3 | tail -1
RESNEXT_CPU_ISA=avx2 "$out/conv_gemm_test" 2 | tail -1
RESNEXT_CPU_ISA=scalar "$out/conv_gemm_test" 2 | tail -1
