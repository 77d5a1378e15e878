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
  /** Processes of a data-parallel run (absent: 1); resume needs the same. */
  worldSize?: number;
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

/** A small text file's contents, or ERR_IO naming it (a directory, unreadable, or oversized). */
function readSmallFile(file: string, maxBytes = 1 << 20): string {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    throw new ResnextError(`checkpoint: ${file} expected a readable file, received ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'ERR_IO');
  }
  if (!st.isFile()) throw new ResnextError(`checkpoint: ${file} expected a file, received ${st.isDirectory() ? 'a directory' : 'not a regular file'}`, 'ERR_IO');
  if (st.size > maxBytes) throw new ResnextError(`checkpoint: ${file} expected at most ${maxBytes} bytes, received ${st.size}`, 'ERR_IO');
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ResnextError(`checkpoint: ${file} expected a readable file, received ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'ERR_IO');
  }
}

/** Checks a parsed state.json field by field, so a damaged file is ERR_IO naming the field, not a TypeError later. */
function checkState(state: unknown, file: string): TrainingState {
  const bad = (field: string, expected: string, v: unknown): never => {
    throw new ResnextError(`checkpoint: ${file} expected ${field} to be ${expected}, received ${JSON.stringify(v)?.slice(0, 80) ?? String(v)}`, 'ERR_IO');
  };
  const obj = (v: unknown) => v !== null && typeof v === 'object' && !Array.isArray(v);
  const count = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;
  if (!obj(state)) bad('the whole file', 'a JSON object', state);
  const s = state as Record<string, unknown>;
  if (s.version !== 1) bad('version', '1', s.version);
  for (const k of ['epoch', 'batchInEpoch', 'step', 'dataSeed']) if (!count(s[k])) bad(k, 'a non-negative integer', s[k]);
  const o = s.optimizer as Record<string, unknown>;
  if (!obj(o)) bad('optimizer', 'an object', o);
  if (!count(o.step)) bad('optimizer.step', 'a non-negative integer', o.step);
  if (typeof o.lr !== 'number' || !Number.isFinite(o.lr)) bad('optimizer.lr', 'a finite number', o.lr);
  if (!obj(o.options)) bad('optimizer.options', 'an object', o.options);
  if (!Array.isArray(o.hasBuffer) || !o.hasBuffer.every((b) => typeof b === 'boolean')) bad('optimizer.hasBuffer', 'an array of booleans', o.hasBuffer);
  if (s.schedule !== null && !obj(s.schedule)) bad('schedule', 'an object or null', s.schedule);
  const r = s.rng as Record<string, unknown>;
  if (!obj(r) || !count(r.seed) || !count(r.offset)) bad('rng', '{ seed, offset } non-negative integers', r);
  if (s.modelSpec !== undefined && !obj(s.modelSpec)) bad('modelSpec', 'an object', s.modelSpec);
  if (!Array.isArray(s.history) || !s.history.every(obj)) bad('history', 'an array of objects', s.history);
  return state as TrainingState;
}

/** Resolves a checkpoint directory: a step directory itself, or a parent with a `latest` file. */
export function resolveCheckpoint(p: string): string {
  if (fs.existsSync(path.join(p, 'state.json'))) return p;
  const latest = path.join(p, 'latest');
  if (!fs.existsSync(latest))
    throw new ResnextError(`checkpoint: ${p} expected a checkpoint directory (with state.json) or a parent with a 'latest' file, received neither`, 'ERR_IO');
  const name = readSmallFile(latest).trim();
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
  const file = path.join(dir, 'state.json');
  const text = readSmallFile(file, 256 << 20);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new ResnextError(`checkpoint: ${file} expected valid JSON, received an unreadable file (${(e as Error).message})`, 'ERR_IO');
  }
  const state = checkState(parsed, file);
  const model = await loadSafetensors(path.join(dir, 'model.safetensors'));
  const optimizer = fs.existsSync(path.join(dir, 'optimizer.safetensors')) ? await loadSafetensors(path.join(dir, 'optimizer.safetensors')) : {};
  return { dir, state, model, optimizer };
}

/** Frees the tensors of a loaded checkpoint. */
export function disposeCheckpoint(c: LoadedCheckpoint): void {
  for (const t of [...Object.values(c.model), ...Object.values(c.optimizer)]) t.dispose();
}
