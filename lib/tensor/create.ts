/**
 * Creating tensors: from JS data, constants, and seeded random numbers. The random generator
 * is counter-based (seed, offset): each draw of n values advances the offset by n, so results
 * are reproducible, independent of thread count, and the state is two numbers that a
 * checkpoint can save (getRngState / setRngState).
 */
import { describe, fail, typedArrayKind } from '../native/errors';
import { native } from '../native/addon';
import { ensureDevice } from '../native/cuda';
import { Tensor, type Device, type DType, type TypedArray } from './tensor';

export interface TensorOptions {
  dtype?: DType;
  device?: Device | 'cuda:0';
  requiresGrad?: boolean;
}

const DTYPES: readonly DType[] = ['float32', 'float64', 'int32', 'bfloat16'];

export function checkDType(op: string, dtype: unknown): DType {
  if (!DTYPES.includes(dtype as DType)) fail('ERR_DTYPE', op, 'dtype', '"float32", "float64", "int32" or "bfloat16"', describe(dtype));
  return dtype as DType;
}

export function checkShape(op: string, shape: unknown, arg = 'shape'): number[] {
  if (!Array.isArray(shape)) fail('ERR_SHAPE', op, arg, 'an array of non-negative integers', describe(shape));
  shape.forEach((d, i) => {
    if (typeof d !== 'number' || !Number.isInteger(d) || d < 0)
      fail('ERR_SHAPE', op, arg, 'an array of non-negative integers', `[${shape.map((x) => describe(x)).join(', ')}] (element ${i})`);
  });
  return shape as number[];
}

export function deviceOf(op: string, d: unknown): Device {
  if (d === undefined || d === 'cpu') return 'cpu';
  if (d === 'cuda' || d === 'cuda:0') {
    ensureDevice(op, 'cuda');
    return 'cuda';
  }
  fail('ERR_DEVICE', op, 'device', '"cpu" or "cuda"', describe(d));
}

function finish(t: Tensor, op: string, opts: TensorOptions): Tensor {
  if (opts.requiresGrad) {
    if (t.dtype === 'int32') fail('ERR_DTYPE', op, 'requiresGrad', 'a float dtype for a tensor that requires grad', 'int32');
    t.requiresGrad = true;
  }
  return t;
}

function checkOpts(op: string, opts: unknown): TensorOptions {
  if (opts === undefined) return {};
  if (typeof opts !== 'object' || opts === null) fail('ERR_ARG', op, 'options', 'an object { dtype, device, requiresGrad }', describe(opts));
  return opts as TensorOptions;
}

/** Deepest nesting tensor() reads from JS arrays (deeper data is refused, not a stack overflow). */
const MAX_NESTING = 64;

function flatten(data: unknown, out: number[], shape: number[], depth: number, op: string): void {
  if (Array.isArray(data)) {
    if (depth >= MAX_NESTING) fail('ERR_SHAPE', op, 'data', `arrays nested at most ${MAX_NESTING} deep`, 'deeper nesting');
    if (shape.length === depth) shape.push(data.length);
    else if (shape[depth] !== data.length)
      fail('ERR_SHAPE', op, 'data', `a rectangular nested array (length ${shape[depth]} at depth ${depth})`, `length ${data.length}`);
    for (const x of data) flatten(x, out, shape, depth + 1, op);
  } else if (typeof data === 'number') {
    if (shape.length !== depth) fail('ERR_SHAPE', op, 'data', 'a rectangular nested array', `a number at depth ${depth}`);
    out.push(data);
  } else {
    fail('ERR_ARG', op, 'data', 'numbers', describe(data));
  }
}

/**
 * A tensor from JS data: a typed array or a (nested) array of numbers. `shape` may be omitted
 * for nested arrays. dtype defaults to float32 (float64 for a Float64Array, int32 for an
 * Int32Array). The data is copied.
 */
export function tensor(data: ArrayLike<number> | number | unknown[], shape?: number[], opts?: TensorOptions): Tensor {
  const op = 'tensor';
  const o = checkOpts(op, opts);
  let values: ArrayLike<number>;
  let inferred: number[];
  if (typeof data === 'number') {
    values = [data];
    inferred = [];
  } else if (ArrayBuffer.isView(data)) {
    const kind = Object.prototype.toString.call(data).slice(8, -1);
    if (kind === 'DataView' || kind === 'BigInt64Array' || kind === 'BigUint64Array')
      fail('ERR_ARG', op, 'data', 'a typed array of numbers (Float32Array, Float64Array, Int32Array, ...)', `a ${kind}`);
    if ((data.buffer as { detached?: boolean }).detached)
      fail('ERR_ARG', op, 'data', 'a typed array with its data', `a ${kind} whose buffer was transferred (detached)`);
    values = data as unknown as ArrayLike<number>;
    inferred = [values.length];
  } else if (Array.isArray(data)) {
    const flat: number[] = [];
    inferred = [];
    flatten(data, flat, inferred, 0, op);
    values = flat;
  } else {
    fail('ERR_ARG', op, 'data', 'a number, an array of numbers or a typed array', describe(data));
  }
  const dtype = checkDType(
    op,
    o.dtype ?? (typedArrayKind(data) === 'Float64Array' ? 'float64' : typedArrayKind(data) === 'Int32Array' ? 'int32' : 'float32'),
  );
  const s = shape === undefined ? inferred : checkShape(op, shape);
  const n = s.reduce((a, b) => a * b, 1);
  if (values.length !== n)
    fail('ERR_SHAPE', op, 'data', `${n} values for shape [${s.join(', ')}]`, `${values.length} values`);
  const device = deviceOf(op, o.device);
  if (dtype === 'bfloat16') {
    // No bfloat16 typed array in JS: upload float32 and round on the device.
    const f = native.fromData(Float32Array.from(values as ArrayLike<number>), s, 'float32', device);
    const h = native.cast(f, 'bfloat16');
    f.dispose();
    return finish(new Tensor(h), op, o);
  }
  const Ctor = dtype === 'float32' ? Float32Array : dtype === 'float64' ? Float64Array : Int32Array;
  const typed: TypedArray = typedArrayKind(values) === Ctor.name ? (values as TypedArray) : Ctor.from(values as ArrayLike<number>);
  return finish(new Tensor(native.fromData(typed, s, dtype, device)), op, o);
}

