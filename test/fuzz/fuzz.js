#!/usr/bin/env node
// A seeded, reproducible fuzzer of resnext's public API (dist/index.js).
//
//   node test/fuzz/fuzz.js --from 0 --to 2000 [--batch 200] [--json out.json] [--strict]
//                          [--batch-timeout 20] [--case-timeout 10] [--mem-mb 2560] [--print 0..N]
//   node test/fuzz/fuzz.js --show 123          prints the reproducer of case 123
//   node test/fuzz/fuzz.js --from 123 --to 124 --verbose   runs one case, printing its outcome
//
// Case i is fully determined by i (a mulberry32 stream seeded by a hash of i): a short program of
// random and hostile calls to the creation functions and ops, written as one line of JS. The line
// is the body of an async function of `rx` (`const rx = require('./dist/index.js')`) and is what
// is run, verbatim. A ResnextError is the expected way for bad input to fail; any other exception
// is a finding ("non-ResnextError", reported, failing the exit code only with --strict).
//
// The parent splits [from, to) into batches, each run in a child process (under `ulimit -v`, so a
// huge but "valid" allocation fails instead of taking the machine's memory, and with a timeout).
// The child writes a marker before and after every case, so when it dies by a signal, exits early
// or times out, the case in flight is replayed alone in a fresh child; if it does not fail alone,
// the batch up to it is replayed case by case (each in its own child). Then the rest of the batch
// goes on in a new child. Output: `CRASH seed=<i> signal=<SIG> :: <js>`, `HANG seed=<i> :: <js>`,
// `NONRX seed=<i> ...`, and the summary line
//   fuzz: N cases, C crashes, H hangs, E non-ResnextErrors, T s
// Exit status 1 on a crash or a hang (or, with --strict, a non-ResnextError).
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

// RESNEXT_FUZZ_DIST: fuzz another build (e.g. a snapshot of dist/ while the tree changes).
const DIST = process.env.RESNEXT_FUZZ_DIST || path.join(__dirname, '..', '..', 'dist', 'index.js');

// ------------------------------------------------------------------ the PRNG

