/**
 * ResNeXt-29 for CIFAR (Xie et al. 2017, section 5.3): a 3x3 stem with 64 channels, then
 * three stages of three bottleneck blocks with outputs 256, 512, 1024; the grouped 3x3 conv of
 * stage s (0-based) is C * d * 2^s wide; stride 2 at the first block of stages 2 and 3;
 * projection shortcuts where the shape changes; global average pooling and a linear
 * classifier. ResNeXt-29 8x64d has 34.4 M parameters, 16x64d 68.1 M. Stem and stage widths can
 * be scaled down for small CPU runs; any input size and channel count works (28x28 or 32x32).
 */
import { describe, fail } from '../native/errors';
import { flatten } from '../ops/shape';
import { disposeOnThrow, type Tensor } from '../tensor/tensor';
import { freeUntaped, Module } from '../nn/module';
import { AdaptiveAvgPool2d, BatchNorm2d, type Conv2d, Linear, Sequential } from '../nn/layers';
import { bottleneckForward, conv1x1, conv3x3, type InitOptions, zeroInitResidual } from './resnet';

export class CifarBlock extends Module {
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly conv2: Conv2d;
  readonly bn2: BatchNorm2d;
  readonly conv3: Conv2d;
  readonly bn3: BatchNorm2d;
  readonly shortcut: Sequential | null;
  constructor(inCh: number, outCh: number, width: number, cardinality: number, stride: number, o: InitOptions) {
    super();
    this.conv1 = this.registerModule('conv1', conv1x1(inCh, width, 1, o));
    this.bn1 = this.registerModule('bn1', new BatchNorm2d(width));
    this.conv2 = this.registerModule('conv2', conv3x3(width, width, stride, cardinality, o));
    this.bn2 = this.registerModule('bn2', new BatchNorm2d(width));
    this.conv3 = this.registerModule('conv3', conv1x1(width, outCh, 1, o));
    this.bn3 = this.registerModule('bn3', new BatchNorm2d(outCh));
    this.shortcut =
      stride !== 1 || inCh !== outCh ? this.registerModule('shortcut', new Sequential(conv1x1(inCh, outCh, stride, o), new BatchNorm2d(outCh))) : null;
  }
  get lastBN(): BatchNorm2d {
    return this.bn3;
  }
  forward(x: Tensor): Tensor {
    return bottleneckForward(this, this.shortcut, x);
  }
}

export interface ResNeXt29Config extends InitOptions {
  /** C, the number of groups in each grouped conv. */
  cardinality: number;
  /** d, the width of each group in the first stage (doubles per stage). */
  width: number;
  numClasses?: number;
  inChannels?: number;
  /** Stem width (paper: 64). */
  stemChannels?: number;
  /** Block outputs per stage (paper: [256, 512, 1024]). */
  stageChannels?: [number, number, number];
  /** Blocks per stage (paper: 3, i.e. 29 layers). */
  blocksPerStage?: number;
  /** Stride of the stem conv (paper: 1). 2 quarters the cost of small-image CPU runs. */
  stemStride?: number;
  zeroInitResidual?: boolean;
}

