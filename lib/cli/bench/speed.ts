/**
 * Training and inference throughput of one model on random data that stays on the device (as
 * in the PyTorch anchor script): a training step is forward + cross-entropy + backward + SGD
 * (momentum 0.9, weight decay) + zero-grad, timed from its start until its loss has been
 * computed; an inference step is an eval-mode forward without gradients, timed until its
 * logits are ready. Warm-up steps run first and are not timed; each timed step is timed on
 * its own, and we report the median with the min and max.
 *
 * Peak memory: the native core counts the bytes held by live tensors per device, and its peak
 * counter is process-wide and never resets. We sample the live bytes after every conv/linear
 * of the forward (layerHooks), after every node of the backward pass (each recorded node's
 * backward is wrapped for the step), after backward and after the SGD update, and take the
 * maximum over the warm-up steps (peakMemBytes: the same method for every model). memory()
 * drains the CPU queue, so a sample counts the tensors the step needs at that point; a
 * free-running step can hold more for a while, because queued kernels keep tensors that JS
 * already disposed (measured: ResNeXt-50 32x4d, 64x64, batch 4 on the CPU, sampled 323 MiB,
 * process peak 328-374 MiB). When the
 * process-wide peak rose during this model's steps, that peak is this model's exact peak and
 * is reported as well (peakMemExactBytes, else null). Both are absolute: weights, gradients,
 * momentum, the input batch and activations (the bench holds nothing else on the device),
 * comparable to PyTorch's max_memory_allocated.
 */
import { noGrad } from '../../autograd/engine';
import { conv2d, crossEntropy, linear } from '../../ops/nn';
import { cast } from '../../ops/shape';
import { Conv2d, Linear, layerHooks } from '../../nn/layers';
import type { Module } from '../../nn/module';
import { SGD } from '../../optim/sgd';
import { randn, tensor } from '../../tensor/create';
import { type Device, type GradNode, keep, memory, synchronize, type Tensor, tidy } from '../../tensor/tensor';
import { type Spread, spread } from './stats';

export type Precision = 'fp32' | 'bf16';

export interface StepTiming {
  /** Milliseconds per step. */
  ms: Spread;
  /** Images per second: batch / ms (median from the median step; min from the slowest step). */
  imgPerSec: Spread;
  /** Every timed step in ms, in order. */
  samplesMs: number[];
}

export interface TrainResult extends StepTiming {
  /** Sampled peak of live bytes on the device during the steps (see the file comment). */
  peakMemBytes: number;
  /** The exact peak when this model raised the process-wide peak, else null. */
  peakMemExactBytes: number | null;
  /** Live bytes before a step once warm: weights, buffers and momentum. */
  stateBytes: number;
}

export interface SpeedOptions {
  device: Device;
  precision: Precision;
  batch: number;
  size: number;
  inChannels: number;
  numClasses: number;
  reps: number;
  warmup: number;
  weightDecay?: number;
}

const now = () => performance.now();

function toTiming(ms: number[], batch: number): StepTiming {
  const s = spread(ms);
  return { ms: s, imgPerSec: { median: (1000 * batch) / s.median, min: (1000 * batch) / s.max, max: (1000 * batch) / s.min, n: s.n }, samplesMs: ms };
}

/**
 * bf16 mixed precision for the benchmark (design.md section 2): convolutions and linear layers
 * run in bfloat16 on bf16-cast copies of the fp32 master weights (the cast has a gradient, so
 * the weights' gradients and the SGD update stay fp32); batch norm takes bf16 activations with
 * fp32 parameters and statistics; the loss is computed in fp32. It overrides the forward of
 * this model's Conv2d and Linear instances only. CUDA only (the CPU backend computes in fp32).
 */
export function autocastBf16(model: Module): void {
  for (const [, m] of model.namedModules()) {
    if (m instanceof Conv2d) {
      m.forward = (x: Tensor) => {
        const y = conv2d(x, cast(m.weight, 'bfloat16'), {
          stride: m.stride, padding: m.padding, groups: m.groups, bias: m.bias ? cast(m.bias, 'bfloat16') : null,
        });
        layerHooks.onCompute?.(m, x, y);
        return y;
      };
    } else if (m instanceof Linear) {
      m.forward = (x: Tensor) => {
        const y = linear(x, cast(m.weight, 'bfloat16'), m.bias ? cast(m.bias, 'bfloat16') : null);
        layerHooks.onCompute?.(m, x, y);
        return y;
      };
    }
  }
}