function fmix32(h) {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function caseRng(i) {
  return mulberry32(fmix32((i >>> 0) ^ 0x9e3779b9) ^ fmix32(Math.floor(i / 4294967296) + 0x3c6ef372));
}

// ------------------------------------------------------------------ hostile values

const HOSTILE_NUMBERS = [
  '0', '-1', '-0', 'NaN', 'Infinity', '-Infinity', '2 ** 31', '2 ** 31 - 1', '2 ** 32 + 1', '2 ** 53',
  '2 ** 63', '-(2 ** 31)', '1e308', '1.5', '0.5', '-7', '65536', '1e9', 'Number.MIN_VALUE', 'Number.MAX_SAFE_INTEGER',
];
const HOSTILE_VALUES = [
  'undefined', 'null', '"x"', '"2"', '{}', '[]', '[[2]]', 'true', 'false', '() => 1', 'Symbol("s")', '2n',
  'new Float32Array(2)', 'new Map()', '{ length: 2 }', 'rx', '[1, 2, 3, 4, 5, 6, 7]', 'new Proxy({}, {})',
  'Object.create(rx.Tensor.prototype)', '{ shape: [2], dtype: "float32", device: "cpu" }',
  'new rx.Tensor({ shape: [2], dtype: "float32", device: "cpu", disposed: false, nbytes: 8 })',
];
const HOSTILE_DIMS = ['0', '-1', '1.5', 'NaN', 'Infinity', '2 ** 31', '2 ** 32', '2 ** 53', '1e9', '65536', '"3"', 'null', '-0'];
// Shapes that must be refused (or fail with ERR_OOM) without touching much memory.
const HOSTILE_SHAPES = [
  '[2 ** 31, 2 ** 31]', '[46341, 46341]', '[65536, 65536, 65536]', '[2 ** 20, 2 ** 20]', '[2 ** 53]', '[1e9, 0]',
  '[0, 2 ** 62]', '[2 ** 62, 4]', '[-1]', '[1, -2]', '[, 3]', 'Array(3)', '[2, "3"]', 'new Int32Array([2, 3])',
  '[2, 3, 4, 5, 6, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]',
  '[[2], [3]]', '[2, null]', '[true]', '[1e-300]', '[Number.MAX_VALUE]',
  // An array whose element changes between the check and the use.
  '(() => { let n = 0; const a = [2, 3]; Object.defineProperty(a, 0, { get: () => (n++ < 1 ? 2 : 2 ** 40), enumerable: true }); return a; })()',
  '(() => { let n = 0; const a = [2, 3]; Object.defineProperty(a, 1, { get: () => (n++ < 1 ? 3 : -5), enumerable: true }); return a; })()',
];
const HOSTILE_DATA = [
  '[[1, 2], [3]]', '[1, [2, 3]]', '[]', '[[]]', '[[[[[[[[[[[[1]]]]]]]]]]]]', '[1, "2", null]', '[NaN, Infinity, -Infinity]',
  'Array(4)', 'new BigInt64Array(2)', 'new DataView(new ArrayBuffer(8))', 'new Uint8Array(4)', 'new Float64Array(4)',
  'new Float32Array(new ArrayBuffer(64), 8, 4)', 'new Int16Array(4)', 'new Float32Array(new SharedArrayBuffer(16))',
  '(() => { const a = new Float32Array(4); structuredClone(a.buffer, { transfer: [a.buffer] }); return a; })()',
  '{ length: 2 ** 31 }', '{ length: 3, 0: 1, 1: 2, 2: 3 }', '5', 'NaN', '2n', '"abc"', 'new Array(3).fill([1, 2])',
  '[1, 2, 2n]', '[{ valueOf: () => 3 }]', 'Object.assign([1, 2], { length: 5 })',
];
const DTYPES_OK = ['float32', 'float32', 'float32', 'float32', 'float32', 'float64', 'int32', 'bfloat16'];
const DTYPES_BAD = ['"float16"', '"int64"', '"Float32"', '5', 'null', '{}', '"float32 "'];
const FLOAT_CREATORS = ['randn', 'rand', 'ones', 'zeros', 'full', 'tensor'];
const INT_CREATORS = ['ones', 'zeros', 'full', 'tensor'];

const isFloat = (d) => d !== 'int32';

// ------------------------------------------------------------------ the generator

class Gen {
  constructor(i) {
    this.r = caseRng(i);
    this.n = 0;
    this.stmts = [];
    this.leaves = []; // variables created with requiresGrad
    // Per-case hostility: a third of the cases are fully valid, the rest are hostile at some rate.
    this.hp = this.pick([0, 0, 0.03, 0.08, 0.15, 0.3]);
    this.gradCase = this.chance(0.35);
    this.big = this.chance(0.08); // larger (still <= ~100k element) valid tensors
    this.baseDtype = this.chance(0.8) ? 'float32' : this.pick(DTYPES_OK);
  }
  chance(p) {
    return this.r() < p;
  }
  int(lo, hi) {
    return lo + Math.floor(this.r() * (hi - lo + 1));
  }
  pick(xs) {
    return xs[Math.floor(this.r() * xs.length)];
  }
  hostile(scale = 1) {
    return this.r() < this.hp * scale;
  }
  let(expr) {
    const name = `v${this.n++}`;
    this.stmts.push(`const ${name} = ${expr};`);
    return name;
  }
  hnum() {
    return this.chance(0.75) ? this.pick(HOSTILE_NUMBERS) : this.pick(HOSTILE_VALUES);
  }
  /** A number argument: `valid` (a string) most of the time. */
  num(valid) {
    return this.hostile() ? this.hnum() : String(valid);
  }
  bool() {
    return this.hostile() ? this.pick(['1', '"true"', 'null', '0']) : this.pick(['true', 'false']);
  }
  dtypeLit() {
    if (this.hostile(0.5)) return this.pick(DTYPES_BAD);
    return JSON.stringify(this.chance(0.7) ? this.baseDtype : this.pick(DTYPES_OK));
  }
  dim(hi = 5) {
    if (this.hostile(0.5)) return this.pick(HOSTILE_DIMS);
    if (this.chance(0.05)) return '0';
    return String(this.int(1, hi));
  }
  /** Random valid dims (numbers), rank in [lo, hi]. */
  dims(lo = 0, hi = 4, maxDim = 5) {
    const rank = this.int(lo, hi);
    const d = [];
    for (let k = 0; k < rank; k++) d.push(this.chance(0.04) ? 0 : this.int(1, maxDim));
    return d;
  }
  /** A shape argument (a JS literal): valid dims or, some of the time, hostile. */
  shapeArg(d) {
    if (this.hostile()) {
      if (this.chance(0.5)) return this.pick(HOSTILE_SHAPES);
      if (this.chance(0.3)) return this.pick(HOSTILE_VALUES);
      const dd = d.map(String);
      dd.splice(this.int(0, dd.length), 0, this.pick(HOSTILE_DIMS));
      return `[${dd.join(', ')}]`;
    }
    return lit(d);
  }
  /** A disposed tensor, a fake tensor, an alias of a tensor freed by tidy, or a non-tensor. */
  hostileTensor(tensorLike = false) {
    const d = lit(this.dims(1, 3));
    switch (this.int(0, tensorLike ? 3 : 5)) {
      case 0:
        return `(() => { const z = rx.zeros(${d}); z.dispose(); return z; })()`;
      case 1:
        return `new rx.Tensor(rx.tidy(() => rx.ones(${d})).handle)`;
      case 2:
        return `(() => { const z = rx.randn(${d}); const a = new rx.Tensor(z.handle); z.dispose(); return a; })()`;
      case 3:
        return `rx.tidy(() => rx.zeros(${d}, { dtype: ${JSON.stringify(this.pick(DTYPES_OK))} }))`;
      default:
        return this.pick(HOSTILE_VALUES);
    }
  }
  /** A variable holding a tensor of dims `d` (or, some of the time, something hostile). */
  tens(d, o = {}) {
    if (this.hostile(o.hostileScale ?? 0.6)) return this.let(this.hostileTensor(o.tensorLike));
    let dtype = o.dtype ?? (this.chance(0.85) ? this.baseDtype : this.pick(DTYPES_OK));
    if (o.float && !isFloat(dtype)) dtype = 'float32';
    const grad = this.gradCase && isFloat(dtype) && !o.noGrad && this.chance(0.7);
    let base = d;
    let view = '';
    if (d.length >= 1 && this.chance(0.15)) {
      // A non-contiguous view of the wanted shape: an expanded or a permuted tensor.
      if (this.chance(0.5)) {
        base = d.map((x) => (this.chance(0.5) ? 1 : x));
        view = `expand:${lit(d)}`;
      } else if (d.length >= 2) {
        const perm = shuffle(
          this,
          d.map((_, k) => k),
        );
        base = new Array(d.length);
        perm.forEach((p, j) => {
          base[p] = d[j];
        });
        view = `permute:${lit(perm)}`;
      }
    }
    let e = this.create(base, dtype, grad && !view);
    if (view.startsWith('expand:')) e = `rx.expand(${e}, ${view.slice(7)})`;
    else if (view.startsWith('permute:')) e = `rx.permute(${e}, ${view.slice(8)})`;
    const name = this.let(e);
    if (grad && !view) this.leaves.push(name);
    return name;
  }
  create(d, dtype, grad) {
    const n = d.reduce((a, b) => a * b, 1);
    let creator = this.pick(isFloat(dtype) ? FLOAT_CREATORS : INT_CREATORS);
    if (creator === 'tensor' && n > 64) creator = 'randn';
    if (creator === 'randn' && !isFloat(dtype)) creator = 'ones';
    const opt = [];
    if (dtype !== 'float32' || this.chance(0.2)) opt.push(`dtype: ${JSON.stringify(dtype)}`);
    if (grad) opt.push('requiresGrad: true');
    const o = opt.length ? `, { ${opt.join(', ')} }` : '';
    const s = lit(d);
    switch (creator) {
      case 'full':
        return `rx.full(${s}, ${isFloat(dtype) ? this.pick(['0.5', '-1.25', '2', '3']) : this.int(-3, 5)}${o})`;
      case 'tensor': {
        const vals = Array.from({ length: n }, () => (isFloat(dtype) ? Math.round((this.r() * 8 - 4) * 100) / 100 : this.int(-3, 5)));
        return `rx.tensor(${lit(vals)}, ${s}${o})`;
      }
      case 'randn':
      case 'rand':
        return `rx.${creator}(${s}${o.replace(/ }$/, `, seed: ${this.int(0, 99)} }`) || `, { seed: ${this.int(0, 99)} }`})`;
      default:
        return `rx.${creator}(${s}${o})`;
    }
  }
  /** An options object, sometimes replaced by a hostile value. */
  options(fields) {
    if (this.hostile(0.4)) return this.pick(HOSTILE_VALUES);
    const kept = fields.filter(([, v]) => v !== null && (this.chance(0.8) || this.hp === 0));
    if (this.hostile(0.3)) kept.push([this.pick(['__proto__', 'constructor', 'extra', 'toString']), this.hnum()]);
    const parts = kept.map(([k, v]) => `${k}: ${v}`);
    if (parts.length && this.n > 0 && this.hostile(0.5)) {
      // A getter that disposes an argument while the op reads its options.
      const k = this.int(0, kept.length - 1);
      parts[k] = `get ${kept[k][0]}() { v${this.int(0, this.n - 1)}?.dispose?.(); return ${kept[k][1]}; }`;
    }
    return `{ ${parts.join(', ')} }`;
  }
  pairArg(valid) {
    if (this.hostile()) {
      const flip = this.pick(['-(2 ** 31)', '2 ** 40', '-1', 'NaN', '0']);
      return this.pick([
        this.hnum(), `[${this.hnum()}, ${valid}]`, `[${valid}]`, `[${valid}, ${valid}, ${valid}]`, `[, ${valid}]`, `"${valid}"`,
        // A pair whose first element changes after it was checked.
        `(() => { let n = 0; const a = [${valid}, ${valid}]; Object.defineProperty(a, 0, { get: () => (n++ < 1 ? ${valid} : ${flip}), enumerable: true }); return a; })()`,
      ]);
    }
    return this.chance(0.5) ? String(valid) : `[${valid}, ${this.int(Math.max(0, valid - 1), valid + 1)}]`;
  }
}

