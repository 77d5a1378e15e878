#!/usr/bin/env node
// A seeded fuzzer of the public API: random and hostile calls to the ops and creation functions,
// in batches, each batch in a child process so a crash (a signal) or a hang (a timeout) is
// caught; the failing batch is then replayed case by case to print a one-line reproducer.
//   node test/fuzz/api-fuzz.js --from 0 --to 2000 [--batch 250] [--strict]
// Prints `fuzz: N cases, C crashes, H hangs, E non-ResnextErrors, T s`; exits 1 on a crash or
// a hang (and with --strict on a non-ResnextError too). Case i depends only on i.
const { spawnSync } = require('node:child_process');
const path = require('node:path');

// RESNEXT_FUZZ_DIST: fuzz another build (e.g. an older checkout's dist/index.js).
const dist = process.env.RESNEXT_FUZZ_DIST || path.join(__dirname, '..', '..', 'dist', 'index.js');

// ---------------------------------------------------------------- the generator

function rng(seed) {
  // mulberry32
  let a = (seed * 2654435761) >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const HOSTILE_NUMBERS = ['0', '-1', 'NaN', 'Infinity', '-Infinity', '2 ** 31', '2 ** 53', '1e9', '1.5', '-(2 ** 31)'];
const HOSTILE_VALUES = ['undefined', 'null', '"x"', '{}', '[]', '[1, 2, 3]', '() => 1', 'true'];

function gen(i) {
  const r = rng(i + 1);
  const pick = (xs) => xs[Math.floor(r() * xs.length)];
  const int = (lo, hi) => lo + Math.floor(r() * (hi - lo + 1));
  const hostile = () => r() < 0.15;
  const num = (lo, hi) => (hostile() ? pick(HOSTILE_NUMBERS) : String(int(lo, hi)));
  // Hostile sizes: negative, fractional, beyond memory (2^40 floats), not exactly representable.
  // (A valid size that fits in memory, such as 2^31, is merely slow: left out.)
  const dim = () => (r() < 0.12 ? '0' : r() < 0.05 ? pick(['-1', '2 ** 40', '1.5', '2 ** 53']) : String(int(1, 6)));
  const shape = (n) => `[${Array.from({ length: n ?? int(0, 4) }, dim).join(', ')}]`;
  const dtype = () => (r() < 0.8 ? '' : `, { dtype: ${pick(['"float64"', '"int32"', '"bfloat16"', '"float16"', '5'])} }`);
  const t = (n) => {
    if (r() < 0.06) return pick(HOSTILE_VALUES);
    if (r() < 0.04) return `(() => { const z = rx.zeros(${shape(n)}); z.dispose(); return z; })()`;
    return `rx.${pick(['randn', 'rand', 'zeros', 'ones'])}(${shape(n)}${dtype()})`;
  };
  const size = (lo, hi) => (hostile() ? pick(['0', '-1', '1.5', '2 ** 40', 'NaN']) : String(int(lo, hi)));
  const t4 = () => `rx.randn([${size(0, 3)}, ${size(0, 4)}, ${size(0, 9)}, ${size(0, 9)}]${dtype()})`;
  const pair = () => (r() < 0.5 ? num(0, 3) : `[${num(0, 3)}, ${num(0, 3)}]`);
  // Channel counts for the BN parameters come from size(): a hostile count is invalid or beyond
  // memory (2^40), never a valid multi-GB tensor (ones([2 ** 31]) is 8 GB of real work).
  const bnOpts = (c) =>
    `{ weight: rx.ones([${c}]), bias: rx.zeros([${c}]), runningMean: rx.zeros([${c}]), runningVar: rx.ones([${c}]), training: ${pick(['true', 'false', '1'])}, momentum: ${pick(['0.1', '2', 'NaN'])}, eps: ${pick(['1e-5', '0', 'Infinity'])} }`;
  const ops = [
    () => `rx.${pick(['zeros', 'ones', 'empty', 'randn', 'rand'])}(${r() < 0.9 ? shape() : pick(HOSTILE_VALUES)}${dtype()})`,
    () => `rx.full(${shape()}, ${num(-3, 3)})`,
    () => `rx.tensor(${pick(['[1, 2, 3]', '[[1, 2], [3]]', '[]', 'new Float32Array(4)', '5', '"x"'])}, ${r() < 0.5 ? 'undefined' : shape()})`,
    () => `rx.${pick(['zerosLike', 'onesLike', 'clone', 'relu', 'neg', 'exp', 'log', 'sqrt', 'abs', 'flatten'])}(${t()})`,
    () => `rx.${pick(['add', 'sub', 'mul', 'div', 'maximum'])}(${r() < 0.2 ? num(-2, 2) : t()}, ${r() < 0.3 ? num(-2, 2) : t()})`,
    () => `rx.pow(${t()}, ${num(-2, 3)})`,
    () => `rx.reshape(${t()}, ${r() < 0.3 ? `[${num(-1, 6)}, -1]` : shape()})`,
    () => `rx.permute(${t()}, ${shape()})`,
    () => `rx.expand(${t()}, ${shape()})`,
    () => `rx.cast(${t()}, ${pick(['"float64"', '"float32"', '"int32"', '"bfloat16"', '"x"'])})`,
    () => `rx.${pick(['sum', 'mean'])}(${t()}${r() < 0.5 ? `, ${pick(['0', '-1', '[0, 1]', '5', '1.5', '[]'])}` : ''})`,
    () => `rx.conv2d(${t4()}, rx.randn([${size(0, 4)}, ${size(0, 4)}, ${size(0, 3)}, ${size(0, 3)}]), { stride: ${pair()}, padding: ${pair()}, groups: ${num(1, 2)} })`,
    () => `rx.${pick(['batchNorm2d', 'batchNormReLU'])}(${t4()}, ${bnOpts(size(0, 4))})`,
    () => `rx.batchNormAddReLU(${t4()}, ${t4()}, ${bnOpts(size(0, 4))})`,
    () => {
      const k = size(0, 4);
      return `rx.conv2dBatchNorm(${t4()}, rx.randn([${k}, ${size(0, 4)}, ${size(0, 3)}, ${size(0, 3)}]), { stride: ${pair()}, padding: ${pair()}, groups: ${num(1, 2)} }, ${bnOpts(r() < 0.8 ? k : size(0, 4))}, ${pick(["'none'", "'relu'", "'addRelu'", "'x'", 'undefined'])}, ${r() < 0.5 ? t4() : 'null'})`;
    },
    () => `rx.maxPool2d(${t4()}, ${pair()}, { stride: ${pair()}, padding: ${pair()} })`,
    () => `rx.globalAvgPool2d(${t4()})`,
    () => `rx.linear(${t(2)}, ${t(2)}, ${r() < 0.5 ? 'undefined' : t(1)})`,
    () => `rx.matmul(${t(2)}, ${t(2)}, { transposeA: ${pick(['true', 'false'])}, transposeB: ${pick(['true', 'false', '1'])} })`,
    () => `rx.crossEntropy(rx.randn([${size(0, 4)}, ${size(0, 4)}]), ${pick(['[0, 1]', '[0, 9]', '[-1]', 'new Int32Array(3)', 'rx.zeros([2])', '[1.5]', '[]'])})`,
    () => `rx.${pick(['topk', 'argmax'])}(${t(2)}, ${num(0, 4)})`,
    () => `rx.sgdStep(${t()}, ${t()}, { lr: ${num(0, 1)}, momentum: ${pick(['0', '0.9', 'NaN'])}, momentumBuffer: ${r() < 0.5 ? 'undefined' : t()}, nesterov: ${pick(['true', 'false'])} })`,
  ];
  const call = pick(ops)();
  const tail = pick(['', '.dataSync()', '.backward()', 'BACKWARD']);
  if (tail === 'BACKWARD') return `{ const g = ${call.replace(/rx\.randn\(\[([^\]]*)\]\)/, 'rx.randn([$1], { requiresGrad: true })')}; rx.sum(g).backward(); }`;
  return `${call}${tail}`;
}

// ---------------------------------------------------------------- running

function runCases(from, to) {
  const rx = require(dist);
  const odd = [];
  for (let i = from; i < to; i++) {
    const src = gen(i);
    try {
      rx.tidy(() => {
        new Function('rx', src)(rx);
      });
      rx.synchronize();
    } catch (e) {
      if (!(e instanceof rx.ResnextError)) odd.push(`NONRX seed=${i} ${e && e.constructor ? e.constructor.name : typeof e}: ${String(e && e.message).slice(0, 80)} :: ${src}`);
    }
  }
  return odd;
}

function child(from, to, timeoutMs) {
  const r = spawnSync(process.execPath, [__filename, '--child', String(from), String(to)], {
    encoding: 'utf8',
    timeout: timeoutMs,
    maxBuffer: 64 << 20,
  });
  const timedOut = r.error && r.error.code === 'ETIMEDOUT';
  return { ok: r.status === 0 && !timedOut, signal: r.signal, timedOut, stdout: r.stdout || '', stderr: r.stderr || '' };
}

function main() {
  const args = process.argv.slice(2);
  if (args[0] === '--child') {
    for (const line of runCases(Number(args[1]), Number(args[2]))) console.log(line);
    return;
  }
  const opt = (name, dflt) => {
    const k = args.indexOf(name);
    return k >= 0 ? Number(args[k + 1]) : dflt;
  };
  const from = opt('--from', 0);
  const to = opt('--to', 2000);
  const batch = opt('--batch', 250);
  const strict = args.includes('--strict');
  const t0 = Date.now();
  let crashes = 0;
  let hangs = 0;
  const odd = new Set();
  for (let b = from; b < to; b += batch) {
    const e = Math.min(b + batch, to);
    const res = child(b, e, 60_000);
    for (const l of res.stdout.split('\n').filter((x) => x.startsWith('NONRX'))) odd.add(l);
    if (res.ok) continue;
    // Replay the batch case by case to isolate the culprit(s).
    for (let i = b; i < e; i++) {
      const one = child(i, i + 1, 20_000);
      if (one.ok) continue;
      if (one.timedOut) hangs++;
      else crashes++;
      console.log(`${one.timedOut ? 'HANG' : 'CRASH'} seed=${i} signal=${one.signal ?? 'exit'} :: ${gen(i)}`);
    }
  }
  for (const l of odd) console.log(l);
  const s = ((Date.now() - t0) / 1000).toFixed(1);
  console.log(`fuzz: ${to - from} cases, ${crashes} crashes, ${hangs} hangs, ${odd.size} non-ResnextErrors, ${s} s`);
  process.exitCode = crashes || hangs || (strict && odd.size) ? 1 : 0;
}

module.exports = { gen };
if (require.main === module) main();
