#!/usr/bin/env node
'use strict';
// npm run bench:peers -- ours against PyTorch (eager fp32) and onnxruntime-node (CPU EP) on the
// workloads of issue 12, measured side by side on the same cores.
//
// Every side runs in its own long-lived worker process (node_worker.js for ours and for
// onnxruntime, torch_worker.py for PyTorch), one fresh set of workers per workload, all children
// of this process. After the warm-up steps the timed steps alternate between the workers (the
// order rotates every round, with a short pause between steps), so load from other jobs on the
// machine falls on every side alike. Each worker times its own step (the IPC is not timed); same
// thread count on every side (default 2). Reported: medians with [min-max], the ratio of our
// speed to the peer's (> 1: ours faster), peak RSS (VmHWM) of each worker, the CPU model and
// ISA, and the load average at the start and end. Each step's process CPU time is recorded as
// well: on a loaded machine it tracks the work done better than wall time for our workers (our
// pool blocks instead of spinning), but not across sides (OpenMP and onnxruntime threads spin). JSON goes to bench/results/peers-<time>.json.
//
// PyTorch is never a dependency of the package: it lives in a venv under .cache/torch-venv,
// created here on first use (PyPI wheels torch, torchvision, onnx; PEERS_PIP_ARGS adds pip
// options, e.g. "--index-url https://download.pytorch.org/whl/cpu"). onnxruntime-node is a
// devDependency (installed with its CUDA download skipped, see .npmrc). The ONNX models are
// exported from torchvision by the PyTorch worker (opset 18, static shapes) into .cache/peers/.
//
// Usage: node bench/peers/run.js [--quick] [--steps N] [--warmup N] [--threads N]
//          [--only r29-train,r50-train,r50-infer-b1,r50-infer-b16] [--base DIR] [--ops] [--out FILE]
//   --quick   smoke test: small sizes and few steps (well under a minute); not the issue's figures
//   --base    also time a second build of ours (a checkout with dist/ and build/ at DIR): an A/B
//             of two versions of our code in the same alternation
//   --variant NAME:VAR=VAL,...  also time ours with extra environment variables (an A/B of a
//             switch such as RESNEXT_CPU_CACHE_MB=1024 or RESNEXT_CONV_BCAST=0), repeatable
//   --no-peers  ours (and --base / --variant workers) only
//   --ops     also run bench:ops (conv2d vs oneDNN) and add its totals as a row
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const repo = path.resolve(__dirname, '..', '..');
const venv = path.join(repo, '.cache', 'torch-venv');
const venvPy = path.join(venv, 'bin', 'python');
const cacheDir = path.join(repo, '.cache', 'peers');

// ---- options ---------------------------------------------------------------------------------
function parseArgs(argv) {
  const o = { quick: false, steps: null, warmup: null, threads: 2, only: null, base: null, variants: [], noPeers: false, ops: false, out: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`bench:peers: ${a} needs a value`);
      return argv[++i];
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--steps') o.steps = Number(next());
    else if (a === '--warmup') o.warmup = Number(next());
    else if (a === '--threads') o.threads = Number(next());
    else if (a === '--only') o.only = next().split(',');
    else if (a === '--base') o.base = path.resolve(next());
    else if (a === '--variant') {
      // NAME:VAR=VALUE,VAR=VALUE -- one more worker of ours with extra environment variables
      const [name, envs] = next().split(':');
      o.variants.push({ name, env: Object.fromEntries((envs || '').split(',').filter(Boolean).map((kv) => kv.split('='))) });
    } else if (a === '--no-peers') o.noPeers = true;
    else if (a === '--ops') o.ops = true;
    else if (a === '--out') o.out = next();
    else if (a === '--help' || a === '-h') {
      console.log(fs.readFileSync(__filename, 'utf8').split('\n').filter((l) => l.startsWith('//')).map((l) => l.slice(3)).join('\n'));
      process.exit(0);
    } else throw new Error(`bench:peers: unknown option ${a}`);
  }
  if (o.steps === null) o.steps = o.quick ? 3 : 10;
  if (o.warmup === null) o.warmup = 2;
  o.pauseMs = o.quick ? 50 : 150;
  return o;
}

