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
import { PassThrough, Readable } from 'node:stream';
import * as yauzl from 'yauzl';
import { describe, fail, ResnextError } from '../../native/errors';
import { tensor } from '../../tensor/create';
import type { DType, Tensor } from '../../tensor/tensor';
import {
  type ByteSource, BufferSource, ELEMENT_SIZE, PickleError, PyDict, PyTuple, preservedDType, safeName, type StorageRef, StorageType,
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

/** describe() for values from the file, cut to 200 characters (a string in the file can be megabytes). */
function desc(v: unknown): string {
  const d = describe(v);
  return d.length > 200 ? `${d.slice(0, 200)}... (${d.length} characters)` : d;
}

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
  if (!(pid instanceof PyTuple) || pid.length < 5) ioFail(file, "persistent ids ('storage', type, key, location, numel)", desc(pid));
  const [tag, type, key, location, numel] = pid;
  if (tag === 'module')
    ioFail(file, 'a state dict (torch.save(model.state_dict(), ...))', 'a pickled nn.Module (torch.save(model, ...)), which only Python can rebuild');
  if (tag !== 'storage') ioFail(file, "persistent ids tagged 'storage'", desc(tag));
  if (!(type instanceof StorageType)) ioFail(file, 'a torch storage class in a persistent id', desc(type));
  if (typeof key !== 'string') ioFail(file, 'a string storage key', desc(key));
  if (typeof numel !== 'number' || !Number.isSafeInteger(numel) || numel < 0) ioFail(file, 'a non-negative storage size', desc(numel));
  // A string (torch writes 'cpu', 'cuda:0'); anything else is not stringified (a deeply nested list would recurse).
  if (typeof location !== 'string') ioFail(file, 'a string storage location', desc(location));
  let viewOffset = 0;
  let viewNumel = numel;
  if (legacy && pid.length >= 6 && pid[5] !== null) {
    // view_metadata (view_key, offset, view_size): a view into the root storage (PyTorch < 1.0)
    const vm = pid[5];
    const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
    if (!Array.isArray(vm) || vm.length !== 3 || !isCount(vm[1]) || !isCount(vm[2])) ioFail(file, 'view_metadata (view_key, offset, size)', desc(vm));
    if (vm[1] + vm[2] > numel)
      ioFail(file, `a storage view within its storage "${safeName(key)}" of ${numel} elements`, `offset ${vm[1]} and size ${vm[2]}`);
    viewOffset = vm[1];
    viewNumel = vm[2];
  }
  const prev = seen.get(key);
  if (prev && prev.dtype !== type.dtype && numel > 0)
    ioFail(file, `one dtype per storage (storage "${safeName(key)}")`, `${prev.dtype} and ${type.dtype}`);
  const s: StorageRef = { kind: 'storage', key, dtype: type.dtype, numel, location, viewOffset, viewNumel };
  if (!prev) seen.set(key, s);
  return s;
}

// ------------------------------------------------------------------ zip

/**
 * yauzl reads through this: every position is checked against the file before any fs call.
 * (yauzl trusts 64-bit fields such as the zip64 end-of-central-directory locator's offset; a
 * position beyond 2^53 makes fs.read throw inside yauzl's callback, an uncaught exception that
 * kills the process, instead of an error for us to report.)
 */
class CheckedReader extends yauzl.RandomAccessReader {
  constructor(private readonly fd: number, private readonly size: number) {
    super();
  }
  private check(start: number, end: number): Error | null {
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start || end > this.size)
      return new Error(`a read of bytes [${start}, ${end}) outside the file of ${this.size} bytes (a corrupt zip offset)`);
    return null;
  }
  _readStreamForRange(start: number, end: number): Readable {
    const err = this.check(start, end);
    if (err) {
      const s = new PassThrough();
      setImmediate(() => s.destroy(err));
      return s;
    }
    // Our own stream over positional reads: fs.ReadStream closes the fd when destroyed, and the fd is ours.
    const fd = this.fd;
    let pos = start;
    return new Readable({
      read(this: Readable) {
        const n = Math.min(1 << 16, end - pos);
        if (n <= 0) return void this.push(null);
        const b = Buffer.allocUnsafe(n);
        fs.read(fd, b, 0, n, pos, (e, got) => {
          if (e) return void this.destroy(e);
          if (got === 0) return void this.destroy(new Error('unexpected EOF'));
          pos += got;
          this.push(got < n ? b.subarray(0, got) : b);
        });
      },
    });
  }
  read(buffer: Buffer, offset: number, length: number, position: number, callback: (err: Error | null, bytesRead?: number) => void): void {
    const err = this.check(position, position + length);
    if (err) return void setImmediate(() => callback(err));
    fs.read(this.fd, buffer, offset, length, position, (e, n) => callback(e, n));
  }
}

