/**
 * safetensors files (the format of Hugging Face's `safetensors`, which PyTorch users save
 * state_dicts in):
 *
 *   [8 bytes: header length N, little-endian u64][N bytes: JSON header][data section]
 *
 * The header maps each tensor name to { dtype, shape, data_offsets: [begin, end] } (offsets
 * relative to the data section) and may hold "__metadata__": { string: string }. Data is raw,
 * little-endian, row-major. We write header keys sorted by name and pad the header with spaces
 * to a multiple of 8 bytes; tensors lie back to back, largest element size first (then by
 * name), as the reference writer lays them out, so each starts aligned to its element size. The reader checks what the reference (Rust) reader checks:
 * the offsets tile the data section exactly (no gaps, no overlaps, nothing past the end) and
 * each tensor's byte size equals its shape times its dtype size.
 *
 * dtypes: F32, F64, I32 and BF16 round-trip as float32, float64, int32 and bfloat16. On load we
 * also accept F16 (widened to float32, exact) and the integer types I64, U64, U32, I16, U16, I8,
 * U8, BOOL (narrowed to int32; a value that does not fit is an ERR_IO error). I64 matters:
 * torchvision's BatchNorm `num_batches_tracked` buffers are int64 scalars.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, fail, ResnextError } from '../native/errors';
import { tensor } from '../tensor/create';
import { Tensor, type DType } from '../tensor/tensor';
import { cast } from '../ops/shape';
import { writeFileAtomic, writeFileAtomicSync } from './atomic';

/** Tensors by name, as loadSafetensors returns them. */
export type TensorDict = Record<string, Tensor>;

export interface SafetensorsHeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

/** The parsed header of a safetensors file (see readSafetensorsHeader). */
export interface SafetensorsHeader {
  tensors: Record<string, SafetensorsHeaderEntry>;
  metadata: Record<string, string>;
  /** Byte offset of the data section in the file (8 + header length). */
  dataStart: number;
}

const WRITE_DTYPE: Record<DType, string> = { float32: 'F32', float64: 'F64', int32: 'I32', bfloat16: 'BF16' };

/** Bytes per element of each safetensors dtype we read. */
const DTYPE_SIZE: Record<string, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, U64: 8, I32: 4, U32: 4, I16: 2, U16: 2, I8: 1, U8: 1, BOOL: 1,
};

const LITTLE_ENDIAN = os.endianness() === 'LE';
// The reference implementation refuses headers over 100 MB; a larger length is a corrupt file.
const MAX_HEADER = 100_000_000;

function ioFail(op: string, file: string, expected: string, received: string): never {
  fail('ERR_IO', op, `file "${file}"`, expected, received);
}

function checkFile(op: string, p: unknown): string {
  if (typeof p !== 'string' || p.length === 0) fail('ERR_ARG', op, 'path', 'a non-empty file path', describe(p));
  return path.resolve(p);
}

// ------------------------------------------------------------------ bfloat16 bits

/** float32 -> bfloat16 bits, round to nearest even (NaN stays a quiet NaN). */
export function float32ToBf16Bits(src: Float32Array): Uint16Array {
  const u = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < u.length; i++) {
    const x = u[i];
    if ((x & 0x7fffffff) > 0x7f800000) {
      out[i] = (x >>> 16) | 0x0040;
    } else {
      out[i] = ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
    }
  }
  return out;
}

function bf16BitsToFloat32(src: Uint16Array): Float32Array {
  const u = new Uint32Array(src.length);
  for (let i = 0; i < src.length; i++) u[i] = src[i] << 16;
  return new Float32Array(u.buffer);
}

function f16BitsToFloat32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const h = src[i];
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    out[i] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? Number.NaN : s * Number.POSITIVE_INFINITY) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return out;
}

function swapBytes(bytes: Uint8Array, width: number): void {
  if (width === 1) return;
  for (let i = 0; i < bytes.length; i += width) {
    for (let a = i, b = i + width - 1; a < b; a++, b--) {
      const t = bytes[a];
      bytes[a] = bytes[b];
      bytes[b] = t;
    }
  }
}

// ------------------------------------------------------------------ writing

interface Entry {
  name: string;
  t: Tensor;
}

