/**
 * The fused inference op conv2dBatchNorm (issue 12): the eval-mode batch norm folded into the
 * convolution's epilogue must give what conv2d followed by the batch-norm op gives, for every
 * conv path (1x1 in place, padded/strided grid, grouped broadcast kernel) and every act; models in
 * eval mode under noGrad (which take the fused path) must match the same models run with the tape
 * on (which compose the differentiable ops).
 */
import * as rx from '../lib';
import { native } from '../lib/native/addon';

function close(a: Float32Array, b: Float32Array, tol: number): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  expect(worst).toBeLessThanOrEqual(tol * Math.max(1, scale));
  return worst;
}

function bnParams(K: number, seed: number): rx.BatchNormOptions {
  return {
    weight: rx.randn([K], { seed }),
    bias: rx.randn([K], { seed: seed + 1 }),
    runningMean: rx.randn([K], { seed: seed + 2 }),
    runningVar: rx.rand([K], { low: 0.2, high: 2, seed: seed + 3 }),
    training: false,
    eps: 1e-3,
  };
}

// [N, C, H, W, K, kernel, stride, pad, groups]: 1x1 in place, 1x1 strided, padded 3x3, grouped
// 3x3 (16 and 32 channels per group at 7x7-14x14: the broadcast kernel), the 7x7 stem, one image.
const shapes: number[][] = [
  [2, 64, 8, 8, 80, 1, 1, 0, 1],
  [2, 32, 9, 9, 64, 1, 2, 0, 1],
  [2, 8, 10, 10, 12, 3, 1, 1, 1],
  [2, 512, 7, 7, 512, 3, 1, 1, 32],
  [3, 256, 14, 14, 256, 3, 2, 1, 16],
  [1, 3, 23, 23, 16, 7, 2, 3, 1],
  [1, 128, 14, 14, 128, 3, 1, 1, 32],
];

describe('conv2dBatchNorm', () => {
  for (const [N, C, H, W, K, R, s, p, g] of shapes)
    for (const act of ['none', 'relu', 'addRelu'] as const)
      test(`N${N} C${C} ${H}x${W} K${K} ${R}x${R} s${s} p${p} g${g} ${act} = conv2d then the batch norm op`, async () => {
        const x = rx.randn([N, C, H, W], { seed: 1 });
        const w = rx.randn([K, C / g, R, R], { seed: 2, std: 1 / Math.sqrt((C / g) * R * R) });
        const bn = bnParams(K, 10);
        const conv = { stride: s, padding: p, groups: g };
        const c = rx.conv2d(x, w, conv);
        const residual = act === 'addRelu' ? rx.randn([...c.shape], { seed: 3 }) : null;
        const want =
          act === 'none' ? rx.batchNorm2d(c, bn) : act === 'relu' ? rx.batchNormReLU(c, bn) : rx.batchNormAddReLU(c, residual as rx.Tensor, bn);
        const got = rx.conv2dBatchNorm(x, w, conv, bn, act, residual);
        expect(got.shape).toEqual(want.shape);
        close(await got.data() as Float32Array, await want.data() as Float32Array, 2e-6);
        if (act !== 'none') expect((await got.data() as Float32Array).some((v) => v === 0)).toBe(true);
      });

  test('with gradients it composes the differentiable ops (the weight gets a gradient)', async () => {
    const x = rx.randn([2, 4, 5, 5], { seed: 4 });
    const w = rx.randn([6, 4, 3, 3], { seed: 5 }).requiresGrad_();
    const y = rx.conv2dBatchNorm(x, w, { padding: 1 }, bnParams(6, 20), 'relu');
    rx.sum(y).backward();
    expect(w.grad).not.toBeNull();
    expect((await (w.grad as rx.Tensor).data()).some((v) => v !== 0)).toBe(true);
  });

  test('bad input: ResnextErrors naming the op and the argument', () => {
    const x = rx.randn([1, 4, 5, 5]);
    const w = rx.randn([6, 4, 3, 3]);
    const bn = bnParams(6, 30);
    const code = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        expect(e).toBeInstanceOf(rx.ResnextError);
        return [(e as rx.ResnextError).code, (e as Error).message];
      }
      throw new Error('no error');
    };
    expect(code(() => rx.conv2dBatchNorm(x, w, {}, { ...bn, training: true }))).toEqual(['ERR_ARG', expect.stringMatching(/batchNorm2d.*training/)]);
    expect(code(() => rx.conv2dBatchNorm(x, w, {}, bnParams(5, 1)))).toEqual(['ERR_SHAPE', expect.stringMatching(/batchNorm2d.*weight/)]);
    expect(code(() => rx.conv2dBatchNorm(x, w, {}, bn, 'addRelu', null))).toEqual([expect.any(String), expect.stringMatching(/batchNormAddReLU.*residual/)]);
    expect(code(() => rx.conv2dBatchNorm(x, w, {}, bn, 'addRelu', rx.zeros([1, 6, 2, 2])))).toEqual(['ERR_SHAPE', expect.stringMatching(/residual/)]);
    expect(code(() => rx.conv2dBatchNorm(x, rx.randn([6, 3, 3, 3]), {}, bn))).toEqual([expect.any(String), expect.stringMatching(/conv2d/)]);
    expect(code(() => rx.conv2dBatchNorm(x, w, {}, bn, 'gelu' as never))).toEqual(['ERR_ARG', expect.stringMatching(/act/)]);
  });

  test('zero-size shapes fall back to the two ops (no input channels: the output is the shift)', async () => {
    const bn = bnParams(3, 40);
    const y = rx.conv2dBatchNorm(rx.zeros([2, 0, 4, 4]), rx.zeros([3, 0, 1, 1]), {}, bn, 'none');
    const want = rx.batchNorm2d(rx.zeros([2, 3, 4, 4]), bn);
    close(await y.data() as Float32Array, await want.data() as Float32Array, 1e-7);
    expect(rx.conv2dBatchNorm(rx.zeros([0, 4, 4, 4]), rx.zeros([3, 4, 1, 1]), {}, bn).shape).toEqual([0, 3, 4, 4]);
  });
});

