/**
 * Classification and embeddings: vision.preprocess against torchvision's
 * `weights.transforms()` on PIL images (test/fixtures/preprocess, written by
 * scripts/fixtures/preprocess_fixtures.py), model.predict, model.forwardFeatures and the
 * ImageNet-1k class names.
 *
 * Tolerance (measured on these JPEG and PNG images, resize 232 and 256, crop 224). The default
 * resampler ('pil', lib/vision/resample.ts) follows PIL's fixed-point two-pass algorithm: on every
 * image here our uint8 crop is PIL's byte for byte and our float tensor equals torchvision's
 * (measured max abs difference 0; the fixture script checks that the stored crop rebuilds
 * torchvision's tensor exactly, reconstructionError 0). Asserted: PNG (lossless decode) 1e-5; JPEG,
 * where sharp's decoder (mozjpeg) and PIL's (libjpeg-turbo) could round an IDCT differently,
 * at most one uint8 level (1 / (255 * 0.224) = 0.0175) and mean < 0.001. With resampler 'sharp'
 * (libvips' linear kernel) it is within 3 levels (0.0525) and mean < 0.003 when the image is
 * shrunk; when it is enlarged (palette.png, 201 px high, to 232) libvips samples another grid and
 * hard edges differ by up to ~127 levels, which is why 'pil' is the default.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import * as rx from '../lib';

const dir = path.join(__dirname, 'fixtures', 'preprocess');
const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as {
  mean: number[];
  std: number[];
  cases: { image: string; size: [number, number]; mode: string; resizeSize: number; expected: string }[];
};
const LEVEL = 1 / (255 * Math.min(...manifest.std)); // one uint8 level after normalisation: 0.0175

/** torchvision's tensor, rebuilt exactly from the stored uint8 crop (see the fixture script). */
async function expected(file: string): Promise<Float32Array> {
  const { data, info } = await sharp(path.join(dir, file)).raw().toBuffer({ resolveWithObject: true });
  expect([info.width, info.height, info.channels]).toEqual([224, 224, 3]);
  const out = new Float32Array(3 * 224 * 224);
  const { mean, std } = manifest;
  for (let p = 0; p < 224 * 224; p++) for (let c = 0; c < 3; c++) out[c * 224 * 224 + p] = (data[p * 3 + c] / 255 - mean[c]) / std[c];
  return out;
}

function diff(a: Float32Array, b: Float32Array): { max: number; mean: number } {
  expect(a.length).toBe(b.length);
  let max = 0, sum = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    max = Math.max(max, d);
    sum += d;
  }
  return { max, mean: sum / a.length };
}

describe('preprocess against torchvision (PIL) on JPEG and PNG images', () => {
  test.each(manifest.cases.map((c) => [c.image, c.resizeSize, c] as const))('%s, resize %d, resampler pil: torchvision\'s tensor', async (_n, _r, c) => {
    const ours = await rx.vision.preprocessImage(path.join(dir, c.image), { resizeSize: c.resizeSize });
    const d = diff(ours, await expected(c.expected));
    process.stdout.write(`preprocess pil ${c.image} (${c.size.join('x')} ${c.mode}) resize ${c.resizeSize}: max abs ${d.max.toExponential(2)}, mean abs ${d.mean.toExponential(2)}\n`);
    if (c.image.endsWith('.png')) expect(d.max).toBeLessThan(1e-5);
    else {
      expect(d.max).toBeLessThanOrEqual(LEVEL * 1.001);
      expect(d.mean).toBeLessThan(0.001);
    }
  });

  test.each(manifest.cases.map((c) => [c.image, c.resizeSize, c] as const))('%s, resize %d, resampler sharp: within 3 levels when shrinking', async (_n, _r, c) => {
    const ours = await rx.vision.preprocessImage(path.join(dir, c.image), { resizeSize: c.resizeSize, resampler: 'sharp' });
    const d = diff(ours, await expected(c.expected));
    const shrinks = Math.min(...c.size) > c.resizeSize;
    process.stdout.write(`preprocess sharp ${c.image} resize ${c.resizeSize} (${shrinks ? 'shrink' : 'enlarge'}): max abs ${d.max.toFixed(4)}, mean abs ${d.mean.toFixed(5)}\n`);
    if (shrinks) {
      expect(d.max).toBeLessThanOrEqual(3 * LEVEL * 1.001);
      expect(d.mean).toBeLessThan(0.003);
    }
  });

  test('a batch is the images stacked; bytes work like paths; V1 weights resize to 256', async () => {
    const files = ['landscape.jpg', 'rgba.png'].map((f) => path.join(dir, f));
    const x = await rx.vision.preprocess([files[0], fs.readFileSync(files[1])]);
    try {
      expect(x.shape).toEqual([2, 3, 224, 224]);
      const all = x.dataSync() as Float32Array;
      const one = await rx.vision.preprocessImage(files[1]);
      expect(diff(all.subarray(3 * 224 * 224), one).max).toBe(0);
    } finally {
      x.dispose();
    }
    expect(rx.vision.imagenetPreprocessing('/w/resnext50_32x4d-7cdf4587.pth')).toEqual({ resizeSize: 256, cropSize: 224 });
    expect(rx.vision.imagenetPreprocessing('resnext50_32x4d-1a0047aa.safetensors')).toEqual({ resizeSize: 232, cropSize: 224 });
    expect(rx.vision.imagenetPreprocessing('mine.pth')).toEqual({ resizeSize: 232, cropSize: 224 });
    expect(rx.vision.resizedSize(500, 375, 232)).toEqual([309, 232]);
  });

  test('tiny images are enlarged; a crop larger than the resize is padded with 0 before normalising', async () => {
    const px = await sharp(Buffer.from([200, 100, 50]), { raw: { width: 1, height: 1, channels: 3 } }).png().toBuffer();
    const a = await rx.vision.preprocessImage(px, { resizeSize: 8, cropSize: 10 });
    const { mean, std } = manifest;
    for (let c = 0; c < 3; c++) {
      const v = [200, 100, 50][c];
      expect(a[c * 100 + 5 * 10 + 5]).toBeCloseTo((v / 255 - mean[c]) / std[c], 5); // inside: the pixel's colour
      expect(a[c * 100]).toBeCloseTo(-mean[c] / std[c], 5); // the padded corner
    }
  });

  test('missing and undecodable files are ERR_IO naming the file; bad options ERR_ARG', async () => {
    const bad = path.join(os.tmpdir(), `rx-not-an-image-${process.pid}.jpg`);
    fs.writeFileSync(bad, 'this is text');
    try {
      await expect(rx.vision.preprocess(bad)).rejects.toMatchObject({ code: 'ERR_IO', message: expect.stringContaining(bad) });
    } finally {
      fs.rmSync(bad);
    }
    await expect(rx.vision.preprocess('/no/such/image.png')).rejects.toMatchObject({ code: 'ERR_IO', message: expect.stringContaining('/no/such/image.png') });
    await expect(rx.vision.preprocess([])).rejects.toMatchObject({ code: 'ERR_ARG' });
    await expect(rx.vision.preprocess(path.join(dir, 'grey.jpg'), { resizeSize: 0 })).rejects.toMatchObject({ code: 'ERR_ARG' });
    await expect(rx.vision.preprocess(42 as unknown as string)).rejects.toMatchObject({ code: 'ERR_ARG' });
  });
});

