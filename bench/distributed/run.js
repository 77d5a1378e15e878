#!/usr/bin/env node
// Data-parallel benchmark (issue 15): the same global batches trained by
//   (a) 2 processes x 1 thread, gradients averaged over gloo (loopback), and
//   (b) 1 process x 2 threads,
// reporting img/s, the gradient allreduce's time per step, all collectives' time per step, and
// the bytes each rank sent per step against the model's size (a ring allreduce sends
// 2(W-1)/W of the buffer per rank). Uses test/distributed/worker.js; needs `npm run build:ts`
// and `npm run build:gloo`.
//   node bench/distributed/run.js [--steps N] [--batch N] [--size N] [--width D] [--sync-bn] [--json]
const { spawn } = require('node:child_process');
const path = require('node:path');
const { parseArgs } = require('node:util');

const { values: a } = parseArgs({
  options: {
    steps: { type: 'string', default: '10' }, batch: { type: 'string', default: '32' }, size: { type: 'string', default: '16' },
    width: { type: 'string', default: '4' }, 'sync-bn': { type: 'boolean', default: false }, json: { type: 'boolean', default: false },
  },
});
const worker = path.join(__dirname, '..', '..', 'test', 'distributed', 'worker.js');
const steps = Number(a.steps);
const common = { steps, perEpoch: steps, batch: Number(a.batch), size: Number(a.size), width: Number(a.width), syncBN: a['sync-bn'], lr: 0.01 };

function run(opts, env) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [worker], { env: { ...process.env, ...env, RX_WORKER: JSON.stringify(opts) }, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (c) => (out += c));
    p.on('close', (code) => (code === 0 ? resolve(JSON.parse(out.trim().split('\n').pop())) : reject(new Error(`worker exited with ${code}`))));
  });
}

async function main() {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const one = await run({ ...common, single: true, threads: 2 }, {});
  const two = await Promise.all(
    [0, 1].map((r) => run({ ...common, threads: 1 }, { RANK: String(r), WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) })),
  );
  const modelBytes = one.params * 4;
  const sec2 = Math.max(...two.map((t) => t.sec));
  const res = {
    config: { ...common, params: one.params, modelBytes },
    oneProcessTwoThreads: { imgPerSec: (steps * common.batch) / one.sec, secPerStep: one.sec / steps },
    twoProcessesOneThread: {
      imgPerSec: (steps * common.batch) / sec2,
      secPerStep: sec2 / steps,
      gradAllreduceMsPerStep: two[0].commMs / steps,
      allCollectivesMsPerStep: two[0].stats.ms / steps,
      collectivesPerStep: two[0].stats.calls / steps,
      bytesSentPerStepRank0: two[0].stats.bytesSent / steps,
      bytesSentPerStepOverModelBytes: two[0].stats.bytesSent / steps / modelBytes,
    },
  };
  if (a.json) process.stdout.write(`${JSON.stringify(res)}\n`);
  else {
    const t = res.twoProcessesOneThread;
    console.log(`model ${one.params} params (${(modelBytes / 1024).toFixed(1)} KiB), global batch ${common.batch}, ${common.size}x${common.size}, ${steps} steps, syncBN ${common.syncBN}`);
    console.log(`1 process x 2 threads : ${res.oneProcessTwoThreads.imgPerSec.toFixed(1)} img/s`);
    console.log(`2 processes x 1 thread: ${t.imgPerSec.toFixed(1)} img/s; gradient allreduce ${t.gradAllreduceMsPerStep.toFixed(1)} ms/step ` +
      `(all ${t.collectivesPerStep.toFixed(0)} collectives ${t.allCollectivesMsPerStep.toFixed(1)} ms/step, incl. waiting for the other rank); ` +
      `rank 0 sent ${(t.bytesSentPerStepRank0 / 1024).toFixed(1)} KiB/step = ${t.bytesSentPerStepOverModelBytes.toFixed(2)} x the model`);
  }
}
main().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
