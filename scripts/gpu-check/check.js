#!/usr/bin/env node
// The GPU check's cases, run from compiled JavaScript (dist/) with plain Node: there is no npm,
// jest or network on the GPU machine. run.sh calls it once per suite:
//
//   node check.js --suite ops|bottleneck|resnext50|big|oom [--as NAME] [--resume]
//
// Every case prints a start line before it runs, has its own time limit (a watchdog thread
// records a timeout and kills the process when a native call hangs; run.sh then restarts the
// suite with --resume, which skips the cases already recorded) and appends one JSON line to
// $GPU_CHECK_OUT/results.jsonl: {suite, case, status: pass|fail|error|skip|timeout, ms, detail, data}.
// A case that leaves the CUDA context unusable (a kernel fault) ends the process with exit code
// 3 so run.sh restarts the suite in a fresh process and the remaining cases still run.
//
// GPU_CHECK_DRY_RUN=1 runs every suite on the CPU (device 'cpu' stands in for 'cuda', sizes
// shrink, PyTorch runs only if it is importable, else our CPU result stands in for its output
// file), so that CI tests this script, its exchange files and its report on every commit.

const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { Worker } = require('node:worker_threads');

const root = path.resolve(__dirname, '..', '..');
const rx = require(path.join(root, 'dist', 'index.js'));

const argv = process.argv.slice(2);
const arg = (name, def) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : def;
};
const SUITE = arg('--suite', 'ops');
const AS = arg('--as', SUITE);
const RESUME = argv.includes('--resume');
const DRY = process.env.GPU_CHECK_DRY_RUN === '1';
const DEV = DRY ? 'cpu' : 'cuda';
const AMP = DRY ? 'float32' : 'bfloat16'; // the CPU backend computes in float32
const OUT = path.resolve(process.env.GPU_CHECK_OUT || path.join(root, '.device', 'gpu-check-out'));
const RESULTS = path.join(OUT, 'results.jsonl');
// Large exchange files (the bottleneck's inputs and PyTorch's results: about 1.3 GB at batch 64)
// stay out of OUT, which comes back from the GPU machine.
const SCRATCH = path.resolve(process.env.GPU_CHECK_SCRATCH || path.join(require('node:os').tmpdir(), 'resnext-gpu-check'));
const PY = process.env.GPU_CHECK_PYTHON || 'python3';
fs.mkdirSync(OUT, { recursive: true });

const say = (line) => process.stdout.write(`${line}\n`);
const record = (rec) => fs.appendFileSync(RESULTS, `${JSON.stringify(rec)}\n`);

// ------------------------------------------------------------------ watchdog

// A worker thread that waits on shared memory: the main thread bumps a sequence number at each
// case's start (odd) and end (even). If a case is still running when its limit passes, the
// worker records a timeout and SIGKILLs the process (a synchronous native call cannot be
// interrupted otherwise).
const ctl = new Int32Array(new SharedArrayBuffer(8));
const nameBuf = new Uint8Array(new SharedArrayBuffer(512));
const watchdog = new Worker(
  `
  const { workerData } = require('node:worker_threads');
  const fs = require('node:fs');
  const ctl = new Int32Array(workerData.ctl), nameBuf = new Uint8Array(workerData.name);
  for (;;) {
    const s = Atomics.load(ctl, 0);
    if (s < 0) break;
    if (s % 2 === 0) { Atomics.wait(ctl, 0, s); continue; }
    const limit = Atomics.load(ctl, 1);
    if (Atomics.wait(ctl, 0, s, limit * 1000) === 'timed-out') {
      const name = Buffer.from(nameBuf).toString('utf8').replace(/\\0.*$/s, '');
      const rec = { suite: workerData.suite, case: name, status: 'timeout', ms: limit * 1000,
        detail: 'no result within ' + limit + ' s (the process was killed; run.sh resumes after it)' };
      fs.appendFileSync(workerData.results, JSON.stringify(rec) + '\\n');
      fs.writeSync(1, 'timeout ' + workerData.suite + '/' + name + ' after ' + limit + ' s: killing the process\\n');
      process.kill(process.pid, 'SIGKILL');
    }
  }`,
  { eval: true, workerData: { ctl: ctl.buffer, name: nameBuf.buffer, results: RESULTS, suite: AS } },
);
watchdog.unref();
let seq = 0;
function watchStart(name, limitS) {
  nameBuf.fill(0);
  nameBuf.set(Buffer.from(name.slice(0, 500), 'utf8'));
  Atomics.store(ctl, 1, limitS);
  Atomics.store(ctl, 0, ++seq % 2 ? seq : ++seq);
  Atomics.notify(ctl, 0);
}
function watchStop() {
  Atomics.store(ctl, 0, ++seq % 2 ? ++seq : seq);
  Atomics.notify(ctl, 0);
}

