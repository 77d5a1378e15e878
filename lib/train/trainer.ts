/**
 * Trainer: the training loop. Each step builds forward, loss, backward and the SGD update on
 * the tape; the kernels run on the device's queue (off the JS thread), and the loop awaits the
 * step's loss, so the event loop stays responsive (progress output, AbortSignal). Per epoch it
 * evaluates loss, top-1 and top-5 on validation data, writes JSONL metrics and a checkpoint.
 * With `resume`, training continues from the latest checkpoint exactly where it stopped: the
 * same data order, augmentation, learning rate, RNG state and momentum, so on the CPU an
 * interrupted-then-resumed run reproduces the uninterrupted run's losses.
 *
 * Fine-tuning (issue 13): start from pretrained weights (`await models.resnext50_32x4d({ weights,
 * numClasses })` replaces the head), then `freezeBackbone` trains the head only, with the
 * backbone's BatchNorm layers in eval mode (their running statistics are the pretrained ones and
 * stay so), and `backboneLrScale` gives the backbone a fraction of the head's learning rate.
 *
 * Data parallelism (issue 15): with `distributed` (true: the group of distributed.init() or the
 * launcher's environment; or a ProcessGroup), parameters and buffers are broadcast from rank 0
 * at the start, gradients are averaged by a bucketed allreduce that starts during backward
 * (./distributed/ddp.ts), each rank trains on its shard of every global batch (the batches a
 * single process would see, split by rank), losses and epoch metrics are reduced over ranks,
 * and only rank 0 writes checkpoints, logs and progress. `syncBatchNorm` makes batch norm use
 * the global batch's statistics. Resume needs the same world size (recorded in state.json).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, fail, ResnextError } from '../native/errors';
import { argmax, crossEntropy, topk } from '../ops/nn';
import { getRngState, setRngState, tensor } from '../tensor/create';
import { type Device, keep, tidy } from '../tensor/tensor';
import { noGrad } from '../autograd/engine';
import type { Module } from '../nn/module';
import type { SGD } from '../optim/sgd';
import { ConstantLR, type Schedule } from '../optim/schedule';
import { disposeCheckpoint, loadCheckpoint, saveCheckpoint, type TrainingState } from './checkpoint';
import { Progress } from './progress';
import { GradReducer } from './distributed/ddp';
import { getGroup, init, ProcessGroup, writeInto } from './distributed/process-group';
import { convertSyncBatchNorm } from './distributed/sync-batch-norm';

/** One batch: NCHW float32 images and int32 labels. */
export interface Batch {
  x: Float32Array;
  y: Int32Array;
  shape: [number, number, number, number];
}

/** Anything that yields the batches of an epoch in a deterministic order (see lib/data's DataLoader). */
export interface BatchSource {
  readonly batchesPerEpoch: number;
  /** Set when the source already yields only this rank's part of each global batch (DataLoader's `shard`). */
  readonly shard?: { rank: number; worldSize: number } | null;
  batches(epoch: number, options?: { startBatch?: number }): AsyncIterable<Batch>;
}

