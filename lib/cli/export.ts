/**
 * `resnext export --onnx OUT.onnx`: the eval-mode model as an ONNX file (opset 17, BN folded into
 * Conv, symbolic batch dimension, weights inside), written atomically (io.exportOnnx).
 */
import * as path from 'node:path';
import { exportOnnx } from '../io/onnx';
import { intFlag, UsageError } from './args';
import { buildFromFlags, MODEL_HELP, MODEL_OPTIONS, parseFlags } from './pretrained';

export const EXPORT_HELP = `Usage: resnext export [options] --onnx OUT.onnx

Writes the model as ONNX (opset 17): Conv (with group), Relu, Add, MaxPool, GlobalAveragePool,
Flatten, Gemm; BatchNorm folded into the convolutions; the batch dimension is symbolic. Example:
  resnext export --model resnext50_32x4d --weights resnext50_32x4d-1a0047aa.pth --onnx rx50.onnx

  --onnx FILE             the output file
  --input CxHxW           input size (default 3x224x224; resnext29: 3x32x32)
  --batch N               fix the batch dimension to N instead of a symbolic "batch"
  --no-fold               keep BatchNormalization nodes instead of folding them into Conv
  --json                  print a summary as JSON
${MODEL_HELP.replace('--model NAME            ', '--model NAME            resnext29 | ')}`;

const OPTIONS = {
  ...MODEL_OPTIONS,
  onnx: { type: 'string' },
  input: { type: 'string' },
  batch: { type: 'string' },
  'no-fold': { type: 'boolean' },
  json: { type: 'boolean' },
} as const;

export async function exportCommand(argv: string[]): Promise<number> {
  const { flags: f, positionals } = parseFlags('export', argv, OPTIONS);
  if (f.help) {
    process.stdout.write(`${EXPORT_HELP}\n`);
    return 0;
  }
  if (positionals.length) throw new UsageError(`export expected no positional arguments, received "${positionals[0]}"`);
  const out = f.onnx as string | undefined;
  if (!out) throw new UsageError('export expected --onnx OUT.onnx, received none');
  const cifar = ((f.model as string | undefined) ?? '').startsWith('resnext29');
  const inputStr = (f.input as string | undefined) ?? (cifar ? '3x32x32' : '3x224x224');
  const input = inputStr.split('x').map(Number);
  if (input.length !== 3 || !input.every((d) => Number.isInteger(d) && d > 0)) throw new UsageError(`--input expected CxHxW like 3x224x224, received "${inputStr}"`);
  const batch = intFlag('batch', f.batch as string | undefined);
  if (batch === 0) throw new UsageError('--batch expected at least 1, received 0');
  const t0 = Date.now();
  const { model, name, weights } = await buildFromFlags(f, true);
  const tLoad = Date.now();
  try {
    const info = await exportOnnx(model, out, {
      inputShape: batch ? [batch, ...input] : input, dynamicBatch: batch === undefined, foldBatchNorm: !f['no-fold'],
    });
    const seconds = (Date.now() - tLoad) / 1000;
    const summary = { model: name, weights: weights ?? null, file: path.resolve(out), ...info, loadSeconds: (tLoad - t0) / 1000, exportSeconds: seconds };
    if (f.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
    else {
      const ops = Object.entries(info.ops).map(([k, v]) => `${k} ${v}`).join(', ');
      process.stdout.write(
        `${path.resolve(out)}: ${name}, ONNX opset ${info.opset} (IR ${info.irVersion}), input ${info.inputName} [${info.inputShape.join(', ')}] -> ` +
          `${info.outputName} [${info.outputShape.join(', ')}], ${(info.bytes / 1e6).toFixed(1)} MB, ${info.parameters.toLocaleString('en-US')} weights; ${ops} ` +
          `(${seconds.toFixed(2)} s)\n`,
      );
    }
    return 0;
  } finally {
    model.dispose();
  }
}
