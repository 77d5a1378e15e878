#!/usr/bin/env node
// `npm run build:nccl`: builds libresnext_nccl.so (native/nccl, its own CMake project) into
// build-nccl/. NCCL and cuda_runtime.h come from RESNEXT_NCCL_ROOT / RESNEXT_CUDA_INCLUDE, else
// from NVIDIA's wheels in .cache/cuda-venv (scripts/ci-cuda.sh installs nvidia-nccl-cu13 there),
// else the system (/usr/include, /usr/local/cuda). Compiles and links without a GPU; running it
// needs one (see README, "Training on several processes and machines").
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const build = path.join(root, 'build-nccl');
const defs = [];
const libDir = path.join(root, '.cache', 'cuda-venv', 'lib');
let sp = null;
if (fs.existsSync(libDir)) for (const d of fs.readdirSync(libDir)) if (fs.existsSync(path.join(libDir, d, 'site-packages', 'nvidia'))) sp = path.join(libDir, d, 'site-packages');
const ncclRoot = process.env.RESNEXT_NCCL_ROOT || (sp && fs.existsSync(path.join(sp, 'nvidia', 'nccl')) ? path.join(sp, 'nvidia', 'nccl') : null);
const cudaInc = process.env.RESNEXT_CUDA_INCLUDE || (sp && fs.existsSync(path.join(sp, 'nvidia', 'cu13', 'include')) ? path.join(sp, 'nvidia', 'cu13', 'include') : null);
if (ncclRoot) defs.push(`-DRESNEXT_NCCL_ROOT=${ncclRoot}`);
if (cudaInc) defs.push(`-DRESNEXT_CUDA_INCLUDE=${cudaInc}`);
const run = (args) => {
  const r = spawnSync('cmake', args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`build:nccl: cmake ${args[0]} failed; NCCL is needed: pip install nvidia-nccl-cu13 (bash scripts/ci-cuda.sh) or set RESNEXT_NCCL_ROOT`);
    process.exit(r.status ?? 1);
  }
};
run(['-S', path.join(root, 'native', 'nccl'), '-B', build, ...defs]);
run(['--build', build, '-j', '2']);
console.log(`build:nccl: ${path.join(build, 'libresnext_nccl.so')}`);
