/**
 * A small, strict pickle virtual machine for the pickles inside `torch.save` files, and the
 * writer of the one pickle shape we emit (a state dict).
 *
 * Why our own: a pickle is a program for a stack machine whose GLOBAL/REDUCE opcodes import and
 * call arbitrary Python callables (`posix.system`, `builtins.eval`, ...). Python's own
 * Unpickler, and the JS ports of it, resolve a global first and ask questions later; we need the
 * opposite. This VM knows no Python at all: a GLOBAL either names one of the few callables a
 * state dict is built from (an allow-list, the same set torch's `weights_only` unpickler starts
 * from: collections.OrderedDict, torch._utils._rebuild_tensor(_v2), _rebuild_parameter(_with_state),
 * the typed storage classes) or the load stops with ERR_IO naming the file and the global.
 * Nothing from the file is ever executed or evaluated: "calling" an allowed global runs a
 * TypeScript function of ours that builds a plain record. Opcodes follow CPython's
 * Lib/pickle.py (protocols 0-5); INST, OBJ and the EXT* extension-registry opcodes are refused
 * because they resolve classes outside the allow-list.
 *
 * Python values become: None -> null, bool -> boolean, int -> number (bigint beyond 2^53),
 * float -> number, str -> string, bytes -> Uint8Array, list -> array, tuple -> PyTuple (a
 * frozen array), dict / OrderedDict -> Map, storages -> StorageRef, tensors -> TensorRef.
 */
import type { DType } from '../../tensor/tensor';

/** The dtypes torch storages come in (those we read). */
export type TorchDType = 'float32' | 'float64' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'bool';

export const ELEMENT_SIZE: Record<TorchDType, number> = {
  float32: 4, float64: 8, float16: 2, bfloat16: 2, int64: 8, int32: 4, int16: 2, int8: 1, uint8: 1, bool: 1,
};

/** torch.<Name>Storage -> dtype (torch/storage.py's legacy typed storage classes). */
export const STORAGE_TYPES: Record<string, TorchDType> = {
  FloatStorage: 'float32', DoubleStorage: 'float64', HalfStorage: 'float16', BFloat16Storage: 'bfloat16',
  LongStorage: 'int64', IntStorage: 'int32', ShortStorage: 'int16', CharStorage: 'int8', ByteStorage: 'uint8',
  BoolStorage: 'bool', UntypedStorage: 'uint8',
};

/** A storage class named by the pickle (torch.FloatStorage, ...). */
export class StorageType {
  constructor(readonly name: string, readonly dtype: TorchDType) {}
}

/** A storage the pickle refers to through persistent_load: its data lives outside the pickle. */
export interface StorageRef {
  readonly kind: 'storage';
  /** Record name in the zip (`data/<key>`) or key in the legacy storage list. */
  readonly key: string;
  readonly dtype: TorchDType;
  /** Elements (of dtype) in the storage as the pickle states it. */
  readonly numel: number;
  readonly location: string;
  /** Legacy storage views (view_metadata): the element offset into the root storage. */
  readonly viewOffset: number;
  /** Legacy storage views: the view's element count (tensors must stay within it); else numel. */
  readonly viewNumel: number;
}

/** A tensor as torch._utils._rebuild_tensor_v2 describes it: a strided view of a storage. */
export interface TensorRef {
  readonly kind: 'tensor';
  readonly storage: StorageRef;
  readonly offset: number;
  readonly size: number[];
  readonly stride: number[];
}

/** A Python tuple (kept apart from lists so shapes and persistent ids are recognisable). */
export class PyTuple extends Array<unknown> {}

function tuple(items: unknown[]): PyTuple {
  const t = new PyTuple();
  for (const x of items) t.push(x);
  return Object.freeze(t) as PyTuple;
}

/** A Python dict or OrderedDict; `attributes` holds what BUILD set (a state dict's `_metadata`). */
export class PyDict extends Map<unknown, unknown> {
  attributes?: unknown;
}

/** What the VM reports; the caller wraps it into ResnextError ERR_IO with the file name. */
export class PickleError extends Error {}

/**
 * A name from the file made safe for an error message: at most 200 characters, and control,
 * non-ASCII and quote characters escaped, so a hostile module name cannot inject terminal escape
 * sequences or newlines into logs, nor make a megabyte-long message.
 */
