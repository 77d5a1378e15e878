/**
 * Fine-tuning from pretrained weights (issue 13). A small torchvision-layout ResNeXt
 * (layers [1, 1, 1, 1], 8 groups of width 4) is "pretrained" here on one task (which of four
 * hues: random shapes, sizes, places, shades), saved with io.saveTorch, and loaded with a new
 * 2-class head for another task on new images (warm: red or yellow, vs cool: green or blue). Trainer's
 * freezeBackbone trains the head only, the backbone's BatchNorm in eval mode; accuracy must
 * rise well above what the frozen features give with the fresh head at step 0. Then
 * backboneLrScale and the CLI flags (`resnext train --weights --freeze-backbone ...`).
 * Images are PNGs drawn with sharp (SVG) into a temporary image folder.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as rx from '../lib';

type Sharp = (input: Buffer) => { png(): { toFile(p: string): Promise<unknown> } };
let sharp: Sharp | null = null;
try {
  sharp = require('sharp') as Sharp;
} catch {
  console.warn('skipping the fine-tuning tests: the npm package sharp is not installed');
}

const SIZE = 32;
const tiny = { layers: [1, 1, 1, 1], groups: 8, widthPerGroup: 4 };
let dir: string;
let pretrained: string;
const loaders: rx.data.DataLoader[] = [];

/** A deterministic generator (mulberry32), so the images are the same on every run. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Task A's classes (hue centres in degrees); task B groups them into warm and cool. */
const HUES = { blue: 230, green: 120, red: 0, yellow: 55 } as const;
type Hue = keyof typeof HUES;

/** A random shape (circle, square or triangle) of a jittered hue on a grey background. */
function svg(hue: Hue, r: () => number): Buffer {
  const shape = Math.floor(r() * 3);
  const fill = `hsl(${HUES[hue] + (r() - 0.5) * 30},${70 + r() * 30}%,${40 + r() * 25}%)`;
  const s = SIZE * (0.28 + r() * 0.15);
  const cx = s + r() * (SIZE - 2 * s);
  const cy = s + r() * (SIZE - 2 * s);
  const body =
    shape === 0
      ? `<circle cx="${cx}" cy="${cy}" r="${s}" fill="${fill}"/>`
      : shape === 1
        ? `<rect x="${cx - s * 0.85}" y="${cy - s * 0.85}" width="${s * 1.7}" height="${s * 1.7}" fill="${fill}"/>`
        : `<polygon points="${cx},${cy - s} ${cx + s},${cy + s} ${cx - s},${cy + s}" fill="${fill}"/>`;
  const g = Math.floor(r() * 80) + (r() < 0.5 ? 0 : 170);
  return Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg" width="${SIZE}" height="${SIZE}"><rect width="100%" height="100%" fill="rgb(${g},${g},${g})"/>${body}</svg>`);
}

/** Writes root/{train,val}/<class>/<i>.png, `count` images per hue; classOf maps a hue to its class folder. */
async function folder(root: string, count: { train: number; val: number }, classOf: (h: Hue) => string, seed: number): Promise<void> {
  const r = rng(seed);
  for (const split of ['train', 'val'] as const)
    for (const hue of Object.keys(HUES) as Hue[])
      for (let i = 0; i < count[split]; i++) {
        const d = path.join(root, split, classOf(hue));
        fs.mkdirSync(d, { recursive: true });
        await sharp!(svg(hue, r)).png().toFile(path.join(d, `${hue}-${i}.png`));
      }
}

async function loader(root: string, split: 'train' | 'val', shuffle: boolean): Promise<rx.data.DataLoader> {
  const ds = await rx.data.imageFolder(path.join(root, split), { size: SIZE });
  const l = new rx.data.DataLoader(ds, { batchSize: 16, shuffle, seed: 3, transforms: [rx.data.normalize('imagenet')], workers: 0 });
  loaders.push(l);
  return l;
}

const quiet = { write: () => true } as unknown as NodeJS.WritableStream;
const bytes = (t: rx.Tensor) => Buffer.from(t.dataSync().buffer);

