/**
 * ResNet / ResNeXt for ImageNet in torchvision's layout (models/resnet.py): the same module
 * names and shapes, so a torchvision state dict loads with strict: true. The ResNeXt block is
 * the bottleneck with a grouped 3x3 convolution (Xie et al. 2017, Fig. 3(c)); stride 2 sits in
 * the 3x3 conv ("ResNet v1.5"). Every BN+ReLU pair and the residual join run as fused ops.
 */
import { describe, fail } from '../native/errors';
import { flatten } from '../ops/shape';
import { disposeOnThrow, type Tensor } from '../tensor/tensor';
import { freeUntaped, Module } from '../nn/module';
import { AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Linear, MaxPool2d, ReLU, Sequential } from '../nn/layers';
import { buildWithWeights, type WeightsOption } from './weights';
import type { ImageInput } from '../vision/preprocess';
import { predict, type Prediction, type PredictOptions } from '../vision/predict';

export interface InitOptions {
  /** 'kaiming' (default), 'zeros', or 'none' (uninitialised conv weights: parameter counting only). */
  init?: 'kaiming' | 'zeros' | 'none';
}

export const conv3x3 = (inPlanes: number, outPlanes: number, stride = 1, groups = 1, o: InitOptions = {}) =>
  new Conv2d(inPlanes, outPlanes, 3, { stride, padding: 1, groups, bias: false, init: o.init });
export const conv1x1 = (inPlanes: number, outPlanes: number, stride = 1, o: InitOptions = {}) =>
  new Conv2d(inPlanes, outPlanes, 1, { stride, bias: false, init: o.init });

/** The layers of a bottleneck block (torchvision's and the CIFAR ResNeXt-29's). */
export interface BottleneckLayers {
  conv1: Conv2d;
  bn1: BatchNorm2d;
  conv2: Conv2d;
  bn2: BatchNorm2d;
  conv3: Conv2d;
  bn3: BatchNorm2d;
}

/**
 * relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x)), the residual fused into
 * bn3. In eval mode each conv + BN pair is one op (BatchNorm2d.forwardConv); under noGrad each
 * intermediate is freed as soon as the next op has read it (freeUntaped).
 */
export function bottleneckForward(b: BottleneckLayers, shortcut: Module | null, x: Tensor): Tensor {
  const out = b.bn1.forwardConv(b.conv1, x, 'relu');
  const mid = b.bn2.forwardConv(b.conv2, out, 'relu');
  freeUntaped(out);
  const identity = shortcut ? shortcutForward(shortcut, x) : x;
  const y = b.bn3.forwardConv(b.conv3, mid, 'addRelu', identity);
  freeUntaped(mid);
  freeUntaped(identity, x);
  return y;
}

/** The projection shortcut Sequential(conv1x1, BatchNorm2d) as one conv + BN op; others as they are. */
function shortcutForward(s: Module, x: Tensor): Tensor {
  if (s instanceof Sequential && s.length === 2) {
    const [conv, bn] = [s.at(0), s.at(1)];
    if (conv instanceof Conv2d && bn instanceof BatchNorm2d) return bn.forwardConv(conv, x, 'none');
  }
  return s.forward(x);
}

export class Bottleneck extends Module {
  static readonly expansion = 4;
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly conv2: Conv2d;
  readonly bn2: BatchNorm2d;
  readonly conv3: Conv2d;
  readonly bn3: BatchNorm2d;
  readonly downsample: Sequential | null;

  constructor(inPlanes: number, planes: number, stride: number, downsample: Sequential | null, groups: number, baseWidth: number, o: InitOptions = {}) {
    super();
    const width = Math.floor(planes * (baseWidth / 64)) * groups; // the bottleneck width, C * d
    this.conv1 = this.registerModule('conv1', conv1x1(inPlanes, width, 1, o));
    this.bn1 = this.registerModule('bn1', new BatchNorm2d(width));
    this.conv2 = this.registerModule('conv2', conv3x3(width, width, stride, groups, o));
    this.bn2 = this.registerModule('bn2', new BatchNorm2d(width));
    this.conv3 = this.registerModule('conv3', conv1x1(width, planes * Bottleneck.expansion, 1, o));
    this.bn3 = this.registerModule('bn3', new BatchNorm2d(planes * Bottleneck.expansion));
    this.registerModule('relu', new ReLU());
    this.downsample = downsample ? this.registerModule('downsample', downsample) : null;
  }

