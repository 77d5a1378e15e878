/**
 * The CUDA backend's decisions, checked without a GPU (issue 14):
 * - native/cuda/memory.cc (the caching allocator, throw_cuda, the staged upload) against a fake
 *   CUDA runtime: a kernel fault is not ERR_OOM, uploads never hand the caller's buffer to DMA;
 * - native/cuda/policy.{h,cc} compiled with g++ against the CUDA/cuDNN/cuBLAS headers only
 *   (NVIDIA's wheels that scripts/ci-cuda.sh installs into .cache/cuda-venv, or a system
 *   toolkit) and run: error mapping (findings 4, 7), the cuDNN version rule (8), engine
 *   deselection (3), the autotuner's cap, budget, heuristics-only mode and cached choice against
 *   a fake GPU (2), the plan-cache file, upload chunking (10), the batch-norm fallback rule (6);
 * - the backend ABI version is derived from the shared core headers, identically by CMake and
 *   scripts/abi-hash.js, changes when a header changes, and the built CUDA library's entry point
 *   refuses an addon of another ABI before it touches CUDA (8).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..');
const out = path.join(root, 'build', 'native-test');

function cudaIncludes(): string[] | null {
  const lib = path.join(root, '.cache', 'cuda-venv', 'lib');
  if (fs.existsSync(lib)) {
    for (const d of fs.readdirSync(lib)) {
      const nv = path.join(lib, d, 'site-packages', 'nvidia');
      const inc = [path.join(nv, 'cu13', 'include'), path.join(nv, 'cudnn', 'include')];
      if (inc.every((p) => fs.existsSync(p))) return inc;
    }
  }
  const sys = ['/usr/local/cuda/include', '/usr/include/x86_64-linux-gnu'];
  if (fs.existsSync('/usr/local/cuda/include/cuda_runtime_api.h') && fs.existsSync('/usr/include/x86_64-linux-gnu/cudnn.h')) return sys;
  return null;
}

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { backendAbi } = require('../scripts/abi-hash.js') as { backendAbi: (root?: string) => string };

const inc = cudaIncludes();
if (!inc) console.log('gpu-check-policy.test.ts: native policy test skipped: no CUDA/cuDNN headers (run `bash scripts/ci-cuda.sh`)');

describe('CUDA backend policy (no GPU needed)', () => {
  (inc ? test : test.skip)('native/cuda/policy.cc passes test/native/cuda_policy_test.cc', () => {
    fs.mkdirSync(out, { recursive: true });
    const exe = path.join(out, 'cuda_policy_test');
    execFileSync('g++', ['-O1', '-std=c++17', '-Wall', '-Werror', '-Wno-deprecated-declarations', ...inc!.flatMap((d) => ['-isystem', d]),
      path.join(root, 'native/cuda/policy.cc'), path.join(root, 'test/native/cuda_policy_test.cc'), '-o', exe], { stdio: 'pipe' });
    // No CUDA library is linked: the policy code only uses the headers' types and constants.
    const needed = execFileSync('readelf', ['-d', exe], { encoding: 'utf8' });
    expect(needed).not.toMatch(/libcuda|libcudnn|libcublas|libcudart/);
    const r = spawnSync(exe, [], { encoding: 'utf8' });
    console.log(r.stdout.trim().split('\n').pop());
    expect(r.stdout).toMatch(/cuda_policy_test: \d+ checks, 0 failed/);
    expect(r.status).toBe(0);
  }, 120000);

  (inc ? test : test.skip)('native/cuda/memory.cc against a fake CUDA runtime: allocation failures and staged uploads (findings 4, 10)', () => {
    fs.mkdirSync(out, { recursive: true });
    const exe = path.join(out, 'cuda_memory_test');
    execFileSync('g++', ['-O1', '-std=c++17', '-Wall', '-Werror', '-Wno-deprecated-declarations', ...inc!.flatMap((d) => ['-isystem', d]),
      path.join(root, 'native/cuda/memory.cc'), path.join(root, 'native/cuda/policy.cc'), path.join(root, 'test/native/cuda_memory_test.cc'), '-o', exe], { stdio: 'pipe' });
    expect(execFileSync('readelf', ['-d', exe], { encoding: 'utf8' })).not.toMatch(/libcuda|libcudart/);
    const r = spawnSync(exe, [], { encoding: 'utf8' });
    console.log(r.stdout.trim().split('\n').pop());
    expect(r.stdout).toMatch(/cuda_memory_test: \d+ checks, 0 failed/);
    expect(r.status).toBe(0);
  }, 120000);
});

describe('backend ABI version (finding 8)', () => {
  test('derived from the core headers: CMake and scripts/abi-hash.js agree, and a header edit changes it', () => {
    const abi = backendAbi();
    expect(abi).toMatch(/^0x[0-9a-f]{15}$/);
    const script = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'rx-abi-cmake-')), 'abi.cmake');
    fs.writeFileSync(script, `include(${root}/native/core/backend_abi.cmake)\nresnext_backend_abi(A)\nmessage("\${A}")\n`);
    const cmake = spawnSync('cmake', ['-P', script], { encoding: 'utf8' });
    fs.rmSync(path.dirname(script), { recursive: true, force: true });
    expect(cmake.stderr.trim()).toBe(abi);
    // The builds record what they compiled in.
    for (const f of ['build/backend-abi.txt', 'build-cuda/backend-abi.txt']) {
      const p = path.join(root, f);
      if (fs.existsSync(p)) expect(`${f}: ${fs.readFileSync(p, 'utf8').trim()}`).toBe(`${f}: ${abi}`);
    }
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rx-abi-'));
    fs.mkdirSync(path.join(tmp, 'native'), { recursive: true });
    fs.cpSync(path.join(root, 'native', 'core'), path.join(tmp, 'native', 'core'), { recursive: true });
    expect(backendAbi(tmp)).toBe(abi);
    fs.appendFileSync(path.join(tmp, 'native', 'core', 'ops.h'), '\n// a new kernel slot\n');
    expect(backendAbi(tmp)).not.toBe(abi);
    fs.rmSync(tmp, { recursive: true, force: true });
    // binding.gyp (node-gyp, prebuilds) passes the same value.
    const gyp = fs.readFileSync(path.join(root, 'binding.gyp'), 'utf8');
    expect(gyp).toContain('RESNEXT_BACKEND_ABI=<!(node scripts/abi-hash.js --define)');
    expect(execFileSync('node', [path.join(root, 'scripts/abi-hash.js'), '--define'], { encoding: 'utf8' })).toBe(`${abi}ULL`);
  });

  const lib = path.join(root, 'build-cuda', 'libresnext_cuda.so');
  (fs.existsSync(lib) ? test : test.skip)('the CUDA library refuses another ABI (and 0) before touching CUDA, and accepts its own', () => {
    fs.mkdirSync(out, { recursive: true });
    const exe = path.join(out, 'cuda_entry_test');
    execFileSync('g++', ['-O1', '-std=c++17', path.join(root, 'test/native/cuda_entry_test.cc'), '-ldl', '-o', exe], { stdio: 'pipe' });
    const abi = fs.readFileSync(path.join(root, 'build-cuda', 'backend-abi.txt'), 'utf8').trim();
    const call = (v: string) => execFileSync(exe, [lib, v], { encoding: 'utf8' }).trim();
    const wrong = call('0x123');
    expect(wrong).toMatch(/^rc=2 backend=null/);
    expect(wrong).toContain(`built for backend ABI ${abi}`);
    expect(wrong).toContain('addon uses ABI 0x123');
    expect(call('0')).toMatch(/^rc=2/);
    // Its own ABI gets past the check to the device checks (here: no driver or no GPU).
    const own = call(abi);
    console.log(`gpu-check-policy.test.ts: entry with the right ABI: ${own}`);
    expect(own).not.toMatch(/ABI/);
    if (!/^rc=0/.test(own)) expect(own).toMatch(/^rc=3 .*(libcuda\.so\.1|driver|GPU|cuDNN)/);
  });
});
