/**
 * A procedurally generated image dataset, built in so demos and tests train with no download.
 * Each class is a pattern family — stripes at four orientations, checkerboards, blobs, rings,
 * crosses, dot grids, ramps — drawn with random frequency, phase, orientation jitter, position,
 * colours, contrast and pixel noise. A small convnet learns it in a few epochs, but a linear
 * model on raw pixels does not (phase and position vary), so accuracy says something.
 * Sample i depends only on (seed, i): the same call always gives the same data.
 */
import { describe, fail } from '../native/errors';
import { fromSource, type Dataset } from './dataset';
import { Rng } from './rng';

export const SYNTHETIC_CLASSES = [
  'horizontal', 'vertical', 'diagonal', 'antidiagonal', 'checkerboard', 'blob', 'ring', 'cross', 'dots', 'ramp',
] as const;

export interface SyntheticOptions {
  /** Number of samples. */
  n: number;
  /** Image side (default 32). */
  size?: number;
  /** 1 or 3 (default 3). */
  channels?: number;
  /** 2..10 (default 10): the first `classes` patterns of SYNTHETIC_CLASSES. */
  classes?: number;
  seed?: number;
  /** Standard deviation of the pixel noise is drawn from [noise / 2, noise] (default 0.15). */
  noise?: number;
}

/** Pattern value in [0, 1] at pixel (x, y) for class c, with per-sample parameters p. */
function pattern(c: number, x: number, y: number, p: Record<string, number>): number {
  const u = x - p.cx, v = y - p.cy;
  switch (c) {
    case 0: case 1: case 2: case 3: {
      const t = u * Math.cos(p.theta) + v * Math.sin(p.theta);
      return 0.5 + 0.5 * Math.sin(p.f * t + p.phase);
    }
    case 4: {
      const a = u * Math.cos(p.theta) + v * Math.sin(p.theta);
      const b = -u * Math.sin(p.theta) + v * Math.cos(p.theta);
      return 0.5 + 0.5 * Math.tanh(4 * Math.sin(p.f * a + p.phase) * Math.sin(p.f * b + p.phase2));
    }
    case 5:
      return Math.exp(-(u * u + v * v) / (2 * p.sigma * p.sigma));
    case 6: {
      const r = Math.sqrt(u * u + v * v) - p.radius;
      return Math.exp(-(r * r) / (2 * p.width * p.width));
    }
    case 7: {
      const a = Math.exp(-(u * u) / (2 * p.width * p.width)) * (Math.abs(v) < p.radius ? 1 : 0);
      const b = Math.exp(-(v * v) / (2 * p.width * p.width)) * (Math.abs(u) < p.radius ? 1 : 0);
      return Math.max(a, b);
    }
    case 8:
      return ((1 + Math.cos(p.f * u + p.phase)) * (1 + Math.cos(p.f * v + p.phase2)) * 0.25) ** 3;
    default: {
      const t = (u * Math.cos(p.theta) + v * Math.sin(p.theta)) / p.span;
      return Math.min(1, Math.max(0, 0.5 + 0.5 * t));
    }
  }
}

function params(c: number, size: number, r: Rng): Record<string, number> {
  const jitter = (15 * Math.PI) / 180;
  const orient = [Math.PI / 2, 0, Math.PI / 4, (3 * Math.PI) / 4]; // normal of the stripes: rows, columns, diagonals
  return {
    cx: size / 2 + r.uniform(-0.2, 0.2) * size,
    cy: size / 2 + r.uniform(-0.2, 0.2) * size,
    theta: c < 4 ? orient[c] + r.uniform(-jitter, jitter) : r.uniform(0, 2 * Math.PI),
    f: (2 * Math.PI * r.uniform(2.5, 5.5)) / size,
    phase: r.uniform(0, 2 * Math.PI),
    phase2: r.uniform(0, 2 * Math.PI),
    sigma: size * r.uniform(0.1, 0.22),
    radius: size * r.uniform(0.2, 0.34),
    width: size * r.uniform(0.04, 0.08),
    span: size * r.uniform(0.4, 0.8),
  };
}

/** The built-in synthetic dataset (see the file comment). Labels cycle 0..classes-1. */
export function synthetic(opts: SyntheticOptions): Dataset {
  const op = 'synthetic';
  if (!opts || typeof opts !== 'object') fail('ERR_ARG', op, 'options', '{ n, size?, channels?, classes?, seed? }', describe(opts));
  const int = (k: string, v: unknown, dflt: number, lo: number, hi: number): number => {
    if (v === undefined) return dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) fail('ERR_ARG', op, k, `an integer in [${lo}, ${hi}]`, describe(v));
    return v;
  };
  const n = int('n', opts.n, Number.NaN, 1, 2 ** 31 - 1);
  if (Number.isNaN(n)) fail('ERR_ARG', op, 'n', 'an integer >= 1', describe(opts.n));
  const size = int('size', opts.size, 32, 4, 1024);
  const channels = int('channels', opts.channels, 3, 1, 3);
  if (channels === 2) fail('ERR_ARG', op, 'channels', '1 or 3', '2');
  const classes = int('classes', opts.classes, 10, 2, SYNTHETIC_CLASSES.length);
  const seed = int('seed', opts.seed, 0, 0, Number.MAX_SAFE_INTEGER);
  const noise = opts.noise ?? 0.15;
  if (typeof noise !== 'number' || !(noise >= 0)) fail('ERR_ARG', op, 'noise', 'a number >= 0', describe(opts.noise));

  const per = channels * size * size;
  const images = new Uint8Array(new SharedArrayBuffer(n * per));
  const labels = new Int32Array(new SharedArrayBuffer(4 * n));
  const v = new Float32Array(size * size);
  for (let i = 0; i < n; i++) {
    const c = i % classes;
    labels[i] = c;
    const r = new Rng(0x5359, seed, i);
    const p = params(c, size, r);
    for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) v[y * size + x] = pattern(c, x + 0.5, y + 0.5, p);
    const sigma = r.uniform(noise / 2, noise);
    for (let ch = 0; ch < channels; ch++) {
      // Per-channel background and signed amplitude: colours vary, the pattern stays visible.
      const base = r.uniform(0.25, 0.75);
      const amp = r.uniform(0.2, 0.45) * (r.next() < 0.5 ? -1 : 1);
      const o = i * per + ch * size * size;
      for (let k = 0; k < size * size; k++) {
        const val = base + amp * (2 * v[k] - 1) + sigma * r.normal();
        images[o + k] = Math.round(255 * Math.min(1, Math.max(0, val)));
      }
    }
  }
  return fromSource(
    `synthetic(n=${n}, size=${size}, channels=${channels}, classes=${classes}, seed=${seed})`,
    { kind: 'memory', images, labels, channels, height: size, width: size },
    SYNTHETIC_CLASSES.slice(0, classes),
  );
}
