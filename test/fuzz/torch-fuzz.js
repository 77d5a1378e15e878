#!/usr/bin/env node
// A seeded fuzzer of io.loadTorch (lib/io/torch): mutated torch.save files (the zip and legacy
// fixtures in test/fixtures/torch, mutated byte-wise, pickle-wise and zip-structure-wise) and
// synthesised hostile pickles (deep nesting, huge repetition, negative lengths, giant LONG4,
// memo abuse, protocol 5 frames, prototype keys, bad persistent ids, shapes/strides/offsets
// claiming terabytes or reaching outside their storage, zip bombs, duplicate and bogus records).
// Cases run in child processes (batches) under a timeout and a heap cap; a failing batch is
// replayed case by case.
//   node test/fuzz/torch-fuzz.js --from 0 --to 20000 [--batch 250] [--strict]
//   node test/fuzz/torch-fuzz.js --case N        (one case in-process, file kept, outcome printed)
// Every case must end in a ResnextError with code ERR_IO naming the file (or load fine).
// Prints `torch-fuzz: N cases, C crashes, H hangs, M over-memory, E non-ResnextErrors,
// K non-ERR_IO, U unnamed-file, I internal-JS-errors, S slow, T s`; exits 1 on a crash, hang or
// over-memory case (with --strict on any finding). Case i depends only on i (and the fixtures).
// RESNEXT_FUZZ_DIST: fuzz another build (e.g. an older checkout's dist/index.js).
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const zlib = require('node:zlib');

const dist = process.env.RESNEXT_FUZZ_DIST || path.join(__dirname, '..', '..', 'dist', 'index.js');
const FIXTURES = path.join(__dirname, '..', 'fixtures', 'torch');
const HEAP_MB = 384;
/** A case whose resident memory grows by more than this is reported (ArrayBuffers are outside the heap cap). */
const RSS_LIMIT = 768 << 20;
const SLOW_MS = 4000;

// ---------------------------------------------------------------- randomness

