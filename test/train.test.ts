/** Optimiser, schedules, the Trainer (metrics, logs, abort, checkpoints, exact resume) and crash-safe saving. */
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import * as rx from '../lib';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'rx-train-'));
const quiet = new Writable({ write: (_c, _e, cb) => cb() });

function setup(seed = 0, opts: { decay?: boolean } = {}) {
  rx.manualSeed(seed);
  const model = rx.models.resnext29({ cardinality: 2, width: 2, stemChannels: 8, stageChannels: [16, 32, 32], blocksPerStage: 1, numClasses: 4 });
  const optimizer = new rx.optim.SGD(model.parameters(), { lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 5e-4, decayBnAndBias: opts.decay ?? true });
  return { model, optimizer };
}
const trainSet = rx.data.synthetic({ n: 96, size: 12, classes: 4, seed: 3 });
const testSet = rx.data.synthetic({ n: 48, size: 12, classes: 4, seed: 4 });
const loader = (ds: rx.data.Dataset, shuffle: boolean) =>
  new rx.data.DataLoader(ds, { batchSize: 16, shuffle, seed: 11, transforms: [rx.data.flip(), rx.data.normalize(0.5, 0.25)], workers: 0 });

describe('optim', () => {
  test('decayBnAndBias: false leaves 1-D parameters out of weight decay', () => {
    const w = rx.ones([2, 2, 1, 1], { requiresGrad: true });
    const b = rx.ones([2], { requiresGrad: true });
    const opt = new rx.optim.SGD([w, b], { lr: 1, weightDecay: 0.5, decayBnAndBias: false });
    w.grad = rx.zeros([2, 2, 1, 1]);
    b.grad = rx.zeros([2]);
    opt.step();
    expect(Array.from(w.dataSync())).toEqual([0.5, 0.5, 0.5, 0.5]);
    expect(Array.from(b.dataSync())).toEqual([1, 1]);
    for (const t of [w, b, w.grad, b.grad]) t.dispose();
  });

  test('schedules: multi-step and cosine with warm-up', () => {
    const m = new rx.optim.MultiStepLR(0.1, [10, 20]);
    expect([0, 9, 10, 19, 20, 100].map((s) => +m.lrAt(s).toPrecision(6))).toEqual([0.1, 0.1, 0.01, 0.01, 0.001, 0.001]);
    const c = new rx.optim.CosineLR(1, 110, 10, 0, 0);
    expect(c.lrAt(0)).toBe(0);
    expect(c.lrAt(5)).toBeCloseTo(0.5);
    expect(c.lrAt(10)).toBeCloseTo(1);
    expect(c.lrAt(60)).toBeCloseTo(0.5);
    expect(c.lrAt(110)).toBeCloseTo(0);
    expect(rx.optim.scheduleFromJSON(c.toJSON()).lrAt(37)).toBe(c.lrAt(37));
  });
});