function openZip(fd: number, size: number): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) => {
    yauzl.fromRandomAccessReader(new CheckedReader(fd, size), size, { lazyEntries: true, autoClose: false }, (err, zf) => (err ? reject(err) : resolve(zf)));
  });
}

function zipEntries(zf: yauzl.ZipFile): Promise<Map<string, yauzl.Entry>> {
  return new Promise((resolve, reject) => {
    const out = new Map<string, yauzl.Entry>();
    zf.on('entry', (e: yauzl.Entry) => {
      // Two records of one name: zip readers disagree on which wins (first, last), so a file
      // could show one state dict to a checker and another to the loader. Refused.
      if (out.has(e.fileName)) {
        reject(new Error(`two records named "${safeName(e.fileName)}"`));
        return;
      }
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
    // yauzl checks here that the record's data lies within the file.
    zf.readLocalFileHeader(e, { minimal: true }, (err, h) => (err ? reject(err) : resolve(h.fileDataStart)));
  });
}

/** Bytes [start, start + dst.length) of a deflated entry (torch never compresses; other zip tools may). */
function readInflated(zf: yauzl.ZipFile, e: yauzl.Entry, start: number, dst: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    zf.openReadStream(e, (err, stream) => {
      if (err) return reject(err);
      let pos = 0;
      const end = start + dst.length;
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        if (pos >= end) resolve();
        else reject(new Error(`record "${safeName(e.fileName)}" inflates to ${pos} bytes, fewer than the ${end} needed`));
      };
      stream.on('data', (c: Buffer) => {
        if (done) return;
        const from = Math.max(start, pos);
        const to = Math.min(end, pos + c.length);
        if (to > from) dst.set(c.subarray(from - pos, to - pos), from - start);
        pos += c.length;
        // Stop inflating once the bytes we need are in: the rest is never decompressed.
        if (pos >= end) {
          finish();
          (stream as unknown as { destroy(): void }).destroy();
        }
      });
      stream.on('end', finish);
      stream.on('error', (x: Error) => {
        if (done) return;
        done = true;
        reject(x);
      });
    });
  });
}

async function readAt(fh: fs.promises.FileHandle, dst: Uint8Array, position: number, file: string): Promise<void> {
  if (!Number.isSafeInteger(position) || position < 0) ioFail(file, 'a read within the file', `offset ${position}`);
  let done = 0;
  while (done < dst.length) {
    const { bytesRead } = await fh.read(dst, done, dst.length - done, position + done);
    if (bytesRead === 0) ioFail(file, `${dst.length} bytes at offset ${position}`, 'fewer: the file is truncated');
    done += bytesRead;
  }
}

/** Deflate's largest expansion is about 1032:1; a record claiming more is lying about its size. */
const MAX_DEFLATE_RATIO = 1032;
/** At most this many bytes are inflated from compressed records in one load (a zip bomb guard; torch never compresses). */
const MAX_INFLATED_BYTES = 2 ** 31;
/** A deflated data.pkl may inflate to at most this (real ones are kilobytes: shapes and names). */
const MAX_PICKLE_INFLATED = 1 << 28;
/** The byteorder record is "little" or "big". */
const MAX_BYTEORDER_BYTES = 16;