export function safeName(s: string): string {
  const cut = s.length > 200 ? `${s.slice(0, 200)}` : s;
  const esc = cut.replace(/[^\x20-\x7e]|["\\]/g, (c) => {
    const n = c.charCodeAt(0);
    return c === '"' || c === '\\' ? `\\${c}` : `\\u${n.toString(16).padStart(4, '0')}`;
  });
  return s.length > 200 ? `${esc}... (${s.length} characters)` : esc;
}

/** Most dimensions a tensor may have (PyTorch's own limit is 64 in practice). */
export const MAX_DIMS = 64;

/** A global resolved from the allow-list: the only things REDUCE / NEWOBJ can call. */
class Callable {
  constructor(readonly qualname: string, readonly call: (args: unknown[]) => unknown) {}
}

function asInt(v: unknown, what: string): number {
  if (typeof v === 'bigint') {
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) throw new PickleError(`${what} ${v} is too large`);
    return Number(v);
  }
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new PickleError(`${what} expected an int, received ${typeof v}`);
  return v;
}

function intList(v: unknown, what: string): number[] {
  if (!Array.isArray(v)) throw new PickleError(`${what} expected a tuple of ints, received ${typeof v}`);
  if (v.length > MAX_DIMS) throw new PickleError(`${what} expected at most ${MAX_DIMS} dimensions, received ${v.length}`);
  return Array.from(v as unknown[], (x, i) => {
    const n = asInt(x, `${what}[${i}]`);
    if (n < 0) throw new PickleError(`${what}[${i}] expected a non-negative int, received ${n}`);
    return n;
  });
}

function rebuildTensor(fn: string, args: unknown[], min: number): TensorRef {
  if (args.length < min) throw new PickleError(`${fn} expected at least ${min} arguments, received ${args.length}`);
  const s = args[0] as StorageRef;
  if (s?.kind !== 'storage') throw new PickleError(`${fn} expected a storage as its first argument`);
  const offset = asInt(args[1], `${fn} storage_offset`);
  if (offset < 0) throw new PickleError(`${fn} storage_offset expected a non-negative int, received ${offset}`);
  const size = intList(args[2], `${fn} size`);
  const stride = intList(args[3], `${fn} stride`);
  if (size.length !== stride.length) throw new PickleError(`${fn} expected size and stride of one length, received ${size.length} and ${stride.length}`);
  return { kind: 'tensor', storage: s, offset, size, stride };
}

/** Python 2 module names that protocol <= 2 pickles use (CPython's _compat_pickle mapping, the part that matters here). */
const PY2_MODULES: Record<string, string> = { __builtin__: 'builtins', copy_reg: 'copyreg' };

/**
 * The allow-list: every global a state-dict pickle may name, and the plain record each builds.
 * torch's storage classes are recognised by name (torch.FloatStorage, torch.storage.FloatStorage
 * ...). torch.storage._load_from_bytes is deliberately absent: it unpickles the bytes it is given.
 */
function py3Module(module: string): string | undefined {
  // Own keys only: a module named "__proto__" or "constructor" must not find Object.prototype.
  return Object.hasOwn(PY2_MODULES, module) ? PY2_MODULES[module] : undefined;
}

