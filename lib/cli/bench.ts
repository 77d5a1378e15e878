/**
 * `resnext bench`: cardinality versus width at fixed multiply-adds, on this machine
 * (issue 5). A speed sweep over the paper's fixed-complexity ResNeXt-50 family and the CIFAR
 * ResNeXt-29 families (params, analytic MACs, training and inference throughput, peak memory),
 * an optional accuracy sweep (short trainings of an equal-MACs CIFAR-style sweep, several
 * seeds, with an honest noise verdict), and a comparison with another run or with PyTorch's
 * anchor numbers. Writes JSON, Markdown and SVG to a results folder (default bench/results).
 * The pieces live in ./bench/: models, speed, accuracy, compare, report, stats.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import * as models from '../models';
import { ResnextError } from '../native/errors';
import { cudaStatus } from '../native/cuda';
import { setNumThreads } from '../tensor/tensor';
import { intFlag, numFlag, UsageError } from './args';
import { type AccuracyOptions, type AccuracyResult, runAccuracy } from './bench/accuracy';
import { type CompareResult, compareWithFile, flattenOurs } from './bench/compare';
import { type BenchModel, FAMILIES, selectModels, speedModels } from './bench/models';
import { captureEnv, type Env, markdown, svg, type ReportInput } from './bench/report';
import { autocastBf16, benchInfer, benchTrain, type Precision } from './bench/speed';
import type { SpeedRow } from './bench/types';

export { familyComplexity, speedModels, selectModels, FAMILIES, type BenchModel, type Family } from './bench/models';
export { readReference, compareRows, compareWithFile, flattenOurs, type CompareResult } from './bench/compare';
export { welch, mean, std, median, spread } from './bench/stats';
export { sweepModels, solveWidthByMACs, type AccuracyResult } from './bench/accuracy';
export type { SpeedRow } from './bench/types';

export const SCHEMA = 'resnext-bench/1';

export interface FamilySettings {
  batch: number;
  inferBatch: number;
  size: number;
  reps: number;
  warmup: number;
}

export interface BenchOptions {
  device: 'cpu' | 'cuda';
  precision: Precision;
  suite: 'speed' | 'accuracy' | 'all';
  imagenet: FamilySettings;
  cifar: FamilySettings;
  models?: string;
  out: string;
  compare?: string;
  json: boolean;
  threads?: number;
  accuracy: Omit<AccuracyOptions, 'device' | 'log'>;
}

export interface BenchResult {
  schema: typeof SCHEMA;
  createdAt: string;
  command: string[];
  config: Omit<BenchOptions, 'accuracy' | 'json'> & { accuracy: BenchOptions['accuracy'] | null };
  env: Env;
  speed: { rows: SpeedRow[]; seconds: number; notes: string[] } | null;
  accuracy: AccuracyResult | null;
  compare: CompareResult | null;
}

export interface BenchRun {
  result: BenchResult;
  files: { json: string; markdown: string; svg: string };
  markdown: string;
}

/** Defaults per device (see --help): small on the CPU, the paper's batches on a GPU. */
export function defaults(device: 'cpu' | 'cuda'): Pick<BenchOptions, 'imagenet' | 'cifar'> {
  return device === 'cuda'
    ? {
        // The paper's batch 64 at 224 (ImageNet) and 128 at 32 (CIFAR); 4 warm-up and 15 timed
        // steps and inference at batch 256, as in ../shared/anchors/pytorch_resnext_bench.py.
        imagenet: { batch: 64, inferBatch: 256, size: 224, reps: 15, warmup: 4 },
        cifar: { batch: 128, inferBatch: 128, size: 32, reps: 15, warmup: 4 },
      }
    : {
        // Sized so the whole speed sweep finishes in a few minutes on 2 cores (measured: 3.5 min
        // on a 2-core EPYC at load average 4-6). ResNeXt-29 16x64d is 10.7 G multiply-adds per
        // 32x32 image: one training step at batch 4 took ~11 s there.
        imagenet: { batch: 8, inferBatch: 8, size: 64, reps: 5, warmup: 1 },
        cifar: { batch: 4, inferBatch: 4, size: 32, reps: 3, warmup: 1 },
      };
}