// The issue's table; --quick shrinks images and batches so the whole run is a smoke test.
function workloads(quick) {
  const r29 = { cardinality: 4, width: 4, stemChannels: 32, stageChannels: [64, 128, 256], stemStride: 2 };
  const s = quick ? 64 : 224;
  return [
    { id: 'r29-train', kind: 'train', model: 'resnext29', cfg: r29, inChannels: 1, classes: 10, size: 28, batch: quick ? 32 : 128,
      label: `train ResNeXt-29 C=4 d=4 (stem 32, stages 64/128/256, stem stride 2), 1x28x28, batch ${quick ? 32 : 128}`, unit: 'img/s', peers: ['torch'] },
    { id: 'r50-train', kind: 'train', model: 'resnext50_32x4d', inChannels: 3, classes: 1000, size: s, batch: quick ? 2 : 8,
      label: `train resnext50_32x4d, ${s}x${s}, batch ${quick ? 2 : 8}`, unit: 'img/s', peers: ['torch'] },
    { id: 'r50-infer-b1', kind: 'infer', model: 'resnext50_32x4d', inChannels: 3, classes: 1000, size: s, batch: 1,
      label: `inference resnext50_32x4d, ${s}x${s}, batch 1, latency`, unit: 'ms', peers: ['ort', 'torch'] },
    { id: 'r50-infer-b16', kind: 'infer', model: 'resnext50_32x4d', inChannels: 3, classes: 1000, size: s, batch: quick ? 4 : 16,
      label: `inference resnext50_32x4d, ${s}x${s}, batch ${quick ? 4 : 16}`, unit: 'img/s', peers: ['ort', 'torch'] },
  ];
}

// ---- environment -----------------------------------------------------------------------------
function ensureTorch() {
  const probe = () =>
    fs.existsSync(venvPy) && spawnSync(venvPy, ['-c', 'import torch, torchvision, onnx'], { stdio: 'ignore' }).status === 0;
  if (probe()) return;
  console.log(`bench:peers: creating ${path.relative(repo, venv)} (PyTorch CPU from PyPI; a few minutes, once)`);
  const run = (cmd, args) => {
    const r = spawnSync(cmd, args, { stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`bench:peers: ${cmd} ${args.join(' ')} failed (exit ${r.status})`);
  };
  if (!fs.existsSync(venvPy)) run('python3', ['-m', 'venv', venv]);
  const extra = (process.env.PEERS_PIP_ARGS || '').split(/\s+/).filter(Boolean);
  run(venvPy, ['-m', 'pip', 'install', '--disable-pip-version-check', ...extra, 'torch', 'torchvision', 'onnx']);
  if (!probe()) throw new Error('bench:peers: torch, torchvision and onnx still do not import in the venv');
}

function ensureOrt() {
  try {
    require.resolve('onnxruntime-node', { paths: [repo] });
    return;
  } catch {}
  console.log('bench:peers: installing onnxruntime-node (devDependency; CUDA download skipped)');
  const r = spawnSync('npm', ['install', '--no-save', '--onnxruntime-node-install=skip', 'onnxruntime-node'], { cwd: repo, stdio: 'inherit' });
  if (r.status !== 0) throw new Error('bench:peers: npm install onnxruntime-node failed');
}

function cpuInfo() {
  const txt = fs.readFileSync('/proc/cpuinfo', 'utf8');
  const model = (txt.match(/^model name\s*:\s*(.*)$/m) || [])[1] || os.cpus()[0]?.model || 'unknown';
  const flags = ((txt.match(/^flags\s*:\s*(.*)$/m) || [])[1] || '').split(' ');
  const isa = ['avx2', 'fma', 'avx512f', 'avx512_bf16', 'amx_tile'].filter((f) => flags.includes(f));
  return { model, cores: os.cpus().length, isa };
}

const load = () => os.loadavg().map((v) => v.toFixed(2)).join(' ');

function peakRssMiB(pid) {
  try {
    const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmHWM:\s*(\d+) kB/m);
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

// ---- workers ---------------------------------------------------------------------------------
// Every live worker, so a signal to this process takes its workers down with it.
const live = new Set();
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'])
  process.on(sig, () => {
    for (const p of live) p.kill('SIGKILL');
    process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1));
  });

