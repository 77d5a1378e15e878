/**
 * Network-layer ops: conv2d, batch norm (plain, +ReLU, +residual add+ReLU as single fused ops),
 * max and global-average pooling, linear / matmul, cross-entropy, top-k, and the SGD update.
 * Each forward sits next to its gradient.
 */
import { describe, fail, typedArrayKind } from '../native/errors';
import { native, type BnAct } from '../native/addon';
import { defineGradient, needsGrad, record } from '../autograd/engine';
import { tensor } from '../tensor/create';
import { Tensor } from '../tensor/tensor';
import { bool, H, int, num, optH, opts, pair, T } from './util';

defineGradient('conv2d', ['input', 'weight', 'bias']);
defineGradient('batchNorm2d', ['input', 'weight', 'bias']);
defineGradient('batchNormReLU', ['input', 'weight', 'bias']);
defineGradient('batchNormAddReLU', ['input', 'residual', 'weight', 'bias']);
defineGradient('maxPool2d', ['input']);
defineGradient('globalAvgPool2d', ['input']);
defineGradient('linear', ['input', 'weight', 'bias']);
defineGradient('matmul', ['a', 'b']);
defineGradient('crossEntropy', ['logits']);

// ------------------------------------------------------------------ conv2d

export interface Conv2dOptions {
  stride?: number | [number, number];
  padding?: number | [number, number];
  groups?: number;
  bias?: Tensor | null;
}

/**
 * 2-D convolution (cross-correlation), x [N, C, H, W], w [K, C/groups, R, S], optional bias [K].
 * groups may be any common divisor of C and K, from 1 to depthwise (groups = C).
 */
export function conv2d(x: Tensor, w: Tensor, options?: Conv2dOptions): Tensor {
  const op = 'conv2d';
  const o = opts(op, options);
  const stride = pair(op, 'stride', o.stride, 1, 1);
  const padding = pair(op, 'padding', o.padding, 0, 0);
  const groups = int(op, 'groups', o.groups, 1, 1);
  const b = o.bias ?? null;
  const args = { stride, padding, groups };
  const out = T(native.conv2dForward(H(op, 'input', x), H(op, 'weight', w), optH(op, 'bias', b), args));
  if (!needsGrad(x, w, b)) return out;
  return record(out, op, [x, w, b], [x, w], (g, [sx, sw]) => [
    x.requiresGrad ? T(native.conv2dBackwardData(g.handle, sw.handle, [...x.shape], args)) : null,
    w.requiresGrad ? T(native.conv2dBackwardFilter(g.handle, sx.handle, [...w.shape], args)) : null,
    b?.requiresGrad ? T(native.sum(g.handle, [0, 2, 3], false)) : null,
  ]);
}

// ------------------------------------------------------------------ batch norm

export interface BatchNormOptions {
  weight: Tensor;
  bias: Tensor;
  runningMean: Tensor;
  runningVar: Tensor;
  /** Batch statistics and running-stat update (default true); false uses the running stats. */
  training?: boolean;
  momentum?: number;
  eps?: number;
}

function bn(op: string, act: BnAct, x: Tensor, residual: Tensor | null, options: BatchNormOptions): Tensor {
  if (typeof options !== 'object' || options === null)
    fail('ERR_ARG', op, 'options', '{ weight, bias, runningMean, runningVar, training?, momentum?, eps? }', describe(options));
  const { weight, bias, runningMean, runningVar } = options;
  const training = bool(op, 'training', options.training, true);
  const momentum = num(op, 'momentum', options.momentum, 0.1);
  const eps = num(op, 'eps', options.eps, 1e-5);
  const args = { training, momentum, eps, act };
  const [y, sm, si] = native.batchNormForward(
    H(op, 'input', x), H(op, 'weight', weight), H(op, 'bias', bias),
    act === 'addRelu' ? H(op, 'residual', residual) : null,
    H(op, 'runningMean', runningMean), H(op, 'runningVar', runningVar), args,
  );
  const out = T(y);
  const saveMean = T(sm);
  const saveInvstd = T(si);
  const inputs = act === 'addRelu' ? [x, residual, weight, bias] : [x, weight, bias];
  if (!needsGrad(...inputs)) {
    saveMean.dispose();
    saveInvstd.dispose();
    return out;
  }
  record(out, op, inputs, [x, out, weight, saveMean, saveInvstd], (g, [sx, sy, sw, smean, sinv]) => {
    const [gx, gg, gb, gr] = native.batchNormBackward(g.handle, sx.handle, sy.handle, sw.handle, smean.handle, sinv.handle, args);
    const grads = [T(gx), T(gg), T(gb)];
    return act === 'addRelu' && gr ? [grads[0], T(gr), grads[1], grads[2]] : grads;
  });
  saveMean.dispose(); // the node holds its own aliases
  saveInvstd.dispose();
  return out;
}

