/**
 * Diagnosis of the native pieces, without loading them: where the addon came from, whether the
 * shared libraries the CUDA backend needs (the driver's libcuda.so.1, libcudnn.so.9,
 * libcublas.so.13, libcublasLt.so.13) can be found by the dynamic loader, what the NVIDIA driver
 * says, and what to do about anything missing. Used by the loader (lib/native/addon.ts and
 * cuda.ts: error messages) and by `resnext doctor`.
 *
 * Nothing here imports the addon, so it also works when the addon cannot load. Everything is
 * best effort and never throws: the authoritative answer is the dlopen() in the native loader;
 * this module explains it (which file, which folders, which fix).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

// ------------------------------------------------------------------ ELF

export interface ElfInfo {
  needed: string[];
  /** DT_RUNPATH entries (what the loader searches, after LD_LIBRARY_PATH, for this object's dependencies). */
  runpath: string[];
  /** DT_RPATH entries (searched before LD_LIBRARY_PATH; only when there is no RUNPATH). */
  rpath: string[];
  /** The newest GLIBC_x.y symbol version the object needs, e.g. "2.34"; null if none or not ELF. */
  glibc: string | null;
}

/** Reads the dynamic section of an ELF64 little-endian file (x86-64, aarch64); null if it is not one. */
export function readElf(file: string): ElfInfo | null {
  try {
    const buf = fs.readFileSync(file);
    if (buf.length < 64 || buf.readUInt32BE(0) !== 0x7f454c46 || buf[4] !== 2 || buf[5] !== 1) return null;
    const phoff = Number(buf.readBigUInt64LE(0x20));
    const phentsize = buf.readUInt16LE(0x36);
    const phnum = buf.readUInt16LE(0x38);
    const loads: { offset: number; vaddr: number; filesz: number }[] = [];
    let dyn: { offset: number; filesz: number } | null = null;
    for (let i = 0; i < phnum; i++) {
      const o = phoff + i * phentsize;
      const type = buf.readUInt32LE(o);
      const seg = { offset: Number(buf.readBigUInt64LE(o + 8)), vaddr: Number(buf.readBigUInt64LE(o + 16)), filesz: Number(buf.readBigUInt64LE(o + 32)) };
      if (type === 1) loads.push(seg);
      if (type === 2) dyn = seg;
    }
    if (!dyn) return { needed: [], runpath: [], rpath: [], glibc: null };
    const toOffset = (vaddr: number) => {
      const s = loads.find((l) => vaddr >= l.vaddr && vaddr < l.vaddr + l.filesz);
      return s ? vaddr - s.vaddr + s.offset : -1;
    };
    let strtab = -1;
    let verneed = -1;
    let verneedNum = 0;
    const needed: number[] = [];
    const runpath: number[] = [];
    const rpath: number[] = [];
    for (let o = dyn.offset; o + 16 <= dyn.offset + dyn.filesz; o += 16) {
      const tag = Number(buf.readBigInt64LE(o));
      const val = Number(buf.readBigUInt64LE(o + 8));
      if (tag === 0) break;
      if (tag === 1) needed.push(val);
      else if (tag === 5) strtab = toOffset(val);
      else if (tag === 15) rpath.push(val);
      else if (tag === 29) runpath.push(val);
      else if (tag === 0x6ffffffe) verneed = toOffset(val);
      else if (tag === 0x6fffffff) verneedNum = val;
    }
    if (strtab < 0) return { needed: [], runpath: [], rpath: [], glibc: null };
    const str = (off: number) => buf.toString('utf8', strtab + off, buf.indexOf(0, strtab + off));
    const split = (list: number[]) => list.flatMap((v) => str(v).split(':')).filter(Boolean);
    let glibc: [number, number] | null = null;
    // Elf64_Verneed { vn_version u16, vn_cnt u16, vn_file u32, vn_aux u32, vn_next u32 } and
    // Elf64_Vernaux { vna_hash u32, vna_flags u16, vna_other u16, vna_name u32, vna_next u32 }.
    for (let i = 0, o = verneed; verneed >= 0 && i < verneedNum && o >= 0; i++) {
      const cnt = buf.readUInt16LE(o + 2);
      for (let j = 0, a = o + buf.readUInt32LE(o + 8); j < cnt; j++) {
        const m = /^GLIBC_(\d+)\.(\d+)/.exec(str(buf.readUInt32LE(a + 8)));
        if (m) {
          const v: [number, number] = [Number(m[1]), Number(m[2])];
          if (!glibc || v[0] > glibc[0] || (v[0] === glibc[0] && v[1] > glibc[1])) glibc = v;
        }
        const next = buf.readUInt32LE(a + 12);
        if (!next) break;
        a += next;
      }
      const next = buf.readUInt32LE(o + 12);
      if (!next) break;
      o += next;
    }
    return { needed: needed.map(str), runpath: split(runpath), rpath: split(rpath), glibc: glibc ? glibc.join('.') : null };
  } catch {
    return null;
  }
}