export interface TrainerOptions {
  model: Module;
  optimizer: SGD;
  /** Learning rate per step (default: the optimizer's lr, constant). */
  schedule?: Schedule;
  labelSmoothing?: number;
  device?: Device;
  /** Save a checkpoint here after every epoch (and when aborted). */
  checkpointDir?: string;
  /** Also save every N steps (0 = only per epoch). */
  checkpointEvery?: number;
  /** Complete checkpoints to keep (default 2). */
  keepCheckpoints?: number;
  /** Append JSON lines of metrics here. */
  logFile?: string;
  /** Steps between JSONL step records (default 50). */
  logEvery?: number;
  /** Progress output: 'auto' (bar on a TTY, lines otherwise), true, false. */
  progress?: boolean | 'auto';
  /** Where progress goes (default process.stderr). */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Seed of data order and augmentation, recorded in checkpoints (default 0). */
  dataSeed?: number;
  /** Stored in checkpoints so tools can rebuild the model (e.g. { builder, options }). */
  modelSpec?: Record<string, unknown>;
  /** Fine-tuning: the classifier head's module name (default 'fc'); every other parameter is the backbone. */
  head?: string;
  /**
   * Train the head only: the backbone's parameters get no gradients (their requiresGrad is set
   * to false on the model) and every backbone module, BatchNorm included, runs in eval mode.
   */
  freezeBackbone?: boolean;
  /** The backbone's learning rate as a fraction of the head's, e.g. 0.1 (sets optimizer.lrScales). Default 1. */
  backboneLrScale?: number;
  /**
   * Data-parallel training: true (the group of distributed.init(), or one made from RANK,
   * WORLD_SIZE, MASTER_ADDR and MASTER_PORT) or a ProcessGroup. Batches are global: each rank
   * trains on its 1/worldSize of every batch.
   */
  distributed?: boolean | ProcessGroup;
  /** Batch norm statistics over the global batch (SyncBatchNorm), with `distributed`. Default false. */
  syncBatchNorm?: boolean;
  /** Gradient bucket size for the allreduce, MiB (default 25, as PyTorch's DDP). */
  bucketCapMb?: number;
  /** Without syncBatchNorm: broadcast rank 0's float buffers (running statistics) before every step, as DDP does. Default true. */
  broadcastBuffers?: boolean;
}

export interface FitOptions {
  epochs: number;
  validation?: BatchSource;
  signal?: AbortSignal;
  /** Continue from the latest checkpoint in checkpointDir (true) or from a given checkpoint path. */
  resume?: boolean | string;
  /** Called after every step with its loss (e.g. to stop early through an AbortController). */
  onStep?: (info: { step: number; epoch: number; batch: number; loss: number; lr: number }) => void;
}

export interface EpochMetrics {
  epoch: number;
  trainLoss: number;
  trainAcc: number;
  valLoss?: number;
  valTop1?: number;
  valTop5?: number;
  seconds: number;
  imgPerSec: number;
}

export interface FitResult {
  history: EpochMetrics[];
  /** Loss of every step run by this call, in order. */
  losses: number[];
  steps: number;
  aborted: boolean;
}

export interface EvalResult {
  loss: number;
  top1: number;
  top5: number;
  samples: number;
}

export class Trainer {
  readonly model: Module;
  readonly optimizer: SGD;
  readonly schedule: Schedule;
  private readonly o: TrainerOptions;
  private progress: Progress;
  step = 0;
  /** The process group while fit() trains data-parallel (null otherwise). */
  group: ProcessGroup | null = null;
  private reducer: GradReducer | null = null;
  /** Time of the last step's gradient allreduce (from its first bucket's launch to the end), ms. */
  lastCommMs = 0;

  constructor(options: TrainerOptions) {
    if (!options || typeof options.model?.forward !== 'function') fail('ERR_ARG', 'Trainer', 'model', 'a Module', describe(options?.model));
    if (!options.optimizer || typeof options.optimizer.step !== 'function') fail('ERR_ARG', 'Trainer', 'optimizer', 'an optimizer (optim.SGD)', describe(options.optimizer));
    this.o = options;
    this.model = options.model;
    this.optimizer = options.optimizer;
    this.schedule = options.schedule ?? new ConstantLR(options.optimizer.lr);
    this.progress = Progress.auto(options.stream ?? process.stderr, options.progress ?? 'auto');
    if (options.freezeBackbone || options.backboneLrScale !== undefined) this.setUpFineTuning();
  }

  private isHead(name: string): boolean {
    const head = this.o.head ?? 'fc';
    return name === head || name.startsWith(`${head}.`);
  }