function lit(v) {
  return Array.isArray(v) ? `[${v.map(lit).join(', ')}]` : String(v);
}

function shuffle(g, xs) {
  const a = xs.slice();
  for (let k = a.length - 1; k > 0; k--) {
    const j = g.int(0, k);
    [a[k], a[j]] = [a[j], a[k]];
  }
  return a;
}

/** A shape broadcast-compatible with d (or, sometimes, not). */
function broadcastPartner(g, d) {
  if (g.chance(0.15)) return g.dims(0, 4);
  const k = g.int(0, d.length);
  return d.slice(d.length - k).map((x) => (g.chance(0.3) ? 1 : x));
}

function bnOptions(g, c) {
  const vec = (name, creator) => {
    if (g.hostile(0.8)) return [name, g.chance(0.5) ? g.tens([g.chance(0.5) ? c + 1 : 1]) : g.let(g.hostileTensor())];
    const grad = g.gradCase && (name === 'weight' || name === 'bias') && g.chance(0.5);
    const v = g.let(`rx.${creator}([${c}]${grad ? ', { requiresGrad: true }' : ''})`);
    if (grad) g.leaves.push(v);
    return [name, v];
  };
  const fields = [vec('weight', 'ones'), vec('bias', 'zeros'), vec('runningMean', 'zeros'), vec('runningVar', 'ones')];
  fields.push(['training', g.bool()], ['momentum', g.num(g.pick(['0.1', '0', '1']))], ['eps', g.num(g.pick(['1e-5', '1e-3']))]);
  return g.options(fields);
}

/** Image-like dims [N, C, H, W], small (or up to ~100k elements in a big case). */
function imageDims(g, c) {
  const n = g.chance(0.06) ? 0 : g.int(1, g.big ? 4 : 2);
  const hw = g.big ? g.int(4, 32) : g.int(1, 10);
  return [n, c ?? g.int(1, g.big ? 16 : 6), hw, g.chance(0.8) ? hw : g.int(1, g.big ? 32 : 10)];
}

