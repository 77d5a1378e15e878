/**
 * Shared CLI pieces: model and dataset specs from flags, so `train`, `eval`, `info` and `bench`
 * build models and data the same way, and a checkpoint's stored spec rebuilds its model.
 */
import { ResnextError } from '../native/errors';
import * as data from '../data';
import * as models from '../models';
import type { Module } from '../nn/module';

export class UsageError extends ResnextError {
  constructor(message: string) {
    super(message, 'ERR_ARG');
    this.name = 'UsageError';
  }
}

export const MODEL_NAMES = [
  'resnext29', 'resnext29_8x64d', 'resnext29_16x64d', 'resnet50', 'resnext50_32x4d', 'resnext101_32x8d', 'resnext101_64x4d', 'resnext',
] as const;

export interface ModelSpec {
  builder: string;
  options: Record<string, unknown>;
}

const int = (flag: string, v: string | undefined, dflt?: number): number | undefined => {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${flag} expected a non-negative integer, received "${v}"`);
  return n;
};
export const intFlag = int;

export const numFlag = (flag: string, v: string | undefined, dflt?: number): number | undefined => {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new UsageError(`--${flag} expected a number, received "${v}"`);
  return n;
};

const ints = (flag: string, v: string | undefined): number[] | undefined =>
  v === undefined ? undefined : v.split(',').map((s) => int(flag, s.trim()) as number);

/** Builds the model spec from flags (see `resnext train --help`). */
export function modelSpecFromFlags(name: string, f: Record<string, string | boolean | undefined>, numClasses: number, inChannels: number): ModelSpec {
  if (!(MODEL_NAMES as readonly string[]).includes(name))
    throw new UsageError(`--model expected one of ${MODEL_NAMES.join(', ')}, received "${name}"`);
  const s = (k: string) => (typeof f[k] === 'string' ? (f[k] as string) : undefined);
  if (name === 'resnext29') {
    const stages = ints('stage-channels', s('stage-channels')) ?? [64, 128, 256];
    if (stages.length !== 3) throw new UsageError(`--stage-channels expected three numbers like 64,128,256, received "${s('stage-channels')}"`);
    return {
      builder: 'resnext29',
      options: {
        cardinality: int('cardinality', s('cardinality'), 4), width: int('width', s('width'), 4), stemChannels: int('stem-channels', s('stem-channels'), 16),
        stageChannels: stages, blocksPerStage: int('blocks', s('blocks'), 3), stemStride: int('stem-stride', s('stem-stride'), 1),
        numClasses, inChannels, zeroInitResidual: !!f['zero-init-residual'],
      },
    };
  }
  if (name === 'resnext') {
    const layers = ints('layers', s('layers')) ?? [3, 4, 6, 3];
    return {
      builder: 'resnext',
      options: { layers, groups: int('cardinality', s('cardinality'), 32), widthPerGroup: int('width', s('width'), 4), numClasses, inChannels, zeroInitResidual: !!f['zero-init-residual'] },
    };
  }
  return { builder: name, options: { numClasses, inChannels, zeroInitResidual: !!f['zero-init-residual'] } };
}

export function buildModel(spec: ModelSpec, init?: 'kaiming' | 'zeros' | 'none'): Module {
  const o = init ? { ...spec.options, init } : spec.options;
  const b = (models as unknown as Record<string, (o: unknown) => Module>)[spec.builder];
  if (typeof b !== 'function') throw new UsageError(`model builder "${spec.builder}" is not one of ${MODEL_NAMES.join(', ')}`);
  return b(o);
}

export const DATASETS = ['synthetic', 'fashion-mnist', 'mnist', 'cifar10', 'cifar100', 'folder'] as const;
export type DatasetName = (typeof DATASETS)[number];

export interface DataSplits {
  train: data.Dataset;
  test: data.Dataset;
  trainTransforms: data.TransformSpec[];
  testTransforms: data.TransformSpec[];
}

/** Loads a dataset's train and test splits with the standard augmentation for it. */
export async function loadData(
  name: string,
  dir: string | undefined,
  opts: { size?: number; synthetic?: number; limitTrain?: number; limitTest?: number; seed?: number; augment?: string } = {},
): Promise<DataSplits> {
  const augment = opts.augment ?? 'standard';
  if (!['standard', 'flip', 'none'].includes(augment)) throw new UsageError(`--augment expected standard, flip or none, received "${augment}"`);
  if (!(DATASETS as readonly string[]).includes(name)) throw new UsageError(`--dataset expected one of ${DATASETS.join(', ')}, received "${name}"`);
  let r: DataSplits;
  switch (name as DatasetName) {
    case 'synthetic': {
      const n = opts.synthetic ?? 4000;
      const size = opts.size ?? 32;
      r = {
        train: data.synthetic({ n, size, seed: 1 + (opts.seed ?? 0) }),
        test: data.synthetic({ n: Math.max(500, Math.floor(n / 4)), size, seed: 1_000_003 + (opts.seed ?? 0) }),
        trainTransforms: [data.flip(), data.normalize(0.5, 0.25)],
        testTransforms: [data.normalize(0.5, 0.25)],
      };
      break;
    }
    case 'fashion-mnist':
    case 'mnist': {
      const read = name === 'mnist' ? data.mnist : data.fashionMnist;
      const d = dir ?? (name === 'fashion-mnist' ? data.FASHION_MNIST_DIR : undefined);
      if (!d) throw new UsageError('--data expected the folder with the MNIST IDX files, received none');
      const preset = name === 'mnist' ? 'mnist' : 'fashionMnist';
      r = {
        train: await read(d, 'train'),
        test: await read(d, 'test'),
        trainTransforms: [data.padCrop(2), ...(name === 'fashion-mnist' ? [data.flip()] : []), data.normalize(preset)],
        testTransforms: [data.normalize(preset)],
      };
      break;
    }
    case 'cifar10':
    case 'cifar100': {
      if (!dir) throw new UsageError(`--data expected the folder with the ${name} binary batches, received none`);
      const read = name === 'cifar10' ? data.cifar10 : data.cifar100;
      const preset = name === 'cifar10' ? 'cifar10' : 'cifar100';
      r = {
        train: await read(dir, 'train'),
        test: await read(dir, 'test'),
        trainTransforms: [data.padCrop(4), data.flip(), data.normalize(preset)],
        testTransforms: [data.normalize(preset)],
      };
      break;
    }
    case 'folder': {
      if (!dir) throw new UsageError('--data expected a folder with train/ and val/ sub-folders of class folders, received none');
      const size = opts.size ?? 224;
      const load = (sub: string) => data.imageFolder(`${dir}/${sub}`, { size: Math.round(size * 1.14) });
      r = {
        train: await load('train'),
        test: await load('val'),
        trainTransforms: [data.randomResizedCrop(size), data.flip(), data.normalize('imagenet')],
        testTransforms: [data.centerCrop(size), data.normalize('imagenet')],
      };
      break;
    }
  }
  // Lighter augmentation for short schedules: keep only the flip, or nothing but normalisation.
  if (augment !== 'standard')
    r.trainTransforms = r.trainTransforms.filter((t) => t.type === 'normalize' || (augment === 'flip' && t.type === 'flip'));
  if (opts.limitTrain) r.train = data.take(r.train, Math.min(opts.limitTrain, r.train.length));
  if (opts.limitTest) r.test = data.take(r.test, Math.min(opts.limitTest, r.test.length));
  return r;
}
