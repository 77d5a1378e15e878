/**
 * Image transforms, described as plain data (JSON specs such as `{ type: 'padCrop', pad: 4 }`)
 * so loader workers can rebuild and apply them. A pipeline turns a uint8 CHW image into float32
 * CHW: pixels are first scaled to [0, 1] (like torchvision's ToTensor), then each transform runs
 * in order. Random transforms draw from one stream per sample keyed by (seed, epoch, sample
 * index) (see rng.ts), so an augmentation is reproducible and independent of workers and batch
 * position, and differs from epoch to epoch.
 *
 * The geometry follows torchvision: RandomCrop(size, padding), RandomHorizontalFlip(p),
 * RandomResizedCrop(size, scale, ratio) with its 10-attempt sampler and centre fallback,
 * Resize(size) (shorter side) and CenterCrop(size). Resizing is bilinear with antialiasing when
 * shrinking (a triangle filter widened by the scale factor, as PIL and torchvision's
 * antialias=True do), on pixel centres (align_corners=False).
 */
import { describe, fail } from '../native/errors';
import { Rng, TRANSFORM_STREAM } from './rng';

export type Size = number | [number, number];

export type TransformSpec =
  /** Pad by `pad` on every side with `fill`, then crop a random `size` window (default: the input size). */
  | { type: 'padCrop'; pad: number; size?: Size; fill?: number }
  /** Mirror left-right with probability p (default 0.5). */
  | { type: 'flip'; p?: number }
  /** A random area fraction in `scale` and aspect ratio in `ratio`, resized to `size`. */
  | { type: 'randomResizedCrop'; size: Size; scale?: [number, number]; ratio?: [number, number] }
  /** A number: the shorter side becomes `size` (aspect kept); [h, w]: exactly that. */
  | { type: 'resize'; size: Size }
  /** The central `size` window (padded with 0 when the image is smaller). */
  | { type: 'centerCrop'; size: Size }
  /** Pads to `size`, centred, with `fill` (e.g. Fashion-MNIST 28x28 -> 32x32). */
  | { type: 'padTo'; size: Size; fill?: number }
  /** (x - mean[c]) / std[c]; give mean/std, or a preset name (see NORMALIZE). */
  | { type: 'normalize'; mean?: number | number[]; std?: number | number[]; preset?: NormalizePreset };

/** Standard per-channel statistics of the usual datasets (pixels scaled to [0, 1]). */
export const NORMALIZE = {
  mnist: { mean: [0.1307], std: [0.3081] },
  fashionMnist: { mean: [0.286], std: [0.353] },
  cifar10: { mean: [0.4914, 0.4822, 0.4465], std: [0.247, 0.2435, 0.2616] },
  cifar100: { mean: [0.5071, 0.4865, 0.4409], std: [0.2673, 0.2564, 0.2762] },
  imagenet: { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
} as const;
export type NormalizePreset = keyof typeof NORMALIZE;

// Builders (plain objects; JSON.stringify-able).
export const padCrop = (pad: number, size?: Size, fill = 0): TransformSpec => ({ type: 'padCrop', pad, size, fill });
export const flip = (p = 0.5): TransformSpec => ({ type: 'flip', p });
export const randomResizedCrop = (size: Size, scale: [number, number] = [0.08, 1], ratio: [number, number] = [3 / 4, 4 / 3]): TransformSpec => ({
  type: 'randomResizedCrop', size, scale, ratio,
});
export const resize = (size: Size): TransformSpec => ({ type: 'resize', size });
export const centerCrop = (size: Size): TransformSpec => ({ type: 'centerCrop', size });
export const padTo = (size: Size, fill = 0): TransformSpec => ({ type: 'padTo', size, fill });
export function normalize(preset: NormalizePreset): TransformSpec;
export function normalize(mean: number | number[], std: number | number[]): TransformSpec;
export function normalize(a: NormalizePreset | number | number[], std?: number | number[]): TransformSpec {
  return typeof a === 'string' ? { type: 'normalize', preset: a } : { type: 'normalize', mean: a, std };
}

/** A float32 CHW image. */
export interface FloatImage {
  data: Float32Array;
  c: number;
  h: number;
  w: number;
}

/** [channels, height, width]. */
export type ImageShape = [number, number, number];

interface Step {
  out(s: ImageShape): ImageShape;
  apply(img: FloatImage, rng: Rng): FloatImage;
}

// ------------------------------------------------------------------ checks

const OP = 'transforms';

function size2(arg: string, v: unknown): [number, number] {
  const p = typeof v === 'number' ? [v, v] : v;
  if (!Array.isArray(p) || p.length !== 2 || !p.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= 1))
    fail('ERR_ARG', OP, arg, 'an integer >= 1 or a pair [height, width] of them', describe(v));
  return [p[0], p[1]];
}

