// Full (mark-compact) GCs during tidy training steps, for test/memory.test.ts: tensors made inside
// a tidy scope do not report their bytes to V8 (native/binding/tensor_handle.h), so a step's
// allocations no longer look like memory pressure. Prints { steps, majorGCs, tensorsBefore,
// tensorsAfter }. node gc-count.js STEPS
const { PerformanceObserver, constants } = require('node:perf_hooks');
const rx = require('../../dist');
const makeStep = require('./step');

const steps = Number(process.argv[2] || 20);
const model = rx.models.resnext29({
  cardinality: 4, width: 4, inChannels: 1, numClasses: 10, stemChannels: 32, stageChannels: [64, 128, 256], stemStride: 2,
});
const x = rx.randn([64, 1, 28, 28], { seed: 1 });
const y = Array.from({ length: 64 }, (_, i) => i % 10);
const step = makeStep(rx, model, x, y);
rx.tidy(step); // warm-up: grads and momentum buffers are made (and reported) once
let major = 0;
const obs = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) major++;
});
obs.observe({ entryTypes: ['gc'] });
const before = rx.memory().tensors;
(async () => {
  for (let i = 0; i < steps; i++) {
    rx.tidy(step);
    await new Promise((r) => setImmediate(r)); // lets the observer's entries arrive
  }
  await new Promise((r) => setTimeout(r, 50));
  obs.disconnect();
  console.log(JSON.stringify({ steps, majorGCs: major, tensorsBefore: before, tensorsAfter: rx.memory().tensors }));
})();