// ------------------------------------------------------------------ cases

const done = new Set();
if (RESUME && fs.existsSync(RESULTS))
  for (const line of fs.readFileSync(RESULTS, 'utf8').split('\n'))
    if (line.trim())
      try {
        const r = JSON.parse(line);
        if (r.suite === AS) done.add(r.case);
      } catch {}

let failed = 0;
// fn returns { ok, detail?, data? } or { skip: reason }.
function runCase(name, limitS, fn) {
  if (done.has(name)) {
    say(`resume ${AS}/${name}: recorded by an earlier attempt`);
    return;
  }
  limitS = Math.ceil(limitS * Math.max(1, Number(process.env.GPU_CHECK_LIMIT_SCALE) || 1)); // compute-sanitizer is slow
  say(`start ${AS}/${name} (limit ${limitS} s)`);
  const t = Date.now();
  let rec;
  watchStart(name, limitS);
  try {
    const r = fn();
    rec = r.skip ? { status: 'skip', detail: r.skip } : { status: r.ok ? 'pass' : 'fail', detail: r.detail, data: r.data };
  } catch (e) {
    rec = { status: 'error', detail: `${e?.code ? `${e.code}: ` : ''}${e?.message ?? e}` };
  }
  watchStop();
  rec = { suite: AS, case: name, ms: Date.now() - t, ...rec };
  record(rec);
  if (rec.status === 'fail' || rec.status === 'error') failed++;
  say(`${rec.status.padEnd(5)} ${AS}/${name} (${rec.ms} ms)${rec.detail ? `  ${rec.detail}` : ''}`);
  if (rec.status === 'error' && /context is unusable/.test(rec.detail)) {
    say(`gpu-check: the CUDA context is lost; exiting so that run.sh resumes ${AS} in a fresh process`);
    process.exit(3);
  }
}