export const HELP = `Usage: resnext bench [options]

Cardinality versus width at fixed multiply-adds (Xie et al. 2017, Table 2 and section 5.3).
The speed sweep measures params, analytic MACs, training throughput (forward + backward + SGD
step), inference throughput and peak memory of the fixed-complexity ResNeXt-50 family
(1x64d = ResNet-50, 2x40d, 4x24d, 8x14d, 32x4d) and the CIFAR ResNeXt-29 families (1x64d ..
16x64d, and 2x40d .. 32x4d at the MACs of 1x64d). The accuracy sweep trains small equal-MACs
ResNeXt-29-style models (C = 1, 2, 4, 8) on a real dataset with several seeds.

Sweep:
  --device NAME          cpu | cuda (default cpu)
  --precision P          fp32 | bf16 (bf16: CUDA only; bf16 convolutions, fp32 master weights)
  --suite NAME           speed | accuracy | all (default speed)
  --accuracy             also run the accuracy sweep (same as --suite all)
  --models LIST          comma-separated names (resnext50_32x4d), families
                         (${FAMILIES.join(', ')}), kinds (imagenet, cifar) or prefixes (resnext29_*)
  --batch N              training batch of every model (CPU: 8 ImageNet family, 4 CIFAR; GPU: 64 / 128)
  --infer-batch N        inference batch (CPU: as --batch; GPU: 256 ImageNet family, 128 CIFAR)
  --size N               ImageNet-family input side (CPU 64, GPU 224)
  --cifar-size N         CIFAR-family input side (32)
  --reps N               timed steps per model and mode (CPU: 5 ImageNet family, 3 CIFAR; GPU 15)
  --warmup N             untimed warm-up steps first (CPU 1, GPU 4)
  --threads N            CPU threads (default all cores)
Accuracy sweep:
  --dataset NAME         fashion-mnist | mnist | cifar10 (default fashion-mnist)
  --data DIR             dataset folder (fashion-mnist: /usr/share/datasets/fashion-mnist)
  --seeds N              seeds per cardinality (default 3)
  --epochs N             epochs per run (default 2)
  --limit-train N        first N training images (default 4000; 0 = all)
  --limit-test N         first N test images (default 2000; 0 = all)
  --acc-batch N          batch size (default 64)
  --lr X                 base learning rate, cosine schedule (default 0.05)
  --cardinalities LIST   default 1,2,4,8 (the first is the baseline)
  --base-width D         width of the baseline 1xD model (default 32: C = 2, 4, 8 then get
                         2x21d, 4x13d, 8x8d, all within 2.1% of its MACs at 28x28)
  --stem-channels N      (default 16)
  --stage-channels A,B,C block outputs (default 64,128,256)
  --blocks N             blocks per stage (default 1)
  --workers N            data worker threads (default 0: batches prepared in the main thread)
Output:
  --out DIR              results folder (default bench/results)
  --compare FILE         put another run's JSON, or a PyTorch anchor file
                         (../shared/anchors/pytorch-h200.json), side by side with ratios
  --json                 print the result JSON on stdout (the summary goes to stderr)`;

const FLAGS = {
  help: { type: 'boolean', short: 'h' },
  device: { type: 'string' },
  precision: { type: 'string' },
  suite: { type: 'string' },
  accuracy: { type: 'boolean' },
  models: { type: 'string' },
  batch: { type: 'string' },
  'infer-batch': { type: 'string' },
  size: { type: 'string' },
  'cifar-size': { type: 'string' },
  reps: { type: 'string' },
  warmup: { type: 'string' },
  threads: { type: 'string' },
  dataset: { type: 'string' },
  data: { type: 'string' },
  seeds: { type: 'string' },
  epochs: { type: 'string' },
  'limit-train': { type: 'string' },
  'limit-test': { type: 'string' },
  'acc-batch': { type: 'string' },
  lr: { type: 'string' },
  cardinalities: { type: 'string' },
  'base-width': { type: 'string' },
  'stem-channels': { type: 'string' },
  'stage-channels': { type: 'string' },
  blocks: { type: 'string' },
  workers: { type: 'string' },
  out: { type: 'string' },
  compare: { type: 'string' },
  json: { type: 'boolean' },
} as const;

const positive = (flag: string, v: string | undefined, dflt?: number): number | undefined => {
  const n = intFlag(flag, v, dflt);
  if (n !== undefined && n < 1) throw new UsageError(`--${flag} expected a positive integer, received "${v}"`);
  return n;
};

