/**
 * Image folders in torchvision's ImageFolder layout: one sub-folder per class (class names
 * sorted, label = position), image files anywhere below it. Only the file list is read here;
 * images are decoded lazily with sharp, per sample, in the loader workers (decode.ts), and
 * resized to cover `size` then centre-cropped, so every sample has one shape. Random-resized-crop
 * and friends then run on that decoded image: for ImageNet-style training decode at e.g. 256 and
 * crop 224.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, fail } from '../native/errors';
import { fromSource, sharedCopy, type Dataset } from './dataset';
import { loadSharp } from './decode';
import { ioFail } from './idx';

export interface ImageFolderOptions {
  /** Decoded sample size: a number (square) or [height, width]. */
  size: number | [number, number];
  /** 3 (sRGB, default) or 1 (greyscale). */
  channels?: 1 | 3;
  /** File extensions to include (lower case, with the dot). Default .jpg .jpeg .png .webp. */
  extensions?: readonly string[];
}

const DEFAULT_EXT = ['.jpg', '.jpeg', '.png', '.webp'];

function byName(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

async function listImages(dir: string, ext: readonly string[], out: string[]): Promise<void> {
  const entries = (await fs.promises.readdir(dir, { withFileTypes: true })).sort((a, b) => byName(a.name, b.name));
  for (const e of entries) {
    if (e.name.startsWith('.')) continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) await listImages(p, ext, out);
    else if ((e.isFile() || e.isSymbolicLink()) && ext.includes(path.extname(e.name).toLowerCase())) out.push(p);
  }
}

/** An image-folder dataset (decoding needs the npm package sharp). */
export async function imageFolder(dir: string, opts: ImageFolderOptions): Promise<Dataset> {
  const op = 'imageFolder';
  if (typeof dir !== 'string') fail('ERR_ARG', op, 'dir', 'a directory path', describe(dir));
  if (!opts || typeof opts !== 'object') fail('ERR_ARG', op, 'options', '{ size, channels? }', describe(opts));
  const sz = typeof opts.size === 'number' ? [opts.size, opts.size] : opts.size;
  if (!Array.isArray(sz) || sz.length !== 2 || !sz.every((x) => Number.isInteger(x) && x >= 1))
    fail('ERR_ARG', op, 'size', 'an integer >= 1 or [height, width]', describe(opts.size));
  const channels = opts.channels ?? 3;
  if (channels !== 1 && channels !== 3) fail('ERR_ARG', op, 'channels', '1 or 3', describe(channels));
  const ext = (opts.extensions ?? DEFAULT_EXT).map((e) => e.toLowerCase());
  loadSharp(); // fail now, not in the first batch, when sharp is missing
  let stat: fs.Stats;
  try {
    stat = await fs.promises.stat(dir);
  } catch {
    ioFail(op, dir, 'an image folder (one sub-folder per class)', 'no such directory');
  }
  if (!stat.isDirectory()) ioFail(op, dir, 'an image folder (one sub-folder per class)', 'not a directory');
  const classes = (await fs.promises.readdir(dir, { withFileTypes: true }))
    .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
    .map((e) => e.name)
    .sort(byName);
  if (classes.length === 0) ioFail(op, dir, 'an image folder (one sub-folder per class)', 'no sub-folders');
  const files: string[] = [];
  const labels: number[] = [];
  for (let c = 0; c < classes.length; c++) {
    const list: string[] = [];
    await listImages(path.join(dir, classes[c]), ext, list);
    for (const f of list) {
      files.push(f);
      labels.push(c);
    }
  }
  if (files.length === 0) ioFail(op, dir, `image files (${ext.join(', ')}) in its class folders`, 'none');
  return fromSource(
    `imagefolder:${dir}`,
    { kind: 'files', files, labels: sharedCopy(Int32Array.from(labels)), channels, height: sz[0], width: sz[1] },
    classes,
  );
}