function inputs(o: SpeedOptions, batch: number): { x: Tensor; y: Tensor } {
  return tidy(() => {
    let x = randn([batch, o.inChannels, o.size, o.size], { device: o.device });
    if (o.precision === 'bf16') x = cast(x, 'bfloat16');
    const y = tensor(Int32Array.from({ length: batch }, (_, i) => (i * 7) % o.numClasses), [batch], { dtype: 'int32', device: o.device });
    return { x: keep(x), y: keep(y) };
  });
}

/** Wraps the backward of every node recorded for `root` so that `sample` runs after each. */
function sampleDuringBackward(root: Tensor, sample: () => void): void {
  const seen = new Set<GradNode>();
  const stack: (GradNode | null)[] = [root.gradFn];
  while (stack.length) {
    const n = stack.pop();
    if (!n || seen.has(n)) continue;
    seen.add(n);
    const orig = n.backward;
    n.backward = (g: Tensor) => {
      const r = orig.call(n, g);
      sample();
      return r;
    };
    for (const t of n.inputs) if (t?.gradFn) stack.push(t.gradFn);
  }
}

/** Training throughput and peak memory (see the file comment). The model is left in train mode. */
export async function benchTrain(model: Module, o: SpeedOptions): Promise<TrainResult> {
  model.train();
  const opt = new SGD(model.parameters(), { lr: 1e-3, momentum: 0.9, weightDecay: o.weightDecay ?? 1e-4 });
  const { x, y } = inputs(o, o.batch);
  let sampled = 0;
  const sample = () => {
    const b = memory(o.device).bytes;
    if (b > sampled) sampled = b;
  };
  const prevHook = layerHooks.onCompute;
  let sampling = false;
  layerHooks.onCompute = (m, a, b) => {
    prevHook?.(m, a, b);
    if (sampling) sample();
  };
  synchronize(o.device);
  const peakBefore = memory(o.device).peakBytes;
  let stateBytes = 0;
  const ms: number[] = [];
  // Memory is sampled in the warm-up steps only (or in one extra step after the timed ones when
  // there is no warm-up), so the timed steps carry no instrumentation.
  const total = o.warmup + o.reps + (o.warmup === 0 ? 1 : 0);
  try {
    for (let i = 0; i < total; i++) {
      const timed = i >= o.warmup && i < o.warmup + o.reps;
      sampling = !timed;
      if (i === o.warmup) stateBytes = memory(o.device).bytes;
      const t0 = now();
      const loss = tidy(() => {
        let logits = model.forward(x);
        if (logits.dtype !== 'float32') logits = cast(logits, 'float32');
        const l = crossEntropy(logits, y);
        if (sampling) {
          sample();
          sampleDuringBackward(l, sample);
        }
        l.backward();
        if (sampling) sample();
        opt.step();
        if (sampling) sample();
        opt.zeroGrad();
        return keep(l);
      });
      const v = (await loss.data())[0];
      const t1 = now();
      loss.dispose();
      if (!Number.isFinite(v)) throw new Error(`bench: the training loss became ${v} (step ${i + 1})`);
      if (timed) ms.push(t1 - t0);
    }
    synchronize(o.device);
  } finally {
    layerHooks.onCompute = prevHook;
    x.dispose();
    y.dispose();
    opt.dispose();
  }
  const peakAfter = memory(o.device).peakBytes;
  return { ...toTiming(ms, o.batch), peakMemBytes: sampled, peakMemExactBytes: peakAfter > peakBefore ? peakAfter : null, stateBytes };
}

/** Inference throughput: eval mode, no gradients. The model is put back in train mode. */
export async function benchInfer(model: Module, o: SpeedOptions): Promise<StepTiming> {
  model.eval();
  const { x, y } = inputs(o, o.batch);
  y.dispose();
  const ms: number[] = [];
  try {
    for (let i = 0; i < o.warmup + o.reps; i++) {
      const t0 = now();
      const out = tidy(() => noGrad(() => model.forward(x)));
      await out.data();
      const t1 = now();
      out.dispose();
      if (i >= o.warmup) ms.push(t1 - t0);
    }
  } finally {
    x.dispose();
    model.train();
  }
  return toTiming(ms, o.batch);
}
