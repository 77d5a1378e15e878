/** Data readers (IDX, Fashion-MNIST, CIFAR), datasets, transforms and the synthetic dataset. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { ResnextError } from '../lib/native/errors';
import * as data from '../lib/data';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'resnext-data-'));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

async function expectError(p: Promise<unknown> | (() => unknown), code: string, ...parts: (RegExp | string)[]): Promise<void> {
  let err: unknown;
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ResnextError);
  expect((err as ResnextError).code).toBe(code);
  for (const part of parts) {
    if (typeof part === 'string') expect((err as ResnextError).message).toContain(part);
    else expect((err as ResnextError).message).toMatch(part);
  }
}

function idx(dims: number[], values: number[], type = 0x08): Buffer {
  const head = Buffer.alloc(4 + 4 * dims.length);
  head[2] = type;
  head[3] = dims.length;
  dims.forEach((d, i) => {
    head.writeUInt32BE(d, 4 + 4 * i);
  });
  return Buffer.concat([head, Buffer.from(values)]);
}

function write(name: string, bytes: Buffer | Uint8Array): string {
  const p = path.join(dir, name);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, bytes);
  return p;
}

// 3 images of 2x3; pixel value = 10 * image + position
const pixels = Array.from({ length: 18 }, (_, k) => 10 * Math.floor(k / 6) + (k % 6));
const imagesIdx = idx([3, 2, 3], pixels);
const labelsIdx = idx([3], [7, 0, 9]);

describe('IDX (MNIST format)', () => {
  test('reads plain and gzipped files to the same dataset', async () => {
    const a = await data.readIdx(write('plain/img', imagesIdx), write('plain/lab', labelsIdx));
    const b = await data.readIdx(write('gz/img.gz', zlib.gzipSync(imagesIdx)), write('gz/lab.gz', zlib.gzipSync(labelsIdx)));
    for (const ds of [a, b]) {
      expect([ds.length, ds.channels, ds.height, ds.width, ds.numClasses]).toEqual([3, 1, 2, 3, 10]);
      expect(Array.from(ds.labels())).toEqual([7, 0, 9]);
      expect(ds.label(2)).toBe(9);
      const img = await ds.image(1);
      expect([img.channels, img.height, img.width]).toEqual([1, 2, 3]);
      expect(Array.from(img.data)).toEqual([10, 11, 12, 13, 14, 15]);
      // shared with loader workers without a copy
      expect(ds.source.kind === 'memory' && ds.source.images.buffer instanceof SharedArrayBuffer).toBe(true);
    }
    await expectError(a.image(3), 'ERR_ARG', /index/, /\[0, 2\]/);
  });

  test('mnist()/fashionMnist() find the standard file names (gz, plain, dotted)', async () => {
    write('mn/train-images-idx3-ubyte.gz', zlib.gzipSync(imagesIdx));
    write('mn/train-labels-idx1-ubyte.gz', zlib.gzipSync(labelsIdx));
    write('mn/t10k-images-idx3-ubyte', idx([1, 2, 3], pixels.slice(0, 6)));
    write('mn/t10k-labels.idx1-ubyte', idx([1], [4]));
    const train = await data.mnist(path.join(dir, 'mn'), 'train');
    expect([train.length, train.name]).toEqual([3, 'mnist/train']);
    const test = await data.fashionMnist(path.join(dir, 'mn'), 'test');
    expect([test.length, test.label(0), test.classes[4]]).toEqual([1, 4, 'Coat']);
    await expectError(data.mnist(path.join(dir, 'nowhere'), 'train'), 'ERR_IO', 'nowhere', /train-images-idx3-ubyte\.gz/, /no such directory/);
    await expectError(() => data.mnist(path.join(dir, 'mn'), 'val' as 'train'), 'ERR_ARG', /split/);
  });

  test('corrupt IDX files: magic, truncation, trailing data, count mismatch, bad gzip, missing', async () => {
    const lab = write('c/lab', labelsIdx);
    const badMagic = Buffer.from(imagesIdx);
    badMagic[2] = 0x0b; // int16 elements
    const m = write('c/magic', badMagic);
    await expectError(data.readIdx(m, lab), 'ERR_IO', m, /magic number 0x00000803/, /0x00000b03/);
    const labelsAsImages = write('c/swapped', labelsIdx);
    await expectError(data.readIdx(labelsAsImages, lab), 'ERR_IO', labelsAsImages, /magic number/);
    const t = write('c/trunc', imagesIdx.subarray(0, imagesIdx.length - 1));
    await expectError(data.readIdx(t, lab), 'ERR_IO', t, /34 bytes/, /33 bytes: the file is truncated/);
    const h = write('c/head', imagesIdx.subarray(0, 9));
    await expectError(data.readIdx(h, lab), 'ERR_IO', h, /header/, /truncated/);
    const x = write('c/extra', Buffer.concat([imagesIdx, Buffer.from([1])]));
    await expectError(data.readIdx(x, lab), 'ERR_IO', x, /trailing/);
    const two = write('c/two', idx([2], [1, 2]));
    await expectError(data.readIdx(write('c/img', imagesIdx), two), 'ERR_IO', /as many labels as images \(3\)/, /2 labels/, two);
    const gz = zlib.gzipSync(imagesIdx);
    const g = write('c/cut.gz', gz.subarray(0, gz.length - 12));
    await expectError(data.readIdx(g, lab), 'ERR_IO', g, /gzip/);
    const none = path.join(dir, 'c', 'none');
    await expectError(data.readIdx(none, lab), 'ERR_IO', none, /no such file/);
  });
});

const FASHION = data.FASHION_MNIST_DIR;
const haveFashion = fs.existsSync(path.join(FASHION, 'train-images-idx3-ubyte.gz'));
if (!haveFashion) console.warn(`skipping the Fashion-MNIST test: ${FASHION} not found (apt-get install dataset-fashion-mnist)`);

(haveFashion ? describe : describe.skip)('Fashion-MNIST from the Debian package (dataset-fashion-mnist)', () => {
  test('60000 train / 10000 test, 28x28, 10 balanced classes', async () => {
    const [train, test] = await Promise.all([data.fashionMnist(FASHION, 'train'), data.fashionMnist(FASHION, 'test')]);
    expect([train.length, train.channels, train.height, train.width, train.numClasses]).toEqual([60000, 1, 28, 28, 10]);
    expect([test.length, test.height, test.width]).toEqual([10000, 28, 28]);
    expect(train.classes[9]).toBe('Ankle boot');
    for (const [ds, per] of [[train, 6000], [test, 1000]] as const) {
      const counts = new Array(10).fill(0);
      for (const l of ds.labels()) counts[l]++;
      expect(counts).toEqual(new Array(10).fill(per));
    }
    // the first labels of each file, and a plausible image (dark border, bright content)
    expect(Array.from(train.labels().subarray(0, 4))).toEqual([9, 0, 0, 3]);
    expect(Array.from(test.labels().subarray(0, 4))).toEqual([9, 2, 1, 1]);
    const img = (await train.image(0)).data;
    expect(img[0]).toBe(0);
    expect(Math.max(...img)).toBe(255);
  });
});

describe('CIFAR binary batches', () => {
  function record(labelBytes: number[], seed: number): Buffer {
    const px = Buffer.alloc(3072);
    for (let k = 0; k < 3072; k++) px[k] = (seed * 7 + k) % 251;
    return Buffer.concat([Buffer.from(labelBytes), px]);
  }

  test('CIFAR-10: five training batches and the test batch, CHW pixels', async () => {
    const d = path.join(dir, 'cifar', 'cifar-10-batches-bin');
    for (let b = 1; b <= 5; b++) write(`cifar/cifar-10-batches-bin/data_batch_${b}.bin`, Buffer.concat([record([b], b), record([9], 10 + b)]));
    write('cifar/cifar-10-batches-bin/test_batch.bin', Buffer.concat([record([3], 99)]));
    const train = await data.cifar10(path.join(dir, 'cifar'), 'train'); // the parent folder works too
    expect([train.length, train.channels, train.height, train.width, train.numClasses]).toEqual([10, 3, 32, 32, 10]);
    expect(Array.from(train.labels())).toEqual([1, 9, 2, 9, 3, 9, 4, 9, 5, 9]);
    expect(train.classes[1]).toBe('automobile');
    const img = await train.image(2); // batch 2, first record
    expect(img.data[0]).toBe((2 * 7) % 251);
    expect(img.data[1024]).toBe((2 * 7 + 1024) % 251); // green plane starts at 1024
    const test = await data.cifar10(d, 'test');
    expect([test.length, test.label(0)]).toEqual([1, 3]);
  });

  test('CIFAR-100: coarse and fine labels', async () => {
    write('c100/train.bin', Buffer.concat([record([4, 77], 1), record([19, 99], 2)]));
    const fine = await data.cifar100(path.join(dir, 'c100'), 'train');
    expect([fine.numClasses, ...fine.labels()]).toEqual([100, 77, 99]);
    const coarse = await data.cifar100(path.join(dir, 'c100'), 'train', { labels: 'coarse' });
    expect([coarse.numClasses, ...coarse.labels()]).toEqual([20, 4, 19]);
    expect((await fine.image(1)).data[5]).toBe((2 * 7 + 5) % 251);
  });

  test('truncated records, bad labels and missing batches are ERR_IO naming the file', async () => {
    write('cbad/test_batch.bin', Buffer.concat([record([1], 1), record([2], 2)]).subarray(0, 3073 + 100));
    const f = path.join(dir, 'cbad', 'test_batch.bin');
    await expectError(data.cifar10(path.join(dir, 'cbad'), 'test'), 'ERR_IO', f, /records of 3073 bytes/, /1 records and 100 bytes of a truncated record/);
    await expectError(data.cifar10(path.join(dir, 'cbad'), 'train'), 'ERR_IO', 'data_batch_1.bin', /no such file/);
    write('cbad2/test_batch.bin', record([12], 1));
    await expectError(data.cifar10(path.join(dir, 'cbad2'), 'test'), 'ERR_IO', /labels below 10/, /label 12/);
    write('cbad3/test.bin', record([1], 1)); // a CIFAR-10-sized record
    await expectError(data.cifar100(path.join(dir, 'cbad3'), 'test'), 'ERR_IO', /3074 bytes/, 'test.bin');
  });
});

describe('datasets', () => {
  const ds = data.inMemory({
    images: Uint8Array.from({ length: 5 * 4 }, (_, k) => k),
    labels: [0, 1, 2, 1, 0],
    channels: 1, height: 2, width: 2,
  });

  test('inMemory, subset, take, randomSplit share storage and keep labels', async () => {
    expect([ds.length, ds.numClasses]).toEqual([5, 3]);
    const s = data.subset(ds, [4, 1, 1]);
    expect([s.length, ...s.labels()]).toEqual([3, 0, 1, 1]);
    expect(Array.from((await s.image(0)).data)).toEqual([16, 17, 18, 19]);
    const ss = data.subset(s, [1]); // a subset of a subset maps to storage index 1
    expect(Array.from((await ss.image(0)).data)).toEqual([4, 5, 6, 7]);
    expect(data.take(ds, 2).length).toBe(2);
    expect(data.take(ds, 99).length).toBe(5);
    const [a, b] = data.randomSplit(ds, [0.6, 0.4], 3);
    expect([a.length, b.length]).toEqual([3, 2]);
    const firsts = async (d: data.Dataset) => Promise.all(Array.from({ length: d.length }, async (_, i) => (await d.image(i)).data[0]));
    const all = [...(await firsts(a)), ...(await firsts(b))].sort((x, y) => x - y);
    expect(all).toEqual([0, 4, 8, 12, 16]);
    const [a2] = data.randomSplit(ds, [3, 2], 3);
    expect(await firsts(a2)).toEqual(await firsts(a));
    await expectError(() => data.subset(ds, [5]), 'ERR_ARG', /indices\[0\]/, /\[0, 4\]/);
    await expectError(() => data.inMemory({ images: new Uint8Array(3), labels: [0], channels: 1, height: 2, width: 2 }), 'ERR_SHAPE', /4 bytes/);
  });
});

describe('transforms', () => {
  // an 8x8 single-channel image: pixel = 1 + y * 8 + x (no zeros, so padding is recognisable)
  const img = { data: Uint8Array.from({ length: 64 }, (_, k) => 1 + k), channels: 1, height: 8, width: 8 };
  const at = (out: Float32Array, w: number, y: number, x: number) => Math.round(out[y * w + x] * 255);

  /** The (dy, dx) for which out(y, x) = src(y + dy, x + dx) (0 outside), or null. */
  function findShift(out: Float32Array, pad: number): [number, number] | null {
    for (let dy = -pad; dy <= pad; dy++)
      for (let dx = -pad; dx <= pad; dx++) {
        let ok = true;
        for (let y = 0; y < 8 && ok; y++)
          for (let x = 0; x < 8 && ok; x++) {
            const sy = y + dy, sx = x + dx;
            const want = sy >= 0 && sy < 8 && sx >= 0 && sx < 8 ? 1 + sy * 8 + sx : 0;
            ok = at(out, 8, y, x) === want;
          }
        if (ok) return [dy, dx];
      }
    return null;
  }

  test('padCrop shifts the content by up to pad pixels, filling with zeros', () => {
    const shifts = new Set<string>();
    for (let i = 0; i < 60; i++) {
      const { data: out, shape } = data.applyTransforms([data.padCrop(4)], img, { seed: 1, epoch: 0, index: i });
      expect(shape).toEqual([1, 8, 8]);
      const s = findShift(out, 4);
      expect(s).not.toBeNull();
      shifts.add(String(s));
    }
    expect(shifts.size).toBeGreaterThan(15); // 81 possible shifts, drawn uniformly
  });

  test('flip mirrors rows; p=0.5 flips about half the samples', () => {
    const always = data.applyTransforms([data.flip(1)], img).data;
    for (let y = 0; y < 8; y++) for (let x = 0; x < 8; x++) expect(at(always, 8, y, x)).toBe(1 + y * 8 + (7 - x));
    expect(Array.from(data.applyTransforms([data.flip(0)], img).data).map((v) => Math.round(v * 255))).toEqual(Array.from(img.data));
    let flipped = 0;
    for (let i = 0; i < 400; i++) if (at(data.applyTransforms([data.flip()], img, { index: i }).data, 8, 0, 0) === 8) flipped++;
    expect(flipped).toBeGreaterThan(160);
    expect(flipped).toBeLessThan(240);
  });

  test('normalize uses the standard constants', () => {
    expect(data.NORMALIZE.mnist).toEqual({ mean: [0.1307], std: [0.3081] });
    expect(data.NORMALIZE.fashionMnist).toEqual({ mean: [0.286], std: [0.353] });
    expect(data.NORMALIZE.cifar10).toEqual({ mean: [0.4914, 0.4822, 0.4465], std: [0.247, 0.2435, 0.2616] });
    expect(data.NORMALIZE.imagenet).toEqual({ mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] });
    const rgb = { data: Uint8Array.from([255, 0, 0, 255, 51, 51]), channels: 3, height: 1, width: 2 };
    const out = data.applyTransforms([data.normalize('cifar10')], rgb).data;
    expect(out[0]).toBeCloseTo((1 - 0.4914) / 0.247, 5);
    expect(out[1]).toBeCloseTo((0 - 0.4914) / 0.247, 5);
    expect(out[3]).toBeCloseTo((1 - 0.4822) / 0.2435, 5);
    expect(out[5]).toBeCloseTo((0.2 - 0.4465) / 0.2616, 5);
    const custom = data.applyTransforms([data.normalize(0.5, 0.25)], rgb).data;
    expect(custom[0]).toBeCloseTo(2, 6);
    expect(() => data.applyTransforms([data.normalize([0.1, 0.2], [1, 1])], rgb)).toThrow(/1 or 3 numbers/);
  });

  test('padTo centres a 28x28 image in 32x32', () => {
    const m = { data: new Uint8Array(28 * 28).fill(255), channels: 1, height: 28, width: 28 };
    const { data: out, shape } = data.applyTransforms([data.padTo(32)], m);
    expect(shape).toEqual([1, 32, 32]);
    expect([out[0], out[1 * 32 + 1], out[2 * 32 + 2], out[29 * 32 + 29], out[30 * 32 + 30], out[31 * 32 + 2]]).toEqual([0, 0, 1, 1, 0, 0]);
    expect(out.reduce((a, b) => a + b, 0)).toBe(28 * 28);
  });

  test('resize is bilinear on pixel centres; centre crop picks the middle', () => {
    const row = { data: Uint8Array.from([0, 200]), channels: 1, height: 1, width: 2 };
    const up = data.applyTransforms([data.resize([1, 4])], row).data;
    expect(Array.from(up).map((v) => v * 255)).toEqual([0, 50, 150, 200].map((v) => expect.closeTo(v, 3)));
    // shorter side to 4 keeps the aspect ratio; a constant image stays constant
    const flat = { data: new Uint8Array(3 * 8 * 16).fill(100), channels: 3, height: 8, width: 16 };
    const r = data.applyTransforms([data.resize(4)], flat);
    expect(r.shape).toEqual([3, 4, 8]);
    for (const v of r.data) expect(v * 255).toBeCloseTo(100, 3);
    // shrinking by 2 averages (antialiasing), as PIL/torchvision do
    const ramp = { data: Uint8Array.from({ length: 8 }, (_, k) => k * 10), channels: 1, height: 1, width: 8 };
    const down = data.applyTransforms([data.resize([1, 4])], ramp).data;
    expect(down[1] * 255).toBeCloseTo(25, 3); // triangle over pixels 1..4 centred at 2.5: (10+20*3+30*3+40)/8
    const c = data.applyTransforms([data.centerCrop(4)], img);
    expect(c.shape).toEqual([1, 4, 4]);
    expect(at(c.data, 4, 0, 0)).toBe(1 + 2 * 8 + 2);
    const big = data.applyTransforms([data.centerCrop(10)], img); // larger than the image: zero padded
    expect([at(big.data, 10, 0, 0), at(big.data, 10, 1, 1)]).toEqual([0, 1]);
  });

  test('randomResizedCrop: output size, full-image crop equals resize, varied crops', () => {
    const full = data.applyTransforms([data.randomResizedCrop(4, [1, 1], [1, 1])], img, { index: 3 }).data;
    const resized = data.applyTransforms([data.resize([4, 4])], img).data;
    expect(Array.from(full)).toEqual(Array.from(resized));
    const outs = new Set<string>();
    for (let i = 0; i < 20; i++) {
      const r = data.applyTransforms([data.randomResizedCrop([5, 6])], img, { index: i });
      expect(r.shape).toEqual([1, 5, 6]);
      for (const v of r.data) expect(v).toBeGreaterThan(0); // crops stay inside the image
      outs.add(Array.from(r.data.slice(0, 6)).join());
    }
    expect(outs.size).toBeGreaterThan(10);
  });

  test('deterministic per (seed, epoch, index); different across epochs, seeds and samples', () => {
    const specs = [data.padCrop(2), data.flip(), data.randomResizedCrop(6, [0.3, 1])];
    const run = (seed: number, epoch: number, index: number) => Array.from(data.applyTransforms(specs, img, { seed, epoch, index }).data).join();
    expect(run(5, 2, 7)).toBe(run(5, 2, 7));
    const differs = (f: (k: number) => string, g: (k: number) => string) => Array.from({ length: 10 }, (_, k) => f(k) !== g(k)).filter(Boolean).length;
    expect(differs((k) => run(5, 0, k), (k) => run(5, 1, k))).toBeGreaterThan(7);
    expect(differs((k) => run(5, 0, k), (k) => run(6, 0, k))).toBeGreaterThan(7);
    expect(differs((k) => run(5, 0, k), (k) => run(5, 0, k + 1))).toBeGreaterThan(7);
  });

  test('specs are plain JSON; bad specs are ERR_ARG naming the spec', async () => {
    const specs = [data.padTo(32), data.padCrop(4), data.flip(), data.normalize('fashionMnist')];
    expect(JSON.parse(JSON.stringify(specs))).toEqual(specs);
    expect(data.compose(JSON.parse(JSON.stringify(specs)), [1, 28, 28]).outShape).toEqual([1, 32, 32]);
    await expectError(() => data.compose([{ type: 'rotate' } as never], [1, 8, 8]), 'ERR_ARG', /transforms\[0\]\.type/, /"rotate"/);
    await expectError(() => data.compose([data.flip(), data.padCrop(-1)], [1, 8, 8]), 'ERR_ARG', /transforms\[1\]\.pad/);
    await expectError(() => data.compose([data.padTo(4)], [1, 8, 8]), 'ERR_ARG', /padTo|transforms\[0\]\.size/, /8x8/);
    await expectError(() => data.compose([data.normalize('svhn' as never)], [1, 8, 8]), 'ERR_ARG', /preset/);
    await expectError(() => data.compose([data.flip(2)], [1, 8, 8]), 'ERR_ARG', /\.p/);
  });
});

