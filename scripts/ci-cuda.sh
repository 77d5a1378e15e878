#!/usr/bin/env bash
# CI for the CUDA backend on a machine WITHOUT a GPU: compile and link native/cuda so compile
# errors never wait for a GPU machine.
#
# Without a system CUDA toolkit, NVIDIA's wheels from PyPI are installed into .cache/cuda-venv
# (reused on later runs: a stamp file records the pinned set). The pins match the GPU test machine
# (CUDA 13.0, cuDNN 9.14, cuBLAS 13.1). cudnn-frontend's headers are copied to
# .device/cudnn-frontend/include, the folder a GPU run carries (that machine has no pip).
# Then it builds with scripts/build-cuda.js and checks the library's dynamic section:
# libcudnn.so.9 and libcublas are needed, the CUDA runtime is static, resnext_cuda_backend_create
# is exported, and the CPU addon (if built) needs no CUDA library.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=.cache/cuda-venv
FRONTEND_VERSION=1.16.0
# cudnn-frontend 1.16 (not the newest): later releases compile experimental engines that call
# NVRTC and the driver API directly, which would add link-time dependencies we do not want.
PINS=(
  "nvidia-cuda-nvcc==13.0.88"
  "nvidia-cuda-crt==13.0.88"
  "nvidia-nvvm==13.0.88"
  "nvidia-cuda-runtime==13.0.96"
  "nvidia-cuda-cccl==13.0.85"
  "nvidia-cublas==13.1.0.3"
  "nvidia-cudnn-cu13==9.14.*"
)

say() { printf 'ci-cuda: %s\n' "$*"; }
die() { printf 'ci-cuda: ERROR: %s\n' "$*" >&2; exit 1; }
t_start=$(date +%s)

command -v python3 >/dev/null || die "python3 is needed to install NVIDIA's wheels"
command -v cmake >/dev/null || die "cmake (3.19 or newer) is needed"
command -v node >/dev/null || die "node is needed to run scripts/build-cuda.js"

system_nvcc=""
if command -v nvcc >/dev/null; then system_nvcc=$(command -v nvcc); elif [ -x /usr/local/cuda/bin/nvcc ]; then system_nvcc=/usr/local/cuda/bin/nvcc; fi
system_cudnn=""
if [ -f /usr/include/x86_64-linux-gnu/cudnn.h ] || [ -f /usr/include/cudnn.h ]; then system_cudnn=yes; fi

# ---------------------------------------------------------------- python venv with the wheels
if [ ! -x "$VENV/bin/pip" ]; then
  say "creating $VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
fi
PIP="$VENV/bin/pip"
want=("${PINS[@]}")
if [ -n "$system_nvcc" ] && [ -n "$system_cudnn" ]; then
  say "system CUDA toolkit ($system_nvcc) and cuDNN headers found: only cudnn-frontend comes from PyPI"
  want=()
fi
stamp="$VENV/.resnext-cuda-pins"
stamp_text="${want[*]:-} nvidia-cudnn-frontend==$FRONTEND_VERSION"
t_pip=$(date +%s)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_text" ]; then
  say "wheels already installed in $VENV (delete $stamp to reinstall)"
