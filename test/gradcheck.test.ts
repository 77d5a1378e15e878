/** gradcheck of every differentiable op in float64 (analytic backward vs central differences). */
import * as rx from '../lib';
import { rnd } from './reference';

const f64 = (a: Float64Array | number[], shape: number[], requiresGrad = true) =>
  rx.tensor(Float64Array.from(a), shape, { dtype: 'float64', requiresGrad });
const n = (s: number[]) => s.reduce((a, b) => a * b, 1);

function expectGrad(fn: (...xs: rx.Tensor[]) => rx.Tensor, inputs: rx.Tensor[], tol = {}): void {
  const r = rx.gradcheck(fn, inputs, tol);
  if (!r.ok) throw new Error(`gradcheck failed: ${JSON.stringify(r)}`);
  expect(r.ok).toBe(true);
  expect(r.checked).toBeGreaterThan(0);
  for (const t of inputs) t.dispose();
}

describe('gradcheck', () => {
  test('leaves no tensor behind (the fresh leaves\' gradients used to leak)', () => {
    const x = f64([1, 2, 3, 4, 5, 6], [2, 3]);
    const w = f64([1, -1, 2, 0.5, 3, -2], [2, 3]);
    const before = rx.memory().tensors;
    for (let i = 0; i < 3; i++) expect(rx.gradcheck((a, b) => rx.linear(a, b), [x, w]).ok).toBe(true);
    expect(rx.memory().tensors).toBeLessThanOrEqual(before); // GC may free unrelated garbage meanwhile
    x.dispose();
    w.dispose();
  });

  test.each([
    ['groups 1, padding 1', [2, 3, 5, 4], [4, 3, 3, 3], { padding: 1 }],
    ['groups 2, stride 2', [1, 4, 5, 5], [6, 2, 3, 3], { stride: 2, padding: 1, groups: 2 }],
    ['depthwise', [1, 3, 4, 4], [3, 1, 3, 3], { padding: 1, groups: 3 }],
    ['1x1 stride 2, no padding', [2, 4, 3, 3], [2, 4, 1, 1], { stride: 2 }],
  ] as const)('conv2d %s (input, weight, bias)', (_n, xs, ws, o) => {
    const x = f64(rnd(n([...xs]), 1), [...xs]), w = f64(rnd(n([...ws]), 2), [...ws]), b = f64(rnd(ws[0], 3), [ws[0]]);
    expectGrad((x, w, b) => rx.conv2d(x, w, { ...o, bias: b }), [x, w, b]);
  });

  const bnInputs = () => {
    const shape = [2, 3, 2, 3];
    return {
      shape,
      x: f64(rnd(36, 4).map((v, i) => 2 * v + (i % 5) * 0.3), shape),
      g: f64(rnd(3, 5).map((v) => 1 + 0.5 * v), [3]),
      b: f64(rnd(3, 6), [3]),
      r: f64(rnd(36, 7), shape),
      stats: () => ({ runningMean: rx.zeros([3], { dtype: 'float64' }), runningVar: rx.ones([3], { dtype: 'float64' }) }),
    };
  };

  test.each([true, false])('batchNorm2d (training=%s)', (training) => {
    const { x, g, b, stats } = bnInputs();
    expectGrad((x, g, b) => rx.batchNorm2d(x, { weight: g, bias: b, ...stats(), training }), [x, g, b]);
  });

  test('batchNormReLU', () => {
    const { x, g, b, stats } = bnInputs();
    expectGrad((x, g, b) => rx.batchNormReLU(x, { weight: g, bias: b, ...stats() }), [x, g, b]);
  });

  test('batchNormAddReLU (input, residual, weight, bias)', () => {
    const { x, g, b, r, stats } = bnInputs();
    expectGrad((x, r, g, b) => rx.batchNormAddReLU(x, r, { weight: g, bias: b, ...stats() }), [x, r, g, b]);
  });

  test('relu (inputs away from the kink)', () => {
    const x = f64(rnd(12, 8).map((v) => (v >= 0 ? v + 0.1 : v - 0.1)), [3, 4]);
    expectGrad((x) => rx.relu(x), [x]);
  });

  test('maxPool2d (distinct values)', () => {
    const vals = Array.from({ length: 50 }, (_, i) => ((i * 37) % 50) / 10);
    const x = f64(vals, [1, 2, 5, 5]);
    expectGrad((x) => rx.maxPool2d(x, 3, { stride: 2, padding: 1 }), [x]);
  });

  test('globalAvgPool2d', () => {
    expectGrad((x) => rx.globalAvgPool2d(x), [f64(rnd(24, 9), [2, 3, 2, 2])]);
  });

  test('linear', () => {
    expectGrad((x, w, b) => rx.linear(x, w, b), [f64(rnd(12, 10), [3, 4]), f64(rnd(8, 11), [2, 4]), f64(rnd(2, 12), [2])]);
  });

  test.each([[false, false], [true, false], [false, true], [true, true]])('matmul transposeA=%s transposeB=%s', (ta, tb) => {
    const a = f64(rnd(6, 13), ta ? [3, 2] : [2, 3]), b = f64(rnd(12, 14), tb ? [4, 3] : [3, 4]);
    expectGrad((a, b) => rx.matmul(a, b, { transposeA: ta, transposeB: tb }), [a, b]);
  });

  test.each([0, 0.2])('crossEntropy (labelSmoothing %f)', (eps) => {
    expectGrad((l) => rx.crossEntropy(l, [1, 0, 3], { labelSmoothing: eps }), [f64(rnd(12, 15), [3, 4])]);
  });

  test('broadcasting add, sub, mul, div', () => {
    const a = () => f64(rnd(12, 16), [2, 3, 2]);
    const b = () => f64(rnd(3, 17).map((v) => v + 2), [3, 1]);
    expectGrad((x, y) => rx.add(x, y), [a(), b()]);
    expectGrad((x, y) => rx.sub(x, y), [a(), b()]);
    expectGrad((x, y) => rx.mul(x, y), [a(), b()]);
    expectGrad((x, y) => rx.div(x, y), [a(), b()]);
    expectGrad((x) => rx.div(2, rx.add(x, 3)), [a()]);
    expectGrad((x) => rx.sub(1, rx.mul(x, 3)), [a()]);
  });

  test('unary: exp, log, sqrt, pow, neg', () => {
    const pos = () => f64(rnd(6, 18).map((v) => v + 1.5), [2, 3]);
    expectGrad((x) => rx.exp(x), [pos()]);
    expectGrad((x) => rx.log(x), [pos()]);
    expectGrad((x) => rx.sqrt(x), [pos()]);
    expectGrad((x) => rx.pow(x, 3), [pos()]);
    expectGrad((x) => rx.neg(x), [pos()]);
  });

  test('sum, mean, reshape, flatten, permute, expand, cast', () => {
    const x = () => f64(rnd(24, 19), [2, 3, 4]);
    expectGrad((x) => rx.sum(x, [0, 2], true), [x()]);
    expectGrad((x) => rx.mean(x, 1), [x()]);
    expectGrad((x) => rx.reshape(x, [4, 6]), [x()]);
    expectGrad((x) => rx.flatten(x), [x()]);
    expectGrad((x) => rx.permute(x, [2, 0, 1]), [x()]);
    expectGrad((x) => rx.expand(rx.sum(x, 1, true), [2, 3, 4]), [x()]);
  });

  test('a small network: conv -> BN+ReLU -> conv -> BN+add+ReLU -> pool -> linear -> CE', () => {
    const x = f64(rnd(2 * 2 * 4 * 4, 20), [2, 2, 4, 4]);
    const w1 = f64(rnd(4 * 2 * 9, 21), [4, 2, 3, 3]);
    const w2 = f64(rnd(4 * 2 * 9, 22), [4, 2, 3, 3]);
    const fc = f64(rnd(3 * 4, 23), [3, 4]);
    const bn = () => ({
      weight: rx.ones([4], { dtype: 'float64' }), bias: rx.zeros([4], { dtype: 'float64' }),
      runningMean: rx.zeros([4], { dtype: 'float64' }), runningVar: rx.ones([4], { dtype: 'float64' }),
    });
    expectGrad(
      (x, w1, w2, fc) => {
        const a = rx.batchNormReLU(rx.conv2d(x, w1, { padding: 1 }), bn());
        const b = rx.batchNormAddReLU(rx.conv2d(a, w2, { padding: 1, groups: 2 }), a, bn());
        return rx.crossEntropy(rx.linear(rx.flatten(rx.globalAvgPool2d(b)), fc), [0, 2]);
      },
      [x, w1, w2, fc],
    );
  });
});
