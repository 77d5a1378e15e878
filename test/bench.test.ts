/** resnext bench (issue 5): result schema, Markdown/SVG outputs, fixed-complexity MACs, --compare, argument errors. No timing assertions. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as rx from '../lib';
import {
  type BenchRun, compareRows, familyComplexity, parseBenchArgs, readReference, runBench, SCHEMA, selectModels, speedModels, sweepModels, welch,
} from '../lib/cli/bench';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'rx-bench-'));
const quiet = () => {};

/** Tags are balanced (self-closing tags aside) and the document is one <svg> element. */
function checkXmlish(s: string): void {
  expect(s.trimStart().startsWith('<svg')).toBe(true);
  expect(s.trimEnd().endsWith('</svg>')).toBe(true);
  const stack: string[] = [];
  for (const m of s.matchAll(/<(\/?)([a-zA-Z][\w:-]*)([^>]*?)(\/?)>/g)) {
    const [, close, name, , self] = m;
    if (self) continue;
    if (close) expect(stack.pop()).toBe(name);
    else stack.push(name);
  }
  expect(stack).toEqual([]);
  expect(s).not.toMatch(/NaN|undefined|Infinity/);
}

describe('bench: a tiny speed run in-process', () => {
  let run: BenchRun;
  let out: string;
  beforeAll(async () => {
    out = tmp();
    const o = parseBenchArgs(['--device', 'cpu', '--models', 'resnext50_32x4d,resnext29_32x4d', '--batch', '2', '--size', '32', '--cifar-size', '16', '--reps', '2', '--warmup', '1', '--out', out]);
    run = await runBench(o!, { log: quiet, argv: ['bench', '--tiny'] });
  });

  test('JSON result: schema, environment, one row per model with train and infer timings', () => {
    const j = JSON.parse(fs.readFileSync(run.files.json, 'utf8'));
    expect(j.schema).toBe(SCHEMA);
    expect(typeof j.createdAt).toBe('string');
    expect(j.config).toMatchObject({ device: 'cpu', precision: 'fp32', suite: 'speed', imagenet: { batch: 2, size: 32, reps: 2, warmup: 1 }, cifar: { size: 16 } });
    const e = j.env;
    expect(e.node).toBe(process.version);
    expect(typeof e.cpu.model).toBe('string');
    expect(e.cpu.threads).toBeGreaterThanOrEqual(1);
    expect(e.package).toEqual({ name: 'resnext', version: JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')).version });
    expect(e.git.commit === null || /^[0-9a-f]{40}$/.test(e.git.commit)).toBe(true);
    expect(e.loadavg.start).toHaveLength(3);
    expect(e.loadavg.end).toHaveLength(3);
    expect(e.gpu).toBeNull();
    expect(typeof e.cuda.available).toBe('boolean');
    expect(j.accuracy).toBeNull();
    expect(j.compare).toBeNull();
    expect(j.speed.notes.length).toBeGreaterThan(3);
    expect(j.speed.rows.map((r: { name: string }) => r.name)).toEqual(['resnext50_32x4d', 'resnext29_32x4d']);
    for (const r of j.speed.rows) {
      expect(r.error).toBeUndefined();
      expect(r.params).toBeGreaterThan(0);
      expect(r.macs).toBeGreaterThan(0);
      expect(r.macsRef.macs).toBeGreaterThan(0);
      for (const mode of ['train', 'infer']) {
        const t = r[mode];
        expect(t.batch).toBe(2);
        expect(t.samplesMs).toHaveLength(2);
        expect(t.ms.n).toBe(2);
        expect(t.ms.min).toBeLessThanOrEqual(t.ms.median);
        expect(t.ms.median).toBeLessThanOrEqual(t.ms.max);
        expect(t.imgPerSec.min).toBeLessThanOrEqual(t.imgPerSec.median);
        expect(t.imgPerSec.median).toBeCloseTo((1000 * 2) / t.ms.median, 6);
      }
      expect(r.train.peakMemBytes).toBeGreaterThan(r.train.stateBytes);
      expect(r.train.stateBytes).toBeGreaterThanOrEqual(8 * r.params); // weights + momentum in fp32
    }
    const [r50, c29] = j.speed.rows;
    expect(r50.params).toBe(25_028_904);
    expect(r50.macsRef).toEqual({ size: 224, macs: expect.any(Number) });
    expect(r50.macsRef.macs / 1e9).toBeCloseTo(4.23, 1);
    expect(c29.families).toEqual(['resnext29-fixed']);
    expect(c29.macsRef.size).toBe(32);
  });

  test('Markdown table and SVG chart are written and well-formed', () => {
    const md = fs.readFileSync(run.files.markdown, 'utf8');
    expect(md).toMatch(/^# resnext bench: cpu, fp32/);
    const rows = md.split('\n').filter((l) => l.startsWith('|'));
    expect(rows.length).toBe(2 + 2); // header, separator, two models
    const cols = rows[0].split('|').length;
    for (const r of rows) expect(r.split('|').length).toBe(cols);
    expect(md).toContain('resnext50_32x4d');
    expect(md).toMatch(/load average/);
    const s = fs.readFileSync(run.files.svg, 'utf8');
    checkXmlish(s);
    expect(s).toContain('<circle');
    expect(path.dirname(run.files.svg)).toBe(out);
  });
});

describe('bench: models and complexity', () => {
  test('names follow the anchor file; the families hold the paper\'s widths', () => {
    const all = speedModels();
    const names = all.map((m) => m.name);
    expect(names).toEqual([
      'resnext50_1x64d', 'resnext50_2x40d', 'resnext50_4x24d', 'resnext50_8x14d', 'resnext50_32x4d',
      'resnext29_1x64d', 'resnext29_2x64d', 'resnext29_4x64d', 'resnext29_8x64d', 'resnext29_16x64d',
      'resnext29_2x40d', 'resnext29_4x24d', 'resnext29_8x14d', 'resnext29_32x4d',
    ]);
    // The PyTorch anchor's model rows use the same names (when the shared anchors are checked out).
    const anchorFile = path.join(__dirname, '..', '..', 'shared', 'anchors', 'pytorch-h200.json');
    if (fs.existsSync(anchorFile)) for (const r of readReference(anchorFile).rows) expect(names).toContain(r.name);
    expect(selectModels(all, 'resnext29-fixed').map((m) => m.name)).toEqual(['resnext29_1x64d', 'resnext29_2x40d', 'resnext29_4x24d', 'resnext29_8x14d', 'resnext29_32x4d']);
    expect(selectModels(all, 'resnext50_*,resnext29_16x64d')).toHaveLength(6);
    expect(selectModels(all, 'nope')).toEqual([]);
  });

  test('MACs across the fixed-complexity ResNeXt-50 family agree within 5% (analytic, 64x64: MACs scale with the area)', () => {
    const fam = familyComplexity('resnext50-fixed', 64);
    expect(fam.map((f) => f.cardinality)).toEqual([1, 2, 4, 8, 32]);
    const base = fam[0].macs;
    for (const f of fam) expect(Math.abs(f.macs / base - 1)).toBeLessThan(0.05);
    for (const f of fam) expect(Math.abs(f.params / fam[0].params - 1)).toBeLessThan(0.05);
  });

  test('MACs across the fixed-complexity CIFAR family agree within 5%', () => {
    const fam = familyComplexity('resnext29-fixed', 16);
    const base = fam[0].macs;
    for (const f of fam) expect(Math.abs(f.macs / base - 1)).toBeLessThan(0.05);
  });

  test('the accuracy sweep solves widths for equal MACs', () => {
    const cfg = { stemChannels: 16, stageChannels: [64, 128, 256] as [number, number, number], blocksPerStage: 1, numClasses: 10, inChannels: 1 };
    const s = sweepModels([1, 2, 4, 8], 32, cfg, [1, 28, 28]);
    expect(s.map((m) => `${m.cardinality}x${m.width}d`)).toEqual(['1x32d', '2x21d', '4x13d', '8x8d']);
    for (const m of s) expect(Math.abs(m.macsDelta)).toBeLessThan(0.05);
  });
});

describe('bench: --compare', () => {
  const ours = (name: string, batch: number, trainIps: number, inferIps: number, peakMiB: number) => ({
    name, precision: 'fp32',
    train: { batch, size: 224, imgPerSec: { median: trainIps }, ms: { median: (1000 * batch) / trainIps }, peakMemBytes: peakMiB * 2 ** 20 },
    infer: { batch, size: 224, imgPerSec: { median: inferIps }, ms: { median: (1000 * batch) / inferIps } },
  });

  test('our own JSON format: matched on name, mode, precision, batch and size, with ratios', () => {
    const dir = tmp();
    const file = path.join(dir, 'other.json');
    fs.writeFileSync(file, JSON.stringify({ schema: SCHEMA, createdAt: 'x', config: { device: 'cuda' }, env: {}, speed: { rows: [ours('resnext50_32x4d', 64, 500, 2000, 1000), ours('resnext50_1x64d', 32, 100, 400, 800)] } }));
    const ref = readReference(file);
    expect(ref.format).toBe('resnext-bench');
    const mine = [
      { name: 'resnext50_32x4d', mode: 'train' as const, precision: 'fp32', batch: 64, size: 224, imgPerSec: 1000, ms: 64, peakMemMiB: 500 },
      { name: 'resnext50_32x4d', mode: 'infer' as const, precision: 'fp32', batch: 64, size: 224, imgPerSec: 1000, ms: 64, peakMemMiB: null },
      { name: 'resnext50_1x64d', mode: 'train' as const, precision: 'fp32', batch: 64, size: 224, imgPerSec: 50, ms: 1280, peakMemMiB: 100 },
    ];
    const c = compareRows(mine, ref.rows, file, ref.format, ref.reference);
    expect(c.rows).toHaveLength(2);
    const train = c.rows.find((r) => r.mode === 'train')!;
    expect(train.speedRatio).toBeCloseTo(2, 10);
    expect(train.memRatio).toBeCloseTo(0.5, 10);
    expect(c.rows.find((r) => r.mode === 'infer')!.speedRatio).toBeCloseTo(0.5, 10);
    expect(c.unmatchedOurs).toEqual([expect.objectContaining({ name: 'resnext50_1x64d', mode: 'train', reason: expect.stringContaining('batch 32') })]);
    expect(c.unmatchedTheirs.map((u) => `${u.name} ${u.mode}`).sort()).toEqual(['resnext50_1x64d infer', 'resnext50_1x64d train']);
  });

  test('the PyTorch anchor format: amp maps to bf16, conv micro-benchmarks are skipped', () => {
    const dir = tmp();
    const file = path.join(dir, 'anchor.json');
    fs.writeFileSync(file, JSON.stringify({
      what: 'crafted', env: { gpu: 'X' },
      rows: [
        { kind: 'train', name: 'resnext29_8x64d', B: 128, hw: 32, amp: false, channels_last: false, ms_per_step: 50, img_per_s: 2560, params_M: 34.4, peak_mem_MiB: 1000 },
        { kind: 'train', name: 'resnext29_8x64d', B: 128, hw: 32, amp: true, channels_last: true, ms_per_step: 25, img_per_s: 5120, params_M: 34.4, peak_mem_MiB: 400 },
        { kind: 'infer', name: 'resnext50_32x4d', B: 256, hw: 224, amp: false, channels_last: false, ms: 40, img_per_s: 6400 },
        { kind: 'conv_fwd_bwd', name: 'conv3x3_stage1', N: 64, C: 128, H: 56, groups: 32, ms: 1, tflops: 5 },
        { kind: 'train_strict_fp32', B: 64, img_per_s: 670 },
      ],
    }));
    const ref = readReference(file);
    expect(ref.format).toBe('pytorch-anchor');
    expect(ref.rows.map((r) => `${r.name} ${r.mode} ${r.precision}`)).toEqual(['resnext29_8x64d train fp32', 'resnext29_8x64d train bf16', 'resnext50_32x4d infer fp32']);
    expect(ref.skipped.map((s) => s.kind)).toEqual(['conv_fwd_bwd', 'train_strict_fp32']);
    const mine = [
      { name: 'resnext29_8x64d', mode: 'train' as const, precision: 'bf16', batch: 128, size: 32, imgPerSec: 2560, ms: 50, peakMemMiB: 800 },
      { name: 'resnext50_32x4d', mode: 'infer' as const, precision: 'fp32', batch: 256, size: 224, imgPerSec: 3200, ms: 80, peakMemMiB: null },
    ];
    const c = compareRows(mine, ref.rows, file, ref.format, ref.reference, ref.skipped);
    expect(c.rows.map((r) => [r.name, r.mode, r.precision, +r.speedRatio.toFixed(6)])).toEqual([
      ['resnext29_8x64d', 'train', 'bf16', 0.5],
      ['resnext50_32x4d', 'infer', 'fp32', 0.5],
    ]);
    expect(c.rows[0].memRatio).toBeCloseTo(2, 10);
    expect(c.rows[0].theirs.note).toBe('channels_last');
    expect(c.unmatchedTheirs).toEqual([expect.objectContaining({ name: 'resnext29_8x64d', precision: 'fp32', reason: expect.stringContaining('only in bf16') })]);
  });

  test('a file in neither format is an ERR_IO error', () => {
    const file = path.join(tmp(), 'bad.json');
    fs.writeFileSync(file, '{"hello": 1}');
    expect(() => readReference(file)).toThrow(expect.objectContaining({ code: 'ERR_IO' }));
  });
});

describe('bench: arguments and statistics', () => {
  test('per-device defaults, overrides and usage errors', () => {
    const cpu = parseBenchArgs([])!;
    expect(cpu).toMatchObject({ device: 'cpu', precision: 'fp32', suite: 'speed', imagenet: { batch: 8, size: 64 }, cifar: { batch: 4, size: 32 } });
    expect(cpu.out).toBe(path.join('bench', 'results'));
    const gpu = parseBenchArgs(['--device', 'cuda', '--precision', 'bf16'])!;
    expect(gpu).toMatchObject({ imagenet: { batch: 64, inferBatch: 256, size: 224 }, cifar: { batch: 128, size: 32 } });
    expect(parseBenchArgs(['--accuracy'])!.suite).toBe('all');
    expect(parseBenchArgs(['--suite', 'accuracy', '--seeds', '2', '--limit-train', '0'])!.accuracy).toMatchObject({ seeds: 2, limitTrain: undefined, dataset: 'fashion-mnist' });
    expect(parseBenchArgs(['--help'])).toBeNull();
    expect(() => parseBenchArgs(['--precision', 'bf16'])).toThrow(expect.objectContaining({ code: 'ERR_ARG', message: expect.stringContaining('--device cuda') }));
    expect(() => parseBenchArgs(['--device', 'tpu'])).toThrow(expect.objectContaining({ code: 'ERR_ARG' }));
    expect(() => parseBenchArgs(['--bogus'])).toThrow(expect.objectContaining({ code: 'ERR_ARG' }));
    expect(() => parseBenchArgs(['--batch', '0'])).toThrow(expect.objectContaining({ code: 'ERR_ARG' }));
  });

  test('--device cuda without a usable GPU: ERR_DEVICE naming why', async () => {
    if (rx.cudaAvailable()) return; // only meaningful where CUDA cannot be used
    const o = parseBenchArgs(['--device', 'cuda', '--out', tmp()])!;
    await expect(runBench(o, { log: quiet })).rejects.toMatchObject({ code: 'ERR_DEVICE', message: expect.stringContaining(rx.cudaStatus().reason) });
  });

  test('Welch verdicts: identical groups are within noise, well-separated ones are not', () => {
    expect(welch([0.8, 0.81, 0.79], [0.8, 0.805, 0.795]).significant).toBe(false);
    const w = welch([0.8, 0.81, 0.79], [0.9, 0.91, 0.89]);
    expect(w.significant).toBe(true);
    expect(w.diff).toBeCloseTo(0.1, 10);
    expect(w.df).toBeCloseTo(4, 10);
  });
});
