#!/usr/bin/env node
/**
 * The `resnext` command: train, eval, info, bench and doctor.
 * Usage errors print what to fix and exit with status 2; other errors print the message and
 * exit with 1.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { ResnextError } from '../native/errors';
import * as rx from '../index';
import { benchCommand, HELP as BENCH_HELP } from './bench';
import { CONVERT_HELP, convertCommand } from './convert';
import { doctorCommand } from './doctor';
import { EMBED_HELP, embedCommand } from './embed';
import { EXPORT_HELP, exportCommand } from './export';
import { launch } from './launch';
import { PREDICT_HELP, predictCommand } from './predict';
import { buildModel, DATASETS, intFlag, loadData, MODEL_NAMES, type ModelSpec, modelSpecFromFlags, numFlag, UsageError } from './args';

const HELP: Record<string, string> = {
  main: `resnext: train and run ResNeXt networks

Usage: resnext <command> [options]

Commands:
  train   train a model on a dataset (checkpoints, resume, progress, JSONL log)
  eval    evaluate a checkpoint on a dataset's test split
  info    per-layer and total parameters and multiply-adds of a model
  bench   speed and accuracy of ResNeXt at fixed multiply-adds (cardinality vs width)
  doctor  check the installation: native binary, CPU features, CUDA libraries, GPU
  convert PyTorch checkpoint (.pth) to safetensors and back
  predict classify images with ImageNet weights (top-5 classes and probabilities)
  embed   write images' pooled features (2048-d for ImageNet models) as .npy or JSON
  export  write a model as ONNX (opset 17) for deployment runtimes
  help    show help for a command: resnext help train

Run 'resnext <command> --help' for the options of a command.`,
  train: `Usage: resnext train [options]

Model:
  --model NAME            ${MODEL_NAMES.join(' | ')} (default resnext29)
  --cardinality C         groups per grouped conv (resnext29: 4, resnext: 32)
  --width D               width per group (resnext29: 4, resnext: 4)
  --stem-channels N       resnext29 stem width (default 16; the paper uses 64)
  --stage-channels A,B,C  resnext29 block outputs (default 64,128,256; paper 256,512,1024)
  --blocks N              resnext29 blocks per stage (default 3)
  --stem-stride N         resnext29 stem stride (default 1; 2 makes small-image CPU runs ~4x cheaper)
  --layers A,B,C,D        resnext blocks per stage (default 3,4,6,3)
  --zero-init-residual    start every block as the identity
Fine-tuning:
  --weights FILE          start from pretrained weights (.pth or .safetensors); the fc head is
                          replaced when the dataset's class count differs from the file's
  --num-classes K         the dataset's class count, checked (default: from the dataset)
  --freeze-backbone       train the head only; the backbone's BatchNorm stays in eval mode
  --backbone-lr-scale S   the backbone's learning rate as a fraction of --lr (e.g. 0.1)
Data:
  --dataset NAME          ${DATASETS.join(' | ')} (default synthetic)
  --data PATH             dataset folder (fashion-mnist defaults to /usr/share/datasets/fashion-mnist)
  --size N                image size for synthetic and folder datasets
  --synthetic-size N      number of synthetic training images (default 4000)
  --limit-train N         use only the first N training images
  --limit-test N          use only the first N test images
  --workers N             data worker threads (default cores - 1)
  --augment KIND          standard (the dataset's usual crop/flip) | flip | none (default standard)
Training:
  --epochs N              (default 5)
  --batch-size N          (default 128)
  --lr X                  base learning rate (default 0.1)
  --momentum X            (default 0.9)
  --nesterov              Nesterov momentum (the paper's official code)
  --weight-decay X        (default 5e-4)
  --no-decay-bn-bias      no weight decay on BN parameters and biases
  --schedule NAME         cosine | multistep | constant (default cosine)
  --warmup-epochs N       linear warm-up for cosine (default 0)
  --milestones A,B        multistep epochs at which lr /= 10
  --label-smoothing X     (default 0)
  --seed N                weights, data order and augmentation (default 0)
  --device NAME           cpu | cuda (default cpu)
  --threads N             CPU threads (default all cores)
Output:
  --checkpoint-dir DIR    save a checkpoint after every epoch (and on Ctrl-C)
  --checkpoint-every N    also every N steps
  --resume                continue from the latest checkpoint in --checkpoint-dir
  --log FILE              append JSON lines of metrics
  --json                  print the final metrics as JSON on stdout
  --no-progress           no progress bar
Data-parallel (gloo; see README "Training on several processes and machines"):
  --nproc-per-node N      start N worker processes here (cores split between them); --batch-size is global
  --nnodes M              machines in the run (default 1)
  --node-rank K           this machine's index, 0..M-1 (default 0)
  --master-addr HOST      where rank 0 listens for the rendezvous (default 127.0.0.1)
  --master-port P         its port (default 29500)
  --sync-bn               batch-norm statistics over the global batch
  --dist-timeout SEC      timeout of every collective (default 120)
  (a worker started with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set, e.g. by torchrun, joins that group)`,
  eval: `Usage: resnext eval --checkpoint DIR [--dataset NAME] [--data PATH] [options]

  --checkpoint DIR        a checkpoint directory, or a folder with a 'latest' file
  --dataset NAME          ${DATASETS.join(' | ')} (default: the one it was trained on)
  --data PATH             dataset folder
  --batch-size N          (default 256)
  --limit-test N          use only the first N test images
  --device NAME           cpu | cuda
  --json                  print the metrics as JSON`,
  bench: BENCH_HELP,
  convert: CONVERT_HELP,
  predict: PREDICT_HELP,
  embed: EMBED_HELP,
  export: EXPORT_HELP,
  info: `Usage: resnext info <model> [--input CxHxW] [--json] [model options as for train]

Prints every convolution and linear layer with its output shape, parameters and
multiply-adds, and the totals. --input defaults to 3x224x224 (3x32x32 for resnext29).
Example: resnext info resnext50_32x4d`,
};

const COMMON = {
  help: { type: 'boolean', short: 'h' },
  json: { type: 'boolean' },
  model: { type: 'string' },
  cardinality: { type: 'string' },
  width: { type: 'string' },
  'stem-channels': { type: 'string' },
  'stage-channels': { type: 'string' },
  blocks: { type: 'string' },
  'stem-stride': { type: 'string' },
  layers: { type: 'string' },
  'zero-init-residual': { type: 'boolean' },
  'num-classes': { type: 'string' },
  dataset: { type: 'string' },
  data: { type: 'string' },
  size: { type: 'string' },
  'synthetic-size': { type: 'string' },
  'limit-train': { type: 'string' },
  'limit-test': { type: 'string' },
  augment: { type: 'string' },
  workers: { type: 'string' },
  'batch-size': { type: 'string' },
  device: { type: 'string' },
  threads: { type: 'string' },
  seed: { type: 'string' },
} as const;

const TRAIN = {
  ...COMMON,
  epochs: { type: 'string' },
  lr: { type: 'string' },
  momentum: { type: 'string' },
  nesterov: { type: 'boolean' },
  'weight-decay': { type: 'string' },
  'no-decay-bn-bias': { type: 'boolean' },
  schedule: { type: 'string' },
  'warmup-epochs': { type: 'string' },
  milestones: { type: 'string' },
  'label-smoothing': { type: 'string' },
  'checkpoint-dir': { type: 'string' },
  'checkpoint-every': { type: 'string' },
  resume: { type: 'boolean' },
  log: { type: 'string' },
  'no-progress': { type: 'boolean' },
  weights: { type: 'string' },
  'freeze-backbone': { type: 'boolean' },
  'backbone-lr-scale': { type: 'string' },
  'nproc-per-node': { type: 'string' },
  nnodes: { type: 'string' },
  'node-rank': { type: 'string' },
  'master-addr': { type: 'string' },
  'master-port': { type: 'string' },
  'sync-bn': { type: 'boolean' },
  'dist-timeout': { type: 'string' },
} as const;

const EVAL = { ...COMMON, checkpoint: { type: 'string' } } as const;
const INFO = { ...COMMON, input: { type: 'string' } } as const;

type Flags = Record<string, string | boolean | undefined>;

function parse(cmd: string, argv: string[], options: Record<string, { type: 'string' | 'boolean'; short?: string }>): { flags: Flags; positionals: string[] } {
  try {
    const r = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
    return { flags: r.values as Flags, positionals: r.positionals };
  } catch (e) {
    throw new UsageError(`${(e as Error).message.replace(/^Unknown option/, 'unknown option')}. Run 'resnext ${cmd} --help' for the options.`);
  }
}

function device(f: Flags): 'cpu' | 'cuda' {
  const d = (f.device as string | undefined) ?? 'cpu';
  if (d !== 'cpu' && d !== 'cuda') throw new UsageError(`--device expected cpu or cuda, received "${d}"`);
  if (d === 'cuda' && !rx.cudaAvailable()) throw new ResnextError(`--device cuda: CUDA cannot be used here: ${rx.cudaStatus().reason}`, 'ERR_DEVICE');
  return d;
}

function threads(f: Flags): void {
  const t = intFlag('threads', f.threads as string | undefined);
  if (t) rx.setNumThreads(t);
}

/** The launcher's flags, removed from what the workers get. */
const LAUNCH_FLAGS = ['--nproc-per-node', '--nnodes', '--node-rank', '--master-addr', '--master-port'];

