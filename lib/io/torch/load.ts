/**
 * loadTorch: state dicts from files written by `torch.save`, without Python.
 *
 * Two layouts (torch/serialization.py):
 * - zip (PyTorch >= 1.6): `<root>/data.pkl` is a pickle whose tensors are
 *   `_rebuild_tensor_v2(storage, offset, size, stride, ...)` and whose storages are persistent ids
 *   ('storage', torch.<Type>Storage, key, location, numel); each storage's raw bytes are the
 *   record `<root>/data/<key>`, stored uncompressed; `<root>/byteorder` says little or big endian.
 * - legacy (`_use_new_zipfile_serialization=False`, PyTorch < 1.6): back-to-back pickles of
 *   the magic number 0x1950a86a20f9469cfc6c, the protocol version 1001, a sys_info dict, then the
 *   object (persistent ids carry a sixth field, view_metadata), then the sorted list of storage
 *   keys; then, per key in that order, an int64 element count and the raw little-endian bytes.
 *
 * Memory: the pickle is parsed first (it holds only shapes and storage keys); then storage by
 * storage, only the bytes the state dict's tensors view are read from the file (at the zip
 * record's data offset, found with yauzl, so nothing is inflated or buffered as a whole) into a
 * buffer that becomes the tensor's data and is dropped once the tensor holds its copy. Peak
 * memory is the loaded tensors plus the largest single storage, not two copies of the file.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as yauzl from 'yauzl';
import { describe, fail, ResnextError } from '../../native/errors';
import { tensor } from '../../tensor/create';
import type { DType, Tensor } from '../../tensor/tensor';
import {
  type ByteSource, BufferSource, ELEMENT_SIZE, PickleError, PyDict, PyTuple, preservedDType, type StorageRef, StorageType,
  type TensorRef, type TorchDType, unpickle,
} from './pickle';

export interface LoadTorchOptions {
  /**
   * What floating-point storages become: 'float32' (default; the models' dtype), 'float64',
   * 'bfloat16', or 'preserve' (float64 and bfloat16 stay, float16 widens to float32). Integer
   * storages (int64 `num_batches_tracked`, int32, uint8, bool) always become int32, our integer
   * dtype; a value that does not fit is an ERR_IO error.
   */
  dtype?: 'float32' | 'float64' | 'bfloat16' | 'preserve';
  /**
   * Where the state dict is in the file: by default the top-level object if every value is a
   * tensor, else its 'state_dict' or 'model' entry (training checkpoints). A key (or a
   * '/'-separated path such as 'ema/state_dict') names another place.
   */
  key?: string;
  /** A prefix to strip when every key carries it (default 'module.', DDP's); false keeps keys. */
  stripPrefix?: string | false;
}

/** What torch.save wrote, before any tensor data is read (shapes, dtypes, storage keys). */
interface Parsed {
  root: unknown;
  /** Reads `length` bytes of storage `key` starting at byte `start` into dst. */
  readStorage(key: string, start: number, dst: Uint8Array): Promise<void>;
  /** Bytes available in storage `key`. */
  storageBytes(key: string): number;
  littleEndian: boolean;
  close(): Promise<void>;
}

const LITTLE_ENDIAN = os.endianness() === 'LE';
const MAGIC = 0x1950a86a20f9469cfc6cn;
const OP = 'loadTorch';

function ioFail(file: string, expected: string, received: string): never {
  fail('ERR_IO', OP, `file "${file}"`, expected, received);
}

const ALLOWED =
  'only what a state dict is made of (collections.OrderedDict, torch._utils._rebuild_tensor_v2, ' +
  'torch._utils._rebuild_parameter, torch.<Type>Storage, plain numbers, strings, tuples, lists and dicts)';

/** Runs the VM and turns its errors into ERR_IO naming the file (and the refused global). */
function runPickle(file: string, src: ByteSource, persistentLoad: (pid: unknown) => unknown): unknown {
  try {
    return unpickle(src, { persistentLoad });
  } catch (e) {
    if (e instanceof ResnextError) throw e;
    if (e instanceof PickleError) {
      if (e.message.startsWith('global "') || e.message.startsWith('opcode ') || e.message.startsWith('an EXT'))
        ioFail(file, `${ALLOWED}; nothing in the file was executed`, e.message);
      ioFail(file, 'a valid torch.save pickle', e.message);
    }
    throw e;
  }
}