/** Parses `resnext bench` arguments; null when --help was asked for. */
export function parseBenchArgs(argv: string[]): BenchOptions | null {
  let f: Record<string, string | boolean | undefined>;
  try {
    f = parseArgs({ args: argv, options: FLAGS, allowPositionals: false, strict: true }).values as typeof f;
  } catch (e) {
    throw new UsageError(`${(e as Error).message.replace(/^Unknown option/, 'unknown option')}. Run 'resnext bench --help' for the options.`);
  }
  if (f.help) return null;
  const s = (k: string) => f[k] as string | undefined;
  const device = s('device') ?? 'cpu';
  if (device !== 'cpu' && device !== 'cuda') throw new UsageError(`--device expected cpu or cuda, received "${device}"`);
  const precision = s('precision') ?? 'fp32';
  if (precision !== 'fp32' && precision !== 'bf16') throw new UsageError(`--precision expected fp32 or bf16, received "${precision}"`);
  if (precision === 'bf16' && device !== 'cuda') throw new UsageError('--precision bf16 expected --device cuda, received --device cpu (the CPU backend computes in fp32)');
  const suiteFlag = s('suite') ?? (f.accuracy ? 'all' : 'speed');
  if (suiteFlag !== 'speed' && suiteFlag !== 'accuracy' && suiteFlag !== 'all') throw new UsageError(`--suite expected speed, accuracy or all, received "${suiteFlag}"`);
  const suite: BenchOptions['suite'] = f.accuracy && suiteFlag === 'speed' ? 'all' : suiteFlag;
  const d = defaults(device);
  const batch = positive('batch', s('batch'));
  const inferBatch = positive('infer-batch', s('infer-batch'));
  const reps = positive('reps', s('reps'));
  const warmup = intFlag('warmup', s('warmup'));
  const fam = (base: FamilySettings, size: number | undefined): FamilySettings => ({
    batch: batch ?? base.batch,
    inferBatch: inferBatch ?? (batch !== undefined && device === 'cpu' ? batch : base.inferBatch),
    size: size ?? base.size,
    reps: reps ?? base.reps,
    warmup: warmup ?? base.warmup,
  });
  const stages = (s('stage-channels') ?? '64,128,256').split(',').map((x) => positive('stage-channels', x.trim())!);
  if (stages.length !== 3) throw new UsageError(`--stage-channels expected three numbers like 64,128,256, received "${s('stage-channels')}"`);
  const cards = (s('cardinalities') ?? '1,2,4,8').split(',').map((x) => positive('cardinalities', x.trim())!);
  const lr = numFlag('lr', s('lr'), 0.05)!;
  if (!(lr > 0)) throw new UsageError(`--lr expected a positive number, received "${s('lr')}"`);
  const limit = (flag: string, dflt: number) => {
    const n = intFlag(flag, s(flag), dflt)!;
    return n === 0 ? undefined : n;
  };
  return {
    device, precision, suite,
    imagenet: fam(d.imagenet, positive('size', s('size'))),
    cifar: fam(d.cifar, positive('cifar-size', s('cifar-size'))),
    models: s('models'),
    out: s('out') ?? path.join('bench', 'results'),
    compare: s('compare'),
    json: !!f.json,
    threads: positive('threads', s('threads')),
    accuracy: {
      dataset: s('dataset') ?? 'fashion-mnist', data: s('data'), cardinalities: cards, baseWidth: positive('base-width', s('base-width'), 32)!,
      stemChannels: positive('stem-channels', s('stem-channels'), 16)!, stageChannels: stages as [number, number, number], blocksPerStage: positive('blocks', s('blocks'), 1)!,
      seeds: positive('seeds', s('seeds'), 3)!, epochs: positive('epochs', s('epochs'), 2)!, batch: positive('acc-batch', s('acc-batch'), 64)!, lr,
      limitTrain: limit('limit-train', 4000), limitTest: limit('limit-test', 2000), workers: intFlag('workers', s('workers'), 0)!,
    },
  };
}