function workerArgs(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const name = a.split('=')[0];
    if (LAUNCH_FLAGS.includes(name)) {
      if (!a.includes('=')) i++;
      continue;
    }
    out.push(a);
  }
  return out;
}

async function train(argv: string[]): Promise<number> {
  const { flags: f } = parse('train', argv, TRAIN);
  if (f.help) return help('train');
  const nproc = intFlag('nproc-per-node', f['nproc-per-node'] as string | undefined);
  if (nproc !== undefined && !rx.train.distributed.launchedByLauncher()) {
    const nnodes = intFlag('nnodes', f.nnodes as string | undefined, 1)!;
    const nodeRank = intFlag('node-rank', f['node-rank'] as string | undefined, 0)!;
    if (nproc < 1 || nnodes < 1 || nodeRank >= nnodes) throw new UsageError(`--nproc-per-node and --nnodes expected >= 1 and --node-rank in [0, ${nnodes}), received ${nproc}, ${nnodes}, ${nodeRank}`);
    return launch({
      nprocPerNode: nproc, nnodes, nodeRank, masterAddr: (f['master-addr'] as string | undefined) ?? '127.0.0.1',
      masterPort: intFlag('master-port', f['master-port'] as string | undefined, 29500)!, args: workerArgs(argv), script: __filename,
      graceMs: 1000 * (numFlag('dist-timeout', f['dist-timeout'] as string | undefined, 30) ?? 30),
    });
  }
  threads(f);
  const group = rx.train.distributed.launchedByLauncher()
    ? await rx.train.distributed.init({ backend: 'gloo', timeoutMs: 1000 * (numFlag('dist-timeout', f['dist-timeout'] as string | undefined, 120) ?? 120) })
    : null;
  try {
    return await trainIn(f, group);
  } finally {
    group?.destroy();
  }
}

