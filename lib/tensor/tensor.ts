/**
 * Tensor: a TypeScript object over a native handle. Shape, dtype and device follow PyTorch
 * (activations [N, C, H, W]); data crosses only through `await t.data()` (a copy, NCHW
 * row-major). Ownership is explicit: dispose(), `using`, tidy() scopes; GC frees handles that
 * were dropped without dispose, as a safety net only.
 */
import { describe, fail, ResnextError } from '../native/errors';
import { native, type DTypeName, type DeviceName, type TensorHandle } from '../native/addon';

export type DType = DTypeName;
export type Device = DeviceName;
export type TypedArray = Float32Array | Float64Array | Int32Array;

/** A node of the autograd tape (lib/autograd): how to push a gradient to the op's inputs. */
export interface GradNode {
  readonly name: string;
  readonly inputs: readonly (Tensor | null)[];
  /** Returns one gradient per input (null where the input needs none). */
  backward(grad: Tensor): (Tensor | null)[];
  /** Frees what the node saved for backward. */
  release(): void;
  released: boolean;
}

// Symbol.dispose exists from Node 20.4 on some builds only; define it so `using` works.
const disposeSymbol: typeof Symbol.dispose =
  (Symbol as { dispose?: typeof Symbol.dispose }).dispose ??
  ((Symbol as unknown as { dispose: symbol }).dispose = Symbol.for('Symbol.dispose') as typeof Symbol.dispose);

// No FinalizationRegistry: a dropped Tensor takes its native handle with it, and the handle's
// finalizer runs inside GC (native/binding/tensor_handle.h), freeing the storage even in a loop
// that never yields to the event loop. (A registry would hold the handle until its cleanup task
// ran, which a synchronous loop never lets happen.)

// ------------------------------------------------------------------ scopes

interface Scope {
  tracked: Set<Tensor>;
}
const scopes: Scope[] = [];

function track(t: Tensor): void {
  const s = scopes[scopes.length - 1];
  if (s) s.tracked.add(t);
}

// Handles made inside a scope do not report their bytes to V8 (native/binding/tensor_handle.h):
// the scope frees them, and reporting a training step's churn made V8 run several full GCs per
// step. A tensor that leaves every scope (a survivor of the outermost tidy, keep()) is reported
// then, so GC-only code outside scopes stays bounded.
let deferring = false;
function enterScope(scope: Scope): void {
  scopes.push(scope);
  if (!deferring) {
    deferring = true;
    native.deferExternalMemory(true);
  }
}
function leaveScope(scope: Scope): void {
  scopes.splice(scopes.indexOf(scope), 1);
  if (deferring && scopes.length === 0) {
    deferring = false;
    native.deferExternalMemory(false);
  }
}
/** Hands t to the innermost scope, or reports its bytes when it now belongs to none. */
function adopt(t: Tensor): void {
  const s = scopes[scopes.length - 1];
  if (s) s.tracked.add(t);
  else t._accountMemory();
}

/** Removes t from every open scope, so tidy() will not dispose it. Returns t. */
export function keep<T extends Tensor>(t: T): T {
  for (const s of scopes) s.tracked.delete(t);
  t._accountMemory();
  return t;
}

/**
 * @internal keep() without reporting t's bytes to V8, for tensors whose owner frees them
 * explicitly within the step: autograd's saved tensors and intermediate gradients (reporting
 * them brought back most of the per-step full GCs).
 */
export function keepOwned<T extends Tensor>(t: T): T {
  for (const s of scopes) s.tracked.delete(t);
  return t;
}

function collect(v: unknown, out: Set<Tensor>, depth = 0): void {
  if (depth > 8 || v === null || v === undefined) return;
  if (v instanceof Tensor) {
    out.add(v);
  } else if (Array.isArray(v)) {
    for (const x of v) collect(x, out, depth + 1);
  } else if (v instanceof Map) {
    for (const x of v.values()) collect(x, out, depth + 1);
  } else if (typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
    for (const x of Object.values(v as object)) collect(x, out, depth + 1);
  }
}

/**
 * Disposes what a scope that threw created, and frees what their autograd nodes saved for a
 * backward that can no longer come (a step that fails mid-forward would otherwise hold its
 * activations until GC).
 */
function disposeFailed(scope: Scope): void {
  for (const t of scope.tracked) {
    const node = t.gradFn;
    if (node && !node.released) node.release();
    t.dispose();
  }
}

