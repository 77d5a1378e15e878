/**
 * Classification from images: preprocess (torchvision's ImageNet evaluation transform), an
 * eval-mode forward in batches, softmax and the top k classes with their names. The model can be
 * any Module mapping [N, 3, H, W] to logits [N, classes]; ResNet.predict calls this.
 */
import { noGrad } from '../autograd/engine';
import { describe, fail } from '../native/errors';
import type { Module } from '../nn/module';
import { to } from '../ops/shape';
import { tidy, Tensor } from '../tensor/tensor';
import { IMAGENET_CLASSES } from './imagenet-classes';
import { type ImageInput, type PreprocessOptions, preprocess } from './preprocess';

export interface Prediction {
  /** The class index (the logit's position). */
  index: number;
  /** Its name: ImageNet-1k's for 1000-class models, else options.labels or "class <index>". */
  label: string;
  /** Softmax probability. */
  probability: number;
}

export interface PredictOptions {
  /** How many classes per image, most probable first (default 5). */
  topk?: number;
  /** Class names, one per logit (default: ImageNet-1k's when the model has 1000 outputs). */
  labels?: readonly string[];
  /** Images per forward pass (default 8). */
  batchSize?: number;
  /** Preprocessing (default torchvision's V2 transform: resize 232, crop 224). */
  preprocess?: PreprocessOptions;
}

const OP = 'predict';

function posInt(arg: string, v: unknown, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) fail('ERR_ARG', OP, arg, 'a positive integer', describe(v));
  return v;
}

/** The top k of softmax(row), computed in float64. */
export function topkSoftmax(row: ArrayLike<number>, k: number, labels?: readonly string[]): Prediction[] {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) max = Math.max(max, row[i]);
  let sum = 0;
  const p = new Float64Array(row.length);
  for (let i = 0; i < row.length; i++) sum += p[i] = Math.exp(row[i] - max);
  const order = Array.from({ length: row.length }, (_, i) => i).sort((a, b) => p[b] - p[a] || a - b);
  return order.slice(0, Math.min(k, row.length)).map((index) => ({ index, label: labels?.[index] ?? `class ${index}`, probability: p[index] / sum }));
}

/** Runs `model` in eval mode (its mode is restored afterwards) on x [N, ...] -> logits on the host. */
export function inferLogits(model: Module, x: Tensor, features = false): { data: Float32Array; rows: number; cols: number } {
  const wasTraining = model.training;
  const device = model.parameters()[0]?.device ?? 'cpu';
  model.eval();
  try {
    return tidy(() =>
      noGrad(() => {
        const input = x.device === device ? x : to(x, device);
        const fwd = features ? (model as unknown as { forwardFeatures(t: Tensor): Tensor }).forwardFeatures(input) : model.forward(input);
        if (fwd.ndim !== 2) fail('ERR_SHAPE', OP, 'model output', '[N, classes]', `[${fwd.shape.join(', ')}]`);
        const d = fwd.dataSync();
        return { data: d instanceof Float32Array ? d : Float32Array.from(d as ArrayLike<number>), rows: fwd.shape[0], cols: fwd.shape[1] };
      }),
    );
  } finally {
    model.train(wasTraining);
  }
}

/**
 * Classifies images (file paths or encoded bytes, or an already preprocessed [N, 3, H, W] tensor):
 * for each image the top-k classes with softmax probabilities. Bad images are ResnextError ERR_IO.
 */
export async function predict(model: Module, images: ImageInput | ImageInput[] | Tensor, options: PredictOptions = {}): Promise<Prediction[][]> {
  if (options === null || typeof options !== 'object') fail('ERR_ARG', OP, 'options', 'an object', describe(options));
  const k = posInt('topk', options.topk, 5);
  const batchSize = posInt('batchSize', options.batchSize, 8);
  if (options.labels !== undefined && (!Array.isArray(options.labels) || !options.labels.every((l) => typeof l === 'string')))
    fail('ERR_ARG', OP, 'labels', 'an array of class names', describe(options.labels));
  const rowsOf = (x: Tensor): Prediction[][] => {
    const { data, rows, cols } = inferLogits(model, x);
    const labels = options.labels ?? (cols === IMAGENET_CLASSES.length ? IMAGENET_CLASSES : undefined);
    if (options.labels && options.labels.length !== cols) fail('ERR_ARG', OP, 'labels', `${cols} names (one per model output)`, `${options.labels.length}`);
    return Array.from({ length: rows }, (_, r) => topkSoftmax(data.subarray(r * cols, (r + 1) * cols), k, labels));
  };
  if (images instanceof Tensor) return rowsOf(images);
  const list = Array.isArray(images) ? images : [images];
  if (list.length === 0) fail('ERR_ARG', OP, 'images', 'at least one image', 'an empty array');
  const out: Prediction[][] = [];
  for (let i = 0; i < list.length; i += batchSize) {
    const x = await preprocess(list.slice(i, i + batchSize), options.preprocess);
    try {
      out.push(...rowsOf(x));
    } finally {
      x.dispose();
    }
  }
  return out;
}
