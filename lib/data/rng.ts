/**
 * Deterministic random streams for the data pipeline. A stream is keyed by a tuple of integers
 * (seed, epoch, sample index, ...), not by how many numbers were drawn before, so a sample's
 * augmentation does not depend on which worker prepares it, on the batch it lands in, or on
 * where a resumed run starts. Keys are mixed with murmur3's 32-bit finaliser; the stream itself
 * is mulberry32 (period 2^32, ample for a few draws per sample).
 */

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A 32-bit hash of a tuple of integers (each taken modulo 2^53, split into two words). */
export function hashKey(...key: number[]): number {
  let h = 0x9e3779b9;
  for (const k of key) {
    const lo = k >>> 0;
    const hi = Math.floor(k / 4294967296) >>> 0;
    h = fmix32((h ^ lo) + 0x7f4a7c15);
    h = fmix32((h ^ hi) + 0x165667b1);
  }
  return h;
}

/** A generator of uniform numbers in [0, 1), seeded by a key tuple. */
export class Rng {
  private s: number;
  constructor(...key: number[]) {
    this.s = hashKey(...key);
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Uniform in [lo, hi). */
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  private spare = Number.NaN;

  /** Standard normal (Box-Muller; the second value of each pair is kept for the next call). */
  normal(): number {
    if (!Number.isNaN(this.spare)) {
      const z = this.spare;
      this.spare = Number.NaN;
      return z;
    }
    const r = Math.sqrt(-2 * Math.log(1 - this.next()));
    const a = 2 * Math.PI * this.next();
    this.spare = r * Math.sin(a);
    return r * Math.cos(a);
  }
}

// Stream tags, so the shuffle and the transforms of one (seed, epoch) never share a stream.
export const SHUFFLE_STREAM = 0x5348;
export const TRANSFORM_STREAM = 0x5452;

/** A permutation of 0..n-1 determined by (seed, epoch): Fisher-Yates over a keyed stream. */
export function permutation(n: number, seed: number, epoch: number): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  const r = new Rng(SHUFFLE_STREAM, seed, epoch);
  for (let i = n - 1; i > 0; i--) {
    const j = r.int(i + 1);
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}