function rng(seed) {
  // mulberry32
  let a = (seed * 2654435761 + 0x9e3779b9) >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------- zip reading and writing

const crc32 = zlib.crc32 || ((b) => {
  let c = ~0;
  for (const x of b) {
    c ^= x;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
});

/** The records of a (well-formed) zip: [{ name, data }] in central-directory order. */
function readZip(buf) {
  const eocd = buf.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  const n = buf.readUInt16LE(eocd + 10);
  let p = buf.readUInt32LE(eocd + 16);
  const out = [];
  for (let i = 0; i < n; i++) {
    const method = buf.readUInt16LE(p + 10);
    const csize = buf.readUInt32LE(p + 20);
    const nl = buf.readUInt16LE(p + 28);
    const el = buf.readUInt16LE(p + 30);
    const cl = buf.readUInt16LE(p + 32);
    const off = buf.readUInt32LE(p + 42);
    const name = buf.subarray(p + 46, p + 46 + nl).toString('utf8');
    const start = off + 30 + buf.readUInt16LE(off + 26) + buf.readUInt16LE(off + 28);
    const raw = buf.subarray(start, start + csize);
    out.push({ name, data: Buffer.from(method === 8 ? zlib.inflateRawSync(raw) : raw) });
    p += 46 + nl + el + cl;
  }
  return out;
}

/**
 * A zip from records { name, data, deflate?, method?, size?, csize?, offset?, flags?, skipLocal? }:
 * the optional fields lie in the headers (claimed sizes, offsets, methods), as a hostile file would.
 */
function writeZip(records, { eocdCount, cdOffsetDelta = 0, comment = '', zip64 } = {}) {
  const parts = [];
  const central = [];
  let pos = 0;
  for (const r of records) {
    const body = r.deflate ? zlib.deflateRawSync(r.data) : r.data;
    const method = r.method ?? (r.deflate ? 8 : 0);
    const name = Buffer.from(r.name, 'utf8');
    const crc = r.data.length < 1 << 26 ? crc32(r.data) : 0;
    const size = r.size ?? r.data.length;
    const csize = r.csize ?? body.length;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(r.flags ?? 0, 6);
    local.writeUInt16LE(method, 8);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(csize >>> 0, 18);
    local.writeUInt32LE(size >>> 0, 22);
    local.writeUInt16LE(name.length, 26);
    const at = pos;
    if (!r.skipLocal) {
      parts.push(local, name, body);
      pos += 30 + name.length + body.length;
    }
    const c = Buffer.alloc(46);
    c.writeUInt32LE(0x02014b50, 0);
    c.writeUInt16LE(20, 4);
    c.writeUInt16LE(20, 6);
    c.writeUInt16LE(r.flags ?? 0, 8);
    c.writeUInt16LE(method, 10);
    c.writeUInt32LE(crc, 16);
    c.writeUInt32LE(csize >>> 0, 20);
    c.writeUInt32LE(size >>> 0, 24);
    c.writeUInt16LE(name.length, 28);
    c.writeUInt32LE((r.offset ?? at) >>> 0, 42);
    central.push(c, name);
  }
  const cd = Buffer.concat(central);
  const e = Buffer.alloc(22);
  e.writeUInt32LE(0x06054b50, 0);
  e.writeUInt16LE(eocdCount ?? records.length, 8);
  e.writeUInt16LE(eocdCount ?? records.length, 10);
  e.writeUInt32LE(cd.length, 12);
  e.writeUInt32LE((pos + cdOffsetDelta) >>> 0, 16);
  const cm = Buffer.from(comment, 'latin1');
  e.writeUInt16LE(cm.length, 20);
  const tail = [];
  if (zip64) {
    // A zip64 end-of-central-directory record and locator with hostile 64-bit fields.
    const rec = Buffer.alloc(56);
    rec.writeUInt32LE(0x06064b50, 0);
    rec.writeBigUInt64LE(44n, 4);
    rec.writeBigUInt64LE(BigInt.asUintN(64, BigInt(zip64.count ?? records.length)), 24);
    rec.writeBigUInt64LE(BigInt.asUintN(64, BigInt(zip64.count ?? records.length)), 32);
    rec.writeBigUInt64LE(BigInt.asUintN(64, BigInt(cd.length)), 40);
    rec.writeBigUInt64LE(BigInt.asUintN(64, BigInt(zip64.cdOffset ?? pos)), 48);
    const loc = Buffer.alloc(20);
    loc.writeUInt32LE(0x07064b50, 0);
    loc.writeBigUInt64LE(BigInt.asUintN(64, BigInt(zip64.recordOffset ?? pos + cd.length)), 8);
    loc.writeUInt32LE(1, 16);
    tail.push(rec, loc);
    if (zip64.eocdFF) {
      e.writeUInt16LE(0xffff, 8);
      e.writeUInt16LE(0xffff, 10);
      e.writeUInt32LE(0xffffffff, 16);
    }
  }
  return Buffer.concat([...parts, cd, ...tail, e, cm]);
}

// ---------------------------------------------------------------- pickles

const P = {
  proto: (v) => Buffer.from([0x80, v]),
  stop: Buffer.from([0x2e]),
  mark: Buffer.from([0x28]),
  tuple: Buffer.from([0x74]),
  none: Buffer.from([0x4e]),
  reduce: Buffer.from([0x52]),
  binpersid: Buffer.from([0x51]),
  setitems: Buffer.from([0x75]),
  int(n) {
    if (n >= 0 && n < 256) return Buffer.from([0x4b, n]);
    if (n >= -0x80000000 && n <= 0x7fffffff) {
      const b = Buffer.alloc(5);
      b[0] = 0x4a;
      b.writeInt32LE(n, 1);
      return b;
    }
    const b = Buffer.alloc(10);
    b[0] = 0x8a;
    b[1] = 8;
    b.writeBigInt64LE(BigInt(n), 2);
    return b;
  },
  str(s) {
    const b = Buffer.from(s, 'utf8');
    const h = Buffer.alloc(5);
    h[0] = 0x58;
    h.writeUInt32LE(b.length, 1);
    return Buffer.concat([h, b]);
  },
  global: (m, n) => Buffer.from(`c${m}\n${n}\n`, 'latin1'),
  ints(a) {
    return a.length === 0 ? Buffer.from([0x29]) : Buffer.concat([P.mark, ...a.map((x) => P.int(x)), P.tuple]);
  },
};

/** ('storage', torch.<type>, key, 'cpu', numel[, view]) BINPERSID */
function pid(type, key, numel, view) {
  return Buffer.concat([P.mark, P.str('storage'), P.global('torch', type), P.str(key), P.str('cpu'), P.int(numel), ...(view ? [view] : []), P.tuple, P.binpersid]);
}

/** _rebuild_tensor_v2(pid, offset, size, stride, False, OrderedDict()) */
function rebuild(pidBytes, offset, size, stride) {
  return Buffer.concat([
    P.global('torch._utils', '_rebuild_tensor_v2'), P.mark, pidBytes, P.int(offset), P.ints(size), P.ints(stride),
    Buffer.from([0x89]), P.global('collections', 'OrderedDict'), Buffer.from([0x29, 0x52]), P.tuple, P.reduce,
  ]);
}

/** A state dict pickle of [name, tensorBytes] pairs. */
function stateDict(pairs, proto = 2) {
  return Buffer.concat([P.proto(proto), P.global('collections', 'OrderedDict'), Buffer.from([0x29, 0x52]), P.mark,
    ...pairs.flatMap(([n, t]) => [P.str(n), t]), P.setitems, P.stop]);
}

function zipTorch(pickle, data = { 0: Buffer.alloc(64) }, deflate = false) {
  return writeZip([
    { name: 'archive/data.pkl', data: pickle, deflate },
    { name: 'archive/byteorder', data: Buffer.from('little') },
    ...Object.entries(data).map(([k, v]) => ({ name: `archive/data/${k}`, data: v, deflate })),
  ]);
}

/** The legacy format: magic, protocol, sys_info, the object, the storage keys, then the storages. */
function legacyTorch(objPickle, storages = [['0', 16, 4]], keysPickle) {
  const pk = (b) => Buffer.concat([P.proto(2), b, P.stop]);
  const magic = Buffer.concat([P.proto(2), Buffer.from([0x8a, 10]), Buffer.from('6c fc 9c 46 f9 20 6a a8 50 19'.replace(/ /g, ''), 'hex'), P.stop]);
  const sys = pk(Buffer.concat([Buffer.from([0x7d]), P.mark, P.str('little_endian'), Buffer.from([0x88]), P.setitems]));
  const keys = keysPickle ?? pk(Buffer.concat([Buffer.from([0x5d]), P.mark, ...storages.map(([k]) => P.str(k)), Buffer.from([0x65])]));
  const body = storages.map(([, n, es, claimed]) => {
    const h = Buffer.alloc(8);
    h.writeBigInt64LE(BigInt(claimed ?? n), 0);
    return Buffer.concat([h, Buffer.alloc(n * es)]);
  });
  return Buffer.concat([magic, pk(P.int(1001)), sys, objPickle, keys, ...body]);
}

const HOSTILE_INTS = [0, 1, -1, 2, 255, 256, 65535, 0x7fffffff, -0x80000000, 0xffffffff, 2 ** 31, 2 ** 32, 2 ** 40, 2 ** 53 - 1, -(2 ** 53) + 1, 1e15];
const HOSTILE_U32 = [0, 1, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, 0x10000, 29, 30, 46];

/** Hostile pickle snippets (raw bytes) spliced into pickles or used whole. */
function snippets(r) {
  const pick = (xs) => xs[Math.floor(r() * xs.length)];
  const n = pick([10, 1000, 100000, 400000]);
  return [
    () => Buffer.concat([Buffer.from([0x4e]), Buffer.alloc(n, 0x85)]), // deep nesting: TUPLE1 x n
    () => Buffer.concat([Buffer.alloc(n, 0x5d), Buffer.alloc(n - 1, 0x61)]), // nested lists via APPEND
    () => Buffer.concat([Buffer.alloc(n, 0x7d)]), // many dicts
    () => Buffer.concat([Buffer.from([0x5d, 0x28, 0x4e]), Buffer.alloc(n, 0x32), Buffer.from([0x65])]), // DUP x n, APPENDS
    () => Buffer.alloc(n, 0x28), // MARK x n
    () => Buffer.from([0x54, ...[-5, -6, -1, -0x80000000].map((x) => { const b = Buffer.alloc(4); b.writeInt32LE(x); return [...b]; })[Math.floor(r() * 4)]]), // BINSTRING negative
    () => Buffer.concat([Buffer.from([0x30, 0x54, 0xfa, 0xff, 0xff, 0xff])]), // POP then BINSTRING -6: a backward loop
    () => { const len = pick([2 ** 31 - 1, 100000, 1 << 20]); const b = Buffer.alloc(5); b[0] = 0x8b; b.writeInt32LE(len, 1); return Buffer.concat([b, Buffer.alloc(Math.min(len, 1 << 20), 0x7f)]); }, // LONG4 giant
    () => Buffer.concat([Buffer.from('L'), Buffer.alloc(pick([5000, 200000]), 0x39), Buffer.from('\n')]), // LONG protocol 0 digits
    () => Buffer.from([0x4e, 0x72, ...[0xff, 0xff, 0xff, 0xff]]), // LONG_BINPUT huge index
    () => Buffer.from([0x6a, 0xff, 0xff, 0xff, 0x7f]), // LONG_BINGET missing
    () => Buffer.from(`p${pick(['-1', 'abc', '1e308', '99999999999999999999', ''])}\n`), // PUT text index
    () => Buffer.from(`g${pick(['-1', 'abc', '0', '1e308'])}\n`),
    () => Buffer.concat([Buffer.alloc(pick([1000, 100000]), 0x4e), Buffer.alloc(1, 0x94)]), // many NONEs then MEMOIZE
    () => Buffer.concat([Buffer.from([0x4e]), Buffer.alloc(pick([1000, 200000]), 0x94)]), // MEMOIZE x n
    () => { const b = Buffer.alloc(9); b[0] = 0x95; b.writeBigUInt64LE(BigInt(pick([0, 2 ** 53, 2 ** 63])), 1); return b; }, // FRAME
    () => Buffer.from([0x97]), () => Buffer.from([0x98]), // NEXT_BUFFER, READONLY_BUFFER
    () => { const b = Buffer.alloc(9); b[0] = pick([0x8d, 0x8e, 0x96]); b.writeBigUInt64LE(BigInt(pick([2 ** 40, 2 ** 53, 5])), 1); return b; }, // 8-byte lengths
    () => { const b = Buffer.alloc(5); b[0] = pick([0x58, 0x42]); b.writeUInt32LE(pick(HOSTILE_U32), 1); return b; },
    () => Buffer.concat([Buffer.from([0x7d]), P.str(pick(['__proto__', 'constructor', 'prototype', 'hasOwnProperty'])), P.none, Buffer.from([0x73])]),
    () => P.global(pick(['__proto__', 'constructor', 'posix', 'os', 'builtins', '__builtin__', 'torch', 'torch._utils', 'copy_reg', 'hasOwnProperty', 'toString']), pick(['system', 'eval', '__proto__', 'constructor', 'FloatStorage', '_load_from_bytes', 'toString', 'apply'])),
    () => Buffer.concat([P.str(pick(['__proto__', 'nt', 'subprocess', 'x\u001b[31mred\n'])), P.str(pick(['constructor', 'system', 'Popen', 'y'.repeat(3000)])), Buffer.from([0x93])]),
    () => Buffer.from(pick(['ios\nsystem\n', 'o', '\x82\x01', '\x83\x01\x00', '\x84\x01\x00\x00\x00']), 'latin1'), // INST / OBJ / EXT
    () => Buffer.from(`S'${'\\x41'.repeat(pick([1, 1000]))}'\n`, 'latin1'),
    () => Buffer.from(`F${pick(['nan', 'inf', '-inf', '1e400', 'x', ''])}\n`, 'latin1'),
    () => Buffer.from(`I${pick(['01', '00', '-0', '9'.repeat(5000), '+', ''])}\n`, 'latin1'),
    () => Buffer.from(`P${pick(['0', 'storage', ''])}\n`, 'latin1'), // PERSID string
    () => Buffer.from([0x8f, 0x28, 0x4e, 0x90, 0x91]), // sets
    () => Buffer.from([0x32, 0x30, 0x31, 0x62, 0x81, 0x92, 0x52, 0x93, 0x51, 0x2e]), // opcodes on an empty stack
    () => Buffer.from([0x80, pick([0, 1, 2, 3, 4, 5, 6, 255])]),
  ];
}

function mutateBytes(r, buf, count) {
  const pick = (xs) => xs[Math.floor(r() * xs.length)];
  let b = Buffer.from(buf);
  for (let k = 0; k < count; k++) {
    if (b.length === 0) b = Buffer.from([0x80]);
    const at = Math.floor(r() * b.length);
    switch (Math.floor(r() * 8)) {
      case 0: b[at] ^= 1 << Math.floor(r() * 8); break;
      case 1: b[at] = Math.floor(r() * 256); break;
      case 2: b[at] = pick([0x00, 0xff, 0x7f, 0x80, 0x2e, 0x28, 0x4a, 0x8b, 0x54, 0x58, 0x95, 0x63, 0x93]); break;
      case 3: if (at + 4 <= b.length) b.writeUInt32LE(pick(HOSTILE_U32), at); break;
      case 4: b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + Math.floor(r() * 16)))]); break;
      case 5: b = Buffer.concat([b.subarray(0, at), Buffer.from([Math.floor(r() * 256)]), b.subarray(at)]); break;
      case 6: b = b.subarray(0, at); break;
      default: { const src = Math.floor(r() * b.length); const len = Math.min(32, b.length - src); b = Buffer.concat([b.subarray(0, at), b.subarray(src, src + len), b.subarray(at)]); }
    }
  }
  return b;
}

