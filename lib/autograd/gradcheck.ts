/**
 * gradcheck: compares the analytic gradients of fn (from backward) with central finite
 * differences, in float64. The output is reduced with fixed pseudo-random weights v
 * (L = sum(v * fn(inputs))), so every output element's gradient is checked at once; each
 * input element is then perturbed by +-eps and dL/dx estimated as (L+ - L-) / (2 eps).
 */
import { describe, fail } from '../native/errors';
import { mul } from '../ops/elementwise';
import { sum } from '../ops/shape';
import { tensor } from '../tensor/create';
import { Tensor, tidy } from '../tensor/tensor';
import { noGrad } from './engine';

export interface GradcheckOptions {
  eps?: number;
  atol?: number;
  rtol?: number;
  /** Indices of inputs to check (default: every input with requiresGrad). */
  check?: number[];
}

export interface GradcheckResult {
  ok: boolean;
  /** Largest |analytic - numeric| over all checked elements. */
  maxAbsError: number;
  /** Worst element: input index, flat element index, analytic and numeric values. */
  worst: { input: number; index: number; analytic: number; numeric: number } | null;
  checked: number;
}

function weights(n: number): Float64Array {
  const v = new Float64Array(n);
  let s = 12345;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) % 2147483648;
    v[i] = 0.5 + s / 2147483648; // in [0.5, 1.5): no cancellation to zero
  }
  return v;
}

export function gradcheck(fn: (...inputs: Tensor[]) => Tensor, inputs: Tensor[], options: GradcheckOptions = {}): GradcheckResult {
  if (typeof fn !== 'function') fail('ERR_ARG', 'gradcheck', 'fn', 'a function', describe(fn));
  if (!Array.isArray(inputs) || !inputs.every((t) => t instanceof Tensor))
    fail('ERR_ARG', 'gradcheck', 'inputs', 'an array of Tensors', describe(inputs));
  inputs.forEach((t, i) => {
    if (t.requiresGrad && t.dtype !== 'float64')
      fail('ERR_DTYPE', 'gradcheck', `inputs[${i}]`, 'float64 (finite differences need double precision)', t.dtype);
  });
  const eps = options.eps ?? 1e-6;
  const atol = options.atol ?? 1e-5;
  const rtol = options.rtol ?? 1e-3;
  const idx = options.check ?? inputs.flatMap((t, i) => (t.requiresGrad ? [i] : []));
  const base = inputs.map((t) => Float64Array.from(t.dataSync()));

  // Fresh leaves for each evaluation, so fn may not mutate the caller's tensors.
  const makeInputs = (override?: [number, Float64Array]) =>
    inputs.map((t, i) =>
      tensor(override && override[0] === i ? override[1] : t.dtype === 'int32' ? t.dataSync() : base[i], [...t.shape], {
        dtype: t.dtype,
        requiresGrad: t.requiresGrad && idx.includes(i),
      }),
    );

  let v: Float64Array | null = null;
  const lossOf = (out: Tensor): Tensor => {
    if (!v) v = weights(out.size);
    const w = tensor(v, [...out.shape], { dtype: 'float64' });
    const m = mul(out, w);
    const s = sum(m);
    m.dispose();
    w.dispose();
    return s;
  };

  // Analytic: one backward of L = sum(v * out).
  const analytic = tidy(() => {
    const xs = makeInputs();
    const out = fn(...xs);
    if (!(out instanceof Tensor)) fail('ERR_ARG', 'gradcheck', 'fn', 'a function returning a Tensor', describe(out));
    if (!v) v = weights(out.size);
    const w = tensor(v, [...out.shape], { dtype: 'float64' });
    // Seed backward with v directly: dL/dout = v.
    out.backward(w);
    const grads = idx.map((i) => (xs[i].grad ? Float64Array.from(xs[i].grad!.dataSync()) : new Float64Array(base[i].length)));
    // tidy() keeps leaf gradients; these leaves are ours, so are their gradients.
    for (const x of xs) {
      x.grad?.dispose();
      x.grad = null;
    }
    return grads;
  });

  const evalL = (i: number, data: Float64Array): number =>
    tidy(() => noGrad(() => lossOf(fn(...makeInputs([i, data]))).item()));

  let maxAbs = 0;
  let worst: GradcheckResult['worst'] = null;
  let ok = true;
  let checked = 0;
  idx.forEach((i, k) => {
    const x = Float64Array.from(base[i]);
    for (let e = 0; e < x.length; e++) {
      const orig = x[e];
      x[e] = orig + eps;
      const lp = evalL(i, x);
      x[e] = orig - eps;
      const lm = evalL(i, x);
      x[e] = orig;
      const numeric = (lp - lm) / (2 * eps);
      const a = analytic[k][e];
      const err = Math.abs(a - numeric);
      checked++;
      if (err > atol + rtol * Math.abs(numeric)) ok = false;
      if (err >= maxAbs) {
        maxAbs = err;
        worst = { input: i, index: e, analytic: a, numeric };
      }
    }
  });
  return { ok, maxAbsError: maxAbs, worst, checked };
}
