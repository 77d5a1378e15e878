/**
 * Building one batch: read each sample (decode for image folders), run the transform pipeline
 * into its slot of one NCHW float32 array, collect the labels. The same code runs in loader
 * workers and in the main thread (workers: 0), so both give identical batches.
 */
import { readLabel, readSample, type DataSource, type RawImage } from './source';
import type { Pipeline } from './transforms';

export interface PreparedBatch {
  x: Float32Array;
  y: Int32Array;
}

export async function prepareBatch(src: DataSource, pipeline: Pipeline, indices: Int32Array, seed: number, epoch: number): Promise<PreparedBatch> {
  const [c, h, w] = pipeline.outShape;
  const per = c * h * w;
  const x = new Float32Array(indices.length * per);
  const y = new Int32Array(indices.length);
  const pending: Promise<void>[] = [];
  for (let k = 0; k < indices.length; k++) {
    const i = indices[k];
    y[k] = readLabel(src, i);
    const s = readSample(src, i);
    const put = (img: RawImage) => pipeline.run(img.data, i, seed, epoch, x, k * per);
    // In-memory samples are ready now; image files decode concurrently on libuv's pool.
    if (s instanceof Promise) pending.push(s.then(put));
    else put(s);
  }
  if (pending.length) await Promise.all(pending);
  return { x, y };
}