let fixtureCache;
function fixtures() {
  if (fixtureCache) return fixtureCache;
  const files = fs.readdirSync(FIXTURES).filter((f) => f.endsWith('.pth')).sort();
  const zips = [];
  const legacy = [];
  for (const f of files) {
    const b = fs.readFileSync(path.join(FIXTURES, f));
    if (b.readUInt32LE(0) === 0x04034b50) zips.push({ f, b, records: readZip(b) });
    else legacy.push({ f, b });
  }
  return (fixtureCache = { zips, legacy });
}

/** Case i: { label, bytes, expectGlobal? } (the label is the reproducer's description). */
function gen(i) {
  const r = rng(i + 1);
  const pick = (xs) => xs[Math.floor(r() * xs.length)];
  const int = (lo, hi) => lo + Math.floor(r() * (hi - lo + 1));
  const { zips, legacy } = fixtures();
  const kind = int(0, 99);
  const sn = snippets(r);
  if (kind < 22) {
    // A fixture with byte-level damage anywhere (headers, pickles, data).
    const fx = pick([...zips, ...legacy]);
    const m = int(1, 8);
    return { label: `bytes(${fx.f}, ${m} mutations)`, bytes: mutateBytes(r, fx.b, m) };
  }
  if (kind < 42) {
    // A zip fixture rebuilt with its data.pkl mutated (and maybe deflated records).
    const fx = pick(zips);
    const deflate = r() < 0.3;
    const recs = fx.records.map((x) => ({ ...x, deflate: deflate && r() < 0.7 }));
    const pk = recs.find((x) => x.name.endsWith('data.pkl'));
    const how = int(0, 2);
    if (how === 0) pk.data = mutateBytes(r, pk.data, int(1, 6));
    else {
      const at = int(2, pk.data.length - 1);
      const s = pick(sn)();
      pk.data = how === 1 ? Buffer.concat([pk.data.subarray(0, at), s, pk.data.subarray(at)]) : Buffer.concat([pk.data.subarray(0, at), s, P.stop]);
    }
    return { label: `pickle(${fx.f}, how=${how}${deflate ? ', deflate' : ''})`, bytes: writeZip(recs) };
  }
  if (kind < 56) {
    // Zip structure: lying sizes and offsets, duplicates, two data.pkl, methods, bombs, missing records.
    const fx = pick(zips);
    const recs = fx.records.map((x) => ({ ...x }));
    const t = pick(recs);
    const what = int(0, 12);
    let opts;
    switch (what) {
      case 0: t.size = pick(HOSTILE_U32); break;
      case 1: t.csize = pick(HOSTILE_U32); break;
      case 2: t.size = t.csize = pick(HOSTILE_U32); break;
      case 3: t.offset = pick(HOSTILE_U32); break;
      case 4: recs.push({ ...t, data: mutateBytes(r, t.data, 2) }); break; // duplicate name
      case 5: recs.push({ name: `other/data.pkl`, data: recs[0].data }); break;
      case 6: t.method = pick([1, 6, 9, 12, 14, 99, 65535]); break;
      case 7: t.flags = pick([1, 8, 0x41, 0x800]); break;
      case 8: { // a deflate bomb: zeros claimed at, or beyond, deflate's ratio
        t.data = Buffer.alloc(pick([1 << 16, 1 << 20, 8 << 20]));
        t.deflate = true;
        if (r() < 0.6) t.size = pick([0xffffffff, 0x7fffffff, t.data.length * 4, 0]);
        break;
      }
      case 9: recs.splice(recs.indexOf(t), 1); break;
      case 10: t.skipLocal = true; break;
      case 11: {
        const big = () => pick([0, 1, 2 ** 32, 2 ** 53 - 1, 2 ** 56, 2 ** 63, 2 ** 64 - 1]);
        opts = { zip64: { recordOffset: r() < 0.5 ? undefined : big(), cdOffset: r() < 0.5 ? undefined : big(), count: r() < 0.5 ? undefined : big(), eocdFF: r() < 0.7 } };
        break;
      }
      default: opts = { eocdCount: pick([0, 1, 0xffff]), cdOffsetDelta: pick([0, -1, 1, 1 << 20]), comment: pick(['', 'x'.repeat(100)]) };
    }
    return { label: `zip(${fx.f}, ${t.name}, what=${what})`, bytes: writeZip(recs, opts) };
  }
  // Synthesised checkpoints: hostile shapes/strides/offsets/ids, hostile pickles, legacy layouts.
  const types = ['FloatStorage', 'DoubleStorage', 'HalfStorage', 'BFloat16Storage', 'LongStorage', 'IntStorage', 'ByteStorage', 'BoolStorage', 'UntypedStorage', 'NoSuchStorage'];
  const dim = () => pick([0, 1, 2, 3, 7, 16, 2 ** 20, 2 ** 31, 2 ** 40, 2 ** 53 - 1, -1]);
  const shape = () => Array.from({ length: pick([0, 1, 2, 3, 4, 8, 65, 200]) }, dim);
  const tensorBytes = () => {
    if (r() < 0.45) {
      // Valid, or nearly: small shapes on the 16-element storage '0', with one hostile field at most.
      const size = pick([[4], [2, 2], [16], [4, 4], [2, 3], [], [1, 1, 1], [0, 5]]);
      let stride = size.map((_, d) => size.slice(d + 1).reduce((a, x) => a * x, 1));
      let offset = pick([0, 0, 0, 1, 4]);
      let numel = 16;
      const bad = int(0, 9);
      if (bad === 0) stride = stride.map(() => pick([0, 0, 5, 2 ** 31]));
      if (bad === 1) offset = pick([12, 15, 16, 2 ** 40, -1]);
      if (bad === 2) numel = pick([0, 1, 2 ** 31, 2 ** 53 - 1]);
      if (bad === 3) return rebuild(pid('FloatStorage', '0', numel), 0, [pick([2 ** 20, 2 ** 26, 2 ** 28]), 4], [0, 1]); // broadcast
      return rebuild(pid(pick(['FloatStorage', 'FloatStorage', 'HalfStorage', 'LongStorage', 'ByteStorage', 'BoolStorage', 'DoubleStorage']), '0', numel), offset, size, stride);
    }
    const size = r() < 0.5 ? [int(1, 4), int(1, 4)] : shape();
    const stride = r() < 0.5 ? size.map(() => pick([0, 1, 2, 4, 2 ** 40, -1])) : r() < 0.5 ? [1, 1] : size.map(() => 1);
    const key = pick(['0', '0', '1', '../../x', '__proto__', '']);
    const view = r() < 0.2 ? Buffer.concat([P.mark, P.str('v'), P.int(pick([-1, 0, 3, 2 ** 40, 1])), P.int(pick([1, 4, 2 ** 31])), P.tuple]) : undefined;
    const pidBytes = r() < 0.15
      ? pick([
        () => Buffer.concat([P.mark, P.str('storage'), P.tuple, P.binpersid]),
        () => Buffer.concat([P.mark, P.str('module'), P.none, P.none, P.none, P.none, P.tuple, P.binpersid]),
        () => Buffer.concat([P.mark, P.str('storage'), P.global('torch', 'FloatStorage'), P.int(0), P.str('cpu'), P.int(4), P.tuple, P.binpersid]),
        () => Buffer.concat([P.mark, P.str('storage'), P.global('torch', 'FloatStorage'), P.str('0'), Buffer.alloc(5000, 0x5d), Buffer.alloc(4999, 0x61), P.int(4), P.tuple, P.binpersid]),
        () => Buffer.concat([P.str('storage'), P.binpersid]),
        () => Buffer.concat([Buffer.from([0x5d]), P.binpersid]),
        () => Buffer.concat([P.mark, P.str('storage'), P.global('torch', 'FloatStorage'), P.str('0'), P.str('cpu'), Buffer.from([0x47, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0]), P.tuple, P.binpersid]),
      ])()
      : pid(pick(types), key, pick([0, 1, 4, 16, 2 ** 31, 2 ** 40, 2 ** 53 - 1]), view);
    return rebuild(pidBytes, pick([0, 0, 1, 3, 2 ** 31, 2 ** 53 - 1, -1]), size, stride);
  };
  const n = pick([1, 1, 2, 3, 50]);
  const pairs = Array.from({ length: n }, (_, k) => [pick([`t${k}`, `t${k}`, '__proto__', 'constructor', 'module.x', `a${'b'.repeat(300)}`]), tensorBytes()]);
  let pickle = stateDict(pairs, pick([2, 2, 4, 5]));
  if (r() < 0.3) {
    const at = int(2, pickle.length - 1);
    pickle = Buffer.concat([pickle.subarray(0, at), pick(sn)(), pickle.subarray(at)]);
  } else if (r() < 0.15) pickle = Buffer.concat([P.proto(pick([2, 4, 5])), pick(sn)(), P.stop]);
  const storageBytes = pick([0, 4, 16, 64, 1 << 12]);
  if (kind < 82) {
    const data = { 0: Buffer.alloc(storageBytes), 1: Buffer.alloc(4) };
    return { label: `synth-zip(n=${n}, storage=${storageBytes})`, bytes: zipTorch(pickle, data, r() < 0.2) };
  }
  const es = pick([1, 2, 4, 8]);
  const storages = [['0', storageBytes / 4, es, r() < 0.2 ? pick([-1, 2 ** 62, 2 ** 40, 0]) : undefined], ['1', 1, es]];
  const keysPickle = r() < 0.15 ? Buffer.concat([P.proto(2), pick([Buffer.from([0x5d, 0x28]), Buffer.from([0x4e])]), P.str('0'), P.str('0'), Buffer.from([0x65]), P.stop]) : undefined;
  const obj = r() < 0.1 ? Buffer.concat([P.proto(2), pick(sn)(), P.stop]) : pickle;
  let bytes = legacyTorch(obj, r() < 0.3 ? storages.slice(0, 1) : storages, keysPickle);
  if (r() < 0.2) bytes = mutateBytes(r, bytes, int(1, 3));
  return { label: `synth-legacy(n=${n}, storage=${storageBytes})`, bytes };
}