  forward(x: Tensor): Tensor {
    return bottleneckForward(this, this.downsample, x);
  }
}

export interface ResNeXtConfig extends InitOptions {
  /** Blocks per stage, e.g. [3, 4, 6, 3]. */
  layers: number[];
  /** Cardinality C. */
  groups?: number;
  /** Bottleneck width per group d (at the first stage's planes = 64). */
  widthPerGroup?: number;
  numClasses?: number;
  inChannels?: number;
  /** Zero-init the last BN of each block, so every block starts as the identity. */
  zeroInitResidual?: boolean;
}

export class ResNet extends Module {
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly maxpool: MaxPool2d;
  readonly stages: Sequential[];
  readonly avgpool: AdaptiveAvgPool2d;
  readonly fc: Linear;
  readonly config: Required<Omit<ResNeXtConfig, 'init'>>;

  constructor(cfg: ResNeXtConfig) {
    super();
    if (!cfg || !Array.isArray(cfg.layers) || cfg.layers.length !== 4 || !cfg.layers.every((n) => Number.isInteger(n) && n >= 1 && n <= 1024))
      fail('ERR_ARG', 'resnext', 'layers', 'four block counts in [1, 1024], e.g. [3, 4, 6, 3]', describe(cfg?.layers));
    const c = { groups: 1, widthPerGroup: 64, numClasses: 1000, inChannels: 3, zeroInitResidual: false, ...cfg };
    for (const k of ['groups', 'widthPerGroup', 'numClasses', 'inChannels'] as const)
      if (!Number.isInteger(c[k]) || c[k] < 1 || c[k] > 2 ** 20) fail('ERR_ARG', 'resnext', k, 'an integer in [1, 2^20]', describe(c[k]));
    this.config = { layers: c.layers, groups: c.groups, widthPerGroup: c.widthPerGroup, numClasses: c.numClasses, inChannels: c.inChannels, zeroInitResidual: c.zeroInitResidual };
    const o: InitOptions = { init: cfg.init };
    this.conv1 = this.registerModule('conv1', new Conv2d(c.inChannels, 64, 7, { stride: 2, padding: 3, bias: false, init: o.init }));
    this.bn1 = this.registerModule('bn1', new BatchNorm2d(64));
    this.registerModule('relu', new ReLU());
    this.maxpool = this.registerModule('maxpool', new MaxPool2d(3, 2, 1));
    let inPlanes = 64;
    this.stages = [64, 128, 256, 512].map((planes, i) => {
      const stride = i === 0 ? 1 : 2;
      const blocks: Bottleneck[] = [];
      for (let b = 0; b < c.layers[i]; b++) {
        let down: Sequential | null = null;
        if (b === 0 && (stride !== 1 || inPlanes !== planes * Bottleneck.expansion))
          down = new Sequential(conv1x1(inPlanes, planes * Bottleneck.expansion, stride, o), new BatchNorm2d(planes * Bottleneck.expansion));
        blocks.push(new Bottleneck(inPlanes, planes, b === 0 ? stride : 1, down, c.groups, c.widthPerGroup, o));
        inPlanes = planes * Bottleneck.expansion;
      }
      return this.registerModule(`layer${i + 1}`, new Sequential(...blocks));
    });
    this.avgpool = this.registerModule('avgpool', new AdaptiveAvgPool2d(1));
    this.fc = this.registerModule('fc', new Linear(512 * Bottleneck.expansion, c.numClasses));
    if (c.zeroInitResidual) zeroInitResidual(this);
  }

  forward(x: Tensor): Tensor {
    const f = this.forwardFeatures(x);
    const y = this.fc.forward(f);
    freeUntaped(f);
    return y;
  }