else
  if [ ${#want[@]} -gt 0 ]; then
    say "installing ${want[*]}"
    "$PIP" install --disable-pip-version-check -q "${want[@]}" || die "pip install of the CUDA wheels failed (is PyPI reachable?)"
  fi
  # --no-deps: the frontend wheel's Python extras pull in ~1 GB (cutlass DSL) that the headers do not need.
  "$PIP" install --disable-pip-version-check -q --no-deps "nvidia-cudnn-frontend==$FRONTEND_VERSION" ||
    die "pip install nvidia-cudnn-frontend==$FRONTEND_VERSION failed"
  echo "$stamp_text" >"$stamp"
  # New compiler or libraries: configure from scratch (CMake caches the compiler's identity).
  rm -rf build-cuda
fi
say "pip step took $(($(date +%s) - t_pip)) s"

SP=$(ls -d "$ROOT/$VENV"/lib/python3*/site-packages | head -1)
[ -f "$SP/include/cudnn_frontend.h" ] || die "cudnn_frontend.h not found under $SP/include after installing the wheel"

# ---------------------------------------------------------------- frontend headers for the GPU machine
FE_DIR=.device/cudnn-frontend/include
fe_stamp=.device/cudnn-frontend/VERSION
if [ ! -f "$fe_stamp" ] || [ "$(cat "$fe_stamp")" != "$FRONTEND_VERSION" ] || [ ! -f "$FE_DIR/cudnn_frontend.h" ]; then
  say "copying cudnn-frontend $FRONTEND_VERSION headers to $FE_DIR"
  rm -rf "$FE_DIR"
  mkdir -p "$FE_DIR"
  # Only the C++ headers (the wheel's include dir also holds nothing else we need).
  cp -r "$SP/include/." "$FE_DIR/"
  echo "$FRONTEND_VERSION" >"$fe_stamp"
fi

# ---------------------------------------------------------------- build
export RESNEXT_CUDNN_FRONTEND_INCLUDE="$ROOT/$FE_DIR"
if [ -z "$system_nvcc" ]; then export RESNEXT_CUDA_ROOT="$SP/nvidia/cu13"; fi
if [ -z "$system_cudnn" ]; then export RESNEXT_CUDNN_ROOT="$SP/nvidia/cudnn"; fi
if [ -z "$system_nvcc" ]; then export RESNEXT_CUBLAS_ROOT="$SP/nvidia/cu13"; fi
t_build=$(date +%s)
node scripts/build-cuda.js || die "the CUDA backend did not build (see above)"
say "build step took $(($(date +%s) - t_build)) s"

# ---------------------------------------------------------------- link checks
SO=build-cuda/libresnext_cuda.so
[ -f "$SO" ] || die "$SO was not produced"
needed=$(readelf -d "$SO" | awk '/NEEDED/ {gsub(/[\[\]]/, "", $5); print $5}')
say "$SO needs: $(echo $needed)"
echo "$needed" | grep -q '^libcudnn\.so\.9$' || die "$SO does not link libcudnn.so.9"
echo "$needed" | grep -q '^libcublas\.so\.' || die "$SO does not link libcublas"
echo "$needed" | grep -q '^libcublasLt\.so\.' || die "$SO does not link libcublasLt"
if echo "$needed" | grep -q '^libcudart'; then die "$SO links the CUDA runtime dynamically (expected static)"; fi
if echo "$needed" | grep -q '^libcuda\.so'; then die "$SO links libcuda.so at load time (it must dlopen it to report a missing driver)"; fi
nm -D --defined-only "$SO" | grep -q ' T resnext_cuda_backend_create$' || die "$SO does not export resnext_cuda_backend_create"
exported=$(nm -D --defined-only "$SO" | awk '$2 ~ /^[TWDBVRiu]$/ {print $3}' | grep -v '^_init$\|^_fini$' || true)
say "exported symbols: $(echo $exported)"
if [ -f build/Release/resnext.node ]; then
  if readelf -d build/Release/resnext.node | grep NEEDED | grep -qi 'cuda\|cudnn\|cublas'; then
    die "the CPU addon build/Release/resnext.node links a CUDA library (design.md section 1 forbids it)"
  fi
  say "CPU addon links no CUDA library"
fi
# The backend ABI compiled into the library is the one the addon's build and abi-hash.js compute.
abi_cuda=$(cat build-cuda/backend-abi.txt 2>/dev/null || echo missing)
abi_src=$(node scripts/abi-hash.js)
[ "$abi_cuda" = "$abi_src" ] || die "build-cuda/backend-abi.txt ($abi_cuda) differs from scripts/abi-hash.js ($abi_src)"
if [ -f build/backend-abi.txt ] && [ "$(cat build/backend-abi.txt)" != "$abi_src" ]; then
  say "note: the CPU addon in build/ was built for backend ABI $(cat build/backend-abi.txt), the sources now give $abi_src: rebuild it before loading this library"
fi
say "backend ABI $abi_src"

# ---------------------------------------------------------------- NCCL collectives (issue 15)
# libresnext_nccl.so compiles and links against NVIDIA's NCCL wheel (or a system NCCL); it cannot
# run here (no GPU). Only NCCL's version query is called, which needs none.
NCCL_PIN="nvidia-nccl-cu13==2.32.3"
if [ ! -f "$SP/nvidia/nccl/include/nccl.h" ] && [ ! -f /usr/include/nccl.h ]; then
  say "installing $NCCL_PIN"
  "$PIP" install --disable-pip-version-check -q --no-deps "$NCCL_PIN" || die "pip install $NCCL_PIN failed"
fi
node scripts/build-nccl.js || die "libresnext_nccl.so did not build (see above)"
readelf -d build-nccl/libresnext_nccl.so | grep -q 'NEEDED.*libnccl\.so\.2' || die "build-nccl/libresnext_nccl.so does not link libnccl.so.2"
python3 -c "import ctypes; l=ctypes.CDLL('build-nccl/libresnext_nccl.so'); v=ctypes.c_int(); assert l.resnext_nccl_version(ctypes.byref(v), None, 0) == 0; print('ci-cuda: NCCL', v.value)" ||
  die "build-nccl/libresnext_nccl.so does not load"
say "OK: $SO compiled and linked in $(($(date +%s) - t_start)) s"
