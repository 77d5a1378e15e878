// A training loop that never yields to the event loop, for test/memory.test.ts: prints one JSON
// line per checkpoint step with the process's RSS and the core's live tensor count.
// node loop.js STEPS MODE CHECKPOINTS   MODE: tidy (tidy + loss.item(), the README's pattern) or
// gc (no tidy and no dispose: GC alone frees what each step drops).
const rx = require('../../dist');
const makeStep = require('./step');

const steps = Number(process.argv[2]);
const mode = process.argv[3];
const checkpoints = new Set(process.argv[4].split(',').map(Number));
const model = rx.models.resnext29({
  cardinality: 2, width: 4, inChannels: 1, numClasses: 10, stemChannels: 16,
  stageChannels: [16, 32, 64], blocksPerStage: 1,
});
const x = rx.randn([8, 1, 16, 16], { seed: 1 });
const y = [0, 1, 2, 3, 4, 5, 6, 7];
const step = makeStep(rx, model, x, y);
for (let i = 1; i <= steps; i++) {
  const loss = mode === 'tidy' ? rx.tidy(step) : step();
  if (!Number.isFinite(loss)) throw new Error(`step ${i}: loss ${loss}`);
  if (checkpoints.has(i))
    console.log(JSON.stringify({ step: i, rss: process.memoryUsage().rss, tensors: rx.memory().tensors }));
}