// ---------------------------------------------------------------- running

const INTERNAL = /Maximum call stack|is not a function|Cannot read propert|is not iterable|Invalid typed array|Array buffer allocation|Map maximum size|Invalid array length|Cannot convert|Do not know how to serialize|circular structure|out of memory|Invalid string length/;

function classify(rx, e, file) {
  if (!(e instanceof rx.ResnextError)) return `NONRX ${e && e.constructor ? e.constructor.name : typeof e}: ${String(e && e.message).slice(0, 160)}`;
  if (e.code !== 'ERR_IO') return `CODE ${e.code}: ${e.message.slice(0, 160)}`;
  if (!e.message.includes(file)) return `NONAME ${e.message.slice(0, 160)}`;
  if (INTERNAL.test(e.message)) return `INTERNAL ${e.message.slice(0, 200)}`;
  if (e.message.length > 4000) return `LONGMSG ${e.message.length} characters`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u0008\u000b-\u001f\u007f]/.test(e.message)) return `CTRLMSG ${JSON.stringify(e.message.slice(0, 160))}`;
  return null;
}

const stats = process.env.TORCH_FUZZ_STATS ? new Map() : null;

async function runOne(rx, i, dir) {
  let bytes;
  try {
    ({ bytes } = gen(i));
  } catch (e) {
    return `FUZZBUG the generator threw ${String(e && e.message).slice(0, 120)}`;
  }
  const file = path.join(dir, `case-${i}.pth`);
  fs.writeFileSync(file, bytes);
  const before = rx.memory().tensors;
  const t0 = Date.now();
  let finding = null;
  try {
    const d = await rx.io.loadTorch(file);
    for (const t of Object.values(d)) t.dispose();
    stats?.set('loaded', (stats.get('loaded') || 0) + 1);
  } catch (e) {
    finding = classify(rx, e, file);
    if (stats) {
      const k = String(e && e.message).replace(/file "[^"]*"/, '').replace(/\d+/g, 'N').slice(0, 90);
      stats.set(k, (stats.get(k) || 0) + 1);
    }
  }
  const ms = Date.now() - t0;
  if (!finding && rx.memory().tensors !== before) finding = `LEAK ${rx.memory().tensors - before} tensors`;
  if (!finding && ms > SLOW_MS) finding = `SLOW ${ms} ms`;
  fs.rmSync(file, { force: true });
  return finding;
}