describe('models in eval mode take the fused path and give the taped result', () => {
  test('resnext29 (CIFAR) and a small torchvision-layout ResNeXt', async () => {
    const models = [
      rx.models.resnext29({ cardinality: 4, width: 4, stemChannels: 16, stageChannels: [32, 64, 128], blocksPerStage: 1, numClasses: 10, inChannels: 1 }),
      rx.models.resnext({ layers: [1, 1, 1, 1], groups: 8, widthPerGroup: 4, numClasses: 10 }),
    ];
    const inputs = [rx.randn([2, 1, 28, 28], { seed: 7 }), rx.randn([2, 3, 64, 64], { seed: 8 })];
    for (let i = 0; i < models.length; i++) {
      const m = models[i];
      // Non-trivial running statistics, so the folding is exercised.
      m.train();
      rx.noGrad(() => m.forward(inputs[i]).dispose());
      m.eval();
      const spy = jest.spyOn(native, 'conv2dBnEval');
      const taped = m.forward(inputs[i]); // parameters require grad: conv2d + batch norm ops
      expect(spy).not.toHaveBeenCalled();
      const fused = rx.noGrad(() => m.forward(inputs[i]));
      // every conv is followed by a batch norm in these models: all of them fused
      const convs = [...m.namedModules()].filter(([, c]) => c instanceof rx.nn.Conv2d).length;
      expect(spy).toHaveBeenCalledTimes(convs);
      spy.mockRestore();
      close(await fused.data() as Float32Array, await taped.data() as Float32Array, 1e-5);
    }
  });
});

describe('conv2dBatchNorm under hostile input', () => {
  test('random shapes, arguments and junk: results or ResnextErrors, never a crash', () => {
    let s = 12345;
    const rnd = (n: number) => {
      s = (s * 1103515245 + 12345) >>> 0;
      return (s >>> 16) % n;
    };
    const dims = [0, 1, 2, 3, 5, 8, -1, 2 ** 31, 1e9];
    const pick = <T>(a: T[]): T => a[rnd(a.length)];
    let ok = 0;
    let refused = 0;
    for (let i = 0; i < 300; i++) {
      try {
        rx.tidy(() => {
          const small = () => pick([1, 2, 3, 4, 6, 0]);
          const C = small(), K = small(), G = pick([1, 1, 1, 2, 3, 0, -1]);
          const make = (shape: number[]) => (shape.every((d) => d >= 0 && d < 64) ? rx.randn(shape, { seed: i }) : rx.zeros(shape));
          const x = make([small(), C, small() + 1, small() + 1]);
          const w = make([K, G > 0 && C % G === 0 ? C / G : small(), pick([1, 3, 5]), pick([1, 3])]);
          const hostile = rnd(2) === 0; // half the cases are valid calls, half have one bad part
          const bad = (v: unknown, junk: unknown[]) => (hostile && rnd(4) === 0 ? pick(junk) : v);
          const k = bad(K, dims) as number;
          const bn = {
            weight: make([k >= 0 && k < 64 ? k : 1]), bias: make([K]), runningMean: make([K]),
            runningVar: rx.rand([K >= 0 ? K : 1], { low: 0.1, high: 2 }),
            eps: bad(1e-5, [0, -1, Number.NaN, 'x']) as number,
          };
          const act = bad(pick(['none', 'relu', 'addRelu']), ['bogus', '', null]) as 'none';
          const conv = { stride: bad(pick([1, 2]), [0, -1, 1.5]), padding: bad(pick([0, 1]), [-1, 1e9]), groups: G } as rx.Conv2dOptions;
          const probe = rx.noGrad(() => {
            try {
              return rx.conv2d(x, w, conv).shape;
            } catch {
              return null;
            }
          });
          const residual = hostile && rnd(3) === 0 ? make([x.shape[0], K, small() + 1, small() + 1]) : probe ? make([...probe]) : null;
          const y = rx.conv2dBatchNorm(x, w, conv, bn, act, residual);
          y.dataSync();
        });
        ok++;
      } catch (e) {
        expect(e).toBeInstanceOf(rx.ResnextError);
        if (process.env.RX_DEBUG_FUZZ) console.log((e as Error).message);
        refused++;
      }
    }
    expect(ok).toBeGreaterThan(5);
    expect(refused).toBeGreaterThan(50);
  });
});