export class ResNeXt29 extends Module {
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly stages: Sequential[];
  readonly avgpool: AdaptiveAvgPool2d;
  readonly fc: Linear;
  readonly config: Required<Omit<ResNeXt29Config, 'init'>>;
  constructor(cfg: ResNeXt29Config) {
    super();
    const posInt = (n: unknown) => typeof n === 'number' && Number.isInteger(n) && n >= 1;
    if (!cfg || !posInt(cfg.cardinality)) fail('ERR_ARG', 'resnext29', 'cardinality', 'a positive integer', describe(cfg?.cardinality));
    if (!posInt(cfg.width)) fail('ERR_ARG', 'resnext29', 'width', 'a positive integer', describe(cfg.width));
    const c = {
      numClasses: 10, inChannels: 3, stemChannels: 64, stageChannels: [256, 512, 1024] as [number, number, number],
      blocksPerStage: 3, stemStride: 1, zeroInitResidual: false, ...cfg,
    };
    // Counts a real network can have: a typo such as blocksPerStage: 1e5 is an error, not a hang.
    const upTo = (n: unknown, max: number) => posInt(n) && (n as number) <= max;
    if (!upTo(c.blocksPerStage, 1024)) fail('ERR_ARG', 'resnext29', 'blocksPerStage', 'an integer in [1, 1024]', describe(c.blocksPerStage));
    for (const [k, v] of [['numClasses', c.numClasses], ['inChannels', c.inChannels], ['stemChannels', c.stemChannels]] as const)
      if (!upTo(v, 1 << 20)) fail('ERR_ARG', 'resnext29', k, 'an integer in [1, 2^20]', describe(v));
    if (!Array.isArray(c.stageChannels) || c.stageChannels.length !== 3 || !c.stageChannels.every((v) => upTo(v, 1 << 20)))
      fail('ERR_ARG', 'resnext29', 'stageChannels', 'three channel counts in [1, 2^20]', describe(c.stageChannels));
    if (!upTo(c.stemStride, 64)) fail('ERR_ARG', 'resnext29', 'stemStride', 'an integer in [1, 64]', describe(c.stemStride));
    this.config = {
      cardinality: c.cardinality, width: c.width, numClasses: c.numClasses, inChannels: c.inChannels, stemChannels: c.stemChannels,
      stageChannels: c.stageChannels, blocksPerStage: c.blocksPerStage, stemStride: c.stemStride, zeroInitResidual: c.zeroInitResidual,
    };
    const o: InitOptions = { init: cfg.init };
    this.conv1 = this.registerModule('conv1', conv3x3(c.inChannels, c.stemChannels, c.stemStride, 1, o));
    this.bn1 = this.registerModule('bn1', new BatchNorm2d(c.stemChannels));
    let inCh = c.stemChannels;
    this.stages = c.stageChannels.map((outCh, s) => {
      const width = c.cardinality * c.width * 2 ** s; // grouped width C * d * 2^stage
      const blocks: CifarBlock[] = [];
      for (let b = 0; b < c.blocksPerStage; b++) {
        blocks.push(new CifarBlock(inCh, outCh, width, c.cardinality, b === 0 && s > 0 ? 2 : 1, o));
        inCh = outCh;
      }
      return this.registerModule(`stage${s + 1}`, new Sequential(...blocks));
    });
    this.avgpool = this.registerModule('avgpool', new AdaptiveAvgPool2d(1));
    this.fc = this.registerModule('fc', new Linear(inCh, c.numClasses));
    if (c.zeroInitResidual) zeroInitResidual(this);
  }
  forward(x: Tensor): Tensor {
    let y = this.bn1.forwardConv(this.conv1, x, 'relu');
    for (const s of this.stages) {
      const next = s.forward(y);
      freeUntaped(y);
      y = next;
    }
    const p = this.avgpool.forward(y);
    freeUntaped(y);
    const f = flatten(p, 1);
    if (f !== p) freeUntaped(p);
    const out = this.fc.forward(f);
    freeUntaped(f);
    return out;
  }
}

export const resnext29 = (cfg: ResNeXt29Config) => disposeOnThrow(() => new ResNeXt29(cfg));
type Opts = Omit<ResNeXt29Config, 'cardinality' | 'width'>;
/** ResNeXt-29 8x64d: 34.4 M parameters (CIFAR-10). */
export const resnext29_8x64d = (o: Opts = {}) => resnext29({ ...o, cardinality: 8, width: 64 });
/** ResNeXt-29 16x64d: 68.1 M parameters (CIFAR-10). */
export const resnext29_16x64d = (o: Opts = {}) => resnext29({ ...o, cardinality: 16, width: 64 });
