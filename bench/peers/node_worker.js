'use strict';
// Node side of `npm run bench:peers` (long-lived worker; see run.js): argv[2] = "ours" (this
// package, loaded from RX_ROOT/dist, default the checkout) or "ort" (onnxruntime-node, CPU EP).
// Protocol: JSON lines on stdin/stdout, as in torch_worker.py.
const path = require('node:path');
const readline = require('node:readline');

const side = process.argv[2];
const threads = Number(process.argv[3] || 2);
const root = process.env.RX_ROOT || path.resolve(__dirname, '..', '..');

let state = null;

// Deterministic pseudo-random floats in [-1, 1) (the same inputs on every run).
function fixedRandom(n, seed) {
  const a = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    a[i] = ((s >>> 0) / 4294967296) * 2 - 1;
  }
  return a;
}

async function setupOurs(w) {
  const rx = require(path.join(root, 'dist'));
  rx.setNumThreads(threads);
  const model =
    w.model === 'resnext29'
      ? rx.models.resnext29({ ...w.cfg, numClasses: w.classes, inChannels: w.inChannels })
      : rx.models[w.model]({ numClasses: w.classes, inChannels: w.inChannels });
  const shape = [w.batch, w.inChannels, w.size, w.size];
  const x = rx.tensor(fixedRandom(shape.reduce((a, b) => a * b, 1), 1), shape);
  const y = rx.tensor(Int32Array.from({ length: w.batch }, (_, i) => (i * 7) % w.classes), [w.batch], { dtype: 'int32' });
  let opt = null;
  if (w.kind === 'train') {
    model.train();
    opt = new rx.optim.SGD(model.parameters(), { lr: 1e-3, momentum: 0.9, weightDecay: 5e-4 });
  } else model.eval();
  state = { rx, w, model, x, y, opt };
}

async function stepOurs() {
  const { rx, w, model, x, y, opt } = state;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  let v;
  if (w.kind === 'train') {
    const loss = rx.tidy(() => {
      const l = rx.crossEntropy(model.forward(x), y);
      l.backward();
      opt.step();
      opt.zeroGrad();
      return rx.keep(l);
    });
    v = (await loss.data())[0];
    loss.dispose();
  } else {
    const out = rx.tidy(() => rx.noGrad(() => model.forward(x)));
    v = (await out.data())[0];
    out.dispose();
  }
  const ms = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return { ms, cpuMs: (c.user + c.system) / 1000, value: v };
}

async function setupOrt(w) {
  const ort = require('onnxruntime-node');
  const session = await ort.InferenceSession.create(w.onnx, {
    executionProviders: ['cpu'],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
  });
  const shape = [w.batch, w.inChannels, w.size, w.size];
  const input = new ort.Tensor('float32', fixedRandom(shape.reduce((a, b) => a * b, 1), 1), shape);
  state = { w, session, feeds: { [session.inputNames[0]]: input } };
}

async function stepOrt() {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const out = await state.session.run(state.feeds);
  const v = out[state.session.outputNames[0]].data[0];
  const ms = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return { ms, cpuMs: (c.user + c.system) / 1000, value: v };
}

async function handle(msg) {
  switch (msg.cmd) {
    case 'hello':
      if (side === 'ours') {
        const rx = require(path.join(root, 'dist'));
        rx.setNumThreads(threads);
        return { root, threads: rx.numThreads(), features: rx.cpuFeatures(), isa: process.env.RESNEXT_CPU_ISA || 'auto' };
      }
      return { ort: require('onnxruntime-node/package.json').version, threads };
    case 'setup':
      await (side === 'ours' ? setupOurs : setupOrt)(msg.workload);
      return { ok: true };
    case 'step':
      return side === 'ours' ? stepOurs() : stepOrt();
    case 'quit':
      process.exit(0);
    default:
      return { error: `unknown command ${msg.cmd}` };
  }
}

const rl = readline.createInterface({ input: process.stdin });
let chain = Promise.resolve();
rl.on('line', (line) => {
  chain = chain.then(async () => {
    let reply;
    try {
      reply = await handle(JSON.parse(line));
    } catch (e) {
      reply = { error: String(e && e.stack ? e.stack : e) };
    }
    process.stdout.write(`${JSON.stringify(reply)}\n`);
  });
});
rl.on('close', () => chain.then(() => process.exit(0)));