describe('Trainer', () => {
  test('fit trains, validates (loss, top-1, top-5), logs JSONL and keeps the event loop turning', async () => {
    const { model, optimizer } = setup(1);
    const dir = tmp();
    const log = path.join(dir, 'metrics.jsonl');
    const trainer = new rx.train.Trainer({ model, optimizer, schedule: new rx.optim.CosineLR(0.05, 18), logFile: log, logEvery: 2, stream: quiet });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const r = await trainer.fit(loader(trainSet, true), { epochs: 3, validation: loader(testSet, false) });
    clearInterval(timer);
    expect(r.aborted).toBe(false);
    expect(r.losses).toHaveLength(18);
    expect(r.history).toHaveLength(3);
    expect(r.history[2].trainLoss).toBeLessThan(r.history[0].trainLoss);
    for (const h of r.history) {
      expect(h.valTop1).toBeGreaterThanOrEqual(0);
      expect(h.valTop5).toBeGreaterThanOrEqual(h.valTop1!);
      expect(h.valTop5).toBe(1); // 4 classes: the top 5 always contain the label
    }
    expect(ticks).toBeGreaterThan(3);
    const lines = fs.readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.filter((l) => l.type === 'step')).toHaveLength(9);
    expect(lines.filter((l) => l.type === 'epoch').map((l) => l.epoch)).toEqual([1, 2, 3]);
    model.dispose();
    optimizer.dispose();
  });

  test('an interrupted-then-resumed run reproduces the uninterrupted run\'s losses exactly (CPU)', async () => {
    const full = setup(5);
    const a = await new rx.train.Trainer({ ...full, schedule: new rx.optim.CosineLR(0.05, 18, 3), stream: quiet }).fit(loader(trainSet, true), { epochs: 3 });
    full.model.dispose();

    const dir = tmp();
    const first = setup(5);
    const ctl = new AbortController();
    const t1 = new rx.train.Trainer({ ...first, schedule: new rx.optim.CosineLR(0.05, 18, 3), checkpointDir: dir, stream: quiet });
    const b = await t1.fit(loader(trainSet, true), { epochs: 3, signal: ctl.signal, onStep: (s) => s.step === 8 && ctl.abort() });
    expect(b.aborted).toBe(true);
    expect(b.losses).toHaveLength(8); // stopped mid-epoch 2 (6 steps per epoch)
    first.model.dispose();

    const second = setup(99); // different initial weights: everything must come from the checkpoint
    const t2 = new rx.train.Trainer({ ...second, schedule: new rx.optim.CosineLR(0.05, 18, 3), checkpointDir: dir, stream: quiet });
    const c = await t2.fit(loader(trainSet, true), { epochs: 3, resume: true });
    expect(c.aborted).toBe(false);
    expect([...b.losses, ...c.losses]).toEqual(a.losses);
    expect(t2.step).toBe(18);
    second.model.dispose();
  });

  test('checkpoints: torchvision names in model.safetensors, state.json, pruning, and errors for bad paths', async () => {
    const { model, optimizer } = setup(2);
    const dir = tmp();
    await new rx.train.Trainer({ model, optimizer, checkpointDir: dir, keepCheckpoints: 2, stream: quiet }).fit(loader(trainSet, true), { epochs: 3 });
    const steps = fs.readdirSync(dir).filter((f) => f.startsWith('step-')).sort();
    expect(steps).toEqual(['step-00000012', 'step-00000018']);
    expect(fs.readFileSync(path.join(dir, 'latest'), 'utf8').trim()).toBe('step-00000018');
    const ck = await rx.train.loadCheckpoint(dir);
    expect(ck.state.epoch).toBe(3);
    expect(ck.state.step).toBe(18);
    expect(Object.keys(ck.model)).toContain('stage1.0.conv2.weight');
    expect(Object.keys(ck.model)).toContain('bn1.num_batches_tracked');
    expect(Object.keys(ck.optimizer)).toContain('fc.weight');
    rx.train.disposeCheckpoint(ck);
    await expect(rx.train.loadCheckpoint(path.join(dir, 'nope'))).rejects.toMatchObject({ code: 'ERR_IO' });
    // A damaged state.json is ERR_IO naming the field (it used to resume into a TypeError).
    const state = path.join(dir, 'step-00000018', 'state.json');
    const good = JSON.parse(fs.readFileSync(state, 'utf8'));
    for (const [field, patch] of [
      ['optimizer.hasBuffer', { optimizer: { ...good.optimizer, hasBuffer: 'yes' } }],
      ['rng', { rng: null }],
      ['history', { history: {} }],
      ['epoch', { epoch: -1 }],
      ['the whole file', null],
    ] as const) {
      fs.writeFileSync(state, JSON.stringify(patch === null ? [] : { ...good, ...patch }));
      await expect(rx.train.loadCheckpoint(dir)).rejects.toMatchObject({ code: 'ERR_IO', message: expect.stringContaining(field) });
    }
    // A `latest` that is a directory is ERR_IO, not a raw EISDIR.
    const other = tmp();
    fs.mkdirSync(path.join(other, 'latest'));
    await expect(rx.train.loadCheckpoint(other)).rejects.toMatchObject({ code: 'ERR_IO', message: expect.stringContaining('a directory') });
    model.dispose();
    optimizer.dispose();
  });

  test('a process killed while saving checkpoints never leaves an unreadable latest checkpoint', async () => {
    const dir = tmp();
    const script = path.join(dir, 'saver.js');
    // Saves checkpoints back to back until killed.
    fs.writeFileSync(
      script,
      `const rx = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))});
       const m = rx.models.resnext29({ cardinality: 2, width: 2, stemChannels: 8, stageChannels: [16, 32, 64], numClasses: 4 });
       const o = new rx.optim.SGD(m.parameters(), { lr: 0.1 });
       (async () => { for (let s = 1; ; s++) {
         await rx.train.saveCheckpoint(${JSON.stringify(path.join(dir, 'ck'))}, m, o, { version: 1, epoch: 0, batchInEpoch: s, step: s,
           optimizer: { step: s, lr: 0.1, options: {}, hasBuffer: [] }, schedule: null, rng: { seed: 0, offset: 0 }, dataSeed: 0, history: [], savedAt: '' });
         if (s === 2) process.stdout.write('ready\\n');
       } })();`,
    );
    for (let round = 0; round < 3; round++) {
      const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
      await new Promise((r) => setTimeout(r, 30 + 40 * round));
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      const ck = await rx.train.loadCheckpoint(path.join(dir, 'ck'));
      expect(Object.keys(ck.model).length).toBeGreaterThan(10);
      expect(ck.state.step).toBeGreaterThanOrEqual(2);
      rx.train.disposeCheckpoint(ck);
    }
  }, 60000);
});