  /** The pooled features before fc: [N, fc.inFeatures] ([N, 2048] for the ImageNet models). */
  forwardFeatures(x: Tensor): Tensor {
    const r = this.bn1.forwardConv(this.conv1, x, 'relu');
    let y = this.maxpool.forward(r);
    freeUntaped(r);
    for (const s of this.stages) {
      const next = s.forward(y);
      freeUntaped(y);
      y = next;
    }
    const p = this.avgpool.forward(y);
    freeUntaped(y);
    const f = flatten(p, 1);
    if (f !== p) freeUntaped(p);
    return f;
  }

  /**
   * Classifies images (paths, encoded bytes, or a preprocessed [N, 3, 224, 224] tensor) in eval
   * mode: per image the top-k (default 5) { index, label, probability }, ImageNet-1k names for
   * 1000 classes. Preprocessing is torchvision's (lib/vision/preprocess.ts).
   */
  predict(images: ImageInput | ImageInput[] | Tensor, options: PredictOptions = {}): Promise<Prediction[][]> {
    return predict(this, images, options);
  }
}

/** Sets the weight of every residual branch's last BN to zero (blocks start as identities). */
export function zeroInitResidual(model: Module): void {
  for (const [, m] of model.namedModules()) {
    const last = m instanceof Bottleneck ? m.bn3 : (m as { lastBN?: BatchNorm2d }).lastBN;
    if (last) last.weight.fill_(0);
  }
}

/**
 * The general builder: any depth, cardinality and width (torchvision's ResNet class). With
 * `weights` (a .pth or .safetensors file) it returns a Promise of the model with the file's
 * weights loaded strictly, the `fc` head replaced when `numClasses` differs (see weights.ts).
 */
/** new ResNet(c), leaving no tensor behind when it fails half way (e.g. out of memory). */
const build = (c: ResNeXtConfig) => disposeOnThrow(() => new ResNet(c));

export function resnext(cfg: ResNeXtConfig & { weights: string }): Promise<ResNet>;
export function resnext(cfg: ResNeXtConfig & { weights?: undefined }): ResNet;
export function resnext(cfg: ResNeXtConfig & WeightsOption): ResNet | Promise<ResNet>;
export function resnext(cfg: ResNeXtConfig & WeightsOption): ResNet | Promise<ResNet> {
  if (cfg?.weights !== undefined) {
    const { weights, ...rest } = cfg;
    return buildWithWeights('resnext', build, rest, weights);
  }
  return build(cfg);
}

type Opts = Omit<ResNeXtConfig, 'layers' | 'groups' | 'widthPerGroup'> & WeightsOption;
/** A named builder: sync without `weights`, a Promise of the loaded model with them. */
export interface NamedBuilder {
  (o: Opts & { weights: string }): Promise<ResNet>;
  (o?: Opts & { weights?: undefined }): ResNet;
  (o: Opts): ResNet | Promise<ResNet>;
}
const named = (name: string, spec: Pick<ResNeXtConfig, 'layers' | 'groups' | 'widthPerGroup'>): NamedBuilder =>
  ((o: Opts = {}) => {
    const { weights, ...rest } = o;
    return weights === undefined ? build({ ...rest, ...spec }) : buildWithWeights(name, build, { ...rest, ...spec }, weights);
  }) as NamedBuilder;
/** ResNet-50: [3, 4, 6, 3], 1 group of width 64. */
export const resnet50 = named('resnet50', { layers: [3, 4, 6, 3], groups: 1, widthPerGroup: 64 });
/** ResNeXt-50 32x4d: [3, 4, 6, 3], 32 groups of width 4. */
export const resnext50_32x4d = named('resnext50_32x4d', { layers: [3, 4, 6, 3], groups: 32, widthPerGroup: 4 });
/** ResNeXt-101 32x8d: [3, 4, 23, 3], 32 groups of width 8. */
export const resnext101_32x8d = named('resnext101_32x8d', { layers: [3, 4, 23, 3], groups: 32, widthPerGroup: 8 });
/** ResNeXt-101 64x4d: [3, 4, 23, 3], 64 groups of width 4. */
export const resnext101_64x4d = named('resnext101_64x4d', { layers: [3, 4, 23, 3], groups: 64, widthPerGroup: 4 });
