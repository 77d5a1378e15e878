/** Bad input gives a ResnextError with a stable code and a message naming op, argument, expected and received. */
import * as rx from '../lib';
import { native } from '../lib/native/addon';

function expectError(fn: () => unknown, code: string, ...parts: RegExp[]): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(rx.ResnextError);
  const e = err as rx.ResnextError;
  expect(e.code).toBe(code);
  for (const p of parts) expect(e.message).toMatch(p);
}

describe('errors', () => {
  const x = rx.randn([2, 4, 5, 5]);

  test('conv with mismatched channels', () => {
    expectError(() => rx.conv2d(x, rx.randn([8, 3, 3, 3])), 'ERR_SHAPE', /conv2d/, /weight/, /expected \[K, 4, R, S\]/, /received \[8, 3, 3, 3\]/);
  });

  test('groups that do not divide the channels', () => {
    expectError(() => rx.conv2d(x, rx.randn([6, 2, 3, 3]), { groups: 3 }), 'ERR_ARG', /conv2d/, /groups/, /divisor of the input channels \(4\)/, /received 3/);
    expectError(() => rx.conv2d(x, rx.randn([6, 1, 3, 3]), { groups: 4 }), 'ERR_ARG', /divisor of the output channels \(6\)/);
    expectError(() => rx.conv2d(x, rx.randn([4, 4, 3, 3]), { groups: 0 }), 'ERR_ARG', /groups/, /integer >= 1/, /received 0/);
  });

  test('kernel larger than the padded input', () => {
    expectError(() => rx.conv2d(rx.randn([1, 1, 2, 2]), rx.randn([1, 1, 5, 5])), 'ERR_SHAPE', /input height/);
  });

  test('a disposed tensor', () => {
    const t = rx.randn([2, 2]);
    t.dispose();
    expectError(() => rx.relu(t), 'ERR_DISPOSED', /relu/, /x/, /disposed/);
    expectError(() => t.dataSync(), 'ERR_DISPOSED');
    expect(() => t.dispose()).not.toThrow();
  });

  test('wrong dtypes', () => {
    const d = rx.randn([2, 4, 5, 5], { dtype: 'float64' });
    expectError(() => rx.conv2d(d, rx.randn([4, 4, 3, 3])), 'ERR_DTYPE', /conv2d/, /weight/, /float64/, /float32/);
    expectError(() => rx.add(rx.ones([2]), rx.ones([2], { dtype: 'float64' })), 'ERR_DTYPE', /add/);
    expectError(() => rx.relu(rx.zeros([2], { dtype: 'int32' })), 'ERR_DTYPE', /relu/, /int32/);
    expectError(() => rx.zeros([2], { dtype: 'float16' as never }), 'ERR_DTYPE', /"float16"/);
    expectError(() => rx.crossEntropy(rx.randn([2, 3]), rx.randn([2])), 'ERR_DTYPE', /targets/, /int32/);
    expectError(() => rx.zeros([2], { dtype: 'int32', requiresGrad: true }), 'ERR_DTYPE', /requiresGrad/);
  });

  test('negative or non-integer sizes', () => {
    expectError(() => rx.zeros([2, -1]), 'ERR_SHAPE', /zeros|full/, /non-negative integers/, /-1/);
    expectError(() => rx.zeros([1.5]), 'ERR_SHAPE', /non-negative integers/, /1.5/);
    expectError(() => rx.tensor([1, 2, 3], [2, 2]), 'ERR_SHAPE', /4 values/, /3 values/);
    expectError(() => rx.reshape(rx.zeros([6]), [4, -1]), 'ERR_SHAPE', /reshape/, /6 elements/);
    expectError(() => rx.conv2d(x, rx.randn([4, 4, 3, 3]), { stride: 1.5 }), 'ERR_ARG', /stride/, /1.5/);
    expectError(() => rx.maxPool2d(x, 0), 'ERR_ARG', /maxPool2d/, /kernelSize/);
  });

  test('broadcasting and shape mismatches', () => {
    expectError(() => rx.add(rx.zeros([2, 3]), rx.zeros([4])), 'ERR_SHAPE', /add/, /\[2, 3\] and \[4\]/);
    expectError(() => rx.linear(rx.zeros([2, 3]), rx.zeros([4, 5])), 'ERR_SHAPE', /linear/, /weight/);
    expectError(() => rx.batchNorm2d(x, { weight: rx.ones([3]), bias: rx.zeros([4]), runningMean: rx.zeros([4]), runningVar: rx.ones([4]) }), 'ERR_SHAPE', /batchNorm2d/, /weight/, /\[4\]/, /\[3\]/);
    expectError(() => rx.randn([2, 3]).backward(), 'ERR_ARG', /backward/);
  });

  test('targets out of range and bad options', () => {
    expectError(() => rx.crossEntropy(rx.randn([2, 3]), [0, 3]), 'ERR_ARG', /crossEntropy/, /targets\[1\]/, /\[0, 2\]/, /received 3/);
    expectError(() => rx.crossEntropy(rx.randn([2, 3]), [0, 1], { labelSmoothing: 2 }), 'ERR_ARG', /labelSmoothing/);
    expectError(() => rx.topk(rx.randn([2, 3]), 4), 'ERR_ARG', /topk/, /k/);
    expectError(() => rx.sgdStep(rx.zeros([2]), rx.zeros([2]), { lr: 0.1, momentum: 0.9 }), 'ERR_ARG', /momentumBuffer/);
    expectError(() => rx.conv2d('nope' as never, x), 'ERR_ARG', /conv2d/, /input/, /a Tensor/, /"nope"/);
    expectError(() => rx.zeros([2], { device: 'tpu' as never }), 'ERR_DEVICE', /device/, /"tpu"/);
    expectError(() => rx.tidy(() => Promise.resolve(1)), 'ERR_ARG', /synchronous/);
  });

  test('asking for cuda without the CUDA backend gives ERR_DEVICE naming what is missing, CPU unaffected', () => {
    expectError(() => rx.zeros([2], { device: 'cuda' }), 'ERR_DEVICE', /cuda/i);
    expect(Array.from(rx.ones([2]).dataSync())).toEqual([1, 1]);
  });

  test('unusual JS values are ResnextErrors, not TypeErrors, stack overflows or V8 out-of-memory', async () => {
    // An object with Tensor's prototype whose constructor never ran.
    expectError(() => rx.relu(Object.create(rx.Tensor.prototype)), 'ERR_ARG', /constructor never ran/);
    expectError(() => rx.tensor(new BigInt64Array(4) as unknown as number[]), 'ERR_ARG', /tensor/, /data/, /BigInt64Array/);
    expectError(() => rx.tensor(new DataView(new ArrayBuffer(8)) as unknown as number[]), 'ERR_ARG', /DataView/);
    let deep: unknown = [1];
    for (let i = 0; i < 100_000; i++) deep = [deep];
    expectError(() => rx.tensor(deep as number[]), 'ERR_SHAPE', /nested at most 64 deep/);
    // A SharedArrayBuffer's typed array is read like any other.
    const shared = new Float32Array(new SharedArrayBuffer(16));
    shared.set([1, 2, 3, 4]);
    expect(Array.from(rx.tensor(shared).dataSync())).toEqual([1, 2, 3, 4]);
    // array() of a shape that needs a billion nested JS arrays.
    await expect(rx.zeros([1e9, 0]).array()).rejects.toMatchObject({ code: 'ERR_OOM', message: expect.stringMatching(/array/) });
    // bfloat16 is stored on the CPU but not computed there: refused at the call, not at the next sync.
    expectError(() => rx.randn([2, 2], { dtype: 'bfloat16' }), 'ERR_DTYPE', /randn/, /bfloat16 is computed on CUDA only/);
    expectError(() => rx.relu(rx.cast(rx.ones([2]), 'bfloat16')), 'ERR_DTYPE', /relu/, /bfloat16/);
  });

  test('the process survives a burst of bad calls', () => {
    for (let i = 0; i < 200; i++) {
      expect(() => rx.conv2d(x, rx.zeros([1, 1, 1, 1]))).toThrow(rx.ResnextError);
      expect(() => (native.conv2dForward as (...a: unknown[]) => unknown)(null, undefined, 3, 'x', [], {})).toThrow(rx.ResnextError);
    }
  });
});

