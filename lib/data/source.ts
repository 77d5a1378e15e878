/**
 * The plain-data form of a dataset (a DataSource) and reading one sample from it. This module is
 * what loader workers load, so it imports nothing that touches tensors or the native addon.
 *
 * - 'memory': all images in one uint8 buffer, CHW per sample (channel planes, rows, columns),
 *   allocated in a SharedArrayBuffer by the readers so workers share it without a copy.
 * - 'files': image paths decoded on demand with sharp (image folders), in the worker that
 *   prepares the batch.
 *
 * `indices` (optional) maps dataset positions to storage positions: subset() and take() only
 * build a new index array; the pixels stay where they are.
 */
import { decodeImage } from './decode';

export interface MemorySource {
  kind: 'memory';
  /** uint8 pixels, storage sample s at s * channels * height * width, CHW. */
  images: Uint8Array;
  /** Label of each storage sample. */
  labels: Int32Array;
  channels: number;
  height: number;
  width: number;
  indices?: Int32Array;
}

export interface FileSource {
  kind: 'files';
  files: string[];
  labels: Int32Array;
  channels: number;
  height: number;
  width: number;
  indices?: Int32Array;
}

export type DataSource = MemorySource | FileSource;

/** One image: uint8 CHW pixels. */
export interface RawImage {
  data: Uint8Array;
  channels: number;
  height: number;
  width: number;
}

export function storageIndex(src: DataSource, i: number): number {
  return src.indices ? src.indices[i] : i;
}

export function sourceLength(src: DataSource): number {
  return src.indices ? src.indices.length : src.labels.length;
}

/** Sample i of the source (i is a dataset position, after `indices`). */
export function readSample(src: DataSource, i: number): RawImage | Promise<RawImage> {
  const s = storageIndex(src, i);
  const { channels, height, width } = src;
  if (src.kind === 'memory') {
    const n = channels * height * width;
    return { data: src.images.subarray(s * n, (s + 1) * n), channels, height, width };
  }
  return decodeImage(src.files[s], channels, height, width);
}

export function readLabel(src: DataSource, i: number): number {
  return src.labels[storageIndex(src, i)];
}
