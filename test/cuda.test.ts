/**
 * The CUDA backend. Without a usable GPU (CI, CPU-only machines) the GPU op comparisons report
 * themselves as skipped with the reason, and the loading error path is tested: asking for
 * device 'cuda' throws ERR_DEVICE naming what is missing, and a built libresnext_cuda.so loaded
 * through RESNEXT_CUDA_LIBRARY either works or names the driver/GPU problem.
 * With a GPU, every op's forward and backward is compared with the CPU on the same inputs
 * (cases and tolerances in scripts/gpu-check/cases.js, shared with the no-jest GPU check).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as rx from '../lib';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { gpuCases } = require('../scripts/gpu-check/cases.js') as {
  gpuCases: (r: typeof rx) => { name: string; run: () => [string, number, number][] }[];
};

const root = path.resolve(__dirname, '..');
const status = rx.cudaStatus();
const gpu = status.available;
if (!gpu) console.log(`cuda.test.ts: GPU-vs-CPU op tests skipped, no usable CUDA GPU: ${status.reason}`);

describe('CUDA without a usable GPU', () => {
  const noGpu = gpu ? test.skip : test;

  noGpu("device 'cuda' throws ERR_DEVICE saying what is missing; CPU use is unaffected", () => {
    let err: unknown = null;
    try {
      rx.zeros([2], { device: 'cuda' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(rx.ResnextError);
    expect((err as rx.ResnextError).code).toBe('ERR_DEVICE');
    const msg = (err as Error).message;
    expect(msg).toContain('CUDA');
    expect(msg).toContain(status.reason);
    // The reason names the missing piece: the library, the driver, a GPU or a CUDA library.
    expect(status.reason).toMatch(/libresnext_cuda\.so|libcuda\.so\.1|driver|GPU|libcudnn|libcublas|cuDNN/);
    expect(() => rx.deviceInfo()).toThrow(rx.ResnextError);
    expect(Array.from(rx.zeros([2]).dataSync())).toEqual([0, 0]);
  });

  const built = path.join(root, 'build-cuda', 'libresnext_cuda.so');
  const dist = path.join(root, 'dist', 'index.js');
  const haveBuild = fs.existsSync(built) && fs.existsSync(dist);
  if (!haveBuild) console.log(`cuda.test.ts: RESNEXT_CUDA_LIBRARY test skipped: ${built} or ${dist} not built (npm run build:cuda)`);
  (haveBuild ? test : test.skip)('RESNEXT_CUDA_LIBRARY=build-cuda/libresnext_cuda.so loads, or names the driver/GPU problem', () => {
    // A child process: the load result is cached for the life of a process.
    const script =
      `const rx = require(${JSON.stringify(dist)}); const s = rx.cudaStatus(); let info = null;` +
      'if (s.available) info = rx.deviceInfo(); console.log(JSON.stringify({ s, info }));';
    const r = spawnSync(process.execPath, ['-e', script], {
      env: { ...process.env, RESNEXT_CUDA_LIBRARY: built },
      encoding: 'utf8',
      timeout: 60000,
    });
    expect(r.status).toBe(0);
    const { s, info } = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(s.library).toBe(built);
    if (s.available) {
      expect(typeof info.name).toBe('string');
      expect(info.cudnnVersion).toMatch(/^9\./);
    } else {
      console.log(`cuda.test.ts: ${built} did not load: ${s.reason}`);
      // It got as far as our own checks (not a missing symbol or a broken build).
      expect(s.reason).toMatch(/libcuda\.so\.1|NVIDIA driver|no usable CUDA GPU|compute capability|libcudnn\.so\.9|libcublas/);
      expect(s.reason).not.toMatch(/undefined symbol|does not export/);
    }
  });
});

(gpu ? describe : describe.skip)('CUDA vs CPU: forward and backward of every op', () => {
  test('deviceInfo and memory', () => {
    const info = rx.deviceInfo();
    console.log(`cuda.test.ts: ${JSON.stringify(info)}`);
    expect(info.name).toBeTruthy();
    expect(String(info.cudnnVersion)).toMatch(/^9\./);
    // The library accepts only the cuDNN minor version it was built against (issue 14, finding 8).
    expect(String(info.cudnnVersion).split('.').slice(0, 2)).toEqual(String(info.cudnnBuiltVersion).split('.').slice(0, 2));
    expect(String(info.backendAbi)).toMatch(/^0x[0-9a-f]+$/);
    const t = rx.zeros([1024, 1024], { device: 'cuda' });
    expect(rx.memory('cuda').bytes).toBeGreaterThanOrEqual(4 << 20);
    t.dispose();
  });

  const cases = gpu ? gpuCases(rx) : [];
  if (cases.length === 0) test.skip('op comparisons (no GPU)', () => {});
  else
    test.each(cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
      for (const [label, err, tol] of c.run()) {
        if (!(err <= tol)) throw new Error(`${c.name}: ${label} relative error ${err} exceeds ${tol}`);
      }
    });

  test('out of memory is ERR_OOM and the process keeps working', () => {
    let err: unknown = null;
    try {
      rx.empty([1 << 20, 1 << 20, 64], { device: 'cuda' }); // 256 TiB
    } catch (e) {
      err = e;
    }
    expect((err as rx.ResnextError).code).toBe('ERR_OOM');
    expect(Array.from(rx.ones([3], { device: 'cuda' }).dataSync())).toEqual([1, 1, 1]);
  });
});
