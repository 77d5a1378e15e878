/**
 * CIFAR-10 / CIFAR-100 "binary version" batches (https://www.cs.toronto.edu/~kriz/cifar.html):
 * fixed-size records, each label byte(s) then 3072 pixel bytes — 1024 red, 1024 green, 1024 blue,
 * row-major 32x32 — which is already CHW. CIFAR-10: 1 label byte, data_batch_1..5.bin (50000)
 * and test_batch.bin (10000). CIFAR-100: 2 label bytes (coarse, fine), train.bin and test.bin.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, fail } from '../native/errors';
import { fromSource, type Dataset } from './dataset';
import { ioFail, readMaybeGzip, type Split } from './idx';

export const CIFAR10_CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'] as const;

const PIXELS = 3 * 32 * 32;

export interface CifarReadOptions {
  /** Label bytes per record: 1 (CIFAR-10) or 2 (CIFAR-100: coarse then fine). */
  labelBytes: 1 | 2;
  /** Which label byte to use (0-based; CIFAR-100: 0 = coarse, 1 = fine). */
  labelByte: number;
  numClasses: number;
  classes?: readonly string[];
  name: string;
}

/** Reads CIFAR binary batch files into one in-memory dataset. */
export async function readCifar(files: readonly string[], opts: CifarReadOptions): Promise<Dataset> {
  const op = 'readCifar';
  if (!Array.isArray(files) || files.length === 0) fail('ERR_ARG', op, 'files', 'a non-empty array of file paths', describe(files));
  const rec = opts.labelBytes + PIXELS;
  const bufs = await Promise.all(files.map((f) => readMaybeGzip(op, f)));
  let n = 0;
  bufs.forEach((b, k) => {
    if (b.length === 0 || b.length % rec !== 0)
      ioFail(
        op, files[k],
        `whole records of ${rec} bytes (${opts.labelBytes} label byte${opts.labelBytes > 1 ? 's' : ''} + 3072 pixels)`,
        `${b.length} bytes (${Math.floor(b.length / rec)} records and ${b.length % rec} bytes of a truncated record)`,
      );
    n += b.length / rec;
  });
  const images = new Uint8Array(new SharedArrayBuffer(n * PIXELS));
  const labels = new Int32Array(new SharedArrayBuffer(4 * n));
  let i = 0;
  bufs.forEach((b, k) => {
    for (let off = 0; off < b.length; off += rec, i++) {
      const l = b[off + opts.labelByte];
      if (l >= opts.numClasses)
        ioFail(op, files[k], `labels below ${opts.numClasses} (record ${(off / rec) | 0})`, `label ${l}: not a CIFAR file of this kind`);
      labels[i] = l;
      images.set(b.subarray(off + opts.labelBytes, off + rec), i * PIXELS);
    }
  });
  const classes = opts.classes ?? Array.from({ length: opts.numClasses }, (_, c) => String(c));
  return fromSource(opts.name, { kind: 'memory', images, labels, channels: 3, height: 32, width: 32 }, classes);
}

function resolveDir(op: string, dir: unknown, sub: string, probe: string): string {
  if (typeof dir !== 'string') fail('ERR_ARG', op, 'dir', 'a directory path', describe(dir));
  // Accept the extracted folder itself or its parent.
  if (fs.existsSync(path.join(dir, probe))) return dir;
  if (fs.existsSync(path.join(dir, sub, probe))) return path.join(dir, sub);
  return dir;
}

function existing(op: string, dir: string, names: string[]): string[] {
  return names.map((n) => {
    const p = path.join(dir, n);
    if (fs.existsSync(p)) return p;
    if (fs.existsSync(`${p}.gz`)) return `${p}.gz`;
    return ioFail(op, p, 'an existing CIFAR batch file', fs.existsSync(dir) ? 'no such file' : `no such directory "${dir}"`);
  });
}

function checkSplit(op: string, split: unknown): Split {
  if (split !== 'train' && split !== 'test') fail('ERR_ARG', op, 'split', '"train" or "test"', describe(split));
  return split;
}

function metaNames(file: string, n: number): string[] | undefined {
  try {
    const names = fs.readFileSync(file, 'utf8').split(/\r?\n/).map((s) => s.trim()).filter(Boolean);
    return names.length === n ? names : undefined;
  } catch {
    return undefined;
  }
}

/** CIFAR-10 from `cifar-10-batches-bin` (or the folder holding it). */
export async function cifar10(dir: string, split: Split = 'train'): Promise<Dataset> {
  const op = 'cifar10';
  const s = checkSplit(op, split);
  const d = resolveDir(op, dir, 'cifar-10-batches-bin', s === 'train' ? 'data_batch_1.bin' : 'test_batch.bin');
  const names = s === 'train' ? [1, 2, 3, 4, 5].map((k) => `data_batch_${k}.bin`) : ['test_batch.bin'];
  return readCifar(existing(op, d, names), {
    labelBytes: 1, labelByte: 0, numClasses: 10,
    classes: metaNames(path.join(d, 'batches.meta.txt'), 10) ?? CIFAR10_CLASSES, name: `cifar10/${s}`,
  });
}

/** CIFAR-100 from `cifar-100-binary` (or the folder holding it); fine labels by default. */
export async function cifar100(dir: string, split: Split = 'train', opts: { labels?: 'fine' | 'coarse' } = {}): Promise<Dataset> {
  const op = 'cifar100';
  const s = checkSplit(op, split);
  const kind = opts.labels ?? 'fine';
  if (kind !== 'fine' && kind !== 'coarse') fail('ERR_ARG', op, 'labels', '"fine" or "coarse"', describe(kind));
  const d = resolveDir(op, dir, 'cifar-100-binary', `${s}.bin`);
  const n = kind === 'fine' ? 100 : 20;
  return readCifar(existing(op, d, [`${s}.bin`]), {
    labelBytes: 2, labelByte: kind === 'fine' ? 1 : 0, numClasses: n,
    classes: metaNames(path.join(d, kind === 'fine' ? 'fine_label_names.txt' : 'coarse_label_names.txt'), n), name: `cifar100/${s}`,
  });
}