// Each op generator pushes statements and returns the name of the tensor to read afterwards (or null).
const OPS = {
  create(g) {
    const name = g.pick(['zeros', 'ones', 'empty', 'randn', 'rand']);
    const o = [['dtype', g.dtypeLit()], ['requiresGrad', g.bool()], ['device', g.hostile() ? g.pick(['"cuda"', '"cuda:1"', '"tpu"', '5', '"cpu"']) : '"cpu"']];
    if (name === 'randn') o.push(['mean', g.num(0)], ['std', g.num(1)], ['seed', g.num(g.int(0, 9))]);
    if (name === 'rand') o.push(['low', g.num(-1)], ['high', g.num(1)], ['seed', g.num(g.int(0, 9))]);
    return g.let(`rx.${name}(${g.shapeArg(g.dims(0, 4, 6))}${g.chance(0.6) ? `, ${g.options(o)}` : ''})`);
  },
  full(g) {
    const v = g.hostile() ? g.hnum() : g.pick(['0', '1.5', '-3', '7']);
    return g.let(`rx.full(${g.shapeArg(g.dims(0, 4, 6))}, ${v}${g.chance(0.4) ? `, { dtype: ${g.dtypeLit()} }` : ''})`);
  },
  tensor(g) {
    let data;
    let shape = '';
    if (g.hostile(2)) {
      data = g.pick(HOSTILE_DATA);
      if (g.chance(0.5)) shape = `, ${g.shapeArg(g.dims(0, 2))}`;
    } else {
      const d = g.dims(0, 3, 4);
      const n = d.reduce((a, b) => a * b, 1);
      const vals = Array.from({ length: n }, () => g.int(-5, 5));
      data = g.pick([`${lit(vals)}`, `new Float32Array(${lit(vals)})`, `new Float64Array(${lit(vals)})`, `new Int32Array(${lit(vals)})`]);
      shape = `, ${g.shapeArg(d)}`;
    }
    const o = g.chance(0.4) ? `, ${g.options([['dtype', g.dtypeLit()], ['requiresGrad', g.bool()]])}` : '';
    return g.let(`rx.tensor(${data}${shape || (o ? ', undefined' : '')}${o})`);
  },
  like(g) {
    const x = g.tens(g.dims(0, 4));
    const o = g.chance(0.4) ? `, ${g.options([['dtype', g.dtypeLit()], ['requiresGrad', g.bool()]])}` : '';
    return g.let(`rx.${g.pick(['zerosLike', 'onesLike'])}(${x}${o})`);
  },
  unary(g) {
    const x = g.tens(g.dims(0, 4, g.big ? 40 : 5));
    return g.let(`rx.${g.pick(['neg', 'exp', 'log', 'sqrt', 'abs', 'relu', 'clone'])}(${x})`);
  },
  pow(g) {
    const x = g.tens(g.dims(0, 4));
    return g.let(`rx.pow(${x}, ${g.num(g.pick(['2', '0.5', '-1', '0', '3', '1.5']))})`);
  },
  binary(g) {
    const name = g.pick(['add', 'sub', 'mul', 'div', 'maximum']);
    const d = g.dims(0, 4);
    const scalar = () => (name !== 'maximum' || g.hostile()) && g.chance(0.15);
    const a = scalar() ? g.num(g.pick(['2', '-0.5', '0'])) : g.tens(d);
    const b = scalar() ? g.num(g.pick(['2', '-0.5', '0'])) : g.tens(broadcastPartner(g, d));
    if (g.chance(0.05)) return g.let(`rx.${name}(${a}, ${a})`);
    return g.let(g.chance(0.5) ? `rx.${name}(${a}, ${b})` : `rx.${name}(${b}, ${a})`);
  },
  reshape(g) {
    const d = g.dims(0, 4);
    const x = g.tens(d);
    const n = d.reduce((a, b) => a * b, 1);
    let s;
    if (g.hostile()) s = g.shapeArg(d);
    else {
      const opts = [[n], [-1], d.slice().reverse(), [...d, 1], [1, ...d]];
      if (d.length >= 2) opts.push([d[0] * d[1], ...d.slice(2)], [d[0], -1], [-1, d[d.length - 1]], [-1, -1]);
      opts.push(g.dims(0, 3));
      s = lit(g.pick(opts));
    }
    return g.let(`rx.reshape(${x}, ${s})`);
  },
  flatten(g) {
    const d = g.dims(0, 4);
    const x = g.tens(d);
    return g.let(`rx.flatten(${x}${g.chance(0.7) ? `, ${g.num(g.int(-d.length - 1, d.length))}` : ''})`);
  },
  permute(g) {
    const d = g.dims(0, 4);
    const x = g.tens(d);
    let p = shuffle(
      g,
      d.map((_, k) => k),
    );
    if (g.chance(0.2)) p = p.map((k) => (g.chance(0.5) ? k - d.length : k));
    if (g.chance(0.1) && p.length >= 2) p[0] = p[1];
    if (g.chance(0.08)) p.push(d.length);
    if (g.chance(0.08)) p.pop();
    return g.let(`rx.permute(${x}, ${g.hostile() ? g.shapeArg(p) : lit(p)})`);
  },
  expand(g) {
    const d = g.dims(1, 3);
    const base = d.map((x) => (g.chance(0.5) ? 1 : x));
    const x = g.tens(base);
    let target = d.slice();
    if (g.chance(0.3)) target = [g.int(1, 3), ...target];
    if (g.chance(0.2)) target = target.map((t, k) => (k >= target.length - base.length && g.chance(0.5) ? -1 : t));
    if (g.chance(0.1)) target = target.map((t) => t + 1);
    return g.let(`rx.expand(${x}, ${g.shapeArg(target)})`);
  },
  cast(g) {
    const x = g.tens(g.dims(0, 4));
    return g.let(`rx.cast(${x}, ${g.dtypeLit()})`);
  },
  reduce(g) {
    const d = g.dims(0, 4);
    const x = g.tens(d);
    const r = d.length;
    let dims = '';
    if (g.chance(0.7)) {
      const choices = [String(g.int(-r, Math.max(r - 1, 0))), lit(d.map((_, k) => k).filter(() => g.chance(0.5))), '[]'];
      if (g.chance(0.15)) choices.push(String(r), '[0, 0]', `[${-r - 1}]`, '[0, -1]');
      dims = `, ${g.hostile() ? g.hnum() : g.pick(choices)}`;
      if (g.chance(0.5)) dims += `, ${g.bool()}`;
    }
    return g.let(`rx.${g.pick(['sum', 'mean'])}(${x}${dims})`);
  },
  conv2d(g) {
    const groups = g.pick([1, 1, 1, 2, 3, 4]);
    const cPer = g.int(1, g.big ? 8 : 3);
    const c = groups * cPer;
    const kPer = g.int(1, g.big ? 8 : 3);
    const xd = imageDims(g, g.chance(0.1) ? c + 1 : c);
    const r = g.int(1, Math.min(5, xd[2] + 2));
    const wd = [groups * kPer, g.chance(0.08) ? cPer + 1 : cPer, r, g.chance(0.8) ? r : g.int(1, 3)];
    const x = g.tens(xd);
    const w = g.tens(wd);
    const bias = g.chance(0.4) ? g.tens([g.chance(0.1) ? wd[0] + 1 : wd[0]]) : g.pick(['null', 'undefined']);
    const pad = g.int(0, 2);
    const opt = g.options([
      ['stride', g.pairArg(g.int(1, 3))],
      ['padding', g.chance(0.05) ? g.pick(['100', '[0, 100]']) : g.pairArg(pad)],
      ['groups', g.num(groups)],
      ['bias', bias],
    ]);
    return g.let(`rx.conv2d(${x}, ${w}${g.chance(0.9) ? `, ${opt}` : ''})`);
  },
  batchNorm(g) {
    const name = g.pick(['batchNorm2d', 'batchNormReLU', 'batchNormAddReLU']);
    const xd = imageDims(g);
    const x = g.tens(xd);
    const res = name === 'batchNormAddReLU' ? `${g.tens(g.chance(0.1) ? imageDims(g) : xd)}, ` : '';
    return g.let(`rx.${name}(${x}, ${res}${bnOptions(g, xd[1])})`);
  },
  maxPool2d(g) {
    const xd = imageDims(g);
    const x = g.tens(xd);
    const k = g.int(1, 4);
    const opt = g.options([
      ['stride', g.pairArg(g.int(1, 3))],
      ['padding', g.pairArg(g.int(0, Math.floor(k / 2) + (g.chance(0.1) ? 1 : 0)))],
    ]);
    return g.let(`rx.maxPool2d(${x}, ${g.pairArg(k)}${g.chance(0.8) ? `, ${opt}` : ''})`);
  },
  globalAvgPool2d(g) {
    const x = g.tens(g.chance(0.85) ? imageDims(g) : g.dims(0, 5));
    return g.let(`rx.globalAvgPool2d(${x})`);
  },
  linear(g) {
    const n = g.int(0, g.big ? 64 : 4);
    const i = g.int(1, g.big ? 128 : 6);
    const o = g.int(1, g.big ? 64 : 6);
    const x = g.tens(g.chance(0.9) ? [n, i] : g.dims(1, 3));
    const w = g.tens(g.chance(0.9) ? [o, i] : [i, o]);
    const b = g.chance(0.5) ? `, ${g.chance(0.85) ? g.tens([g.chance(0.9) ? o : o + 1]) : g.pick(['null', 'undefined'])}` : '';
    return g.let(`rx.linear(${x}, ${w}${b})`);
  },
  matmul(g) {
    const m = g.int(0, g.big ? 64 : 5);
    const k = g.int(0, g.big ? 128 : 5);
    const n = g.int(1, g.big ? 64 : 5);
    const ta = g.chance(0.3);
    const tb = g.chance(0.3);
    const a = g.tens(g.chance(0.92) ? (ta ? [k, m] : [m, k]) : g.dims(1, 3));
    const b = g.tens(g.chance(0.92) ? (tb ? [n, k] : [k, n]) : g.dims(1, 3));
    const opt = g.chance(0.8) ? `, ${g.options([['transposeA', ta ? 'true' : g.bool()], ['transposeB', tb ? 'true' : g.bool()]])}` : '';
    return g.let(`rx.matmul(${a}, ${b}${opt})`);
  },
  crossEntropy(g) {
    const n = g.int(g.chance(0.05) ? 0 : 1, g.big ? 64 : 5);
    const c = g.int(1, g.big ? 100 : 6);
    const x = g.tens(g.chance(0.92) ? [n, c] : g.dims(1, 3), { float: true });
    const labels = Array.from({ length: n }, () => g.int(0, c - 1));
    let t;
    if (g.hostile(1.5)) {
      t = g.pick([
        lit([...labels, 0]), lit(labels.slice(1)), `[${labels.map(() => c).join(', ')}]`, '[-1]', `[${n ? '1.5' : ''}]`,
        `[${labels.map(() => '2 ** 31').join(', ')}]`, `rx.zeros([${n}])`, `rx.zeros([${n}, 1], { dtype: "int32" })`,
        `new Float32Array(${n})`, `new Int32Array(${n}).fill(${c})`, `new Int32Array(${n}).fill(-2147483648)`, g.hostileTensor(),
      ]);
    } else {
      t = g.pick([lit(labels), `new Int32Array(${lit(labels)})`, `rx.tensor(new Int32Array(${lit(labels)}), [${n}])`]);
    }
    const opt = g.chance(0.4) ? `, ${g.options([['labelSmoothing', g.num(g.pick(['0', '0.1', '0.5']))]])}` : '';
    return g.let(`rx.crossEntropy(${x}, ${g.let(t)}${opt})`);
  },
  topk(g) {
    const d = g.chance(0.9) ? [g.int(0, 4), g.int(1, g.big ? 200 : 6)] : g.dims(0, 3);
    const x = g.tens(d);
    return g.let(`rx.topk(${x}, ${g.num(g.int(1, Math.max(1, d[d.length - 1] ?? 1)))})`);
  },
  argmax(g) {
    const d = g.chance(0.9) ? [g.int(0, 4), g.int(1, g.big ? 200 : 6)] : g.dims(0, 3);
    return g.let(`rx.argmax(${g.tens(d)})`);
  },
  sgdStep(g) {
    const d = g.dims(1, 3, g.big ? 40 : 5);
    const p = g.tens(d, { noGrad: true, float: true });
    const gr = g.tens(g.chance(0.92) ? d : g.dims(1, 3), { noGrad: true });
    const mom = g.pick(['0', '0.9', '0.5']);
    const buf = mom !== '0' || g.chance(0.3) ? g.tens(g.chance(0.92) ? d : g.dims(1, 3), { noGrad: true }) : 'undefined';
    const opt = g.options([
      ['lr', g.num(g.pick(['0.1', '0.01', '0']))],
      ['momentum', g.num(mom)],
      ['dampening', g.num('0')],
      ['nesterov', g.bool()],
      ['weightDecay', g.num(g.pick(['0', '1e-4']))],
      ['momentumBuffer', buf],
      ['firstStep', g.bool()],
    ]);
    g.stmts.push(`rx.sgdStep(${p}, ${gr}, ${opt});`);
    return p;
  },
  chain(g) {
    // A small network, forward (and, usually, backward and an SGD step): deeper, mostly valid paths.
    g.gradCase = true;
    const n = g.int(1, 3);
    const c = g.int(1, 4);
    const hw = g.int(3, 10);
    const k = g.int(1, 6);
    const cls = g.int(2, 5);
    const x = g.tens([n, c, hw, hw], { noGrad: true, hostileScale: 0.3 });
    const leaf = (expr) => {
      const v = g.let(expr);
      g.leaves.push(v);
      return v;
    };
    const w = leaf(`rx.randn([${k}, ${c}, 3, 3], { requiresGrad: true, seed: ${g.int(0, 99)} })`);
    const gamma = leaf(`rx.ones([${k}], { requiresGrad: true })`);
    const beta = leaf(`rx.zeros([${k}], { requiresGrad: true })`);
    const rm = g.let(`rx.zeros([${k}])`);
    const rv = g.let(`rx.ones([${k}])`);
    let h = g.let(`rx.conv2d(${x}, ${w}, { padding: ${g.pairArg(1)}, stride: ${g.pairArg(g.int(1, 2))} })`);
    const bn = `{ weight: ${gamma}, bias: ${beta}, runningMean: ${rm}, runningVar: ${rv}, training: ${g.bool()} }`;
    switch (g.int(0, 2)) {
      case 0:
        h = g.let(`rx.batchNormReLU(${h}, ${bn})`);
        break;
      case 1:
        h = g.let(`rx.relu(rx.batchNorm2d(${h}, ${bn}))`);
        break;
      default:
        h = g.let(`rx.batchNormAddReLU(${h}, ${g.chance(0.5) ? h : `rx.clone(${h})`}, ${bn})`);
    }
    if (g.chance(0.5)) h = g.let(`rx.maxPool2d(${h}, ${g.pairArg(2)}, { stride: ${g.pairArg(g.int(1, 2))}, padding: ${g.pairArg(g.int(0, 1))} })`);
    const f = g.let(g.chance(0.7) ? `rx.globalAvgPool2d(${h})` : `rx.mean(${h}, [2, 3])`);
    const fc = leaf(`rx.randn([${cls}, ${k}], { requiresGrad: true, seed: ${g.int(0, 99)} })`);
    const fb = leaf(`rx.zeros([${cls}], { requiresGrad: true })`);
    const logits = g.let(`rx.linear(${f}, ${fc}, ${fb})`);
    const labels = lit(Array.from({ length: n }, () => g.int(0, cls - 1)));
    const loss = g.let(`rx.crossEntropy(${logits}, ${labels}, { labelSmoothing: ${g.num('0.1')} })`);
    if (g.chance(0.6)) {
      g.stmts.push(`${loss}.backward();`);
      const mom = g.pick(['0', '0.9']);
      g.stmts.push(
        `for (const t of [${g.leaves.join(', ')}]) if (t.grad) { rx.sgdStep(t, t.grad, { lr: ${g.num('0.1')}, momentum: ${mom}${mom === '0' ? '' : ', momentumBuffer: rx.zerosLike(t)'}, nesterov: ${g.bool()}, weightDecay: ${g.num('1e-4')} }); t.grad.dispose(); t.grad = null; }`,
      );
      g.leaves = [];
      return w;
    }
    return loss;
  },
  method(g) {
    const d = g.dims(0, 3);
    const x = g.tens(d, { tensorLike: true }); // a Tensor (maybe disposed), so that the method exists
    switch (g.int(0, 4)) {
      case 0:
        g.stmts.push(`${x}.fill_(${g.num(g.pick(['1', '-2.5', '0']))});`);
        break;
      case 1:
        g.stmts.push(`${x}.copy_(${g.tens(g.chance(0.8) ? d : g.dims(0, 3))});`);
        break;
      case 2:
        g.stmts.push(`${x}.item();`);
        break;
      case 3:
        g.stmts.push(`${x}.toString();`);
        break;
      default:
        g.stmts.push(`${x}.dispose(); ${x}.dispose();`);
    }
    return x;
  },
};

