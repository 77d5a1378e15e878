/**
 * DataLoader: shuffles, batches and transforms a Dataset into NCHW float32 batches, preparing
 * the next ones in worker threads while the caller computes on the current one.
 *
 * The order of an epoch is a permutation keyed by (seed, epoch) and each sample's augmentation
 * is keyed by (seed, epoch, sample index), so batch b of epoch e is the same whatever happened
 * before: a run resumed from a checkpoint continues mid-epoch with
 * `loader.batches(epoch, { startBatch })` and sees exactly the batches the uninterrupted run saw.
 */
import * as os from 'node:os';
import { describe, fail } from '../native/errors';
import type { Dataset } from './dataset';
import { prepareBatch, type PreparedBatch } from './prepare';
import { WorkerPool, workerScript } from './pool';
import { permutation } from './rng';
import { compose, type ImageShape, type Pipeline, type TransformSpec } from './transforms';

export interface DataLoaderOptions {
  batchSize: number;
  /** Shuffle each epoch (default false, as in PyTorch). */
  shuffle?: boolean;
  /** Keys the shuffle and the random transforms (default 0). */
  seed?: number;
  /** Transform specs applied in order to each sample (pixels are first scaled to [0, 1]). */
  transforms?: readonly TransformSpec[];
  /** Worker threads (default max(1, cores - 1)); 0 prepares batches in the calling thread. */
  workers?: number;
  /** Drop the last, incomplete batch (default false). */
  dropLast?: boolean;
  /** Batches prepared ahead (default 2 per worker, at least 2). */
  prefetch?: number;
  /**
   * Data-parallel training (issue 15): yield only rows [floor(n*rank/worldSize),
   * floor(n*(rank+1)/worldSize)) of each global batch of n (batchSize is the global batch), so
   * the ranks together see exactly the batches one process would.
   */
  shard?: { rank: number; worldSize: number };
}

export interface Batch {
  /** N*C*H*W values, NCHW. */
  x: Float32Array;
  /** N labels. */
  y: Int32Array;
  shape: [number, number, number, number];
  /** Batch number within the epoch (0-based). */
  index: number;
  epoch: number;
}

let warnedFallback = false;

export class DataLoader {
  readonly dataset: Dataset;
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly seed: number;
  readonly transforms: readonly TransformSpec[];
  /** Worker threads actually used (0: main thread). */
  readonly workers: number;
  readonly dropLast: boolean;
  readonly prefetch: number;
  /** This rank's part of every batch (null: whole batches). */
  readonly shard: { rank: number; worldSize: number } | null;
  /** [C, H, W] of one sample after the transforms. */
  readonly sampleShape: ImageShape;
  private readonly pipeline: Pipeline;
  private pool: WorkerPool | null = null;
  private script: string | null = null;

