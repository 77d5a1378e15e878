/** DataLoader: coverage, shapes, deterministic order, resume mid-epoch, workers equal the main thread. */
import { ResnextError } from '../lib/native/errors';
import * as data from '../lib/data';

// 103 samples of 1x4x4; sample i has every pixel = i, label i % 7: a batch tells which samples it holds.
const N = 103;
const ds = data.inMemory({
  images: Uint8Array.from({ length: N * 16 }, (_, k) => Math.floor(k / 16)),
  labels: Array.from({ length: N }, (_, i) => i % 7),
  channels: 1, height: 4, width: 4,
});

const loaders: data.DataLoader[] = [];
function loader(opts: data.DataLoaderOptions, d: data.Dataset = ds): data.DataLoader {
  const l = new data.DataLoader(d, opts);
  loaders.push(l);
  return l;
}
afterAll(() => {
  for (const l of loaders) l.close();
});

async function collect(it: AsyncIterable<data.Batch>): Promise<data.Batch[]> {
  const out: data.Batch[] = [];
  for await (const b of it) out.push(b);
  return out;
}

/** The sample ids in a batch (from the pixel value, no transforms). */
function ids(b: data.Batch): number[] {
  const per = b.shape[1] * b.shape[2] * b.shape[3];
  return Array.from({ length: b.shape[0] }, (_, k) => Math.round(b.x[k * per] * 255));
}