const OP_WEIGHTS = [
  ['create', 4], ['full', 2], ['tensor', 3], ['like', 2], ['unary', 5], ['pow', 2], ['binary', 8], ['reshape', 4],
  ['flatten', 2], ['permute', 4], ['expand', 4], ['cast', 3], ['reduce', 5], ['conv2d', 9], ['batchNorm', 7],
  ['maxPool2d', 5], ['globalAvgPool2d', 2], ['linear', 4], ['matmul', 5], ['crossEntropy', 5], ['topk', 3],
  ['argmax', 2], ['sgdStep', 5], ['chain', 5], ['method', 3],
];
const OP_TOTAL = OP_WEIGHTS.reduce((a, [, w]) => a + w, 0);

function pickOp(g) {
  let u = g.r() * OP_TOTAL;
  for (const [name, w] of OP_WEIGHTS) {
    if ((u -= w) < 0) return name;
  }
  return OP_WEIGHTS[0][0];
}

/** Case i: { op, src } where src is one line of JS, the body of `async (rx) => { ... }`. */
function gen(i) {
  const g = new Gen(i);
  const op = pickOp(g);
  let y = OPS[op](g);
  // Sometimes a second op on the result.
  if (y && g.chance(0.15)) {
    const second = g.pick(['relu', 'neg', 'flatten', 'clone', 'exp']);
    y = g.let(`rx.${second}(${y})`);
  }
  const grads = () => (g.leaves.length ? ` for (const t of [${g.leaves.join(', ')}]) if (t.grad) { t.grad.dataSync(); t.grad.dispose(); }` : '');
  const tail = g.r();
  if (y && tail < 0.12) {
    // Read asynchronously: the tensor leaves the tidy scope, then is read and disposed.
    const body = g.stmts.join(' ');
    const read = g.pick([
      `try { await y.data(); } finally { y.dispose(); }`,
      `try { await Promise.all([y.data(), y.data(), y.array()]); } finally { y.dispose(); }`,
      `const p = y.data(); y.dispose(); await p;`,
    ]);
    return { op, src: `const y = rx.tidy(() => { ${body} return ${y}; }); ${read} rx.synchronize();` };
  }
  if (y && tail < 0.45 && g.gradCase) {
    const bw = g.pick([
      `rx.sum(${y}).backward();`,
      `rx.mean(rx.mul(${y}, ${y})).backward();`,
      `${y}.backward(rx.onesLike(${y}));`,
      `${y}.backward();`,
      `const s = rx.sum(${y}); s.backward(undefined, { retainGraph: true }); s.backward();`,
      `rx.sum(${y}).backward(); rx.sum(${y}).backward();`,
      `rx.backward(${y}, ${g.pick(HOSTILE_VALUES)});`,
      `${g.leaves[0] ?? y}.dispose(); rx.sum(${y}).backward();`,
    ]);
    g.stmts.push(bw + grads());
  } else if (y && tail < 0.85) {
    g.stmts.push(g.chance(0.9) ? `${y}.dataSync();` : `${y}.dispose(); ${y}.dataSync();`);
  }
  return { op, src: `rx.tidy(() => { ${g.stmts.join(' ')} }); rx.synchronize();` };
}

