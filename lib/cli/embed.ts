/**
 * `resnext embed IMAGE... --out FILE.npy|FILE.json`: the pooled features before the classifier
 * (model.forwardFeatures: [N, 2048] for the ImageNet models) of each image, after torchvision's
 * preprocessing, written atomically as a float32 .npy (NumPy format 1.0) or as JSON.
 */
import * as path from 'node:path';
import { writeFileAtomic } from '../io/atomic';
import { saveNpy } from '../io/npy';
import type { ResNet } from '../models/resnet';
import { imagenetPreprocessing, preprocess } from '../vision/preprocess';
import { inferLogits } from '../vision/predict';
import { intFlag, UsageError } from './args';
import { buildFromFlags, MODEL_HELP, MODEL_OPTIONS, parseFlags } from './pretrained';

export const EMBED_HELP = `Usage: resnext embed [options] IMAGE... --out FILE.npy|FILE.json

Writes each image's pooled features (the input of the classifier; 2048 values for the
ImageNet models), one row per image in the order given. Example:
  resnext embed --model resnext50_32x4d --weights resnext50_32x4d-1a0047aa.pth *.jpg --out emb.npy

  --out FILE              .npy: float32 [N, D] (np.load); .json: {"model", "weights", "dim",
                          "images": [...], "embeddings": [[...], ...]}
${MODEL_HELP}
Preprocessing:
  --resize N              shorter side before the 224 crop (default 256 for torchvision's V1
                          weight files, else 232)
  --resampler NAME        pil (default) | sharp
  --batch-size N          images per forward pass (default 8)`;

const OPTIONS = {
  ...MODEL_OPTIONS,
  out: { type: 'string' },
  resize: { type: 'string' },
  resampler: { type: 'string' },
  'batch-size': { type: 'string' },
} as const;

export async function embedCommand(argv: string[]): Promise<number> {
  const { flags: f, positionals: images } = parseFlags('embed', argv, OPTIONS);
  if (f.help) {
    process.stdout.write(`${EMBED_HELP}\n`);
    return 0;
  }
  const out = f.out as string | undefined;
  if (!out || !/\.(npy|json)$/i.test(out)) throw new UsageError(`--out expected a FILE.npy or FILE.json, received ${out ? `"${out}"` : 'none'}`);
  if (images.length === 0) throw new UsageError('embed expected one or more image files, received none');
  const resampler = (f.resampler as string | undefined) ?? 'pil';
  if (resampler !== 'pil' && resampler !== 'sharp') throw new UsageError(`--resampler expected pil or sharp, received "${resampler}"`);
  const batchSize = intFlag('batch-size', f['batch-size'] as string | undefined, 8)!;
  if (batchSize < 1) throw new UsageError('--batch-size expected at least 1, received 0');
  const resizeSize = intFlag('resize', f.resize as string | undefined, imagenetPreprocessing(f.weights as string | undefined).resizeSize)!;
  const t0 = Date.now();
  const { model, name, weights } = await buildFromFlags(f);
  const tLoad = Date.now();
  try {
    const rows: Float32Array[] = [];
    let dim = 0;
    for (let i = 0; i < images.length; i += batchSize) {
      const x = await preprocess(images.slice(i, i + batchSize), { resizeSize, cropSize: 224, resampler });
      try {
        const r = inferLogits(model as ResNet, x, true);
        dim = r.cols;
        for (let j = 0; j < r.rows; j++) rows.push(r.data.slice(j * dim, (j + 1) * dim));
      } finally {
        x.dispose();
      }
    }
    const tRun = Date.now();
    if (/\.npy$/i.test(out)) {
      const all = new Float32Array(rows.length * dim);
      rows.forEach((r, i) => {
        all.set(r, i * dim);
      });
      await saveNpy(out, all, [rows.length, dim]);
    } else {
      const json = { model: name, weights: weights ?? null, dim, images, embeddings: rows.map((r) => Array.from(r)) };
      await writeFileAtomic(out, `${JSON.stringify(json)}\n`);
    }
    process.stderr.write(
      `resnext embed: ${name}, ${rows.length} x ${dim} features -> ${path.resolve(out)}; load ${((tLoad - t0) / 1000).toFixed(2)} s, preprocess + forward ${((tRun - tLoad) / 1000).toFixed(2)} s\n`,
    );
    return 0;
  } finally {
    model.dispose();
  }
}
