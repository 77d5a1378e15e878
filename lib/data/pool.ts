/**
 * The DataLoader's worker threads. Each worker gets the dataset source and transform specs once
 * (in-memory pixels live in a SharedArrayBuffer, so they are shared, not copied), then builds
 * batches on request. Idle workers are unref()ed so they never keep the process alive; a worker
 * with requests in flight is ref()ed so a script awaiting its batch does not exit early.
 *
 * The worker script: from the compiled package it is dist/data/worker.js next to this file.
 * When this module runs from TypeScript source (ts-jest, ts-node) there is no .js file, and a
 * worker thread cannot load .ts on Node 20; we then transpile worker.ts and the few modules it
 * imports with the `typescript` package into a temporary folder (keyed by a hash of their
 * source) and start that. Without `typescript` the loader falls back to the main thread, with a
 * warning.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { ResnextError } from '../native/errors';
import type { PreparedBatch } from './prepare';
import type { DataSource } from './source';
import type { TransformSpec } from './transforms';
import type { WorkerInit, WorkerReply, WorkerRequest } from './worker';

let cachedScript: string | null | undefined;

/** Transpiles lib/data/worker.ts and its relative imports (recursively) into a temp folder. */
function transpileWorker(): string | null {
  let ts: typeof import('typescript');
  try {
    ts = require('typescript');
  } catch {
    return null;
  }
  const libRoot = path.dirname(__dirname);
  const files = new Map<string, string>();
  const visit = (file: string) => {
    if (files.has(file)) return;
    const src = fs.readFileSync(file, 'utf8');
    files.set(file, src);
    for (const m of src.matchAll(/(?:from|import)\s+'(\.{1,2}\/[^']+)'/g)) {
      // type-only imports vanish in the output; transpiling them too is harmless
      visit(path.resolve(path.dirname(file), `${m[1]}.ts`));
    }
  };
  visit(path.join(__dirname, 'worker.ts'));
  const hash = createHash('sha256');
  for (const [f, s] of [...files].sort()) hash.update(f).update('\0').update(s).update('\0');
  const dir = path.join(os.tmpdir(), `resnext-data-worker-${hash.digest('hex').slice(0, 16)}`);
  const entry = path.join(dir, 'data', 'worker.js');
  if (!fs.existsSync(entry)) {
    // Build in a private folder, then rename it into place in one step: parallel test processes
    // must never see a half-written folder (worker.js present, a module it requires not yet).
    const tmp = `${dir}.${process.pid}.${Date.now()}.tmp`;
    for (const [f, s] of files) {
      const out = path.join(tmp, path.relative(libRoot, f)).replace(/\.ts$/, '.js');
      const js = ts.transpileModule(s, {
        compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
        fileName: f,
      }).outputText;
      fs.mkdirSync(path.dirname(out), { recursive: true });
      fs.writeFileSync(out, js);
    }
    try {
      fs.renameSync(tmp, dir);
    } catch {
      // another process won the race with identical content
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }
  return entry;
}

/** The worker script to start, or null when only the main thread can prepare batches. */
export function workerScript(): string | null {
  if (cachedScript !== undefined) return cachedScript;
  const compiled = path.join(__dirname, 'worker.js');
  if (!__filename.endsWith('.ts') && fs.existsSync(compiled)) cachedScript = compiled;
  else if (__filename.endsWith('.ts')) cachedScript = transpileWorker();
  else cachedScript = null;
  return cachedScript;
}

function sharpPath(): string | undefined {
  try {
    return require.resolve('sharp');
  } catch {
    return undefined;
  }
}

interface Slot {
  worker: Worker;
  pending: Map<number, { resolve: (b: PreparedBatch) => void; reject: (e: Error) => void }>;
}

export class WorkerPool {
  private slots: Slot[] = [];
  private nextId = 1;
  private failure: Error | null = null;

  constructor(script: string, n: number, source: DataSource, transforms: readonly TransformSpec[], seed: number) {
    const init: WorkerInit = {
      resnextDataWorker: true, source, transforms: [...transforms], seed,
      sharpPath: source.kind === 'files' ? sharpPath() : undefined,
    };
    for (let k = 0; k < n; k++) {
      const worker = new Worker(script, { workerData: init });
      const slot: Slot = { worker, pending: new Map() };
      worker.unref();
      worker.on('message', (m: WorkerReply) => {
        const p = slot.pending.get(m.id);
        if (!p) return;
        slot.pending.delete(m.id);
        if (slot.pending.size === 0) worker.unref();
        if ('error' in m) p.reject(new ResnextError(m.error.message, (m.error.code as never) ?? 'ERR_INTERNAL'));
        else p.resolve({ x: m.x, y: m.y });
      });
      const die = (e: Error) => {
        this.failure ??= e;
        for (const p of slot.pending.values()) p.reject(e);
        slot.pending.clear();
        worker.unref();
      };
      worker.on('error', (e) => die(new ResnextError(`DataLoader: worker expected to run, received an error: ${e.message}`, 'ERR_INTERNAL')));
      worker.on('exit', (code) => die(new ResnextError(`DataLoader: worker expected to stay alive, received exit code ${code}`, 'ERR_INTERNAL')));
      this.slots.push(slot);
    }
  }

  run(indices: Int32Array, epoch: number): Promise<PreparedBatch> {
    if (this.failure) return Promise.reject(this.failure);
    // The least busy worker takes the request.
    let slot = this.slots[0];
    for (const s of this.slots) if (s.pending.size < slot.pending.size) slot = s;
    const id = this.nextId++;
    return new Promise<PreparedBatch>((resolve, reject) => {
      if (slot.pending.size === 0) slot.worker.ref();
      slot.pending.set(id, { resolve, reject });
      slot.worker.postMessage({ id, epoch, indices } satisfies WorkerRequest);
    });
  }

  close(): void {
    const closed = new ResnextError('DataLoader: batch expected before close(), received close()', 'ERR_ARG');
    this.failure ??= closed;
    for (const s of this.slots) {
      for (const p of s.pending.values()) p.reject(closed);
      s.pending.clear();
      s.worker.removeAllListeners('exit');
      s.worker.on('error', () => undefined);
      void s.worker.terminate();
    }
    this.slots = [];
  }
}
