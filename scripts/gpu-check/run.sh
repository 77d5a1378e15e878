#!/usr/bin/env bash
# The whole GPU check in one command, for the GPU test machine (no network, npm or pip; see
# /work/shared/device/README.md). scripts/gpu-check/stage.sh puts everything it needs into one
# folder and prints the command; run.sh works from that folder (or from a checkout).
#
#   GPU_CHECK_OUT=<dir> bash scripts/gpu-check/run.sh
#
# 1. finds Node: $GPU_CHECK_NODE, else the node-*.xz staged beside it (unpacked once into
#    ${GPU_CHECK_NODE_DIR:-/tmp}), else node on PATH, else ../shared/device/node-*.xz;
# 2. builds libresnext_cuda.so there (system CUDA 13, cuDNN 9.14, cuBLAS, the carried
#    cudnn-frontend headers) into its own build folder, the full log in $OUT/build.log;
# 3. runs the suites of check.js, each case with its own time limit and a start line before it,
#    a suite that times out or loses the CUDA context resumed after the case that did;
#    ops (every op against the CPU), bottleneck (PyTorch side by side), resnext50 (a training
#    step in fp32 and bf16 against PyTorch, memory() after steps 4 and 13), big (> 2^31
#    elements), oom (a real out-of-memory mid-step, then a good step), sanitizer (the op cases
#    under compute-sanitizer memcheck, autotuning off);
# 4. writes $OUT/summary.json and prints the summary last.
# Everything goes to $OUT/log.txt as well; the whole stays under GPU_CHECK_BUDGET_S (470 s).
# GPU_CHECK_DRY_RUN=1 does all of it on the CPU (no build, no sanitizer; CI runs it).
# GPU_CHECK_SUITES="ops bottleneck" runs only those suites.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
T0=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET_S:-470}
OUT=${GPU_CHECK_OUT:-$ROOT/.device/gpu-check-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export GPU_CHECK_OUT=$OUT
# Exchange files with PyTorch (over a GB at batch 64) go here, not into OUT, and are removed at the end.
export GPU_CHECK_SCRATCH=${GPU_CHECK_SCRATCH:-${TMPDIR:-/tmp}/resnext-gpu-check-$$}
trap 'rm -rf "$GPU_CHECK_SCRATCH"' EXIT
exec > >(tee -a "$OUT/log.txt") 2>&1
DRY=${GPU_CHECK_DRY_RUN:-0}
export GPU_CHECK_DRY_RUN=$DRY

say() { printf 'gpu-check: %s\n' "$*"; }
die() { say "ERROR: $*"; exit 2; }
elapsed() { echo $(($(date +%s) - T0)); }
left() { echo $((BUDGET - $(elapsed))); }
phase() { printf '{"phase":"%s","seconds":%s,"dryRun":%s}\n' "$1" "$2" "$([ "$DRY" = 1 ] && echo true || echo false)" >>"$OUT/phases.jsonl"; }
result() { # suite case status detail
  printf '{"suite":"%s","case":"%s","status":"%s","ms":0,"detail":"%s"}\n' "$1" "$2" "$3" "$(printf '%s' "$4" | tr '"\\\n' "'/ ")" >>"$OUT/results.jsonl"
}
say "start $(date -u +%FT%TZ) in $ROOT, output in $OUT, budget ${BUDGET} s$([ "$DRY" = 1 ] && echo ', DRY RUN (CPU only)')"

# ---------------------------------------------------------------- Node (finding 1)
# (Not $NODE: npm and npx set that to their own node.)
NODE=${GPU_CHECK_NODE:-}
if [ -z "$NODE" ]; then
  xz_file=""
  for f in "$ROOT"/node-v*-linux-x64.xz "$ROOT"/../shared/device/node-v*-linux-x64.xz /work/shared/device/node-v*-linux-x64.xz; do
    if [ -f "$f" ]; then xz_file=$f; break; fi
  done
  if [ -n "$xz_file" ]; then
    command -v xz >/dev/null || die "xz is needed to unpack $xz_file"
    base=$(basename "$xz_file" .xz)
    NODE=${GPU_CHECK_NODE_DIR:-/tmp}/resnext-$base-$(stat -c %s "$xz_file")
    if [ ! -x "$NODE" ]; then
      xz -dc "$xz_file" >"$NODE.partial.$$" && chmod +x "$NODE.partial.$$" && mv "$NODE.partial.$$" "$NODE" ||
        die "could not unpack $xz_file into $NODE"
    fi
  elif command -v node >/dev/null; then
    NODE=$(command -v node)
  else
    die "no Node.js: set GPU_CHECK_NODE, stage node-*-linux-x64.xz beside this checkout (stage.sh does), or put node on PATH"
  fi
fi
"$NODE" --version >/dev/null 2>&1 || die "$NODE does not run"
say "node $NODE $("$NODE" --version); $(cmake --version 2>/dev/null | head -1 || echo 'no cmake'); $(nvcc --version 2>/dev/null | tail -1 || echo 'nvcc not on PATH')"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader 2>/dev/null | sed 's/^/gpu-check: nvidia-smi: /' || say "nvidia-smi not available"

[ -f dist/index.js ] || die "dist/index.js is missing (npm run build:ts, then stage)"
[ -f build/Release/resnext.node ] || die "build/Release/resnext.node is missing (build the CPU addon, then stage)"
[ -d node_modules/node-gyp-build ] || die "node_modules/node-gyp-build is missing (stage.sh copies it)"

# ---------------------------------------------------------------- build
export RESNEXT_CUDA_AUTOTUNE_LOG=$OUT/autotune.jsonl
export RESNEXT_CUDA_PLAN_CACHE=$OUT/conv-plans.tsv
# Per-graph autotuning budget for this run (the library's default is 1500 ms): about 130 graphs
# must fit in the 8 minutes; the plan cache makes the next run skip tuning altogether.
export RESNEXT_CUDA_AUTOTUNE_BUDGET_MS=${RESNEXT_CUDA_AUTOTUNE_BUDGET_MS:-700}
# And per process (each suite is one): beyond this, heuristics only. A build can overshoot the
# per-graph budget by one runtime compilation, so only this bounds the total.
export RESNEXT_CUDA_AUTOTUNE_TOTAL_MS=${RESNEXT_CUDA_AUTOTUNE_TOTAL_MS:-60000}
# A plan cache from an earlier run (stage.sh carries .device/plan-cache/conv-plans.tsv) seeds this one.
if [ -f "$ROOT/plan-cache/conv-plans.tsv" ] && [ ! -f "$RESNEXT_CUDA_PLAN_CACHE" ]; then
  cp "$ROOT/plan-cache/conv-plans.tsv" "$RESNEXT_CUDA_PLAN_CACHE"
  say "plan cache seeded with $(wc -l <"$RESNEXT_CUDA_PLAN_CACHE") engine choices from an earlier run"
fi
t=$(date +%s)
if [ "$DRY" = 1 ]; then
  say "dry run: CUDA library not built"
else
  FE=$ROOT/cudnn-frontend/include
  [ -f "$FE/cudnn_frontend.h" ] || FE=$ROOT/.device/cudnn-frontend/include
  [ -f "$FE/cudnn_frontend.h" ] || die "cudnn-frontend headers missing (stage.sh copies .device/cudnn-frontend/include)"
  export RESNEXT_CUDNN_FRONTEND_INCLUDE=$FE
  # A build folder of its own: a CMake cache configured on the CPU machine must not be reused.
  export RESNEXT_CUDA_BUILD_DIR=${RESNEXT_CUDA_BUILD_DIR:-$ROOT/build-cuda-device}
  export RESNEXT_CUDA_JOBS=${RESNEXT_CUDA_JOBS:-16}
  export RESNEXT_CUDA_ARCHS=${RESNEXT_CUDA_ARCHS:-90-real}
  say "start build (log: $OUT/build.log)"
  if ! "$NODE" scripts/build-cuda.js >"$OUT/build.log" 2>&1; then
    say "BUILD FAILED after $(($(date +%s) - t)) s; first errors, then the end of the log:"
    grep -n -m 12 -i 'error' "$OUT/build.log" | cut -c1-400
    tail -n 25 "$OUT/build.log" | cut -c1-400
    phase build $(($(date +%s) - t))
    result build "build libresnext_cuda.so" error "build failed, see build.log"
    "$NODE" scripts/gpu-check/summary.js "$OUT"
    exit 1
  fi
  grep -E 'resnext CUDA:' "$OUT/build.log" | sed 's/^/gpu-check: /'
  export RESNEXT_CUDA_LIBRARY=$RESNEXT_CUDA_BUILD_DIR/libresnext_cuda.so
fi
phase build $(($(date +%s) - t))
say "build took $(($(date +%s) - t)) s"

# ---------------------------------------------------------------- suites
run_suite() { # name default_limit [prefix command...]: resumes after timeouts and lost contexts
  local name=$1 limit=$2
  shift 2
  local as=$name tries=0 rc=0 args=()
  if [ "$name" = sanitizer ]; then as=sanitizer; name=ops; fi
  local t=$(date +%s)
  while :; do
    local budget_left=$(($(left) - 15))
    [ $budget_left -gt $limit ] && budget_left=$limit
    if [ $budget_left -lt 20 ]; then
      say "skip $as: only $(left) s of the budget left"
      result "$as" "(suite)" timeout "not run: the time budget was spent"
      break
    fi
    args=(--suite "$name" --as "$as")
    [ $tries -gt 0 ] && args+=(--resume)
    say "start suite $as (limit ${budget_left} s, attempt $((tries + 1)))"
    timeout --kill-after=5 "$budget_left" "$@" "$NODE" scripts/gpu-check/check.js "${args[@]}"
    rc=$?
    tries=$((tries + 1))
    case $rc in
      0 | 1) break ;;
      3 | 137) [ $tries -lt 4 ] && { say "suite $as ended with $rc (context lost or a case timed out): resuming"; continue; } ;;
      124) result "$as" "(suite)" timeout "the suite passed its limit of ${budget_left} s" ;;
      *) result "$as" "(suite)" error "check.js exited with $rc" ;;
    esac
    break
  done
  phase "suite:$as" $(($(date +%s) - t))
  return 0
}