function finite(arg: string, v: unknown, dflt: number, lo = -Infinity, hi = Infinity): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi) fail('ERR_ARG', OP, arg, `a number in [${lo}, ${hi}]`, describe(v));
  return v;
}

function range2(arg: string, v: unknown, dflt: [number, number], positive: boolean): [number, number] {
  if (v === undefined) return dflt;
  if (!Array.isArray(v) || v.length !== 2 || !v.every((x) => typeof x === 'number' && Number.isFinite(x) && (!positive || x > 0)) || v[0] > v[1])
    fail('ERR_ARG', OP, arg, `a pair [low, high] with low <= high${positive ? ', both > 0' : ''}`, describe(v));
  return [v[0], v[1]];
}

function perChannel(arg: string, v: unknown, c: number): number[] {
  const a = typeof v === 'number' ? [v] : v;
  if (!Array.isArray(a) || !a.every((x) => typeof x === 'number' && Number.isFinite(x)) || (a.length !== 1 && a.length !== c))
    fail('ERR_ARG', OP, arg, `a number or an array of 1 or ${c} numbers (one per channel)`, describe(v));
  return a.length === 1 ? new Array<number>(c).fill(a[0]) : (a as number[]);
}

// ------------------------------------------------------------------ kernels

/** Python's round(): halves to even (torchvision's centre crop uses it). */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** The window [top, top+h) x [left, left+w) of img; pixels outside img are `fill`. */
export function crop(img: FloatImage, top: number, left: number, h: number, w: number, fill = 0): FloatImage {
  const out = new Float32Array(img.c * h * w);
  if (fill !== 0) out.fill(fill);
  const y0 = Math.max(0, -top), y1 = Math.min(h, img.h - top);
  const x0 = Math.max(0, -left), x1 = Math.min(w, img.w - left);
  if (x1 > x0)
    for (let c = 0; c < img.c; c++)
      for (let y = y0; y < y1; y++) {
        const src = c * img.h * img.w + (y + top) * img.w + left;
        out.set(img.data.subarray(src + x0, src + x1), c * h * w + y * w + x0);
      }
  return { data: out, c: img.c, h, w };
}

export function hflip(img: FloatImage): FloatImage {
  const out = new Float32Array(img.data.length);
  for (let r = 0; r < img.c * img.h; r++) {
    const o = r * img.w;
    for (let x = 0; x < img.w; x++) out[o + x] = img.data[o + img.w - 1 - x];
  }
  return { data: out, c: img.c, h: img.h, w: img.w };
}

/**
 * 1-D resampling weights: output pixel j samples the input span [start, start+len) (of an axis
 * of n pixels) at centre start + (j + 0.5) * len / out. Triangle filter of radius max(1, scale)
 * input pixels (antialiased when shrinking); taps outside the axis are dropped and the rest
 * renormalised (as PIL does).
 */
