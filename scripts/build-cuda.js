#!/usr/bin/env node
// `npm run build:cuda`: configures and builds the CUDA backend (native/cuda, its own CMake
// project) into build-cuda/, then copies libresnext_cuda.so next to the CPU addon in
// build/Release/ where lib/native/cuda.ts looks for it.
//
// Where the CUDA pieces come from (first match wins):
//   RESNEXT_CUDA_ROOT / RESNEXT_CUDNN_ROOT / RESNEXT_CUBLAS_ROOT / RESNEXT_CUDNN_FRONTEND_INCLUDE
//   (environment), else a system toolkit (nvcc on PATH or /usr/local/cuda), else NVIDIA's pip
//   wheels in .cache/cuda-venv (scripts/ci-cuda.sh installs them). cudnn-frontend's headers are
//   also looked up in .device/cudnn-frontend/include (the copy that travels to the GPU machine).
// Options: RESNEXT_CUDA_JOBS (parallel compile jobs), RESNEXT_CUDA_ARCHS (default "80-real;90-real"),
// RESNEXT_CUDA_BUILD_DIR (default build-cuda; the GPU check uses its own so a cache configured on
// another machine is never reused).


const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const buildDir = path.resolve(root, process.env.RESNEXT_CUDA_BUILD_DIR || 'build-cuda');
const lib = 'libresnext_cuda.so';

function die(msg) {
  console.error(`build:cuda: ${msg}`);
  process.exit(1);
}

function which(cmd) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    const p = path.join(dir, cmd);
    if (dir && fs.existsSync(p)) return p;
  }
  return null;
}

function venvSitePackages() {
  const libDir = path.join(root, '.cache', 'cuda-venv', 'lib');
  if (!fs.existsSync(libDir)) return null;
  for (const d of fs.readdirSync(libDir)) {
    const sp = path.join(libDir, d, 'site-packages');
    if (d.startsWith('python') && fs.existsSync(path.join(sp, 'nvidia'))) return sp;
  }
  return null;
}

if (process.platform !== 'linux') die(`the CUDA backend builds on Linux only (this is ${process.platform})`);
if (!which('cmake')) die('cmake was not found on PATH (3.19 or newer is needed)');

const env = { ...process.env };
const defs = [];
const sp = venvSitePackages();
const systemNvcc = which('nvcc') || (fs.existsSync('/usr/local/cuda/bin/nvcc') ? '/usr/local/cuda/bin/nvcc' : null);

if (!env.RESNEXT_CUDA_ROOT && !env.CUDACXX && !systemNvcc) {
  if (!sp)
    die(
      'no CUDA toolkit found: install the CUDA 13 toolkit (nvcc), set RESNEXT_CUDA_ROOT to a toolkit root, ' +
        'or run `bash scripts/ci-cuda.sh` to install NVIDIA\'s pip wheels into .cache/cuda-venv',
    );
  env.RESNEXT_CUDA_ROOT = path.join(sp, 'nvidia', 'cu13');
}
if (sp && !env.RESNEXT_CUDNN_ROOT && !fs.existsSync('/usr/include/x86_64-linux-gnu/cudnn.h') && !fs.existsSync('/usr/include/cudnn.h'))
  env.RESNEXT_CUDNN_ROOT = path.join(sp, 'nvidia', 'cudnn');
if (env.RESNEXT_CUDA_ROOT && !env.RESNEXT_CUBLAS_ROOT) env.RESNEXT_CUBLAS_ROOT = env.RESNEXT_CUDA_ROOT;
if (!env.RESNEXT_CUDNN_FRONTEND_INCLUDE) {
  const candidates = [path.join(root, '.device', 'cudnn-frontend', 'include')];
  if (sp) candidates.push(path.join(sp, 'include'));
  const found = candidates.find((d) => fs.existsSync(path.join(d, 'cudnn_frontend.h')));
  if (found) env.RESNEXT_CUDNN_FRONTEND_INCLUDE = found;
}
// The wheels put the toolkit's libraries in <root>/lib, while nvcc.profile links from
// <root>/lib64: without this, nvcc cannot find libcudart_static.a when CMake tests the compiler.
if (env.RESNEXT_CUDA_ROOT) {
  const libs = [path.join(env.RESNEXT_CUDA_ROOT, 'lib'), path.join(env.RESNEXT_CUDA_ROOT, 'lib64')].filter((d) => fs.existsSync(d));
  env.LIBRARY_PATH = [...libs, env.LIBRARY_PATH].filter(Boolean).join(path.delimiter);
}
for (const k of ['RESNEXT_CUDA_ROOT', 'RESNEXT_CUDNN_ROOT', 'RESNEXT_CUBLAS_ROOT', 'RESNEXT_CUDNN_FRONTEND_INCLUDE'])
  if (env[k]) defs.push(`-D${k}=${env[k]}`);
if (env.RESNEXT_CUDA_ARCHS) defs.push(`-DCMAKE_CUDA_ARCHITECTURES=${env.RESNEXT_CUDA_ARCHS}`);

function run(cmd, args) {
  console.log(`build:cuda: ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { stdio: 'inherit', env, cwd: root });
  if (r.error) die(`${cmd} could not run: ${r.error.message}`);
  if (r.status !== 0) die(`${cmd} failed with exit code ${r.status} (see the output above)`);
}

const generator = which('ninja') ? ['-G', 'Ninja'] : [];
// A cache configured with another generator cannot be reused.
const cache = path.join(buildDir, 'CMakeCache.txt');
if (fs.existsSync(cache)) {
  const text = fs.readFileSync(cache, 'utf8');
  const gen = /CMAKE_GENERATOR:INTERNAL=(.*)/.exec(text);
  if (gen && (generator.length ? gen[1] !== 'Ninja' : gen[1] === 'Ninja')) fs.rmSync(buildDir, { recursive: true, force: true });
}
run('cmake', ['-S', path.join(root, 'native', 'cuda'), '-B', buildDir, ...generator, '-DCMAKE_BUILD_TYPE=Release', ...defs]);
const jobs = env.RESNEXT_CUDA_JOBS || String(Math.max(1, Math.min(os.cpus().length, 16)));
run('cmake', ['--build', buildDir, '--parallel', jobs]);

const built = path.join(buildDir, lib);
if (!fs.existsSync(built)) die(`the build finished but ${built} is missing`);
const dest = path.join(root, 'build', 'Release');
fs.mkdirSync(dest, { recursive: true });
fs.copyFileSync(built, path.join(dest, lib));
console.log(`build:cuda: built ${built} and copied it to ${path.join(dest, lib)}`);