// ------------------------------------------------------------------ the child: runs cases

const KNOWN_CODES = new Set(['ERR_SHAPE', 'ERR_DTYPE', 'ERR_DEVICE', 'ERR_DISPOSED', 'ERR_OOM', 'ERR_ARG', 'ERR_CUDA', 'ERR_CUDNN', 'ERR_IO', 'ERR_LOAD', 'ERR_INTERNAL']);
const AsyncFunction = (async () => {}).constructor;

function emit(obj) {
  // Synchronous, so the markers are out before a crash.
  fs.writeSync(1, `@@ ${JSON.stringify(obj)}\n`);
}

function liveTensors(rx) {
  try {
    return rx.memory().tensors;
  } catch {
    return null;
  }
}

async function child(from, to) {
  const rx = require(DIST);
  // FUZZ_INJECT=<seed>:<crash|hang|unsettled|throw> makes that case misbehave, to test the harness.
  const [injSeed, injKind] = (process.env.FUZZ_INJECT || '').split(':');
  for (let i = from; i < to; i++) {
    const { op, src } = gen(i);
    emit({ t: 'start', i });
    const before = liveTensors(rx);
    const t0 = Date.now();
    if (injSeed !== '' && Number(injSeed) === i) {
      if (injKind === 'crash') process.kill(process.pid, 'SIGSEGV');
      if (injKind === 'hang') for (;;);
      if (injKind === 'unsettled') await new Promise(() => {});
    }
    try {
      if (injSeed !== '' && Number(injSeed) === i && injKind === 'throw') throw new RangeError('injected');
      await new AsyncFunction('rx', src)(rx);
      emit({ t: 'end', i, ms: Date.now() - t0, ok: true });
    } catch (e) {
      const ms = Date.now() - t0;
      if (e instanceof rx.ResnextError) {
        const code = e.code;
        emit({ t: 'end', i, ms, code: KNOWN_CODES.has(code) ? code : `?${String(code)}`, msg: code === 'ERR_INTERNAL' || !KNOWN_CODES.has(code) ? String(e.message).slice(0, 200) : undefined });
      } else {
        let cls;
        let msg;
        try {
          cls = e && typeof e === 'object' && e.constructor ? e.constructor.name : typeof e;
          msg = String(e && typeof e === 'object' && 'message' in e ? e.message : e);
        } catch {
          cls = typeof e;
          msg = '(unprintable)';
        }
        emit({ t: 'end', i, ms, nonrx: cls, msg: msg.slice(0, 200), op });
      }
    }
    // A kernel error still queued (the case threw before its own synchronize) must not be blamed
    // on the next case.
    try {
      rx.synchronize();
    } catch {
      // reported by the case's own synchronize when it gets there
    }
    const after = liveTensors(rx);
    // (Tensors saved for a backward that never ran live as long as their graph: not counted.)
    if (before !== null && after !== null && after > before && !/requiresGrad/.test(src)) emit({ t: 'leak', i, n: after - before });
  }
  emit({ t: 'done', live: liveTensors(rx) });
}