function stamp(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

const errText = (e: unknown) => (e instanceof ResnextError ? `${e.message} [${e.code}]` : (e as Error)?.message ?? String(e));

async function speedSweep(o: BenchOptions, list: BenchModel[], log: (s: string) => void): Promise<SpeedRow[]> {
  const rows: SpeedRow[] = [];
  for (const [i, m] of list.entries()) {
    const t0 = Date.now();
    const fs_ = m.kind === 'imagenet' ? o.imagenet : o.cifar;
    const row: SpeedRow = {
      name: m.name, families: m.families, kind: m.kind, cardinality: m.cardinality, width: m.width, params: 0, macs: 0, macsRef: null,
      device: o.device, precision: o.precision, train: null, infer: null, seconds: 0,
    };
    const model = m.build();
    try {
      // Complexity first, on the CPU in fp32 (MACs do not depend on device or precision).
      row.params = models.countParams(model).total;
      row.macs = models.countMACs(model, [3, fs_.size, fs_.size]).total;
      row.macsRef = { size: m.refSize, macs: fs_.size === m.refSize ? row.macs : models.countMACs(model, [3, m.refSize, m.refSize]).total };
      if (o.device !== 'cpu') model.to(o.device);
      if (o.precision === 'bf16') autocastBf16(model);
      const common = { device: o.device, precision: o.precision, size: fs_.size, inChannels: 3, numClasses: m.numClasses, reps: fs_.reps, warmup: fs_.warmup };
      const tr = await benchTrain(model, { ...common, batch: fs_.batch, weightDecay: m.kind === 'cifar' ? 5e-4 : 1e-4 });
      row.train = { ...tr, batch: fs_.batch, size: fs_.size };
      const inf = await benchInfer(model, { ...common, batch: fs_.inferBatch });
      row.infer = { ...inf, batch: fs_.inferBatch, size: fs_.size };
    } catch (e) {
      row.error = errText(e);
    } finally {
      model.dispose();
    }
    row.seconds = (Date.now() - t0) / 1000;
    rows.push(row);
    const f = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(2));
    log(
      `[${i + 1}/${list.length}] ${m.name.padEnd(17)} ${(row.params / 1e6).toFixed(2).padStart(6)} M params ${(row.macs / 1e9).toFixed(3)} GMACs ` +
        (row.error
          ? `failed: ${row.error}`
          : `train ${f(row.train!.imgPerSec.median)} img/s (${f(row.train!.imgPerSec.min)}-${f(row.train!.imgPerSec.max)}), ` +
            `infer ${f(row.infer!.imgPerSec.median)} img/s (${f(row.infer!.imgPerSec.min)}-${f(row.infer!.imgPerSec.max)}), ` +
            `peak ${(row.train!.peakMemBytes / 2 ** 20).toFixed(0)} MiB`) +
        ` [${row.seconds.toFixed(1)} s, load ${os.loadavg()[0].toFixed(2)}]`,
    );
  }
  return rows;
}

function speedNotes(o: BenchOptions, rows: SpeedRow[], env: Env): string[] {
  const fam = (k: 'imagenet' | 'cifar') => {
    const s = k === 'imagenet' ? o.imagenet : o.cifar;
    return `${s.size}x${s.size}, training batch ${s.batch}, inference batch ${s.inferBatch}, ${s.warmup} warm-up + ${s.reps} timed steps`;
  };
  const spreadOf = (family: string) => {
    const r = rows.filter((x) => x.families.includes(family as never) && x.macs > 0);
    if (r.length < 2) return '';
    const ref = r.map((x) => x.macsRef?.macs ?? x.macs);
    const base = ref[0];
    return `${family}: MACs (at ${r[0].macsRef?.size}) within ${(100 * Math.max(...ref.map((x) => Math.abs(x / base - 1)))).toFixed(1)}% of ${r[0].name}`;
  };
  return [
    `ImageNet family (1000 classes): ${fam('imagenet')}${o.imagenet.size !== 224 ? ' (the paper uses 224x224)' : ''}; CIFAR family (10 classes): ${fam('cifar')}`,
    'random data resident on the device; a training step = forward + cross-entropy + backward + SGD (momentum 0.9, weight decay 1e-4 ImageNet / 5e-4 CIFAR) + zero-grad, ' +
      'timed until the loss is ready; inference = eval-mode forward without gradients, timed until the logits are ready',
    'img/s = batch / median step time; in brackets the slowest and fastest timed step',
    'train peak MiB: bytes held by live tensors on the device during the training steps (weights, grads, momentum, input, activations), ' +
      'the maximum of samples taken in the warm-up steps after every conv/linear of the forward, the loss, every node of the backward and the update ' +
      '(with the CPU queue drained at each sample; the JSON also has the exact process peak where this model raised it, peakMemExactBytes)',
    'MACs: analytic multiply-adds of conv and linear layers per image (countMACs), at the benchmark size and at the paper size',
    ...['resnext50-fixed', 'resnext29-fixed'].map(spreadOf).filter(Boolean),
    'resnext29-fixed widths come from solveWidth on the parameter count of ResNeXt-29 1x64d (the paper\'s Table 2 procedure)',
    `${o.device === 'cpu' ? `CPU threads ${env.cpu.threads}; ` : ''}load average at start ${env.loadavg.start.join(' / ')} (other processes may share the machine)`,
    ...(o.precision === 'bf16' ? ['bf16: convolutions and linear layers on bf16 casts of fp32 master weights, bf16 activations, fp32 BN parameters and loss (lib/cli/bench/speed.ts autocastBf16)'] : []),
  ];
}

