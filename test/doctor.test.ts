/**
 * `resnext doctor`: the --json report's schema, the human report's verdict line, the exit
 * statuses, and the kernel choice it reports (the rule of native/cpu/gemm.cc).
 */
import * as fs from 'node:fs';
import { doctorCommand, type DoctorReport, gemmIsa } from '../lib/cli/doctor';
import { cudaStatus } from '../lib/native/cuda';

async function runDoctor(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const o = jest.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
    out += String(s);
    return true;
  });
  const e = jest.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => {
    err += String(s);
    return true;
  });
  try {
    const code = await doctorCommand(argv);
    return { code, out, err };
  } finally {
    o.mockRestore();
    e.mockRestore();
  }
}

const gpu = cudaStatus().available;

test('--json: one object with platform, node, addon, cpu, cuda and verdict', async () => {
  const { code, out } = await runDoctor(['--json']);
  expect(code).toBe(0);
  const r = JSON.parse(out) as DoctorReport;
  expect(Object.keys(r)).toEqual(['resnext', 'platform', 'node', 'addon', 'cpu', 'cuda', 'verdict']);
  expect(r.resnext.version).toMatch(/^\d+\.\d+\.\d+/);
  expect(r.platform).toMatchObject({ os: process.platform, arch: process.arch });
  expect(r.node).toMatchObject({ version: process.version, napi: Number(process.versions.napi) });
  expect(r.addon.loaded).toBe(true);
  expect(r.addon.error).toBeNull();
  expect(fs.existsSync(r.addon.path!)).toBe(true);
  expect(['prebuild', 'source build']).toContain(r.addon.kind);
  expect(r.addon.napiVersion).toBe(8);
  expect(r.node.napi).toBeGreaterThanOrEqual(r.addon.napiVersion);
  expect(Array.isArray(r.addon.prebuilds)).toBe(true);
  if (process.platform === 'linux') expect(r.addon.glibcRequired).toMatch(/^2\.\d+$/);
  for (const k of ['avx2', 'fma', 'avx512f'] as const) expect(typeof r.cpu.features![k]).toBe('boolean');
  expect(['scalar', 'avx2', 'avx512']).toContain(r.cpu.gemmIsa);
  expect(r.cpu.gemmIsa).toBe(gemmIsa(r.cpu.features!, process.env.RESNEXT_CPU_ISA));
  expect(r.cpu.threads).toBeGreaterThanOrEqual(1);
  expect(r.cpu.check).toBe('ok');
  expect(typeof r.cuda.available).toBe('boolean');
  expect(r.cuda.available).toBe(gpu);
  expect(r.cuda.package.name).toBe(`@resnext/cuda-${process.platform}-${process.arch}`);
  expect(Array.isArray(r.cuda.driver.searched)).toBe(true);
  expect(r.cuda.libraries.map((l) => l.name)).toEqual(['libcuda.so.1', 'libcudnn.so.9', 'libcublas.so.13', 'libcublasLt.so.13']);
  for (const l of r.cuda.libraries) {
    expect(l.searched.length).toBeGreaterThan(0);
    // Found on the loader's path, or a fix is given.
    expect(l.onLoaderPath || l.fix.length > 0).toBe(true);
  }
  expect(r.verdict.ok).toBe(true);
  expect(r.verdict.cpu).toBe(true);
  if (gpu) {
    expect(r.cuda.device).toHaveProperty('name');
    expect(r.cuda.check).toBe('ok');
  } else {
    expect(r.cuda.reason.length).toBeGreaterThan(20);
    expect(r.cuda.device).toBeNull();
    expect(r.verdict.cuda).toBe(false);
  }
});

test('the human report ends with a one-line verdict', async () => {
  const { code, out } = await runDoctor([]);
  expect(code).toBe(0);
  const lines = out.trimEnd().split('\n');
  for (const k of ['resnext', 'platform', 'node', 'addon', 'cpu', 'kernels', 'threads', 'gpu', 'cuda']) expect(out).toMatch(new RegExp(`^${k} +\\S`, 'm'));
  const verdict = lines[lines.length - 1];
  if (gpu) expect(verdict).toMatch(/^verdict: OK: CPU \((scalar|avx2|avx512) kernels, \d+ threads\) and CUDA \(.+\) ready$/);
  else expect(verdict).toMatch(/^verdict: OK for CPU \((scalar|avx2|avx512) kernels, \d+ threads\); CUDA unavailable: \S.{10,}$/);
  expect(lines.filter((l) => l.startsWith('verdict:'))).toHaveLength(1);
});

test('--require-cuda fails without a usable GPU; --help and usage errors', async () => {
  expect((await runDoctor(['--require-cuda'])).code).toBe(gpu ? 0 : 1);
  const help = await runDoctor(['--help']);
  expect(help.code).toBe(0);
  expect(help.out).toMatch(/^Usage: resnext doctor/);
  const bad = await runDoctor(['--bogus']);
  expect(bad.code).toBe(2);
  expect(bad.err).toMatch(/--bogus/);
});

test('the reported kernels follow gemm.cc: the best the CPU has, capped by RESNEXT_CPU_ISA', () => {
  const all = { avx2: true, fma: true, avx512f: true };
  const x64 = process.arch === 'x64';
  expect(gemmIsa(all, undefined)).toBe(x64 ? 'avx512' : 'scalar');
  expect(gemmIsa(all, 'avx2')).toBe(x64 ? 'avx2' : 'scalar');
  expect(gemmIsa(all, 'scalar')).toBe('scalar');
  expect(gemmIsa(all, 'bogus')).toBe('scalar');
  expect(gemmIsa({ avx2: true, fma: false, avx512f: false }, undefined)).toBe('scalar');
  expect(gemmIsa({ avx2: true, fma: true, avx512f: false }, 'avx512')).toBe(x64 ? 'avx2' : 'scalar');
});
