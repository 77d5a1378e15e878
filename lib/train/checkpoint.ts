/**
 * Checkpoints: a directory per save,
 *   <dir>/step-00001234/model.safetensors      the model's state dict (torchvision names)
 *   <dir>/step-00001234/optimizer.safetensors  momentum buffers, by parameter name
 *   <dir>/step-00001234/state.json             epoch, step, position in the epoch's data order,
 *                                              optimizer step and lr, schedule, RNG state, history
 *   <dir>/latest                               the name of the newest complete checkpoint
 * A save writes into a temporary directory, fsyncs it, renames it into place, and only then
 * replaces `latest` (atomically): a crash or kill at any moment leaves the previous checkpoint
 * and a `latest` that points to a complete one.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ResnextError } from '../native/errors';
import { loadSafetensors, saveSafetensors, writeFileAtomic } from '../io';
import type { Module } from '../nn/module';
import type { SGD } from '../optim/sgd';
import type { Tensor } from '../tensor/tensor';

export interface TrainingState {
  version: 1;
  /** The epoch being trained (0-based) and the index of the next batch in it. */
  epoch: number;
  batchInEpoch: number;
  /** Optimizer steps done so far. */
  step: number;
  optimizer: { step: number; lr: number; options: Record<string, unknown>; hasBuffer: boolean[] };
  schedule: Record<string, unknown> | null;
  rng: { seed: number; offset: number };
  /** Seeds the data order and augmentation. */
  dataSeed: number;
  /** What the CLI needs to rebuild the model (builder name and options). */
  modelSpec?: Record<string, unknown>;
  /** Per-epoch metrics so far, and per-step losses of the current epoch. */
  history: Record<string, unknown>[];
  savedAt: string;
}

function fsyncDir(dir: string): void {
  try {
    const fd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    // Not every platform can fsync a directory; the rename is still atomic.
  }
}

export async function saveCheckpoint(dir: string, model: Module, optimizer: SGD, state: TrainingState, keep = 2): Promise<string> {
  fs.mkdirSync(dir, { recursive: true });
  const name = `step-${String(state.step).padStart(8, '0')}`;
  const final = path.join(dir, name);
  const tmp = path.join(dir, `.${name}.tmp-${process.pid}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  const names = model.namedParameters().map(([n]) => n);
  const bufs: Record<string, Tensor> = {};
  optimizer.stateDict().buffers.forEach((b, i) => {
    if (b) bufs[names[i] ?? `param.${i}`] = b;
  });
  await saveSafetensors(path.join(tmp, 'model.safetensors'), model.stateDict(), { format: 'pt' });
  await saveSafetensors(path.join(tmp, 'optimizer.safetensors'), bufs, { format: 'pt' });
  await writeFileAtomic(path.join(tmp, 'state.json'), `${JSON.stringify(state, null, 1)}\n`);
  fsyncDir(tmp);
  fs.rmSync(final, { recursive: true, force: true }); // a stale copy of the same step
  fs.renameSync(tmp, final);
  fsyncDir(dir);
  await writeFileAtomic(path.join(dir, 'latest'), `${name}\n`);
  // Prune: keep the newest `keep` complete checkpoints.
  const all = fs.readdirSync(dir).filter((f) => /^step-\d{8}$/.test(f)).sort();
  for (const old of all.slice(0, Math.max(0, all.length - keep))) if (old !== name) fs.rmSync(path.join(dir, old), { recursive: true, force: true });
  return final;
}

/** Resolves a checkpoint directory: a step directory itself, or a parent with a `latest` file. */
export function resolveCheckpoint(p: string): string {
  if (fs.existsSync(path.join(p, 'state.json'))) return p;
  const latest = path.join(p, 'latest');
  if (!fs.existsSync(latest))
    throw new ResnextError(`checkpoint: ${p} expected a checkpoint directory (with state.json) or a parent with a 'latest' file, received neither`, 'ERR_IO');
  const name = fs.readFileSync(latest, 'utf8').trim();
  const dir = path.join(p, name);
  if (!/^step-\d{8}$/.test(name) || !fs.existsSync(path.join(dir, 'state.json')))
    throw new ResnextError(`checkpoint: ${latest} expected the name of a complete checkpoint, received "${name}"`, 'ERR_IO');
  return dir;
}

export interface LoadedCheckpoint {
  dir: string;
  state: TrainingState;
  model: Record<string, Tensor>;
  optimizer: Record<string, Tensor>;
}

export async function loadCheckpoint(p: string): Promise<LoadedCheckpoint> {
  const dir = resolveCheckpoint(p);
  let state: TrainingState;
  try {
    state = JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8')) as TrainingState;
  } catch (e) {
    throw new ResnextError(`checkpoint: ${path.join(dir, 'state.json')} expected valid JSON, received an unreadable file (${(e as Error).message})`, 'ERR_IO');
  }
  if (state?.version !== 1) throw new ResnextError(`checkpoint: ${dir}/state.json expected version 1, received ${JSON.stringify(state?.version)}`, 'ERR_IO');
  const model = await loadSafetensors(path.join(dir, 'model.safetensors'));
  const optimizer = fs.existsSync(path.join(dir, 'optimizer.safetensors')) ? await loadSafetensors(path.join(dir, 'optimizer.safetensors')) : {};
  return { dir, state, model, optimizer };
}

/** Frees the tensors of a loaded checkpoint. */
export function disposeCheckpoint(c: LoadedCheckpoint): void {
  for (const t of [...Object.values(c.model), ...Object.values(c.optimizer)]) t.dispose();
}
