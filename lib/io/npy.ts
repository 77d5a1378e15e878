/**
 * NumPy .npy files (format version 1.0, numpy/lib/format.py's spec): the magic string
 * "\x93NUMPY", the version bytes 1 and 0, a little-endian uint16 header length, then an ASCII
 * header, a Python dict literal `{'descr': '<f4', 'fortran_order': False, 'shape': (N, D), }`,
 * padded with spaces and ended by '\n' so that the data starts at a multiple of 64 bytes, then the
 * array's bytes in C order. `np.load` reads what this writes. Float32 only (embeddings).
 */
import * as os from 'node:os';
import { describe, fail } from '../native/errors';
import { writeFileAtomic } from './atomic';

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

/** The .npy bytes of a float32 array of `shape` (row-major). */
export function encodeNpy(data: Float32Array, shape: readonly number[]): Uint8Array {
  const op = 'encodeNpy';
  if (!(data instanceof Float32Array)) fail('ERR_ARG', op, 'data', 'a Float32Array', describe(data));
  if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) fail('ERR_ARG', op, 'shape', 'an array of non-negative integers', describe(shape));
  const count = shape.reduce((a, b) => a * b, 1);
  if (count !== data.length) fail('ERR_SHAPE', op, 'data', `${count} values for shape [${shape.join(', ')}]`, `${data.length}`);
  const dims = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': ${dims}, }`;
  const unpadded = MAGIC.length + 2 + 2 + header.length + 1;
  header += `${' '.repeat((64 - (unpadded % 64)) % 64)}\n`;
  const out = new Uint8Array(MAGIC.length + 4 + header.length + data.byteLength);
  out.set(MAGIC, 0);
  out[6] = 1; // major version
  out[7] = 0; // minor version
  new DataView(out.buffer).setUint16(8, header.length, true);
  for (let i = 0; i < header.length; i++) out[10 + i] = header.charCodeAt(i);
  const body = out.subarray(10 + header.length);
  if (os.endianness() === 'LE') body.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  else {
    const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
    for (let i = 0; i < data.length; i++) v.setFloat32(4 * i, data[i], true);
  }
  return out;
}

/** Writes a float32 array as a .npy file, atomically (lib/io/atomic.ts). */
export async function saveNpy(file: string, data: Float32Array, shape: readonly number[]): Promise<void> {
  await writeFileAtomic(file, encodeNpy(data, shape));
}