  /** Splits parameters into head and backbone; freezes or scales the backbone (see TrainerOptions). */
  private setUpFineTuning(): void {
    const { freezeBackbone, backboneLrScale } = this.o;
    if (backboneLrScale !== undefined && !(Number.isFinite(backboneLrScale) && backboneLrScale >= 0))
      fail('ERR_ARG', 'Trainer', 'backboneLrScale', 'a finite number >= 0 (e.g. 0.1)', describe(backboneLrScale));
    const named = this.model.namedParameters();
    const head = named.filter(([n]) => this.isHead(n));
    if (head.length === 0 || head.length === named.length)
      fail('ERR_ARG', 'Trainer', 'head', `the name of the classifier module, whose parameters are some but not all of the model's`, describe(this.o.head ?? 'fc'));
    const backbone = new Set(named.filter(([n]) => !this.isHead(n)).map(([, t]) => t));
    const scale = freezeBackbone ? 0 : (backboneLrScale ?? 1);
    this.optimizer.params.forEach((p, i) => {
      if (backbone.has(p)) this.optimizer.lrScales[i] = scale;
    });
    if (freezeBackbone)
      for (const p of backbone) {
        p.requiresGrad = false;
        p.zeroGrad();
      }
  }

  /** Training mode; with freezeBackbone every backbone module (BatchNorm included) stays in eval mode. */
  private trainMode(): void {
    this.model.train();
    if (this.o.freezeBackbone) for (const [name, m] of this.model.namedModules()) if (name && !this.isHead(name)) m.training = false;
  }

  private log(record: Record<string, unknown>): void {
    if (!this.o.logFile || (this.group && this.group.rank !== 0)) return;
    fs.mkdirSync(path.dirname(path.resolve(this.o.logFile)), { recursive: true });
    fs.appendFileSync(this.o.logFile, `${JSON.stringify({ time: new Date().toISOString(), ...record })}\n`);
  }

  private state(epoch: number, batchInEpoch: number, history: EpochMetrics[]): TrainingState {
    const opt = this.optimizer;
    return {
      version: 1, epoch, batchInEpoch, step: this.step,
      optimizer: {
        step: opt.stepCount, lr: opt.lr,
        options: { momentum: opt.momentum, dampening: opt.dampening, nesterov: opt.nesterov, weightDecay: opt.weightDecay, decayBnAndBias: opt.decayBnAndBias },
        hasBuffer: opt.stateDict().buffers.map((b) => b !== null),
      },
      schedule: this.schedule.toJSON(), rng: getRngState(), dataSeed: this.o.dataSeed ?? 0, modelSpec: this.o.modelSpec,
      ...(this.group ? { worldSize: this.group.worldSize } : {}),
      history: history as unknown as Record<string, unknown>[], savedAt: new Date().toISOString(),
    };
  }

  private async save(epoch: number, batchInEpoch: number, history: EpochMetrics[]): Promise<void> {
    if (!this.o.checkpointDir || (this.group && this.group.rank !== 0)) return;
    const dir = await saveCheckpoint(this.o.checkpointDir, this.model, this.optimizer, this.state(epoch, batchInEpoch, history), this.o.keepCheckpoints ?? 2);
    this.log({ type: 'checkpoint', step: this.step, epoch, batchInEpoch, dir });
  }

  /** Restores model, optimizer, RNG and position from a checkpoint; returns where to continue. */
  private async restore(from: string): Promise<{ epoch: number; batch: number; history: EpochMetrics[] }> {
    const ck = await loadCheckpoint(from);
    try {
      const saved = ck.state.worldSize ?? 1;
      const now = this.group?.worldSize ?? 1;
      if (saved !== now) throw new ResnextError(`resume: ${ck.dir} expected a run with world size ${now}, received one saved with world size ${saved}`, 'ERR_ARG');
      this.model.loadStateDict(ck.model, { strict: true });
      const names = this.model.namedParameters().map(([n]) => n);
      const bufs = names.map((n, i) => (ck.state.optimizer.hasBuffer[i] ? (ck.optimizer[n] ?? null) : null));
      if (bufs.some((b, i) => ck.state.optimizer.hasBuffer[i] && !b))
        throw new ResnextError(`resume: ${ck.dir}/optimizer.safetensors expected a momentum buffer for every parameter, received fewer`, 'ERR_IO');
      this.optimizer.loadStateDict({ step: ck.state.optimizer.step, lr: ck.state.optimizer.lr, buffers: bufs });
      setRngState(ck.state.rng);
      this.step = ck.state.step;
      this.progress.log(`resumed from ${ck.dir} (epoch ${ck.state.epoch + 1}, batch ${ck.state.batchInEpoch}, step ${ck.state.step})`);
      return { epoch: ck.state.epoch, batch: ck.state.batchInEpoch, history: ck.state.history as unknown as EpochMetrics[] };
    } finally {
      disposeCheckpoint(ck);
    }
  }

