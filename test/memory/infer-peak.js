// One inference pass (tidy + noGrad, the usual pattern) of a ResNeXt-29 at 64x64, batch 16, for
// test/memory.test.ts: prints the native peak of live tensor bytes above what existed before.
const rx = require('../../dist');

const model = rx.models.resnext29({ cardinality: 4, width: 4, numClasses: 10, stemChannels: 32, stageChannels: [64, 128, 256], blocksPerStage: 3 });
model.eval();
const x = rx.randn([16, 3, 64, 64], { seed: 1 });
const base = rx.memory().bytes;
rx.tidy(() => rx.noGrad(() => model.forward(x)).dataSync());
console.log(JSON.stringify({ peakAbove: rx.memory().peakBytes - base }));
