/**
 * ONNX export of the ResNet / ResNeXt family (torchvision layout) and CIFAR ResNeXt-29: the
 * eval-mode graph, with every BatchNorm folded into the convolution before it (or kept as
 * BatchNormalization with foldBatchNorm: false), as standard ONNX operators of opset 17:
 *
 *   Conv (group = cardinality) -> Relu, Add, MaxPool, GlobalAveragePool, Flatten, Gemm
 *
 * The batch dimension is symbolic ("batch"), so one file runs any batch size; weights sit inside
 * the file as initializers (raw little-endian float32). The graph is described as ONNX messages
 * (lib/io/onnx-schema.ts) and serialised by protobufjs, then written atomically.
 *
 * Folding: in eval mode bn(conv(x)) = s * (W*x + b - mean) + beta with s = gamma / sqrt(var + eps)
 * per output channel, i.e. a convolution with weights s*W and bias s*(b - mean) + beta. The
 * product is formed in float64 and rounded once to float32.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import * as fs from 'node:fs';
import * as protobuf from 'protobufjs';
import { describe, fail, ResnextError } from '../native/errors';
import { BatchNorm2d, Conv2d, Linear, MaxPool2d, Sequential } from '../nn/layers';
import type { Module } from '../nn/module';
import type { Tensor } from '../tensor/tensor';
import { writeFileAtomic } from './atomic';
import { ATTR_FLOAT, ATTR_INT, ATTR_INTS, ONNX_FLOAT, ONNX_PROTO } from './onnx-schema';

/** The ONNX operator set the exported graph uses, and the IR version that goes with it. */
export const ONNX_OPSET = 17;
export const ONNX_IR_VERSION = 8;

export interface OnnxExportOptions {
  /**
   * The input's shape: [C, H, W] or [N, C, H, W] (N is the example batch size; the file's batch
   * dimension is symbolic unless dynamicBatch is false). Default [3, 224, 224].
   */
  inputShape?: number[];
  /** A symbolic batch dimension named "batch" (default true); false fixes it to N (default 1). */
  dynamicBatch?: boolean;
  /** Fold each BatchNorm into the Conv before it (default true); false emits BatchNormalization. */
  foldBatchNorm?: boolean;
  /** The graph's input and output names (default "input" and "logits"). */
  inputName?: string;
  outputName?: string;
  /** Stored as the model's doc_string. */
  docString?: string;
}

/** What the exported graph contains (returned by exportOnnx and encodeOnnx). */
export interface OnnxExportInfo {
  opset: number;
  irVersion: number;
  inputName: string;
  outputName: string;
  /** Input and output shapes; a string is a symbolic dimension. */
  inputShape: (number | string)[];
  outputShape: (number | string)[];
  /** Node count by operator type. */
  ops: Record<string, number>;
  /** Number of weight values stored in the file. */
  parameters: number;
  bytes: number;
}

const OP = 'exportOnnx';

let modelType: protobuf.Type | null = null;
function modelProto(): protobuf.Type {
  if (!modelType) modelType = protobuf.parse(ONNX_PROTO, { keepCase: true }).root.lookupType('onnx.ModelProto');
  return modelType;
}