  /** Trains for `epochs` epochs (in total, counting epochs done before a resume). */
  async fit(train: BatchSource, options: FitOptions): Promise<FitResult> {
    const { epochs, validation, signal } = options;
    if (!Number.isInteger(epochs) || epochs < 1) fail('ERR_ARG', 'fit', 'epochs', 'a positive integer', describe(epochs));
    if (!train || typeof train.batches !== 'function') fail('ERR_ARG', 'fit', 'train', 'a batch source (a DataLoader)', describe(train));
    await this.setUpDistributed();
    let start = { epoch: 0, batch: 0, history: [] as EpochMetrics[] };
    if (options.resume) {
      const from = typeof options.resume === 'string' ? options.resume : this.o.checkpointDir;
      if (!from) fail('ERR_ARG', 'fit', 'resume', 'a checkpoint path, or checkpointDir in the Trainer options', 'true without checkpointDir');
      if (typeof options.resume === 'string' || fs.existsSync(path.join(from, 'latest'))) start = await this.restore(from);
      else this.progress.log(`no checkpoint in ${from} yet: starting from scratch`);
    }
    if (this.group) this.broadcastState(true);
    const history = [...start.history];
    const losses: number[] = [];
    const device = this.o.device ?? 'cpu';
    const steps = train.batchesPerEpoch;
    const logEvery = this.o.logEvery ?? 50;

    for (let epoch = start.epoch; epoch < epochs; epoch++) {
      this.trainMode();
      const t0 = Date.now();
      let seen = 0, correct = 0, lossSum = 0;
      let batchIndex = epoch === start.epoch ? start.batch : 0;
      for await (let b of train.batches(epoch, { startBatch: batchIndex })) {
        // Data-parallel: every rank stops at the same step (the abort flag travels with the loss).
        if (this.group ? this.anyAborted : signal?.aborted) {
          await this.save(epoch, batchIndex, history);
          this.log({ type: 'aborted', step: this.step, epoch, batchInEpoch: batchIndex });
          this.progress.log(`aborted at epoch ${epoch + 1}, batch ${batchIndex}${this.o.checkpointDir ? `; checkpoint saved in ${this.o.checkpointDir}` : ''}`);
          return { history, losses, steps: this.step, aborted: true };
        }
        const lr = this.schedule.lrAt(this.step);
        const part = this.group ? this.localPart(b, train) : b;
        const { lv, pv } = await this.trainStep(part, lr, device, !!signal?.aborted);
        b = part;
        this.step++;
        batchIndex++;
        losses.push(lv);
        lossSum += lv * b.shape[0];
        seen += b.shape[0];
        for (let i = 0; i < pv.length; i++) if (pv[i] === b.y[i]) correct++;
        const sec = (Date.now() - t0) / 1000;
        const done = batchIndex - (epoch === start.epoch ? start.batch : 0);
        this.progress.update({
          epoch, epochs, step: batchIndex, steps, loss: lossSum / seen, acc: correct / seen, lr,
          imgPerSec: seen / Math.max(sec, 1e-9), etaSec: ((steps - batchIndex) * sec) / Math.max(1, done),
        });
        options.onStep?.({ step: this.step, epoch, batch: batchIndex, loss: lv, lr });
        if (this.step % logEvery === 0) this.log({ type: 'step', step: this.step, epoch, batch: batchIndex, loss: lv, lr, imgPerSec: seen / Math.max(sec, 1e-9) });
        if (this.o.checkpointEvery && this.step % this.o.checkpointEvery === 0 && batchIndex < steps) await this.save(epoch, batchIndex, history);
      }
      if (this.group) {
        // Epoch metrics over every rank's samples (step losses are already global-batch means).
        const all = new Float32Array([seen, correct]);
        await this.group.allreduceArray(all, 'sum');
        lossSum = (lossSum / Math.max(1, seen)) * all[0];
        seen = all[0];
        correct = all[1];
      }
      const seconds = (Date.now() - t0) / 1000;
      const m: EpochMetrics = { epoch: epoch + 1, trainLoss: lossSum / Math.max(1, seen), trainAcc: correct / Math.max(1, seen), seconds, imgPerSec: seen / Math.max(seconds, 1e-9) };
      if (validation) {
        const v = await this.evaluate(validation, { signal });
        Object.assign(m, { valLoss: v.loss, valTop1: v.top1, valTop5: v.top5 });
      }
      history.push(m);
      this.log({ type: 'epoch', ...m, step: this.step });
      this.progress.log(
        `epoch ${epoch + 1}/${epochs}: train loss ${m.trainLoss.toFixed(4)} acc ${(100 * m.trainAcc).toFixed(2)}%` +
          (validation ? `, val loss ${m.valLoss!.toFixed(4)} top-1 ${(100 * m.valTop1!).toFixed(2)}% top-5 ${(100 * m.valTop5!).toFixed(2)}%` : '') +
          ` (${seconds.toFixed(1)} s, ${m.imgPerSec.toFixed(1)} img/s)`,
      );
      await this.save(epoch + 1, 0, history);
    }
    return { history, losses, steps: this.step, aborted: false };
  }

