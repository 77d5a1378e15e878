#!/usr/bin/env bash
# Stages everything the GPU machine needs for scripts/gpu-check/run.sh into one ignored folder
# (default .device/gpu-check; /.device/ is in .gitignore), checks it is under 40 MiB and prints
# the exact command to run there. Run it here, on the CPU machine, after the CPU addon
# (build/Release/resnext.node), dist/ (npm run build:ts) and scripts/ci-cuda.sh (which copies
# cudnn-frontend's headers to .device/cudnn-frontend/include) are up to date.
#
#   bash scripts/gpu-check/stage.sh [DEST]
#
# What goes in (the layout of a checkout, so run.sh works the same from either):
#   node-v*-linux-x64.xz            Node.js for the GPU machine (from ../shared/device; no Node there)
#   dist/ package.json              the compiled package
#   build/Release/resnext.node      the CPU addon built here (it dlopen()s the CUDA library)
#   node_modules/<pkg>              the runtime packages loading dist/ pulls in (node-gyp-build, and
#                                   whatever else dist/index.js requires at load time), found by
#                                   loading it here and reading require.cache
#   native/core native/cuda         sources the CUDA library is built from there
#   scripts/build-cuda.js scripts/abi-hash.js scripts/gpu-check/
#   cudnn-frontend/include          cudnn-frontend's headers (no pip there)
#   plan-cache/conv-plans.tsv       engine choices of an earlier run, if .device/plan-cache has them
#   MANIFEST                        what was staged, from which commit, with which backend ABI
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DEST=${1:-${GPU_CHECK_STAGE:-.device/gpu-check}}
LIMIT_MIB=${GPU_CHECK_STAGE_LIMIT_MIB:-40}
die() { printf 'stage: ERROR: %s\n' "$*" >&2; exit 1; }

NODE_XZ=""
for f in "${GPU_CHECK_NODE_XZ:-}" "$ROOT"/../shared/device/node-v*-linux-x64.xz "$ROOT"/shared/device/node-v*-linux-x64.xz /work/shared/device/node-v*-linux-x64.xz; do
  if [ -n "$f" ] && [ -f "$f" ]; then NODE_XZ=$f; break; fi
done
[ -n "$NODE_XZ" ] || die "no node-v*-linux-x64.xz in ../shared/device (set GPU_CHECK_NODE_XZ)"
[ -f dist/index.js ] || die "dist/ is not built: run 'flock /tmp/rx-tsc.lock npm run build:ts'"
[ -f build/Release/resnext.node ] || die "build/Release/resnext.node is missing: build the CPU addon"
[ -d node_modules/node-gyp-build ] || die "node_modules/node-gyp-build is missing (npm install)"
FE=.device/cudnn-frontend/include
[ -f "$FE/cudnn_frontend.h" ] || die "$FE is missing: run 'bash scripts/ci-cuda.sh' (it copies cudnn-frontend's headers there)"
# The addon and the CUDA library must come from the same core headers (the loader refuses
# otherwise): check that the addon was built from these.
abi=$(node scripts/abi-hash.js)
if [ -f build/backend-abi.txt ] && [ "$(cat build/backend-abi.txt)" != "$abi" ]; then
  die "build/Release/resnext.node was built for backend ABI $(cat build/backend-abi.txt) but native/core now gives $abi: rebuild the CPU addon first"
fi

case "$DEST" in /*) ;; *) DEST=$ROOT/$DEST ;; esac
rm -rf "$DEST"
mkdir -p "$DEST"/build/Release "$DEST"/node_modules "$DEST"/native "$DEST"/scripts "$DEST"/cudnn-frontend
cp "$NODE_XZ" "$DEST"/
cp -r dist "$DEST"/dist
cp package.json "$DEST"/
cp build/Release/resnext.node "$DEST"/build/Release/
# The packages that loading the compiled package pulls in, nothing else (no jest, no TypeScript).
pkgs=$(node -e '
  require(require("node:path").resolve("dist/index.js"));
  const s = new Set(["node-gyp-build"]);
  for (const k of Object.keys(require.cache)) {
    const m = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(k);
    if (m) s.add(m[1]);
  }
  console.log([...s].sort().join("\n"));') || die "loading dist/index.js failed"
for p in $pkgs; do
  mkdir -p "$DEST/node_modules/$(dirname "$p")"
  cp -r "node_modules/$p" "$DEST/node_modules/$p"
done
cp -r native/core native/cuda "$DEST"/native/
cp scripts/build-cuda.js scripts/abi-hash.js "$DEST"/scripts/
cp -r scripts/gpu-check "$DEST"/scripts/
cp -r "$FE" "$DEST"/cudnn-frontend/include
if [ -f .device/plan-cache/conv-plans.tsv ]; then
  mkdir -p "$DEST"/plan-cache && cp .device/plan-cache/conv-plans.tsv "$DEST"/plan-cache/
fi
find "$DEST" -name '__pycache__' -prune -exec rm -rf {} +
{
  echo "staged $(date -u +%FT%TZ) from $ROOT"
  echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "backend ABI $abi"
  echo "node $(basename "$NODE_XZ")"
  echo "packages $(echo $pkgs)"
  (cd "$DEST" && find . -type f ! -name MANIFEST -printf '%s %p\n' | sort -k2)
} >"$DEST"/MANIFEST

bytes=$(du -sb "$DEST" | cut -f1)
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
if [ "$bytes" -gt $((LIMIT_MIB * 1048576)) ]; then
  die "$DEST is $mib MiB, over the ${LIMIT_MIB} MiB limit; largest: $(cd "$DEST" && find . -type f -printf '%s %p\n' | sort -rn | head -5 | tr '\n' ';')"
fi
rel=${DEST#"$ROOT"/}
echo "stage: $rel: $mib MiB (limit ${LIMIT_MIB} MiB), $(find "$DEST" -type f | wc -l) files, backend ABI $abi, packages: $(echo $pkgs)"
echo "stage: on the GPU machine, from the repository root (the device tool: carry [\"$rel\"], timeout_s 540):"
echo "  GPU_CHECK_OUT=\$OUT bash $rel/scripts/gpu-check/run.sh"
echo "stage: dry run of the staged folder here (no GPU): GPU_CHECK_DRY_RUN=1 GPU_CHECK_OUT=/tmp/gpu-check-dry bash $rel/scripts/gpu-check/run.sh"