function storageFromPid(file: string, pid: unknown, legacy: boolean, seen: Map<string, StorageRef>): StorageRef {
  if (!(pid instanceof PyTuple) || pid.length < 5) ioFail(file, "persistent ids ('storage', type, key, location, numel)", describe(pid));
  const [tag, type, key, location, numel] = pid;
  if (tag === 'module')
    ioFail(file, 'a state dict (torch.save(model.state_dict(), ...))', 'a pickled nn.Module (torch.save(model, ...)), which only Python can rebuild');
  if (tag !== 'storage') ioFail(file, "persistent ids tagged 'storage'", describe(tag));
  if (!(type instanceof StorageType)) ioFail(file, 'a torch storage class in a persistent id', describe(type));
  if (typeof key !== 'string') ioFail(file, 'a string storage key', describe(key));
  if (typeof numel !== 'number' || !Number.isSafeInteger(numel) || numel < 0) ioFail(file, 'a non-negative storage size', describe(numel));
  let viewOffset = 0;
  if (legacy && pid.length >= 6 && pid[5] !== null) {
    // view_metadata (view_key, offset, view_size): a view into the root storage (PyTorch < 1.0)
    const vm = pid[5];
    if (!Array.isArray(vm) || vm.length !== 3 || typeof vm[1] !== 'number') ioFail(file, 'view_metadata (view_key, offset, size)', describe(vm));
    viewOffset = vm[1] as number;
  }
  const prev = seen.get(key);
  if (prev && prev.dtype !== type.dtype && numel > 0)
    ioFail(file, `one dtype per storage (storage "${key}")`, `${prev.dtype} and ${type.dtype}`);
  const s: StorageRef = { kind: 'storage', key, dtype: type.dtype, numel, location: String(location), viewOffset };
  if (!prev) seen.set(key, s);
  return s;
}

// ------------------------------------------------------------------ zip

function openZip(file: string): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) => {
    yauzl.open(file, { lazyEntries: true, autoClose: false }, (err, zf) => (err ? reject(err) : resolve(zf)));
  });
}

function zipEntries(zf: yauzl.ZipFile): Promise<Map<string, yauzl.Entry>> {
  return new Promise((resolve, reject) => {
    const out = new Map<string, yauzl.Entry>();
    zf.on('entry', (e: yauzl.Entry) => {
      out.set(e.fileName, e);
      zf.readEntry();
    });
    zf.on('end', () => resolve(out));
    zf.on('error', reject);
    zf.readEntry();
  });
}

function dataStart(zf: yauzl.ZipFile, e: yauzl.Entry): Promise<number> {
  return new Promise((resolve, reject) => {
    zf.readLocalFileHeader(e, { minimal: true }, (err, h) => (err ? reject(err) : resolve(h.fileDataStart)));
  });
}

/** Bytes [start, start + dst.length) of a deflated entry (torch never compresses; other zip tools may). */
function readInflated(zf: yauzl.ZipFile, e: yauzl.Entry, start: number, dst: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    zf.openReadStream(e, (err, stream) => {
      if (err) return reject(err);
      let pos = 0;
      stream.on('data', (c: Buffer) => {
        const from = Math.max(start, pos);
        const to = Math.min(start + dst.length, pos + c.length);
        if (to > from) dst.set(c.subarray(from - pos, to - pos), from - start);
        pos += c.length;
      });
      stream.on('end', () => resolve());
      stream.on('error', reject);
    });
  });
}

async function readAt(fh: fs.promises.FileHandle, dst: Uint8Array, position: number, file: string): Promise<void> {
  let done = 0;
  while (done < dst.length) {
    const { bytesRead } = await fh.read(dst, done, dst.length - done, position + done);
    if (bytesRead === 0) ioFail(file, `${dst.length} bytes at offset ${position}`, 'fewer: the file is truncated');
    done += bytesRead;
  }
}

