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
