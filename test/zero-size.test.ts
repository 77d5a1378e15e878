/**
 * Zero-size tensors and huge shapes: each op is defined on empty operands as PyTorch defines it,
 * and a shape whose element or byte count overflows is an ERR_OOM before anything is allocated.
 * (Each case here used to kill the process: SIGFPE, a heap overflow, or a hang.)
 */
import * as rx from '../lib';

const d = (t: rx.Tensor) => Array.from(t.dataSync());

describe('zero-size operands', () => {
  test('elementwise, broadcasting, expand and permute give empty results', () => {
    rx.tidy(() => {
      expect(rx.add(rx.zeros([0]), rx.zeros([])).shape).toEqual([0]);
      for (const f of [rx.sub, rx.mul, rx.div, rx.maximum]) expect(d(f(rx.zeros([0, 3]), rx.ones([3])))).toEqual([]);
      expect(rx.expand(rx.zeros([1]), [0]).shape).toEqual([0]);
      expect(rx.permute(rx.zeros([0, 3]), [1, 0]).shape).toEqual([3, 0]);
      expect(d(rx.relu(rx.zeros([0])))).toEqual([]);
    });
  });

  test('reductions of nothing: sum 0, mean NaN, global average pool NaN', () => {
    rx.tidy(() => {
      expect(d(rx.sum(rx.zeros([0, 3])))).toEqual([0]);
      expect(d(rx.sum(rx.zeros([0, 3]), 0))).toEqual([0, 0, 0]);
      expect(d(rx.mean(rx.zeros([0, 3])))).toEqual([NaN]);
      expect(rx.globalAvgPool2d(rx.zeros([0, 3, 2, 2])).shape).toEqual([0, 3, 1, 1]);
    });
  });

  test('conv2d over a batch of 0, its backward, 0 output channels, 0 input channels', () => {
    rx.tidy(() => {
      const x = rx.zeros([0, 2, 8, 8], { requiresGrad: true });
      const w = rx.randn([4, 2, 3, 3], { requiresGrad: true });
      const y = rx.conv2d(x, w, { padding: 1 });
      expect(y.shape).toEqual([0, 4, 8, 8]);
      rx.sum(y).backward();
      expect(x.grad!.shape).toEqual([0, 2, 8, 8]);
      expect(d(w.grad!)).toEqual(new Array(72).fill(0));
      expect(rx.conv2d(rx.zeros([1, 2, 8, 8]), rx.zeros([0, 2, 3, 3])).shape).toEqual([1, 0, 6, 6]);
      // No input channels: each output is the bias.
      const b = rx.tensor([1, 2]);
      expect(d(rx.conv2d(rx.zeros([1, 0, 2, 2]), rx.zeros([2, 0, 1, 1]), { bias: b }))).toEqual([1, 1, 1, 1, 2, 2, 2, 2]);
    });
  });

  test('a 0x0 convolution kernel is refused (it used to read past a buffer)', () => {
    expect(() => rx.conv2d(rx.randn([1, 1, 4, 4]), rx.randn([1, 1, 0, 0]), { padding: 1 })).toThrow(
      expect.objectContaining({ code: 'ERR_SHAPE', message: expect.stringMatching(/conv2d: weight expected a kernel of at least 1x1/) }),
    );
  });

  test('matmul and linear with an inner dimension of 0 give zeros (and the bias)', () => {
    rx.tidy(() => {
      expect(d(rx.matmul(rx.zeros([2, 0]), rx.zeros([0, 3])))).toEqual([0, 0, 0, 0, 0, 0]);
      expect(d(rx.linear(rx.zeros([2, 0]), rx.zeros([2, 0]), rx.tensor([5, 6])))).toEqual([5, 6, 5, 6]);
      expect(rx.linear(rx.zeros([0, 3]), rx.zeros([4, 3])).shape).toEqual([0, 4]);
    });
  });

  test('batch norm with 0 channels, and in eval mode over an empty batch', () => {
    rx.tidy(() => {
      const p = (c: number) => ({ weight: rx.ones([c]), bias: rx.zeros([c]), runningMean: rx.zeros([c]), runningVar: rx.ones([c]) });
      expect(rx.batchNorm2d(rx.zeros([2, 0, 3, 3]), p(0)).shape).toEqual([2, 0, 3, 3]);
      expect(rx.batchNorm2d(rx.zeros([0, 3, 2, 2]), { ...p(3), training: false }).shape).toEqual([0, 3, 2, 2]);
      expect(() => rx.batchNorm2d(rx.zeros([0, 3, 2, 2]), p(3))).toThrow(expect.objectContaining({ code: 'ERR_SHAPE' }));
    });
  });

  test('topk, argmax and pooling of empty batches', () => {
    rx.tidy(() => {
      expect(rx.topk(rx.zeros([0, 3]), 2).shape).toEqual([0, 2]);
      expect(rx.argmax(rx.zeros([0, 3])).shape).toEqual([0]);
      expect(rx.maxPool2d(rx.zeros([0, 1, 4, 4]), 2).shape).toEqual([0, 1, 2, 2]);
    });
  });
});