async function trainIn(f: Flags, group: rx.train.distributed.ProcessGroup | null): Promise<number> {
  const dev = device(f);
  const seed = intFlag('seed', f.seed as string | undefined, 0)!;
  const datasetName = (f.dataset as string | undefined) ?? 'synthetic';
  const dataOptions = {
    size: intFlag('size', f.size as string | undefined), synthetic: intFlag('synthetic-size', f['synthetic-size'] as string | undefined),
    limitTrain: intFlag('limit-train', f['limit-train'] as string | undefined), limitTest: intFlag('limit-test', f['limit-test'] as string | undefined), seed,
    augment: f.augment as string | undefined,
  };
  const splits = await loadData(datasetName, f.data as string | undefined, dataOptions);
  const batchSize = intFlag('batch-size', f['batch-size'] as string | undefined, 128)!;
  const workers = intFlag('workers', f.workers as string | undefined);
  const shard = group ? { rank: group.rank, worldSize: group.worldSize } : undefined;
  const trainLoader = new rx.data.DataLoader(splits.train, { batchSize, shuffle: true, seed, transforms: splits.trainTransforms, workers, shard });
  const testLoader = new rx.data.DataLoader(splits.test, { batchSize: Math.max(batchSize, 256), transforms: splits.testTransforms, workers });
  const [c] = trainLoader.sampleShape;
  const spec = modelSpecFromFlags((f.model as string | undefined) ?? 'resnext29', f, splits.train.numClasses, c);
  rx.manualSeed(seed);
  const weightsFile = f.weights as string | undefined;
  if (!weightsFile && (f['freeze-backbone'] || f['backbone-lr-scale'] !== undefined))
    throw new UsageError('--freeze-backbone and --backbone-lr-scale expected --weights FILE to fine-tune from');
  const numClasses = intFlag('num-classes', f['num-classes'] as string | undefined);
  if (numClasses !== undefined && numClasses !== splits.train.numClasses)
    throw new UsageError(`--num-classes expected the dataset's class count ${splits.train.numClasses} (${splits.train.name}), received ${numClasses}`);
  const model = buildModel(spec, weightsFile ? 'none' : undefined);
  if (weightsFile) {
    const r = await rx.models.loadWeightsFile(model, weightsFile, spec.builder);
    process.stderr.write(`resnext train: ${r.loaded} tensors from ${weightsFile}${r.replacedHead.length ? `; new ${splits.train.numClasses}-class head (${r.replacedHead.join(', ')})` : ''}\n`);
  }
  if (dev === 'cuda') model.to('cuda');
  const epochs = intFlag('epochs', f.epochs as string | undefined, 5)!;
  if (epochs < 1) throw new UsageError('--epochs expected at least 1, received 0');
  const lr = numFlag('lr', f.lr as string | undefined, 0.1)!;
  const optimizer = new rx.optim.SGD(model.parameters(), {
    lr, momentum: numFlag('momentum', f.momentum as string | undefined, 0.9), nesterov: !!f.nesterov,
    weightDecay: numFlag('weight-decay', f['weight-decay'] as string | undefined, 5e-4), decayBnAndBias: !f['no-decay-bn-bias'],
  });
  const steps = trainLoader.batchesPerEpoch;
  const sched = (f.schedule as string | undefined) ?? 'cosine';
  let schedule: rx.optim.Schedule;
  if (sched === 'cosine') schedule = new rx.optim.CosineLR(lr, epochs * steps, (intFlag('warmup-epochs', f['warmup-epochs'] as string | undefined, 0) ?? 0) * steps);
  else if (sched === 'multistep') {
    const ms = ((f.milestones as string | undefined) ?? `${Math.round(epochs * 0.5)},${Math.round(epochs * 0.75)}`).split(',').map((s) => intFlag('milestones', s.trim())! * steps);
    schedule = new rx.optim.MultiStepLR(lr, ms);
  } else if (sched === 'constant') schedule = new rx.optim.ConstantLR(lr);
  else throw new UsageError(`--schedule expected cosine, multistep or constant, received "${sched}"`);

  const params = rx.models.countParams(model).total;
  if (!group || group.rank === 0) process.stderr.write(
    `resnext train: ${spec.builder} (${(params / 1e6).toFixed(2)} M params) on ${splits.train.name} (${splits.train.length} train / ${splits.test.length} test, ` +
      `${trainLoader.sampleShape.join('x')}), ${epochs} epochs x ${steps} steps, batch ${batchSize}, ${dev}, ${rx.numThreads()} threads, ${trainLoader.workers} data workers\n`,
  );
  const controller = new AbortController();
  const onSigint = () => {
    process.stderr.write('\ninterrupted: finishing the current step and saving a checkpoint (Ctrl-C again to quit now)\n');
    process.off('SIGINT', onSigint);
    controller.abort();
  };
  process.on('SIGINT', onSigint);
  const trainer = new rx.train.Trainer({
    freezeBackbone: !!f['freeze-backbone'], backboneLrScale: numFlag('backbone-lr-scale', f['backbone-lr-scale'] as string | undefined),
    model, optimizer, schedule, device: dev, labelSmoothing: numFlag('label-smoothing', f['label-smoothing'] as string | undefined, 0),
    checkpointDir: f['checkpoint-dir'] as string | undefined, checkpointEvery: intFlag('checkpoint-every', f['checkpoint-every'] as string | undefined),
    logFile: f.log as string | undefined, progress: f['no-progress'] ? false : 'auto', dataSeed: seed,
    modelSpec: { ...spec, dataset: datasetName, data: f.data ?? null, dataOptions } as unknown as Record<string, unknown>,
    distributed: group ?? false, syncBatchNorm: !!f['sync-bn'],
  });
  const t0 = Date.now();
  try {
    if (f.resume && !f['checkpoint-dir']) throw new UsageError('--resume expected --checkpoint-dir DIR to say where the checkpoints are');
    const r = await trainer.fit(trainLoader, { epochs, validation: testLoader, signal: controller.signal, resume: !!f.resume });
    const last = r.history.at(-1);
    const summary = {
      model: spec.builder, params, dataset: splits.train.name, epochs: r.history.length, steps: r.steps, aborted: r.aborted, seconds: (Date.now() - t0) / 1000,
      testTop1: last?.valTop1 ?? null, testTop5: last?.valTop5 ?? null, testLoss: last?.valLoss ?? null,
    };
    if (group && group.rank !== 0) return r.aborted ? 130 : 0;
    if (f.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
    else if (last?.valTop1 !== undefined)
      process.stdout.write(`test accuracy: ${(100 * last.valTop1).toFixed(2)}% top-1, ${(100 * (last.valTop5 ?? 0)).toFixed(2)}% top-5 after ${r.history.length} epochs (${summary.seconds.toFixed(0)} s)\n`);
    return r.aborted ? 130 : 0;
  } finally {
    process.off('SIGINT', onSigint);
    trainLoader.close();
    testLoader.close();
  }
}

async function evaluate(argv: string[]): Promise<number> {
  const { flags: f } = parse('eval', argv, EVAL);
  if (f.help) return help('eval');
  threads(f);
  const ckPath = f.checkpoint as string | undefined;
  if (!ckPath) throw new UsageError("--checkpoint expected a checkpoint directory (from 'resnext train --checkpoint-dir'), received none");
  const dev = device(f);
  const dir = rx.train.resolveCheckpoint(ckPath);
  const state = JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8')) as {
    modelSpec?: ModelSpec & { dataset?: string; data?: string; dataOptions?: { size?: number; synthetic?: number; seed?: number } };
  };
  const spec = state.modelSpec;
  if (!spec?.builder) throw new ResnextError(`eval: ${dir}/state.json expected a modelSpec (written by 'resnext train'), received none`, 'ERR_IO');
  const datasetName = (f.dataset as string | undefined) ?? spec.dataset ?? 'synthetic';
  // The same data as in training unless flags say otherwise (synthetic data depends on size and seed).
  const trained = datasetName === spec.dataset ? (spec.dataOptions ?? {}) : {};
  const splits = await loadData(datasetName, (f.data as string | undefined) ?? spec.data ?? undefined, {
    size: intFlag('size', f.size as string | undefined) ?? trained.size, synthetic: trained.synthetic,
    limitTest: intFlag('limit-test', f['limit-test'] as string | undefined), seed: intFlag('seed', f.seed as string | undefined) ?? trained.seed ?? 0,
  });
  const model = buildModel(spec, 'none');
  const weights = await rx.io.loadSafetensors(path.join(dir, 'model.safetensors'));
  model.loadStateDict(weights);
  for (const t of Object.values(weights)) t.dispose();
  if (dev === 'cuda') model.to('cuda');
  const loader = new rx.data.DataLoader(splits.test, { batchSize: intFlag('batch-size', f['batch-size'] as string | undefined, 256)!, transforms: splits.testTransforms, workers: intFlag('workers', f.workers as string | undefined) });
  const trainer = new rx.train.Trainer({ model, optimizer: new rx.optim.SGD([], { lr: 0 }), device: dev, progress: false });
  const t0 = Date.now();
  const r = await trainer.evaluate(loader);
  loader.close();
  const out = { checkpoint: dir, dataset: splits.test.name, samples: r.samples, loss: r.loss, top1: r.top1, top5: r.top5, seconds: (Date.now() - t0) / 1000 };
  if (f.json) process.stdout.write(`${JSON.stringify(out)}\n`);
  else process.stdout.write(`${splits.test.name}: ${r.samples} images, loss ${r.loss.toFixed(4)}, top-1 ${(100 * r.top1).toFixed(2)}%, top-5 ${(100 * r.top5).toFixed(2)}%\n`);
  return 0;
}