SUITES=${GPU_CHECK_SUITES:-ops bottleneck resnext50 big oom sanitizer}
t_check=$(date +%s)
for s in $SUITES; do
  case $s in
    ops) run_suite ops 100 ;;
    bottleneck) run_suite bottleneck 90 ;;
    resnext50) run_suite resnext50 180 ;;
    big) run_suite big 40 ;;
    oom) run_suite oom 60 ;;
    selftest) run_suite selftest 40 ;;
    sanitizer)
      if [ "$DRY" = 1 ]; then
        say "dry run: sanitizer pass replaced by the op cases with autotuning off"
        RESNEXT_CUDA_AUTOTUNE=0 RESNEXT_GPU_CHECK_TRAIN=0 run_suite sanitizer 60 env
      else
        SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
        if [ ! -x "$SAN" ]; then
          result sanitizer "(suite)" error "compute-sanitizer not found"
        else
          RESNEXT_CUDA_AUTOTUNE=0 RESNEXT_GPU_CHECK_TRAIN=0 GPU_CHECK_LIMIT_SCALE=4 run_suite sanitizer 150 \
            "$SAN" --tool memcheck --error-exitcode 86 --print-limit 20 --target-processes all --log-file "$OUT/sanitizer.log"
          grep -h 'ERROR SUMMARY' "$OUT/sanitizer.log" 2>/dev/null | tail -1 | sed 's/^/gpu-check: memcheck: /'
          if grep -q 'ERROR SUMMARY: [1-9]' "$OUT/sanitizer.log" 2>/dev/null; then
            result sanitizer "memcheck" fail "$(grep -m 3 -A 3 'Invalid\|Error' "$OUT/sanitizer.log" | head -12 | tr '\n' ' ' | cut -c1-600)"
          elif grep -q 'ERROR SUMMARY: 0' "$OUT/sanitizer.log" 2>/dev/null; then
            result sanitizer "memcheck" pass "0 errors"
          else
            result sanitizer "memcheck" error "no ERROR SUMMARY in sanitizer.log"
          fi
        fi
      fi
      ;;
    *) say "unknown suite $s" ;;
  esac
done
phase check $(($(date +%s) - t_check))
phase total "$(elapsed)"
[ -f "$RESNEXT_CUDA_PLAN_CACHE" ] && say "plan cache: $(wc -l <"$RESNEXT_CUDA_PLAN_CACHE") engine choices in $RESNEXT_CUDA_PLAN_CACHE (copy it to .device/plan-cache/ to seed the next run)"
say "finished in $(elapsed) s"
"$NODE" scripts/gpu-check/summary.js "$OUT"
"$NODE" -e 'process.exit(require(process.argv[1]).ok ? 0 : 1)' "$OUT/summary.json"