async function parseZip(file: string, fh: fs.promises.FileHandle): Promise<Parsed> {
  let zf: yauzl.ZipFile;
  let entries: Map<string, yauzl.Entry>;
  try {
    zf = await openZip(file);
    entries = await zipEntries(zf);
  } catch (e) {
    ioFail(file, 'a readable zip archive (torch.save)', (e as Error).message);
  }
  try {
    // torch's reader takes the archive's one top-level folder name; we take the folder holding data.pkl.
    const pkl = [...entries.keys()].find((n) => /^[^/]*\/data\.pkl$/.test(n) || n === 'data.pkl');
    if (!pkl) ioFail(file, 'a torch.save archive with <name>/data.pkl', `a zip archive without it (${[...entries.keys()].slice(0, 4).join(', ')}...)`);
    const prefix = pkl.slice(0, pkl.length - 'data.pkl'.length);
    const record = async (e: yauzl.Entry, start: number, dst: Uint8Array) => {
      if (start + dst.length > e.uncompressedSize) ioFail(file, `record "${e.fileName}" of at least ${start + dst.length} bytes`, `${e.uncompressedSize} bytes`);
      if (e.compressionMethod === 0) await readAt(fh, dst, (await dataStart(zf, e)) + start, file);
      else if (e.compressionMethod === 8) await readInflated(zf, e, start, dst);
      else ioFail(file, `record "${e.fileName}" stored or deflated`, `compression method ${e.compressionMethod}`);
    };
    const whole = async (name: string) => {
      const e = entries.get(name)!;
      const b = Buffer.alloc(e.uncompressedSize);
      await record(e, 0, b);
      return b;
    };
    const bo = entries.has(`${prefix}byteorder`) ? (await whole(`${prefix}byteorder`)).toString('latin1') : 'little';
    if (bo !== 'little' && bo !== 'big') ioFail(file, 'byteorder "little" or "big"', JSON.stringify(bo));
    const seen = new Map<string, StorageRef>();
    const root = runPickle(file, new BufferSource(await whole(pkl)), (pid) => storageFromPid(file, pid, false, seen));
    const entryOf = (key: string) => {
      const e = entries.get(`${prefix}data/${key}`);
      if (!e) ioFail(file, `a record "${prefix}data/${key}" for storage "${key}"`, 'none');
      return e;
    };
    return {
      root,
      littleEndian: bo === 'little',
      storageBytes: (key) => entryOf(key).uncompressedSize,
      readStorage: (key, start, dst) => record(entryOf(key), start, dst),
      close: async () => zf.close(),
    };
  } catch (e) {
    zf.close();
    throw e;
  }
}

// ------------------------------------------------------------------ legacy

/** Reads a file front to back in chunks for the legacy format's run of pickles. */
class FileSource implements ByteSource {
  private buf = Buffer.alloc(0);
  private bufStart = 0;
  private pos: number;
  constructor(private readonly fd: number, private readonly size: number, start = 0) {
    this.pos = start;
  }
  get position(): number {
    return this.pos;
  }
  private ensure(n: number): void {
    const have = this.bufStart + this.buf.length - this.pos;
    if (have >= n) return;
    if (this.pos + n > this.size) throw new PickleError('the pickle ends early (truncated file)');
    const want = Math.max(n, 1 << 20);
    const len = Math.min(want, this.size - this.pos);
    const b = Buffer.alloc(len);
    let done = 0;
    while (done < len) {
      const r = fs.readSync(this.fd, b, done, len - done, this.pos + done);
      if (r === 0) throw new PickleError('the pickle ends early (truncated file)');
      done += r;
    }
    this.buf = b;
    this.bufStart = this.pos;
  }
  read(n: number): Uint8Array {
    this.ensure(n);
    const o = this.pos - this.bufStart;
    this.pos += n;
    return this.buf.subarray(o, o + n);
  }
  readLine(): string {
    const bytes: number[] = [];
    for (;;) {
      const c = this.read(1)[0];
      if (c === 0x0a) return Buffer.from(bytes).toString('latin1');
      bytes.push(c);
      if (bytes.length > 1 << 20) throw new PickleError('a text line longer than 1 MB (corrupt pickle)');
    }
  }
}

