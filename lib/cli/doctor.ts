#!/usr/bin/env node
/**
 * `resnext doctor`: what this installation runs on and what is missing. Platform, Node and
 * N-API versions, which native binary was loaded from where (a prebuild or a source build), the
 * CPU features and GEMM kernels in use, threads, and the CUDA side: the backend library, the
 * NVIDIA driver, GPUs, and cuDNN/cuBLAS found or missing with the folders searched and the fix.
 * Ends with a one-line verdict; `--json` prints the same as one JSON object.
 *
 * The addon is loaded lazily so that a binary that cannot load is reported rather than fatal.
 * Exit status: 0 when the CPU backend works (and CUDA, with --require-cuda), 1 otherwise, 2 for
 * a usage error. Also runnable alone: node node_modules/resnext/dist/cli/doctor.js
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import type * as AddonModule from '../native/addon';
import type * as CudaModule from '../native/cuda';
import {
  type AddonKind,
  addonKind,
  DIAGNOSIS,
  type DriverInfo,
  driverInfo,
  type LibraryProbe,
  type PlatformInfo,
  platformInfo,
  prebuildTuples,
  readElf,
} from '../native/diagnose';

const HELP = `Usage: resnext doctor [--json] [--require-cuda]

Reports the platform, Node.js and N-API versions, the native binary in use (prebuild or source
build) and where it was loaded from, CPU features and the GEMM kernels selected, threads, and for
CUDA: the backend library, NVIDIA driver, GPU, CUDA runtime, cuDNN and cuBLAS (found or missing,
with the folders searched and the fix), then a one-line verdict.

  --json           print the report as one JSON object
  --require-cuda   exit with status 1 unless CUDA can be used (for GPU machines' CI)

Exit status: 0 when the CPU backend works (and CUDA with --require-cuda), 1 otherwise.`;

export interface DoctorReport {
  resnext: { version: string; root: string };
  platform: PlatformInfo;
  node: { version: string; napi: number; modules: string; execPath: string };
  addon: {
    loaded: boolean;
    path: string | null;
    kind: AddonKind | null;
    /** The N-API version the addon is built against (package.json binary.napi_versions). */
    napiVersion: number;
    /** The newest glibc the binary needs (Linux), e.g. "2.34". */
    glibcRequired: string | null;
    /** Platforms the package has prebuilds for. */
    prebuilds: string[];
    error: string | null;
  };
  cpu: {
    model: string;
    cores: number;
    features: { avx2: boolean; fma: boolean; avx512f: boolean } | null;
    /** GEMM/convolution micro-kernels in use: avx512, avx2 or scalar. */
    gemmIsa: string | null;
    /** RESNEXT_CPU_ISA, which caps the choice, or null. */
    isaCap: string | null;
    threads: number | null;
    /** 'ok' when a small grouped convolution gives the expected numbers, else what went wrong. */
    check: string;
  };
  cuda: {
    available: boolean;
    library: string | null;
    reason: string;
    searched: string[];
    package: { name: string; installed: boolean; version: string | null };
    driver: DriverInfo;
    libraries: LibraryProbe[];
    /** deviceInfo() when available: GPU name, memory, driver/runtime/cuDNN/cuBLAS versions. */
    device: Record<string, unknown> | null;
    check: string | null;
  };
  verdict: { ok: boolean; cpu: boolean; cuda: boolean; message: string };
}

const ISAS = ['scalar', 'avx2', 'avx512'];

/** The kernel set native/cpu/gemm.cc picks: the best the CPU has, capped by RESNEXT_CPU_ISA. */
export function gemmIsa(f: { avx2: boolean; fma: boolean; avx512f: boolean }, cap: string | undefined): string {
  if (process.arch !== 'x64') return 'scalar';
  const want = cap ?? 'avx512';
  const avx2 = f.avx2 && f.fma;
  if (want === 'avx512' && avx2 && f.avx512f) return 'avx512';
  if ((want === 'avx512' || want === 'avx2') && avx2) return 'avx2';
  return 'scalar';
}

function readJson(file: string): Record<string, unknown> | null {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch {
    return null;
  }
}