function resolveGlobal(module: string, name: string): Callable | StorageType | null {
  module = py3Module(module) ?? module;
  const q = `${module}.${name}`;
  if ((module === 'torch' || module === 'torch.storage' || module === 'torch.cuda') && Object.hasOwn(STORAGE_TYPES, name))
    return new StorageType(name, STORAGE_TYPES[name]);
  switch (q) {
    case 'collections.OrderedDict':
    case 'builtins.dict':
      return new Callable(q, (args) => {
        const d = new PyDict();
        if (args.length === 0) return d;
        // OrderedDict([(k, v), ...]) from protocol 0/1 pickles.
        const items = args[0];
        if (!Array.isArray(items)) throw new PickleError(`${q} expected a list of pairs`);
        for (const p of items) {
          if (!Array.isArray(p) || p.length !== 2) throw new PickleError(`${q} expected (key, value) pairs`);
          d.set(p[0], p[1]);
        }
        return d;
      });
    case 'torch._utils._rebuild_tensor':
      return new Callable(q, (a) => rebuildTensor(q, a, 4));
    case 'torch._utils._rebuild_tensor_v2':
      return new Callable(q, (a) => rebuildTensor(q, a, 6));
    case 'torch._utils._rebuild_parameter':
    case 'torch._utils._rebuild_parameter_with_state':
      return new Callable(q, (a) => {
        const t = a[0] as TensorRef;
        if (t?.kind !== 'tensor') throw new PickleError(`${q} expected a tensor as its first argument`);
        return t;
      });
    case '_codecs.encode':
      // How protocol 2 pickles bytes: _codecs.encode(str, 'latin1'). Pure data, no call.
      return new Callable(q, (a) => {
        if (typeof a[0] !== 'string' || (a[1] !== 'latin1' && a[1] !== 'latin-1')) throw new PickleError(`${q} expected (str, 'latin1')`);
        return Uint8Array.from(a[0] as string, (c) => c.charCodeAt(0) & 0xff);
      });
    default:
      return null;
  }
}

/** A byte source the VM reads from: a whole buffer, or a file read in chunks (legacy format). */
export interface ByteSource {
  /** Returns the next n bytes (a view valid until the next call), or throws at end of data. */
  read(n: number): Uint8Array;
  /** Reads up to and without the next '\n'. */
  readLine(): string;
  /** Absolute position of the next byte. */
  readonly position: number;
}

export class BufferSource implements ByteSource {
  private pos: number;
  constructor(private readonly buf: Uint8Array, start = 0) {
    this.pos = start;
  }
  get position(): number {
    return this.pos;
  }
  read(n: number): Uint8Array {
    if (!Number.isSafeInteger(n) || n < 0) throw new PickleError(`a length of ${n} (corrupt pickle)`);
    if (this.pos + n > this.buf.length) throw new PickleError('the pickle ends early (truncated file)');
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
  readLine(): string {
    const end = this.buf.indexOf(0x0a, this.pos);
    if (end < 0) throw new PickleError('the pickle ends early (truncated file)');
    const s = Buffer.from(this.buf.buffer, this.buf.byteOffset + this.pos, end - this.pos).toString('latin1');
    this.pos = end + 1;
    return s;
  }
}

export interface UnpickleOptions {
  /** Called for BINPERSID / PERSID with the persistent id (torch: ('storage', type, key, location, numel[, view])). */
  persistentLoad: (pid: unknown) => unknown;
  /** Upper bound on memo entries, stack depth and open MARKs, each (corrupt-file guard). */
  maxItems?: number;
  /** Upper bound on containers (lists, tuples, dicts, sets, bytes, tensors) the pickle builds. */
  maxObjects?: number;
}

/** Defaults: a state dict of 100k tensors needs ~1M memo entries and ~700k containers. */
export const MAX_ITEMS = 1 << 23;
export const MAX_OBJECTS = 1 << 22;

const latin1 = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.length).toString('latin1');
const utf8 = new TextDecoder('utf-8', { fatal: false });

function decodePyStringLiteral(s: string): string {
  // Protocol 0 STRING: a Python repr ('...' or "..."), escapes per Python's string-escape.
  const q = s[0];
  if ((q !== "'" && q !== '"') || s[s.length - 1] !== q) throw new PickleError('STRING expected a quoted literal');
  const body = s.slice(1, -1);
  return body.replace(/\\(x[0-9a-fA-F]{2}|[0-7]{1,3}|.)/g, (_, e: string) => {
    if (e[0] === 'x') return String.fromCharCode(parseInt(e.slice(1), 16));
    if (/^[0-7]/.test(e)) return String.fromCharCode(parseInt(e, 8));
    return ({ n: '\n', r: '\r', t: '\t', '\\': '\\', "'": "'", '"': '"', a: '\x07', b: '\b', f: '\f', v: '\v' } as Record<string, string>)[e] ?? `\\${e}`;
  });
}

function rawUnicodeEscape(s: string): string {
  return s.replace(/\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})/g, (_, a: string, b: string) => String.fromCodePoint(parseInt(a ?? b, 16)));
}

