/**
 * The layers ResNeXt is built from: Conv2d, BatchNorm2d (with fused ReLU and add+ReLU
 * forwards), Linear, MaxPool2d, AdaptiveAvgPool2d, ReLU, Flatten, Sequential. Initialisation
 * follows torchvision's ResNet: Kaiming-normal (fan_out, ReLU gain) for convolutions,
 * BN weight 1 / bias 0, and PyTorch's default uniform(+-1/sqrt(fan_in)) for Linear.
 */
import { describe, fail } from '../native/errors';
import {
  batchNorm2d, batchNormAddReLU, batchNormReLU, conv2d, conv2dBatchNorm, globalAvgPool2d, linear, maxPool2d,
  type BatchNormOptions,
} from '../ops/nn';
import type { BnAct } from '../native/addon';
import { relu } from '../ops/elementwise';
import { flatten } from '../ops/shape';
import { empty, full, rand, randn, zeros } from '../tensor/create';
import type { Tensor } from '../tensor/tensor';
import { freeUntaped, Module } from './module';

/**
 * Observes every Conv2d / Linear call with its input and output (complexity accounting in
 * lib/models uses it to count multiply-adds per layer). Null when nobody listens.
 */
export const layerHooks: { onCompute: ((m: Module, x: Tensor, y: Tensor) => void) | null } = { onCompute: null };

function posInt(op: string, arg: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) fail('ERR_ARG', op, arg, 'a positive integer', describe(v));
  return v;
}

export interface Conv2dModuleOptions {
  stride?: number;
  padding?: number;
  groups?: number;
  bias?: boolean;
  /**
   * 'kaiming' (default: normal, fan_out, ReLU gain), 'zeros', or 'none' (uninitialised memory:
   * the fastest construction, for parameter counting only).
   */
  init?: 'kaiming' | 'zeros' | 'none';
}

export class Conv2d extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  readonly stride: number;
  readonly padding: number;
  readonly groups: number;
  constructor(
    readonly inChannels: number,
    readonly outChannels: number,
    readonly kernelSize: number,
    options: Conv2dModuleOptions = {},
  ) {
    super();
    posInt('Conv2d', 'inChannels', inChannels);
    posInt('Conv2d', 'outChannels', outChannels);
    posInt('Conv2d', 'kernelSize', kernelSize);
    this.stride = options.stride ?? 1;
    this.padding = options.padding ?? 0;
    this.groups = options.groups ?? 1;
    if (inChannels % this.groups || outChannels % this.groups)
      fail('ERR_ARG', 'Conv2d', 'groups', `a divisor of inChannels (${inChannels}) and outChannels (${outChannels})`, describe(this.groups));
    const shape = [outChannels, inChannels / this.groups, kernelSize, kernelSize];
    // torchvision: kaiming_normal_(mode='fan_out', nonlinearity='relu'); fan_out = K * R * S
    const std = Math.sqrt(2 / (outChannels * kernelSize * kernelSize));
    this.weight = this.registerParameter(
      'weight',
      options.init === 'zeros' ? zeros(shape) : options.init === 'none' ? empty(shape) : randn(shape, { std }),
    );
    this.bias = options.bias ? this.registerParameter('bias', zeros([outChannels])) : null;
  }
  forward(x: Tensor): Tensor {
    const y = conv2d(x, this.weight, { stride: this.stride, padding: this.padding, groups: this.groups, bias: this.bias });
    layerHooks.onCompute?.(this, x, y);
    return y;
  }
}

/** Computes a training-mode batch norm (+ residual, + ReLU) with statistics over several processes. */
export interface BatchNormSync {
  forward(bn: BatchNorm2d, x: Tensor, residual: Tensor | null, relu: boolean): Tensor;
}