// ------------------------------------------------------------------ the parent

function runChild(from, to, timeoutMs, memMb) {
  const script = memMb > 0 ? `ulimit -v ${memMb * 1024} && exec "$0" "$@"` : 'exec "$0" "$@"';
  const r = spawnSync('/bin/sh', ['-c', script, process.execPath, __filename, '--child', String(from), String(to)], {
    encoding: 'utf8',
    timeout: timeoutMs,
    killSignal: 'SIGKILL',
    maxBuffer: 256 << 20,
  });
  const events = [];
  for (const line of (r.stdout || '').split('\n')) {
    if (!line.startsWith('@@ ')) continue;
    try {
      events.push(JSON.parse(line.slice(3)));
    } catch {
      // a torn line from a dying child
    }
  }
  const timedOut = !!(r.error && r.error.code === 'ETIMEDOUT');
  const done = events.some((e) => e.t === 'done');
  let inFlight = null;
  for (const e of events) {
    if (e.t === 'start') inFlight = e.i;
    else if (e.t === 'end') inFlight = null;
  }
  const ok = !timedOut && r.status === 0 && done;
  const how = timedOut ? 'timeout' : r.signal ? r.signal : r.status !== 0 ? `exit${r.status}` : done ? 'ok' : 'unsettled';
  return { ok, how, timedOut, events, inFlight, stderr: (r.stderr || '').slice(-2000) };
}

function parseArgs(argv) {
  const a = { from: 0, to: 2000, batch: 200, json: null, strict: false, batchTimeout: 20, caseTimeout: 10, memMb: 2560, print: 15, verbose: false, show: null };
  for (let k = 0; k < argv.length; k++) {
    const v = argv[k + 1];
    switch (argv[k]) {
      case '--from':
        a.from = Number(v), k++;
        break;
      case '--to':
        a.to = Number(v), k++;
        break;
      case '--batch':
        a.batch = Math.max(1, Number(v)), k++;
        break;
      case '--json':
        a.json = v, k++;
        break;
      case '--batch-timeout':
        a.batchTimeout = Number(v), k++;
        break;
      case '--case-timeout':
        a.caseTimeout = Number(v), k++;
        break;
      case '--mem-mb':
        a.memMb = Number(v), k++;
        break;
      case '--print':
        a.print = Number(v), k++;
        break;
      case '--show':
        a.show = Number(v), k++;
        break;
      case '--strict':
        a.strict = true;
        break;
      case '--verbose':
        a.verbose = true;
        break;
      default:
        throw new Error(`fuzz: unknown argument ${argv[k]}`);
    }
  }
  if (!Number.isSafeInteger(a.from) || !Number.isSafeInteger(a.to) || a.from < 0 || a.to < a.from) throw new Error('fuzz: --from/--to must be integers with 0 <= from <= to');
  return a;
}

