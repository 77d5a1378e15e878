/**
 * Finding and loading the CUDA backend, a separate shared library (libresnext_cuda.so) that the
 * CPU addon dlopen()s the first time a user asks for device 'cuda'. Nothing here runs for CPU
 * use. When CUDA cannot be used, the reason names what is missing and how to fix it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ResnextError } from './errors';
import { addonPath, native, packageRoot } from './addon';

export const CUDA_LIBRARY = 'libresnext_cuda.so';

export interface CudaStatus {
  available: boolean;
  /** The library that was loaded or tried; null if none was found. */
  library: string | null;
  /** Why CUDA cannot be used (empty when available). */
  reason: string;
  /** Paths searched for the library. */
  searched: string[];
}

/** Where the CUDA backend library may be: RESNEXT_CUDA_LIBRARY, beside the addon, build/Release, prebuilds. */
export function cudaLibraryCandidates(): string[] {
  const c: string[] = [];
  if (process.env.RESNEXT_CUDA_LIBRARY) c.push(path.resolve(process.env.RESNEXT_CUDA_LIBRARY));
  c.push(path.join(path.dirname(addonPath), CUDA_LIBRARY));
  c.push(path.join(packageRoot, 'build', 'Release', CUDA_LIBRARY));
  c.push(path.join(packageRoot, 'build-cuda', CUDA_LIBRARY));
  c.push(path.join(packageRoot, 'prebuilds', `${process.platform}-${process.arch}`, CUDA_LIBRARY));
  return [...new Set(c)];
}

let status: CudaStatus | null = null;

/** Loads the CUDA backend if possible (once per process) and says whether it can be used and why not. */
export function cudaStatus(): CudaStatus {
  if (status) return status;
  const searched = cudaLibraryCandidates();
  const found = searched.find((p) => fs.existsSync(p));
  if (!found) {
    status = {
      available: false,
      library: null,
      reason:
        `the CUDA backend library ${CUDA_LIBRARY} was not found (searched: ${searched.join(', ')}); ` +
        'build it with `npm run build:cuda` on a machine with the CUDA toolkit, cuDNN 9 and cuBLAS, ' +
        'or set RESNEXT_CUDA_LIBRARY to its path',
      searched,
    };
    return status;
  }
  const r = native.loadCuda(found);
  status = { available: r.ok, library: r.library, reason: r.reason, searched };
  return status;
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