async function parseLegacy(file: string, fh: fs.promises.FileHandle, size: number): Promise<Parsed> {
  const src = new FileSource(fh.fd, size);
  const noPid = () => {
    throw new PickleError('a persistent id outside the main pickle');
  };
  const magic = runPickle(file, src, noPid);
  if (magic !== MAGIC) ioFail(file, 'a torch.save file (zip archive, or the legacy magic number 0x1950a86a20f9469cfc6c)', `${describe(magic)}`);
  const proto = runPickle(file, src, noPid);
  if (proto !== 1001) ioFail(file, 'legacy protocol version 1001', describe(proto));
  const sysInfo = runPickle(file, src, noPid);
  const little = sysInfo instanceof PyDict ? sysInfo.get('little_endian') !== false : true;
  const seen = new Map<string, StorageRef>();
  const root = runPickle(file, src, (pid) => storageFromPid(file, pid, true, seen));
  const keys = runPickle(file, src, noPid);
  if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'string')) ioFail(file, 'the list of storage keys after the object', describe(keys));
  // Storages follow in the order of that list, each as <int64 element count><raw bytes>.
  const where = new Map<string, { start: number; bytes: number }>();
  let pos = src.position;
  const head = Buffer.alloc(8);
  for (const k of keys as string[]) {
    const s = seen.get(k);
    if (!s) ioFail(file, `storage "${k}" to be referenced by the pickle`, 'an unreferenced storage key');
    if (pos + 8 > size) ioFail(file, `storage "${k}" at byte ${pos}`, `a file of ${size} bytes: truncated`);
    await readAt(fh, head, pos, file);
    const n = little ? head.readBigInt64LE(0) : head.readBigInt64BE(0);
    const bytes = Number(n) * ELEMENT_SIZE[s.dtype];
    if (n < 0n || pos + 8 + bytes > size) ioFail(file, `${bytes} bytes of storage "${k}" at byte ${pos + 8}`, `a file of ${size} bytes: truncated`);
    where.set(k, { start: pos + 8, bytes });
    pos += 8 + bytes;
  }
  const at = (key: string) => {
    const w = where.get(key);
    if (!w) ioFail(file, `storage "${key}" in the file's storage list`, 'none');
    return w;
  };
  return {
    root,
    littleEndian: little,
    storageBytes: (key) => at(key).bytes,
    readStorage: (key, start, dst) => readAt(fh, dst, at(key).start + start, file),
    close: async () => undefined,
  };
}

// ------------------------------------------------------------------ state dict selection

const isTensorRef = (v: unknown): v is TensorRef => !!v && typeof v === 'object' && (v as TensorRef).kind === 'tensor';

function isStateDict(v: unknown): v is PyDict {
  return v instanceof PyDict && v.size > 0 && [...v.entries()].every(([k, t]) => typeof k === 'string' && isTensorRef(t));
}

function selectStateDict(file: string, root: unknown, key: string | undefined): { dict: PyDict; where: string } {
  if (key !== undefined) {
    let v: unknown = root;
    for (const part of key.split('/')) {
      if (!(v instanceof PyDict) || !v.has(part)) ioFail(file, `an entry "${key}" holding the state dict`, `no entry "${part}"`);
      v = v.get(part);
    }
    if (!isStateDict(v)) ioFail(file, `entry "${key}" to be a state dict (names -> tensors)`, describe(v));
    return { dict: v, where: key };
  }
  if (isStateDict(root)) return { dict: root, where: '' };
  if (root instanceof PyDict) {
    for (const k of ['state_dict', 'model', 'model_state_dict', 'module', 'net']) {
      const v = root.get(k);
      if (isStateDict(v)) return { dict: v, where: k };
    }
    const keys = [...root.keys()].map((k) => JSON.stringify(k)).slice(0, 10).join(', ');
    ioFail(file, "a state dict, or a checkpoint with one under 'state_dict' or 'model' (or pass options.key)", `a dict with keys ${keys}`);
  }
  ioFail(file, 'a state dict (a dict of tensors)', isTensorRef(root) ? 'a single tensor' : describe(root));
}

// ------------------------------------------------------------------ tensors

let f16Table: Float32Array | null = null;
function halfTable(): Float32Array {
  if (f16Table) return f16Table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    t[h] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? Number.NaN : s * Number.POSITIVE_INFINITY) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return (f16Table = t);
}

function swapBytes(b: Uint8Array, width: number): void {
  if (width === 1) return;
  for (let i = 0; i < b.length; i += width)
    for (let a = i, z = i + width - 1; a < z; a++, z--) {
      const t = b[a];
      b[a] = b[z];
      b[z] = t;
    }
}

