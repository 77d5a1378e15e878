/**
 * The accuracy side of the paper's claim at small scale: short trainings of a fixed-MACs
 * CIFAR-style ResNeXt sweep (cardinality 1, 2, 4, 8 by default) on a real dataset, several
 * seeds per cardinality. The models are ResNeXt-29-style networks scaled down so that a sweep
 * runs on a CPU (stem 16, block outputs 64/128/256, one block per stage by default); the
 * baseline is 1 x d0 (default 1x32d) and each other cardinality gets the width d whose multiply-adds at the
 * dataset's input size are closest to the baseline's. (At this scale matching parameters, as
 * the paper's Table 2 solver does, would leave MACs up to 20% apart: the full-resolution stem
 * and stage 1 weigh more in MACs than in parameters.)
 * Each run uses the Trainer (SGD, Nesterov momentum 0.9, weight decay 5e-4, cosine schedule)
 * and a DataLoader with the dataset's standard augmentation; seed s fixes the weights, the data
 * order and the augmentation, and is the same set of seeds for every cardinality.
 */
import * as models from '../../models';
import { DataLoader } from '../../data/loader';
import { SGD } from '../../optim/sgd';
import { CosineLR } from '../../optim/schedule';
import { manualSeed } from '../../tensor/create';
import type { Device } from '../../tensor/tensor';
import { Trainer } from '../../train/trainer';
import { loadData } from '../args';
import { mean, std, type Welch, welch } from './stats';

export interface AccuracyOptions {
  dataset: string;
  data?: string;
  device: Device;
  cardinalities: number[];
  /** Baseline width d0 of the 1 x d0 model. */
  baseWidth: number;
  stemChannels: number;
  stageChannels: [number, number, number];
  blocksPerStage: number;
  seeds: number;
  epochs: number;
  batch: number;
  lr: number;
  limitTrain?: number;
  limitTest?: number;
  workers: number;
  log?: (line: string) => void;
}

export interface AccuracyModel {
  name: string;
  cardinality: number;
  width: number;
  params: number;
  macs: number;
  /** MACs relative to the baseline, minus 1. */
  macsDelta: number;
}

export interface AccuracyRun {
  cardinality: number;
  seed: number;
  testTop1: number;
  testLoss: number;
  trainLoss: number;
  seconds: number;
}

export interface AccuracyRow extends AccuracyModel {
  accs: number[];
  mean: number;
  std: number;
  /** Against the baseline (the first cardinality): Welch's t-test of the mean difference. */
  vsBaseline: (Welch & { verdict: string }) | null;
}

export interface AccuracyResult {
  dataset: string;
  dataDir: string | null;
  trainSamples: number;
  testSamples: number;
  inputShape: number[];
  config: Omit<AccuracyOptions, 'log'>;
  rows: AccuracyRow[];
  runs: AccuracyRun[];
  summary: string;
  seconds: number;
}

type Cfg = Pick<AccuracyOptions, 'stemChannels' | 'stageChannels' | 'blocksPerStage'> & { numClasses: number; inChannels: number };

const build = (c: number, d: number, cfg: Cfg, init?: 'kaiming' | 'zeros') =>
  models.resnext29({ cardinality: c, width: d, stemChannels: cfg.stemChannels, stageChannels: cfg.stageChannels, blocksPerStage: cfg.blocksPerStage, numClasses: cfg.numClasses, inChannels: cfg.inChannels, init });

function complexity(c: number, d: number, cfg: Cfg, input: number[]): { params: number; macs: number } {
  const m = build(c, d, cfg, 'zeros');
  try {
    return { params: models.countParams(m).total, macs: models.countMACs(m, input).total };
  } finally {
    m.dispose();
  }
}

/** The width d for cardinality c whose MACs at `input` are closest to `target` (MACs grow with d). */
export function solveWidthByMACs(c: number, target: number, cfg: Cfg, input: number[], hi = 256): { width: number; params: number; macs: number } {
  let lo = 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (complexity(c, mid, cfg, input).macs < target) lo = mid;
    else hi = mid;
  }
  const [a, b] = [complexity(c, lo, cfg, input), complexity(c, hi, cfg, input)];
  return Math.abs(a.macs - target) <= Math.abs(b.macs - target) ? { width: lo, ...a } : { width: hi, ...b };
}

export function sweepModels(cardinalities: number[], baseWidth: number, cfg: Cfg, input: number[]): AccuracyModel[] {
  const base = complexity(1, baseWidth, cfg, input);
  return cardinalities.map((c) => {
    const r = c === 1 ? { width: baseWidth, ...base } : solveWidthByMACs(c, base.macs, cfg, input, Math.max(4, 2 * baseWidth));
    return { name: `resnext29s_${c}x${r.width}d`, cardinality: c, width: r.width, params: r.params, macs: r.macs, macsDelta: r.macs / base.macs - 1 };
  });
}

const pct = (x: number, digits = 2) => (100 * x).toFixed(digits);