export class BatchNorm2d extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor;
  readonly runningMean: Tensor;
  readonly runningVar: Tensor;
  private readonly numBatchesTrackedBuf: Tensor;
  numBatchesTracked = 0;
  constructor(
    readonly numFeatures: number,
    readonly options: { eps?: number; momentum?: number } = {},
  ) {
    super();
    posInt('BatchNorm2d', 'numFeatures', numFeatures);
    this.weight = this.registerParameter('weight', full([numFeatures], 1));
    this.bias = this.registerParameter('bias', zeros([numFeatures]));
    this.runningMean = this.registerBuffer('running_mean', zeros([numFeatures]));
    this.runningVar = this.registerBuffer('running_var', full([numFeatures], 1));
    this.numBatchesTrackedBuf = this.registerBuffer('num_batches_tracked', zeros([], { dtype: 'int32' }));
  }

  private opts(): BatchNormOptions {
    if (this.training) this.numBatchesTracked++;
    return {
      weight: this.weight, bias: this.bias, runningMean: this.runningMean, runningVar: this.runningVar,
      training: this.training, momentum: this.options.momentum ?? 0.1, eps: this.options.eps ?? 1e-5,
    };
  }
  /**
   * Synchronised batch norm (issue 15): when set (lib/train/distributed, `syncBatchNorm: true`),
   * training-mode statistics cover every rank's batch; eval mode is unchanged.
   */
  sync: BatchNormSync | null = null;
  forward(x: Tensor): Tensor {
    if (this.sync && this.training) return this.sync.forward(this, x, null, false);
    return batchNorm2d(x, this.opts());
  }
  /** relu(bn(x)) as one fused op. */
  forwardReLU(x: Tensor): Tensor {
    if (this.sync && this.training) return this.sync.forward(this, x, null, true);
    return batchNormReLU(x, this.opts());
  }
  /** relu(bn(x) + residual) as one fused op. */
  forwardAddReLU(x: Tensor, residual: Tensor): Tensor {
    if (this.sync && this.training) return this.sync.forward(this, x, residual, true);
    return batchNormAddReLU(x, residual, this.opts());
  }
  /**
   * act(this(conv(x)) [+ residual]): act 'none', 'relu' or 'addRelu' (relu(bn + residual)). In
   * eval mode the normalisation is folded into a bias-free convolution (conv2dBatchNorm: one
   * native op when no gradient is needed); otherwise conv, then this module's forward. Under
   * noGrad the intermediate is freed as soon as it is read.
   */
  forwardConv(conv: Conv2d, x: Tensor, act: BnAct = 'none', residual: Tensor | null = null): Tensor {
    if (!this.training && !conv.bias) {
      const y = conv2dBatchNorm(x, conv.weight, { stride: conv.stride, padding: conv.padding, groups: conv.groups }, this.opts(), act, residual);
      layerHooks.onCompute?.(conv, x, y);
      return y;
    }
    const c = conv.forward(x);
    const y = act === 'none' ? this.forward(c) : act === 'relu' ? this.forwardReLU(c) : this.forwardAddReLU(c, residual as Tensor);
    freeUntaped(c);
    return y;
  }
  protected override syncOwnBuffers(): void {
    this.numBatchesTrackedBuf.fill_(this.numBatchesTracked);
  }
  protected override onLoad(): void {
    this.numBatchesTracked = this.numBatchesTrackedBuf.dataSync()[0];
  }
}

export class Linear extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    options: { bias?: boolean } = {},
  ) {
    super();
    posInt('Linear', 'inFeatures', inFeatures);
    posInt('Linear', 'outFeatures', outFeatures);
    const b = 1 / Math.sqrt(inFeatures);
    this.weight = this.registerParameter('weight', rand([outFeatures, inFeatures], { low: -b, high: b }));
    this.bias = options.bias === false ? null : this.registerParameter('bias', rand([outFeatures], { low: -b, high: b }));
  }
  forward(x: Tensor): Tensor {
    const y = linear(x, this.weight, this.bias);
    layerHooks.onCompute?.(this, x, y);
    return y;
  }
}

export class MaxPool2d extends Module {
  constructor(
    readonly kernelSize: number,
    readonly stride = kernelSize,
    readonly padding = 0,
  ) {
    super();
  }
  forward(x: Tensor): Tensor {
    return maxPool2d(x, this.kernelSize, { stride: this.stride, padding: this.padding });
  }
}

/** Adaptive average pooling; output size 1 (global average pooling) is what ResNets use. */
export class AdaptiveAvgPool2d extends Module {
  constructor(readonly outputSize = 1) {
    super();
    if (outputSize !== 1) fail('ERR_ARG', 'AdaptiveAvgPool2d', 'outputSize', '1 (global average pooling)', describe(outputSize));
  }
  forward(x: Tensor): Tensor {
    return globalAvgPool2d(x);
  }
}

export class ReLU extends Module {
  forward(x: Tensor): Tensor {
    return relu(x);
  }
}

export class Flatten extends Module {
  forward(x: Tensor): Tensor {
    return flatten(x, 1);
  }
}

/** Runs its children in order; they are named '0', '1', ... like torch.nn.Sequential. */
export class Sequential extends Module {
  private readonly layers: Module[];
  constructor(...layers: Module[]) {
    super();
    layers.forEach((m, i) => {
      if (!(m instanceof Module)) fail('ERR_ARG', 'Sequential', `layer ${i}`, 'a Module', describe(m));
      this.registerModule(String(i), m);
    });
    this.layers = layers;
  }
  get length(): number {
    return this.layers.length;
  }
  at(i: number): Module {
    return this.layers[i];
  }
  forward(x: Tensor): Tensor {
    let y = x;
    for (const m of this.layers) {
      const next = m.forward(y);
      if (next !== y) freeUntaped(y, x);
      y = next;
    }
    return y;
  }
}
