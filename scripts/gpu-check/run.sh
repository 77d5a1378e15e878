#!/usr/bin/env bash
# The whole GPU check, for the GPU test machine (no network, no npm, no pip; see
# /work/shared/device/README.md): builds libresnext_cuda.so there with the system CUDA 13,
# cuDNN 9 and cuBLAS plus the cudnn-frontend headers carried in .device/cudnn-frontend/include,
# then runs the GPU-vs-CPU op checks from compiled JavaScript (scripts/gpu-check/check.js).
#
# What must travel with the working tree (built on the CPU machine, gitignored):
#   dist/                              compiled TypeScript (npm run build:ts)
#   build/Release/resnext.node         the CPU addon (npm run build:native)
#   node_modules/node-gyp-build        the addon loader dist/ requires
#   .device/cudnn-frontend             cudnn-frontend headers (scripts/ci-cuda.sh copies them)
# Node: $NODE, else node on PATH, else the xz'd binary from shared/device (unpacked to /tmp/node).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
t0=$(date +%s)
die() { printf 'gpu-check: ERROR: %s\n' "$*" >&2; exit 1; }

if [ -z "${NODE:-}" ]; then
  if command -v node >/dev/null; then
    NODE=$(command -v node)
  else
    xz_file=""
    for f in "$ROOT"/shared/device/node-v*-linux-x64.xz /work/shared/device/node-v*-linux-x64.xz; do
      if [ -f "$f" ]; then xz_file=$f; break; fi
    done
    [ -n "$xz_file" ] || die "no node on PATH and no shared/device/node-*.xz to unpack"
    [ -x /tmp/node ] || { xz -dc "$xz_file" >/tmp/node.partial && chmod +x /tmp/node.partial && mv /tmp/node.partial /tmp/node; }
    NODE=/tmp/node
  fi
fi
echo "gpu-check: node $("$NODE" --version), $(cmake --version | head -1), $(nvcc --version 2>/dev/null | tail -1 || echo 'nvcc not on PATH')"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "gpu-check: nvidia-smi not available"

[ -f dist/index.js ] || die "dist/index.js is missing: run 'npm run build:ts' on the CPU machine and carry dist"
[ -f build/Release/resnext.node ] || die "build/Release/resnext.node is missing: build it on the CPU machine and carry build/Release/resnext.node"
[ -d node_modules/node-gyp-build ] || die "node_modules/node-gyp-build is missing: carry it"
[ -f .device/cudnn-frontend/include/cudnn_frontend.h ] ||
  die "cudnn-frontend headers missing: run 'bash scripts/ci-cuda.sh' on the CPU machine and carry .device/cudnn-frontend"

# A build dir of its own: a cache configured on the CPU machine (wheel paths) must not be reused.
export RESNEXT_CUDA_BUILD_DIR=build-cuda-device
export RESNEXT_CUDNN_FRONTEND_INCLUDE=$ROOT/.device/cudnn-frontend/include
export RESNEXT_CUDA_JOBS=${RESNEXT_CUDA_JOBS:-16}
t_build=$(date +%s)
"$NODE" scripts/build-cuda.js
echo "gpu-check: CUDA library built in $(($(date +%s) - t_build)) s"

export RESNEXT_CUDA_LIBRARY=$ROOT/$RESNEXT_CUDA_BUILD_DIR/libresnext_cuda.so
set +e
"$NODE" scripts/gpu-check/check.js
rc=$?
set -e
echo "gpu-check: finished in $(($(date +%s) - t0)) s (exit $rc)"
exit $rc
