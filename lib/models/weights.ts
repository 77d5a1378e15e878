/**
 * Pretrained weights for the builders: `await models.resnext50_32x4d({ weights: 'file.pth' })`.
 *
 * A builder given `weights` returns a Promise (reading a 100 MB file is I/O best done off the JS
 * thread, and loadTorch is async); without `weights` it stays synchronous and returns the model.
 * The file is a torch.save checkpoint (.pth/.pt/..., zip or legacy format, read by io.loadTorch)
 * or a .safetensors file. Loading is strict: every parameter and buffer must be in the file with
 * its shape, and the file may hold nothing else. The one exception is the classifier head: when
 * the builder's `numClasses` differs from the file's `fc.weight` rows, `fc` keeps its fresh
 * initialisation (fine-tuning on a new label set) and everything else loads strictly. Without
 * `numClasses`, the model takes the file's class count.
 */
import * as path from 'node:path';
import { describe, fail, ResnextError } from '../native/errors';
import type { Module } from '../nn/module';
import type { Tensor } from '../tensor/tensor';
import { loadSafetensors } from '../io/safetensors';
import { loadTorch, openTorch, type TorchReader } from '../io/torch/load';

/** The option every ImageNet builder takes to start from a file. */
export interface WeightsOption {
  /** A torch.save file (.pth, .pt, .bin, .ckpt; zip or legacy format) or a .safetensors file. */
  weights?: string;
}

export interface LoadWeightsResult {
  /** The file the weights came from. */
  file: string;
  /** Entries copied into the model. */
  loaded: number;
  /** The head's parameters that were left freshly initialised (['fc.weight', 'fc.bias'] or []). */
  replacedHead: string[];
}

/** Reads a weights file: safetensors by extension, otherwise a torch.save file. Float tensors are float32. */
export async function readWeights(file: string): Promise<Record<string, Tensor>> {
  if (typeof file !== 'string' || file.length === 0) fail('ERR_ARG', 'weights', 'weights', 'a .pth or .safetensors file path', describe(file));
  return /\.safetensors$/i.test(file) ? loadSafetensors(file) : loadTorch(file);
}

const list = (a: string[]) => (a.length > 8 ? `${a.slice(0, 8).join(', ')} ... (${a.length} in all)` : a.join(', ') || 'none');

/**
 * Checks a file's names and shapes against `model` (see the file comment); returns the head's
 * keys to leave freshly initialised. Throws ResnextError naming every missing, unexpected and
 * mis-shaped key (ERR_ARG for keys, ERR_SHAPE when only shapes differ).
 */
function checkAgainst(model: Module, shapes: Map<string, readonly number[]>, file: string, builder: string, head: string): string[] {
  const own = model.stateDict();
  const missing: string[] = [];
  const mismatched: string[] = [];
  const replacedHead: string[] = [];
  const headKey = (k: string) => k.startsWith(`${head}.`);
  for (const [k, t] of Object.entries(own)) {
    const w = shapes.get(k);
    if (!w) {
      missing.push(k);
      continue;
    }
    if (w.join() !== t.shape.join()) {
      if (headKey(k)) replacedHead.push(k);
      else mismatched.push(`${k} (model [${t.shape.join(', ')}], file [${w.join(', ')}])`);
    }
  }
  // A head whose shape differs is replaced whole: fc.weight and fc.bias together.
  if (replacedHead.length) for (const k of Object.keys(own)) if (headKey(k) && !replacedHead.includes(k)) replacedHead.push(k);
  const unexpected = [...shapes.keys()].filter((k) => !Object.hasOwn(own, k));
  if (missing.length || unexpected.length || mismatched.length)
    throw new ResnextError(
      `${builder}: weights "${file}" expected exactly the model's ${Object.keys(own).length} entries with its shapes, ` +
        `received ${shapes.size}; missing: ${list(missing)}; unexpected: ${list(unexpected)}; shape mismatch: ${list(mismatched)}`,
      missing.length || unexpected.length ? 'ERR_ARG' : 'ERR_SHAPE',
    );
  return replacedHead;
}

