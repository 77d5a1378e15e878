/**
 * io.exportOnnx: the exported graph runs in onnxruntime-node (CPU provider) and gives our
 * eval-mode logits within 1e-4 relative (max |ours - ort| / max |ort|) at batch sizes 1 and 4,
 * for the tiny ResNeXt of the issue (BN statistics randomised, so folding is exercised) with BN
 * folded and unfolded, and for the full resnext50_32x4d. The file's structure (opset, symbolic
 * batch dimension, operators, Conv groups) is read back with protobufjs.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import * as protobuf from 'protobufjs';
import * as rx from '../lib';
import { ONNX_PROTO } from '../lib/io/onnx-schema';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rx-onnx-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Random BN affine parameters and running statistics (eval mode then differs from identity). */
function randomiseBatchNorm(model: rx.nn.Module): void {
  rx.noGrad(() => {
    for (const [, m] of model.namedModules()) {
      if (!(m instanceof rx.nn.BatchNorm2d)) continue;
      const n = m.numFeatures;
      rx.tidy(() => {
        m.weight.copy_(rx.rand([n], { low: 0.5, high: 1.5 }));
        m.bias.copy_(rx.randn([n], { std: 0.2 }));
        m.runningMean.copy_(rx.randn([n], { std: 0.2 }));
        m.runningVar.copy_(rx.rand([n], { low: 0.5, high: 2 }));
      });
    }
  });
}

function relDiff(ours: ArrayLike<number>, theirs: ArrayLike<number>): number {
  expect(ours.length).toBe(theirs.length);
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < ours.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(ours[i] - theirs[i]));
    maxRef = Math.max(maxRef, Math.abs(theirs[i]));
  }
  return maxDiff / maxRef;
}

/**
 * Our logits and onnxruntime's for random batches of each size in `batches`. onnxruntime runs in
 * a child process (test/helpers/ort-run.js): its tensors fail instanceof checks inside jest's vm.
 */
function compare(model: rx.nn.Module, file: string, batches: number[], chw: number[]): { n: number; rel: number; ortMs: number }[] {
  const jobs: { input: string; dims: number[]; output: string }[] = [];
  const ours: Float32Array[] = [];
  for (const n of batches) {
    const x = rx.randn([n, ...chw]);
    const input = path.join(tmp, `in-${n}.bin`);
    fs.writeFileSync(input, x.dataSync() as Float32Array);
    ours.push(rx.tidy(() => rx.noGrad(() => model.forward(x).dataSync() as Float32Array)));
    x.dispose();
    jobs.push({ input, dims: [n, ...chw], output: path.join(tmp, `out-${n}.bin`) });
  }
  const jobsFile = path.join(tmp, 'jobs.json');
  fs.writeFileSync(jobsFile, JSON.stringify(jobs));
  const lines = execFileSync(process.execPath, [path.join(__dirname, 'helpers', 'ort-run.js'), file, jobsFile], { encoding: 'utf8' }).trim().split('\n');
  return batches.map((n, i) => {
    const r = JSON.parse(lines[i]) as { dims: number[]; ms: number };
    expect(r.dims).toEqual([n, ours[i].length / n]);
    const b = fs.readFileSync(jobs[i].output);
    return { n, rel: relDiff(ours[i], new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4)), ortMs: r.ms };
  });
}

interface Decoded {
  ir_version: number;
  opset_import: { domain?: string; version: number }[];
  graph: {
    node: { op_type: string; attribute: { name: string; i?: number }[] }[];
    initializer: { name: string; dims: number[] }[];
    input: { name: string; type: { tensor_type: { shape: { dim: { dim_value?: number; dim_param?: string }[] } } } }[];
    output: { name: string; type: { tensor_type: { shape: { dim: { dim_value?: number; dim_param?: string }[] } } } }[];
  };
}
function decode(file: string): Decoded {
  const type = protobuf.parse(ONNX_PROTO, { keepCase: true }).root.lookupType('onnx.ModelProto');
  return type.toObject(type.decode(fs.readFileSync(file)), { longs: Number, defaults: false }) as unknown as Decoded;
}

const dimsOf = (v: Decoded['graph']['input'][number]) => v.type.tensor_type.shape.dim.map((d) => d.dim_param ?? d.dim_value);