/** Batch normalisation over N, H, W per channel (training: batch statistics, running stats updated in place). */
export function batchNorm2d(x: Tensor, options: BatchNormOptions): Tensor {
  return bn('batchNorm2d', 'none', x, null, options);
}

/** relu(batchNorm2d(x)) as one op (one fused kernel on the GPU). */
export function batchNormReLU(x: Tensor, options: BatchNormOptions): Tensor {
  return bn('batchNormReLU', 'relu', x, null, options);
}

/** relu(batchNorm2d(x) + residual) as one op: the end of every ResNeXt block. */
export function batchNormAddReLU(x: Tensor, residual: Tensor, options: BatchNormOptions): Tensor {
  return bn('batchNormAddReLU', 'addRelu', x, residual, options);
}

// ------------------------------------------------------------------ conv + batch norm (inference)

/**
 * act(batchNorm2d(conv2d(x, w), running statistics) [+ residual]) for inference: `act` 'none',
 * 'relu' or 'addRelu' (relu(bn + residual), the end of a ResNeXt block). Without gradients it is
 * one native op, the normalisation folded into the convolution's epilogue (scale and shift per
 * output channel, computed as batchNorm2d computes them) so no intermediate is written or read
 * back. Where a gradient is needed it runs conv2d, then the batch norm op, which are
 * differentiable. `bn.training` must be false (or absent: this op always uses running statistics).
 */
export function conv2dBatchNorm(
  x: Tensor, w: Tensor, conv: Omit<Conv2dOptions, 'bias'> | undefined, bn: BatchNormOptions, act: BnAct = 'none', residual: Tensor | null = null,
): Tensor {
  const op = 'conv2d';
  if (typeof bn !== 'object' || bn === null)
    fail('ERR_ARG', op, 'bn', '{ weight, bias, runningMean, runningVar, eps? }', describe(bn));
  if (act !== 'none' && act !== 'relu' && act !== 'addRelu') fail('ERR_ARG', op, 'act', "'none', 'relu' or 'addRelu'", describe(act));
  const o = opts(op, conv);
  if ((o as Conv2dOptions).bias != null) fail('ERR_ARG', op, 'bias', 'none (the batch norm supplies the shift)', 'a tensor');
  const evalBn: BatchNormOptions = { ...bn, training: false };
  if (bn.training) fail('ERR_ARG', bnName(act), 'training', 'false (conv2dBatchNorm uses running statistics)', 'true');
  if (needsGrad(x, w, bn.weight, bn.bias, residual)) {
    const c = conv2d(x, w, o);
    const y = act === 'none' ? batchNorm2d(c, evalBn) : act === 'relu' ? batchNormReLU(c, evalBn) : batchNormAddReLU(c, residual as Tensor, evalBn);
    return y;
  }
  const stride = pair(op, 'stride', o.stride, 1, 1);
  const padding = pair(op, 'padding', o.padding, 0, 0);
  const groups = int(op, 'groups', o.groups, 1, 1);
  const bop = bnName(act);
  const eps = num(bop, 'eps', bn.eps, 1e-5);
  return T(native.conv2dBnEval(
    H(op, 'input', x), H(op, 'weight', w), H(bop, 'weight', bn.weight), H(bop, 'bias', bn.bias),
    H(bop, 'runningMean', bn.runningMean), H(bop, 'runningVar', bn.runningVar),
    act === 'addRelu' ? H(bop, 'residual', residual) : null,
    { stride, padding, groups }, { training: false, momentum: 0.1, eps, act },
  ));
}