/** A constant tensor; each public name reaches the core op of that name, so errors name it. */
function constant(op: 'full' | 'zeros' | 'ones', shape: number[], value: number, opts?: TensorOptions): Tensor {
  const o = checkOpts(op, opts);
  const s = checkShape(op, shape);
  const dtype = checkDType(op, o.dtype ?? 'float32');
  const device = deviceOf(op, o.device);
  const t = op === 'zeros' ? native.zeros(s, dtype, device) : op === 'ones' ? native.ones(s, dtype, device) : native.full(s, dtype, device, value);
  return finish(new Tensor(t), op, o);
}

export function full(shape: number[], value: number, opts?: TensorOptions): Tensor {
  if (typeof value !== 'number') fail('ERR_ARG', 'full', 'value', 'a number', describe(value));
  return constant('full', shape, value, opts);
}

/** A tensor with uninitialised contents (like torch.empty): fast, for buffers that are overwritten. */
export function empty(shape: number[], opts?: TensorOptions): Tensor {
  const o = checkOpts('empty', opts);
  const t = native.empty(checkShape('empty', shape), checkDType('empty', o.dtype ?? 'float32'), deviceOf('empty', o.device));
  return finish(new Tensor(t), 'empty', o);
}

export function zeros(shape: number[], opts?: TensorOptions): Tensor {
  return constant('zeros', shape, 0, opts);
}

export function ones(shape: number[], opts?: TensorOptions): Tensor {
  return constant('ones', shape, 1, opts);
}

function likeOf(op: string, t: unknown): Tensor {
  if (!(t instanceof Tensor)) fail('ERR_ARG', op, 't', 'a Tensor', describe(t));
  return t;
}

export function zerosLike(t: Tensor, opts?: TensorOptions): Tensor {
  likeOf('zerosLike', t);
  return zeros([...t.shape], { dtype: t.dtype, device: t.device, ...opts });
}

export function onesLike(t: Tensor, opts?: TensorOptions): Tensor {
  likeOf('onesLike', t);
  return ones([...t.shape], { dtype: t.dtype, device: t.device, ...opts });
}

// ------------------------------------------------------------------ random

const rng = { seed: 0x5eed, offset: 0 };

/** Seeds the global generator (like torch.manual_seed). */
export function manualSeed(seed: number): void {
  if (!Number.isSafeInteger(seed) || seed < 0) fail('ERR_ARG', 'manualSeed', 'seed', 'a non-negative safe integer', describe(seed));
  rng.seed = seed;
  rng.offset = 0;
}

export function getRngState(): { seed: number; offset: number } {
  return { ...rng };
}

export function setRngState(state: { seed: number; offset: number }): void {
  if (!state || !Number.isSafeInteger(state.seed) || !Number.isSafeInteger(state.offset) || state.seed < 0 || state.offset < 0)
    fail('ERR_ARG', 'setRngState', 'state', '{ seed, offset } non-negative safe integers', describe(state));
  rng.seed = state.seed;
  rng.offset = state.offset;
}

export interface RandomOptions extends TensorOptions {
  /** Draw from this seed instead of the global generator (which is then not advanced). */
  seed?: number;
}

function draw(shape: number[], opts: RandomOptions | undefined, op: string): [number[], RandomOptions, number, number] {
  const o = checkOpts(op, opts) as RandomOptions;
  const s = checkShape(op, shape);
  const n = s.reduce((a, b) => a * b, 1);
  if (o.seed !== undefined) {
    if (!Number.isSafeInteger(o.seed) || o.seed < 0) fail('ERR_ARG', op, 'seed', 'a non-negative safe integer', describe(o.seed));
    return [s, o, o.seed, 0];
  }
  const off = rng.offset;
  rng.offset += n;
  return [s, o, rng.seed, off];
}

/** Standard normal samples times std plus mean (defaults 1 and 0). */
export function randn(shape: number[], opts?: RandomOptions & { mean?: number; std?: number }): Tensor {
  const [s, o, seed, off] = draw(shape, opts, 'randn');
  const t = native.randn(s, checkDType('randn', o.dtype ?? 'float32'), deviceOf('randn', o.device), opts?.mean ?? 0, opts?.std ?? 1, seed, off);
  return finish(new Tensor(t), 'randn', o);
}

/** Uniform samples in [low, high) (defaults 0 and 1). */
export function rand(shape: number[], opts?: RandomOptions & { low?: number; high?: number }): Tensor {
  const [s, o, seed, off] = draw(shape, opts, 'rand');
  const t = native.rand(s, checkDType('rand', o.dtype ?? 'float32'), deviceOf('rand', o.device), opts?.low ?? 0, opts?.high ?? 1, seed, off);
  return finish(new Tensor(t), 'rand', o);
}
