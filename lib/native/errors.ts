/**
 * The one error class of the package. Every error thrown by resnext — from TypeScript or from
 * native code — is a ResnextError with a stable `code` (design.md section 3):
 * ERR_SHAPE, ERR_DTYPE, ERR_DEVICE, ERR_DISPOSED, ERR_OOM, ERR_ARG, ERR_CUDA, ERR_CUDNN,
 * ERR_IO, ERR_LOAD, ERR_INTERNAL. Messages name the op, the argument, what was expected and
 * what was received.
 */
export type ErrorCode =
  | 'ERR_SHAPE'
  | 'ERR_DTYPE'
  | 'ERR_DEVICE'
  | 'ERR_DISPOSED'
  | 'ERR_OOM'
  | 'ERR_ARG'
  | 'ERR_CUDA'
  | 'ERR_CUDNN'
  | 'ERR_IO'
  | 'ERR_LOAD'
  | 'ERR_INTERNAL';

export class ResnextError extends Error {
  readonly code: ErrorCode;
  constructor(message: string, code: ErrorCode) {
    super(message);
    this.name = 'ResnextError';
    this.code = code;
  }
}

/** Throws ResnextError(code, "<op>: <arg> expected <expected>, received <received>"). */
export function fail(code: ErrorCode, op: string, arg: string, expected: string, received: string): never {
  throw new ResnextError(`${op}: ${arg} expected ${expected}, received ${received}`, code);
}

/** A short description of a JS value for error messages. */
export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (Array.isArray(v)) return `an array of length ${v.length}`;
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name}`;
  if (typeof v === 'function') return 'a function';
  return `an object (${(v as object).constructor?.name ?? 'Object'})`;
}

/**
 * The kind of a typed array, by its tag rather than instanceof: arrays made in another realm
 * (a worker thread's message, a vm context such as jest's) fail instanceof but are the same kind.
 */
export function typedArrayKind(v: unknown): 'Float32Array' | 'Float64Array' | 'Int32Array' | 'other' | null {
  if (!ArrayBuffer.isView(v)) return null;
  const tag = Object.prototype.toString.call(v).slice(8, -1);
  return tag === 'Float32Array' || tag === 'Float64Array' || tag === 'Int32Array' ? tag : 'other';
}
