/**
 * Plain reference implementations for the op tests: naive loops over Float64Arrays, written
 * from the definitions and independently of the native kernels.
 */
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { memory } from '../lib';

export type Arr = Float64Array;

export interface ConvCfg {
  N: number; C: number; H: number; W: number; K: number; R: number; S: number;
  stride: [number, number]; pad: [number, number]; groups: number;
}

export function convOut(c: ConvCfg): [number, number] {
  return [Math.floor((c.H + 2 * c.pad[0] - c.R) / c.stride[0]) + 1, Math.floor((c.W + 2 * c.pad[1] - c.S) / c.stride[1]) + 1];
}

/** Visits every (n, k, p, q, c, r, s) term of the convolution sum with its input index (or -1 for padding). */
function convTerms(c: ConvCfg, f: (yi: number, xi: number, wi: number) => void): void {
  const [P, Q] = convOut(c);
  const Cg = c.C / c.groups, Kg = c.K / c.groups;
  for (let n = 0; n < c.N; n++)
    for (let k = 0; k < c.K; k++) {
      const g = Math.floor(k / Kg);
      for (let p = 0; p < P; p++)
        for (let q = 0; q < Q; q++) {
          const yi = ((n * c.K + k) * P + p) * Q + q;
          for (let cc = 0; cc < Cg; cc++)
            for (let r = 0; r < c.R; r++)
              for (let s = 0; s < c.S; s++) {
                const h = p * c.stride[0] - c.pad[0] + r, w = q * c.stride[1] - c.pad[1] + s;
                if (h < 0 || h >= c.H || w < 0 || w >= c.W) continue;
                const xi = ((n * c.C + g * Cg + cc) * c.H + h) * c.W + w;
                const wi = ((k * Cg + cc) * c.R + r) * c.S + s;
                f(yi, xi, wi);
              }
        }
    }
}

export function conv2dRef(c: ConvCfg, x: Arr, w: Arr, b: Arr | null): Arr {
  const [P, Q] = convOut(c);
  const y = new Float64Array(c.N * c.K * P * Q);
  if (b) for (let i = 0; i < y.length; i++) y[i] = b[Math.floor(i / (P * Q)) % c.K];
  convTerms(c, (yi, xi, wi) => (y[yi] += x[xi] * w[wi]));
  return y;
}

export function conv2dBackwardRef(c: ConvCfg, x: Arr, w: Arr, gy: Arr): { gx: Arr; gw: Arr; gb: Arr } {
  const [P, Q] = convOut(c);
  const gx = new Float64Array(x.length), gw = new Float64Array(w.length), gb = new Float64Array(c.K);
  convTerms(c, (yi, xi, wi) => {
    gx[xi] += gy[yi] * w[wi];
    gw[wi] += gy[yi] * x[xi];
  });
  for (let i = 0; i < gy.length; i++) gb[Math.floor(i / (P * Q)) % c.K] += gy[i];
  return { gx, gw, gb };
}

export interface BnRef { y: Arr; mean: Arr; varBiased: Arr; runMean: Arr; runVar: Arr }

/** Training-mode batch norm with optional ReLU / residual add, and PyTorch's running-stat update. */
export function batchNormRef(
  x: Arr, shape: number[], gamma: Arr, beta: Arr, rm: Arr, rv: Arr, momentum: number, eps: number,
  act: 'none' | 'relu' | 'addrelu', residual: Arr | null, training = true,
): BnRef {
  const [N, C, H, W] = shape, HW = H * W, M = N * HW;
  const mean = new Float64Array(C), v = new Float64Array(C);
  const runMean = Float64Array.from(rm), runVar = Float64Array.from(rv);
  const y = new Float64Array(x.length);
  for (let c = 0; c < C; c++) {
    let s = 0;
    for (let n = 0; n < N; n++) for (let i = 0; i < HW; i++) s += x[(n * C + c) * HW + i];
    const mu = s / M;
    let ss = 0;
    for (let n = 0; n < N; n++) for (let i = 0; i < HW; i++) ss += (x[(n * C + c) * HW + i] - mu) ** 2;
    mean[c] = mu;
    v[c] = ss / M;
    const useMean = training ? mu : rm[c], useVar = training ? ss / M : rv[c];
    if (training) {
      runMean[c] = (1 - momentum) * rm[c] + momentum * mu;
      runVar[c] = (1 - momentum) * rv[c] + momentum * (ss / (M - 1));
    }
    for (let n = 0; n < N; n++)
      for (let i = 0; i < HW; i++) {
        const j = (n * C + c) * HW + i;
        let o = ((x[j] - useMean) / Math.sqrt(useVar + eps)) * gamma[c] + beta[c];
        if (act === 'addrelu') o += residual![j];
        if (act !== 'none') o = Math.max(o, 0);
        y[j] = o;
      }
  }
  return { y, mean, varBiased: v, runMean, runVar };
}