describe('CLI', () => {
  const cli = path.join(__dirname, '..', 'dist', 'cli', 'main.js');
  const run = (args: string[]) => {
    try {
      return { code: 0, out: execFileSync(process.execPath, [cli, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }) };
    } catch (e) {
      const err = e as { status: number; stdout: string; stderr: string };
      return { code: err.status, out: err.stdout, err: err.stderr };
    }
  };

  test('info prints per-layer rows and totals; --json for machines', () => {
    const r = run(['info', 'resnext50_32x4d', '--json']);
    const j = JSON.parse(r.out);
    expect(j.params).toBe(25_028_904);
    expect(Math.abs(j.macs / 1e9 - 4.23)).toBeLessThan(0.01);
    expect(j.layers.find((l: { name: string }) => l.name === 'layer1.0.conv2').macs).toBe(56 * 56 * 128 * 4 * 9);
    expect(run(['info', 'resnext29_8x64d']).out).toMatch(/34,4\d\d,\d\d\d parameters/);
  });

  test('train, then eval the checkpoint, on the built-in dataset', () => {
    const dir = tmp();
    const t = run(['train', '--epochs', '1', '--synthetic-size', '256', '--size', '16', '--batch-size', '32', '--workers', '0', '--checkpoint-dir', dir, '--json', '--no-progress']);
    expect(t.code).toBe(0);
    const s = JSON.parse(t.out.trim().split('\n').at(-1)!);
    expect(s.epochs).toBe(1);
    expect(s.testTop1).toBeGreaterThan(0);
    const e = run(['eval', '--checkpoint', dir, '--workers', '0', '--json']);
    expect(e.code).toBe(0);
    expect(JSON.parse(e.out).top1).toBeCloseTo(s.testTop1, 6);
  });

  test('usage errors say what to fix and exit with 2', () => {
    const r = run(['train', '--epoch', '3']);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/unknown option '--epoch'.*resnext train --help/);
    expect(run(['train', '--model', 'vgg']).err).toMatch(/--model expected one of resnext29/);
    expect(run(['frobnicate']).code).toBe(2);
    expect(run(['eval']).err).toMatch(/--checkpoint expected a checkpoint directory/);
    expect(run(['train', '--help']).out).toMatch(/--checkpoint-dir DIR/);
  });
});
