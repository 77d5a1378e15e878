/**
 * Complexity accounting that understands groups. countParams sums parameter sizes per layer;
 * countMACs runs one image through the model (eval mode, no gradients, state untouched) and
 * records every convolution and linear layer's multiply-adds:
 *   conv:   P * Q * K * (C / groups) * R * S      linear: in * out
 * (BN, ReLU, pooling and additions are not counted, as in the paper and torchvision's tables.)
 * The width solver finds the bottleneck width d that gives cardinality C the complexity of a
 * baseline, reproducing the paper's fixed-budget ResNeXt-50 family (Table 2: 1x64d, 2x40d,
 * 4x24d, 8x14d, 32x4d).
 */
import { describe, fail } from '../native/errors';
import { noGrad } from '../autograd/engine';
import { zeros } from '../tensor/create';
import { tidy } from '../tensor/tensor';
import { Conv2d, layerHooks, Linear } from '../nn/layers';
import type { Module } from '../nn/module';
import { resnext, type ResNeXtConfig } from './resnet';

export interface LayerParams {
  name: string;
  type: string;
  params: number;
}

export function countParams(model: Module): { total: number; layers: LayerParams[] } {
  const layers: LayerParams[] = [];
  for (const [name, m] of model.namedModules()) {
    const own = m.namedParameters().filter(([n]) => !n.includes('.'));
    if (!own.length) continue;
    layers.push({ name, type: m.constructor.name, params: own.reduce((a, [, t]) => a + t.size, 0) });
  }
  return { total: layers.reduce((a, l) => a + l.params, 0), layers };
}

export interface LayerMACs {
  name: string;
  type: string;
  inputShape: number[];
  outputShape: number[];
  macs: number;
  params: number;
}

/** Multiply-adds of one image of shape [C, H, W] (or [1, C, H, W]), per layer and in total. */
export function countMACs(model: Module, inputShape: number[]): { total: number; layers: LayerMACs[] } {
  const shape = inputShape.length === 3 ? [1, ...inputShape] : inputShape;
  if (shape.length !== 4 || shape[0] !== 1 || !shape.every((d) => Number.isInteger(d) && d > 0))
    fail('ERR_SHAPE', 'countMACs', 'inputShape', '[C, H, W] or [1, C, H, W] of positive integers', describe(inputShape));
  const names = new Map(model.namedModules().map(([n, m]) => [m, n]));
  const layers: LayerMACs[] = [];
  const wasTraining = model.training;
  const prev = layerHooks.onCompute;
  model.eval();
  layerHooks.onCompute = (m, x, y) => {
    let macs = 0;
    if (m instanceof Conv2d) macs = (y.size / y.shape[0]) * (m.inChannels / m.groups) * m.kernelSize * m.kernelSize;
    else if (m instanceof Linear) macs = m.inFeatures * m.outFeatures;
    const params = m.parameters().reduce((a, t) => a + t.size, 0);
    layers.push({ name: names.get(m) ?? '?', type: m.constructor.name, inputShape: [...x.shape], outputShape: [...y.shape], macs, params });
  };
  try {
    tidy(() => noGrad(() => model.forward(zeros(shape, { device: model.parameters()[0]?.device ?? 'cpu' })).dataSync()));
  } finally {
    layerHooks.onCompute = prev;
    model.train(wasTraining);
  }
  return { total: layers.reduce((a, l) => a + l.macs, 0), layers };
}

/**
 * The smallest-error integer width d in [lo, hi] for which build(d)'s parameter count matches
 * `target` (parameters grow monotonically with d, so this is a binary search). `build` should
 * use init: 'none' (nothing is computed, only shapes count); each model is disposed.
 */
export function solveWidth(build: (d: number) => Module, target: number, lo = 1, hi = 512): { width: number; params: number } {
  const params = (d: number) => {
    const m = build(d);
    try {
      return countParams(m).total;
    } finally {
      m.dispose();
    }
  };
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (params(mid) < target) lo = mid;
    else hi = mid;
  }
  const [pl, ph] = [params(lo), params(hi)];
  return Math.abs(pl - target) <= Math.abs(ph - target) ? { width: lo, params: pl } : { width: hi, params: ph };
}

/**
 * The width per group d that gives a ResNeXt of cardinality C (same depth) the parameter count
 * of the baseline (default ResNet-50, i.e. 1x64d). For [3, 4, 6, 3] this gives the paper's
 * 1x64d, 2x40d, 4x24d, 8x14d, 32x4d.
 */
export function solveResNeXtWidth(
  cardinality: number,
  base: Pick<ResNeXtConfig, 'layers' | 'groups' | 'widthPerGroup' | 'numClasses'> = { layers: [3, 4, 6, 3], groups: 1, widthPerGroup: 64 },
): { width: number; params: number; baselineParams: number } {
  const build = (groups: number, widthPerGroup: number) =>
    resnext({ layers: base.layers, groups, widthPerGroup, numClasses: base.numClasses ?? 1000, init: 'none' });
  const b = build(base.groups ?? 1, base.widthPerGroup ?? 64);
  const baselineParams = countParams(b).total;
  b.dispose();
  const r = solveWidth((d) => build(cardinality, d), baselineParams);
  return { ...r, baselineParams };
}
