/**
 * Datasets: labelled images of one fixed size, stored as uint8 (MNIST-like data stays one byte
 * per pixel) and read one sample at a time by the DataLoader. A dataset is a thin object over a
 * DataSource (source.ts), the plain data that loader workers receive once.
 */
import { describe, fail } from '../native/errors';
import { Rng } from './rng';
import { readLabel, readSample, sourceLength, storageIndex, type DataSource, type RawImage } from './source';

export interface Dataset {
  /** e.g. "fashion-mnist/train", "cifar10/test", "imagefolder:/data/pets". */
  readonly name: string;
  readonly length: number;
  readonly numClasses: number;
  /** Class names, index = label. */
  readonly classes: readonly string[];
  readonly channels: number;
  readonly height: number;
  readonly width: number;
  /** The plain-data form (shared with loader workers). */
  readonly source: DataSource;
  /** Label of sample i. */
  label(i: number): number;
  /** Sample i: uint8 CHW pixels (image folders decode here). */
  image(i: number): Promise<RawImage>;
  /** Every label, in dataset order. */
  labels(): Int32Array;
}

class SourceDataset implements Dataset {
  readonly length: number;
  readonly channels: number;
  readonly height: number;
  readonly width: number;
  constructor(
    readonly name: string,
    readonly source: DataSource,
    readonly classes: readonly string[],
  ) {
    this.length = sourceLength(source);
    this.channels = source.channels;
    this.height = source.height;
    this.width = source.width;
  }
  get numClasses(): number {
    return this.classes.length;
  }
  private check(op: string, i: unknown): number {
    if (typeof i !== 'number' || !Number.isInteger(i) || i < 0 || i >= this.length)
      fail('ERR_ARG', op, 'index', `an integer in [0, ${this.length - 1}]`, describe(i));
    return i;
  }
  label(i: number): number {
    return readLabel(this.source, this.check('label', i));
  }
  async image(i: number): Promise<RawImage> {
    return readSample(this.source, this.check('image', i));
  }
  labels(): Int32Array {
    const out = new Int32Array(this.length);
    for (let i = 0; i < this.length; i++) out[i] = readLabel(this.source, i);
    return out;
  }
  toString(): string {
    return `Dataset(${this.name}: ${this.length} x ${this.channels}x${this.height}x${this.width}, ${this.numClasses} classes)`;
  }
}

/** A SharedArrayBuffer-backed copy of `src` (so worker threads share it without copying). */
export function sharedCopy<T extends Uint8Array | Int32Array>(src: T): T {
  const Ctor = src.constructor as { new (b: SharedArrayBuffer): T };
  const out = new Ctor(new SharedArrayBuffer(src.byteLength));
  out.set(src as never);
  return out;
}

/** Wraps a DataSource (advanced; the readers call this). */
export function fromSource(name: string, source: DataSource, classes: readonly string[]): Dataset {
  return new SourceDataset(name, source, classes);
}

export interface InMemoryOptions {
  /** uint8 pixels, CHW per sample, n * channels * height * width values. */
  images: Uint8Array;
  labels: Int32Array | number[];
  channels: number;
  height: number;
  width: number;
  /** Class names, or a count (names "0", "1", ...). Default: max label + 1. */
  classes?: readonly string[] | number;
  name?: string;
}