/**
 * Runs fn and disposes every tensor created inside it, except the tensors it returns (directly
 * or inside arrays / plain objects / Maps) and those marked with keep(). Returned tensors move
 * to the enclosing scope. fn must be synchronous.
 */
export function tidy<T>(fn: () => T): T {
  if (typeof fn !== 'function') fail('ERR_ARG', 'tidy', 'fn', 'a function', describe(fn));
  const scope: Scope = { tracked: new Set() };
  enterScope(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    leaveScope(scope);
    disposeFailed(scope);
    throw e;
  }
  leaveScope(scope);
  if (result instanceof Promise) {
    for (const t of scope.tracked) t.dispose();
    fail('ERR_ARG', 'tidy', 'fn', 'a synchronous function', 'a function returning a Promise');
  }
  const survivors = new Set<Tensor>();
  collect(result, survivors);
  for (const t of scope.tracked) {
    if (survivors.has(t)) adopt(t);
    else t.dispose();
  }
  return result;
}

/**
 * Runs fn; if it throws, disposes every tensor created inside it (a builder that fails half way
 * leaves nothing behind), else hands them all to the enclosing scope, like code outside any
 * scope. fn must be synchronous.
 */
export function disposeOnThrow<T>(fn: () => T): T {
  const scope: Scope = { tracked: new Set() };
  enterScope(scope);
  let ok = false;
  try {
    const result = fn();
    ok = true;
    return result;
  } finally {
    leaveScope(scope);
    if (ok) for (const t of scope.tracked) adopt(t);
    else disposeFailed(scope);
  }
}

// ------------------------------------------------------------------ Tensor

/** The most arrays plus numbers array() builds (2^27: about 4 GB of V8 heap at worst). */
const MAX_ARRAY_NODES = 2 ** 27;

export class Tensor {
  /** The native handle; null once disposed. */
  private h: TensorHandle | null;
  private _shape: readonly number[];
  private _dtype: DType;
  private _device: Device;
  /** Whether gradients flow to this tensor. Set it on leaves (parameters, inputs). */
  requiresGrad = false;
  /** Accumulated gradient of a leaf after backward(); null until then. */
  grad: Tensor | null = null;
  /** The op that produced this tensor, when it was recorded on the tape. */
  gradFn: GradNode | null = null;

  /** @internal Wrap a native handle. Use the creation functions (tensor, zeros, ...) instead. */
  constructor(handle: TensorHandle) {
    if (!(handle instanceof (native as unknown as { TensorHandle: new (...a: unknown[]) => TensorHandle }).TensorHandle))
      fail('ERR_ARG', 'Tensor', 'handle', 'a native tensor handle (use tensor(), zeros(), ...)', describe(handle));
    this.h = handle;
    this._shape = Object.freeze(handle.shape);
    this._dtype = handle.dtype;
    this._device = handle.device;
    track(this);
  }

  // An object made with Object.create(Tensor.prototype) has none of these: reading one throws
  // the handle getter's ERR_ARG instead of returning undefined into the caller's arithmetic.
  get shape(): readonly number[] {
    return this._shape ?? this.handle.shape;
  }
  get dtype(): DType {
    return this._dtype ?? this.handle.dtype;
  }
  get device(): Device {
    return this._device ?? this.handle.device;
  }

  /**
   * @internal Points this tensor at new data (another device or dtype), keeping its identity,
   * so modules and optimisers that hold it see the change (like PyTorch's `param.data = ...`).
   * Frees the old handle.
   */
  /** Moves this tensor's data to another device in place (Module.to): same Tensor, new storage. */
  _moveTo(device: Device): void {
    this._replaceHandle(native.to(this.handle, device));
  }

  /** @internal Reports the handle's bytes to V8 (once); see adopt(). */
  _accountMemory(): void {
    this.h?.account();
  }

  _replaceHandle(handle: TensorHandle): void {
    if (!scopes.some((sc) => sc.tracked.has(this))) handle.account();
    const old = this.handle;
    this.h = handle;
    this._shape = Object.freeze(handle.shape);
    this._dtype = handle.dtype;
    this._device = handle.device;
    if (old !== handle) old.dispose();
  }

  /** The live native handle (throws ERR_DISPOSED after dispose()). */
  get handle(): TensorHandle {
    const h = this.h;
    if (h) return h;
    if (h === null)
      throw new ResnextError(`tensor expected a live tensor, received a disposed tensor of shape [${this.shape.join(', ')}]`, 'ERR_DISPOSED');
    // Object.create(Tensor.prototype) and the like: the constructor never ran.
    return fail('ERR_ARG', 'tensor', 'tensor', 'a tensor made by resnext (tensor(), zeros(), an op, ...)', 'a Tensor object whose constructor never ran');
  }