(sharp ? describe : describe.skip)('fine-tuning a pretrained model', () => {
  let taskB: string;
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'resnext-finetune-'));
    const taskA = path.join(dir, 'colours');
    taskB = path.join(dir, 'warm-vs-cool');
    await folder(taskA, { train: 48, val: 16 }, (h) => h, 1);
    await folder(taskB, { train: 24, val: 20 }, (h) => (h === 'red' || h === 'yellow' ? 'warm' : 'cool'), 2);
    // "Pretraining": task A (which of 4 hues) from scratch, 3 epochs of 12 steps.
    rx.manualSeed(5);
    const model = rx.models.resnext({ ...tiny, numClasses: 4 });
    const optimizer = new rx.optim.SGD(model.parameters(), { lr: 0.02, momentum: 0.9, weightDecay: 1e-4 });
    const trainer = new rx.train.Trainer({ model, optimizer, progress: false, stream: quiet });
    await trainer.fit(await loader(taskA, 'train', true), { epochs: 3 });
    const a = await trainer.evaluate(await loader(taskA, 'val', false));
    process.stderr.write(`pretraining on 4 hues: val top-1 ${(100 * a.top1).toFixed(1)}%\n`);
    expect(a.top1).toBeGreaterThan(0.6);
    pretrained = path.join(dir, 'pretrained.pth');
    await rx.io.saveTorch(pretrained, model.stateDict());
    model.dispose();
    optimizer.dispose();
  }, 120000);
  afterAll(() => {
    for (const l of loaders) l.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('freezeBackbone: the head learns the new task on frozen features; the backbone, BN statistics included, stays as loaded', async () => {
    rx.manualSeed(6);
    const m = await rx.models.resnext({ ...tiny, numClasses: 2, weights: pretrained });
    const before = Object.fromEntries(Object.entries(m.stateDict()).map(([k, t]) => [k, bytes(t)]));
    const optimizer = new rx.optim.SGD(m.parameters(), { lr: 0.05, momentum: 0.9 });
    const trainer = new rx.train.Trainer({ model: m, optimizer, freezeBackbone: true, progress: false, stream: quiet });
    const val = await loader(taskB, 'val', false);
    const step0 = await trainer.evaluate(val);
    const r = await trainer.fit(await loader(taskB, 'train', true), { epochs: 4 });
    const after = await trainer.evaluate(val);
    process.stderr.write(
      `fine-tuning the head only: val top-1 ${(100 * step0.top1).toFixed(1)}% at step 0 -> ${(100 * after.top1).toFixed(1)}% after ${r.steps} steps\n`,
    );
    expect(after.top1).toBeGreaterThanOrEqual(0.8);
    expect(after.top1).toBeGreaterThan(step0.top1 + 0.15);
    for (const [k, t] of Object.entries(m.stateDict())) {
      const same = bytes(t).equals(before[k]);
      expect([k, same]).toEqual([k, !k.startsWith('fc.')]);
    }
    expect(m.conv1.weight.requiresGrad).toBe(false);
    m.dispose();
    optimizer.dispose();
  }, 60000);

  test('backboneLrScale: the backbone trains at a fraction of the head\'s learning rate', async () => {
    const m = await rx.models.resnext({ ...tiny, numClasses: 2, weights: pretrained });
    const w0 = Float32Array.from(m.stateDict()['layer1.0.conv2.weight'].dataSync());
    const optimizer = new rx.optim.SGD(m.parameters(), { lr: 0.02 });
    const trainer = new rx.train.Trainer({ model: m, optimizer, backboneLrScale: 0.25, progress: false, stream: quiet });
    const names = m.namedParameters().map(([n]) => n);
    expect(optimizer.lrScales.filter((s, i) => s === (names[i].startsWith('fc.') ? 1 : 0.25)).length).toBe(names.length);
    const ls: number[] = [];
    const stop = new AbortController(); // two steps are enough to see the backbone move
    await trainer.fit(await loader(taskB, 'train', true), { epochs: 1, signal: stop.signal, onStep: (s) => ls.push(s.lr) === 2 && stop.abort() });
    expect(ls.length).toBe(2);
    const w1 = m.stateDict()['layer1.0.conv2.weight'].dataSync();
    let moved = 0;
    for (let i = 0; i < w0.length; i++) moved = Math.max(moved, Math.abs(w1[i] - w0[i]));
    expect(moved).toBeGreaterThan(0);
    expect(ls.every((lr) => lr === 0.02)).toBe(true);
    expect(() => new rx.train.Trainer({ model: m, optimizer, backboneLrScale: -1 })).toThrow(/backboneLrScale/);
    expect(() => new rx.train.Trainer({ model: m, optimizer, freezeBackbone: true, head: 'classifier' })).toThrow(/classifier/);
    m.dispose();
    optimizer.dispose();
  }, 60000);

  test('resnext train --dataset folder --weights FILE --num-classes K --freeze-backbone', async () => {
    const { main } = await import('../lib/cli/main');
    const ck = path.join(dir, 'ck');
    const out = jest.spyOn(process.stdout, 'write').mockImplementation(() => true);
    const err = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const args = [
      'train', '--dataset', 'folder', '--data', taskB, '--model', 'resnext', '--layers', '1,1,1,1', '--cardinality', '8', '--width', '4',
      '--weights', pretrained, '--num-classes', '2', '--freeze-backbone', '--epochs', '1', '--batch-size', '32', '--size', String(SIZE),
      '--augment', 'none', '--workers', '0', '--lr', '0.05', '--checkpoint-dir', ck, '--json', '--no-progress',
    ];
    let code: number;
    let summary: { testTop1: number; steps: number };
    let log: string;
    try {
      code = await main(args);
      summary = JSON.parse(String(out.mock.calls.at(-1)![0]));
      log = err.mock.calls.map((c) => String(c[0])).join('');
      await expect(main(args.map((a) => (a === '2' ? '3' : a)))).rejects.toMatchObject({ code: 'ERR_ARG', message: expect.stringMatching(/--num-classes/) });
      await expect(main(args.filter((a, i) => a !== '--weights' && args[i - 1] !== '--weights'))).rejects.toMatchObject({ message: expect.stringMatching(/--weights/) });
    } finally {
      out.mockRestore();
      err.mockRestore();
    }
    expect(code).toBe(0);
    expect(summary.steps).toBe(3); // 96 images, batch 32
    expect(summary.testTop1).toBeGreaterThanOrEqual(0);
    expect(log).toMatch(/new 2-class head \(fc\.weight, fc\.bias\)/);
    // The checkpoint: a 2-class head, and the backbone exactly as pretrained.
    const ckpt = await rx.train.loadCheckpoint(ck);
    const pre = await rx.io.loadTorch(pretrained);
    try {
      expect(ckpt.model['fc.weight'].shape).toEqual([2, 2048]);
      for (const [k, t] of Object.entries(pre)) if (!k.startsWith('fc.')) expect([k, bytes(ckpt.model[k]).equals(bytes(t))]).toEqual([k, true]);
    } finally {
      rx.train.disposeCheckpoint(ckpt);
      for (const t of Object.values(pre)) t.dispose();
    }
  }, 60000);
});