  /** Joins or takes the process group and prepares data parallelism (once per fit). */
  private async setUpDistributed(): Promise<void> {
    const d = this.o.distributed;
    if (!d) return;
    const g = d instanceof ProcessGroup ? d : (getGroup() ?? (await init()));
    this.group = g;
    this.anyAborted = false;
    if (g.rank !== 0) this.progress = Progress.auto(this.o.stream ?? process.stderr, false);
    if (this.o.syncBatchNorm) convertSyncBatchNorm(this.model, g);
    const cap = this.o.bucketCapMb;
    if (cap !== undefined && !(Number.isFinite(cap) && cap > 0)) fail('ERR_ARG', 'Trainer', 'bucketCapMb', 'a positive number', describe(cap));
    const params = this.optimizer.params.filter((p) => p.requiresGrad);
    this.reducer = new GradReducer(g, params, cap ? { bucketCapBytes: cap * 1024 * 1024 } : {});
  }

  /** Copies rank 0's parameters (and buffers) to every rank. */
  private broadcastState(params: boolean): void {
    const g = this.group!;
    const ts = [...(params ? this.model.parameters() : []), ...this.model.buffers()].filter((t) => t.dtype === 'float32');
    // One collective for all of them.
    const d = new Float32Array(ts.reduce((a, t) => a + t.size, 0));
    let k = 0;
    for (const t of ts) {
      d.set(t.dataSync() as Float32Array, k);
      k += t.size;
    }
    g.broadcastArraySync(d, 0);
    if (g.rank === 0) return;
    k = 0;
    for (const t of ts) {
      writeInto(t, d.subarray(k, k + t.size));
      k += t.size;
    }
  }