  get isDisposed(): boolean {
    return this.h === null;
  }

  get ndim(): number {
    return this.shape.length;
  }

  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /**
   * Copies the data to the host: a typed array in NCHW row-major order. Waits (off the JS
   * thread) for the kernels that compute this tensor; the event loop keeps running meanwhile.
   */
  data(): Promise<TypedArray> {
    return native.readDataAsync(this.handle);
  }

  /** Synchronous data(): blocks the JS thread until the tensor is computed. */
  dataSync(): TypedArray {
    return native.readData(this.handle);
  }

  /** The value of a one-element tensor. */
  item(): number {
    if (this.size !== 1) fail('ERR_SHAPE', 'item', 'tensor', 'exactly one element', `shape [${this.shape.join(', ')}]`);
    return this.dataSync()[0];
  }

  /** Nested JS arrays (for printing and tests). */
  async array(): Promise<unknown> {
    // Every nested JS array is a heap object: refuse shapes like [1e9, 0] (no data, a billion
    // empty arrays) before V8 runs out of memory.
    void this.handle;
    let arrays = 0;
    let outer = 1;
    for (const d of this.shape.slice(0, -1)) {
      outer *= d;
      arrays += outer;
    }
    if (arrays + this.size > MAX_ARRAY_NODES)
      fail('ERR_OOM', 'array', 'tensor', `at most ${MAX_ARRAY_NODES} nested arrays and elements`, `shape [${this.shape.join(', ')}]`);
    const d = Array.from(await this.data());
    const build = (dim: number, off: number): unknown => {
      if (dim === this.shape.length) return d[off];
      const stride = this.shape.slice(dim + 1).reduce((a, b) => a * b, 1);
      return Array.from({ length: this.shape[dim] }, (_, i) => build(dim + 1, off + i * stride));
    };
    return build(0, 0);
  }

  /** Sets every element to value, in place (not recorded for autograd). */
  fill_(value: number): this {
    if (typeof value !== 'number') fail('ERR_ARG', 'fill_', 'value', 'a number', describe(value));
    native.fill_(this.handle, value);
    return this;
  }

  /** Copies src (same shape and dtype, any device) into this tensor, in place (not recorded for autograd). */
  copy_(src: Tensor): this {
    if (!(src instanceof Tensor)) fail('ERR_ARG', 'copy_', 'source', 'a Tensor', describe(src));
    native.copy_(src.handle, this.handle);
    return this;
  }

  /** Frees this handle now (storage shared with views stays until they go too). Safe to call twice. */
  dispose(): void {
    if (!this.h) return;
    this.h.dispose();
    this.h = null;
    // gradFn stays: a disposed intermediate can still pass gradients (nodes keep their own aliases).
  }

  [disposeSymbol](): void {
    this.dispose();
  }

  toString(): string {
    return `Tensor(shape=[${this.shape.join(', ')}], dtype=${this.dtype}, device=${this.device}${this.requiresGrad ? ', requiresGrad' : ''}${this.h ? '' : ', disposed'})`;
  }
}

export interface MemoryInfo {
  /** Live tensor handles (including views and tensors saved for backward). */
  tensors: number;
  /** Bytes held by live tensors. */
  bytes: number;
  storages: number;
  peakBytes: number;
  /** Bytes reserved by the device's caching allocator (CUDA; equals bytes on the CPU). */
  reservedBytes: number;
}

/** Live tensors and bytes in the native core, for one device (default 'cpu'). */
export function memory(device: Device = 'cpu'): MemoryInfo {
  return native.memory(device);
}

/** Waits until every queued kernel on the device has run (rethrows a kernel's error). */
export function synchronize(device: Device = 'cpu'): void {
  native.synchronize(device);
}

/** Threads used by the CPU backend (RESNEXT_NUM_THREADS, else all cores). */
export function numThreads(): number {
  return native.numThreads();
}
export function setNumThreads(n: number): void {
  if (typeof n !== 'number' || !Number.isInteger(n)) fail('ERR_ARG', 'setNumThreads', 'threads', 'an integer in [1, 1024]', describe(n));
  native.setNumThreads(n);
}

/** The SIMD extensions of this CPU that the kernels can use (the choice is made at run time). */
export function cpuFeatures(): { avx2: boolean; fma: boolean; avx512f: boolean } {
  return native.cpuFeatures();
}