function weights(n: number, start: number, len: number, out: number): { first: Int32Array; count: Int32Array; w: Float32Array; taps: number } {
  const scale = len / out;
  const support = Math.max(1, scale);
  const taps = Math.ceil(support) * 2 + 1;
  const first = new Int32Array(out);
  const count = new Int32Array(out);
  const w = new Float32Array(out * taps);
  for (let j = 0; j < out; j++) {
    const centre = start + (j + 0.5) * scale;
    const lo = Math.max(0, Math.floor(centre - support));
    const hi = Math.min(n, Math.ceil(centre + support));
    let total = 0, k = 0;
    for (let i = lo; i < hi && k < taps; i++) {
      const t = 1 - Math.abs((i + 0.5 - centre) / support);
      if (t <= 0) continue;
      if (k === 0) first[j] = i;
      // keep taps contiguous from `first`
      w[j * taps + (i - first[j])] = t;
      k = i - first[j] + 1;
      total += t;
    }
    if (total === 0) {
      // the span lies outside the image (cannot happen for valid crops): nearest edge pixel
      first[j] = Math.min(n - 1, Math.max(0, Math.floor(centre)));
      w[j * taps] = 1;
      k = 1;
      total = 1;
    }
    count[j] = k;
    for (let t = 0; t < k; t++) w[j * taps + t] /= total;
  }
  return { first, count, w, taps };
}

/** Resamples the box (top, left, bh, bw) of img to oh x ow (separable bilinear, antialiased). */
export function resizeBox(img: FloatImage, top: number, left: number, bh: number, bw: number, oh: number, ow: number): FloatImage {
  const wx = weights(img.w, left, bw, ow);
  const wy = weights(img.h, top, bh, oh);
  // Horizontal pass: c x img.h x ow (only rows the vertical pass reads would do; images are small).
  const tmp = new Float32Array(img.c * img.h * ow);
  for (let r = 0; r < img.c * img.h; r++) {
    const src = r * img.w;
    for (let j = 0; j < ow; j++) {
      let s = 0;
      const f = wx.first[j], o = j * wx.taps;
      for (let t = 0; t < wx.count[j]; t++) s += wx.w[o + t] * img.data[src + f + t];
      tmp[r * ow + j] = s;
    }
  }
  const out = new Float32Array(img.c * oh * ow);
  for (let c = 0; c < img.c; c++)
    for (let i = 0; i < oh; i++) {
      const f = wy.first[i], o = i * wy.taps;
      const dst = (c * oh + i) * ow;
      for (let t = 0; t < wy.count[i]; t++) {
        const wt = wy.w[o + t];
        const src = (c * img.h + f + t) * ow;
        for (let j = 0; j < ow; j++) out[dst + j] += wt * tmp[src + j];
      }
    }
  return { data: out, c: img.c, h: oh, w: ow };
}

/** torchvision's RandomResizedCrop.get_params: [top, left, height, width] of the crop. */
export function randomResizedCropBox(h: number, w: number, scale: [number, number], ratio: [number, number], rng: Rng): [number, number, number, number] {
  const area = h * w;
  const logR = [Math.log(ratio[0]), Math.log(ratio[1])];
  for (let attempt = 0; attempt < 10; attempt++) {
    const target = area * rng.uniform(scale[0], scale[1]);
    const aspect = Math.exp(rng.uniform(logR[0], logR[1]));
    const cw = Math.round(Math.sqrt(target * aspect));
    const ch = Math.round(Math.sqrt(target / aspect));
    if (cw > 0 && cw <= w && ch > 0 && ch <= h) return [rng.int(h - ch + 1), rng.int(w - cw + 1), ch, cw];
  }
  const inRatio = w / h;
  let cw: number, ch: number;
  if (inRatio < ratio[0]) {
    cw = w;
    ch = Math.round(cw / ratio[0]);
  } else if (inRatio > ratio[1]) {
    ch = h;
    cw = Math.round(ch * ratio[1]);
  } else {
    cw = w;
    ch = h;
  }
  return [Math.floor((h - ch) / 2), Math.floor((w - cw) / 2), ch, cw];
}

