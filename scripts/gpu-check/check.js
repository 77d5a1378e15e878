#!/usr/bin/env node
// GPU-vs-CPU op checks without jest, for the GPU machine (no npm there): loads the compiled
// package (dist/index.js), prints deviceInfo(), runs every case of cases.js and prints pass/fail
// per case with the worst relative error, then a short training-step hook (see TODO below).
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

// TODO(model zoo): ResNeXt-29 8x64d training step on random data (issue 4's acceptance test).
// When lib/models exports the CIFAR ResNeXt-29 builder, build it once on the CPU, copy the same
// weights to the GPU, run one SGD step on the same random batch (N=16, 3x32x32, 10 classes) on
// both devices and compare the losses (bf16/fp32 tolerance), then time ~10 GPU steps at batch
// 128 and print step time and rx.memory('cuda'). Hook: set RESNEXT_GPU_CHECK_TRAIN=1 to run it.
if (process.env.RESNEXT_GPU_CHECK_TRAIN === '1') {
  const m = rx.models || {};
  if (typeof m.resnext29 !== 'function' && typeof m.resnext29_8x64d !== 'function')
    console.log('skip  ResNeXt-29 8x64d training step: lib/models has no resnext29 builder yet');
  else console.log('skip  ResNeXt-29 8x64d training step: hook present, implementation pending (see TODO)');
}

console.log(`gpu-check: memory('cuda') ${JSON.stringify(rx.memory('cuda'))}`);
console.log(`gpu-check: ${failed === 0 ? 'ALL PASSED' : `${failed} FAILED`} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
process.exit(failed === 0 ? 0 : 1);
