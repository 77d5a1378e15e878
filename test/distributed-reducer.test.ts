/**
 * The gradient reducer (lib/train/distributed/ddp.ts) in one process, with a stand-in group:
 * buckets follow reverse parameter order, a bucket's allreduce starts during backward as soon as
 * its last gradient is ready (the overlap), and finish() puts the reduced gradients in place.
 */
import * as rx from '../lib';
import { GradReducer } from '../lib/train/distributed/ddp';
import type { ProcessGroup } from '../lib/train/distributed/process-group';

test('buckets launch during backward as their gradients become ready; finish() writes the averaged gradients', async () => {
  rx.manualSeed(3);
  const model = rx.models.resnext29({ cardinality: 2, width: 2, stemChannels: 8, stageChannels: [16, 32, 64], numClasses: 10 });
  const params = model.parameters();
  let inBackward = false;
  const launches: { n: number; inBackward: boolean }[] = [];
  // A stand-in for a world of 2 where the other rank's gradient is twice ours: the mean is 1.5x ours.
  const group = {
    allreduceArray: async (d: Float32Array) => {
      launches.push({ n: d.length, inBackward });
      for (let i = 0; i < d.length; i++) d[i] *= 1.5;
    },
  } as unknown as ProcessGroup;
  const reducer = new GradReducer(group, params, { bucketCapBytes: 16 * 1024, firstBucketBytes: 4 * 1024 });
  expect(reducer.buckets.length).toBeGreaterThan(3);
  expect(reducer.buckets[0].params[0]).toBe(params[params.length - 1]); // the head's gradients come first
  const x = rx.randn([4, 3, 8, 8]);
  const loss = rx.tidy(() => rx.keep(rx.crossEntropy(model.forward(x), Int32Array.from([1, 2, 3, 4]))));
  // The plain gradients, for reference.
  loss.backward(undefined, { retainGraph: true });
  const plain = params.map((p) => Float32Array.from(p.grad!.dataSync()));
  for (const p of params) p.zeroGrad();
  inBackward = true;
  reducer.during(() => loss.backward());
  inBackward = false;
  expect(launches.length).toBe(reducer.buckets.length);
  expect(launches.every((l) => l.inBackward)).toBe(true); // all started before backward returned
  await reducer.finish();
  params.forEach((p, i) => {
    const g = p.grad!.dataSync();
    for (let k = 0; k < g.length; k += 17) expect(g[k]).toBeCloseTo(plain[i][k] * 1.5, 5);
  });
  loss.dispose();
  x.dispose();
  model.dispose();
});