/** The first clause of a long reason, for the verdict line. */
function short(reason: string): string {
  reason = reason.replace(/^could not load \S+: /, '');
  const cut = [...reason.matchAll(/ \(|: |; |\. /g)].find((m) => (m.index ?? 0) > 20)?.index;
  const s = cut ? reason.slice(0, cut) : reason;
  return s.length > 140 ? `${s.slice(0, 137)}...` : s;
}

export function collectReport(): DoctorReport {
  const root = path.resolve(__dirname, '..', '..');
  const pkg = readJson(path.join(root, 'package.json')) ?? {};
  const napiVersions = ((pkg.binary as { napi_versions?: number[] } | undefined)?.napi_versions ?? [8]) as number[];
  const cpus = os.cpus();
  const cap = process.env.RESNEXT_CPU_ISA;
  const report: DoctorReport = {
    resnext: { version: String(pkg.version ?? 'unknown'), root },
    platform: platformInfo(),
    node: { version: process.version, napi: Number(process.versions.napi), modules: process.versions.modules, execPath: process.execPath },
    addon: { loaded: false, path: null, kind: null, napiVersion: Math.max(...napiVersions), glibcRequired: null, prebuilds: prebuildTuples(root), error: null },
    cpu: { model: cpus[0]?.model.trim() ?? 'unknown', cores: cpus.length, features: null, gemmIsa: null, isaCap: cap ?? null, threads: null, check: 'not run' },
    cuda: {
      available: false,
      library: null,
      reason: '',
      searched: [],
      package: { name: `@resnext/cuda-${process.platform}-${process.arch}`, installed: false, version: null },
      driver: driverInfo(true),
      libraries: [],
      device: null,
      check: null,
    },
    verdict: { ok: false, cpu: false, cuda: false, message: '' },
  };

  let addon: typeof AddonModule | null = null;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    addon = require('../native/addon') as typeof AddonModule;
    report.addon.loaded = true;
    report.addon.path = addon.addonPath;
    report.addon.kind = addonKind(addon.addonPath, root);
    report.addon.glibcRequired = readElf(addon.addonPath)?.glibc ?? null;
  } catch (e) {
    report.addon.error = (e as Error).message;
    report.cuda.reason = 'the native addon did not load';
    report.verdict.message = `NOT OK: the native addon could not be loaded: ${short((e as Error).message.replace(/^resnext: /, ''))}`;
    return report;
  }

  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const rx = require('../index') as typeof import('../index');
    report.cpu.features = rx.cpuFeatures();
    report.cpu.gemmIsa = gemmIsa(report.cpu.features, cap);
    report.cpu.threads = rx.numThreads();
    // A grouped 3x3 convolution of ones, padding 1: 9 inside, 4 in a corner.
    const y = rx.tidy(() => rx.conv2d(rx.ones([1, 4, 5, 5]), rx.ones([4, 2, 3, 3]), { padding: 1, groups: 2 }).dataSync());
    report.cpu.check = y[0] === 8 && y[6] === 18 ? 'ok' : `a test convolution gave ${y[0]} and ${y[6]} where 8 and 18 were expected`;
  } catch (e) {
    report.cpu.check = `failed: ${(e as Error).message}`;
  }
  report.verdict.cpu = report.cpu.check === 'ok';

  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const cuda = require('../native/cuda') as typeof CudaModule;
  const pkgLib = cuda.cudaPackageLibrary();
  if (pkgLib) {
    report.cuda.package.installed = true;
    report.cuda.package.version = String(readJson(path.join(path.dirname(pkgLib), 'package.json'))?.version ?? 'unknown');
  }
  const s = cuda.cudaStatus();
  Object.assign(report.cuda, { available: s.available, library: s.library, reason: s.reason, searched: s.searched });
  report.cuda.libraries = cuda.cudaDependencies(s.library);
  if (s.available) {
    try {
      report.cuda.device = cuda.deviceInfo() as Record<string, unknown>;
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const rx = require('../index') as typeof import('../index');
      const v = rx.tidy(() => rx.sum(rx.ones([64], { device: 'cuda' })).item());
      report.cuda.check = v === 64 ? 'ok' : `a test sum on the GPU gave ${v} where 64 was expected`;
    } catch (e) {
      report.cuda.check = `failed: ${(e as Error).message}`;
    }
  }
  report.verdict.cuda = s.available && report.cuda.check === 'ok';

  const isa = `${report.cpu.gemmIsa} kernels, ${report.cpu.threads} threads`;
  if (!report.verdict.cpu) report.verdict.message = `NOT OK: the CPU backend check ${report.cpu.check}`;
  else if (report.verdict.cuda) report.verdict.message = `OK: CPU (${isa}) and CUDA (${String(report.cuda.device?.name ?? 'GPU')}) ready`;
  else if (s.available) report.verdict.message = `OK for CPU (${isa}); CUDA loaded but its check ${report.cuda.check}`;
  else report.verdict.message = `OK for CPU (${isa}); CUDA unavailable: ${short(s.reason)}`;
  report.verdict.ok = report.verdict.cpu;
  return report;
}

function yesNo(b: boolean): string {
  return b ? 'yes' : 'no';
}