describe('tiny ResNeXt ([1,1,1,1], 8 groups of width 4, 10 classes)', () => {
  let model: rx.models.ResNet;
  const chw = [3, 64, 64];
  beforeAll(() => {
    rx.manualSeed(7);
    model = rx.models.resnext({ layers: [1, 1, 1, 1], groups: 8, widthPerGroup: 4, numClasses: 10 });
    randomiseBatchNorm(model);
    model.eval();
  });
  afterAll(() => model.dispose());

  test.each([true, false])('foldBatchNorm %s: onnxruntime matches within 1e-4 relative at batch 1 and 4', async (fold) => {
    const file = path.join(tmp, `tiny-${fold}.onnx`);
    const info = await rx.io.exportOnnx(model, file, { inputShape: chw, foldBatchNorm: fold });
    expect(info.opset).toBe(17);
    expect(info.inputShape).toEqual(['batch', ...chw]);
    expect(info.outputShape).toEqual(['batch', 10]);
    for (const { n, rel } of compare(model, file, [1, 4], chw)) {
      process.stdout.write(`tiny fold=${fold} batch ${n}: max relative difference ${rel.toExponential(2)}\n`);
      expect(rel).toBeLessThan(1e-4);
    }
    // Any spatial size that the file fixes is what it was exported for; the batch is free.
    const d = decode(file);
    expect(d.opset_import).toEqual([{ domain: '', version: 17 }]);
    expect(d.ir_version).toBe(8);
    expect(dimsOf(d.graph.input[0])).toEqual(['batch', 3, 64, 64]);
    expect(dimsOf(d.graph.output[0])).toEqual(['batch', 10]);
    const ops = new Set(d.graph.node.map((n) => n.op_type));
    const expected = ['Conv', 'Relu', 'Add', 'MaxPool', 'GlobalAveragePool', 'Flatten', 'Gemm', ...(fold ? [] : ['BatchNormalization'])];
    expect([...ops].sort()).toEqual(expected.sort());
    const groups = d.graph.node.filter((n) => n.op_type === 'Conv').map((n) => n.attribute.find((a) => a.name === 'group')?.i);
    expect(groups.filter((g) => g === 8)).toHaveLength(4); // the grouped 3x3 of each block
    // Every parameter value is inside the file, none shared or missing.
    const stored = d.graph.initializer.reduce((s, t) => s + t.dims.reduce((a, b) => a * b, 1), 0);
    expect(stored).toBe(info.parameters);
    if (!fold) expect(stored).toBe(rx.models.countParams(model).total + bnStats(model));
  });

  test('a fixed batch size when dynamicBatch is false', async () => {
    const file = path.join(tmp, 'tiny-fixed.onnx');
    await rx.io.exportOnnx(model, file, { inputShape: [2, ...chw], dynamicBatch: false });
    expect(dimsOf(decode(file).graph.input[0])).toEqual([2, 3, 64, 64]);
  });

  test('bad arguments and unwritable paths are ResnextErrors', async () => {
    await expect(rx.io.exportOnnx({} as rx.nn.Module, path.join(tmp, 'x.onnx'))).rejects.toMatchObject({ code: 'ERR_ARG' });
    await expect(rx.io.exportOnnx(model, path.join(tmp, 'x.onnx'), { inputShape: [3, 0, 64] })).rejects.toMatchObject({ code: 'ERR_ARG' });
    await expect(rx.io.exportOnnx(model, path.join(tmp, 'x.onnx'), { inputShape: [1, 64, 64] })).rejects.toMatchObject({ code: 'ERR_SHAPE' });
    await expect(rx.io.exportOnnx(model, path.join(tmp, 'no-such-dir', 'x.onnx'))).rejects.toMatchObject({ code: 'ERR_IO' });
    expect(fs.existsSync(path.join(tmp, 'x.onnx'))).toBe(false);
  });
});

/** Running means and variances: stored in the file only when BN is not folded. */
function bnStats(model: rx.nn.Module): number {
  let n = 0;
  for (const [, m] of model.namedModules()) if (m instanceof rx.nn.BatchNorm2d) n += 2 * m.numFeatures;
  return n;
}

test('CIFAR ResNeXt-29 (no max pool, shortcut projections) exports and matches too', async () => {
  rx.manualSeed(5);
  const m = rx.models.resnext29({ cardinality: 4, width: 4, stemChannels: 16, stageChannels: [64, 128, 256], blocksPerStage: 1, numClasses: 10 });
  try {
    randomiseBatchNorm(m);
    m.eval();
    const file = path.join(tmp, 'resnext29.onnx');
    const info = await rx.io.exportOnnx(m, file, { inputShape: [3, 32, 32] });
    expect(info.ops.MaxPool).toBeUndefined();
    for (const { rel } of compare(m, file, [1, 4], [3, 32, 32])) expect(rel).toBeLessThan(1e-4);
  } finally {
    m.dispose();
  }
});

describe('resnext50_32x4d', () => {
  test('onnxruntime matches our logits within 1e-4 relative at batch 1 and 4 (224x224)', async () => {
    const t0 = Date.now();
    rx.manualSeed(13);
    const model = rx.models.resnext50_32x4d();
    try {
      randomiseBatchNorm(model);
      model.eval();
      const file = path.join(tmp, 'resnext50.onnx');
      const info = await rx.io.exportOnnx(model, file);
      const tExport = Date.now();
      // Folding turns each BN's weight and bias (2 per channel) into one conv bias per channel.
      expect(info.parameters).toBe(25_028_904 - bnStats(model) / 2);
      const results = compare(model, file, [1, 4], [3, 224, 224]);
      for (const { n, rel, ortMs } of results) {
        process.stdout.write(`resnext50_32x4d batch ${n}: max relative difference ${rel.toExponential(2)} (onnxruntime ${ortMs.toFixed(0)} ms)\n`);
        expect(rel).toBeLessThan(1e-4);
      }
      process.stdout.write(`resnext50_32x4d: build+export ${((tExport - t0) / 1000).toFixed(1)} s, ${(info.bytes / 1e6).toFixed(1)} MB; compare ${((Date.now() - tExport) / 1000).toFixed(1)} s\n`);
    } finally {
      model.dispose();
    }
  });
});