test('the 1000 ImageNet-1k class names in torchvision order', () => {
  const c = rx.vision.IMAGENET_CLASSES;
  expect(c).toHaveLength(1000);
  expect(new Set(c).size).toBe(1000);
  expect([c[0], c[1], c[207], c[281], c[999]]).toEqual(['tench', 'goldfish', 'golden retriever', 'tabby', 'toilet tissue']);
});

describe('predict and forwardFeatures on a small ResNeXt', () => {
  let model: rx.models.ResNet;
  beforeAll(() => {
    rx.manualSeed(3);
    model = rx.models.resnext({ layers: [1, 1, 1, 1], groups: 8, widthPerGroup: 4 });
  });
  afterAll(() => model.dispose());
  const images = ['landscape.jpg', 'portrait.png', 'grey.jpg'].map((f) => path.join(dir, f));

  test('forwardFeatures is [N, fc.inFeatures] and fc of it is forward', () => {
    model.eval();
    rx.tidy(() =>
      rx.noGrad(() => {
        const x = rx.randn([2, 3, 64, 64]);
        const f = model.forwardFeatures(x);
        expect(f.shape).toEqual([2, 2048]);
        const a = model.fc.forward(f).dataSync();
        const b = model.forward(x).dataSync();
        expect(Array.from(a)).toEqual(Array.from(b));
      }),
    );
  });

  test('top-k classes with ImageNet names and softmax probabilities, eval mode, mode restored', async () => {
    model.train();
    const preds = await model.predict(images, { topk: 3, batchSize: 2 });
    expect(model.training).toBe(true);
    expect(preds).toHaveLength(3);
    const x = await rx.vision.preprocess(images);
    model.eval();
    const logits = rx.tidy(() => rx.noGrad(() => model.forward(x).dataSync()));
    x.dispose();
    preds.forEach((p, i) => {
      expect(p).toHaveLength(3);
      const row = Array.from(logits.subarray(i * 1000, (i + 1) * 1000));
      const max = Math.max(...row);
      const z = row.reduce((s, v) => s + Math.exp(v - max), 0);
      const order = row.map((v, j) => [v, j]).sort((a, b) => b[0] - a[0]);
      p.forEach((q, r) => {
        expect(q.index).toBe(order[r][1]);
        expect(q.label).toBe(rx.vision.IMAGENET_CLASSES[q.index]);
        expect(q.probability).toBeCloseTo(Math.exp(row[q.index] - max) / z, 5);
        if (r > 0) expect(q.probability).toBeLessThanOrEqual(p[r - 1].probability);
      });
    });
  });

  test('own labels for other class counts; bad options are ERR_ARG', async () => {
    const small = rx.models.resnext({ layers: [1, 1, 1, 1], groups: 8, widthPerGroup: 4, numClasses: 3 });
    try {
      const [p] = await small.predict(images[0], { labels: ['cat', 'dog', 'bird'] });
      expect(p).toHaveLength(3);
      expect(p.map((q) => q.label).sort()).toEqual(['bird', 'cat', 'dog']);
      expect(p.reduce((s, q) => s + q.probability, 0)).toBeCloseTo(1, 6);
      const [d] = await small.predict(images[0], { topk: 1 });
      expect(d[0].label).toBe(`class ${d[0].index}`);
      await expect(small.predict(images[0], { labels: ['a'] })).rejects.toMatchObject({ code: 'ERR_ARG' });
      await expect(small.predict(images[0], { topk: 0 })).rejects.toMatchObject({ code: 'ERR_ARG' });
    } finally {
      small.dispose();
    }
  });
});