async function runCases(from, to) {
  const rx = require(dist);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'torch-fuzz-'));
  try {
    for (let i = from; i < to; i++) {
      const rss0 = process.resourceUsage().maxRSS * 1024;
      const finding = await runOne(rx, i, dir);
      const grew = process.resourceUsage().maxRSS * 1024 - rss0;
      if (finding) console.log(`FINDING ${i} ${finding}`);
      if (grew > RSS_LIMIT) console.log(`FINDING ${i} MEMORY resident memory grew by ${(grew / 2 ** 20).toFixed(0)} MB`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  if (stats) for (const [k, v] of [...stats].sort((a, b) => b[1] - a[1])) console.error(`${String(v).padStart(6)} ${k}`);
}

function child(from, to, timeoutMs) {
  const r = spawnSync(process.execPath, [`--max-old-space-size=${HEAP_MB}`, '--stack-size=984', __filename, '--child', String(from), String(to)], {
    encoding: 'utf8',
    timeout: timeoutMs,
    killSignal: 'SIGKILL',
    maxBuffer: 64 << 20,
  });
  const timedOut = !!(r.error && r.error.code === 'ETIMEDOUT');
  return { ok: r.status === 0 && !timedOut, signal: r.signal, timedOut, stdout: r.stdout || '', stderr: r.stderr || '' };
}

async function main() {
  const args = process.argv.slice(2);
  if (args[0] === '--child') return runCases(Number(args[1]), Number(args[2]));
  const opt = (name, dflt) => {
    const k = args.indexOf(name);
    return k >= 0 ? Number(args[k + 1]) : dflt;
  };
  if (args.includes('--case')) {
    const i = opt('--case', 0);
    const rx = require(dist);
    const { label, bytes } = gen(i);
    const file = path.join(os.tmpdir(), `torch-fuzz-case-${i}.pth`);
    fs.writeFileSync(file, bytes);
    console.log(`case ${i}: ${label}, ${bytes.length} bytes -> ${file}`);
    try {
      const d = await rx.io.loadTorch(file);
      console.log(`loaded ${Object.keys(d).length} tensors`);
      for (const t of Object.values(d)) t.dispose();
    } catch (e) {
      console.log(`${e && e.constructor && e.constructor.name} ${e && e.code}: ${String(e && e.message).slice(0, 1000)}`);
    }
    return;
  }
  const from = opt('--from', 0);
  const to = opt('--to', 2000);
  const batch = opt('--batch', 250);
  const strict = args.includes('--strict');
  const t0 = Date.now();
  const counts = { FUZZBUG: 0, crashes: 0, hangs: 0, MEMORY: 0, NONRX: 0, CODE: 0, NONAME: 0, INTERNAL: 0, SLOW: 0, LEAK: 0, LONGMSG: 0, CTRLMSG: 0 };
  const lines = [];
  const repro = (i) => {
    let label = '?';
    try {
      label = gen(i).label;
    } catch {}
    return `node test/fuzz/torch-fuzz.js --case ${i}  # ${label}`;
  };
  const record = (stdout) => {
    for (const l of stdout.split('\n')) {
      const m = /^FINDING (\d+) (\w+) ?(.*)$/.exec(l);
      if (!m) continue;
      counts[m[2]] = (counts[m[2]] || 0) + 1;
      lines.push(`${m[2]} seed=${m[1]} ${m[3].slice(0, 200)} :: ${repro(Number(m[1]))}`);
    }
  };
  for (let b = from; b < to; b += batch) {
    const e = Math.min(b + batch, to);
    const res = child(b, e, 30_000 + (e - b) * 400);
    if (res.ok) {
      record(res.stdout);
      continue;
    }
    // Bisect the batch to isolate the culprit(s), then replay them case by case.
    const culprits = [];
    const isolate = (lo, hi) => {
      if (hi - lo <= 4) {
        for (let i = lo; i < hi; i++) culprits.push(i);
        return;
      }
      const mid = (lo + hi) >> 1;
      for (const [x, y] of [[lo, mid], [mid, hi]]) {
        const half = child(x, y, 30_000 + (y - x) * 400);
        if (half.ok) record(half.stdout);
        else isolate(x, y);
      }
    };
    isolate(b, e);
    for (const i of culprits) {
      const one = child(i, i + 1, 20_000);
      if (one.ok) {
        record(one.stdout);
        continue;
      }
      const oom = /heap out of memory|Allocation failed/.test(one.stderr);
      if (one.timedOut) counts.hangs++;
      else if (oom) counts.MEMORY++;
      else counts.crashes++;
      const what = one.timedOut ? 'HANG' : oom ? 'MEMORY' : 'CRASH';
      lines.push(`${what} seed=${i} signal=${one.signal ?? 'exit'} ${one.stderr.split('\n').filter(Boolean).slice(-2).join(' | ').slice(0, 200)} :: ${repro(i)}`);
    }
  }
  for (const l of lines) console.log(l);
  const s = ((Date.now() - t0) / 1000).toFixed(1);
  const c = counts;
  console.log(`torch-fuzz: ${to - from} cases, ${c.crashes} crashes, ${c.hangs} hangs, ${c.MEMORY} over-memory, ${c.NONRX} non-ResnextErrors, ${c.CODE} non-ERR_IO, ${c.NONAME} unnamed-file, ${c.INTERNAL} internal-JS-errors, ${c.SLOW} slow, ${c.LEAK} leaks, ${c.LONGMSG + c.CTRLMSG} bad-messages, ${c.FUZZBUG} generator errors, ${s} s`);
  const other = c.FUZZBUG + c.NONRX + c.CODE + c.NONAME + c.INTERNAL + c.SLOW + c.LEAK + c.LONGMSG + c.CTRLMSG;
  process.exitCode = c.crashes || c.hangs || c.MEMORY || (strict && other) ? 1 : 0;
}

module.exports = { gen, writeZip, readZip, stateDict, rebuild, pid, zipTorch, legacyTorch, P };
if (require.main === module) main();