class Worker {
  constructor(name, cmd, args, env) {
    this.name = name;
    this.proc = spawn(cmd, args, { cwd: repo, env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    live.add(this.proc);
    this.proc.on('exit', () => live.delete(this.proc));
    this.queue = [];
    this.stderr = '';
    this.proc.stderr.on('data', (d) => {
      this.stderr = (this.stderr + d).slice(-4000);
    });
    readline.createInterface({ input: this.proc.stdout }).on('line', (line) => {
      const q = this.queue.shift();
      if (!q) return;
      let msg;
      try {
        msg = JSON.parse(line);
      } catch {
        return q.reject(new Error(`${this.name}: bad reply ${line.slice(0, 200)}`));
      }
      if (msg.error) q.reject(new Error(`${this.name}: ${msg.error}`));
      else q.resolve(msg);
    });
    this.proc.on('exit', (code, sig) => {
      for (const q of this.queue.splice(0)) q.reject(new Error(`${this.name} exited (${code ?? sig}): ${this.stderr.trim().slice(-1500)}`));
    });
  }
  call(msg) {
    return new Promise((resolve, reject) => {
      this.queue.push({ resolve, reject });
      this.proc.stdin.write(`${JSON.stringify(msg)}\n`);
    });
  }
  get pid() {
    return this.proc.pid;
  }
  async quit() {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const done = new Promise((r) => this.proc.once('exit', r));
    this.proc.stdin.end(`${JSON.stringify({ cmd: 'quit' })}\n`);
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
    await done;
    clearTimeout(t);
  }
}

function makeWorker(side, o) {
  const t = String(o.threads);
  const common = { OMP_NUM_THREADS: t, MKL_NUM_THREADS: t };
  if (side === 'torch') return new Worker('PyTorch', venvPy, [path.join(__dirname, 'torch_worker.py'), t], common);
  if (side === 'ort') return new Worker('onnxruntime', process.execPath, [path.join(__dirname, 'node_worker.js'), 'ort', t], common);
  const root = side === 'base' ? o.base : repo;
  const variant = side.startsWith('var:') ? o.variants.find((v) => `var:${v.name}` === side) : null;
  return new Worker(side === 'base' ? 'ours@base' : variant ? `ours:${variant.name}` : 'ours', process.execPath,
    [path.join(__dirname, 'node_worker.js'), 'ours', t], { ...common, RESNEXT_NUM_THREADS: t, RX_ROOT: root, ...(variant ? variant.env : {}) });
}

const busyWait = (ms) => {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // spin
  }
};

async function exportOnnx(w, o) {
  fs.mkdirSync(cacheDir, { recursive: true });
  const file = path.join(cacheDir, `${w.model}-b${w.batch}-${w.size}.onnx`);
  if (fs.existsSync(file)) return file;
  const t = makeWorker('torch', o);
  try {
    await t.call({ cmd: 'export', model: w.model, classes: w.classes, inChannels: w.inChannels, batch: w.batch, size: w.size, path: `${file}.tmp` });
  } finally {
    await t.quit();
  }
  fs.renameSync(`${file}.tmp`, file);
  return file;
}

function stats(ms) {
  const s = [...ms].sort((a, b) => a - b);
  const n = s.length;
  const median = n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
  return { median, min: s[0], max: s[n - 1], n };
}

async function runWorkload(w, o) {
  const sides = ['ours', ...(o.base ? ['base'] : []), ...o.variants.map((v) => `var:${v.name}`), ...(o.noPeers ? [] : w.peers)];
  if (sides.includes('ort')) w.onnx = await exportOnnx(w, o);
  const workers = Object.fromEntries(sides.map((s) => [s, makeWorker(s, o)]));
  const info = {};
  const load0 = load();
  try {
    for (const s of sides) info[s] = await workers[s].call({ cmd: 'hello' });
    // Setup one after another (model construction is not timed, but keeps peaks apart).
    for (const s of sides) await workers[s].call({ cmd: 'setup', workload: w });
    const samples = Object.fromEntries(sides.map((s) => [s, []]));
    const cpu = Object.fromEntries(sides.map((s) => [s, []]));
    const rounds = o.warmup + o.steps;
    for (let r = 0; r < rounds; r++) {
      const order = sides.map((_, i) => sides[(i + r) % sides.length]);
      for (const s of order) {
        const rep = await workers[s].call({ cmd: 'step' });
        if (!Number.isFinite(rep.value)) throw new Error(`${workers[s].name}: step returned ${rep.value}`);
        if (r >= o.warmup) samples[s].push(rep.ms), cpu[s].push(rep.cpuMs);
        // Let the previous worker's thread pool stop spinning (onnxruntime and OpenMP spin
        // for a while after a run) before the next side's step starts. This process busy-waits
        // through the pause: with every thread of a small VM asleep for 5 ms or more, the next
        // few milliseconds ran as if it had one core (bench/ops/bench_ops.cc measured it), which
        // fell on whichever side stepped next.
        busyWait(o.pauseMs);
      }
    }
    const res = {};
    for (const s of sides) {
      const st = stats(samples[s]);
      const perImg = (ms) => (1000 * w.batch) / ms;
      res[s] = {
        ms: st, samples: samples[s], cpuMs: stats(cpu[s]), cpuSamples: cpu[s], peakRssMiB: peakRssMiB(workers[s].pid), info: info[s],
        imgPerSec: { median: perImg(st.median), min: perImg(st.max), max: perImg(st.min) },
      };
    }
    return { workload: w, sides: res, loadStart: load0, loadEnd: load() };
  } finally {
    await Promise.all(Object.values(workers).map((x) => x.quit()));
  }
}

// ---- report ----------------------------------------------------------------------------------
const NAMES = new Proxy({ ours: 'ours', base: 'ours@base', torch: 'PyTorch', ort: 'onnxruntime' }, {
  get: (t, k) => t[k] ?? (typeof k === 'string' && k.startsWith('var:') ? `ours:${k.slice(4)}` : k),
});
const f1 = (v) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));

