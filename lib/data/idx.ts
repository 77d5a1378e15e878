/**
 * IDX files (LeCun's MNIST format, also Fashion-MNIST): a big-endian header — two zero bytes,
 * an element-type byte (0x08 = unsigned byte), the number of dimensions — then one u32 size per
 * dimension, then the data. Images are idx3 [N, H, W], labels idx1 [N]. Files may be gzipped
 * (detected by the gzip magic bytes, whatever the name). The Debian package
 * `dataset-fashion-mnist` installs the four .gz files in /usr/share/datasets/fashion-mnist.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';
import { describe, fail } from '../native/errors';
import { fromSource, type Dataset } from './dataset';

const gunzip = promisify(zlib.gunzip);

export function ioFail(op: string, file: string, expected: string, received: string): never {
  fail('ERR_IO', op, `file "${file}"`, expected, received);
}

/** Reads a file, gunzipping it when it starts with the gzip magic bytes. */
export async function readMaybeGzip(op: string, file: string): Promise<Buffer> {
  let buf: Buffer;
  try {
    buf = await fs.promises.readFile(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    ioFail(op, file, 'a readable file', code === 'ENOENT' ? 'no such file' : (e as Error).message);
  }
  if (buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) {
    try {
      buf = await gunzip(buf);
    } catch (e) {
      ioFail(op, file, 'valid gzip data', `a corrupt or truncated gzip stream (${(e as Error).message})`);
    }
  }
  return buf;
}

interface Idx {
  dims: number[];
  data: Buffer;
}

function parseIdx(op: string, file: string, buf: Buffer, wantDims: number): Idx {
  if (buf.length < 4) ioFail(op, file, 'an IDX header (at least 4 bytes)', `${buf.length} bytes`);
  const magic = buf.readUInt32BE(0);
  if (buf[0] !== 0 || buf[1] !== 0 || buf[2] !== 0x08 || buf[3] !== wantDims)
    ioFail(
      op, file,
      `the IDX magic number 0x0000080${wantDims} (unsigned bytes, ${wantDims} dimension${wantDims > 1 ? 's' : ''})`,
      `0x${magic.toString(16).padStart(8, '0')}`,
    );
  const head = 4 + 4 * wantDims;
  if (buf.length < head) ioFail(op, file, `an IDX header of ${head} bytes`, `${buf.length} bytes: the file is truncated`);
  const dims: number[] = [];
  for (let d = 0; d < wantDims; d++) dims.push(buf.readUInt32BE(4 + 4 * d));
  const n = dims.reduce((a, b) => a * b, 1);
  if (buf.length !== head + n)
    ioFail(
      op, file,
      `${head + n} bytes for dimensions [${dims.join(', ')}]`,
      `${buf.length} bytes${buf.length < head + n ? ': the file is truncated' : ' (trailing data)'}`,
    );
  return { dims, data: buf.subarray(head) };
}

export interface IdxOptions {
  /** Class names (index = label). Default: "0".."9" widened to cover the largest label. */
  classes?: readonly string[];
  name?: string;
}

/** An image dataset from an idx3 image file and an idx1 label file (gzipped or not). */
export async function readIdx(imagesFile: string, labelsFile: string, opts: IdxOptions = {}): Promise<Dataset> {
  const op = 'readIdx';
  if (typeof imagesFile !== 'string') fail('ERR_ARG', op, 'imagesFile', 'a file path', describe(imagesFile));
  if (typeof labelsFile !== 'string') fail('ERR_ARG', op, 'labelsFile', 'a file path', describe(labelsFile));
  const [ib, lb] = await Promise.all([readMaybeGzip(op, imagesFile), readMaybeGzip(op, labelsFile)]);
  const im = parseIdx(op, imagesFile, ib, 3);
  const lab = parseIdx(op, labelsFile, lb, 1);
  const [n, h, w] = im.dims;
  if (lab.dims[0] !== n)
    fail('ERR_IO', op, `files "${imagesFile}" and "${labelsFile}"`, `as many labels as images (${n})`, `${lab.dims[0]} labels`);
  const images = new Uint8Array(new SharedArrayBuffer(im.data.length));
  images.set(im.data);
  const labels = new Int32Array(new SharedArrayBuffer(4 * n));
  let max = -1;
  for (let i = 0; i < n; i++) {
    labels[i] = lab.data[i];
    if (labels[i] > max) max = labels[i];
  }
  const classes = opts.classes ?? Array.from({ length: Math.max(10, max + 1) }, (_, i) => String(i));
  if (max >= classes.length)
    ioFail(op, labelsFile, `labels below ${classes.length} (the class count)`, `label ${max}`);
  return fromSource(opts.name ?? path.basename(imagesFile), { kind: 'memory', images, labels, channels: 1, height: h, width: w }, classes);
}

export type Split = 'train' | 'test';

export const FASHION_MNIST_CLASSES = [
  'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot',
] as const;

/** Where the Debian package dataset-fashion-mnist installs the files. */
export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';

function findFile(op: string, dir: string, stem: string, kind: 'idx3' | 'idx1'): string {
  // The canonical names, gzipped or not; some mirrors use a dot ("train-images.idx3-ubyte").
  const base = [`${stem}-${kind}-ubyte`, `${stem}.${kind}-ubyte`];
  const candidates = base.flatMap((b) => [b, `${b}.gz`]);
  for (const c of candidates) {
    const p = path.join(dir, c);
    if (fs.existsSync(p)) return p;
  }
  fail('ERR_IO', op, `directory "${dir}"`, `one of ${candidates.join(', ')}`, fs.existsSync(dir) ? 'none of them' : 'no such directory');
}

function checkSplit(op: string, split: unknown): Split {
  if (split !== 'train' && split !== 'test') fail('ERR_ARG', op, 'split', '"train" or "test"', describe(split));
  return split;
}

async function mnistLike(op: string, dir: string, split: Split, name: string, classes: readonly string[]): Promise<Dataset> {
  if (typeof dir !== 'string') fail('ERR_ARG', op, 'dir', 'a directory path', describe(dir));
  const s = checkSplit(op, split);
  const prefix = s === 'train' ? 'train' : 't10k';
  const images = findFile(op, dir, `${prefix}-images`, 'idx3');
  const labels = findFile(op, dir, `${prefix}-labels`, 'idx1');
  return readIdx(images, labels, { classes, name: `${name}/${s}` });
}

/** MNIST from a directory holding train-images-idx3-ubyte(.gz), t10k-labels-idx1-ubyte(.gz), ... */
export function mnist(dir: string, split: Split): Promise<Dataset> {
  return mnistLike('mnist', dir, split, 'mnist', Array.from({ length: 10 }, (_, i) => String(i)));
}

/** Fashion-MNIST (same file names as MNIST); dir defaults to the Debian package's location. */
export function fashionMnist(dir: string = FASHION_MNIST_DIR, split: Split = 'train'): Promise<Dataset> {
  return mnistLike('fashionMnist', dir, split, 'fashion-mnist', FASHION_MNIST_CLASSES);
}
