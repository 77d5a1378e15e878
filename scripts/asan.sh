#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer run (npm run test:asan): builds the native kernel
# checks and the addon with -fsanitize=address,undefined, then runs the kernel checks (default ISA,
# AVX2 capped, scalar), a range of the API fuzzer and a short training loop against the sanitized
# addon (node itself is not instrumented: the sanitizer runtimes are preloaded). Any report stops
# the process (halt_on_error), which the fuzzer counts as a crash and this script as a failure.
#   bash scripts/asan.sh [FUZZ_CASES]    (default 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-2000}
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1:alloc_dealloc_mismatch=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
t0=$SECONDS

echo "== native kernel checks under ASan+UBSan"
out=build-asan/native-test
mkdir -p "$out"
g++ -O1 -std=c++17 -pthread $san -Inative native/cpu/parallel.cc native/cpu/gemm*.cc \
  native/cpu/conv2d*.cc test/native/conv_gemm_test.cc -o "$out/conv_gemm_test"
"$out/conv_gemm_test" 2 | tail -1
RESNEXT_CPU_ISA=avx2 "$out/conv_gemm_test" 2 | tail -1
RESNEXT_CPU_ISA=scalar "$out/conv_gemm_test" 1 | tail -1

echo "== addon under ASan+UBSan ($((SECONDS - t0)) s)"
npx cmake-js compile --out build-asan --CDNAPI_VERSION=8 --CDRESNEXT_SANITIZE=address,undefined >build-asan/build.log 2>&1 ||
  { tail -30 build-asan/build.log; exit 1; }
# (grep reads nm's whole output: with pipefail, grep -q would stop early and nm fail on SIGPIPE.)
nm -D build-asan/Release/resnext.node > build-asan/symbols.txt
grep -q __asan_report build-asan/symbols.txt || { echo "asan: the addon is not instrumented"; exit 1; }
preload="$(g++ -print-file-name=libasan.so):$(g++ -print-file-name=libubsan.so)"
run() { LD_PRELOAD="$preload" RESNEXT_ADDON=build-asan/Release/resnext.node "$@"; }

echo "== training loop ($((SECONDS - t0)) s)"
run node -e "const a = require('./dist/native/addon'); if (!a.addonPath.includes('build-asan')) process.exit(1)"
run node test/memory/loop.js 30 tidy 30
run node test/memory/loop.js 30 gc 30

echo "== API fuzzer, $cases cases ($((SECONDS - t0)) s)"
run node test/fuzz/api-fuzz.js --from 0 --to "$cases" --batch 100
echo "asan: clean ($((SECONDS - t0)) s)"