function entries(op: string, dict: unknown): Entry[] {
  let pairs: [string, unknown][];
  if (dict instanceof Map) pairs = [...dict.entries()];
  else if (dict && typeof dict === 'object' && !Array.isArray(dict)) pairs = Object.entries(dict);
  else fail('ERR_ARG', op, 'tensors', 'a Record<string, Tensor> or a Map<string, Tensor>', describe(dict));
  const out: Entry[] = [];
  for (const [name, t] of pairs) {
    if (typeof name !== 'string' || name.length === 0) fail('ERR_ARG', op, 'tensors', 'non-empty string names', describe(name));
    if (name === '__metadata__') fail('ERR_ARG', op, 'tensors', 'no tensor named "__metadata__" (reserved)', '"__metadata__"');
    if (!(t instanceof Tensor)) fail('ERR_ARG', op, `tensors["${name}"]`, 'a Tensor', describe(t));
    if (t.isDisposed) fail('ERR_DISPOSED', op, `tensors["${name}"]`, 'a live tensor', `a disposed tensor of shape [${t.shape.join(', ')}]`);
    out.push({ name, t });
  }
  // Sorted by name (code-unit order): the layout is a function of the contents only.
  out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return out;
}

function checkMetadata(op: string, metadata: unknown): Record<string, string> | undefined {
  if (metadata === undefined) return undefined;
  if (!metadata || typeof metadata !== 'object' || Array.isArray(metadata))
    fail('ERR_ARG', op, 'metadata', 'a Record<string, string>', describe(metadata));
  for (const [k, v] of Object.entries(metadata))
    if (typeof v !== 'string') fail('ERR_ARG', op, `metadata["${k}"]`, 'a string', describe(v));
  return metadata as Record<string, string>;
}

/** Little-endian bytes of one tensor's values (as read by data()/dataSync()). */
function tensorBytes(t: Tensor, values: Float32Array | Float64Array | Int32Array): Uint8Array {
  if (t.dtype === 'bfloat16') {
    const bits = float32ToBf16Bits(values as Float32Array);
    const b = new Uint8Array(bits.buffer);
    if (!LITTLE_ENDIAN) swapBytes(b, 2);
    return b;
  }
  const b = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  if (!LITTLE_ENDIAN) {
    const c = b.slice();
    swapBytes(c, values.BYTES_PER_ELEMENT);
    return c;
  }
  return b;
}

const ELEMENT_SIZE: Record<DType, number> = { float64: 8, float32: 4, int32: 4, bfloat16: 2 };

/**
 * The header for tensors `list` (sorted by name). Header keys are in name order; the data is laid
 * out by element size (largest first), then name, as the reference writer does, so with the
 * header padded to 8 bytes every tensor starts aligned to its element size.
 */
function layout(list: Entry[], sizes: number[], metadata?: Record<string, string>): { head: Uint8Array; order: number[] } {
  const order = list.map((_, i) => i).sort((a, b) => ELEMENT_SIZE[list[b].t.dtype] - ELEMENT_SIZE[list[a].t.dtype] || a - b);
  const offsets = new Array<[number, number]>(list.length);
  let off = 0;
  for (const i of order) {
    offsets[i] = [off, off + sizes[i]];
    off += sizes[i];
  }
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  list.forEach((e, i) => {
    setOwn(header, e.name, { dtype: WRITE_DTYPE[e.t.dtype], shape: [...e.t.shape], data_offsets: offsets[i] });
  });
  let json = JSON.stringify(header);
  const len = Buffer.byteLength(json, 'utf8');
  json += ' '.repeat((8 - (len % 8)) % 8);
  const body = Buffer.from(json, 'utf8');
  const head = Buffer.alloc(8 + body.length);
  head.writeBigUInt64LE(BigInt(body.length), 0);
  body.copy(head, 8);
  return { head, order };
}

function hostValues(t: Tensor): Float32Array | Float64Array | Int32Array {
  if (t.dtype !== 'bfloat16') return t.dataSync();
  // data() rejects bfloat16 (no JS typed array for it): widen to float32 (exact), then round back.
  const f = cast(t, 'float32');
  try {
    return f.dataSync() as Float32Array;
  } finally {
    f.dispose();
  }
}

async function hostValuesAsync(t: Tensor): Promise<Float32Array | Float64Array | Int32Array> {
  if (t.dtype !== 'bfloat16') return t.data();
  const f = cast(t, 'float32');
  try {
    return (await f.data()) as Float32Array;
  } finally {
    f.dispose();
  }
}

function encode(list: Entry[], values: (Float32Array | Float64Array | Int32Array)[], metadata?: Record<string, string>): Uint8Array[] {
  const bytes = list.map((e, i) => tensorBytes(e.t, values[i]));
  const { head, order } = layout(list, bytes.map((b) => b.byteLength), metadata);
  return [head, ...order.map((i) => bytes[i])];
}