/** Gradient of sum(gy * batchNorm(x)) by the textbook formula (training mode). */
export function batchNormBackwardRef(
  x: Arr, shape: number[], gamma: Arr, y: Arr, gy: Arr, eps: number, act: 'none' | 'relu' | 'addrelu',
): { gx: Arr; gg: Arr; gb: Arr; gr: Arr } {
  const [N, C, H, W] = shape, HW = H * W, M = N * HW;
  const gx = new Float64Array(x.length), gr = new Float64Array(x.length);
  const gg = new Float64Array(C), gb = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    const idx: number[] = [];
    for (let n = 0; n < N; n++) for (let i = 0; i < HW; i++) idx.push((n * C + c) * HW + i);
    const mu = idx.reduce((a, j) => a + x[j], 0) / M;
    const v = idx.reduce((a, j) => a + (x[j] - mu) ** 2, 0) / M;
    const inv = 1 / Math.sqrt(v + eps);
    const g = idx.map((j) => (act === 'none' || y[j] > 0 ? gy[j] : 0));
    const xhat = idx.map((j) => (x[j] - mu) * inv);
    gb[c] = g.reduce((a, b) => a + b, 0);
    gg[c] = g.reduce((a, b, k) => a + b * xhat[k], 0);
    idx.forEach((j, k) => {
      gr[j] = g[k];
      gx[j] = (gamma[c] * inv / M) * (M * g[k] - gb[c] - xhat[k] * gg[c]);
    });
  }
  return { gx, gg, gb, gr };
}

export function maxPoolRef(x: Arr, shape: number[], k: number, s: number, p: number): { y: Arr; shape: number[]; arg: Int32Array } {
  const [N, C, H, W] = shape;
  const P = Math.floor((H + 2 * p - k) / s) + 1, Q = Math.floor((W + 2 * p - k) / s) + 1;
  const y = new Float64Array(N * C * P * Q), arg = new Int32Array(y.length);
  for (let nc = 0; nc < N * C; nc++)
    for (let i = 0; i < P; i++)
      for (let j = 0; j < Q; j++) {
        let best = -Infinity, bi = -1;
        for (let r = 0; r < k; r++)
          for (let t = 0; t < k; t++) {
            const h = i * s - p + r, w = j * s - p + t;
            if (h < 0 || h >= H || w < 0 || w >= W) continue;
            const v = x[nc * H * W + h * W + w];
            if (v > best) {
              best = v;
              bi = nc * H * W + h * W + w;
            }
          }
        y[(nc * P + i) * Q + j] = best;
        arg[(nc * P + i) * Q + j] = bi;
      }
  return { y, shape: [N, C, P, Q], arg };
}

export function linearRef(x: Arr, w: Arr, b: Arr | null, N: number, I: number, O: number): Arr {
  const y = new Float64Array(N * O);
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++) {
      let s = b ? b[o] : 0;
      for (let i = 0; i < I; i++) s += x[n * I + i] * w[o * I + i];
      y[n * O + o] = s;
    }
  return y;
}

export function crossEntropyRef(logits: Arr, targets: number[], N: number, K: number, eps: number): { loss: number; grad: Arr } {
  let loss = 0;
  const grad = new Float64Array(N * K);
  for (let n = 0; n < N; n++) {
    const row = Array.from(logits.subarray(n * K, (n + 1) * K));
    const mx = Math.max(...row);
    const z = row.reduce((a, v) => a + Math.exp(v - mx), 0);
    const logp = row.map((v) => v - mx - Math.log(z));
    for (let k = 0; k < K; k++) {
      const q = (k === targets[n] ? 1 - eps : 0) + eps / K;
      loss -= q * logp[k];
      grad[n * K + k] = (Math.exp(logp[k]) - q) / N;
    }
  }
  return { loss: loss / N, grad };
}

/** Deterministic pseudo-random values in [-1, 1). */
export function rnd(n: number, seed: number): Float64Array {
  const a = new Float64Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    a[i] = (s / 4294967296) * 2 - 1;
  }
  return a;
}

export function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let scale = 1e-6;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m / scale;
}

// GC frees dropped tensor handles (their finalizers run inside GC), so memory() can fall at any
// moment; tests that compare exact counts collect first.
v8.setFlagsFromString('--expose-gc');
const runGc = vm.runInNewContext('gc') as () => void;

/**
 * Collects garbage now, so every dropped tensor is freed and memory() counts are exact. Repeats
 * until the live-tensor count stops changing: one collection left a dropped handle behind once
 * in a loaded CI run (autograd's exact count was one off), and a handle can outlive the
 * collection that found its wrapper dead.
 */
export function settle(): void {
  let prev = -1;
  for (let i = 0; i < 8; i++) {
    runGc();
    const n = memory().tensors;
    if (n === prev) return;
    prev = n;
  }
}