// ------------------------------------------------------------------ platform

export interface PlatformInfo {
  os: NodeJS.Platform;
  arch: string;
  /** glibc or musl on Linux, else null. */
  libc: 'glibc' | 'musl' | null;
  /** The glibc version of this process (e.g. "2.36"), or null. */
  glibcVersion: string | null;
  /** PRETTY_NAME from /etc/os-release, or os.type() + os.release(). */
  distro: string;
  kernel: string;
}

export function platformInfo(): PlatformInfo {
  let glibcVersion: string | null = null;
  try {
    const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
    glibcVersion = header?.glibcVersionRuntime ?? null;
  } catch {
    /* no report support */
  }
  let libc: PlatformInfo['libc'] = null;
  if (process.platform === 'linux') libc = glibcVersion ? 'glibc' : fs.existsSync('/etc/alpine-release') ? 'musl' : 'glibc';
  let distro = `${os.type()} ${os.release()}`;
  try {
    const m = /^PRETTY_NAME="?([^"\n]*)"?/m.exec(fs.readFileSync('/etc/os-release', 'utf8'));
    if (m) distro = m[1];
  } catch {
    /* not Linux, or no os-release */
  }
  return { os: process.platform, arch: process.arch, libc, glibcVersion, distro, kernel: os.release() };
}

function versionLess(a: string, b: string): boolean {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) < (y[i] ?? 0);
  return false;
}

// ------------------------------------------------------------------ the addon

export type AddonKind = 'prebuild' | 'source build' | 'other';

/** Whether the loaded addon is one of the package's prebuilds, a source build in build/, or something else. */
export function addonKind(file: string, root: string): AddonKind {
  const rel = path.relative(root, file);
  if (rel.startsWith(`prebuilds${path.sep}`)) return 'prebuild';
  if (rel.startsWith(`build${path.sep}`)) return 'source build';
  return 'other';
}

/** The prebuild folders shipped in the package (e.g. ["linux-x64"]). */
export function prebuildTuples(root: string): string[] {
  try {
    return fs
      .readdirSync(path.join(root, 'prebuilds'))
      .filter((d) => fs.readdirSync(path.join(root, 'prebuilds', d)).some((f) => f.endsWith('.node')))
      .sort();
  } catch {
    return [];
  }
}

const SOURCE_BUILD_FIX =
  'build it from source: `npm rebuild resnext --build-from-source` (needs cmake >= 3.19 and a C++17 compiler; ' +
  'scripts/install.js runs cmake-js)';

/** Why node-gyp-build found no addon for this platform, and what to do. */
export function explainMissingAddon(root: string): string {
  const tuple = `${process.platform}-${process.arch}`;
  const shipped = prebuildTuples(root);
  const p = platformInfo();
  const parts = [
    `this package ships prebuilt binaries for ${shipped.length ? shipped.join(', ') : 'no platform'}` +
      (shipped.includes(tuple) && p.libc === 'musl' ? ` (glibc only; this system uses musl)` : ''),
    `and no source build was found in ${path.join(root, 'build', 'Release')}`,
  ];
  return (
    `${parts.join(' ')}. If npm skipped the install script (recent npm versions ask before running them) or it failed, ` +
    SOURCE_BUILD_FIX
  );
}

