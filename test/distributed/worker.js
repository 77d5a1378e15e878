// A worker of test/distributed.test.ts and bench/distributed: trains a small ResNeXt-29 on
// deterministic synthetic batches, data-parallel (RANK / WORLD_SIZE / MASTER_* set) or in one
// process. Options come as JSON in RX_WORKER:
//   { steps, batch, syncBN, single, out, hashes, checkpointDir, checkpointEvery, resume, killAtStep, threads, size, width }
// Writes the final parameters (float32, in order) to `out` and, with `hashes`, one line per step
// with a hash of all parameters.
const fs = require('node:fs');
const rx = require('../../dist');

const o = JSON.parse(process.env.RX_WORKER || '{}');
if (o.threads) rx.setNumThreads(o.threads);
const size = o.size ?? 8;
const batch = o.batch ?? 8;
const perEpoch = o.perEpoch ?? 10;
const steps = o.steps ?? 20;

function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// The global batches: batch b of epoch e is the same for every world size.
const source = {
  batchesPerEpoch: perEpoch,
  async *batches(epoch, opts = {}) {
    for (let b = opts.startBatch ?? 0; b < perEpoch; b++) {
      const r = rng(1000 * epoch + b + 1);
      const x = new Float32Array(batch * 3 * size * size).map(() => r() * 2 - 1);
      const y = Int32Array.from({ length: batch }, () => Math.floor(r() * 10));
      yield { x, y, shape: [batch, 3, size, size] };
    }
  },
};

function hashParams(model) {
  let h = 0x811c9dc5;
  for (const p of model.parameters()) {
    const u = new Uint32Array(Float32Array.from(p.dataSync()).buffer);
    for (let i = 0; i < u.length; i++) h = Math.imul(h ^ u[i], 16777619) >>> 0;
  }
  return h.toString(16);
}

// The process group's collectives on tensors (the test checks the values).
async function collectives() {
  const g = await rx.train.distributed.init({ backend: 'gloo', timeoutMs: 10000 });
  const r = g.rank;
  const a = rx.tensor([r + 1, 10 * (r + 1), -r], [3]);
  await g.allreduce(a);
  const m = rx.tensor([r, 2 * r], [2]);
  await g.allreduce(m, { op: 'avg' });
  const b = rx.tensor([r === 1 ? 7 : 0, r === 1 ? 8 : 0], [2]);
  await g.broadcast(b, 1);
  await g.barrier();
  process.stdout.write(`${JSON.stringify({ rank: r, sum: Array.from(await a.data()), avg: Array.from(await m.data()), bcast: Array.from(await b.data()) })}\n`);
  g.destroy();
}

async function main() {
  if (o.collectives) return collectives();
  rx.manualSeed(1);
  const w = o.width ?? 2;
  const model = rx.models.resnext29({ cardinality: 2, width: w, stemChannels: 8, stageChannels: [16, 32, 64], numClasses: 10 });
  const optimizer = new rx.optim.SGD(model.parameters(), { lr: o.lr ?? 0.01, momentum: 0.9, weightDecay: 5e-4 });
  let group = null;
  if (!o.single) group = await rx.train.distributed.init({ backend: 'gloo', timeoutMs: o.timeoutMs ?? 20000 });
  else if (o.syncBN) rx.train.distributed.convertSyncBatchNorm(model, null);
  const rank = group ? group.rank : 0;
  const trainer = new rx.train.Trainer({
    model, optimizer, progress: false, distributed: group ?? false, syncBatchNorm: !!o.syncBN,
    checkpointDir: o.checkpointDir, checkpointEvery: o.checkpointEvery, bucketCapMb: o.bucketCapMb,
  });
  if (o.hashes && !o.resume) fs.writeFileSync(o.hashes, '');
  if (o.outInit) fs.writeFileSync(o.outInit, Buffer.concat(model.parameters().map((p) => Buffer.from(Float32Array.from(p.dataSync()).buffer))));
  const t0 = performance.now();
  let comm = 0;
  const r = await trainer.fit(source, {
    epochs: Math.ceil(steps / perEpoch),
    resume: !!o.resume,
    onStep: ({ step }) => {
      comm += trainer.lastCommMs;
      if (o.hashes) fs.appendFileSync(o.hashes, `${step} ${hashParams(model)}\n`);
      if (o.killAtStep && step === o.killAtStep && rank === (o.killRank ?? 1)) process.kill(process.pid, 'SIGKILL');
      if (o.stopAtStep && step === o.stopAtStep && rank === 1) process.kill(process.pid, 'SIGSTOP'); // alive but silent
    },
  });
  const sec = (performance.now() - t0) / 1000;
  if (o.out) {
    const parts = model.parameters().map((p) => Float32Array.from(p.dataSync()));
    const all = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
    let k = 0;
    for (const p of parts) {
      all.set(p, k);
      k += p.length;
    }
    fs.writeFileSync(o.out, Buffer.from(all.buffer));
  }
  const params = model.parameters().reduce((a, p) => a + p.size, 0);
  const stats = group ? group.stats : null;
  process.stdout.write(`${JSON.stringify({ rank, steps: r.steps, sec, losses: r.losses, params, stats, commMs: comm })}\n`);
  if (group) {
    await group.barrier();
    group.destroy();
  }
}

main().catch((e) => {
  process.stderr.write(`worker error: ${e.code ?? ''} ${e.message}\n`);
  process.exit(3);
});