function bnName(act: BnAct): string {
  return act === 'none' ? 'batchNorm2d' : act === 'relu' ? 'batchNormReLU' : 'batchNormAddReLU';
}

// ------------------------------------------------------------------ pooling

export interface MaxPool2dOptions {
  stride?: number | [number, number];
  padding?: number | [number, number];
}

/** Max pooling; stride defaults to the kernel size. */
export function maxPool2d(x: Tensor, kernelSize: number | [number, number], options?: MaxPool2dOptions): Tensor {
  const op = 'maxPool2d';
  const o = opts(op, options);
  const k = pair(op, 'kernelSize', kernelSize, 1, 1);
  const stride = o.stride === undefined ? k : pair(op, 'stride', o.stride, 1, 1);
  const padding = pair(op, 'padding', o.padding, 0, 0);
  const [y, idx] = native.maxPool2dForward(H(op, 'input', x), { kernelSize: k, stride, padding });
  const out = T(y);
  const indices = T(idx);
  if (!needsGrad(x)) {
    indices.dispose();
    return out;
  }
  record(out, op, [x], [indices], (g, [si]) => [T(native.maxPool2dBackward(g.handle, si.handle, [...x.shape]))]);
  indices.dispose();
  return out;
}

/** Mean over H and W: [N, C, H, W] -> [N, C, 1, 1] (AdaptiveAvgPool2d(1)). */
export function globalAvgPool2d(x: Tensor): Tensor {
  const out = T(native.globalAvgPool2dForward(H('globalAvgPool2d', 'input', x)));
  if (!needsGrad(x)) return out;
  return record(out, 'globalAvgPool2d', [x], [], (g) => [T(native.globalAvgPool2dBackward(g.handle, [...x.shape]))]);
}

// ------------------------------------------------------------------ dense

/** x [N, in] times w [out, in] transposed, plus bias [out]. */
export function linear(x: Tensor, w: Tensor, b?: Tensor | null): Tensor {
  const op = 'linear';
  const out = T(native.linear(H(op, 'input', x), H(op, 'weight', w), optH(op, 'bias', b)));
  if (!needsGrad(x, w, b)) return out;
  return record(out, op, [x, w, b ?? null], [x, w], (g, [sx, sw]) => [
    x.requiresGrad ? T(native.matmul(g.handle, sw.handle, false, false)) : null,
    w.requiresGrad ? T(native.matmul(g.handle, sx.handle, true, false)) : null,
    b?.requiresGrad ? T(native.sum(g.handle, [0], false)) : null,
  ]);
}

/** op(a) @ op(b) for matrices, op = transpose when the flag is set. */
export function matmul(a: Tensor, b: Tensor, options?: { transposeA?: boolean; transposeB?: boolean }): Tensor {
  const op = 'matmul';
  const o = opts(op, options);
  const ta = bool(op, 'transposeA', o.transposeA, false);
  const tb = bool(op, 'transposeB', o.transposeB, false);
  const out = T(native.matmul(H(op, 'a', a), H(op, 'b', b), ta, tb));
  if (!needsGrad(a, b)) return out;
  return record(out, op, [a, b], [a, b], (g, [sa, sb]) => [
    a.requiresGrad ? T(ta ? native.matmul(sb.handle, g.handle, tb, true) : native.matmul(g.handle, sb.handle, false, !tb)) : null,
    b.requiresGrad ? T(tb ? native.matmul(g.handle, sa.handle, true, ta) : native.matmul(sa.handle, g.handle, !ta, false)) : null,
  ]);
}

// ------------------------------------------------------------------ loss and metrics

export type Targets = Tensor | Int32Array | number[];