async function parseZip(file: string, fh: fs.promises.FileHandle, fileSize: number): Promise<Parsed> {
  let zf: yauzl.ZipFile | undefined;
  let entries: Map<string, yauzl.Entry>;
  try {
    zf = await openZip(fh.fd, fileSize);
    entries = await zipEntries(zf);
  } catch (e) {
    zf?.close();
    ioFail(file, 'a readable zip archive (torch.save)', (e as Error).message);
  }
  const z = zf;
  try {
    // torch's reader takes the archive's one top-level folder name; we take the folder holding data.pkl (exactly one).
    const pkls = [...entries.keys()].filter((n) => /^[^/]*\/data\.pkl$/.test(n) || n === 'data.pkl');
    if (pkls.length === 0)
      ioFail(file, 'a torch.save archive with <name>/data.pkl', `a zip archive without it (${[...entries.keys()].slice(0, 4).map(safeName).join(', ')}...)`);
    if (pkls.length > 1) ioFail(file, 'one data.pkl in a torch.save archive', pkls.slice(0, 4).map((n) => `"${safeName(n)}"`).join(', '));
    const pkl = pkls[0];
    const prefix = pkl.slice(0, pkl.length - 'data.pkl'.length);
    let inflated = 0;
    // Sizes are checked before anything is allocated: a central directory can claim any size.
    const checkEntry = (e: yauzl.Entry) => {
      const name = `record "${safeName(e.fileName)}"`;
      if (e.compressionMethod !== 0 && e.compressionMethod !== 8) ioFail(file, `${name} stored or deflated`, `compression method ${e.compressionMethod}`);
      if (e.isEncrypted()) ioFail(file, `${name} unencrypted`, 'an encrypted record');
      if (e.relativeOffsetOfLocalHeader + 30 + e.compressedSize > fileSize)
        ioFail(file, `${name} within the file of ${fileSize} bytes`, `${e.compressedSize} bytes at offset ${e.relativeOffsetOfLocalHeader}`);
      if (e.compressionMethod === 8 && e.uncompressedSize > e.compressedSize * MAX_DEFLATE_RATIO + 1024)
        ioFail(file, `${name} of at most ${MAX_DEFLATE_RATIO}x its ${e.compressedSize} compressed bytes`, `${e.uncompressedSize} bytes (a zip bomb or a corrupt header)`);
    };
    const record = async (e: yauzl.Entry, start: number, dst: Uint8Array) => {
      checkEntry(e);
      if (start + dst.length > e.uncompressedSize) ioFail(file, `record "${safeName(e.fileName)}" of at least ${start + dst.length} bytes`, `${e.uncompressedSize} bytes`);
      if (e.compressionMethod === 0) await readAt(fh, dst, (await dataStart(z, e)) + start, file);
      else {
        inflated += start + dst.length;
        if (inflated > MAX_INFLATED_BYTES) ioFail(file, `at most ${MAX_INFLATED_BYTES} bytes inflated from compressed records`, `more (a zip bomb?)`);
        await readInflated(z, e, start, dst);
      }
    };
    const whole = async (name: string, max: number) => {
      const e = entries.get(name)!;
      checkEntry(e);
      if (e.uncompressedSize > max) ioFail(file, `record "${safeName(name)}" of at most ${max} bytes`, `${e.uncompressedSize} bytes`);
      if (e.compressionMethod === 0) await dataStart(z, e); // bounds check before the allocation
      const b = Buffer.alloc(e.uncompressedSize);
      await record(e, 0, b);
      return b;
    };
    const bo = entries.has(`${prefix}byteorder`) ? (await whole(`${prefix}byteorder`, MAX_BYTEORDER_BYTES)).toString('latin1') : 'little';
    if (bo !== 'little' && bo !== 'big') ioFail(file, 'byteorder "little" or "big"', JSON.stringify(bo));
    const seen = new Map<string, StorageRef>();
    // A stored data.pkl is bounded by the file; a deflated one (never torch's) by MAX_PICKLE_INFLATED.
    const pklMax = entries.get(pkl)!.compressionMethod === 0 ? fileSize : MAX_PICKLE_INFLATED;
    const root = runPickle(file, new BufferSource(await whole(pkl, pklMax)), (pid) => storageFromPid(file, pid, false, seen));
    const entryOf = (key: string) => {
      const e = entries.get(`${prefix}data/${key}`);
      if (!e) ioFail(file, `a record "${safeName(`${prefix}data/${key}`)}" for storage "${safeName(key)}"`, 'none');
      checkEntry(e);
      return e;
    };
    return {
      root,
      littleEndian: bo === 'little',
      storageBytes: (key) => entryOf(key).uncompressedSize,
      readStorage: (key, start, dst) => record(entryOf(key), start, dst),
      close: async () => z.close(),
    };
  } catch (e) {
    z.close();
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
    if (!Number.isSafeInteger(n) || n < 0) throw new PickleError(`a length of ${n} (corrupt pickle)`);
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
  if (magic !== MAGIC) ioFail(file, 'a torch.save file (zip archive, or the legacy magic number 0x1950a86a20f9469cfc6c)', `${desc(magic)}`);
  const proto = runPickle(file, src, noPid);
  if (proto !== 1001) ioFail(file, 'legacy protocol version 1001', desc(proto));
  const sysInfo = runPickle(file, src, noPid);
  const little = sysInfo instanceof PyDict ? sysInfo.get('little_endian') !== false : true;
  const seen = new Map<string, StorageRef>();
  const root = runPickle(file, src, (pid) => storageFromPid(file, pid, true, seen));
  const keys = runPickle(file, src, noPid);
  if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'string')) ioFail(file, 'the list of storage keys after the object', desc(keys));
  // Storages follow in the order of that list, each as <int64 element count><raw bytes>.
  const where = new Map<string, { start: number; bytes: number }>();
  let pos = src.position;
  const head = Buffer.alloc(8);
  for (const k of keys as string[]) {
    const s = seen.get(k);
    if (!s) ioFail(file, `storage "${safeName(k)}" to be referenced by the pickle`, 'an unreferenced storage key');
    if (where.has(k)) ioFail(file, 'each storage key once in the storage list', `"${safeName(k)}" twice`);
    if (pos + 8 > size) ioFail(file, `storage "${safeName(k)}" at byte ${pos}`, `a file of ${size} bytes: truncated`);
    await readAt(fh, head, pos, file);
    const n = little ? head.readBigInt64LE(0) : head.readBigInt64BE(0);
    const bytes = Number(n) * ELEMENT_SIZE[s.dtype];
    if (n < 0n || pos + 8 + bytes > size) ioFail(file, `${bytes} bytes of storage "${safeName(k)}" at byte ${pos + 8}`, `a file of ${size} bytes: truncated`);
    where.set(k, { start: pos + 8, bytes });
    pos += 8 + bytes;
  }
  const at = (key: string) => {
    const w = where.get(key);
    if (!w) ioFail(file, `storage "${safeName(key)}" in the file's storage list`, 'none');
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
    if (!isStateDict(v)) ioFail(file, `entry "${key}" to be a state dict (names -> tensors)`, desc(v));
    return { dict: v, where: key };
  }
  if (isStateDict(root)) return { dict: root, where: '' };
  if (root instanceof PyDict) {
    for (const k of ['state_dict', 'model', 'model_state_dict', 'module', 'net']) {
      const v = root.get(k);
      if (isStateDict(v)) return { dict: v, where: k };
    }
    // desc, not JSON.stringify: keys can be bigints, cyclic or deeply nested lists.
    const keys = [...root.keys()].slice(0, 10).map(desc).join(', ');
    ioFail(file, "a state dict, or a checkpoint with one under 'state_dict' or 'model' (or pass options.key)", `a dict with keys ${keys}`);
  }
  ioFail(file, 'a state dict (a dict of tensors)', isTensorRef(root) ? 'a single tensor' : desc(root));
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
      ioFail(file, `values that fit int32 in tensor "${safeName(name)}" (${dtype})`, `${v} at element ${j}`);
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
  if (options === null || typeof options !== 'object') fail('ERR_ARG', OP, 'options', 'an object', desc(options));
  const dt = options.dtype;
  if (dt !== undefined && !['float32', 'float64', 'bfloat16', 'preserve'].includes(dt))
    fail('ERR_ARG', OP, 'options.dtype', '"float32", "float64", "bfloat16" or "preserve"', desc(dt));
  const strip = options.stripPrefix === undefined ? 'module.' : options.stripPrefix;
  if (strip !== false && typeof strip !== 'string') fail('ERR_ARG', OP, 'options.stripPrefix', 'a string or false', desc(strip));
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
  if (typeof file !== 'string' || file.length === 0) fail('ERR_ARG', OP, 'path', 'a non-empty file path', desc(file));
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
    if (magic.readUInt32LE(0) === 0x04034b50) parsed = await parseZip(p, fh, size);
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
    // Every view is checked against its storage now, before read() allocates anything.
    const plan = planStorages(p, src, views, size);
    const entries = views.map(([name, t]) => ({ name, shape: [...t.size], fileDType: t.storage.dtype, dtype: targetDType(t.storage.dtype, options.dtype) }));
    return {
      file: p,
      entries,
      read: async (onTensor) => {
        try {
          await readTensors(p, src, plan, options.dtype, onTensor);
        } catch (e) {
          throw wrapError(p, e);
        }
      },
      // Closing a file we only read cannot lose data: its errors are not the caller's.
      close: async () => {
        await src.close().catch(() => undefined);
        await fh.close().catch(() => undefined);
      },
    };
  } catch (e) {
    await parsed?.close().catch(() => undefined);
    await fh.close().catch(() => undefined);
    throw wrapError(p, e);
  }
}