/** Why require() of an addon file failed (glibc too old, wrong architecture, ...), and what to do. */
export function explainAddonLoadError(file: string, root: string, message: string): string {
  const hints: string[] = [];
  const elf = readElf(file);
  const p = platformInfo();
  if (/GLIBC_\d|GLIBCXX_\d|CXXABI_\d/.test(message) || (elf?.glibc && p.glibcVersion && versionLess(p.glibcVersion, elf.glibc)))
    hints.push(
      `${path.basename(file)} needs glibc >= ${elf?.glibc ?? '?'} and a matching libstdc++; this system has glibc ${p.glibcVersion ?? 'unknown'}. ` +
        SOURCE_BUILD_FIX,
    );
  else if (/wrong ELF class|invalid ELF header|not a valid Win32|mach-o, but wrong architecture|incompatible architecture/i.test(message))
    hints.push(`${file} was built for another platform or architecture than ${process.platform}-${process.arch}: ${SOURCE_BUILD_FIX}`);
  else if (/undefined symbol/.test(message))
    hints.push(`${file} does not match this Node.js or was built from other sources: ${SOURCE_BUILD_FIX}`);
  else hints.push(`${addonKind(file, root) === 'source build' ? 'rebuild it (npm run build:native) or remove build/ to use the prebuild; ' : ''}${SOURCE_BUILD_FIX}`);
  return hints.join(' ');
}

// ------------------------------------------------------------------ shared libraries

/** soname -> path, from `ldconfig -p` (entries for this architecture only); cached per process. */
let ldCache: Map<string, string> | null = null;
export function ldconfigCache(): Map<string, string> {
  if (ldCache) return ldCache;
  ldCache = new Map();
  if (process.platform !== 'linux') return ldCache;
  const archTag = process.arch === 'x64' ? 'x86-64' : process.arch === 'arm64' ? 'AArch64' : null;
  for (const bin of ['/sbin/ldconfig', '/usr/sbin/ldconfig', 'ldconfig']) {
    try {
      const out = execFileSync(bin, ['-p'], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] });
      for (const line of out.split('\n')) {
        const m = /^\s+(\S+) \(([^)]*)\) => (\S+)/.exec(line);
        if (m && (!archTag || m[2].includes(archTag)) && !ldCache.has(m[1])) ldCache.set(m[1], m[3]);
      }
      break;
    } catch {
      /* try the next one */
    }
  }
  return ldCache;
}

/** The loader's built-in search folders after ld.so.cache. */
const DEFAULT_DIRS = process.arch === 'arm64' ? ['/lib/aarch64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/lib64', '/usr/lib64', '/lib', '/usr/lib'] : ['/lib/x86_64-linux-gnu', '/usr/lib/x86_64-linux-gnu', '/lib64', '/usr/lib64', '/lib', '/usr/lib'];

/** Where NVIDIA's libraries often are without being on the loader's path. */
function offPathDirs(): string[] {
  const dirs = ['/usr/local/cuda/lib64', '/usr/local/cuda/targets/x86_64-linux/lib', '/usr/lib/wsl/lib', '/usr/lib64/nvidia', '/opt/cuda/lib64'];
  try {
    for (const d of fs.readdirSync('/usr/local')) if (/^cuda-\d/.test(d)) dirs.push(`/usr/local/${d}/lib64`);
  } catch {
    /* no /usr/local */
  }
  return dirs;
}

/** site-packages/dist-packages folders of Python environments that may hold NVIDIA's pip wheels. */
export function pythonSitePackages(extraRoots: string[] = []): string[] {
  const roots = [
    process.env.VIRTUAL_ENV,
    process.env.CONDA_PREFIX,
    path.join(os.homedir(), '.local'),
    '/usr/local',
    '/usr',
    ...extraRoots,
  ].filter((r): r is string => !!r);
  const out: string[] = [];
  for (const r of roots) {
    const lib = path.join(r, 'lib');
    let entries: string[] = [];
    try {
      entries = fs.readdirSync(lib);
    } catch {
      continue;
    }
    for (const py of entries.filter((e) => /^python3(\.\d+)?$/.test(e)))
      for (const sp of ['site-packages', 'dist-packages']) {
        const d = path.join(lib, py, sp);
        if (fs.existsSync(path.join(d, 'nvidia'))) out.push(d);
      }
  }
  return [...new Set(out)];
}

/** The lib folders of NVIDIA's wheels (nvidia-cudnn-cu13: nvidia/cudnn/lib; nvidia-cublas: nvidia/cu13/lib or nvidia/cublas/lib). */
export function pipLibDirs(extraRoots: string[] = []): string[] {
  const dirs: string[] = [];
  for (const sp of pythonSitePackages(extraRoots))
    for (const sub of ['cudnn', 'cu13', 'cublas', 'cuda_runtime', 'cuda_nvrtc']) {
      const d = path.join(sp, 'nvidia', sub, 'lib');
      if (fs.existsSync(d)) dirs.push(d);
    }
  if (process.env.CONDA_PREFIX) dirs.push(path.join(process.env.CONDA_PREFIX, 'lib'));
  return dirs;
}