function info(argv: string[]): number {
  const { flags: f, positionals } = parse('info', argv, INFO);
  if (f.help) return help('info');
  const name = positionals[0] ?? (f.model as string | undefined);
  if (!name) throw new UsageError(`info expected a model name (${MODEL_NAMES.join(', ')}), received none`);
  const isCifar = name.startsWith('resnext29');
  const inputStr = (f.input as string | undefined) ?? (isCifar ? '3x32x32' : '3x224x224');
  const input = inputStr.split('x').map(Number);
  if (input.length !== 3 || !input.every((d) => Number.isInteger(d) && d > 0)) throw new UsageError(`--input expected CxHxW like 3x224x224, received "${inputStr}"`);
  const numClasses = intFlag('num-classes', f['num-classes'] as string | undefined, isCifar ? 10 : 1000)!;
  const spec = modelSpecFromFlags(name, f, numClasses, input[0]);
  const model = buildModel(spec, 'zeros');
  try {
    const p = rx.models.countParams(model);
    const m = rx.models.countMACs(model, input);
    if (f.json) {
      process.stdout.write(`${JSON.stringify({ model: name, spec, input, params: p.total, macs: m.total, layers: m.layers }, null, 1)}\n`);
      return 0;
    }
    const rows = m.layers.map((l) => [l.name, l.type, l.outputShape.slice(1).join('x'), l.params.toLocaleString('en-US'), (l.macs / 1e6).toFixed(2)]);
    const head = ['layer', 'type', 'output', 'params', 'MMACs'];
    const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    const line = (r: string[]) => r.map((c, i) => (i >= 3 ? c.padStart(w[i]) : c.padEnd(w[i]))).join('  ');
    process.stdout.write(`${[line(head), line(w.map((n) => '-'.repeat(n))), ...rows.map(line)].join('\n')}\n`);
    process.stdout.write(`\n${name} at ${input.join('x')}: ${p.total.toLocaleString('en-US')} parameters (${(p.total / 1e6).toFixed(2)} M), ${(m.total / 1e9).toFixed(3)} G multiply-adds\n`);
    return 0;
  } finally {
    model.dispose();
  }
}

function help(cmd = 'main'): number {
  process.stdout.write(`${HELP[cmd] ?? HELP.main}\n`);
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'train':
      return train(rest);
    case 'eval':
      return evaluate(rest);
    case 'info':
      return info(rest);
    case 'bench':
      return benchCommand(rest);
    case 'doctor':
      return doctorCommand(rest);
    case 'convert':
      return convertCommand(rest);
    case 'predict':
      return predictCommand(rest);
    case 'embed':
      return embedCommand(rest);
    case 'export':
      return exportCommand(rest);
    case 'help':
      return rest[0] === 'doctor' ? doctorCommand(['--help']) : help(rest[0]);
    case undefined:
    case '-h':
    case '--help':
      return help();
    default:
      throw new UsageError(`unknown command "${cmd}": expected train, eval, info, bench, doctor, convert, predict, embed, export or help`);
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      if (e instanceof ResnextError) process.stderr.write(`resnext: ${e.message} [${e.code}]\n`);
      else process.stderr.write(`resnext: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exitCode = e instanceof UsageError ? 2 : 1;
    },
  );
}
