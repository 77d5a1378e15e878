/** Shape and movement ops: reshape, flatten, permute, expand, cast, to(device), clone, sum, mean. */
import { describe, fail } from '../native/errors';
import { native } from '../native/addon';
import { defineGradient, needsGrad, record } from '../autograd/engine';
import { checkDType, checkShape, deviceOf } from '../tensor/create';
import type { Tensor, DType } from '../tensor/tensor';
import { mul } from './elementwise';
import { bool, H, sumTo, T } from './util';

defineGradient('reshape', ['x']);
defineGradient('permute', ['x']);
defineGradient('expand', ['x']);
defineGradient('cast', ['x']);
defineGradient('to', ['x']);
defineGradient('sum', ['x']);

/** A view with a new shape (one size may be -1). Shares storage with x. */
export function reshape(x: Tensor, shape: number[]): Tensor {
  if (!Array.isArray(shape)) fail('ERR_SHAPE', 'reshape', 'shape', 'an array of integers', describe(shape));
  const out = T(native.reshape(H('reshape', 'x', x), shape));
  if (!needsGrad(x)) return out;
  return record(out, 'reshape', [x], [], (g) => [T(native.reshape(g.handle, [...x.shape]))]);
}

/** Flattens dims startDim.. into one (default: all but the batch dim). */
export function flatten(x: Tensor, startDim = 1): Tensor {
  H('flatten', 'x', x);
  if (!Number.isInteger(startDim) || startDim < 0 || startDim >= Math.max(1, x.ndim))
    fail('ERR_ARG', 'flatten', 'startDim', `an integer in [0, ${Math.max(0, x.ndim - 1)}]`, describe(startDim));
  return reshape(x, [...x.shape.slice(0, startDim), -1]);
}

/** Reorders axes (a copy). Used for layout conversions, e.g. NCHW -> NHWC is [0, 2, 3, 1]. */
export function permute(x: Tensor, dims: number[]): Tensor {
  if (!Array.isArray(dims)) fail('ERR_ARG', 'permute', 'dims', 'an array of axes', describe(dims));
  const out = T(native.permute(H('permute', 'x', x), dims));
  if (!needsGrad(x)) return out;
  const inv = new Array<number>(dims.length);
  dims.forEach((d, i) => {
    inv[d] = i;
  });
  return record(out, 'permute', [x], [], (g) => [T(native.permute(g.handle, inv))]);
}

/** Broadcasts x to shape (a copy). */
export function expand(x: Tensor, shape: number[]): Tensor {
  const out = T(native.expand(H('expand', 'x', x), checkShape('expand', shape)));
  if (!needsGrad(x)) return out;
  return record(out, 'expand', [x], [], (g) => [sumTo(g, x.shape)]);
}

/** A copy with another dtype. */
export function cast(x: Tensor, dtype: DType): Tensor {
  const out = T(native.cast(H('cast', 'x', x), checkDType('cast', dtype)));
  if (!needsGrad(x) || dtype === 'int32') return out;
  return record(out, 'cast', [x], [], (g) => [T(native.cast(g.handle, x.dtype))]);
}

/** A copy on another device. */
export function to(x: Tensor, device: 'cpu' | 'cuda'): Tensor {
  const out = T(native.to(H('to', 'x', x), deviceOf('to', device)));
  if (!needsGrad(x)) return out;
  return record(out, 'to', [x], [], (g) => [T(native.to(g.handle, x.device))]);
}

/** A copy of x (same device and dtype), differentiable. */
export function clone(x: Tensor): Tensor {
  H('clone', 'x', x);
  return to(x, x.device);
}

function normDims(op: string, x: Tensor, dims: number | number[] | undefined): number[] {
  if (dims === undefined) return x.shape.map((_, i) => i);
  const d = typeof dims === 'number' ? [dims] : dims;
  if (!Array.isArray(d)) fail('ERR_ARG', op, 'dims', 'an axis or an array of axes', describe(dims));
  return d.map((a) => {
    if (!Number.isInteger(a) || a < -x.ndim || a >= x.ndim)
      fail('ERR_ARG', op, 'dims', `axes in [${-x.ndim}, ${x.ndim - 1}]`, describe(a));
    return a < 0 ? a + x.ndim : a;
  });
}

/** Sum over dims (all by default). */
export function sum(x: Tensor, dims?: number | number[], keepdim?: boolean): Tensor {
  const h = H('sum', 'x', x);
  const d = normDims('sum', x, dims);
  const kd = bool('sum', 'keepdim', keepdim, false);
  if (d.length === 0) return reshape(x, [...x.shape]);
  const out = T(native.sum(h, d, kd));
  if (!needsGrad(x)) return out;
  const kshape = x.shape.map((s, i) => (d.includes(i) ? 1 : s));
  return record(out, 'sum', [x], [], (g) => {
    const r = native.reshape(g.handle, kshape);
    const e = native.expand(r, [...x.shape]);
    r.dispose();
    return [T(e)];
  });
}

/** Mean over dims (all by default). */
export function mean(x: Tensor, dims?: number | number[], keepdim?: boolean): Tensor {
  H('mean', 'x', x);
  const d = normDims('mean', x, dims);
  const n = d.reduce((a, i) => a * x.shape[i], 1);
  const s = sum(x, d, keepdim);
  const out = mul(s, 1 / n);
  s.dispose();
  return out;
}