export function formatReport(r: DoctorReport): string {
  const lines: string[] = [];
  const row = (k: string, v: string) => lines.push(`${k.padEnd(12)}${v}`);
  const p = r.platform;
  row('resnext', `${r.resnext.version} (${r.resnext.root})`);
  row('platform', `${p.os}-${p.arch}${p.libc ? `, ${p.libc}${p.glibcVersion ? ` ${p.glibcVersion}` : ''}` : ''}, ${p.distro}`);
  row('node', `${r.node.version}, N-API ${r.node.napi} (the addon needs N-API ${r.addon.napiVersion}), ${r.node.execPath}`);
  if (r.addon.loaded) {
    row('addon', `${r.addon.kind}: ${r.addon.path}${r.addon.glibcRequired ? ` (needs glibc >= ${r.addon.glibcRequired})` : ''}`);
  } else row('addon', `NOT LOADED: ${r.addon.error}`);
  row('prebuilds', r.addon.prebuilds.length ? r.addon.prebuilds.join(', ') : 'none in this package');
  const f = r.cpu.features;
  row('cpu', `${r.cpu.model}, ${r.cpu.cores} cores${f ? `; avx2 ${yesNo(f.avx2)}, fma ${yesNo(f.fma)}, avx512f ${yesNo(f.avx512f)}` : ''}`);
  if (r.cpu.gemmIsa) {
    let cap = r.cpu.isaCap === null ? 'RESNEXT_CPU_ISA unset' : `RESNEXT_CPU_ISA=${r.cpu.isaCap}`;
    if (r.cpu.isaCap !== null && !ISAS.includes(r.cpu.isaCap)) cap += ` is not one of ${ISAS.join('|')}, so the portable kernels run`;
    row('kernels', `${r.cpu.gemmIsa} GEMM/convolution kernels (${cap}); check ${r.cpu.check}`);
  }
  if (r.cpu.threads !== null) row('threads', `${r.cpu.threads}${process.env.RESNEXT_NUM_THREADS ? ` (RESNEXT_NUM_THREADS=${process.env.RESNEXT_NUM_THREADS})` : ''}`);
  if (r.addon.loaded) {
    const c = r.cuda;
    const d = c.driver;
    const gpus = d.gpus.length ? d.gpus.map((g) => `${g.name} (${g.memory})`).join(', ') : d.devices.length ? d.devices.join(', ') : 'none found';
    row('gpu', `${gpus}; driver ${d.version ?? 'not found'} (looked at ${d.searched.join(', ')})`);
    // The library rows below carry the diagnosis part of the reason.
    row('cuda', c.available ? `available: ${c.library}` : `unavailable: ${c.reason.split(DIAGNOSIS)[0]}`);
    if (c.device) {
      const v = c.device;
      row('', `${String(v.name)}, compute ${String(v.computeCapability)}, driver CUDA ${String(v.driverCudaVersion)}, runtime ${String(v.cudaRuntimeVersion)}, cuDNN ${String(v.cudnnVersion)}, cuBLAS ${String(v.cublasVersion)}; check ${c.check}`);
    }
    row('', `${c.package.name}: ${c.package.installed ? `installed (${c.package.version})` : 'not installed'}`);
    for (const l of c.libraries) {
      if (l.onLoaderPath) row('', `${l.name.padEnd(18)} found: ${l.path} (${l.via})`);
      else if (l.path) row('', `${l.name.padEnd(18)} off the loader path: ${l.path}; ${l.fix}`);
      else row('', `${l.name.padEnd(18)} missing (searched ${l.searched.join(', ')}); fix: ${l.fix}`);
    }
  }
  lines.push(`verdict: ${r.verdict.message}`);
  return `${lines.join('\n')}\n`;
}

/** `resnext doctor [--json] [--require-cuda]`; returns the exit status. */
export async function doctorCommand(argv: string[]): Promise<number> {
  let flags: { json?: boolean; help?: boolean; 'require-cuda'?: boolean };
  try {
    flags = parseArgs({
      args: argv,
      options: { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' }, 'require-cuda': { type: 'boolean' } },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (e) {
    process.stderr.write(`resnext doctor: ${(e as Error).message}. Run 'resnext doctor --help' for the options.\n`);
    return 2;
  }
  if (flags.help) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  const report = collectReport();
  process.stdout.write(flags.json ? `${JSON.stringify(report, null, 1)}\n` : formatReport(report));
  if (!report.verdict.ok) return 1;
  return flags['require-cuda'] && !report.verdict.cuda ? 1 : 0;
}

if (require.main === module) {
  doctorCommand(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`resnext doctor: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