/** Source element i (relative to the buffer) as a JS number or bigint. */
function reader(dtype: TorchDType, buf: Uint8Array): (i: number) => number | bigint {
  const ab = buf.buffer;
  const o = buf.byteOffset;
  const n = buf.byteLength / ELEMENT_SIZE[dtype];
  switch (dtype) {
    case 'float32': {
      const a = new Float32Array(ab, o, n);
      return (i) => a[i];
    }
    case 'float64': {
      const a = new Float64Array(ab, o, n);
      return (i) => a[i];
    }
    case 'float16': {
      const a = new Uint16Array(ab, o, n);
      const t = halfTable();
      return (i) => t[a[i]];
    }
    case 'bfloat16': {
      const a = new Uint16Array(ab, o, n);
      const f = new Float32Array(1);
      const u = new Uint32Array(f.buffer);
      return (i) => {
        u[0] = a[i] << 16;
        return f[0];
      };
    }
    case 'int64': {
      const a = new BigInt64Array(ab, o, n);
      return (i) => a[i];
    }
    case 'int32': {
      const a = new Int32Array(ab, o, n);
      return (i) => a[i];
    }
    case 'int16': {
      const a = new Int16Array(ab, o, n);
      return (i) => a[i];
    }
    case 'int8': {
      const a = new Int8Array(ab, o, n);
      return (i) => a[i];
    }
    case 'uint8': {
      const a = new Uint8Array(ab, o, n);
      return (i) => a[i];
    }
    case 'bool': {
      const a = new Uint8Array(ab, o, n);
      return (i) => (a[i] ? 1 : 0);
    }
  }
}

function isContiguous(size: number[], stride: number[]): boolean {
  let s = 1;
  for (let i = size.length - 1; i >= 0; i--) {
    if (size[i] !== 1 && stride[i] !== s) return false;
    s *= size[i];
  }
  return true;
}

/**
 * The values of one strided view, in row-major order, as the typed array for `target`.
 * `base` is the view's first element relative to `buf`.
 */
function gather(file: string, name: string, t: TensorRef, buf: Uint8Array, base: number, target: DType): Float32Array | Float64Array | Int32Array {
  const { size, stride } = t;
  const dtype = t.storage.dtype;
  const numel = size.reduce((a, b) => a * b, 1);
  const contiguous = isContiguous(size, stride);
  const es = ELEMENT_SIZE[dtype];
  // Fast path: a contiguous float32 (or float64) view read as the same dtype is the buffer itself.
  if (contiguous && (target === 'float32' || target === 'bfloat16') && dtype === 'float32')
    return new Float32Array(buf.buffer, buf.byteOffset + base * es, numel);
  if (contiguous && target === 'float64' && dtype === 'float64') return new Float64Array(buf.buffer, buf.byteOffset + base * es, numel);
  const out = target === 'float64' ? new Float64Array(numel) : target === 'int32' ? new Int32Array(numel) : new Float32Array(numel);
  const get = reader(dtype, buf);
  const isInt = target === 'int32';
  const put = (j: number, v: number | bigint) => {
    if (isInt && (v < -2147483648 || v > 2147483647))
      ioFail(file, `values that fit int32 in tensor "${name}" (${dtype})`, `${v} at element ${j}`);
    out[j] = Number(v);
  };
  if (contiguous) {
    for (let j = 0; j < numel; j++) put(j, get(base + j));
    return out;
  }
  // Non-contiguous: walk the multi-index in row-major order (an odometer over size).
  const nd = size.length;
  const idx = new Array<number>(nd).fill(0);
  let src = base;
  for (let j = 0; j < numel; j++) {
    put(j, get(src));
    for (let d = nd - 1; d >= 0; d--) {
      idx[d]++;
      src += stride[d];
      if (idx[d] < size[d]) break;
      src -= stride[d] * size[d];
      idx[d] = 0;
    }
  }
  return out;
}

function targetDType(dtype: TorchDType, option: LoadTorchOptions['dtype']): DType {
  const isFloat = dtype === 'float32' || dtype === 'float64' || dtype === 'float16' || dtype === 'bfloat16';
  if (!isFloat) return 'int32';
  if (option === 'preserve') return preservedDType(dtype);
  return option ?? 'float32';
}