const relErr = (a, b) => {
  if (!a || !b || a.length !== b.length) return Infinity;
  let d = 0,
    m = 1e-3;
  for (let i = 0; i < b.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return Number.isNaN(d) ? Infinity : d / m;
};
const host = (t) => Float32Array.from((t.dtype === 'float32' ? t : rx.cast(t, 'float32')).dataSync());
const sync = () => rx.synchronize(DEV);
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
function timeIt(fn, reps, warm = 2) {
  for (let i = 0; i < warm; i++) rx.tidy(fn);
  sync();
  const t = process.hrtime.bigint();
  for (let i = 0; i < reps; i++) rx.tidy(fn);
  sync();
  return Number(process.hrtime.bigint() - t) / 1e6 / reps;
}
function torchAvailable() {
  const r = spawnSync(PY, ['-c', 'import torch, torchvision, safetensors'], { encoding: 'utf8', timeout: 60000 });
  return r.status === 0 ? null : (r.stderr || r.error?.message || 'failed').trim().split('\n').pop();
}
function runPython(args, timeoutS) {
  const r = spawnSync(PY, [path.join(__dirname, 'torch_side.py'), ...args], { encoding: 'utf8', timeout: timeoutS * 1000 });
  fs.appendFileSync(path.join(OUT, 'python.log'), `$ ${PY} torch_side.py ${args.join(' ')}\n${r.stdout}${r.stderr}\n`);
  if (r.status !== 0) throw new Error(`torch_side.py ${args[0]} failed (exit ${r.status}${r.signal ? `, ${r.signal}` : ''}): ${(r.stderr || '').trim().split('\n').slice(-3).join(' | ')}`);
  return r.stdout;
}

// bf16 autocast-like forward: convolutions in AMP precision with weights cast from their fp32
// masters (so gradients land in fp32), batch norm with fp32 parameters and statistics.
const ampConv = (conv, x) =>
  rx.conv2d(x, AMP === 'float32' ? conv.weight : rx.cast(conv.weight, AMP), { stride: conv.stride, padding: conv.padding, groups: conv.groups });
const bnOpts = (m) => ({ weight: m.weight, bias: m.bias, runningMean: m.runningMean, runningVar: m.runningVar, training: m.training, momentum: 0.1, eps: 1e-5 });
function ampBottleneck(b, x) {
  const out = rx.batchNormReLU(ampConv(b.conv1, x), bnOpts(b.bn1));
  const mid = rx.batchNormReLU(ampConv(b.conv2, out), bnOpts(b.bn2));
  const identity = b.downsample ? rx.batchNorm2d(ampConv(b.downsample.at(0), x), bnOpts(b.downsample.at(1))) : x;
  return rx.batchNormAddReLU(ampConv(b.conv3, mid), identity, bnOpts(b.bn3));
}
function ampResNet(m, x) {
  let y = m.maxpool.forward(rx.batchNormReLU(ampConv(m.conv1, x), bnOpts(m.bn1)));
  for (const stage of m.stages) for (let i = 0; i < stage.length; i++) y = ampBottleneck(stage.at(i), y);
  const f = rx.flatten(m.avgpool.forward(y), 1);
  return m.fc.forward(f.dtype === 'float32' ? f : rx.cast(f, 'float32'));
}

// ------------------------------------------------------------------ suites

function suiteOps() {
  const { gpuCases } = require('./cases.js');
  const judge = (res) => {
    const bad = res.filter(([, err, tol]) => !(err <= tol));
    const worst = res.reduce((m, [, err, tol]) => Math.max(m, tol > 0 ? err / tol : err > 0 ? Infinity : 0), 0);
    return { ok: bad.length === 0, detail: `worst err/tol ${worst.toFixed(3)}; ${res.map(([k, err]) => `${k}=${err.toExponential(2)}`).join(' ')}` };
  };
  const cases = gpuCases(rx, { device: DEV });
  for (const c of cases) runCase(c.name, 60, () => judge(c.run()));
  // Batch norm again on our own training kernels (finding 6: the fallback when cuDNN refuses a
  // shape); the backend reads RESNEXT_CUDA_BN_PERSISTENT at each call.
  for (const c of cases.filter((k) => /^batchNorm\w* \S+ train$/.test(k.name)))
    runCase(`${c.name}, own kernels (RESNEXT_CUDA_BN_PERSISTENT=0)`, 60, () => {
      const saved = process.env.RESNEXT_CUDA_BN_PERSISTENT;
      process.env.RESNEXT_CUDA_BN_PERSISTENT = '0';
      try {
        return judge(c.run());
      } finally {
        if (saved === undefined) delete process.env.RESNEXT_CUDA_BN_PERSISTENT;
        else process.env.RESNEXT_CUDA_BN_PERSISTENT = saved;
      }
    });
  if (!DRY)
    runCase('out-of-memory at allocation is ERR_OOM and the process goes on', 30, () => {
      let code = null, msg = '';
      try {
        rx.empty([1 << 20, 1 << 20, 64], { device: 'cuda' });
      } catch (e) {
        code = e?.code;
        msg = e?.message;
      }
      const after = rx.ones([3], { device: 'cuda' }).dataSync()[2];
      return { ok: code === 'ERR_OOM' && after === 1, detail: `${code}: ${msg}` };
    });
  // Finding 10: an upload's host buffer may be freed and reused as soon as the call returns.
  // Each 64 MiB CPU tensor is disposed right after its upload and the next one (likely in the
  // same CPU block) is filled with other values; every device copy must keep its own.
  runCase('uploads: host buffers freed and reused right after each copy', 60, () => {
    const n = DRY ? 1 << 16 : 16 << 20, k = 8, dev = [];
    for (let i = 0; i < k; i++) {
      const h = rx.full([n], i + 1);
      dev.push(rx.to(h, DEV));
      h.dispose();
    }
    // 4-D float uploads take the other path (a staging copy, then NCHW -> NHWC on the device).
    const h4 = rx.full([4, 16, 8, 8], 3);
    const d4 = rx.to(h4, DEV);
    h4.dispose();
    rx.full([4, 16, 8, 8], -1).dispose();
    let bad = 0;
    for (let i = 0; i < k; i++) {
      const v = dev[i].dataSync();
      for (let j = 0; j < n; j += 4099) if (v[j] !== i + 1) bad++;
      if (v[n - 1] !== i + 1) bad++;
      dev[i].dispose();
    }
    const v4 = d4.dataSync();
    if (!v4.every((x) => x === 3)) bad++;
    d4.dispose();
    return { ok: bad === 0, detail: `${bad} wrong samples in ${k} uploads of ${(n * 4) / 2 ** 20} MiB and one 4-D upload` };
  });
  // ResNeXt-29 (issue 4): same weights and batch on the CPU and the device, loss before and
  // after one SGD step. RESNEXT_GPU_CHECK_TRAIN=0 skips it (the sanitizer pass does).
  if (process.env.RESNEXT_GPU_CHECK_TRAIN !== '0')
    runCase('ResNeXt-29 two SGD steps, CPU vs device loss', 120, () => {
      const build = (init) =>
        DRY ? rx.models.resnext29({ cardinality: 2, width: 4, stemChannels: 16, stageChannels: [32, 64, 128], init }) : rx.models.resnext29_8x64d({ init });
      rx.manualSeed(0);
      const ref = build();
      const dut = build('none');
      dut.loadStateDict(ref.stateDict());
      dut.to(DEV);
      const x = rx.randn([16, 3, 32, 32], { seed: 1 });
      const y = Array.from({ length: 16 }, (_, i) => i % 10);
      const opt = (m) => new rx.optim.SGD(m.parameters(), { lr: 0.05, momentum: 0.9, weightDecay: 5e-4 });
      const oRef = opt(ref), oDut = opt(dut);
      const step = (m, o, dev) =>
        rx.tidy(() => {
          const l = rx.crossEntropy(m.forward(dev === 'cpu' ? x : rx.to(x, dev)), y);
          l.backward();
          o.step();
          o.zeroGrad();
          return l.item();
        });
      const rel = [];
      for (let i = 0; i < 2; i++) {
        const a = step(ref, oRef, 'cpu'), b = step(dut, oDut, DEV);
        rel.push(Math.abs(a - b) / Math.abs(a));
      }
      for (const o of [ref, dut, oRef, oDut]) o.dispose();
      x.dispose();
      return { ok: rel.every((r) => r < 2e-2), detail: `loss rel. diff step 1 ${rel[0].toExponential(2)}, step 2 ${rel[1].toExponential(2)}`, data: { rel } };
    });
}

// (a) A ResNeXt-50 stage-1 bottleneck against PyTorch, inputs and weights exchanged as safetensors.
function suiteBottleneck() {
  const N = DRY ? 2 : 64, H = DRY ? 8 : 56;
  const cfg = { inplanes: 256, planes: 64, groups: 32, width_per_group: 4, lr: 0.1, momentum: 0.9, steps: 2 };
  const xch = path.join(SCRATCH, 'exchange');
  fs.mkdirSync(xch, { recursive: true });
  const inFile = path.join(xch, 'bottleneck_in.safetensors'), refFile = path.join(xch, 'bottleneck_torch.safetensors');
  let torchWhy = null;
  const ours = {};
  const timings = {};
  runCase('bottleneck: write inputs', 30, () => {
    rx.manualSeed(3);
    const block = new rx.models.Bottleneck(cfg.inplanes, cfg.planes, 1, null, cfg.groups, cfg.width_per_group);
    // bf16-representable inputs, so both sides start from the same numbers.
    const round = (t) => (AMP === 'float32' ? t : rx.cast(rx.cast(t, 'bfloat16'), 'float32'));
    const t = {};
    for (const [k, v] of Object.entries(block.stateDict())) t[`block.${k}`] = v;
    t.x = round(rx.randn([N, cfg.inplanes, H, H], { seed: 11 }));
    t.gy = round(rx.randn([N, cfg.planes * 4, H, H], { seed: 12 }));
    const meta = Object.fromEntries(Object.entries(cfg).map(([k, v]) => [k, String(v)]));
    rx.io.saveSafetensorsSync(inFile, t, meta);
    block.dispose();
    return { ok: true, detail: `${inFile} ${(fs.statSync(inFile).size / 2 ** 20).toFixed(1)} MiB` };
  });
  runCase('bottleneck: PyTorch side', 180, () => {
    torchWhy = torchAvailable();
    if (torchWhy && DRY) {
      // Dry run without torch: our CPU result in float32 stands in for PyTorch's file, so the
      // exchange and the comparison below still run.
      const r = runOurs('cpu', 'float32', false);
      rx.io.saveSafetensorsSync(refFile, r.tensors, { timings: '{}', env: JSON.stringify({ device: 'stand-in: resnext CPU (no torch here)' }) });
      for (const v of Object.values(r.tensors)) v.dispose();
      return { skip: `PyTorch not importable here (${torchWhy}); our CPU float32 result wrote ${path.basename(refFile)}` };
    }
    if (torchWhy) throw new Error(`PyTorch is not importable: ${torchWhy}`);
    const out = runPython(['bottleneck', inFile, refFile], 170);
    return { ok: true, detail: out.trim().split('\n').pop().slice(0, 400) };
  });
  function runOurs(dev, amp, time) {
    const inp = rx.io.loadSafetensorsSync(inFile);
    const block = new rx.models.Bottleneck(cfg.inplanes, cfg.planes, 1, null, cfg.groups, cfg.width_per_group, { init: 'none' });
    const sd = {};
    for (const [k, v] of Object.entries(inp)) if (k.startsWith('block.')) sd[k.slice(6)] = v;
    block.loadStateDict(sd);
    block.to(dev);
    const opt = new rx.optim.SGD(block.parameters(), { lr: cfg.lr, momentum: cfg.momentum });
    const x = rx.to(inp.x, dev), gyF = rx.to(inp.gy, dev);
    x.requiresGrad = true;
    const gy = amp === 'float32' ? gyF : rx.cast(gyF, amp);
    const tensors = {};
    const keep = (k, t) => {
      const f = t.dtype === 'float32' ? t : rx.cast(t, 'float32');
      tensors[k] = rx.keep(f.device === 'cpu' ? rx.clone(f) : rx.to(f, 'cpu'));
    };
    for (let s = 1; s <= cfg.steps; s++) {
      rx.tidy(() => {
        const xa = amp === 'float32' ? x : rx.cast(x, amp);
        const y = ampBottleneck(block, xa);
        y.backward(gy);
        keep(`step${s}.y`, y);
        keep(`step${s}.grad_input`, x.grad);
        for (const [n, p] of block.namedParameters()) keep(`step${s}.grad.${n}`, p.grad);
        opt.step();
        opt.zeroGrad();
        x.grad?.dispose();
        x.grad = null;
      });
    }
    for (const [n, b] of Object.entries(block.stateDict())) if (/running_(mean|var)$/.test(n)) keep(`final.${n}`, b);
    for (const [n, p] of block.namedParameters()) keep(`final.${n}`, p);
    if (time) {
      // Each convolution direction on its own, the shapes of PyTorch's timing.
      const { native } = require(path.join(root, 'dist', 'native', 'addon.js'));
      const { T } = require(path.join(root, 'dist', 'ops', 'util.js'));
      for (const name of ['conv1', 'conv2', 'conv3']) {
        const conv = block[name];
        const xin = rx.keep(rx.cast(rx.randn([N, conv.weight.shape[1] * conv.groups, H, H], { device: dev }), amp));
        const w = rx.keep(rx.cast(conv.weight, amp));
        const args = { stride: [conv.stride, conv.stride], padding: [conv.padding, conv.padding], groups: conv.groups };
        const o = { stride: conv.stride, padding: conv.padding, groups: conv.groups };
        const yy = rx.keep(rx.conv2d(xin, w, o));
        const reps = DRY ? 2 : 20;
        timings[name] = {
          forward_ms: timeIt(() => rx.conv2d(xin, w, o), reps),
          backward_data_ms: timeIt(() => T(native.conv2dBackwardData(yy.handle, w.handle, [...xin.shape], args)), reps),
          backward_filter_ms: timeIt(() => T(native.conv2dBackwardFilter(yy.handle, xin.handle, [...w.shape], args)), reps),
        };
        for (const t of [xin, w, yy]) t.dispose();
      }
    }
    for (const t of [x, gyF, gy, block, opt, ...Object.values(inp)]) if (t && !t.isDisposed) t.dispose?.();
    return { tensors };
  }
  runCase(`bottleneck: ours on ${DEV} (${AMP}), two steps, conv timings`, 180, () => {
    const r = runOurs(DEV, AMP, true);
    Object.assign(ours, r.tensors);
    return { ok: true, detail: JSON.stringify(timings) };
  });
  runCase('bottleneck: compare with PyTorch', 60, () => {
    if (!fs.existsSync(refFile)) return DRY ? { skip: 'no PyTorch output' } : { ok: false, detail: 'no PyTorch output (see the PyTorch side case and python.log)' };
    const ref = rx.io.loadSafetensorsSync(refFile);
    const hdr = rx.io.readSafetensorsHeader(refFile);
    const meta = hdr.metadata || hdr.__metadata__ || {};
    const tol = (k) => (AMP === 'float32' ? 2e-3 : /\.y$|^final\./.test(k) ? 2e-2 : 5e-2);
    const rows = [];
    for (const k of Object.keys(ref).sort()) {
      const ourT = ours[k];
      const err = ourT ? relErr(host(ourT), host(ref[k])) : Infinity;
      rows.push({ k, err, tol: tol(k), ok: err <= tol(k) });
    }
    const missing = Object.keys(ours).filter((k) => !(k in ref));
    let theirs = {};
    try {
      theirs = JSON.parse(meta.timings || '{}');
    } catch {}
    const conv = Object.keys(timings).map((n) => ({
      conv: n,
      ours: timings[n],
      torch: theirs[n] ?? null,
      ratio: theirs[n] ? Object.fromEntries(['forward_ms', 'backward_data_ms', 'backward_filter_ms'].map((d) => [d, +(timings[n][d] / theirs[n][d]).toFixed(2)])) : null,
    }));
    for (const v of [...Object.values(ref), ...Object.values(ours)]) v.dispose();
    const bad = rows.filter((r) => !r.ok);
    const worst = rows.reduce((a, r) => (r.err / r.tol > a.err / a.tol ? r : a), rows[0] || { err: 0, tol: 1, k: '-' });
    return {
      ok: bad.length === 0 && missing.length === 0 && rows.length > 0,
      detail: `${rows.length} tensors compared, ${bad.length} over tolerance${bad.length ? ` (${bad.slice(0, 6).map((r) => `${r.k}=${r.err.toExponential(2)}`).join(', ')})` : ''}; worst ${worst.k} ${worst.err.toExponential(2)}; reference ${meta.env || '?'}`,
      data: { rows, conv, missing },
    };
  });
}

// (b) One resnext50_32x4d training step at batch 64, fp32 and bf16, against PyTorch in the same
// run; (e) memory() equal after steps 4 and 13.
function suiteResnext50() {
  const B = DRY ? 2 : 64, HW = DRY ? 32 : 224, NCLS = DRY ? 10 : 1000, STEPS = 13, WARM = 3;
  const build = () => (DRY ? rx.models.resnext({ layers: [1, 1, 1, 1], groups: 32, widthPerGroup: 4, numClasses: NCLS }) : rx.models.resnext50_32x4d());
  const ours = {};
  for (const dt of ['float32', AMP === 'float32' ? null : 'bfloat16'].filter(Boolean))
    runCase(`resnext50_32x4d train step, batch ${B}, ${dt}`, 240, () => {
      rx.manualSeed(5);
      const m = build().to(DEV);
      const opt = new rx.optim.SGD(m.parameters(), { lr: 0.1, momentum: 0.9, weightDecay: 1e-4 });
      const x = rx.randn([B, 3, HW, HW], { device: DEV, seed: 7 });
      const xa = dt === 'float32' ? x : rx.keep(rx.cast(x, dt));
      const tgt = rx.tensor(Int32Array.from({ length: B }, (_, i) => (i * 37) % NCLS), [B], { dtype: 'int32', device: DEV });
      const times = [], losses = [], mem = {};
      for (let s = 1; s <= STEPS; s++) {
        const t = process.hrtime.bigint();
        const loss = rx.tidy(() => {
          const l = rx.crossEntropy(dt === 'float32' ? m.forward(xa) : ampResNet(m, xa), tgt);
          l.backward();
          opt.step();
          opt.zeroGrad();
          return l.item();
        });
        times.push(Number(process.hrtime.bigint() - t) / 1e6);
        losses.push(loss);
        if (s === 4 || s === 13) mem[s] = rx.memory(DEV);
      }
      const peak = DRY ? null : rx.deviceInfo().peakReservedBytes;
      for (const o of [m, opt, x, xa, tgt]) if (!o.isDisposed) o.dispose();
      const steady = times.slice(WARM);
      const same = ['tensors', 'bytes', 'storages', 'reservedBytes'].every((k) => mem[4][k] === mem[13][k]);
      ours[dt] = median(steady);
      return {
        ok: losses.every(Number.isFinite) && same,
        detail: `first step ${times[0].toFixed(0)} ms (autotuning), median ${median(steady).toFixed(1)} ms/step = ${((B * 1000) / median(steady)).toFixed(0)} img/s; loss ${losses[0].toFixed(3)} -> ${losses.at(-1).toFixed(3)}; memory() after step 4 ${same ? '==' : '!='} after step 13`,
        data: { B, HW, dtype: dt, times, losses, memory: mem, peakReservedBytes: peak },
      };
    });
  runCase('resnext50_32x4d PyTorch reference (same run)', 240, () => {
    const why = torchAvailable();
    if (why) {
      if (DRY) return { skip: `PyTorch not importable here (${why})` };
      throw new Error(`PyTorch is not importable: ${why}`);
    }
    const f = path.join(OUT, 'resnext50_torch.json');
    fs.mkdirSync(path.dirname(f), { recursive: true });
    runPython(['resnext50', f, DRY ? '2' : '10'], 230);
    const t = JSON.parse(fs.readFileSync(f, 'utf8'));
    const ratio = {};
    for (const r of t.rows) if (ours[r.dtype]) ratio[r.dtype] = +(ours[r.dtype] / r.ms_per_step).toFixed(2);
    return {
      ok: true,
      detail: `${t.rows.map((r) => `torch ${r.dtype} ${r.ms_per_step.toFixed(1)} ms/step`).join(', ')}; ours/torch ${JSON.stringify(ratio)}`,
      data: { torch: t, ours, ratio },
    };
  });
}

// (d) Ops over more than 2^31 elements, against analytic answers.
function suiteBig() {
  const M = DRY ? 64 : 2112, K = DRY ? 4096 : 1 << 20; // 2112 * 2^20 = 2.21e9 > 2^31
  runCase(`${M}x${K} = ${(M * K).toExponential(3)} elements (> 2^31: ${M * K > 2 ** 31}): broadcast mul, scalar ops, row sums`, 120, () =>
    rx.tidy(() => {
      const x = rx.full([M, K], 1, { device: DEV });
      const r = rx.tensor(Float32Array.from({ length: M }, (_, m) => (m % 7) + 1), [M, 1], { device: DEV });
      const rowsA = host(rx.sum(rx.mul(x, r), [1])); // each row: K * (m % 7 + 1), exact in float32
      const rowsB = host(rx.sum(rx.add(rx.mul(x, 2), 1), [1])); // each row: 3K
      let badA = 0, badB = 0, firstBad = -1;
      for (let m = 0; m < M; m++) {
        if (rowsA[m] !== K * ((m % 7) + 1)) { badA++; if (firstBad < 0) firstBad = m; }
        if (rowsB[m] !== 3 * K) { badB++; if (firstBad < 0) firstBad = m; }
      }
      return { ok: badA === 0 && badB === 0, detail: `${badA} + ${badB} wrong rows of ${M}${firstBad >= 0 ? ` (first: row ${firstBad}: ${rowsA[firstBad]}, ${rowsB[firstBad]})` : ''}` };
    }),
  );
}

// (e) A real out-of-memory in the middle of a training step, then a successful step.
function suiteOom() {
  const B = DRY ? 2 : 32, HW = DRY ? 32 : 224;
  let leak = null;
  runCase(`out of memory in the middle of a step (batch ${B}), then a successful step`, 180, () => {
    rx.manualSeed(9);
    const m = (DRY ? rx.models.resnext({ layers: [1, 1, 1, 1], groups: 32, widthPerGroup: 4, numClasses: 10 }) : rx.models.resnext50_32x4d()).to(DEV);
    const opt = new rx.optim.SGD(m.parameters(), { lr: 0.1, momentum: 0.9 });
    const x = rx.randn([B, 3, HW, HW], { device: DEV, seed: 1 });
    const tgt = rx.tensor(Int32Array.from({ length: B }, (_, i) => i % 10), [B], { dtype: 'int32', device: DEV });
    const step = () =>
      rx.tidy(() => {
        const l = rx.crossEntropy(m.forward(x), tgt);
        l.backward();
        opt.step();
        opt.zeroGrad();
        return l.item();
      });
    step();
    sync();
    const base = rx.memory(DEV);
    const hog = [];
    let err = null, where = '';
    try {
      if (DRY) {
        // No GPU to fill: an allocation far beyond memory and swap in the middle of the forward.
        const { layerHooks } = rx.nn;
        let n = 0;
        layerHooks.onCompute = () => {
          if (++n === 5) rx.empty([2 ** 48], { device: DEV });
        };
        try {
          step();
        } finally {
          layerHooks.onCompute = null;
        }
      } else {
        // Fill the device with 256 MiB blocks (the allocator releases its cache when full), then
        // give back about half of what a step needs, so the step runs out part-way.
        // What a step needs on top of the parameters: the peak of live tensor bytes (the allocator's
        // reserved bytes stay at their peak, since freed blocks are cached).
        const need = Math.max(base.peakBytes - base.bytes, 512 << 20);
        try {
          for (let i = 0; i < 4096; i++) hog.push(rx.empty([64 << 20], { device: DEV }));
        } catch (e) {
          if (e?.code !== 'ERR_OOM') throw e;
        }
        for (let freed = 0; freed < need / 2 && hog.length; freed += 256 << 20) hog.pop().dispose();
        where = `${hog.length} x 256 MiB held, about ${(need / 2 ** 30).toFixed(1)} GiB per step`;
        step();
      }
    } catch (e) {
      err = e;
    }
    for (const h of hog) h.dispose();
    const afterFail = rx.memory(DEV);
    let loss = NaN;
    const after = (() => {
      loss = step();
      sync();
      return rx.memory(DEV);
    })();
    for (const o of [m, opt, x, tgt]) o.dispose();
    leak = { base: base.tensors, afterFail: afterFail.tensors, after: after.tensors, bytes: afterFail.bytes - base.bytes };
    return {
      ok: err?.code === 'ERR_OOM' && Number.isFinite(loss),
      detail: `mid-step error: ${err ? `${err.code}: ${String(err.message).slice(0, 200)}` : 'none (the step fit)'}; ${where}; next step loss ${loss.toFixed(4)}; live tensors ${base.tensors} before, ${afterFail.tensors} after the failed step, ${after.tensors} after the next`,
      data: leak,
    };
  });
  // Separate, because it is a property of the autograd layer rather than of the device: the
  // tensors a failed step's graph saved for backward should not outlive the step.
  runCase('the failed step leaves no live tensors behind', 10, () => {
    if (!leak) return { skip: 'the step above did not run' };
    return { ok: leak.afterFail === leak.base && leak.after === leak.base, detail: `live tensors: ${leak.base} before, ${leak.afterFail} after the failed step (${leak.bytes} bytes more), ${leak.after} after the next step`, data: leak };
  });
}

// The script's own machinery, for test/gpu-check.test.ts: a case that hangs in a synchronous
// call (the watchdog must kill the process and run.sh resume after it) and one that reports a
// lost CUDA context (exit 3, resumed in a fresh process).
function suiteSelftest() {
  runCase('first', 5, () => ({ ok: true, detail: 'ran' }));
  runCase('hangs in a synchronous call', 2, () => {
    const until = Date.now() + 60000;
    while (Date.now() < until) {} // never returns within its limit
    return { ok: true };
  });
  runCase('loses the context', 5, () => {
    throw Object.assign(new Error('conv2d: CUDA error cudaErrorIllegalAddress (an illegal memory access was encountered); the CUDA context is unusable after this error'), { code: 'ERR_CUDA' });
  });
  runCase('after', 5, () => ({ ok: true, detail: `attempt with pid ${process.pid}` }));
}

// ------------------------------------------------------------------ main

const t0 = Date.now();
say(`gpu-check: suite ${AS} (${SUITE}) on ${DEV}${DRY ? ' (DRY RUN: no GPU; the cuda side runs on the CPU)' : ''}, results ${RESULTS}`);
if (!DRY && SUITE !== 'selftest') {
  const status = rx.cudaStatus();
  if (!status.available) {
    record({ suite: AS, case: 'load CUDA backend', status: 'error', ms: 0, detail: status.reason });
    say(`gpu-check: CUDA is not available: ${status.reason}`);
    process.exit(2);
  }
  say(`gpu-check: loaded ${status.library}`);
  if (!done.has('deviceInfo')) {
    const info = rx.deviceInfo();
    record({ suite: AS, case: 'deviceInfo', status: 'pass', ms: 0, data: info });
    say(`gpu-check: deviceInfo ${JSON.stringify(info)}`);
  }
}
const suites = { ops: suiteOps, bottleneck: suiteBottleneck, resnext50: suiteResnext50, big: suiteBig, oom: suiteOom, selftest: suiteSelftest };
if (!suites[SUITE]) {
  say(`gpu-check: unknown suite ${SUITE} (known: ${Object.keys(suites).join(', ')})`);
  process.exit(2);
}
suites[SUITE]();
Atomics.store(ctl, 0, -1);
Atomics.notify(ctl, 0);
say(`gpu-check: suite ${AS} ${failed === 0 ? 'passed' : `had ${failed} failures`} in ${((Date.now() - t0) / 1000).toFixed(1)} s; memory(${DEV}) ${JSON.stringify(rx.memory(DEV))}`);
process.exit(failed === 0 ? 0 : 1);