/** The bytes of a safetensors file holding `tensors` (sync; for in-memory use). */
export function encodeSafetensors(tensors: Record<string, Tensor> | Map<string, Tensor>, metadata?: Record<string, string>): Buffer {
  const op = 'encodeSafetensors';
  const list = entries(op, tensors);
  const md = checkMetadata(op, metadata);
  return Buffer.concat(encode(list, list.map((e) => hostValues(e.t)), md));
}

/**
 * Saves tensors to a safetensors file, atomically (see writeFileAtomic): a crash or kill during
 * the save leaves the previous file intact. Tensors on any device; their values are downloaded
 * with data(). metadata: string -> string pairs stored under "__metadata__".
 */
export async function saveSafetensors(
  file: string,
  tensors: Record<string, Tensor> | Map<string, Tensor>,
  metadata?: Record<string, string>,
): Promise<void> {
  const op = 'saveSafetensors';
  const p = checkFile(op, file);
  const list = entries(op, tensors);
  const md = checkMetadata(op, metadata);
  const values: (Float32Array | Float64Array | Int32Array)[] = [];
  for (const e of list) values.push(await hostValuesAsync(e.t));
  await writeFileAtomic(p, encode(list, values, md));
}

/** Synchronous saveSafetensors. */
export function saveSafetensorsSync(
  file: string,
  tensors: Record<string, Tensor> | Map<string, Tensor>,
  metadata?: Record<string, string>,
): void {
  const op = 'saveSafetensorsSync';
  const p = checkFile(op, file);
  const list = entries(op, tensors);
  const md = checkMetadata(op, metadata);
  writeFileAtomicSync(p, encode(list, list.map((e) => hostValues(e.t)), md));
}

// ------------------------------------------------------------------ reading

/** Reads exactly `length` bytes at `position` into dst (false when the file ends first). */
function readFully(fd: number, dst: Uint8Array, position: number): boolean {
  let done = 0;
  while (done < dst.length) {
    const n = fs.readSync(fd, dst, done, dst.length - done, position + done);
    if (n === 0) return false;
    done += n;
  }
  return true;
}

function isShape(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((d) => typeof d === 'number' && Number.isSafeInteger(d) && d >= 0);
}

/**
 * obj[key] = value as an own, enumerable property even for keys such as "__proto__" (plain
 * assignment would set the prototype and drop the entry).
 */
