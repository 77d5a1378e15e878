/** The tape: shared subexpressions, reuse, noGrad, accumulation, freeing, and memory accounting. */
import * as rx from '../lib';
import { defineGradient, record } from '../lib/autograd/engine';
import { native } from '../lib/native/addon';
import { settle } from './reference';

const vals = (t: rx.Tensor | null) => Array.from(t!.dataSync());


describe('a step that throws inside tidy', () => {
  test('frees its intermediates and what their autograd nodes saved (not left for GC)', () => {
    const w = rx.randn([4, 3, 3, 3], { requiresGrad: true, seed: 3 });
    const x = rx.randn([2, 3, 8, 8], { seed: 4 });
    const before = rx.memory().tensors;
    expect(() =>
      rx.tidy(() => {
        const y = rx.relu(rx.conv2d(rx.mul(x, 2), w, { padding: 1 }));
        rx.sum(y);
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(rx.memory().tensors).toBeLessThanOrEqual(before); // GC may free unrelated garbage meanwhile
    w.dispose();
    x.dispose();
  });
});

describe('autograd', () => {
  test('a tensor used twice gets the sum of both gradients', () => {
    rx.tidy(() => {
      const x = rx.tensor([1, 2, 3], [3], { requiresGrad: true });
      rx.sum(rx.mul(x, x)).backward(); // d/dx x^2 = 2x
      expect(vals(x.grad)).toEqual([2, 4, 6]);
    });
  });

  test('shared subexpression: y = x*2; z = y*y + y', () => {
    rx.tidy(() => {
      const x = rx.tensor([1, -1, 0.5], [3], { requiresGrad: true });
      const y = rx.mul(x, 2);
      rx.sum(rx.add(rx.mul(y, y), y)).backward();
      // dz/dx = (2y + 1) * 2
      expect(vals(x.grad)).toEqual([10, -6, 6]);
    });
  });

  test('add(x, x) returns the same gradient object for both inputs without double-freeing it', () => {
    rx.tidy(() => {
      const x = rx.tensor([1, 2], [2], { requiresGrad: true });
      rx.sum(rx.add(x, x)).backward();
      expect(vals(x.grad)).toEqual([2, 2]);
    });
  });

  test('gradients accumulate across backward calls until zeroGrad', () => {
    rx.tidy(() => {
      const x = rx.tensor([1, 2], [2], { requiresGrad: true });
      rx.sum(rx.mul(x, 3)).backward();
      rx.sum(rx.mul(x, 3)).backward();
      expect(vals(x.grad)).toEqual([6, 6]);
      x.zeroGrad();
      expect(x.grad).toBeNull();
      rx.sum(x).backward();
      expect(vals(x.grad)).toEqual([1, 1]);
    });
  });

  test('noGrad records nothing; inputs without requiresGrad get no grad', () => {
    rx.tidy(() => {
      const x = rx.tensor([1, 2], [2], { requiresGrad: true });
      const c = rx.tensor([5, 5], [2]);
      const y = rx.noGrad(() => rx.mul(x, 2));
      expect(y.requiresGrad).toBe(false);
      expect(y.gradFn).toBeNull();
      expect(() => y.backward()).toThrow(expect.objectContaining({ code: 'ERR_ARG' }));
      rx.sum(rx.mul(x, c)).backward();
      expect(c.grad).toBeNull();
      expect(vals(x.grad)).toEqual([5, 5]);
    });
  });

  test('saved tensors are freed after backward; a second backward says why it fails', () => {
    rx.tidy(() => {
      const x = rx.tensor([1, 2], [2], { requiresGrad: true });
      settle();
      const before = rx.memory().tensors;
      const loss = rx.sum(rx.exp(x)); // exp saves its output
      settle();
      const during = rx.memory().tensors;
      expect(during).toBeGreaterThan(before);
      loss.backward();
      // the saved alias of exp's output is freed; x.grad is the one new handle
      settle();
      expect(rx.memory().tensors).toBe(during - 1 + 1);
      expect(() => loss.backward()).toThrow(/backward twice/);
      const l2 = rx.sum(rx.exp(x));
      l2.backward(undefined, { retainGraph: true });
      l2.backward(); // allowed once more
      expect(vals(x.grad).map((v) => +v.toFixed(4))).toEqual([3 * Math.E, 3 * Math.E * Math.E].map((v) => +v.toFixed(4)));
    });
  });

  test('backward still works after intermediates are disposed (nodes hold their own aliases)', () => {
    const x = rx.tensor([1, 2, 3], [3], { requiresGrad: true });
    const y = rx.exp(x);
    const z = rx.sum(rx.mul(y, y));
    y.dispose();
    z.backward();
    expect(vals(x.grad).map((v) => +v.toFixed(3))).toEqual([1, 2, 3].map((v) => +(2 * Math.exp(2 * v)).toFixed(3)));
    for (const t of [x, x.grad!, z]) t.dispose();
  });

  test('gradcheck detects a wrong gradient', () => {
    defineGradient('badSquare', ['x']);
    const badSquare = (x: rx.Tensor) => {
      const out = rx.noGrad(() => rx.mul(x, x));
      return record(out, 'badSquare', [x], [x], (g, [sx]) => [new rx.Tensor(native.binary('mul', g.handle, sx.handle))]); // x, not 2x
    };
    const x = rx.tensor([1, 2, 3], [3], { dtype: 'float64', requiresGrad: true });
    const r = rx.gradcheck(badSquare, [x]);
    expect(r.ok).toBe(false);
    expect(r.maxAbsError).toBeGreaterThan(0.5);
    const good = rx.gradcheck((t) => rx.mul(t, t), [x]);
    expect(good.ok).toBe(true);
    x.dispose();
  });

  test('tidy disposes intermediates, keeps returned tensors and leaf gradients', () => {
    const x = rx.tensor([1, 2], [2], { requiresGrad: true });
    settle();
    const start = rx.memory().tensors;
    const kept = rx.tidy(() => {
      const y = rx.mul(x, 2);
      const z = rx.add(y, 1);
      rx.sum(z).backward();
      return { z };
    });
    expect(kept.z.isDisposed).toBe(false);
    expect(x.grad!.isDisposed).toBe(false);
    // z's gradFn node no longer exists after backward; z and x.grad are the only new handles
    settle();
    expect(rx.memory().tensors).toBe(start + 2);
    kept.z.dispose();
    x.grad!.dispose();
    x.dispose();
  });

  test('using / Symbol.dispose frees a tensor at scope end', () => {
    const before = rx.memory().tensors;
    {
      const t = rx.zeros([4]);
      (t as unknown as { [Symbol.dispose](): void })[Symbol.dispose]();
      expect(t.isDisposed).toBe(true);
    }
    expect(rx.memory().tensors).toBeLessThanOrEqual(before); // GC may free unrelated garbage meanwhile
  });

  test('a forward+backward+SGD step on a conv/BN/ReLU net leaves memory() where it started after disposal', () => {
    settle();
    const start = rx.memory();
    const params = {
      w1: rx.randn([8, 3, 3, 3], { requiresGrad: true, std: 0.2 }),
      g1: rx.ones([8], { requiresGrad: true }),
      b1: rx.zeros([8], { requiresGrad: true }),
      w2: rx.randn([8, 2, 3, 3], { requiresGrad: true, std: 0.2 }),
      g2: rx.ones([8], { requiresGrad: true }),
      b2: rx.zeros([8], { requiresGrad: true }),
      fc: rx.randn([4, 8], { requiresGrad: true, std: 0.2 }),
    };
    const stats = [rx.zeros([8]), rx.ones([8]), rx.zeros([8]), rx.ones([8])];
    const bufs = new Map<rx.Tensor, rx.Tensor>();
    const x = rx.randn([4, 3, 8, 8]);
    const losses: number[] = [];
    for (let step = 0; step < 3; step++) {
      rx.tidy(() => {
        const a = rx.batchNormReLU(rx.conv2d(x, params.w1, { padding: 1 }), { weight: params.g1, bias: params.b1, runningMean: stats[0], runningVar: stats[1] });
        const b = rx.batchNormAddReLU(rx.conv2d(a, params.w2, { padding: 1, groups: 4 }), a, {
          weight: params.g2, bias: params.b2, runningMean: stats[2], runningVar: stats[3],
        });
        const pooled = rx.maxPool2d(b, 2);
        const logits = rx.linear(rx.flatten(rx.globalAvgPool2d(pooled)), params.fc);
        const loss = rx.crossEntropy(logits, [0, 1, 2, 3]);
        losses.push(loss.item());
        loss.backward();
        for (const p of Object.values(params)) {
          let buf = bufs.get(p);
          const first = !buf;
          if (!buf) bufs.set(p, (buf = rx.keep(rx.zerosLike(p))));
          rx.sgdStep(p, p.grad!, { lr: 0.1, momentum: 0.9, momentumBuffer: buf, firstStep: first });
          p.zeroGrad();
        }
      });
    }
    expect(losses[2]).toBeLessThan(losses[0]);
    for (const t of [...Object.values(params), ...stats, ...bufs.values(), x]) t.dispose();
    settle();
    const end = rx.memory();
    expect(end.tensors).toBe(start.tensors);
    expect(end.bytes).toBe(start.bytes);
  });
});
