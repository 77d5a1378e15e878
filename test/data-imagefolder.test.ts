/** Image folders: class discovery, sharp decoding in workers and in the main thread, corrupt images. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ResnextError } from '../lib/native/errors';
import * as data from '../lib/data';

interface SharpLike {
  png(): SharpLike;
  jpeg(o?: { quality: number }): SharpLike;
  webp(o?: { lossless: boolean }): SharpLike;
  toFile(p: string): Promise<unknown>;
}
type SharpCreate = (o: { create: { width: number; height: number; channels: 1 | 3 | 4; background: object } }) => SharpLike;

let sharp: SharpCreate | null = null;
try {
  sharp = require('sharp') as SharpCreate;
} catch {
  console.warn('skipping the image folder tests: the npm package sharp is not installed');
}

let dir: string;
const loaders: data.DataLoader[] = [];

async function image(file: string, w: number, h: number, channels: 3 | 4, bg: object, fmt: 'png' | 'jpeg' | 'webp' = 'png'): Promise<void> {
  const p = path.join(dir, file);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  const img = sharp!({ create: { width: w, height: h, channels, background: bg } });
  await (fmt === 'png' ? img.png() : fmt === 'jpeg' ? img.jpeg({ quality: 95 }) : img.webp({ lossless: true })).toFile(p);
}

(sharp ? describe : describe.skip)('imageFolder', () => {
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'resnext-imgs-'));
    // classes sort as: blue, green, red (not creation order)
    await image('red/a.png', 10, 6, 3, { r: 255, g: 0, b: 0 });
    await image('red/b.PNG', 5, 5, 4, { r: 255, g: 0, b: 0, alpha: 1 });
    await image('red/nested/c.webp', 7, 9, 3, { r: 255, g: 0, b: 0 }, 'webp');
    await image('blue/a.png', 8, 8, 3, { r: 0, g: 0, b: 255 });
    await image('blue/b.jpg', 16, 12, 3, { r: 0, g: 0, b: 255 }, 'jpeg');
    await image('green/only.png', 3, 4, 3, { r: 0, g: 255, b: 0 });
    fs.writeFileSync(path.join(dir, 'green', 'notes.txt'), 'not an image');
    fs.mkdirSync(path.join(dir, '.hidden'));
  });
  afterAll(() => {
    for (const l of loaders) l.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('classes are sorted sub-folders; images anywhere below them; decoded to size', async () => {
    const ds = await data.imageFolder(dir, { size: 4 });
    expect(ds.classes).toEqual(['blue', 'green', 'red']);
    expect([ds.length, ds.channels, ds.height, ds.width]).toEqual([6, 3, 4, 4]);
    expect(Array.from(ds.labels())).toEqual([0, 0, 1, 2, 2, 2]);
    expect(ds.source.kind === 'files' && ds.source.files.map((f) => path.relative(dir, f))).toEqual([
      'blue/a.png', 'blue/b.jpg', 'green/only.png', 'red/a.png', 'red/b.PNG', 'red/nested/c.webp',
    ]);
    const red = await ds.image(4); // RGBA PNG: alpha dropped
    expect([red.channels, red.height, red.width]).toEqual([3, 4, 4]);
    expect(Array.from(red.data.subarray(0, 16))).toEqual(new Array(16).fill(255)); // R plane
    expect(Array.from(red.data.subarray(16))).toEqual(new Array(32).fill(0));
    const blueJpeg = await ds.image(1);
    for (const v of blueJpeg.data.subarray(32)) expect(v).toBeGreaterThan(240); // B plane, lossy
    const grey = await data.imageFolder(dir, { size: [2, 3], channels: 1 });
    const g = await grey.image(2);
    expect([g.channels, g.height, g.width]).toEqual([1, 2, 3]);
    expect(g.data[0]).toBeGreaterThan(100); // green is bright in luminance
  });

  test('loader batches: worker threads equal the main thread', async () => {
    const ds = await data.imageFolder(dir, { size: 8 });
    const specs = [data.randomResizedCrop(6), data.flip(), data.normalize('imagenet')];
    const run = async (workers: number) => {
      const l = new data.DataLoader(ds, { batchSize: 4, shuffle: true, seed: 2, transforms: specs, workers });
      loaders.push(l);
      const out: data.Batch[] = [];
      for await (const b of l.batches(0)) out.push(b);
      return out;
    };
    const [a, w] = await Promise.all([run(0), run(2)]);
    expect(w.map((b) => b.shape)).toEqual([[4, 3, 6, 6], [2, 3, 6, 6]]);
    w.forEach((b, k) => {
      expect(Array.from(b.y)).toEqual(Array.from(a[k].y));
      expect(Array.from(b.x)).toEqual(Array.from(a[k].x));
    });
    // a red sample, normalised: R = (1 - 0.485) / 0.229 everywhere
    const reds = w.flatMap((b) => Array.from(b.y).flatMap((y, k) => (y === 2 ? [b.x.subarray(k * 108, (k + 1) * 108)] : [])));
    expect(reds.length).toBe(3);
    for (const r of reds) {
      expect(r[0]).toBeCloseTo((1 - 0.485) / 0.229, 4);
      expect(r[36]).toBeCloseTo((0 - 0.456) / 0.224, 4); // G plane
    }
  });

  test('a corrupt image is ERR_IO naming the file, from image(), the main thread and workers', async () => {
    const bad = path.join(dir, 'green', 'broken.png');
    fs.writeFileSync(bad, Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.alloc(40, 3)]));
    try {
      const ds = await data.imageFolder(dir, { size: 4 });
      const i = ds.source.kind === 'files' ? ds.source.files.indexOf(bad) : -1;
      expect(i).toBeGreaterThanOrEqual(0);
      await expect(ds.image(i)).rejects.toMatchObject({ code: 'ERR_IO', message: expect.stringContaining(bad) });
      for (const workers of [0, 1]) {
        const l = new data.DataLoader(ds, { batchSize: 7, workers });
        loaders.push(l);
        let err: unknown;
        try {
          for await (const _ of l.batches(0)) {
            // consume
          }
        } catch (e) {
          err = e;
        }
        expect(err).toBeInstanceOf(ResnextError);
        expect((err as ResnextError).code).toBe('ERR_IO');
        expect((err as ResnextError).message).toContain(bad);
      }
    } finally {
      fs.unlinkSync(bad);
    }
  });

  test('missing folders and folders without images are ERR_IO', async () => {
    const missing = path.join(dir, 'missing');
    await expect(data.imageFolder(missing, { size: 4 })).rejects.toMatchObject({ code: 'ERR_IO', message: expect.stringContaining(missing) });
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'resnext-empty-'));
    fs.mkdirSync(path.join(empty, 'cls'));
    await expect(data.imageFolder(empty, { size: 4 })).rejects.toMatchObject({ code: 'ERR_IO', message: expect.stringMatching(/image files.*none/) });
    fs.rmSync(empty, { recursive: true });
    await expect(data.imageFolder(dir, { size: 0 })).rejects.toMatchObject({ code: 'ERR_ARG' });
  });
});
