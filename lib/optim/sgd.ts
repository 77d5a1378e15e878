/**
 * SGD with momentum, dampening, Nesterov and weight decay: PyTorch's torch.optim.SGD update,
 *   d = g + wd * p;  buf = momentum * buf + (1 - dampening) * d  (buf = d on the first step);
 *   d = nesterov ? d + momentum * buf : buf;  p -= lr * d
 * run in place by one native kernel per parameter. The learning rate is a plain field that a
 * schedule sets before each step.
 */
import { describe, fail } from '../native/errors';
import { sgdStep } from '../ops/nn';
import { zerosLike } from '../tensor/create';
import { keep, Tensor } from '../tensor/tensor';

export interface SGDOptions {
  lr: number;
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
  weightDecay?: number;
  /**
   * Apply weight decay to 1-D parameters too (BN weights and biases, all biases). Default
   * true (PyTorch); false is the common ResNet recipe refinement.
   */
  decayBnAndBias?: boolean;
}

export interface SGDState {
  step: number;
  lr: number;
  /** Momentum buffers by parameter index (in the order given to the constructor). */
  buffers: (Tensor | null)[];
}

export class SGD {
  lr: number;
  readonly momentum: number;
  readonly dampening: number;
  readonly nesterov: boolean;
  readonly weightDecay: number;
  readonly decayBnAndBias: boolean;
  readonly params: Tensor[];
  /**
   * Learning-rate multiplier per parameter (same order as params, default 1): PyTorch's
   * per-group lr as a factor of `lr`, so a schedule keeps scaling every group. Fine-tuning sets
   * the backbone's to e.g. 0.1 (Trainer's backboneLrScale); a parameter at 0 is not updated.
   */
  readonly lrScales: number[];
  /** Completed steps. */
  stepCount = 0;
  private buffers: (Tensor | null)[];

  constructor(params: Iterable<Tensor>, options: SGDOptions) {
    if (params === null || typeof (params as { [Symbol.iterator]?: unknown })?.[Symbol.iterator] !== 'function')
      fail('ERR_ARG', 'SGD', 'params', 'an iterable of Tensors (model.parameters())', describe(params));
    this.params = [...params];
    this.params.forEach((p, i) => {
      if (!(p instanceof Tensor)) fail('ERR_ARG', 'SGD', `params[${i}]`, 'a Tensor', describe(p));
    });
    if (!options || typeof options.lr !== 'number' || !(options.lr >= 0))
      fail('ERR_ARG', 'SGD', 'lr', 'a non-negative number', describe(options?.lr));
    this.lr = options.lr;
    this.momentum = options.momentum ?? 0;
    this.dampening = options.dampening ?? 0;
    this.nesterov = options.nesterov ?? false;
    this.weightDecay = options.weightDecay ?? 0;
    this.decayBnAndBias = options.decayBnAndBias ?? true;
    if (!(this.momentum >= 0)) fail('ERR_ARG', 'SGD', 'momentum', 'a non-negative number', describe(options.momentum));
    if (!(this.weightDecay >= 0)) fail('ERR_ARG', 'SGD', 'weightDecay', 'a non-negative number', describe(options.weightDecay));
    if (this.nesterov && (this.momentum <= 0 || this.dampening !== 0))
      fail('ERR_ARG', 'SGD', 'nesterov', 'momentum > 0 and dampening = 0', `momentum ${this.momentum}, dampening ${this.dampening}`);
    this.buffers = this.params.map(() => null);
    this.lrScales = this.params.map(() => 1);
  }

  /** Applies one update to every parameter that has a gradient. */
  step(): void {
    this.params.forEach((p, i) => {
      const scale = this.lrScales[i] ?? 1;
      if (!p.grad || scale === 0) return;
      let buf = this.buffers[i];
      const first = !buf;
      if (this.momentum !== 0 && !buf) buf = this.buffers[i] = keep(zerosLike(p));
      const wd = this.decayBnAndBias || p.ndim > 1 ? this.weightDecay : 0;
      sgdStep(p, p.grad, {
        lr: this.lr * scale, momentum: this.momentum, dampening: this.dampening, nesterov: this.nesterov, weightDecay: wd,
        momentumBuffer: buf, firstStep: first,
      });
    });
    this.stepCount++;
  }

  /** Disposes and clears every parameter's gradient. */
  zeroGrad(): void {
    for (const p of this.params) p.zeroGrad();
  }

  /** Step count, lr and the momentum buffers (the optimizer's own tensors: do not dispose). */
  stateDict(): SGDState {
    return { step: this.stepCount, lr: this.lr, buffers: [...this.buffers] };
  }

  /** Restores a state: buffers are copied into new tensors owned by the optimizer. */
  loadStateDict(state: SGDState): void {
    if (!state || !Array.isArray(state.buffers) || state.buffers.length !== this.params.length)
      fail('ERR_ARG', 'SGD.loadStateDict', 'state', `${this.params.length} momentum buffers`, describe(state?.buffers));
    state.buffers.forEach((b, i) => {
      if (b && b.shape.join() !== this.params[i].shape.join())
        fail('ERR_SHAPE', 'SGD.loadStateDict', `buffers[${i}]`, `shape [${this.params[i].shape.join(', ')}]`, `[${b.shape.join(', ')}]`);
    });
    for (const b of this.buffers) b?.dispose();
    this.buffers = state.buffers.map((b, i) => {
      if (!b) return null;
      const t = keep(zerosLike(this.params[i]));
      t.copy_(b);
      return t;
    });
    this.stepCount = state.step;
    this.lr = state.lr;
  }

  /** Frees the momentum buffers. */
  dispose(): void {
    for (const b of this.buffers) b?.dispose();
    this.buffers = this.params.map(() => null);
  }
}
