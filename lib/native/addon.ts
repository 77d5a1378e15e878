/**
 * Loads the native addon (prebuilt or built from source, found by node-gyp-build) and
 * declares the typed interface of everything it exports. Nothing else in lib/ touches the
 * addon object directly except through `native`.
 */
import * as path from 'node:path';
import { addonKind, explainAddonLoadError, explainMissingAddon } from './diagnose';
import { ResnextError } from './errors';

export type DTypeName = 'float32' | 'float64' | 'int32' | 'bfloat16';
export type DeviceName = 'cpu' | 'cuda';

/** A native tensor handle: shape, dtype and device of a core tensor; freed by dispose(). */
export interface TensorHandle {
  readonly shape: number[];
  readonly dtype: DTypeName;
  readonly device: DeviceName;
  readonly disposed: boolean;
  readonly nbytes: number;
  dispose(): void;
  sharesStorage(other: TensorHandle): boolean;
}

type H = TensorHandle;
type Pair = [number, number];

export interface NativeAddon {
  setErrorClass(ctor: new (message: string, code: never) => Error): void;
  fromData(data: Float32Array | Float64Array | Int32Array, shape: number[], dtype: DTypeName, device: string): H;
  readData(t: H): Float32Array | Float64Array | Int32Array;
  readDataAsync(t: H): Promise<Float32Array | Float64Array | Int32Array>;
  full(shape: number[], dtype: DTypeName, device: string, value: number): H;
  empty(shape: number[], dtype: DTypeName, device: string): H;
  randUniform(shape: number[], dtype: DTypeName, device: string, lo: number, hi: number, seed: number, offset: number): H;
  randNormal(shape: number[], dtype: DTypeName, device: string, mean: number, std: number, seed: number, offset: number): H;
  copy(t: H, device: string): H;
  copyInto(src: H, dst: H): void;
  fill(t: H, value: number): void;
  cast(t: H, dtype: DTypeName): H;
  reshape(t: H, shape: number[]): H;
  permute(t: H, dims: number[]): H;
  expand(t: H, shape: number[]): H;
  conv2dForward(x: H, w: H, b: H | null, stride: Pair, padding: Pair, groups: number): H;
  conv2dBackwardData(gy: H, w: H, xShape: number[], stride: Pair, padding: Pair, groups: number): H;
  conv2dBackwardFilter(gy: H, x: H, wShape: number[], stride: Pair, padding: Pair, groups: number): H;
  batchNormForward(
    x: H, gamma: H, beta: H, residual: H | null, runningMean: H, runningVar: H,
    training: boolean, momentum: number, eps: number, act: number,
  ): [H, H, H];
  batchNormBackward(
    gy: H, x: H, y: H, gamma: H, saveMean: H, saveInvstd: H,
    training: boolean, momentum: number, eps: number, act: number,
  ): [H, H, H, H | null];
  relu(x: H): H;
  reluBackward(gy: H, y: H): H;
  binary(op: number, a: H, b: H): H;
  scalar(op: number, x: H, s: number): H;
  unary(op: number, x: H): H;
  sum(x: H, dims: number[], keepdim: boolean): H;
  maxPool2dForward(x: H, kernel: Pair, stride: Pair, padding: Pair): [H, H];
  maxPool2dBackward(gy: H, indices: H, xShape: number[]): H;
  globalAvgPool2dForward(x: H): H;
  globalAvgPool2dBackward(gy: H, xShape: number[]): H;
  matmul(a: H, b: H, ta: boolean, tb: boolean): H;
  linearForward(x: H, w: H, b: H | null): H;
  crossEntropyForward(logits: H, targets: H, smoothing: number): [H, H];
  crossEntropyBackward(probs: H, targets: H, smoothing: number, gloss: H): H;
  topk(x: H, k: number): H;
  sgdStep(
    param: H, grad: H, buf: H | null, lr: number, momentum: number, dampening: number,
    weightDecay: number, nesterov: boolean, firstStep: boolean,
  ): void;
  memory(device?: string): { tensors: number; storages: number; bytes: number; peakBytes: number; reservedBytes: number };
  loadCuda(library: string): { ok: boolean; library: string; reason: string };
  deviceInfo(device: string): string;
  synchronize(device: string): void;
  numThreads(): number;
  setNumThreads(n: number): void;
  cpuFeatures(): { avx2: boolean; fma: boolean; avx512f: boolean };
}

/** Package root: dist/native/addon.js -> ../.. ; lib/native/addon.ts (ts-jest) -> ../.. */
export const packageRoot = path.resolve(__dirname, '..', '..');

function load(): { addon: NativeAddon; file: string } {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const gypBuild = require('node-gyp-build') as { (dir: string): unknown; resolve(dir: string): string };
  const where = `${process.platform}-${process.arch} (node ${process.version}, N-API ${process.versions.napi})`;
  let file: string;
  try {
    // build/Release (a source build) first, then prebuilds/<platform>-<arch>/*.node matching
    // this runtime, N-API and libc. No install script needs to have run.
    file = gypBuild.resolve(packageRoot);
  } catch (e) {
    throw new ResnextError(
      `resnext: no native addon found for ${where}: ${explainMissingAddon(packageRoot)}. ` + `Cause: ${(e as Error).message}`,
      'ERR_LOAD',
    );
  }
  let addon: NativeAddon;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    addon = require(file) as NativeAddon;
  } catch (e) {
    const msg = (e as Error).message;
    throw new ResnextError(
      `resnext: the native addon ${file} (${addonKind(file, packageRoot)}) could not be loaded on ${where}: ${msg}. ` +
        explainAddonLoadError(file, packageRoot, msg),
      'ERR_LOAD',
    );
  }
  addon.setErrorClass(ResnextError);
  return { addon, file };
}

const loaded = load();
export const native: NativeAddon = loaded.addon;
/** The path of the loaded addon binary (for diagnostics). */
export const addonPath: string = loaded.file;
/** Whether that binary is one of the package's prebuilds or a source build (build/Release). */
export const addonSource = addonKind(loaded.file, packageRoot);
