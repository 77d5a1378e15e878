/** Helpers shared by the op modules: argument checks and broadcasting-gradient reduction. */
import { describe, fail } from '../native/errors';
import { native, type TensorHandle } from '../native/addon';
import { Tensor } from '../tensor/tensor';

export function T(h: TensorHandle): Tensor {
  return new Tensor(h);
}

/** Checks that v is a live Tensor and returns its handle. */
export function H(op: string, arg: string, v: unknown): TensorHandle {
  if (!(v instanceof Tensor)) fail('ERR_ARG', op, arg, 'a Tensor', describe(v));
  if (v.isDisposed) fail('ERR_DISPOSED', op, arg, 'a live tensor', `a disposed tensor of shape [${v.shape.join(', ')}]`);
  return v.handle;
}

export function optH(op: string, arg: string, v: unknown): TensorHandle | null {
  return v === undefined || v === null ? null : H(op, arg, v);
}

/** [a, a] for a number, [a, b] for a pair; checks integers >= min. */
export function pair(op: string, arg: string, v: unknown, dflt: number, min: number): [number, number] {
  const p = v === undefined ? [dflt, dflt] : typeof v === 'number' ? [v, v] : v;
  if (!Array.isArray(p) || p.length !== 2 || !p.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= min))
    fail('ERR_ARG', op, arg, `an integer >= ${min} or a pair [h, w] of them`, describe(v));
  return [p[0], p[1]];
}

export function num(op: string, arg: string, v: unknown, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v)) fail('ERR_ARG', op, arg, 'a finite number', describe(v));
  return v;
}

export function int(op: string, arg: string, v: unknown, dflt: number, min: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) fail('ERR_ARG', op, arg, `an integer >= ${min}`, describe(v));
  return v;
}

export function bool(op: string, arg: string, v: unknown, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') fail('ERR_ARG', op, arg, 'a boolean', describe(v));
  return v;
}

export function opts<O extends object>(op: string, v: O | undefined): Partial<O> {
  if (v === undefined) return {};
  if (typeof v !== 'object' || v === null) fail('ERR_ARG', op, 'options', 'an options object', describe(v));
  return v;
}

/** Sums a broadcast gradient back to `shape` (the inverse of broadcasting). Returns g when equal. */
export function sumTo(g: Tensor, shape: readonly number[]): Tensor {
  if (g.shape.length === shape.length && g.shape.every((d, i) => d === shape[i])) return g;
  const lead = g.shape.length - shape.length;
  const dims: number[] = [];
  g.shape.forEach((d, i) => {
    if (i < lead || (shape[i - lead] === 1 && d !== 1)) dims.push(i);
  });
  const s = dims.length ? native.sum(g.handle, dims, true) : native.reshape(g.handle, [...g.shape]);
  const r = native.reshape(s, [...shape]);
  s.dispose();
  return T(r);
}