/**
 * Copies `weights` into `model` strictly (see the file comment); `head` names the classifier
 * module ('fc') whose entries may be skipped when their shapes differ (a new class count).
 * Throws ResnextError naming every missing, unexpected and mis-shaped key; the model is
 * unchanged then. Does not dispose `weights`.
 */
export function loadWeightsInto(model: Module, weights: Record<string, Tensor>, file: string, builder: string, head = 'fc'): LoadWeightsResult {
  const shapes = new Map(Object.entries(weights).map(([k, t]) => [k, t.shape] as [string, readonly number[]]));
  const replacedHead = checkAgainst(model, shapes, file, builder, head);
  const use: Record<string, Tensor> = {};
  for (const k of Object.keys(model.stateDict())) if (!replacedHead.includes(k)) use[k] = weights[k];
  model.loadStateDict(use, { strict: replacedHead.length === 0 });
  return { file, loaded: Object.keys(use).length, replacedHead };
}

/**
 * Builds a model from a weights file: learns the file's names and shapes, builds with
 * `numClasses` (or the file's fc rows when not given) and init 'none' for the convolutions the
 * file overwrites, checks strictly, then loads. A torch.save file is read tensor by tensor into
 * the model (each file tensor is freed once copied), so the peak is the model plus one storage.
 */
export async function buildWithWeights<M extends Module, C extends { numClasses?: number; init?: 'kaiming' | 'zeros' | 'none' }>(
  builder: string,
  build: (cfg: C) => M,
  cfg: C,
  file: string,
): Promise<M> {
  if (typeof file !== 'string' || file.length === 0) fail('ERR_ARG', builder, 'weights', 'a .pth or .safetensors file path', describe(file));
  const p = path.resolve(file);
  const make = (fileClasses: number | undefined) => build({ ...cfg, numClasses: cfg.numClasses ?? fileClasses, init: cfg.init ?? 'none' });
  if (/\.safetensors$/i.test(file)) {
    const weights = await loadSafetensors(file);
    try {
      const model = make(weights['fc.weight']?.shape[0]);
      try {
        loadWeightsInto(model, weights, p, builder);
      } catch (e) {
        model.dispose();
        throw e;
      }
      return model;
    } finally {
      for (const t of Object.values(weights)) t.dispose();
    }
  }
  const reader = await openTorch(file);
  try {
    const model = make(reader.entries.find((e) => e.name === 'fc.weight')?.shape[0]);
    try {
      await streamInto(model, reader, builder, 'fc');
    } catch (e) {
      model.dispose();
      throw e;
    }
    return model;
  } finally {
    await reader.close();
  }
}

/** Checks an opened torch.save file against the model, then copies it in tensor by tensor. */
async function streamInto(model: Module, reader: TorchReader, builder: string, head: string): Promise<LoadWeightsResult> {
  const shapes = new Map(reader.entries.map((e) => [e.name, e.shape] as [string, readonly number[]]));
  const replaced = checkAgainst(model, shapes, reader.file, builder, head);
  const skip = new Set(replaced);
  let loaded = 0;
  await reader.read((name, t) => {
    try {
      if (!skip.has(name)) {
        model.loadStateDict({ [name]: t }, { strict: false });
        loaded++;
      }
    } finally {
      t.dispose();
    }
  });
  return { file: reader.file, loaded, replacedHead: replaced };
}

/**
 * Loads a weights file into an existing model (strictly, the head replaced when its shape
 * differs; see the file comment): a torch.save file tensor by tensor, a safetensors file whole.
 * `resnext train --weights` uses it.
 */
export async function loadWeightsFile(model: Module, file: string, builder: string, head = 'fc'): Promise<LoadWeightsResult> {
  if (typeof file !== 'string' || file.length === 0) fail('ERR_ARG', builder, 'weights', 'a .pth or .safetensors file path', describe(file));
  if (/\.safetensors$/i.test(file)) {
    const weights = await loadSafetensors(file);
    try {
      return loadWeightsInto(model, weights, path.resolve(file), builder, head);
    } finally {
      for (const t of Object.values(weights)) t.dispose();
    }
  }
  const reader = await openTorch(file);
  try {
    return await streamInto(model, reader, builder, head);
  } finally {
    await reader.close();
  }
}
