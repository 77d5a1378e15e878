/**
 * The DataLoader's worker thread: receives the dataset's source (shared memory for in-memory
 * datasets, so no copy) and the transform specs once, then prepares batches on request:
 * { id, epoch, indices } -> { id, x, y } with x and y transferred, not copied.
 * Imports only modules that never touch tensors or the native addon.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { setSharpPath } from './decode';
import { prepareBatch } from './prepare';
import type { DataSource } from './source';
import { compose, type TransformSpec } from './transforms';

export interface WorkerInit {
  resnextDataWorker: true;
  source: DataSource;
  transforms: TransformSpec[];
  seed: number;
  sharpPath?: string;
}

export interface WorkerRequest {
  id: number;
  epoch: number;
  indices: Int32Array;
}

export type WorkerReply = { id: number; x: Float32Array; y: Int32Array } | { id: number; error: { message: string; code?: string } };

const init = workerData as WorkerInit | undefined;
if (parentPort && init?.resnextDataWorker) {
  const port = parentPort;
  if (init.sharpPath) setSharpPath(init.sharpPath);
  const src = init.source;
  const pipeline = compose(init.transforms, [src.channels, src.height, src.width]);
  port.on('message', (m: WorkerRequest) => {
    prepareBatch(src, pipeline, m.indices, init.seed, m.epoch).then(
      ({ x, y }) => port.postMessage({ id: m.id, x, y } satisfies WorkerReply, [x.buffer as ArrayBuffer, y.buffer as ArrayBuffer]),
      (e: unknown) => {
        const err = e as { message?: string; code?: string };
        port.postMessage({ id: m.id, error: { message: err?.message ?? String(e), code: err?.code } } satisfies WorkerReply);
      },
    );
  });
}