function cell(r, unit) {
  const v = unit === 'ms' ? r.ms : r.imgPerSec;
  return `${f1(v.median)} [${f1(v.min)}-${f1(v.max)}]`;
}

function table(results, opsRow) {
  const lines = [
    '| workload | ours | peers | ours/peer speed | CPU ms/step (ours; peers) | peak RSS MiB (ours; peers) | load start-end |',
    '| --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of results) {
    const w = r.workload;
    const ours = r.sides.ours;
    const others = Object.keys(r.sides).filter((s) => s !== 'ours');
    const peers = others.map((s) => `${NAMES[s]} ${cell(r.sides[s], w.unit)}`).join('; ');
    // Speed ratio = peer time / our time (> 1: ours faster), from the medians.
    const ratios = others.map((s) => `vs ${NAMES[s]} ${(r.sides[s].ms.median / ours.ms.median).toFixed(2)}`).join('; ');
    const rss = `${f1(ours.peakRssMiB ?? NaN)}; ${others.map((s) => `${NAMES[s]} ${f1(r.sides[s].peakRssMiB ?? NaN)}`).join(', ')}`;
    const cpu = `${f1(ours.cpuMs.median)}; ${others.map((s) => `${NAMES[s]} ${f1(r.sides[s].cpuMs.median)}`).join(', ')}`;
    lines.push(`| ${w.label} (${w.unit}) | ${cell(ours, w.unit)} | ${peers} | ${ratios} | ${cpu} | ${rss} | ${r.loadStart.split(' ')[0]}-${r.loadEnd.split(' ')[0]} |`);
  }
  if (opsRow) lines.push(opsRow);
  return lines.join('\n');
}