/** A dataset from arrays in memory (copied into shared memory). */
export function inMemory(opts: InMemoryOptions): Dataset {
  const op = 'inMemory';
  if (!opts || typeof opts !== 'object') fail('ERR_ARG', op, 'options', '{ images, labels, channels, height, width }', describe(opts));
  const { channels, height, width } = opts;
  for (const [k, v] of [['channels', channels], ['height', height], ['width', width]] as const)
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) fail('ERR_ARG', op, k, 'an integer >= 1', describe(v));
  if (!(opts.images instanceof Uint8Array)) fail('ERR_ARG', op, 'images', 'a Uint8Array (CHW per sample)', describe(opts.images));
  const labels = Int32Array.from(opts.labels as ArrayLike<number>);
  const per = channels * height * width;
  if (opts.images.length !== labels.length * per)
    fail('ERR_SHAPE', op, 'images', `${labels.length} x ${channels}x${height}x${width} = ${labels.length * per} bytes`, `${opts.images.length} bytes`);
  let max = -1;
  for (const l of labels) {
    if (!Number.isInteger(l) || l < 0) fail('ERR_ARG', op, 'labels', 'non-negative integers', describe(l));
    max = Math.max(max, l);
  }
  const classes =
    opts.classes === undefined
      ? Array.from({ length: max + 1 }, (_, i) => String(i))
      : typeof opts.classes === 'number'
        ? Array.from({ length: opts.classes }, (_, i) => String(i))
        : [...opts.classes];
  if (max >= classes.length) fail('ERR_ARG', op, 'labels', `labels below the class count ${classes.length}`, String(max));
  const source: DataSource = { kind: 'memory', images: sharedCopy(opts.images), labels: sharedCopy(labels), channels, height, width };
  return new SourceDataset(opts.name ?? 'memory', source, classes);
}

/** The samples at `indices` (in that order; repeats allowed). Shares storage with `dataset`. */
export function subset(dataset: Dataset, indices: ArrayLike<number>, name?: string): Dataset {
  const op = 'subset';
  if (!dataset || typeof dataset !== 'object' || !('source' in dataset)) fail('ERR_ARG', op, 'dataset', 'a Dataset', describe(dataset));
  if (!indices || typeof (indices as ArrayLike<number>).length !== 'number') fail('ERR_ARG', op, 'indices', 'an array of sample indices', describe(indices));
  const src = dataset.source;
  const map = new Int32Array(indices.length);
  for (let k = 0; k < indices.length; k++) {
    const i = indices[k];
    if (!Number.isInteger(i) || i < 0 || i >= dataset.length)
      fail('ERR_ARG', op, `indices[${k}]`, `an integer in [0, ${dataset.length - 1}]`, describe(i));
    map[k] = storageIndex(src, i);
  }
  return new SourceDataset(name ?? `${dataset.name}[${indices.length}]`, { ...src, indices: map }, dataset.classes);
}

/** The first n samples (all when n >= length). */
export function take(dataset: Dataset, n: number): Dataset {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) fail('ERR_ARG', 'take', 'n', 'an integer >= 0', describe(n));
  const k = Math.min(n, dataset.length);
  return subset(dataset, Array.from({ length: k }, (_, i) => i), `${dataset.name}[:${k}]`);
}

/**
 * Splits into parts of the given sizes (counts, or fractions summing to 1), after a shuffle
 * keyed by seed, e.g. a validation split: `const [train, val] = randomSplit(ds, [0.9, 0.1], 0)`.
 */
export function randomSplit(dataset: Dataset, sizes: number[], seed = 0): Dataset[] {
  const op = 'randomSplit';
  if (!Array.isArray(sizes) || sizes.length === 0 || !sizes.every((s) => typeof s === 'number' && s >= 0))
    fail('ERR_ARG', op, 'sizes', 'an array of non-negative counts or fractions', describe(sizes));
  const n = dataset.length;
  let counts: number[];
  if (sizes.every((s) => Number.isInteger(s)) && sizes.reduce((a, b) => a + b, 0) === n) counts = sizes;
  else if (Math.abs(sizes.reduce((a, b) => a + b, 0) - 1) < 1e-9) {
    counts = sizes.map((f) => Math.floor(f * n));
    counts[counts.length - 1] += n - counts.reduce((a, b) => a + b, 0);
  } else fail('ERR_ARG', op, 'sizes', `counts summing to ${n} or fractions summing to 1`, `[${sizes.join(', ')}]`);
  const p = Array.from({ length: n }, (_, i) => i);
  const r = new Rng(0x5350, seed);
  for (let i = n - 1; i > 0; i--) {
    const j = r.int(i + 1);
    [p[i], p[j]] = [p[j], p[i]];
  }
  let at = 0;
  return counts.map((c, k) => {
    const part = subset(dataset, p.slice(at, at + c), `${dataset.name}/split${k}`);
    at += c;
    return part;
  });
}