describe('synthetic dataset', () => {
  test('shape, balanced labels, deterministic per seed, varied samples', async () => {
    const a = data.synthetic({ n: 200, size: 16, channels: 3, classes: 5, seed: 1 });
    expect([a.length, a.channels, a.height, a.width, a.numClasses]).toEqual([200, 3, 16, 16, 5]);
    expect(a.classes).toEqual(['horizontal', 'vertical', 'diagonal', 'antidiagonal', 'checkerboard']);
    const counts = new Array(5).fill(0);
    for (const l of a.labels()) counts[l]++;
    expect(counts).toEqual([40, 40, 40, 40, 40]);
    const b = data.synthetic({ n: 200, size: 16, channels: 3, classes: 5, seed: 1 });
    const c = data.synthetic({ n: 200, size: 16, channels: 3, classes: 5, seed: 2 });
    const px = async (d: data.Dataset, i: number) => Array.from((await d.image(i)).data);
    expect(await px(a, 17)).toEqual(await px(b, 17));
    expect(await px(a, 17)).not.toEqual(await px(c, 17));
    expect(await px(a, 0)).not.toEqual(await px(a, 5)); // same class, different draw
    const g = data.synthetic({ n: 10, channels: 1 });
    expect([g.channels, g.height, g.numClasses]).toEqual([1, 32, 10]);
    await expectError(() => data.synthetic({ n: 10, classes: 11 }), 'ERR_ARG', /classes/);
  });

  test('classes differ in structure, not in mean brightness (a nearest-mean classifier on raw pixels is weak)', async () => {
    const train = data.synthetic({ n: 1000, size: 16, channels: 1, seed: 3 });
    const test = data.synthetic({ n: 500, size: 16, channels: 1, seed: 4 });
    const per = 16 * 16;
    const means = Array.from({ length: 10 }, () => new Float64Array(per));
    for (let i = 0; i < train.length; i++) {
      const im = (await train.image(i)).data;
      const m = means[train.label(i)];
      for (let k = 0; k < per; k++) m[k] += im[k] / 100;
    }
    let correct = 0;
    for (let i = 0; i < test.length; i++) {
      const im = (await test.image(i)).data;
      let best = -1, bestD = Infinity;
      means.forEach((m, c) => {
        let d = 0;
        for (let k = 0; k < per; k++) d += (im[k] - m[k]) ** 2;
        if (d < bestD) [bestD, best] = [d, c];
      });
      if (best === test.label(i)) correct++;
    }
    expect(correct / test.length).toBeLessThan(0.5);
  });
});