// ------------------------------------------------------------------ steps

function step(spec: TransformSpec, index: number): Step {
  if (!spec || typeof spec !== 'object') fail('ERR_ARG', OP, `transforms[${index}]`, 'a transform spec { type, ... }', describe(spec));
  const s = spec as Record<string, unknown>;
  const at = (k: string) => `transforms[${index}].${k}`;
  switch (spec.type) {
    case 'padCrop': {
      const pad = s.pad;
      if (typeof pad !== 'number' || !Number.isInteger(pad) || pad < 0) fail('ERR_ARG', OP, at('pad'), 'an integer >= 0', describe(pad));
      const fixed = s.size === undefined ? null : size2(at('size'), s.size);
      const fill = finite(at('fill'), s.fill, 0);
      return {
        out: ([c, h, w]) => {
          const [th, tw] = fixed ?? [h, w];
          if (th > h + 2 * pad || tw > w + 2 * pad)
            fail('ERR_ARG', OP, at('size'), `at most the padded input size ${h + 2 * pad}x${w + 2 * pad}`, `${th}x${tw}`);
          return [c, th, tw];
        },
        apply: (img, rng) => {
          const [th, tw] = fixed ?? [img.h, img.w];
          const top = rng.int(img.h + 2 * pad - th + 1) - pad;
          const left = rng.int(img.w + 2 * pad - tw + 1) - pad;
          return crop(img, top, left, th, tw, fill);
        },
      };
    }
    case 'flip': {
      const p = finite(at('p'), s.p, 0.5, 0, 1);
      return { out: (sh) => sh, apply: (img, rng) => (rng.next() < p ? hflip(img) : img) };
    }
    case 'randomResizedCrop': {
      const [oh, ow] = size2(at('size'), s.size);
      const scale = range2(at('scale'), s.scale, [0.08, 1], true);
      const ratio = range2(at('ratio'), s.ratio, [3 / 4, 4 / 3], true);
      return {
        out: ([c]) => [c, oh, ow],
        apply: (img, rng) => {
          const [top, left, ch, cw] = randomResizedCropBox(img.h, img.w, scale, ratio, rng);
          return resizeBox(img, top, left, ch, cw, oh, ow);
        },
      };
    }
    case 'resize': {
      const exact = Array.isArray(s.size) ? size2(at('size'), s.size) : null;
      const short = exact ? 0 : size2(at('size'), s.size)[0];
      const target = (h: number, w: number): [number, number] => {
        if (exact) return exact;
        // torchvision: the shorter side becomes `size`, the longer int(size * long / short).
        return h <= w ? [short, Math.floor((short * w) / h)] : [Math.floor((short * h) / w), short];
      };
      return {
        out: ([c, h, w]) => [c, ...target(h, w)],
        apply: (img) => {
          const [oh, ow] = target(img.h, img.w);
          return oh === img.h && ow === img.w ? img : resizeBox(img, 0, 0, img.h, img.w, oh, ow);
        },
      };
    }
    case 'centerCrop': {
      const [th, tw] = size2(at('size'), s.size);
      return {
        out: ([c]) => [c, th, tw],
        apply: (img) => crop(img, roundHalfEven((img.h - th) / 2), roundHalfEven((img.w - tw) / 2), th, tw, 0),
      };
    }
    case 'padTo': {
      const [th, tw] = size2(at('size'), s.size);
      const fill = finite(at('fill'), s.fill, 0);
      return {
        out: ([c, h, w]) => {
          if (h > th || w > tw) fail('ERR_ARG', OP, at('size'), `at least the input size ${h}x${w}`, `${th}x${tw}`);
          return [c, th, tw];
        },
        apply: (img) => crop(img, -Math.floor((th - img.h) / 2), -Math.floor((tw - img.w) / 2), th, tw, fill),
      };
    }
    case 'normalize': {
      let mean: unknown = s.mean, std: unknown = s.std;
      if (s.preset !== undefined) {
        const p = NORMALIZE[s.preset as NormalizePreset];
        if (!p) fail('ERR_ARG', OP, at('preset'), Object.keys(NORMALIZE).map((k) => `"${k}"`).join(', '), describe(s.preset));
        mean = p.mean;
        std = p.std;
      }
      let m: number[] = [], sd: number[] = [];
      return {
        out: ([c, h, w]) => {
          m = perChannel(at('mean'), mean, c);
          sd = perChannel(at('std'), std, c);
          if (sd.some((x) => x <= 0)) fail('ERR_ARG', OP, at('std'), 'positive numbers', describe(std));
          return [c, h, w];
        },
        apply: (img) => {
          const hw = img.h * img.w;
          const out = new Float32Array(img.data.length);
          for (let c = 0; c < img.c; c++) {
            const mu = m[c], inv = 1 / sd[c];
            for (let p = c * hw; p < (c + 1) * hw; p++) out[p] = (img.data[p] - mu) * inv;
          }
          return { data: out, c: img.c, h: img.h, w: img.w };
        },
      };
    }
    default:
      return fail(
        'ERR_ARG', OP, `transforms[${index}].type`,
        '"padCrop", "flip", "randomResizedCrop", "resize", "centerCrop", "padTo" or "normalize"',
        describe((spec as { type?: unknown }).type),
      );
  }
}