export interface LibraryProbe {
  /** The soname, e.g. libcudnn.so.9. */
  name: string;
  /** What it is, e.g. "cuDNN 9". */
  what: string;
  /** The file found (on the loader's path if `onLoaderPath`, else elsewhere), or null. */
  path: string | null;
  /** Whether the dynamic loader will find it as the process is started now. */
  onLoaderPath: boolean;
  /** How it is found: LD_LIBRARY_PATH, RUNPATH, ld.so.cache, default, or where it lies off the path. */
  via: string | null;
  /** Every folder looked in, in order. */
  searched: string[];
  /** What to do; empty when it will be found. */
  fix: string;
}

export const CUDA_DEPENDENCIES: { name: string; what: string; install: string }[] = [
  {
    name: 'libcuda.so.1',
    what: 'NVIDIA driver',
    install:
      'install the NVIDIA driver (R580 or newer for CUDA 13) on a machine with an NVIDIA GPU; in a container, start it with the ' +
      'NVIDIA Container Toolkit (docker run --gpus all)',
  },
  {
    name: 'libcudnn.so.9',
    what: 'cuDNN 9',
    install: 'install cuDNN 9 for CUDA 13: `apt install cudnn9-cuda-13` (NVIDIA CUDA repository) or `pip install nvidia-cudnn-cu13`',
  },
  {
    name: 'libcublas.so.13',
    what: 'cuBLAS (CUDA 13)',
    install: 'install cuBLAS for CUDA 13: `apt install libcublas-13-0` (NVIDIA CUDA repository) or `pip install nvidia-cublas`',
  },
  {
    name: 'libcublasLt.so.13',
    what: 'cuBLASLt (CUDA 13)',
    install: 'install cuBLAS for CUDA 13: `apt install libcublas-13-0` (NVIDIA CUDA repository) or `pip install nvidia-cublas`',
  },
];

function onPathFix(dir: string): string {
  return (
    `the dynamic loader does not look in ${dir}: start node with LD_LIBRARY_PATH=${dir}\${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} ` +
    '(read at process start: setting process.env inside node is too late), or add the folder to a file in /etc/ld.so.conf.d/ and run `sudo ldconfig`'
  );
}

/**
 * Where the dynamic loader would find `soname` when `requester` (the CUDA library) needs or
 * dlopen()s it: DT_RPATH (without RUNPATH), LD_LIBRARY_PATH, DT_RUNPATH ($ORIGIN expanded),
 * ld.so.cache, the default folders; and, if none, where it lies off the path.
 */
export function probeLibrary(soname: string, requester: string | null = null, extraPipRoots: string[] = []): LibraryProbe {
  const dep = CUDA_DEPENDENCIES.find((d) => d.name === soname);
  const probe: LibraryProbe = { name: soname, what: dep?.what ?? soname, path: null, onLoaderPath: false, via: null, searched: [], fix: '' };
  const elf = requester ? readElf(requester) : null;
  const origin = requester ? path.dirname(requester) : '';
  const expand = (d: string) => d.replace(/\$ORIGIN|\$\{ORIGIN\}/g, origin);
  const tryDirs = (dirs: string[], via: string): boolean => {
    for (const d of dirs) {
      if (probe.searched.includes(d)) continue;
      probe.searched.push(d);
      const f = path.join(d, soname);
      if (fs.existsSync(f)) {
        probe.path = f;
        probe.via = via;
        return true;
      }
    }
    return false;
  };
  const ldLibraryPath = (process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean);
  const found =
    (elf && !elf.runpath.length && tryDirs(elf.rpath.map(expand), `RPATH of ${path.basename(requester!)}`)) ||
    tryDirs(ldLibraryPath, 'LD_LIBRARY_PATH') ||
    (elf && tryDirs(elf.runpath.map(expand), `RUNPATH of ${path.basename(requester!)}`)) ||
    (() => {
      probe.searched.push('ld.so.cache (ldconfig -p)');
      const hit = ldconfigCache().get(soname);
      if (hit && fs.existsSync(hit)) {
        probe.path = hit;
        probe.via = 'ld.so.cache';
        return true;
      }
      return false;
    })() ||
    tryDirs(DEFAULT_DIRS, 'default folders');
  if (found) {
    probe.onLoaderPath = true;
    return probe;
  }
  const off = [...offPathDirs(), ...pipLibDirs(extraPipRoots)];
  if (tryDirs(off, 'off the loader path')) {
    probe.fix = onPathFix(path.dirname(probe.path!));
    return probe;
  }
  probe.fix = dep?.install ?? `install ${soname}`;
  if (soname !== 'libcuda.so.1')
    probe.fix += ` (a pip wheel's lib folder must then be on LD_LIBRARY_PATH: e.g. <site-packages>/nvidia/${soname.startsWith('libcudnn') ? 'cudnn' : 'cu13'}/lib)`;
  return probe;
}