/** Longest LONG1/LONG4 we accept, in bytes (torch's largest is the 10-byte legacy magic number). */
const MAX_LONG_BYTES = 1024;
/** Longest protocol-0 INT/LONG in digits (CPython's own default int_max_str_digits). */
const MAX_INT_DIGITS = 4300;

function readLong(b: Uint8Array): number | bigint {
  // Little-endian two's complement (LONG1 / LONG4). One BigInt from hex: linear, where shifting
  // byte by byte is quadratic in the length (a hang for a megabyte-long LONG4).
  if (b.length === 0) return 0;
  if (b.length > MAX_LONG_BYTES) throw new PickleError(`an integer of ${b.length} bytes (at most ${MAX_LONG_BYTES})`);
  let v = BigInt(`0x${Buffer.from(b).reverse().toString('hex')}`);
  if (b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
  return v >= -BigInt(Number.MAX_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

function parseDecimal(s: string, op: string): number | bigint {
  if (!/^[-+]?\d+$/.test(s)) throw new PickleError(`${op} expected digits`);
  if (s.length > MAX_INT_DIGITS) throw new PickleError(`${op} with ${s.length} digits (at most ${MAX_INT_DIGITS})`);
  const b = BigInt(s);
  return b >= -BigInt(Number.MAX_SAFE_INTEGER) && b <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(b) : b;
}

/** A memo index written as text (PUT / GET): decimal digits only. */
function memoIndex(s: string): number {
  if (!/^\d{1,15}$/.test(s)) throw new PickleError('PUT/GET expected a decimal memo index (corrupt pickle)');
  return Number(s);
}

/**
 * Runs one pickle (up to its STOP opcode) from `src` and returns the value it builds. Throws
 * PickleError for a global outside the allow-list (message: `global "module.name"`), for an
 * opcode we refuse, and for malformed data.
 */
export function unpickle(src: ByteSource, opts: UnpickleOptions): unknown {
  const maxItems = opts.maxItems ?? MAX_ITEMS;
  const maxObjects = opts.maxObjects ?? MAX_OBJECTS;
  let objects = 0;
  /** Counts one container built: the file is small per object, the objects are not (a `}` byte is a Map). */
  const obj = <T>(v: T): T => {
    if (++objects > maxObjects) throw new PickleError(`more than ${maxObjects} objects (lists, tuples, dicts) in the pickle`);
    return v;
  };
  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();
  const u8 = () => src.read(1)[0];
  const u16 = () => {
    const b = src.read(2);
    return b[0] | (b[1] << 8);
  };
  const u32 = () => {
    const b = src.read(4);
    return (b[0] | (b[1] << 8) | (b[2] << 16)) + b[3] * 0x1000000;
  };
  const i32 = () => {
    const b = src.read(4);
    return b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24);
  };
  const u64 = () => {
    const lo = u32();
    const hi = u32();
    if (hi > 0x1fffff) throw new PickleError('an 8-byte length is too large');
    return hi * 0x100000000 + lo;
  };
  const pop = () => {
    if (stack.length === 0 || (marks.length && stack.length <= marks[marks.length - 1])) throw new PickleError('stack underflow (corrupt pickle)');
    return stack.pop();
  };
  const top = () => {
    if (stack.length === 0) throw new PickleError('stack underflow (corrupt pickle)');
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const m = marks.pop();
    if (m === undefined) throw new PickleError('MARK expected before this opcode (corrupt pickle)');
    return stack.splice(m);
  };
  const mark = () => {
    if (marks.length >= maxItems) throw new PickleError('too many nested MARKs');
    marks.push(stack.length);
  };
  const push = (v: unknown) => {
    if (stack.length >= maxItems) throw new PickleError('the pickle stack is too deep');
    stack.push(v);
  };
  const memoPut = (i: number) => {
    if (memo.size >= maxItems && !memo.has(i)) throw new PickleError('too many memo entries');
    memo.set(i, top());
  };
  const memoGet = (i: number) => {
    if (!memo.has(i)) throw new PickleError(`memo entry ${i} missing (corrupt pickle)`);
    push(memo.get(i));
  };
  const global = (module: string, name: string) => {
    const g = resolveGlobal(module, name);
    if (!g) {
      const py3 = py3Module(module);
      throw new PickleError(`global "${safeName(`${py3 ?? module}.${name}`)}"${py3 ? ` (written as "${safeName(`${module}.${name}`)}")` : ''}`);
    }
    push(obj(g));
  };
  const call = (fn: unknown, args: unknown, op: string) => {
    if (!(fn instanceof Callable)) throw new PickleError(`${op} expected an allowed callable, received ${fn instanceof StorageType ? `storage class ${fn.name}` : typeof fn}`);
    if (!Array.isArray(args)) throw new PickleError(`${op} expected an argument tuple`);
    return obj(fn.call(args));
  };
  const setItems = (d: unknown, items: unknown[]) => {
    if (!(d instanceof PyDict)) throw new PickleError('SETITEM(S) expected a dict');
    if (items.length % 2) throw new PickleError('SETITEMS expected key/value pairs');
    for (let i = 0; i < items.length; i += 2) d.set(items[i], items[i + 1]);
  };
  const append = (l: unknown, items: unknown[]) => {
    if (!Array.isArray(l) || l instanceof PyTuple) throw new PickleError('APPEND(S) expected a list');
    for (const x of items) l.push(x);
  };

  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80: { // PROTO
        const v = u8();
        if (v > 5) throw new PickleError(`unsupported pickle protocol ${v}`);
        break;
      }
      case 0x95: // FRAME (8-byte length): frames are only a buffering hint
        u64();
        break;
      case 0x2e: // STOP
        if (stack.length === 0) throw new PickleError('STOP with an empty stack (corrupt pickle)');
        return stack.pop();
      // ---- constants
      case 0x4e: push(null); break; // NONE
      case 0x88: push(true); break; // NEWTRUE
      case 0x89: push(false); break; // NEWFALSE
      case 0x4a: push(i32()); break; // BININT
      case 0x4b: push(u8()); break; // BININT1
      case 0x4d: push(u16()); break; // BININT2
      case 0x8a: push(readLong(src.read(u8()))); break; // LONG1
      case 0x8b: { // LONG4
        const n = i32();
        if (n < 0) throw new PickleError('LONG4 with a negative length');
        if (n > MAX_LONG_BYTES) throw new PickleError(`an integer of ${n} bytes (at most ${MAX_LONG_BYTES})`);
        push(readLong(src.read(n)));
        break;
      }
      case 0x49: { // INT (protocol 0): "01"/"00" are True/False
        const s = src.readLine();
        if (s === '01') push(true);
        else if (s === '00') push(false);
        else push(parseDecimal(s, 'INT'));
        break;
      }
      case 0x4c: // LONG (protocol 0)
        push(parseDecimal(src.readLine().replace(/L$/, ''), 'LONG'));
        break;
      case 0x46: { // FLOAT (protocol 0)
        const s = src.readLine();
        const v = Number(s);
        if (Number.isNaN(v) && !/nan/i.test(s)) throw new PickleError('FLOAT expected a number');
        push(v);
        break;
      }
      case 0x47: { // BINFLOAT: big-endian float64
        const b = src.read(8);
        push(new DataView(b.buffer, b.byteOffset, 8).getFloat64(0, false));
        break;
      }
      // ---- strings and bytes
      case 0x58: push(utf8.decode(src.read(u32()))); break; // BINUNICODE
      case 0x8c: push(utf8.decode(src.read(u8()))); break; // SHORT_BINUNICODE
      case 0x8d: push(utf8.decode(src.read(u64()))); break; // BINUNICODE8
      case 0x56: push(rawUnicodeEscape(src.readLine())); break; // UNICODE (protocol 0)
      case 0x53: push(decodePyStringLiteral(src.readLine())); break; // STRING
      case 0x54: { // BINSTRING (Python 2 str): a signed length; a negative one would move the reader backwards (a loop)
        const n = i32();
        if (n < 0) throw new PickleError('BINSTRING with a negative length');
        push(latin1(src.read(n)));
        break;
      }
      case 0x55: push(latin1(src.read(u8()))); break; // SHORT_BINSTRING
      case 0x42: push(obj(src.read(u32()).slice())); break; // BINBYTES
      case 0x43: push(obj(src.read(u8()).slice())); break; // SHORT_BINBYTES
      case 0x8e: push(obj(src.read(u64()).slice())); break; // BINBYTES8
      case 0x96: push(obj(src.read(u64()).slice())); break; // BYTEARRAY8
      // ---- containers
      case 0x29: push(obj(tuple([]))); break; // EMPTY_TUPLE
      case 0x85: push(obj(tuple([pop()]))); break; // TUPLE1
      case 0x86: { // TUPLE2
        const b = pop();
        const a = pop();
        push(obj(tuple([a, b])));
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop();
        const b = pop();
        const a = pop();
        push(obj(tuple([a, b, c])));
        break;
      }
      case 0x74: push(obj(tuple(popMark()))); break; // TUPLE
      case 0x5d: push(obj([])); break; // EMPTY_LIST
      case 0x6c: push(obj(popMark())); break; // LIST
      case 0x7d: push(obj(new PyDict())); break; // EMPTY_DICT
      case 0x64: { // DICT
        const items = popMark();
        const d = obj(new PyDict());
        setItems(d, items);
        push(d);
        break;
      }
      case 0x61: { // APPEND
        const v = pop();
        append(top(), [v]);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        append(top(), items);
        break;
      }
      case 0x73: { // SETITEM
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x8f: push(obj(new Set())); break; // EMPTY_SET
      case 0x90: { // ADDITEMS
        const items = popMark();
        const s = top();
        if (!(s instanceof Set)) throw new PickleError('ADDITEMS expected a set');
        for (const x of items) s.add(x);
        break;
      }
      case 0x91: push(obj(Object.freeze(new Set(popMark())))); break; // FROZENSET
      // ---- stack and memo
      case 0x28: mark(); break; // MARK
      case 0x30: pop(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: push(top()); break; // DUP
      case 0x70: memoPut(memoIndex(src.readLine())); break; // PUT
      case 0x71: memoPut(u8()); break; // BINPUT
      case 0x72: memoPut(u32()); break; // LONG_BINPUT
      case 0x94: memoPut(memo.size); break; // MEMOIZE
      case 0x67: memoGet(memoIndex(src.readLine())); break; // GET
      case 0x68: memoGet(u8()); break; // BINGET
      case 0x6a: memoGet(u32()); break; // LONG_BINGET
      // ---- external references
      case 0x51: push(obj(opts.persistentLoad(pop()))); break; // BINPERSID
      case 0x50: push(obj(opts.persistentLoad(src.readLine()))); break; // PERSID
      // ---- globals and calls: allow-list only
      case 0x63: { // GLOBAL "module\nname\n"
        const module = src.readLine();
        const name = src.readLine();
        global(module, name);
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') throw new PickleError('STACK_GLOBAL expected two strings');
        global(module, name);
        break;
      }
      case 0x52: { // REDUCE
        const args = pop();
        const fn = pop();
        push(call(fn, args, 'REDUCE'));
        break;
      }
      case 0x81: { // NEWOBJ: cls.__new__(cls, *args); only our allowed classes
        const args = pop();
        const cls = pop();
        push(call(cls, args, 'NEWOBJ'));
        break;
      }
      case 0x92: { // NEWOBJ_EX
        const kwargs = pop();
        const args = pop();
        const cls = pop();
        if (!(kwargs instanceof PyDict) || kwargs.size) throw new PickleError('NEWOBJ_EX with keyword arguments is not supported');
        push(call(cls, args, 'NEWOBJ_EX'));
        break;
      }
      case 0x62: { // BUILD: only a dict's attributes (an OrderedDict's _metadata); tensors ignore state
        const state = pop();
        const obj = top();
        if (obj instanceof PyDict) obj.attributes = state;
        else if (obj && typeof obj === 'object' && (obj as TensorRef).kind === 'tensor') {
          // Parameter / Tensor python attributes: nothing we keep.
        } else throw new PickleError('BUILD expected a dict or a tensor');
        break;
      }
      case 0x69: // INST
      case 0x6f: // OBJ
        throw new PickleError(`opcode ${op === 0x69 ? 'INST' : 'OBJ'} (instantiates an arbitrary class)`);
      case 0x82: // EXT1
      case 0x83: // EXT2
      case 0x84: // EXT4
        throw new PickleError('an EXT opcode (copyreg extension registry)');
      case 0x97: // NEXT_BUFFER
      case 0x98: // READONLY_BUFFER
        throw new PickleError('out-of-band buffers (protocol 5)');
      default:
        throw new PickleError(`unknown opcode 0x${op.toString(16).padStart(2, '0')} at byte ${src.position - 1} (corrupt pickle)`);
    }
  }
}

// ------------------------------------------------------------------ writing

const STORAGE_NAME: Partial<Record<TorchDType, string>> = {
  float32: 'FloatStorage', float64: 'DoubleStorage', float16: 'HalfStorage', bfloat16: 'BFloat16Storage',
  int64: 'LongStorage', int32: 'IntStorage', uint8: 'ByteStorage', bool: 'BoolStorage',
};

/** One tensor for writeStateDictPickle: a contiguous storage of its own. */
export interface PickleTensor {
  name: string;
  storageKey: string;
  dtype: TorchDType;
  shape: number[];
}

class PickleWriter {
  private chunks: Buffer[] = [];
  op(...bytes: number[]): void {
    this.chunks.push(Buffer.from(bytes));
  }
  global(module: string, name: string): void {
    this.chunks.push(Buffer.from(`c${module}\n${name}\n`, 'latin1'));
  }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    const h = Buffer.alloc(5);
    h[0] = 0x58; // BINUNICODE
    h.writeUInt32LE(b.length, 1);
    this.chunks.push(h, b);
  }
  int(n: number): void {
    if (n >= 0 && n < 256) this.op(0x4b, n);
    else if (n >= 0 && n < 65536) this.op(0x4d, n & 0xff, n >> 8);
    else if (n >= -0x80000000 && n <= 0x7fffffff) {
      const h = Buffer.alloc(5);
      h[0] = 0x4a;
      h.writeInt32LE(n, 1);
      this.chunks.push(h);
    } else {
      const h = Buffer.alloc(10);
      h[0] = 0x8a; // LONG1, 8 bytes
      h[1] = 8;
      h.writeBigInt64LE(BigInt(n), 2);
      this.chunks.push(h);
    }
  }
  ints(a: number[]): void {
    if (a.length === 0) return this.op(0x29);
    this.op(0x28);
    for (const n of a) this.int(n);
    this.op(0x74);
  }
  bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

/**
 * The data.pkl of a state dict, as torch.save writes one (protocol 2): an OrderedDict of
 * torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict()) whose storage
 * is persistent id ('storage', torch.<Type>Storage, key, 'cpu', numel).
 */
export function writeStateDictPickle(tensors: PickleTensor[]): Buffer {
  const w = new PickleWriter();
  w.op(0x80, 2); // PROTO 2
  w.global('collections', 'OrderedDict');
  w.op(0x29, 0x52); // () REDUCE
  w.op(0x28); // MARK
  for (const t of tensors) {
    const storage = STORAGE_NAME[t.dtype];
    if (!storage) throw new PickleError(`no torch storage type for dtype ${t.dtype}`);
    const numel = t.shape.reduce((a, b) => a * b, 1);
    const stride = new Array<number>(t.shape.length);
    for (let i = t.shape.length - 1, s = 1; i >= 0; i--) {
      stride[i] = s;
      s *= t.shape[i];
    }
    w.str(t.name);
    w.global('torch._utils', '_rebuild_tensor_v2');
    w.op(0x28); // MARK (args)
    w.op(0x28); // MARK (persistent id)
    w.str('storage');
    w.global('torch', storage);
    w.str(t.storageKey);
    w.str('cpu');
    w.int(numel);
    w.op(0x74, 0x51); // TUPLE BINPERSID
    w.int(0);
    w.ints(t.shape);
    w.ints(stride);
    w.op(0x89); // False
    w.global('collections', 'OrderedDict');
    w.op(0x29, 0x52); // OrderedDict()
    w.op(0x74, 0x52); // TUPLE REDUCE
  }
  w.op(0x75, 0x2e); // SETITEMS STOP
  return w.bytes();
}

/** Our tensor dtype for a torch storage dtype when the caller keeps dtypes ('preserve'). */
export function preservedDType(d: TorchDType): DType {
  return d === 'float64' ? 'float64' : d === 'bfloat16' ? 'bfloat16' : d === 'float32' || d === 'float16' ? 'float32' : 'int32';
}
