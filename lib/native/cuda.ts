/**
 * Finding and loading the CUDA backend, a separate shared library (libresnext_cuda.so) that the
 * CPU addon dlopen()s the first time a user asks for device 'cuda'. Nothing here runs for CPU
 * use. When CUDA cannot be used, the reason names what is missing and how to fix it: the native
 * loader says why dlopen() or the backend's initialisation (driver and library versions) failed,
 * and lib/native/diagnose.ts adds which of libcuda.so.1, libcudnn.so.9, libcublas.so.13 and
 * libcublasLt.so.13 the dynamic loader cannot find, where it looked and what to do.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ResnextError } from './errors';
import { addonPath, native, packageRoot } from './addon';
import { DIAGNOSIS, explainCudaDependencies, type LibraryProbe, probeCudaDependencies } from './diagnose';

export const CUDA_LIBRARY = 'libresnext_cuda.so';
/** The optional per-platform package that carries the CUDA library (scripts/prebuild.js --cuda-package writes it). */
export const CUDA_PACKAGE = `@resnext/cuda-${process.platform}-${process.arch}`;

export interface CudaStatus {
  available: boolean;
  /** The library that was loaded or tried; null if none was found. */
  library: string | null;
  /** Why CUDA cannot be used (empty when available). */
  reason: string;
  /** Paths searched for the library. */
  searched: string[];
  /**
   * When CUDA is unavailable: the shared libraries the backend needs (driver, cuDNN, cuBLAS,
   * cuBLASLt), whether the dynamic loader finds them, where it looked, and the fix.
   */
  dependencies?: LibraryProbe[];
}

/** The CUDA library of the optional package CUDA_PACKAGE, if that package is installed. */
export function cudaPackageLibrary(): string | null {
  try {
    const pj = require.resolve(`${CUDA_PACKAGE}/package.json`, { paths: [packageRoot] });
    return path.join(path.dirname(pj), CUDA_LIBRARY);
  } catch {
    return null;
  }
}

/**
 * Where the CUDA backend library may be, first match wins: RESNEXT_CUDA_LIBRARY, beside the
 * loaded addon (prebuilds/<platform>-<arch>/ for a prebuild, build/Release/ for a source build),
 * the optional package @resnext/cuda-<platform>-<arch>, build/Release, build-cuda, prebuilds.
 */
export function cudaLibraryCandidates(): string[] {
  const c: string[] = [];
  if (process.env.RESNEXT_CUDA_LIBRARY) c.push(path.resolve(process.env.RESNEXT_CUDA_LIBRARY));
  c.push(path.join(path.dirname(addonPath), CUDA_LIBRARY));
  const pkg = cudaPackageLibrary();
  if (pkg) c.push(pkg);
  c.push(path.join(packageRoot, 'build', 'Release', CUDA_LIBRARY));
  c.push(path.join(packageRoot, 'build-cuda', CUDA_LIBRARY));
  c.push(path.join(packageRoot, 'prebuilds', `${process.platform}-${process.arch}`, CUDA_LIBRARY));
  return [...new Set(c)];
}

/** pip environments to look in besides the usual ones: the one scripts/ci-cuda.sh makes. */
function devPipRoots(): string[] {
  return [path.join(packageRoot, '.cache', 'cuda-venv')];
}

let status: CudaStatus | null = null;

/** Loads the CUDA backend if possible (once per process) and says whether it can be used and why not. */
export function cudaStatus(): CudaStatus {
  if (status) return status;
  const searched = cudaLibraryCandidates();
  const found = searched.find((p) => fs.existsSync(p));
  if (process.platform !== 'linux') {
    status = { available: false, library: null, reason: `the CUDA backend is built for Linux only (this is ${process.platform}-${process.arch})`, searched: [] };
    return status;
  }
  if (!found) {
    status = {
      available: false,
      library: null,
      reason:
        `the CUDA backend library ${CUDA_LIBRARY} was not found (searched: ${searched.join(', ')}); ` +
        `install the prebuilt one with \`npm install ${CUDA_PACKAGE}\`, build it with \`npm run build:cuda\` on a machine with ` +
        'the CUDA toolkit, cuDNN 9 and cuBLAS, or set RESNEXT_CUDA_LIBRARY to its path',
      searched,
    };
    return status;
  }
  const r = native.loadCuda(found);
  status = { available: r.ok, library: r.library, reason: r.reason, searched };
  if (!r.ok) {
    // The native reason says what failed (dlopen, driver, versions); add which libraries the
    // loader cannot find, where it looked and the fix.
    status.dependencies = probeCudaDependencies(found, devPipRoots());
    const more = explainCudaDependencies(status.dependencies, r.reason);
    if (more) status.reason += `${DIAGNOSIS}${more}`;
  }
  return status;
}

/**
 * The backend's run-time libraries as the dynamic loader would find them for `library` (the CUDA
 * library found, or null): for `resnext doctor`, also when CUDA is available.
 */
export function cudaDependencies(library: string | null = cudaStatus().library): LibraryProbe[] {
  return cudaStatus().dependencies ?? probeCudaDependencies(library, devPipRoots());
}

/** True when device 'cuda' can be used. */
export function cudaAvailable(): boolean {
  return cudaStatus().available;
}

/** Throws ERR_DEVICE with the reason unless the device can be used. */
export function ensureDevice(op: string, device: string): void {
  if (device === 'cpu') return;
  const s = cudaStatus();
  if (!s.available) throw new ResnextError(`${op}: device expected a usable CUDA GPU, received none: ${s.reason}`, 'ERR_DEVICE');
}

export interface DeviceInfo {
  name?: string;
  [key: string]: unknown;
}

/** GPU name, memory, driver, CUDA runtime, cuDNN and cuBLAS versions (throws ERR_DEVICE without CUDA). */
export function deviceInfo(device: 'cuda' = 'cuda'): DeviceInfo {
  ensureDevice('deviceInfo', device);
  return JSON.parse(native.deviceInfo(device)) as DeviceInfo;
}
