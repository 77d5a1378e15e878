#!/usr/bin/env node
// GPU-vs-CPU op checks without jest, for the GPU machine (no npm there): loads the compiled
// package (dist/index.js), prints deviceInfo(), runs every case of cases.js and prints pass/fail
// per case with the worst relative error, then a ResNeXt-29 8x64d training step CPU vs GPU.
// Exit code 0 only when CUDA loaded and every case passed.


const path = require('node:path');
const root = path.resolve(__dirname, '..', '..');
const rx = require(path.join(root, 'dist', 'index.js'));
const { gpuCases } = require('./cases.js');

const t0 = Date.now();
const status = rx.cudaStatus();
if (!status.available) {
  console.error(`gpu-check: CUDA is not available: ${status.reason}`);
  process.exit(2);
}
console.log(`gpu-check: loaded ${status.library}`);
console.log(`gpu-check: deviceInfo ${JSON.stringify(rx.deviceInfo())}`);

let failed = 0;
for (const c of gpuCases(rx)) {
  const t = Date.now();
  let line;
  try {
    const res = c.run();
    const bad = res.filter(([, err, tol]) => !(err <= tol));
    const worst = res.reduce((m, [, err, tol]) => Math.max(m, tol > 0 ? err / tol : err > 0 ? Infinity : 0), 0);
    const detail = res.map(([k, err]) => `${k}=${err.toExponential(2)}`).join(' ');
    if (bad.length) failed++;
    line = `${bad.length ? 'FAIL' : 'pass'}  ${c.name}  (${Date.now() - t} ms, worst err/tol ${worst.toFixed(3)})  ${detail}`;
  } catch (e) {
    failed++;
    line = `FAIL  ${c.name}  threw ${e?.code ? e.code + ': ' : ''}${e?.message ? e.message : e}`;
  }
  console.log(line);
}

// Out of memory must be an ERR_OOM and leave the process usable.
try {
  rx.empty([1 << 20, 1 << 20, 64], { device: 'cuda' });
  console.log('FAIL  out-of-memory: a 256 TiB allocation succeeded?');
  failed++;
} catch (e) {
  const ok = e && e.code === 'ERR_OOM' && rx.ones([3], { device: 'cuda' }).dataSync()[2] === 1;
  if (!ok) failed++;
  console.log(`${ok ? 'pass' : 'FAIL'}  out-of-memory -> ${e?.code}: ${e?.message}`);
}

// ResNeXt-29 8x64d (issue 4's acceptance): the same weights and batch on the CPU and the GPU give
// the same loss (fp32; TF32 convolutions allowed, so a loose tolerance), before and after one SGD
// step; then GPU step time (median of 10 after 3 warm-up steps, batch 128) and memory.
// RESNEXT_GPU_CHECK_TRAIN=0 skips it; RESNEXT_GPU_CHECK_DEVICE=cpu runs both sides on the CPU
// (a dry run of this script where there is no GPU).
if (process.env.RESNEXT_GPU_CHECK_TRAIN !== '0') {
  const dev = process.env.RESNEXT_GPU_CHECK_DEVICE || 'cuda';
  const small = process.env.RESNEXT_GPU_CHECK_SMALL === '1';
  const build = (init) =>
    small ? rx.models.resnext29({ cardinality: 2, width: 4, stemChannels: 16, stageChannels: [32, 64, 128], init }) : rx.models.resnext29_8x64d({ init });
  rx.manualSeed(0);
  const ref = build();
  const dut = build('none');
  dut.loadStateDict(ref.stateDict());
  if (dev === 'cuda') dut.to('cuda');
  const x = rx.randn([16, 3, 32, 32], { seed: 1 });
  const y = Array.from({ length: 16 }, (_, i) => i % 10);
  const opt = (m) => new rx.optim.SGD(m.parameters(), { lr: 0.05, momentum: 0.9, weightDecay: 5e-4 });
  const oRef = opt(ref), oDut = opt(dut);
  const step = (m, o, device) =>
    rx.tidy(() => {
      const l = rx.crossEntropy(m.forward(device === 'cuda' ? rx.to(x, 'cuda') : x), y);
      l.backward();
      o.step();
      o.zeroGrad();
      return l.item();
    });
  const losses = [];
  for (let i = 0; i < 2; i++) losses.push([step(ref, oRef, 'cpu'), step(dut, oDut, dev)]);
  for (const [i, [a, b]] of losses.entries()) {
    const rel = Math.abs(a - b) / Math.abs(a);
    const ok = rel < 2e-2;
    if (!ok) failed++;
    console.log(`${ok ? 'pass' : 'FAIL'}  ResNeXt-29 step ${i + 1} loss cpu ${a.toFixed(6)} ${dev} ${b.toFixed(6)} rel ${rel.toExponential(2)}`);
  }
  ref.dispose();
  oRef.dispose();
  if (dev === 'cuda') {
    const xb = rx.to(rx.randn([128, 3, 32, 32], { seed: 2 }), 'cuda');
    const yb = Array.from({ length: 128 }, (_, i) => i % 10);
    const times = [];
    for (let i = 0; i < 13; i++) {
      const t = process.hrtime.bigint();
      rx.tidy(() => {
        const l = rx.crossEntropy(dut.forward(xb), yb);
        l.backward();
        oDut.step();
        oDut.zeroGrad();
        l.item();
      });
      if (i >= 3) times.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    times.sort((a, b) => a - b);
    const med = times[Math.floor(times.length / 2)];
    console.log(`info  ResNeXt-29 8x64d train step, batch 128, fp32: median ${med.toFixed(1)} ms (min ${times[0].toFixed(1)}, max ${times.at(-1).toFixed(1)}), ${(128000 / med).toFixed(0)} img/s, memory ${JSON.stringify(rx.memory('cuda'))}`);
  }
  dut.dispose();
  oDut.dispose();
}

console.log(`gpu-check: memory('cuda') ${JSON.stringify(rx.memory('cuda'))}`);
console.log(`gpu-check: ${failed === 0 ? 'ALL PASSED' : `${failed} FAILED`} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
process.exit(failed === 0 ? 0 : 1);
