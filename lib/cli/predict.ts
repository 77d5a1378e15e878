/**
 * `resnext predict --weights FILE IMAGE...`: the top-k ImageNet-1k classes of each image with
 * probabilities, after torchvision's preprocessing for those weights (resize 232 for the V2
 * files, 256 for V1, known by torchvision's file names; --resize overrides).
 */
import * as fs from 'node:fs';
import { ResnextError } from '../native/errors';
import type { ResNet } from '../models/resnet';
import { imagenetPreprocessing } from '../vision/preprocess';
import { predict } from '../vision/predict';
import { intFlag, UsageError } from './args';
import { buildFromFlags, MODEL_HELP, MODEL_OPTIONS, parseFlags } from './pretrained';

export const PREDICT_HELP = `Usage: resnext predict --weights FILE [options] IMAGE...

Classifies JPEG, PNG, WebP, ... images with ImageNet weights and prints the top classes with
their probabilities. Example:
  resnext predict --model resnext50_32x4d --weights resnext50_32x4d-1a0047aa.pth cat.jpg

${MODEL_HELP}
Output:
  --topk N                classes per image (default 5)
  --json                  print JSON: {"model", "weights", "results": [{"image", "predictions":
                          [{"index", "label", "probability"}]}]}
  --labels FILE           class names (a JSON array, or one per line) for a non-ImageNet head
Preprocessing (torchvision's ImageClassification transform):
  --resize N              shorter side before the 224 crop (default: 256 for torchvision's V1
                          weight files, else 232)
  --resampler NAME        pil (default; PIL's resize, torchvision's tensor exactly) | sharp (libvips, faster)
  --batch-size N          images per forward pass (default 8)`;

const OPTIONS = {
  ...MODEL_OPTIONS,
  topk: { type: 'string' },
  json: { type: 'boolean' },
  labels: { type: 'string' },
  resize: { type: 'string' },
  resampler: { type: 'string' },
  'batch-size': { type: 'string' },
} as const;

function readLabels(file: string): string[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ResnextError(`predict: --labels file "${file}" could not be read: ${(e as Error).message}`, 'ERR_IO');
  }
  if (text.trimStart().startsWith('[')) {
    const a = JSON.parse(text) as unknown;
    if (!Array.isArray(a) || !a.every((s) => typeof s === 'string')) throw new UsageError(`--labels "${file}" expected a JSON array of strings`);
    return a;
  }
  return text.split(/\r?\n/).filter((l) => l.length > 0);
}

export async function predictCommand(argv: string[]): Promise<number> {
  const { flags: f, positionals: images } = parseFlags('predict', argv, OPTIONS);
  if (f.help) {
    process.stdout.write(`${PREDICT_HELP}\n`);
    return 0;
  }
  if (!f.weights) throw new UsageError("predict expected --weights FILE (e.g. torchvision's resnext50_32x4d-1a0047aa.pth), received none");
  if (images.length === 0) throw new UsageError('predict expected one or more image files, received none');
  const resampler = (f.resampler as string | undefined) ?? 'pil';
  if (resampler !== 'pil' && resampler !== 'sharp') throw new UsageError(`--resampler expected pil or sharp, received "${resampler}"`);
  const topk = intFlag('topk', f.topk as string | undefined, 5)!;
  if (topk < 1) throw new UsageError('--topk expected at least 1, received 0');
  const batchSize = intFlag('batch-size', f['batch-size'] as string | undefined, 8)!;
  if (batchSize < 1) throw new UsageError('--batch-size expected at least 1, received 0');
  const pre = imagenetPreprocessing(f.weights as string);
  const resizeSize = intFlag('resize', f.resize as string | undefined, pre.resizeSize)!;
  const labels = f.labels ? readLabels(f.labels as string) : undefined;
  const t0 = Date.now();
  const { model, name, weights } = await buildFromFlags(f);
  const tLoad = Date.now();
  try {
    const results = await predict(model as ResNet, images, { topk, labels, batchSize, preprocess: { resizeSize, cropSize: 224, resampler } });
    const tRun = Date.now();
    if (f.json) {
      const out = { model: name, weights, preprocessing: { resizeSize, cropSize: 224, resampler }, results: images.map((image, i) => ({ image, predictions: results[i] })) };
      process.stdout.write(`${JSON.stringify(out)}\n`);
    } else {
      const lines: string[] = [];
      images.forEach((image, i) => {
        lines.push(image);
        for (const p of results[i]) lines.push(`  ${(100 * p.probability).toFixed(2).padStart(6)}%  ${p.label} (${p.index})`);
      });
      process.stdout.write(`${lines.join('\n')}\n`);
    }
    process.stderr.write(`resnext predict: ${name}, ${images.length} images; load ${((tLoad - t0) / 1000).toFixed(2)} s, preprocess + forward ${((tRun - tLoad) / 1000).toFixed(2)} s\n`);
    return 0;
  } finally {
    model.dispose();
  }
}