/** One tensor of a torch.save state dict, known from the pickle before any data is read. */
export interface TorchIndexEntry {
  name: string;
  shape: number[];
  /** The storage's dtype in the file. */
  fileDType: TorchDType;
  /** What the tensor will be (after LoadTorchOptions.dtype). */
  dtype: DType;
}

/** An opened torch.save file: its state dict's names and shapes, and a reader of the data. */
export interface TorchReader {
  readonly file: string;
  /** The state dict's tensors in the file's order (prefix stripped, see LoadTorchOptions). */
  readonly entries: TorchIndexEntry[];
  /**
   * Reads every tensor, storage by storage, handing each to `onTensor` as soon as it is made
   * (the callback owns it). At most one storage's bytes are held at a time.
   */
  read(onTensor: (name: string, t: Tensor) => void): Promise<void>;
  close(): Promise<void>;
}

function checkOptions(options: LoadTorchOptions): string | false {
  if (options === null || typeof options !== 'object') fail('ERR_ARG', OP, 'options', 'an object', describe(options));
  const dt = options.dtype;
  if (dt !== undefined && !['float32', 'float64', 'bfloat16', 'preserve'].includes(dt))
    fail('ERR_ARG', OP, 'options.dtype', '"float32", "float64", "bfloat16" or "preserve"', describe(dt));
  const strip = options.stripPrefix === undefined ? 'module.' : options.stripPrefix;
  if (strip !== false && typeof strip !== 'string') fail('ERR_ARG', OP, 'options.stripPrefix', 'a string or false', describe(strip));
  return strip;
}

const wrapError = (p: string, e: unknown) =>
  e instanceof ResnextError ? e : new ResnextError(`${OP}: file "${p}" expected a readable torch.save file, received ${(e as Error).message}`, 'ERR_IO');

/**
 * Opens a torch.save file and parses its pickle (no tensor data is read yet): the state dict's
 * names, shapes and dtypes, then `read()` for the data. The builders use it to check a file
 * against a model before reading 100 MB, and to copy each tensor into the model as it arrives.
 * Close it when done (read() does not).
 */
export async function openTorch(file: string, options: LoadTorchOptions = {}): Promise<TorchReader> {
  if (typeof file !== 'string' || file.length === 0) fail('ERR_ARG', OP, 'path', 'a non-empty file path', describe(file));
  const strip = checkOptions(options);
  const p = path.resolve(file);
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(p, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    ioFail(p, 'a readable torch.save file', code === 'ENOENT' ? 'no such file' : (e as Error).message);
  }
  let parsed: Parsed | undefined;
  try {
    const size = (await fh.stat()).size;
    const magic = Buffer.alloc(Math.min(size, 4));
    await readAt(fh, magic, 0, p);
    if (size < 4) ioFail(p, 'a torch.save file', `${size} bytes`);
    if (magic.readUInt32LE(0) === 0x04034b50) parsed = await parseZip(p, fh);
    else if (magic[0] === 0x80) parsed = await parseLegacy(p, fh, size);
    else if (size > 262 && (await (async () => {
      const t = Buffer.alloc(5);
      await readAt(fh, t, 257, p);
      return t.toString('latin1') === 'ustar';
    })()))
      ioFail(p, 'the zip or pickle format of torch.save', "the tar format of PyTorch < 0.4 (load and re-save it with a newer PyTorch)");
    else ioFail(p, 'a torch.save file (a zip archive or a pickle)', `a file starting with bytes ${[...magic].map((b) => b.toString(16).padStart(2, '0')).join(' ')}`);

    const { dict } = selectStateDict(p, parsed.root, options.key);
    let views = [...dict.entries()] as [string, TensorRef][];
    if (strip && views.every(([k]) => k.startsWith(strip))) views = views.map(([k, t]) => [k.slice(strip.length), t]);
    const src = parsed;
    const entries = views.map(([name, t]) => ({ name, shape: [...t.size], fileDType: t.storage.dtype, dtype: targetDType(t.storage.dtype, options.dtype) }));
    return {
      file: p,
      entries,
      read: async (onTensor) => {
        try {
          await readTensors(p, src, views, options.dtype, onTensor);
        } catch (e) {
          throw wrapError(p, e);
        }
      },
      close: async () => {
        await src.close();
        await fh.close();
      },
    };
  } catch (e) {
    await parsed?.close();
    await fh.close();
    throw wrapError(p, e);
  }
}