/** The four libraries the CUDA backend needs at run time (beyond the C/C++ runtime). */
export function probeCudaDependencies(cudaLibrary: string | null, extraPipRoots: string[] = []): LibraryProbe[] {
  return CUDA_DEPENDENCIES.map((d) => probeLibrary(d.name, cudaLibrary, extraPipRoots));
}

// ------------------------------------------------------------------ the driver and GPUs

export interface DriverInfo {
  /** The kernel module's version (e.g. "580.95.05") from /proc/driver/nvidia/version, or nvidia-smi. */
  version: string | null;
  /** /dev/nvidia<N> device files. */
  devices: string[];
  /** GPUs from nvidia-smi when it is on PATH and `query` was asked for. */
  gpus: { name: string; driver: string; memory: string }[];
  /** Where this came from or what was looked at. */
  searched: string[];
}

export function driverInfo(query = false): DriverInfo {
  const info: DriverInfo = { version: null, devices: [], gpus: [], searched: [] };
  if (process.platform !== 'linux') return info;
  info.searched.push('/proc/driver/nvidia/version');
  try {
    const m = /Kernel Module(?: for [^ ]+)?\s+([0-9.]+)/.exec(fs.readFileSync('/proc/driver/nvidia/version', 'utf8'));
    if (m) info.version = m[1];
  } catch {
    /* no NVIDIA kernel module */
  }
  info.searched.push('/dev/nvidia*');
  try {
    info.devices = fs.readdirSync('/dev').filter((d) => /^nvidia\d+$/.test(d)).map((d) => `/dev/${d}`);
  } catch {
    /* no /dev */
  }
  if (query) {
    info.searched.push('nvidia-smi');
    try {
      const out = execFileSync('nvidia-smi', ['--query-gpu=name,driver_version,memory.total', '--format=csv,noheader'], {
        encoding: 'utf8',
        timeout: 10000,
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      for (const line of out.trim().split('\n').filter(Boolean)) {
        const [name, driver, memory] = line.split(',').map((s) => s.trim());
        info.gpus.push({ name, driver, memory });
        info.version ??= driver;
      }
    } catch {
      /* not on PATH or no GPU */
    }
  }
  return info;
}

/** Separates the native loader's reason from this module's diagnosis in CudaStatus.reason. */
export const DIAGNOSIS = '. Diagnosis: ';

/**
 * A sentence for a failed CUDA load: which of the backend's libraries are missing or off the
 * loader's path, where the loader looked, and the fix (left out when `already` says it).
 * Empty when the probes find nothing wrong.
 */
export function explainCudaDependencies(probes: LibraryProbe[], already = ''): string {
  const parts: string[] = [];
  for (const p of probes.filter((q) => !q.onLoaderPath && !q.path)) {
    const fix = already.includes(p.fix) || (p.name === 'libcuda.so.1' && already.includes('install the NVIDIA driver')) ? '' : `: ${p.fix}`;
    parts.push(`${p.name} (${p.what}) not found (searched ${p.searched.join(', ')})${fix}`);
  }
  const off = probes.filter((q) => !q.onLoaderPath && q.path);
  if (off.length) {
    const dirs = [...new Set(off.map((p) => path.dirname(p.path!)))].join(':');
    parts.push(
      `${off.map((p) => `${p.name} is at ${p.path}`).join(', ')}, where the dynamic loader does not look: start node with ` +
        `LD_LIBRARY_PATH=${dirs}\${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} (read at process start: setting process.env inside node is too late), ` +
        'or add the folders to a file in /etc/ld.so.conf.d/ and run `sudo ldconfig`',
    );
  }
  return parts.join('; ');
}