/** Elements every tensor of one load may add up to beyond the file's own size (broadcast views). */
const MAX_EXTRA_ELEMENTS = 1 << 26;

interface StoragePlan {
  key: string;
  dtype: TorchDType;
  /** Element range [lo, hi) of the storage that its views read. */
  lo: number;
  hi: number;
  views: [string, TensorRef][];
}

/**
 * Checks each view against its storage (offset, size and stride within the storage's elements,
 * and within the record's bytes) and bounds what the load allocates: a stride-0 (broadcast)
 * view may claim more elements than its storage holds, but all tensors together may not exceed
 * the file's size plus MAX_EXTRA_ELEMENTS elements (a tiny file claiming terabytes is refused).
 */
function planStorages(p: string, parsed: Parsed, entries: [string, TensorRef][], fileSize: number): StoragePlan[] {
  const byStorage = new Map<string, StoragePlan>();
  let total = 0;
  const budget = fileSize + MAX_EXTRA_ELEMENTS;
  for (const e of entries) {
    const [name, t] = e;
    const key = t.storage.key;
    let plan = byStorage.get(key);
    if (!plan) byStorage.set(key, (plan = { key, dtype: t.storage.dtype, lo: Number.POSITIVE_INFINITY, hi: 0, views: [] }));
    plan.views.push(e);
    const dtype = plan.dtype;
    if (t.storage.dtype !== dtype) ioFail(p, `one dtype per storage ("${safeName(key)}")`, `${dtype} and ${t.storage.dtype}`);
    const es = ELEMENT_SIZE[dtype];
    const available = Math.floor(parsed.storageBytes(key) / es);
    if (t.size.some((d) => d === 0)) continue;
    // A stride-0 (broadcast) view may claim more elements than its storage holds; a huge one
    // is a corrupt or hostile file, not a state dict, and would exhaust memory.
    const numel = t.size.reduce((a, d) => a * d, 1);
    if (numel > Math.max(available, MAX_EXTRA_ELEMENTS))
      ioFail(p, `tensor "${safeName(name)}" of at most ${Math.max(available, MAX_EXTRA_ELEMENTS)} elements (its storage has ${available})`, `size [${t.size}] (${numel} elements)`);
    total += numel;
    if (total > budget) ioFail(p, `tensors of at most ${budget} elements in all (the file has ${fileSize} bytes)`, `more by tensor "${safeName(name)}" (size [${t.size}])`);
    const first = t.storage.viewOffset + t.offset;
    const last = first + t.size.reduce((a, d, i) => a + (d - 1) * t.stride[i], 0);
    const limit = t.storage.viewOffset + Math.min(t.storage.viewNumel, t.storage.numel);
    const within = Math.min(available, limit);
    if (!Number.isSafeInteger(last) || last >= within)
      ioFail(p, `tensor "${safeName(name)}" (size [${t.size}], stride [${t.stride}], offset ${t.offset}) within its storage of ${within - t.storage.viewOffset} elements`, `element ${last - t.storage.viewOffset}`);
    plan.lo = Math.min(plan.lo, first);
    plan.hi = Math.max(plan.hi, last + 1);
  }
  return [...byStorage.values()];
}

/** Storage by storage: reads the union of the bytes its views need, once, and makes each view's tensor. */
async function readTensors(
  p: string, parsed: Parsed, plan: StoragePlan[], option: LoadTorchOptions['dtype'], onTensor: (name: string, t: Tensor) => void,
): Promise<void> {
  for (const { key, dtype, lo, hi, views } of plan) {
    const es = ELEMENT_SIZE[dtype];
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