/** Storage by storage: reads the union of the bytes its views need, once, and makes each view's tensor. */
async function readTensors(
  p: string, parsed: Parsed, entries: [string, TensorRef][], option: LoadTorchOptions['dtype'], onTensor: (name: string, t: Tensor) => void,
): Promise<void> {
  const byStorage = new Map<string, [string, TensorRef][]>();
  for (const e of entries) {
    const k = e[1].storage.key;
    if (!byStorage.has(k)) byStorage.set(k, []);
    byStorage.get(k)!.push(e);
  }
  for (const [key, views] of byStorage) {
    const dtype = views[0][1].storage.dtype;
    const es = ELEMENT_SIZE[dtype];
    const available = Math.floor(parsed.storageBytes(key) / es);
    let lo = Number.POSITIVE_INFINITY;
    let hi = 0;
    for (const [name, t] of views) {
      if (t.storage.dtype !== dtype) ioFail(p, `one dtype per storage ("${key}")`, `${dtype} and ${t.storage.dtype}`);
      if (t.size.some((d) => d === 0)) continue;
      // A stride-0 (broadcast) view may claim more elements than its storage holds; a huge one
      // is a corrupt or hostile file, not a state dict, and would exhaust memory.
      const numel = t.size.reduce((a, d) => a * d, 1);
      if (numel > Math.max(available, 1 << 26))
        ioFail(p, `tensor "${name}" of at most ${Math.max(available, 1 << 26)} elements (its storage has ${available})`, `size [${t.size}] (${numel} elements)`);
      const first = t.storage.viewOffset + t.offset;
      const last = first + t.size.reduce((a, d, i) => a + (d - 1) * t.stride[i], 0);
      if (last >= Math.min(available, t.storage.numel))
        ioFail(p, `tensor "${name}" (size [${t.size}], stride [${t.stride}], offset ${t.offset}) within its storage of ${Math.min(available, t.storage.numel)} elements`, `element ${last}`);
      lo = Math.min(lo, first);
      hi = Math.max(hi, last + 1);
    }
    const buf = new Uint8Array(new ArrayBuffer(hi > lo ? (hi - lo) * es : 0));
    if (buf.length) await parsed.readStorage(key, lo * es, buf);
    if (parsed.littleEndian !== LITTLE_ENDIAN) swapBytes(buf, es);
    for (const [name, t] of views) {
      const target = targetDType(dtype, option);
      const numel = t.size.reduce((a, b) => a * b, 1);
      const values = numel === 0 ? (target === 'float64' ? new Float64Array(0) : target === 'int32' ? new Int32Array(0) : new Float32Array(0))
        : gather(p, name, t, buf, t.storage.viewOffset + t.offset - lo, target);
      onTensor(name, tensor(values, [...t.size], { dtype: target }));
    }
  }
}

/**
 * Loads the state dict of a file written by `torch.save` (zip or legacy format) as tensors on
 * the CPU, keyed by name in the file's order. Training checkpoints ({'state_dict': ...},
 * {'model': ...}) are unwrapped and DDP's 'module.' prefix is stripped (see LoadTorchOptions).
 * Views are materialised: two tensors sharing a storage become two tensors; a non-contiguous
 * view is copied out in row-major order. The pickle is read with a strict allow-list: any other
 * global (e.g. `posix.system`) is a ResnextError ERR_IO naming the file and the global, and
 * nothing in the file is executed. Missing, truncated or malformed files are ERR_IO errors.
 */
export async function loadTorch(file: string, options: LoadTorchOptions = {}): Promise<Record<string, Tensor>> {
  const reader = await openTorch(file, options);
  const made = new Map<string, Tensor>();
  try {
    await reader.read((name, t) => made.set(name, t));
    // The file's order (a torchvision state dict's order); defineProperty so any name is a plain key.
    const out: Record<string, Tensor> = {};
    for (const { name } of reader.entries) Object.defineProperty(out, name, { value: made.get(name), enumerable: true, writable: true, configurable: true });
    return out;
  } catch (e) {
    for (const t of made.values()) t.dispose();
    throw e;
  } finally {
    await reader.close();
  }
}
