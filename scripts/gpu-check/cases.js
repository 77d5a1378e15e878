// GPU-vs-CPU op comparisons, shared by test/cuda.test.ts (jest, TypeScript sources) and
// scripts/gpu-check/check.js (plain Node on the GPU machine, compiled dist/). Plain CommonJS so
// both can load it without a build step; `rx` is passed in (lib/ or dist/).
//
// Each case builds the same inputs on both devices, runs forward and backward, and returns
// comparisons [label, relErr, tol] with relErr = max|gpu - cpu| / max(max|cpu|, 1e-3).
// Tolerances: float32 elementwise/reductions 1e-4; float32 convolutions and matmuls 1e-2
// because cuDNN/cuBLAS may use TF32 tensor cores (set RESNEXT_CUDA_STRICT_FP32=1 for 1e-4);
// bfloat16 2e-2 against a float32 CPU reference computed from the bf16-rounded inputs (3e-2 for
// convolutions, whose bf16 output rounding adds to the accumulation error).
// options.device: the device compared with the CPU ('cuda'; check.js's dry run passes 'cpu',
// so that every case runs, CPU against CPU, on a machine without a GPU).

function gpuCases(rx, options = {}) {
  const DEV = options.device || 'cuda';
  const TOL = { f32: 1e-4, f32mma: process.env.RESNEXT_CUDA_STRICT_FP32 === '1' ? 1e-4 : 1e-2, bf16: 2e-2, bf16conv: 3e-2 };

  let seed = 12345;
  const rnd = (n, scale = 1) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      a[i] = ((seed / 4294967296) * 2 - 1) * scale;
    }
    return a;
  };
  const _numel = (s) => s.reduce((a, b) => a * b, 1);
  // A tensor on dev with dtype dt; the CPU side of a bf16 case holds the bf16-rounded values in float32.
  const mk = (data, shape, dev, dt, grad = false) => {
    let t = rx.tensor(data, shape, { device: dev });
    if (dt === 'bfloat16') {
      const r = rx.cast(t, 'bfloat16');
      t = dev === 'cpu' ? rx.cast(r, 'float32') : r;
    }
    t.requiresGrad = grad;
    return t;
  };
  const host = (t) => Float64Array.from((t.dtype === 'float32' ? t : rx.cast(t, 'float32')).dataSync());
  const relErr = (g, c) => {
    let d = 0,
      m = 1e-3;
    if (g.length !== c.length) return Infinity;
    for (let i = 0; i < c.length; i++) {
      d = Math.max(d, Math.abs(g[i] - c[i]));
      m = Math.max(m, Math.abs(c[i]));
    }
    return Number.isNaN(d) ? Infinity : d / m;
  };
  // Runs fn on both devices (inside tidy) and compares the named outputs.
  const compare = (fn, tol) => {
    const out = {};
    for (const [side, dev] of [['cpu', 'cpu'], ['cuda', DEV]]) out[side] = rx.tidy(() => {
      const r = fn(dev);
      const h = {};
      for (const k of Object.keys(r)) h[k] = r[k] == null ? null : host(r[k]);
      return h;
    });
    return Object.keys(out.cpu).map((k) => [k, relErr(out.cuda[k], out.cpu[k]), typeof tol === 'object' ? tol[k] : tol]);
  };

  const cases = [];
  const add = (name, fn) => cases.push({ name, run: fn });

  // ------------------------------------------------------------ convolutions
  const convs = [
    ['groups 1, 3x3 pad 1, bias', { N: 2, C: 16, H: 8, W: 8, K: 32, R: 3, S: 3, s: 1, p: 1, g: 1, bias: true }],
    ['groups 32, 3x3 (ResNeXt)', { N: 2, C: 128, H: 8, W: 8, K: 128, R: 3, S: 3, s: 1, p: 1, g: 32 }],
    ['groups 32, 3x3 stride 2, odd size', { N: 2, C: 64, H: 7, W: 7, K: 64, R: 3, S: 3, s: 2, p: 1, g: 32 }],
    ['depthwise 3x3 stride 2', { N: 2, C: 32, H: 9, W: 9, K: 32, R: 3, S: 3, s: 2, p: 1, g: 32 }],
    ['1x1 stride 2 (downsample)', { N: 2, C: 32, H: 8, W: 8, K: 64, R: 1, S: 1, s: 2, p: 0, g: 1 }],
    ['batch 1, 7x7 stride 2 pad 3 (stem)', { N: 1, C: 3, H: 16, W: 16, K: 16, R: 7, S: 7, s: 2, p: 3, g: 1 }],
  ];
  for (const dt of ['float32', 'bfloat16'])
    for (const [label, c] of convs) {
      add(`conv2d ${dt} ${label}`, () => {
        const P = Math.floor((c.H + 2 * c.p - c.R) / c.s) + 1, Q = Math.floor((c.W + 2 * c.p - c.S) / c.s) + 1;
        const x = rnd(c.N * c.C * c.H * c.W), w = rnd(c.K * (c.C / c.g) * c.R * c.S, 0.3), b = rnd(c.K);
        const gy = rnd(c.N * c.K * P * Q);
        return compare((dev) => {
          const xt = mk(x, [c.N, c.C, c.H, c.W], dev, dt, true), wt = mk(w, [c.K, c.C / c.g, c.R, c.S], dev, dt, true);
          const bt = c.bias ? mk(b, [c.K], dev, dt, true) : null;
          const y = rx.conv2d(xt, wt, { stride: c.s, padding: c.p, groups: c.g, bias: bt });
          y.backward(mk(gy, [c.N, c.K, P, Q], dev, dt));
          return { y, gx: xt.grad, gw: wt.grad, ...(bt ? { gb: bt.grad } : {}) };
        }, dt === 'float32' ? TOL.f32mma : TOL.bf16conv);
      });
    }

  // ------------------------------------------------------------ batch norm
  for (const dt of ['float32', 'bfloat16'])
    for (const act of ['batchNorm2d', 'batchNormReLU', 'batchNormAddReLU'])
      for (const training of [true, false]) {
        // bf16 activations use float32 parameters and statistics (design.md section 2).
        add(`${act} ${dt} ${training ? 'train' : 'eval'}`, () => {
          const N = 4, C = 24, H = 5, W = 6, n = N * C * H * W;
          const x = rnd(n, 2), r = rnd(n), gy = rnd(n), gamma = rnd(C), beta = rnd(C);
          const rm = rnd(C, 0.1), rv = Float32Array.from(rnd(C), (v) => 1 + Math.abs(v));
          const tol = dt === 'float32' ? TOL.f32 * 10 : TOL.bf16;
          return compare((dev) => {
            const xt = mk(x, [N, C, H, W], dev, dt, true), rt = mk(r, [N, C, H, W], dev, dt, true);
            const opts = {
              weight: mk(gamma, [C], dev, 'float32', true), bias: mk(beta, [C], dev, 'float32', true),
              runningMean: mk(rm, [C], dev, 'float32'), runningVar: mk(rv, [C], dev, 'float32'),
              training, momentum: 0.1, eps: 1e-5,
            };
            const y = act === 'batchNormAddReLU' ? rx.batchNormAddReLU(xt, rt, opts)
              : act === 'batchNormReLU' ? rx.batchNormReLU(xt, opts) : rx.batchNorm2d(xt, opts);
            y.backward(mk(gy, [N, C, H, W], dev, dt));
            const o = { y, gx: xt.grad, ggamma: opts.weight.grad, gbeta: opts.bias.grad };
            if (act === 'batchNormAddReLU') o.gres = rt.grad;
            if (training) Object.assign(o, { runningMean: opts.runningMean, runningVar: opts.runningVar });
            return o;
          }, tol);
        });
      }

  // ------------------------------------------------------------ pooling, linear, loss, optimiser
  for (const dt of ['float32', 'bfloat16']) {
    const tol = dt === 'float32' ? TOL.f32 : TOL.bf16;
    add(`maxPool2d ${dt} 3x3 stride 2 pad 1`, () => {
      const x = rnd(2 * 8 * 9 * 9), gy = rnd(2 * 8 * 5 * 5);
      return compare((dev) => {
        const xt = mk(x, [2, 8, 9, 9], dev, dt, true);
        const y = rx.maxPool2d(xt, 3, { stride: 2, padding: 1 });
        y.backward(mk(gy, [2, 8, 5, 5], dev, dt));
        return { y, gx: xt.grad };
      }, tol);
    });
    add(`globalAvgPool2d ${dt}`, () => {
      const x = rnd(3 * 16 * 7 * 7), gy = rnd(3 * 16);
      return compare((dev) => {
        const xt = mk(x, [3, 16, 7, 7], dev, dt, true);
        const y = rx.globalAvgPool2d(xt);
        y.backward(mk(gy, y.shape, dev, dt));
        return { y, gx: xt.grad };
      }, tol);
    });
    add(`linear ${dt}`, () => {
      const x = rnd(8 * 64), w = rnd(10 * 64, 0.2), b = rnd(10), gy = rnd(8 * 10);
      return compare((dev) => {
        const xt = mk(x, [8, 64], dev, dt, true), wt = mk(w, [10, 64], dev, dt, true), bt = mk(b, [10], dev, dt, true);
        const y = rx.linear(xt, wt, bt);
        y.backward(mk(gy, [8, 10], dev, dt));
        return { y, gx: xt.grad, gw: wt.grad, gb: bt.grad };
      }, dt === 'float32' ? TOL.f32mma : TOL.bf16);
    });
    for (const ls of [0, 0.1])
      add(`crossEntropy ${dt} labelSmoothing ${ls}`, () => {
        const logits = rnd(16 * 10, 3), targets = Int32Array.from({ length: 16 }, (_, i) => (i * 7) % 10);
        return compare((dev) => {
          const lt = mk(logits, [16, 10], dev, dt, true);
          const tt = rx.tensor(targets, [16], { dtype: 'int32', device: dev });
          const loss = rx.crossEntropy(lt, tt, { labelSmoothing: ls });
          loss.backward(mk(new Float32Array([1.5]), [], dev, dt));
          return { loss, glogits: lt.grad };
        }, tol);
      });
    add(`sgdStep ${dt} momentum 0.9 nesterov weightDecay (two steps, 4-D and 1-D params)`, () => {
      const p4 = rnd(8 * 4 * 3 * 3), g4 = rnd(8 * 4 * 3 * 3), p1 = rnd(8), g1 = rnd(8);
      return compare((dev) => {
        const o = {};
        for (const [name, p, g, shape] of [['p4', p4, g4, [8, 4, 3, 3]], ['p1', p1, g1, [8]]]) {
          const pt = mk(p, shape, dev, dt), gt = mk(g, shape, dev, dt), buf = rx.zeros(shape, { device: dev, dtype: pt.dtype });
          for (const firstStep of [true, false])
            rx.sgdStep(pt, gt, { lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 5e-4, momentumBuffer: buf, firstStep });
          o[name] = pt;
          o[`${name}.buf`] = buf;
        }
        return o;
      }, tol);
    });
  }

  // ------------------------------------------------------------ elementwise, shape, random
  add('elementwise float32: broadcast add/mul/div/max/gt, relu, exp/log/sqrt, pow, sum, permute, expand', () => {
    const x = rnd(2 * 6 * 4 * 5), bias = rnd(6), gy = rnd(2 * 6 * 4 * 5);
    return compare((dev) => {
      const xt = mk(x, [2, 6, 4, 5], dev, 'float32', true);
      const bt = mk(bias, [6, 1, 1], dev, 'float32', true);
      const a = rx.add(rx.mul(xt, bt), bt);
      // maximum and abs have no gradient here: the differentiable chain avoids them.
      const y = rx.relu(rx.add(a, rx.div(xt, rx.add(rx.mul(bt, bt), 1))));
      y.backward(mk(gy, [2, 6, 4, 5], dev, 'float32'));
      const pos = rx.add(rx.abs(xt), 0.5);
      return {
        y, gx: xt.grad, gb: bt.grad,
        maximum: rx.maximum(a, rx.div(xt, rx.add(rx.abs(bt), 1))),
        explogsqrt: rx.add(rx.exp(rx.neg(pos)), rx.mul(rx.log(pos), rx.sqrt(pos))),
        pow: rx.pow(pos, 1.5),
        sumHW: rx.sum(xt, [2, 3]), sumNC: rx.sum(xt, [0, 1], true), sumAll: rx.sum(xt),
        permute: rx.permute(xt, [0, 2, 3, 1]), expand: rx.expand(bt, [2, 6, 4, 5]),
        reshape: rx.reshape(xt, [2, 120]),
      };
    }, TOL.f32);
  });
  add('cast float32 -> bfloat16 -> float32 and int32', () => {
    const data = rnd(2 * 3 * 4 * 5, 100); // drawn once: both devices get the same numbers
    return compare((dev) => {
      const t = rx.tensor(data, [2, 3, 4, 5], { device: dev });
      return { bf16: rx.cast(rx.cast(t, 'bfloat16'), 'float32'), i32: rx.cast(rx.cast(t, 'int32'), 'float32') };
    }, 0);
  });
  add('randn / rand: same seed, same numbers on both devices', () =>
    compare((dev) => {
      rx.manualSeed(7);
      return { randn: rx.randn([3, 4, 5, 6], { device: dev }), rand: rx.rand([1000], { device: dev }) };
    }, 1e-6));
  add('topk / argmax', () => {
    const x = rnd(6 * 20);
    return compare((dev) => {
      const t = rx.tensor(x, [6, 20], { device: dev });
      return { top5: rx.cast(rx.topk(t, 5), 'float32'), argmax: rx.cast(rx.argmax(t), 'float32') };
    }, 0);
  });
  return cases;
}

module.exports = { gpuCases };
