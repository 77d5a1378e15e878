/**
 * Synchronised batch norm (`syncBatchNorm: true`): in training mode each BatchNorm2d computes
 * its statistics over the global batch, every rank's samples together, as torch.nn.SyncBatchNorm
 * does. Forward: the per-channel sum of the local batch, allreduced, gives the global mean; the
 * per-channel sum of squared deviations from it, allreduced, the global (biased) variance used to
 * normalise; the running variance gets the unbiased N/(N-1) one. Backward comes from autograd through the same composition; the
 * allreduce's gradient is the allreduce of the incoming gradient, which gives the matching global
 * reductions of sum(dy) and sum(dy * x).
 *
 * The reductions are synchronous (they block the JS thread for a few small allreduces per layer):
 * a forward pass needs the global statistics before it can go on, in PyTorch too.
 */
import { defineGradient, needsGrad, noGrad, record } from '../../autograd/engine';
import { add, mul, pow, relu, sub } from '../../ops/elementwise';
import { reshape, sum } from '../../ops/shape';
import type { BatchNorm2d, BatchNormSync } from '../../nn/layers';
import { BatchNorm2d as BatchNorm2dClass } from '../../nn/layers';
import type { Module } from '../../nn/module';
import { tensor } from '../../tensor/create';
import { keep, type Tensor, tidy } from '../../tensor/tensor';
import type { ProcessGroup } from './process-group';

defineGradient('distAllreduceSum', ['x']);

function hostCopy(t: Tensor): Float32Array {
  return Float32Array.from(t.dataSync() as Float32Array);
}

/**
 * Sum over ranks, differentiable: the gradient of each rank's input is the sum of every rank's
 * output gradient. `extra` (not differentiated) is summed in the same collective, in place.
 */
export function allreduceSum(pg: ProcessGroup | null, t: Tensor, extra?: Float32Array): Tensor {
  const d = new Float32Array(t.size + (extra?.length ?? 0));
  d.set(t.dataSync() as Float32Array, 0);
  if (extra) d.set(extra, t.size);
  pg?.allreduceArraySync(d, 'sum');
  if (extra) extra.set(d.subarray(t.size));
  const out = tensor(d.subarray(0, t.size), [...t.shape]);
  if (!needsGrad(t)) return out;
  return record(out, 'distAllreduceSum', [t], [], (g) => {
    const gd = hostCopy(g);
    pg?.allreduceArraySync(gd, 'sum');
    return [tensor(gd, [...g.shape])];
  });
}

/** The BatchNormSync of one process group (null: one process, the same arithmetic). */
export class SyncBatchNorm implements BatchNormSync {
  constructor(readonly group: ProcessGroup | null) {}

  forward(bn: BatchNorm2d, x: Tensor, residual: Tensor | null, useRelu: boolean): Tensor {
    bn.numBatchesTracked++;
    const [n, c, h, w] = x.shape;
    const eps = bn.options.eps ?? 1e-5;
    const momentum = bn.options.momentum ?? 0.1;
    return tidy(() => {
      // Two passes, as a well-conditioned variance needs (sum(x^2)/N - mean^2 loses every digit
      // when a channel's mean is large against its spread): the global mean first, then the
      // global sum of squared deviations from it.
      // The global count travels with the sums (the last batch may split unevenly).
      const count = new Float32Array([n * h * w]);
      const total = allreduceSum(this.group, sum(x, [0, 2, 3]), count);
      const N = count[0];
      const mean = mul(total, 1 / N);
      const xc = sub(x, reshape(mean, [1, c, 1, 1]));
      const variance = mul(allreduceSum(this.group, sum(mul(xc, xc), [0, 2, 3])), 1 / N);
      const scale = mul(pow(add(variance, eps), -0.5), bn.weight);
      let y = add(mul(xc, reshape(scale, [1, c, 1, 1])), reshape(bn.bias, [1, c, 1, 1]));
      if (residual) y = add(y, residual);
      if (useRelu) y = relu(y);
      noGrad(() => {
        const rm = add(mul(bn.runningMean, 1 - momentum), mul(mean, momentum));
        const rv = add(mul(bn.runningVar, 1 - momentum), mul(variance, (momentum * N) / Math.max(1, N - 1)));
        bn.runningMean.copy_(rm);
        bn.runningVar.copy_(rv);
      });
      return keep(y);
    });
  }
}

/** Makes every BatchNorm2d of `model` synchronise its statistics over `group` (null: undo). */
export function convertSyncBatchNorm(model: Module, group: ProcessGroup | null, enable = true): number {
  const impl = enable ? new SyncBatchNorm(group) : null;
  let k = 0;
  for (const [, m] of model.namedModules())
    if (m instanceof BatchNorm2dClass) {
      m.sync = impl;
      k++;
    }
  return k;
}