/** Runs the suites and writes JSON, Markdown and SVG; `log` gets progress lines. */
export async function runBench(o: BenchOptions, io: { log?: (line: string) => void; argv?: string[] } = {}): Promise<BenchRun> {
  const log = io.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  if (o.device === 'cuda') {
    const st = cudaStatus();
    if (!st.available) throw new ResnextError(`bench --device cuda: CUDA cannot be used here: ${st.reason}`, 'ERR_DEVICE');
  }
  if (o.threads) setNumThreads(o.threads);
  const env = captureEnv(o.device);
  const createdAt = new Date();
  let speed: BenchResult['speed'] = null;
  let accuracy: AccuracyResult | null = null;
  if (o.suite !== 'accuracy') {
    const list = selectModels(speedModels(), o.models);
    if (!list.length) throw new UsageError(`--models "${o.models}" matched none of ${speedModels().map((m) => m.name).join(', ')}`);
    log(`resnext bench: speed sweep of ${list.length} models on ${o.device} (${o.precision}), ${env.cpu.threads} CPU threads, load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
    const t0 = Date.now();
    const rows = await speedSweep(o, list, log);
    speed = { rows, seconds: (Date.now() - t0) / 1000, notes: [] };
    speed.notes = speedNotes(o, rows, env);
    speed.notes.push(`speed sweep took ${speed.seconds.toFixed(0)} s`);
  }
  if (o.suite !== 'speed') accuracy = await runAccuracy({ ...o.accuracy, device: o.device, log });
  env.loadavg.end = os.loadavg().map((x) => +x.toFixed(2));
  const compare = o.compare && speed ? compareWithFile(o.compare, flattenOurs(speed.rows)) : null;
  const { accuracy: accOpts, json: _json, ...rest } = o;
  const result: BenchResult = {
    schema: SCHEMA, createdAt: createdAt.toISOString(), command: io.argv ?? [],
    config: { ...rest, accuracy: o.suite === 'speed' ? null : accOpts }, env, speed, accuracy, compare,
  };
  const report: ReportInput = { config: result.config, env, speed, accuracy, compare };
  const md = markdown(report);
  fs.mkdirSync(o.out, { recursive: true });
  const base = path.join(o.out, `bench-${o.device}-${o.precision}-${o.suite}-${stamp(createdAt)}`);
  const files = { json: `${base}.json`, markdown: `${base}.md`, svg: `${base}.svg` };
  fs.writeFileSync(files.json, `${JSON.stringify(result, null, 1)}\n`);
  fs.writeFileSync(files.markdown, md);
  fs.writeFileSync(files.svg, svg(report));
  return { result, files, markdown: md };
}

/** The `resnext bench` command (wired into lib/cli/main.ts). Returns the exit status. */
export async function benchCommand(argv: string[]): Promise<number> {
  const o = parseBenchArgs(argv);
  if (!o) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  const run = await runBench(o, { argv: ['bench', ...argv] });
  const summary = `\n${run.markdown}\nwrote ${run.files.json}\n      ${run.files.markdown}\n      ${run.files.svg}\n`;
  if (o.json) {
    process.stderr.write(summary);
    process.stdout.write(`${JSON.stringify(run.result)}\n`);
  } else process.stdout.write(summary);
  const failed = run.result.speed?.rows.filter((r) => r.error) ?? [];
  return failed.length ? 1 : 0;
}