function targetsTensor(op: string, targets: Targets, device: 'cpu' | 'cuda', classes: number): [Tensor, boolean] {
  if (targets instanceof Tensor) {
    H(op, 'targets', targets);
    return [targets, false];
  }
  const isInt32 = typedArrayKind(targets) === 'Int32Array';
  if (isInt32 || Array.isArray(targets)) {
    const arr = isInt32 ? (targets as Int32Array) : Int32Array.from(targets as number[]);
    if (Array.isArray(targets) && !targets.every((v) => Number.isInteger(v)))
      fail('ERR_ARG', op, 'targets', 'integer class indices', describe(targets));
    for (let i = 0; i < arr.length; i++)
      if (arr[i] < 0 || arr[i] >= classes) fail('ERR_ARG', op, `targets[${i}]`, `a class index in [0, ${classes - 1}]`, String(arr[i]));
    return [tensor(arr, [arr.length], { dtype: 'int32', device }), true];
  }
  fail('ERR_ARG', op, 'targets', 'class indices as an array, an Int32Array or an int32 Tensor', describe(targets));
}

/**
 * Mean cross-entropy of softmax(logits [N, classes]) against class indices, with optional label
 * smoothing (PyTorch's definition: target distribution (1 - e) onehot + e / classes).
 */
export function crossEntropy(logits: Tensor, targets: Targets, options?: { labelSmoothing?: number }): Tensor {
  const op = 'crossEntropy';
  const o = opts(op, options);
  const smoothing = num(op, 'labelSmoothing', o.labelSmoothing, 0);
  const lh = H(op, 'logits', logits);
  const [t, owned] = targetsTensor(op, targets, logits.device, logits.shape[1] ?? 0);
  try {
    const [l, p] = native.crossEntropyForward(lh, t.handle, smoothing);
    const loss = T(l);
    const probs = T(p);
    if (needsGrad(logits)) {
      record(loss, op, [logits], [probs, t], (g, [sp, st]) => [
        T(native.crossEntropyBackward(sp.handle, st.handle, smoothing, g.handle)),
      ]);
    }
    probs.dispose();
    return loss;
  } finally {
    if (owned) t.dispose();
  }
}

/** Indices of the k largest values of each row of x [N, classes], descending: int32 [N, k]. */
export function topk(x: Tensor, k: number): Tensor {
  return T(native.topk(H('topk', 'input', x), int('topk', 'k', k, 1, 1)));
}

/** Index of the largest value of each row: int32 [N]. */
export function argmax(x: Tensor): Tensor {
  return T(native.argmax(H('argmax', 'input', x)));
}

// ------------------------------------------------------------------ optimiser update

export interface SgdStepOptions {
  lr: number;
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
  weightDecay?: number;
  /** Momentum buffer (same shape as param); required when momentum != 0. */
  momentumBuffer?: Tensor | null;
  /** True on the first step: the buffer is set to the gradient (PyTorch's rule). */
  firstStep?: boolean;
}

/**
 * One SGD update in place, PyTorch's rule: d = g + wd * p; buf = momentum * buf + (1 - dampening) * d
 * (buf = d on the first step); d = nesterov ? d + momentum * buf : buf; p -= lr * d.
 * Returns param (like PyTorch's in-place ops, which return self).
 */
export function sgdStep(param: Tensor, grad: Tensor, options: SgdStepOptions): Tensor {
  const op = 'sgdStep';
  if (typeof options !== 'object' || options === null) fail('ERR_ARG', op, 'options', '{ lr, momentum?, ... }', describe(options));
  if (options.lr === undefined) fail('ERR_ARG', op, 'lr', 'a finite number', 'undefined');
  native.sgdStep(H(op, 'param', param), H(op, 'grad', grad), optH(op, 'momentumBuffer', options.momentumBuffer), {
    lr: num(op, 'lr', options.lr, 0),
    momentum: num(op, 'momentum', options.momentum, 0),
    dampening: num(op, 'dampening', options.dampening, 0),
    weightDecay: num(op, 'weightDecay', options.weightDecay, 0),
    nesterov: bool(op, 'nesterov', options.nesterov, false),
    firstStep: bool(op, 'firstStep', options.firstStep, true),
  });
  return param;
}