export function setOwn<T>(obj: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

/** Validates a parsed header against the file size; returns the tensors in offset order. */
function parseHeader(op: string, file: string, json: string, dataBytes: number): SafetensorsHeader {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (e) {
    ioFail(op, file, 'a JSON header', `malformed JSON (${(e as Error).message})`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) ioFail(op, file, 'a JSON object as header', describe(parsed));
  const tensors: Record<string, SafetensorsHeaderEntry> = {};
  let metadata: Record<string, string> = {};
  const spans: { name: string; begin: number; end: number }[] = [];
  for (const [name, v] of Object.entries(parsed as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (!v || typeof v !== 'object' || Array.isArray(v) || !Object.values(v).every((x) => typeof x === 'string'))
        ioFail(op, file, '"__metadata__" to map strings to strings', JSON.stringify(v));
      metadata = v as Record<string, string>;
      continue;
    }
    const e = v as Partial<SafetensorsHeaderEntry> | null;
    if (!e || typeof e !== 'object') ioFail(op, file, `an object { dtype, shape, data_offsets } for tensor "${name}"`, JSON.stringify(v));
    if (typeof e.dtype !== 'string') ioFail(op, file, `a dtype string for tensor "${name}"`, JSON.stringify(e.dtype));
    const size = DTYPE_SIZE[e.dtype];
    if (size === undefined)
      ioFail(op, file, `a supported dtype for tensor "${name}" (${Object.keys(DTYPE_SIZE).join(', ')})`, JSON.stringify(e.dtype));
    if (!isShape(e.shape)) ioFail(op, file, `a shape of non-negative integers for tensor "${name}"`, JSON.stringify(e.shape));
    const o = e.data_offsets;
    if (!Array.isArray(o) || o.length !== 2 || !o.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0))
      ioFail(op, file, `data_offsets [begin, end] of non-negative integers for tensor "${name}"`, JSON.stringify(o));
    if (o[1] < o[0]) ioFail(op, file, `data_offsets with begin <= end for tensor "${name}"`, `[${o[0]}, ${o[1]}]`);
    const numel = e.shape.reduce((a, b) => a * b, 1);
    if (o[1] - o[0] !== numel * size)
      ioFail(
        op, file,
        `${numel * size} bytes for tensor "${name}" (${e.dtype}, shape [${e.shape.join(', ')}])`,
        `data_offsets [${o[0]}, ${o[1]}] (${o[1] - o[0]} bytes)`,
      );
    setOwn(tensors, name, { dtype: e.dtype, shape: e.shape, data_offsets: [o[0], o[1]] });
    spans.push({ name, begin: o[0], end: o[1] });
  }
  // The offsets must tile the data section: sorted by begin, each starts where the previous ends.
  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  for (const s of spans) {
    if (s.begin < pos)
      ioFail(op, file, `non-overlapping data_offsets (tensor "${s.name}" to start at or after byte ${pos})`, `[${s.begin}, ${s.end}]`);
    if (s.begin > pos) ioFail(op, file, `contiguous data_offsets (tensor "${s.name}" to start at byte ${pos})`, `[${s.begin}, ${s.end}]`);
    pos = s.end;
  }
  if (pos > dataBytes)
    ioFail(op, file, `a data section of ${pos} bytes (as its header says)`, `${dataBytes} bytes: the file is truncated`);
  if (pos < dataBytes) ioFail(op, file, `a data section of ${pos} bytes (as its header says)`, `${dataBytes} bytes (trailing data)`);
  return { tensors, metadata, dataStart: 0 };
}

function withFile<T>(op: string, file: string, fn: (fd: number, size: number) => T): T {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    ioFail(op, file, 'a readable safetensors file', code === 'ENOENT' ? 'no such file' : (e as Error).message);
  }
  try {
    const size = fs.fstatSync(fd).size;
    return fn(fd, size);
  } catch (e) {
    if (e instanceof ResnextError) throw e;
    ioFail(op, file, 'a readable safetensors file', (e as Error).message);
  } finally {
    fs.closeSync(fd);
  }
}

function readHeader(op: string, file: string, fd: number, size: number): SafetensorsHeader {
  if (size < 8) ioFail(op, file, 'at least 8 bytes (the header length)', `${size} bytes: the file is truncated`);
  const lenBuf = Buffer.alloc(8);
  readFully(fd, lenBuf, 0);
  const len = lenBuf.readBigUInt64LE(0);
  if (len > BigInt(size - 8))
    ioFail(op, file, `a header length within the file (at most ${size - 8} bytes)`, `${len} bytes: the file is truncated or not safetensors`);
  if (len > BigInt(MAX_HEADER)) ioFail(op, file, `a header of at most ${MAX_HEADER} bytes`, `${len} bytes`);
  const n = Number(len);
  const head = Buffer.alloc(n);
  if (!readFully(fd, head, 8)) ioFail(op, file, `a header of ${n} bytes`, 'fewer bytes: the file is truncated');
  let json: string;
  try {
    json = new TextDecoder('utf-8', { fatal: true }).decode(head);
  } catch {
    ioFail(op, file, 'a UTF-8 JSON header', 'invalid UTF-8');
  }
  const h = parseHeader(op, file, json, size - 8 - n);
  h.dataStart = 8 + n;
  return h;
}

/** Reads and validates only the header of a safetensors file (names, dtypes, shapes, metadata). */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const op = 'readSafetensorsHeader';
  const p = checkFile(op, file);
  return withFile(op, p, (fd, size) => readHeader(op, p, fd, size));
}