export async function runAccuracy(o: AccuracyOptions): Promise<AccuracyResult> {
  const log = o.log ?? (() => {});
  const t0 = Date.now();
  const splits = await loadData(o.dataset, o.data, { limitTrain: o.limitTrain, limitTest: o.limitTest });
  const probe = new DataLoader(splits.test, { batchSize: 1, transforms: splits.testTransforms, workers: 0 });
  const inputShape = [...probe.sampleShape];
  probe.close();
  const cfg: Cfg = { stemChannels: o.stemChannels, stageChannels: o.stageChannels, blocksPerStage: o.blocksPerStage, numClasses: splits.train.numClasses, inChannels: inputShape[0] };
  const sweep = sweepModels(o.cardinalities, o.baseWidth, cfg, inputShape);
  log(
    `accuracy sweep on ${splits.train.name}: ${splits.train.length} train / ${splits.test.length} test images (${inputShape.join('x')}), ` +
      `${o.seeds} seeds x ${o.epochs} epochs, batch ${o.batch}, lr ${o.lr} cosine; models at ${(sweep[0].macs / 1e6).toFixed(1)} M MACs: ` +
      sweep.map((m) => `${m.cardinality}x${m.width}d (${m.macsDelta >= 0 ? '+' : ''}${pct(m.macsDelta, 1)}%)`).join(', '),
  );
  const runs: AccuracyRun[] = [];
  for (const m of sweep) {
    for (let seed = 0; seed < o.seeds; seed++) {
      const t1 = Date.now();
      manualSeed(seed);
      const model = build(m.cardinality, m.width, cfg);
      if (o.device !== 'cpu') model.to(o.device);
      const train = new DataLoader(splits.train, { batchSize: o.batch, shuffle: true, seed, transforms: splits.trainTransforms, workers: o.workers });
      const test = new DataLoader(splits.test, { batchSize: Math.max(o.batch, 256), transforms: splits.testTransforms, workers: o.workers });
      const optimizer = new SGD(model.parameters(), { lr: o.lr, momentum: 0.9, nesterov: true, weightDecay: 5e-4 });
      try {
        const trainer = new Trainer({ model, optimizer, schedule: new CosineLR(o.lr, o.epochs * train.batchesPerEpoch), device: o.device, progress: false, dataSeed: seed });
        const fit = await trainer.fit(train, { epochs: o.epochs });
        const ev = await trainer.evaluate(test);
        const run = { cardinality: m.cardinality, seed, testTop1: ev.top1, testLoss: ev.loss, trainLoss: fit.history.at(-1)?.trainLoss ?? Number.NaN, seconds: (Date.now() - t1) / 1000 };
        runs.push(run);
        log(`  ${m.name} seed ${seed}: test top-1 ${pct(run.testTop1)}%, loss ${run.testLoss.toFixed(4)} (${run.seconds.toFixed(0)} s)`);
      } finally {
        train.close();
        test.close();
        optimizer.dispose();
        model.dispose();
      }
    }
  }
  const base = runs.filter((r) => r.cardinality === sweep[0].cardinality).map((r) => r.testTop1);
  const rows: AccuracyRow[] = sweep.map((m, i) => {
    const accs = runs.filter((r) => r.cardinality === m.cardinality).map((r) => r.testTop1);
    let vs: AccuracyRow['vsBaseline'] = null;
    if (i > 0) {
      const w = welch(base, accs);
      const d = `${w.diff >= 0 ? '+' : ''}${pct(w.diff)} ± ${pct(w.se)} points`;
      const verdict = w.significant
        ? `C=${m.cardinality} ${w.diff > 0 ? 'better' : 'worse'} than C=${sweep[0].cardinality} by ${d} (Welch t = ${w.t.toFixed(2)}, df = ${w.df.toFixed(1)}, beyond the 95% critical ${w.tCrit.toFixed(2)})`
        : `within noise: ${d} (Welch t = ${Number.isFinite(w.t) ? w.t.toFixed(2) : 'n/a'}, 95% critical ${Number.isFinite(w.tCrit) ? w.tCrit.toFixed(2) : 'n/a'})`;
      vs = { ...w, verdict };
    }
    return { ...m, accs, mean: mean(accs), std: std(accs), vsBaseline: vs };
  });
  const sig = rows.filter((r) => r.vsBaseline?.significant);
  const summary = sig.length
    ? sig.map((r) => r.vsBaseline!.verdict).join('; ') +
      (sig.length < rows.length - 1 ? `; the other cardinalities are within noise of C=${sweep[0].cardinality}` : '')
    : `all differences from C=${sweep[0].cardinality} are within noise at this scale (${o.seeds} seeds, ${o.epochs} epochs): the run cannot confirm or refute the paper's trend`;
  const { log: _drop, ...config } = o;
  return {
    dataset: splits.train.name, dataDir: o.data ?? null, trainSamples: splits.train.length, testSamples: splits.test.length, inputShape,
    config, rows, runs, summary, seconds: (Date.now() - t0) / 1000,
  };
}