/** A compiled pipeline for one input shape. */
export interface Pipeline {
  readonly inShape: ImageShape;
  readonly outShape: ImageShape;
  /** Transforms sample `index` (uint8 CHW) into out (float32 CHW, outShape), at out[offset...]. */
  run(pixels: Uint8Array, index: number, seed: number, epoch: number, out: Float32Array, offset: number): void;
}

/**
 * Checks the specs and infers the output shape for inputs of `inShape` ([C, H, W]); throws
 * ERR_ARG naming the bad spec.
 */
export function compose(specs: readonly TransformSpec[], inShape: ImageShape): Pipeline {
  if (!Array.isArray(specs)) fail('ERR_ARG', OP, 'transforms', 'an array of transform specs', describe(specs));
  const steps = specs.map((s, i) => step(s, i));
  let shape: ImageShape = [...inShape];
  for (const st of steps) shape = st.out(shape);
  const outShape = shape;
  const [c, h, w] = inShape;
  const random = specs.some((s) => s.type === 'padCrop' || s.type === 'flip' || s.type === 'randomResizedCrop');
  return {
    inShape: [c, h, w],
    outShape,
    run(pixels, index, seed, epoch, out, offset) {
      const n = c * h * w;
      const data = new Float32Array(n);
      for (let i = 0; i < n; i++) data[i] = pixels[i] / 255;
      let img: FloatImage = { data, c, h, w };
      const rng = random ? new Rng(TRANSFORM_STREAM, seed, epoch, index) : (null as unknown as Rng);
      for (const st of steps) img = st.apply(img, rng);
      out.set(img.data, offset);
    },
  };
}

/**
 * Applies specs to one uint8 CHW image (for inspection and tests); `index` is the sample index
 * that keys the random stream with (seed, epoch).
 */
export function applyTransforms(
  specs: readonly TransformSpec[],
  image: { data: Uint8Array; channels: number; height: number; width: number },
  opts: { seed?: number; epoch?: number; index?: number } = {},
): { data: Float32Array; shape: ImageShape } {
  const p = compose(specs, [image.channels, image.height, image.width]);
  const out = new Float32Array(p.outShape[0] * p.outShape[1] * p.outShape[2]);
  p.run(image.data, opts.index ?? 0, opts.seed ?? 0, opts.epoch ?? 0, out, 0);
  return { data: out, shape: p.outShape };
}