describe('IEEE arithmetic with scalars, as in PyTorch', () => {
  test('div by 0 and mul by Infinity give infinities, not errors', () => {
    rx.tidy(() => {
      expect(d(rx.div(rx.tensor([1, -1]), 0))).toEqual([Infinity, -Infinity]);
      expect(d(rx.mul(rx.tensor([1, 0]), Infinity))).toEqual([Infinity, NaN]);
      expect(d(rx.full([2], Infinity))).toEqual([Infinity, Infinity]);
    });
  });
});

describe('huge shapes', () => {
  test.each([
    [[2 ** 31, 2 ** 31]],
    [[1, 2 ** 31, 2 ** 31, 1]],
    [[4294967296, 4294967296]],
    [[2 ** 52, 2 ** 52, 2 ** 52]],
  ])('zeros(%j) is ERR_OOM naming zeros, before any allocation', (shape) => {
    const before = rx.memory().bytes;
    expect(() => rx.zeros(shape)).toThrow(expect.objectContaining({ code: 'ERR_OOM', message: expect.stringMatching(/^zeros: shape/) }));
    expect(rx.memory().bytes).toBeLessThanOrEqual(before); // nothing allocated (GC may free garbage meanwhile)
  });

  test('a reshape whose size product overflows is refused, not wrapped', () => {
    const z = rx.zeros([0]);
    expect(() => rx.reshape(z, [2 ** 32, 2 ** 32, 0])).not.toThrow(); // 0 elements: fine
    expect(() => rx.reshape(rx.zeros([1]), [2 ** 32, 2 ** 32, 2 ** 32, -1])).toThrow(expect.objectContaining({ code: 'ERR_SHAPE' }));
    z.dispose();
  });

  test('a max-pool window far larger than the input ends (it used to loop over the whole window)', () => {
    rx.tidy(() => {
      const y = rx.maxPool2d(rx.ones([1, 1, 4, 4]), [1e9, 1e9], { stride: 1, padding: 5e8 });
      expect(y.shape).toEqual([1, 1, 5, 5]);
      expect(d(y).every((v) => v === 1)).toBe(true);
    });
  });

  test('conv2d backward with a stride far beyond the input equals a stride of the input size (it used to loop stride^2 times and run out of memory)', () => {
    const grads = (stride: number | [number, number], padding: number | [number, number]) =>
      rx.tidy(() => {
        const x = rx.randn([2, 3, 5, 4], { requiresGrad: true, seed: 1 });
        const w = rx.randn([4, 3, 3, 2], { requiresGrad: true, seed: 2 });
        rx.sum(rx.conv2d(x, w, { stride, padding })).backward();
        return [d(x.grad!), d(w.grad!)];
      });
    expect(grads(1e8, 0)).toEqual(grads(5, 0));
    expect(grads([1, 1e8], [0, 1])).toEqual(grads([1, 6], [0, 1]));
  });
});