describe('DataLoader', () => {
  test('every sample exactly once per epoch; shapes, labels, last partial batch', async () => {
    const l = loader({ batchSize: 10, shuffle: true, seed: 3, workers: 0 });
    expect(l.batchesPerEpoch).toBe(11);
    const batches = await collect(l.batches(0));
    expect(batches.map((b) => b.index)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(batches[0].shape).toEqual([10, 1, 4, 4]);
    expect(batches[10].shape).toEqual([3, 1, 4, 4]);
    expect(batches[10].x.length).toBe(3 * 16);
    const seen = batches.flatMap(ids);
    expect([...seen].sort((a, b) => a - b)).toEqual(Array.from({ length: N }, (_, i) => i));
    expect(seen).not.toEqual(Array.from({ length: N }, (_, i) => i)); // shuffled
    for (const b of batches) expect(Array.from(b.y)).toEqual(ids(b).map((i) => i % 7));
    // pixels are scaled to [0, 1] when no transform is given
    expect(batches[0].x[0]).toBeCloseTo(ids(batches[0])[0] / 255, 6);
  });

  test('dropLast drops the partial batch; no shuffle keeps the dataset order', async () => {
    const l = loader({ batchSize: 10, dropLast: true, workers: 0 });
    expect(l.batchesPerEpoch).toBe(10);
    const batches = await collect(l.batches(0));
    expect(batches.length).toBe(10);
    expect(batches.flatMap(ids)).toEqual(Array.from({ length: 100 }, (_, i) => i));
  });

  test('the order is a function of (seed, epoch)', async () => {
    const order = async (seed: number, epoch: number) => (await collect(loader({ batchSize: 16, shuffle: true, seed, workers: 0 }).batches(epoch))).flatMap(ids);
    expect(await order(1, 0)).toEqual(await order(1, 0));
    expect(await order(1, 0)).not.toEqual(await order(1, 1));
    expect(await order(1, 0)).not.toEqual(await order(2, 0));
    expect(Array.from(loader({ batchSize: 16, shuffle: true, seed: 1, workers: 0 }).order(0))).toEqual(await order(1, 0));
  });

  const augment: data.TransformSpec[] = [data.padCrop(2), data.flip(), data.normalize(0.5, 0.25)];

  test('resume with startBatch gives the same remaining batches (augmentation included)', async () => {
    const full = await collect(loader({ batchSize: 8, shuffle: true, seed: 9, transforms: augment, workers: 0 }).batches(4));
    const resumed = await collect(loader({ batchSize: 8, shuffle: true, seed: 9, transforms: augment, workers: 0 }).batches(4, { startBatch: 5 }));
    expect(resumed.map((b) => b.index)).toEqual(full.slice(5).map((b) => b.index));
    resumed.forEach((b, k) => {
      expect(Array.from(b.y)).toEqual(Array.from(full[5 + k].y));
      expect(Array.from(b.x)).toEqual(Array.from(full[5 + k].x));
    });
    expect(await collect(loader({ batchSize: 8, workers: 0 }).batches(0, { startBatch: 13 }))).toEqual([]);
    expect(() => loader({ batchSize: 8, workers: 0 }).batches(0, { startBatch: 14 })).toThrow(/startBatch/);
  });

  test('worker threads give exactly the main thread batches', async () => {
    const a = loader({ batchSize: 12, shuffle: true, seed: 4, transforms: augment, workers: 0 });
    const w = loader({ batchSize: 12, shuffle: true, seed: 4, transforms: augment, workers: 2, prefetch: 3 });
    expect(w.workers).toBe(2); // a worker script was found (compiled, or transpiled from source)
    for (const epoch of [0, 1]) {
      const [x, y] = await Promise.all([collect(a.batches(epoch)), collect(w.batches(epoch))]);
      expect(y.length).toBe(9);
      y.forEach((b, k) => {
        expect(b.shape).toEqual(x[k].shape);
        expect(Array.from(b.y)).toEqual(Array.from(x[k].y));
        expect(Array.from(b.x)).toEqual(Array.from(x[k].x));
      });
    }
    // a subset (index map) reaches the workers too
    const sub = data.subset(ds, [5, 50, 100, 7]);
    const ws = loader({ batchSize: 4, workers: 1 }, sub);
    const [b] = await collect(ws.batches(0));
    expect(ids(b)).toEqual([5, 50, 100, 7]);
  });

  test('breaking out early, close() and a later epoch', async () => {
    const l = loader({ batchSize: 5, shuffle: true, seed: 1, workers: 1, prefetch: 4 });
    for await (const b of l.batches(0)) {
      expect(b.index).toBe(0);
      break;
    }
    l.close();
    const again = await collect(l.batches(1));
    expect(again.flatMap(ids).sort((a, b) => a - b)).toEqual(Array.from({ length: N }, (_, i) => i));
  });

  test('bad options are ERR_ARG', () => {
    const bad = (o: unknown) => {
      try {
        new data.DataLoader(ds, o as data.DataLoaderOptions);
      } catch (e) {
        return e;
      }
      return null;
    };
    for (const o of [{}, { batchSize: 0 }, { batchSize: 2, workers: -1 }, { batchSize: 2, transforms: [{ type: 'x' }] }, { batchSize: 2, shuffle: 'yes' }]) {
      const e = bad(o);
      expect(e).toBeInstanceOf(ResnextError);
      expect((e as ResnextError).code).toBe('ERR_ARG');
    }
    expect(() => loader({ batchSize: 2, workers: 0 }).batches(-1)).toThrow(/epoch/);
  });

  test('the output shape follows the transforms (Fashion-MNIST style 28 -> 32)', async () => {
    const mn = data.synthetic({ n: 6, size: 28, channels: 1, classes: 3 });
    const l = loader({ batchSize: 4, transforms: [data.padTo(32), data.padCrop(4), data.normalize('fashionMnist')], workers: 1 }, mn);
    expect(l.sampleShape).toEqual([1, 32, 32]);
    const batches = await collect(l.batches(0));
    expect(batches.map((b) => b.shape)).toEqual([[4, 1, 32, 32], [2, 1, 32, 32]]);
    // the border is padding: zero pixels normalised, (0 - 0.286) / 0.353, somewhere in every sample
    const zero = (0 - 0.286) / 0.353;
    for (const b of batches)
      for (let k = 0; k < b.shape[0]; k++) expect(b.x.subarray(k * 1024, (k + 1) * 1024).some((v) => Math.abs(v - zero) < 1e-6)).toBe(true);
  });
});