  constructor(dataset: Dataset, opts: DataLoaderOptions) {
    const op = 'DataLoader';
    if (!dataset || typeof dataset !== 'object' || !('source' in dataset)) fail('ERR_ARG', op, 'dataset', 'a Dataset', describe(dataset));
    if (!opts || typeof opts !== 'object') fail('ERR_ARG', op, 'options', '{ batchSize, ... }', describe(opts));
    const int = (k: string, v: unknown, dflt: number, min: number): number => {
      if (v === undefined) return dflt;
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) fail('ERR_ARG', op, k, `an integer >= ${min}`, describe(v));
      return v;
    };
    const bool = (k: string, v: unknown, dflt: boolean): boolean => {
      if (v === undefined) return dflt;
      if (typeof v !== 'boolean') fail('ERR_ARG', op, k, 'a boolean', describe(v));
      return v;
    };
    this.dataset = dataset;
    this.batchSize = int('batchSize', opts.batchSize, Number.NaN, 1);
    if (Number.isNaN(this.batchSize)) fail('ERR_ARG', op, 'batchSize', 'an integer >= 1', 'undefined');
    this.shuffle = bool('shuffle', opts.shuffle, false);
    this.seed = int('seed', opts.seed, 0, 0);
    this.dropLast = bool('dropLast', opts.dropLast, false);
    this.transforms = [...(opts.transforms ?? [])];
    // JSON round trip: specs must be plain data (what the workers receive).
    this.pipeline = compose(JSON.parse(JSON.stringify(this.transforms)), [dataset.channels, dataset.height, dataset.width]);
    this.sampleShape = this.pipeline.outShape;
    const cores = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
    let workers = int('workers', opts.workers, Math.max(1, cores - 1), 0);
    if (workers > 0) {
      this.script = workerScript();
      if (!this.script) {
        if (!warnedFallback) {
          warnedFallback = true;
          process.emitWarning('resnext DataLoader: no worker script found (compiled dist/data/worker.js or the typescript package); preparing batches in the main thread');
        }
        workers = 0;
      }
    }
    this.workers = workers;
    this.prefetch = int('prefetch', opts.prefetch, workers > 0 ? Math.max(2, 2 * workers) : 1, 1);
    this.shard = null;
    if (opts.shard !== undefined) {
      const ws = int('shard.worldSize', opts.shard?.worldSize, Number.NaN, 1);
      const r = int('shard.rank', opts.shard?.rank, Number.NaN, 0);
      if (!(r < ws)) fail('ERR_ARG', op, 'shard.rank', `an integer in [0, ${ws})`, describe(opts.shard?.rank));
      this.shard = { rank: r, worldSize: ws };
    }
  }

  /** Number of batches in one epoch. */
  get batchesPerEpoch(): number {
    const n = this.dataset.length;
    return this.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }

  /** The dataset indices of one epoch, in order. */
  order(epoch: number): Int32Array {
    this.checkEpoch('order', epoch);
    const n = this.dataset.length;
    if (this.shuffle) return permutation(n, this.seed, epoch);
    const p = new Int32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    return p;
  }

  private checkEpoch(op: string, epoch: unknown): number {
    if (typeof epoch !== 'number' || !Number.isSafeInteger(epoch) || epoch < 0) fail('ERR_ARG', op, 'epoch', 'an integer >= 0', describe(epoch));
    return epoch;
  }

  private prepare(indices: Int32Array, epoch: number): Promise<PreparedBatch> {
    if (this.workers === 0) return prepareBatch(this.dataset.source, this.pipeline, indices, this.seed, epoch);
    this.pool ??= new WorkerPool(this.script!, this.workers, this.dataset.source, this.transforms, this.seed);
    return this.pool.run(indices, epoch);
  }

  /**
   * The batches of one epoch, from batch `startBatch` (default 0) on. The next `prefetch`
   * batches are being prepared while the caller holds the current one.
   */
  batches(epoch: number, opts: { startBatch?: number } = {}): AsyncIterable<Batch> {
    const op = 'batches';
    this.checkEpoch(op, epoch);
    const nb = this.batchesPerEpoch;
    const start = opts.startBatch ?? 0;
    if (typeof start !== 'number' || !Number.isSafeInteger(start) || start < 0 || start > nb)
      fail('ERR_ARG', op, 'startBatch', `an integer in [0, ${nb}]`, describe(start));
    const order = this.order(epoch);
    const [c, h, w] = this.sampleShape;
    const make = (b: number): Promise<Batch> => {
      let idx = order.subarray(b * this.batchSize, Math.min(order.length, (b + 1) * this.batchSize));
      if (this.shard) {
        const { rank, worldSize } = this.shard;
        idx = idx.subarray(Math.floor((idx.length * rank) / worldSize), Math.floor((idx.length * (rank + 1)) / worldSize));
      }
      return this.prepare(Int32Array.from(idx), epoch).then(({ x, y }) => ({ x, y, shape: [y.length, c, h, w], index: b, epoch }));
    };
    const self = this;
    return {
      async *[Symbol.asyncIterator]() {
        const queue: Promise<Batch>[] = [];
        let next = start;
        const fill = () => {
          while (next < nb && queue.length < self.prefetch) {
            const p = make(next++);
            p.catch(() => undefined); // handled when awaited; avoid unhandled-rejection noise meanwhile
            queue.push(p);
          }
        };
        try {
          fill();
          while (queue.length > 0) {
            const p = queue.shift()!;
            fill();
            yield await p;
          }
        } finally {
          queue.length = 0;
        }
      },
    };
  }

  /** Terminates the worker threads (a later batches() starts new ones). */
  close(): void {
    this.pool?.close();
    this.pool = null;
  }
}