  /** This rank's rows of a global batch (unless the source already shards). */
  private localPart(b: Batch, src: BatchSource): Batch {
    const g = this.group!;
    if (src.shard && src.shard.worldSize === g.worldSize && src.shard.rank === g.rank) return b;
    const [n, c, h, w] = b.shape;
    const lo = Math.floor((n * g.rank) / g.worldSize);
    const hi = Math.floor((n * (g.rank + 1)) / g.worldSize);
    const per = c * h * w;
    return { x: b.x.subarray(lo * per, hi * per), y: b.y.subarray(lo, hi), shape: [hi - lo, c, h, w] };
  }

  /** Forward, backward (with the gradient allreduce when data-parallel) and the SGD update. */
  /** Data-parallel: whether some rank's signal had aborted by the end of the last step. */
  private anyAborted = false;

  private async trainStep(b: Batch, lr: number, device: Device, aborted: boolean): Promise<{ lv: number; pv: Int32Array | Float32Array }> {
    const g = this.group;
    const reducer = this.reducer;
    try {
      if (g && !this.o.syncBatchNorm && this.o.broadcastBuffers !== false) this.broadcastState(false);
      const [loss, pred] = tidy(() => {
        const x = tensor(b.x, b.shape, { device });
        const logits = this.model.forward(x);
        const l = crossEntropy(logits, b.y, { labelSmoothing: this.o.labelSmoothing ?? 0 });
        if (reducer) reducer.during(() => l.backward());
        else {
          l.backward();
          this.optimizer.lr = lr;
          this.optimizer.step();
          this.optimizer.zeroGrad();
        }
        return [keep(l), keep(argmax(logits))] as const;
      });
      if (reducer) {
        await reducer.finish();
        this.lastCommMs = reducer.lastCommMs;
        tidy(() => {
          this.optimizer.lr = lr;
          this.optimizer.step();
          this.optimizer.zeroGrad();
        });
      }
      // Waiting here (off the JS thread) lets timers, progress and abort handlers run.
      let lv = (await loss.data())[0];
      const pv = (await pred.data()) as Int32Array | Float32Array;
      loss.dispose();
      pred.dispose();
      if (g) {
        // The global batch's loss: the mean of the ranks' means (equal shards).
        // and whether any rank was asked to stop.
        const a = new Float32Array([lv, aborted ? 1 : 0]);
        await g.allreduceArray(a, 'sum');
        lv = a[0] / g.worldSize;
        this.anyAborted = a[1] > 0;
      }
      return { lv, pv };
    } catch (e) {
      if (g) throw await g.explain(`train step ${this.step + 1} (rank ${g.rank} of ${g.worldSize})`, e);
      throw e;
    }
  }

  /** Loss, top-1 and top-5 accuracy over a data source, in eval mode without gradients. */
  async evaluate(data: BatchSource, options: { signal?: AbortSignal } = {}): Promise<EvalResult> {
    const wasTraining = this.model.training;
    this.model.eval();
    const device = this.o.device ?? 'cpu';
    let lossSum = 0, top1 = 0, top5 = 0, samples = 0;
    try {
      for await (const b of data.batches(0)) {
        if (options.signal?.aborted) break;
        const [l, t] = tidy(() =>
          noGrad(() => {
            const logits = this.model.forward(tensor(b.x, b.shape, { device }));
            const k = Math.min(5, logits.shape[1]);
            return [keep(crossEntropy(logits, b.y)), keep(topk(logits, k))] as const;
          }),
        );
        const lv = (await l.data())[0];
        const tk = await t.data();
        const k = t.shape[1];
        l.dispose();
        t.dispose();
        const n = b.shape[0];
        lossSum += lv * n;
        samples += n;
        for (let i = 0; i < n; i++) {
          if (tk[i * k] === b.y[i]) top1++;
          for (let j = 0; j < k; j++) if (tk[i * k + j] === b.y[i]) top5++;
        }
      }
    } finally {
      this.model.train(wasTraining);
    }
    return { loss: lossSum / Math.max(1, samples), top1: top1 / Math.max(1, samples), top5: top5 / Math.max(1, samples), samples };
  }
}