function packageVersion(): string {
  try {
    // lib/io/onnx.ts (tests) and dist/io/onnx.js (the package) both sit two levels below the root.
    return String(JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')).version);
  } catch {
    return 'unknown';
  }
}

function littleEndianBytes(a: Float32Array): Uint8Array {
  if (os.endianness() === 'LE') return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const out = Buffer.alloc(a.byteLength);
  for (let i = 0; i < a.length; i++) out.writeFloatLE(a[i], 4 * i);
  return out;
}

type Attr = { name: string; type: number; i?: number; f?: number; ints?: number[] };
const intAttr = (name: string, i: number): Attr => ({ name, type: ATTR_INT, i });
const intsAttr = (name: string, ints: number[]): Attr => ({ name, type: ATTR_INTS, ints });
const floatAttr = (name: string, f: number): Attr => ({ name, type: ATTR_FLOAT, f });

/** Collects nodes and initializers; names values after the module path they come from. */
class GraphBuilder {
  readonly nodes: object[] = [];
  readonly initializers: object[] = [];
  readonly ops: Record<string, number> = {};
  parameters = 0;
  private readonly used = new Set<string>();

  constructor(private readonly fold: boolean) {}

  private unique(name: string): string {
    let n = name;
    for (let k = 1; this.used.has(n); k++) n = `${name}_${k}`;
    this.used.add(n);
    return n;
  }

  node(opType: string, inputs: string[], name: string, attribute: Attr[] = [], output?: string): string {
    const nodeName = this.unique(name);
    const out = output ?? nodeName;
    this.nodes.push({ op_type: opType, name: nodeName, input: inputs, output: [out], attribute });
    this.ops[opType] = (this.ops[opType] ?? 0) + 1;
    return out;
  }

  init(name: string, dims: number[], values: Float32Array): string {
    const n = this.unique(name);
    this.initializers.push({ name: n, dims, data_type: ONNX_FLOAT, raw_data: littleEndianBytes(values) });
    this.parameters += values.length;
    return n;
  }

  /** conv (+ bn): a Conv node with the BN folded in, or Conv then BatchNormalization. */
  async convBn(x: string, conv: Conv2d, bn: BatchNorm2d | null, name: string, bnName: string, output?: string): Promise<string> {
    if (!(conv instanceof Conv2d)) fail('ERR_ARG', OP, `${name}`, 'a Conv2d', describe(conv));
    const k = conv.kernelSize;
    const attrs = [
      intsAttr('kernel_shape', [k, k]), intsAttr('strides', [conv.stride, conv.stride]),
      intsAttr('pads', [conv.padding, conv.padding, conv.padding, conv.padding]), intsAttr('dilations', [1, 1]),
      intAttr('group', conv.groups),
    ];
    const wShape = [...conv.weight.shape];
    const w = await host(conv.weight);
    const b = conv.bias ? await host(conv.bias) : null;
    if (!bn || !this.fold) {
      const inputs = [x, this.init(`${name}.weight`, wShape, w)];
      if (b) inputs.push(this.init(`${name}.bias`, [conv.outChannels], b));
      const y = this.node('Conv', inputs, name, attrs, bn ? undefined : output);
      return bn ? this.batchNorm(y, bn, bnName, output) : y;
    }
    if (!(bn instanceof BatchNorm2d) || bn.numFeatures !== conv.outChannels)
      fail('ERR_ARG', OP, `${name} batch norm`, `a BatchNorm2d of ${conv.outChannels} features`, describe(bn));
    const [gamma, beta, mean, variance] = await Promise.all([host(bn.weight), host(bn.bias), host(bn.runningMean), host(bn.runningVar)]);
    const eps = bn.options.eps ?? 1e-5;
    const K = conv.outChannels;
    const per = w.length / K;
    const fw = new Float32Array(w.length);
    const fb = new Float32Array(K);
    for (let c = 0; c < K; c++) {
      const s = gamma[c] / Math.sqrt(variance[c] + eps);
      for (let j = 0; j < per; j++) fw[c * per + j] = w[c * per + j] * s;
      fb[c] = ((b ? b[c] : 0) - mean[c]) * s + beta[c];
    }
    return this.node('Conv', [x, this.init(`${name}.weight`, wShape, fw), this.init(`${name}.bias`, [K], fb)], name, attrs, output);
  }

  async batchNorm(x: string, bn: BatchNorm2d, name: string, output?: string): Promise<string> {
    const C = bn.numFeatures;
    const [gamma, beta, mean, variance] = await Promise.all([host(bn.weight), host(bn.bias), host(bn.runningMean), host(bn.runningVar)]);
    return this.node(
      'BatchNormalization',
      [x, this.init(`${name}.weight`, [C], gamma), this.init(`${name}.bias`, [C], beta), this.init(`${name}.running_mean`, [C], mean), this.init(`${name}.running_var`, [C], variance)],
      name, [floatAttr('epsilon', bn.options.eps ?? 1e-5), floatAttr('momentum', 1 - (bn.options.momentum ?? 0.1))], output,
    );
  }
}

async function host(t: Tensor): Promise<Float32Array> {
  const d = await t.data();
  return d instanceof Float32Array ? d : Float32Array.from(d as ArrayLike<number>);
}

/** A residual block with conv1..3 / bn1..3 and an optional projection shortcut (Bottleneck, CifarBlock). */
interface BlockLike {
  conv1: Conv2d; bn1: BatchNorm2d; conv2: Conv2d; bn2: BatchNorm2d; conv3: Conv2d; bn3: BatchNorm2d;
  downsample?: Sequential | null; shortcut?: Sequential | null;
}
/** ResNet (torchvision layout) or ResNeXt29: a stem, stages of blocks, global pooling and fc. */
interface NetLike {
  conv1: Conv2d; bn1: BatchNorm2d; maxpool?: MaxPool2d; stages: Sequential[]; fc: Linear;
}

function isBlock(m: unknown): m is BlockLike {
  const b = m as BlockLike;
  return !!b && b.conv1 instanceof Conv2d && b.bn1 instanceof BatchNorm2d && b.conv2 instanceof Conv2d && b.bn2 instanceof BatchNorm2d &&
    b.conv3 instanceof Conv2d && b.bn3 instanceof BatchNorm2d;
}

function checkNet(model: unknown): NetLike {
  const m = model as NetLike;
  const ok = !!m && m.conv1 instanceof Conv2d && m.bn1 instanceof BatchNorm2d && m.fc instanceof Linear && Array.isArray(m.stages) &&
    m.stages.every((s) => s instanceof Sequential) && (m.maxpool === undefined || m.maxpool instanceof MaxPool2d);
  if (!ok) fail('ERR_ARG', OP, 'model', 'a ResNet/ResNeXt model (models.resnext, resnext50_32x4d, ..., or resnext29)', describe(model));
  for (const s of m.stages)
    for (let i = 0; i < s.length; i++)
      if (!isBlock(s.at(i))) fail('ERR_ARG', OP, 'model', 'stages of residual blocks (Bottleneck or CifarBlock)', describe(s.at(i)));
  return m;
}

function checkShape(v: unknown, inChannels: number): [number, number, number, number] {
  const s = v ?? [3, 224, 224];
  if (!Array.isArray(s) || (s.length !== 3 && s.length !== 4) || !s.every((d) => Number.isInteger(d) && d >= 1 && d <= 1 << 20))
    fail('ERR_ARG', OP, 'inputShape', '[C, H, W] or [N, C, H, W] of positive integers', describe(v));
  const full = (s.length === 3 ? [1, ...s] : s) as [number, number, number, number];
  if (full[1] !== inChannels) fail('ERR_SHAPE', OP, 'inputShape', `${inChannels} channels (the model's conv1)`, `${full[1]}`);
  return full;
}

function checkName(arg: string, v: unknown, dflt: string): string {
  if (v === undefined) return dflt;
  if (typeof v !== 'string' || !/^[A-Za-z_][A-Za-z0-9_.:/-]*$/.test(v)) fail('ERR_ARG', OP, arg, 'a tensor name like "input"', describe(v));
  return v;
}

const dims = (shape: (number | string)[]) => ({ dim: shape.map((d) => (typeof d === 'string' ? { dim_param: d } : { dim_value: d })) });
const valueInfo = (name: string, shape: (number | string)[]) => ({ name, type: { tensor_type: { elem_type: ONNX_FLOAT, shape: dims(shape) } } });

/** Builds the ONNX file for `model` in memory (see exportOnnx). */
export async function encodeOnnx(model: Module, options: OnnxExportOptions = {}): Promise<{ bytes: Uint8Array; info: OnnxExportInfo }> {
  if (options === null || typeof options !== 'object') fail('ERR_ARG', OP, 'options', 'an object', describe(options));
  const net = checkNet(model);
  const [n, c, h, w] = checkShape(options.inputShape, net.conv1.inChannels);
  const dynamic = options.dynamicBatch ?? true;
  const inputName = checkName('inputName', options.inputName, 'input');
  const outputName = checkName('outputName', options.outputName, 'logits');
  if (inputName === outputName) fail('ERR_ARG', OP, 'outputName', `a name other than the input's ("${inputName}")`, describe(outputName));
  const batch: number | string = dynamic ? 'batch' : n;
  const g = new GraphBuilder(options.foldBatchNorm ?? true);

  let x = g.node('Relu', [await g.convBn(inputName, net.conv1, net.bn1, 'conv1', 'bn1')], 'relu');
  if (net.maxpool) {
    const p = net.maxpool;
    x = g.node('MaxPool', [x], 'maxpool', [
      intsAttr('kernel_shape', [p.kernelSize, p.kernelSize]), intsAttr('strides', [p.stride, p.stride]), intsAttr('pads', [p.padding, p.padding, p.padding, p.padding]),
    ]);
  }
  const stageNames = (model as Module).children().filter(([, m]) => net.stages.includes(m as Sequential)).map(([name]) => name);
  for (let si = 0; si < net.stages.length; si++) {
    const stage = net.stages[si];
    for (let bi = 0; bi < stage.length; bi++) {
      const b = stage.at(bi) as unknown as BlockLike;
      const p = `${stageNames[si] ?? `layer${si + 1}`}.${bi}`;
      const a = g.node('Relu', [await g.convBn(x, b.conv1, b.bn1, `${p}.conv1`, `${p}.bn1`)], `${p}.relu1`);
      const m = g.node('Relu', [await g.convBn(a, b.conv2, b.bn2, `${p}.conv2`, `${p}.bn2`)], `${p}.relu2`);
      const y = await g.convBn(m, b.conv3, b.bn3, `${p}.conv3`, `${p}.bn3`);
      const proj = b.downsample ?? b.shortcut ?? null;
      const projName = b.downsample ? 'downsample' : 'shortcut';
      const identity = proj ? await g.convBn(x, proj.at(0) as Conv2d, proj.at(1) as BatchNorm2d, `${p}.${projName}.0`, `${p}.${projName}.1`) : x;
      x = g.node('Relu', [g.node('Add', [y, identity], `${p}.add`)], `${p}.relu3`);
    }
  }
  const pooled = g.node('Flatten', [g.node('GlobalAveragePool', [x], 'avgpool')], 'flatten', [intAttr('axis', 1)]);
  const fc = net.fc;
  const fcIn = [pooled, g.init('fc.weight', [fc.outFeatures, fc.inFeatures], await host(fc.weight))];
  if (fc.bias) fcIn.push(g.init('fc.bias', [fc.outFeatures], await host(fc.bias)));
  g.node('Gemm', fcIn, 'fc', [floatAttr('alpha', 1), floatAttr('beta', 1), intAttr('transB', 1)], outputName);

  const inputShape = [batch, c, h, w];
  const outputShape = [batch, fc.outFeatures];
  const version = packageVersion();
  const message = {
    ir_version: ONNX_IR_VERSION,
    opset_import: [{ domain: '', version: ONNX_OPSET }],
    producer_name: 'resnext',
    producer_version: version,
    doc_string: options.docString ?? `Eval-mode ${net.maxpool ? 'ResNet/ResNeXt' : 'ResNeXt-29'} exported by resnext ${version}${(options.foldBatchNorm ?? true) ? ' (BatchNorm folded into Conv)' : ''}`,
    graph: {
      name: 'resnext',
      node: g.nodes,
      initializer: g.initializers,
      input: [valueInfo(inputName, inputShape)],
      output: [valueInfo(outputName, outputShape)],
    },
  };
  const type = modelProto();
  const err = type.verify(message);
  if (err) throw new ResnextError(`${OP}: internal error: the ONNX message is invalid: ${err}`, 'ERR_INTERNAL');
  const bytes = type.encode(message).finish();
  return {
    bytes,
    info: { opset: ONNX_OPSET, irVersion: ONNX_IR_VERSION, inputName, outputName, inputShape, outputShape, ops: g.ops, parameters: g.parameters, bytes: bytes.length },
  };
}

/**
 * Writes `model` as an ONNX file (opset 17) at `file`, atomically: eval-mode graph with BN folded
 * into Conv (see the file comment), a symbolic batch dimension, weights inside the file.
 * `inputShape` is [C, H, W] or [N, C, H, W] (default [3, 224, 224]). Throws ResnextError: ERR_ARG
 * for a model or option it cannot export, ERR_IO when the file cannot be written.
 */
export async function exportOnnx(model: Module, file: string, options: OnnxExportOptions = {}): Promise<OnnxExportInfo> {
  if (typeof file !== 'string' || file.length === 0) fail('ERR_ARG', OP, 'path', 'a non-empty file path', describe(file));
  const { bytes, info } = await encodeOnnx(model, options);
  await writeFileAtomic(file, bytes);
  return info;
}