function toTensor(op: string, file: string, name: string, e: SafetensorsHeaderEntry, raw: Uint8Array): Tensor {
  const size = DTYPE_SIZE[e.dtype];
  if (!LITTLE_ENDIAN) swapBytes(raw, size);
  const n = raw.byteLength / size;
  const buf = raw.buffer;
  const shape = e.shape;
  switch (e.dtype) {
    case 'F32':
      return tensor(new Float32Array(buf, raw.byteOffset, n), shape, { dtype: 'float32' });
    case 'F64':
      return tensor(new Float64Array(buf, raw.byteOffset, n), shape, { dtype: 'float64' });
    case 'I32':
      return tensor(new Int32Array(buf, raw.byteOffset, n), shape, { dtype: 'int32' });
    case 'BF16':
      return tensor(bf16BitsToFloat32(new Uint16Array(buf, raw.byteOffset, n)), shape, { dtype: 'bfloat16' });
    case 'F16':
      return tensor(f16BitsToFloat32(new Uint16Array(buf, raw.byteOffset, n)), shape, { dtype: 'float32' });
    default: {
      const out = new Int32Array(n);
      const narrow = (get: (i: number) => number | bigint): void => {
        for (let i = 0; i < n; i++) {
          const v = get(i);
          if (v < -2147483648 || v > 2147483647)
            ioFail(op, file, `values that fit int32 in tensor "${name}" (${e.dtype})`, `${v} at element ${i}`);
          out[i] = Number(v);
        }
      };
      const view = {
        I64: () => new BigInt64Array(buf, raw.byteOffset, n),
        U64: () => new BigUint64Array(buf, raw.byteOffset, n),
        U32: () => new Uint32Array(buf, raw.byteOffset, n),
        I16: () => new Int16Array(buf, raw.byteOffset, n),
        U16: () => new Uint16Array(buf, raw.byteOffset, n),
        I8: () => new Int8Array(buf, raw.byteOffset, n),
        U8: () => new Uint8Array(buf, raw.byteOffset, n),
        BOOL: () => new Uint8Array(buf, raw.byteOffset, n),
      }[e.dtype as 'I64'];
      const arr = view();
      narrow((i) => arr[i]);
      if (e.dtype === 'BOOL') for (let i = 0; i < n; i++) out[i] = out[i] ? 1 : 0;
      return tensor(out, shape, { dtype: 'int32' });
    }
  }
}

/** Reads every tensor's bytes; each goes into its own (aligned) buffer. */
function readAll(op: string, file: string, fd: number, size: number): { header: SafetensorsHeader; raws: [string, Uint8Array][] } {
  const header = readHeader(op, file, fd, size);
  const raws: [string, Uint8Array][] = [];
  for (const [name, e] of Object.entries(header.tensors)) {
    const [b, end] = e.data_offsets;
    const raw = new Uint8Array(new ArrayBuffer(end - b));
    if (!readFully(fd, raw, header.dataStart + b)) ioFail(op, file, `${end - b} bytes for tensor "${name}"`, 'fewer: the file is truncated');
    raws.push([name, raw]);
  }
  return { header, raws };
}

function build(op: string, file: string, header: SafetensorsHeader, raws: [string, Uint8Array][]): TensorDict {
  const out: TensorDict = {};
  try {
    for (const [name, raw] of raws) setOwn(out, name, toTensor(op, file, name, header.tensors[name], raw));
  } catch (e) {
    for (const t of Object.values(out)) t.dispose();
    throw e;
  }
  return out;
}

/** Synchronous loadSafetensors. */
export function loadSafetensorsSync(file: string): TensorDict {
  const op = 'loadSafetensors';
  const p = checkFile(op, file);
  const { header, raws } = withFile(op, p, (fd, size) => readAll(op, p, fd, size));
  return build(op, p, header, raws);
}

/**
 * Loads every tensor of a safetensors file (on the CPU), keyed by name. Throws ResnextError
 * ERR_IO naming the file and the problem for a missing, truncated or malformed file.
 */
export async function loadSafetensors(file: string): Promise<TensorDict> {
  const op = 'loadSafetensors';
  const p = checkFile(op, file);
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(p, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    ioFail(op, p, 'a readable safetensors file', code === 'ENOENT' ? 'no such file' : (e as Error).message);
  }
  let header: SafetensorsHeader;
  const raws: [string, Uint8Array][] = [];
  try {
    const size = (await fh.stat()).size;
    // The header is small: read and validate it synchronously on the open descriptor.
    header = readHeader(op, p, fh.fd, size);
    for (const [name, e] of Object.entries(header.tensors)) {
      const [b, end] = e.data_offsets;
      const raw = new Uint8Array(new ArrayBuffer(end - b));
      let done = 0;
      while (done < raw.length) {
        const { bytesRead } = await fh.read(raw, done, raw.length - done, header.dataStart + b + done);
        if (bytesRead === 0) ioFail(op, p, `${end - b} bytes for tensor "${name}"`, 'fewer: the file is truncated');
        done += bytesRead;
      }
      raws.push([name, raw]);
    }
  } catch (e) {
    if (e instanceof ResnextError) throw e;
    ioFail(op, p, 'a readable safetensors file', (e as Error).message);
  } finally {
    await fh.close();
  }
  return build(op, p, header, raws);
}