test('misuse of the public API gives ResnextErrors, not TypeErrors or a stack overflow', () => {
  expectError(() => rx.noGrad(5 as never), 'ERR_ARG', /noGrad/, /fn/, /a function/);
  expectError(() => new rx.optim.SGD(5 as never, { lr: 0.1 }), 'ERR_ARG', /SGD/, /params/);
  expectError(() => new rx.optim.SGD([5] as never, { lr: 0.1 }), 'ERR_ARG', /SGD/, /params\[0\]/, /a Tensor/);
  expectError(() => rx.zerosLike(5 as never), 'ERR_ARG', /zerosLike/);
  expectError(() => rx.onesLike(undefined as never), 'ERR_ARG', /onesLike/);
  expectError(() => rx.clone(undefined as never), 'ERR_ARG', /clone/, /received undefined/);
  for (const f of [rx.add, rx.sub, rx.mul, rx.div]) expectError(() => f(1, 2), 'ERR_ARG', /a Tensor/);
  expectError(() => rx.models.resnext29({ cardinality: 4, width: 4, blocksPerStage: 1e5 }), 'ERR_ARG', /resnext29/, /blocksPerStage/, /\[1, 1024\]/);
  expectError(() => rx.models.resnext29({ cardinality: 4, width: 4, blocksPerStage: 2 ** 31 }), 'ERR_ARG', /blocksPerStage/);
  expectError(() => rx.models.resnext({ layers: [1, 1, 1e6, 1], groups: 8, widthPerGroup: 4 }), 'ERR_ARG', /layers/);
});