function parent(a) {
  const t0 = Date.now();
  const crashes = [];
  const hangs = [];
  const nonrx = new Map(); // seed -> finding
  const internal = new Map();
  const slow = [];
  const leaks = new Map(); // seed -> tensors left alive after the case
  const codes = {};
  let okCases = 0;
  let live = 0;

  const outcomes = new Map(); // seed -> its 'end' event (the first run of it that finished)
  const record = (events) => {
    for (const e of events) {
      if (e.t === 'done') live = Math.max(live, e.live ?? 0);
      if (e.t === 'leak' && !leaks.has(e.i)) leaks.set(e.i, e.n);
      if (e.t !== 'end' || outcomes.has(e.i)) continue;
      outcomes.set(e.i, e);
      if (e.ms > 1000) slow.push({ seed: e.i, ms: e.ms });
      if (e.nonrx) nonrx.set(e.i, { seed: e.i, op: e.op, cls: e.nonrx, msg: e.msg });
      else if (e.code) {
        codes[e.code] = (codes[e.code] || 0) + 1;
        if (e.msg) internal.set(e.i, { seed: e.i, code: e.code, msg: e.msg });
      } else okCases++;
      if (a.verbose) console.log(`case ${e.i}: ${e.nonrx ? `${e.nonrx}: ${e.msg}` : e.code || 'ok'} (${e.ms} ms)`);
    }
  };
  const report = (seed, res, note = '') => {
    const src = gen(seed).src;
    const f = { seed, how: res.how, op: gen(seed).op, src, note, stderr: res.stderr.split('\n').filter(Boolean).slice(-3).join(' | ') };
    if (res.how === 'timeout' || res.how === 'unsettled') {
      hangs.push(f);
      console.log(`HANG seed=${seed}${res.how === 'unsettled' ? ' (exited with a promise never settled)' : ''}${note} :: ${src}`);
    } else {
      crashes.push(f);
      console.log(`CRASH seed=${seed} signal=${res.how}${note} :: ${src}`);
      if (f.stderr) console.log(`  stderr: ${f.stderr.slice(0, 300)}`);
    }
  };

  for (let b = a.from; b < a.to; b += a.batch) {
    const e = Math.min(b + a.batch, a.to);
    let start = b;
    while (start < e) {
      const res = runChild(start, e, a.batchTimeout * 1000, a.memMb);
      record(res.events);
      if (res.ok) break;
      // The case in flight when the child died (or the first one, if it died before any started).
      const suspect = res.inFlight ?? start;
      const alone = runChild(suspect, suspect + 1, a.caseTimeout * 1000, a.memMb);
      if (!alone.ok) {
        report(suspect, alone);
      } else if (res.timedOut) {
        // Finished alone within the case timeout: slow, or slow only after the cases before it.
        record(alone.events);
        const ms = alone.events.find((x) => x.t === 'end')?.ms;
        report(suspect, res, ` (only in its batch from seed ${start}; ${ms} ms alone)`);
      } else {
        record(alone.events);
        // Not reproducible alone: replay the batch up to the suspect, case by case.
        let found = false;
        for (let i = start; i < suspect && !found; i++) {
          const one = runChild(i, i + 1, a.caseTimeout * 1000, a.memMb);
          if (!one.ok) {
            report(i, one);
            found = true;
          }
        }
        if (!found) report(suspect, res, suspect > start ? ` (only after seeds ${start}..${suspect - 1} in one process)` : ' (not reproducible alone)');
      }
      start = suspect + 1;
    }
  }

  const seconds = (Date.now() - t0) / 1000;
  // Non-ResnextErrors, one line per (op, class, message shape), with a count.
  // Non-ResnextErrors, one line per (class, message shape), with a count and the ops they came from.
  const groups = new Map();
  for (const f of nonrx.values()) {
    const key = `${f.cls}: ${f.msg.replace(/\d+/g, 'N').replace(/"[^"]*"/g, '"…"').slice(0, 100)}`;
    const grp = groups.get(key);
    if (grp) {
      grp.n++;
      grp.ops.add(f.op);
    } else groups.set(key, { ...f, n: 1, ops: new Set([f.op]) });
  }
  const sorted = [...groups.values()].sort((x, y) => y.n - x.n);
  sorted.slice(0, a.print).forEach((f) => {
    console.log(`NONRX seed=${f.seed} ${f.cls}: ${f.msg.slice(0, 120)} (x${f.n}, ops ${[...f.ops].join(',')}) :: ${gen(f.seed).src}`);
  });
  if (sorted.length > a.print) console.log(`... ${sorted.length - a.print} more kinds of non-ResnextError (see --json)`);
  for (const f of [...internal.values()].slice(0, 5)) console.log(`NOTE seed=${f.seed} ResnextError ${f.code}: ${f.msg}`);
  for (const s of slow.slice(0, 5)) console.log(`SLOW seed=${s.seed} ${s.ms} ms :: ${gen(s.seed).src}`);
  const leakOps = new Map();
  for (const [seed, k] of leaks) if (!leakOps.has(gen(seed).op)) leakOps.set(gen(seed).op, { seed, k });
  for (const [op, { seed, k }] of [...leakOps].slice(0, a.print)) console.log(`LEAK seed=${seed} op=${op} ${k} tensor(s) left alive :: ${gen(seed).src}`);
  const n = a.to - a.from;
  console.log(`outcomes: ok ${okCases}, ${Object.entries(codes).sort().map(([k, v]) => `${k} ${v}`).join(', ')}; ${leaks.size} cases left tensors alive (at most ${live} after a batch)`);
  console.log(`fuzz: ${n} cases, ${crashes.length} crashes, ${hangs.length} hangs, ${nonrx.size} non-ResnextErrors, ${seconds.toFixed(1)} s`);
  if (a.json) {
    const out = { from: a.from, to: a.to, cases: n, seconds, crashes, hangs, nonResnextErrors: [...nonrx.values()].map((f) => ({ ...f, src: gen(f.seed).src })), kinds: sorted.map((f) => ({ seed: f.seed, ops: [...f.ops], cls: f.cls, msg: f.msg, count: f.n })), internal: [...internal.values()], slow, leaks: [...leaks].map(([seed, n]) => ({ seed, n, src: gen(seed).src })), codes, ok: okCases };
    fs.writeFileSync(a.json, JSON.stringify(out, null, 2));
  }
  return crashes.length || hangs.length || (a.strict && nonrx.size) ? 1 : 0;
}

function main() {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') {
    child(Number(argv[1]), Number(argv[2])).then(
      () => process.exit(0),
      (e) => {
        // The harness itself failed (not a case): say so and exit distinctly.
        fs.writeSync(2, `fuzz child harness error: ${e?.stack}\n`);
        process.exit(3);
      },
    );
    return;
  }
  const a = parseArgs(argv);
  if (a.show !== null) {
    console.log(gen(a.show).src);
    return;
  }
  process.exitCode = parent(a);
}

module.exports = { gen, mulberry32, caseRng };
if (require.main === module) main();