function runOps() {
  const r = spawnSync('bash', [path.join(repo, 'bench/ops/run.sh')], { cwd: repo, stdio: 'inherit', env: { ...process.env, BENCH_REPS: process.env.BENCH_REPS || '5' } });
  if (r.status !== 0) throw new Error('bench:peers: bench:ops failed');
  const j = JSON.parse(fs.readFileSync(path.join(repo, 'bench/results/ops.json'), 'utf8'));
  const all = j.totals.find((t) => t.dir === 'all3');
  const ok = j.results.filter((x) => x.ratio >= 0.5).length;
  return {
    json: j,
    row: `| conv2d, all ResNeXt-50 shapes, 3 directions, batch 8 (bench:ops, ${j.kernels}) (ms) | ${all.ours_ms.toFixed(1)} | oneDNN ${all.onednn_ms.toFixed(1)} | vs oneDNN ${all.ratio.toFixed(2)}; ${ok} of ${j.results.length} shape-directions >= 0.5 | | | ${j.loadavg_start}-${j.loadavg_end} |`,
  };
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (!fs.existsSync(path.join(repo, 'dist', 'index.js'))) throw new Error('bench:peers: dist/ is missing: npm run build first');
  ensureTorch();
  ensureOrt();
  const cpu = cpuInfo();
  const start = load();
  const t0 = Date.now();
  console.log(`bench:peers: ${cpu.model}, ${cpu.cores} logical CPUs, ISA ${cpu.isa.join(' ')}; ${o.threads} threads per side`);
  console.log(`ours kernels: RESNEXT_CPU_ISA=${process.env.RESNEXT_CPU_ISA || '(unset: best available)'}; load average at start ${start}`);
  console.log(`${o.quick ? 'QUICK smoke test (small sizes, not the issue figures); ' : ''}${o.warmup} warm-up + ${o.steps} timed steps per side, alternating`);
  let wl = workloads(o.quick);
  if (o.only) wl = wl.filter((w) => o.only.includes(w.id));
  const results = [];
  for (const w of wl) {
    process.stdout.write(`  ${w.id} ... `);
    const r = await runWorkload(w, o);
    results.push(r);
    const parts = Object.entries(r.sides).map(([s, v]) => `${NAMES[s]} ${cell(v, w.unit)} ${w.unit} (cpu ${f1(v.cpuMs.median)} ms/step)`);
    console.log(`${parts.join(' | ')} (load ${r.loadStart.split(' ')[0]} -> ${r.loadEnd.split(' ')[0]})`);
  }
  const ops = o.ops ? runOps() : null;
  const end = load();
  const hello = results[0]?.sides;
  const versions = {
    torch: results.find((r) => r.sides.torch)?.sides.torch.info,
    ort: results.find((r) => r.sides.ort)?.sides.ort.info,
    ours: hello?.ours.info,
  };
  console.log('');
  console.log(table(results, ops?.row));
  console.log('');
  console.log(`CPU: ${cpu.model} (${cpu.cores} logical CPUs; ${cpu.isa.join(' ')}); ours ISA cap ${process.env.RESNEXT_CPU_ISA || 'none (AVX-512 kernels where present)'}; ` +
    `PyTorch ${versions.torch?.torch ?? '-'} (cpu capability ${versions.torch?.isa ?? '-'}); onnxruntime-node ${versions.ort?.ort ?? '-'}`);
  console.log(`load average (1/5/15 min): start ${start}, end ${end}; ${((Date.now() - t0) / 1000).toFixed(0)} s. Medians [min-max] of ${o.steps} steps; ` +
    'ratio = peer median time / our median time (> 1: ours faster). The machine may be shared: compare ratios, not absolute figures.');
  const out = o.out || path.join(repo, 'bench', 'results', `peers-${o.quick ? 'quick-' : ''}${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify({ schema: 'resnext-bench-peers/1', createdAt: new Date().toISOString(), options: o, cpu, versions,
    loadStart: start, loadEnd: end, results, ops: ops?.json ?? null }, null, 2));
  console.log(`wrote ${path.relative(repo, out)}`);
}

main().catch((e) => {
  console.error(e.message || e);
  process.exit(1);
});