test('every export of the raw addon refuses arguments of the wrong JS type with a ResnextError', () => {
  // Driven by the bind list itself, so a new export is covered without editing this test.
  const wrong: Record<string, unknown> = {
    TensorHandle: {}, 'TensorHandle | null': 'x', number: 'x', 'number[]': [1.5], boolean: 1, string: 7,
    DTypeName: 'float16', DeviceName: 'tpu',
  };
  const addon = native as unknown as Record<string, (...a: unknown[]) => unknown>;
  const one = rx.zeros([1]);
  let checked = 0;
  for (const sig of native.signatures) {
    // loadCuda would fix the process-wide CUDA load result; setErrorClass would replace the class.
    if (sig.name === 'loadCuda' || sig.name === 'setErrorClass' || sig.params.length === 0) continue;
    for (let i = 0; i < sig.params.length; i++) {
      const args: unknown[] = sig.params.map(([, t]) => (t === 'TensorHandle' || t === 'TensorHandle | null' ? one.handle : undefined));
      args[i] = wrong[sig.params[i][1]] ?? 42; // structs and enums: a number is never one
      let err: unknown;
      try {
        addon[sig.name](...args);
      } catch (e) {
        err = e;
      }
      expect({ call: `${sig.name} ${sig.params[i][0]}`, err }).toEqual({ call: `${sig.name} ${sig.params[i][0]}`, err: expect.any(rx.ResnextError) });
      expect((err as Error).message).toMatch(new RegExp(`^${sig.name}|^tensor|^data`));
      checked++;
    }
  }
  one.dispose();
  expect(checked).toBeGreaterThan(80);
});

test('an error found by a queued kernel surfaces at the next sync, once, and the queue keeps working', () => {
  const logits = rx.randn([2, 3]);
  const bad = rx.tensor(Int32Array.from([0, 7]), [2]);
  const loss = rx.crossEntropy(logits, bad); // queued: the kernel finds the bad index later
  expect(() => loss.dataSync()).toThrow(expect.objectContaining({ code: 'ERR_ARG', message: expect.stringMatching(/targets\[1\].*received 7/) }));
  expect(Array.from(rx.relu(rx.tensor([-1, 2])).dataSync())).toEqual([0, 2]);
  for (const t of [logits, bad, loss]) t.dispose();
});
