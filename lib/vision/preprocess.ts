/**
 * torchvision's ImageNet evaluation preprocessing (transforms._presets.ImageClassification, what
 * `weights.transforms()` returns for every ResNet/ResNeXt weight file):
 *
 *   decode with sharp -> RGB (alpha dropped, grey replicated, like PIL's convert('RGB'))
 *   -> resize the shorter side to resizeSize (232 for the V2 weights, 256 for V1), the longer side
 *      to floor(resizeSize * long / short), antialiased bilinear, uint8 as PIL's result
 *   -> centre crop cropSize (224; top = round((H - 224) / 2), halves to even, as Python's round)
 *   -> [0, 1] -> (x - mean) / std per channel -> float32 NCHW.
 *
 * Two resamplers. 'pil' (the default) is PIL's algorithm (lib/vision/resample.ts) run in JS on the
 * image sharp decoded; 'sharp' is libvips' kernel 'linear', about 2x faster on large photos and
 * off the JS thread. Measured against torchvision + PIL on the JPEG and PNG images of
 * test/fixtures/preprocess (test/predict.test.ts): 'pil' gives torchvision's tensor exactly (the
 * same uint8 crop); 'sharp' is within 3 uint8 levels when shrinking, but up to 127 levels at hard
 * edges when enlarging (libvips samples the enlarged grid with another alignment). Images are
 * decoded at full size (no JPEG shrink-on-load), as PIL does; embedded ICC profiles are not
 * applied (PIL ignores them too), nor is EXIF orientation (torchvision does not rotate).
 */
import type SharpModule from 'sharp';
import type { KernelEnum } from 'sharp';
import { loadSharp } from '../data/decode';
import { NORMALIZE } from '../data/transforms';
import { describe, fail, ResnextError } from '../native/errors';
import { tensor } from '../tensor/create';
import type { Tensor } from '../tensor/tensor';
import { TORCHVISION_WEIGHT_FILES } from './imagenet-classes';
import { resizeBilinearPil } from './resample';

type Sharp = typeof SharpModule;

/** An image: a file path, or the bytes of an encoded file (JPEG, PNG, WebP, ...). */
export type ImageInput = string | Uint8Array;

export interface PreprocessOptions {
  /** The shorter side after resizing (default 232, torchvision's V2 weights; 256 for V1). */
  resizeSize?: number;
  /** The centre crop's side (default 224). */
  cropSize?: number;
  /** Per-channel mean and std of pixels in [0, 1] (default ImageNet's). */
  mean?: readonly number[];
  std?: readonly number[];
  /**
   * 'pil' (default): PIL's antialiased bilinear resize, torchvision's result exactly;
   * 'sharp': libvips' resize with `kernel` (see the file comment for how far it is from PIL).
   */
  resampler?: 'pil' | 'sharp';
  /** sharp's kernel for resampler 'sharp' (default 'linear', antialiased bilinear). */
  kernel?: 'linear' | 'cubic' | 'mitchell' | 'lanczos2' | 'lanczos3' | 'nearest';
}

const OP = 'preprocess';

/** torchvision's transforms() for a known weight file name (V1: 256, otherwise 232). */
export function imagenetPreprocessing(weightsFile?: string): Required<Pick<PreprocessOptions, 'resizeSize' | 'cropSize'>> {
  const base = weightsFile ? weightsFile.replace(/^.*[\\/]/, '').replace(/\.safetensors$/, '.pth') : '';
  return { resizeSize: TORCHVISION_WEIGHT_FILES[base]?.resizeSize ?? 232, cropSize: 224 };
}

/** Python's round(): halves to even (torchvision's center_crop uses it). */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function checkSize(arg: string, v: unknown, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 16384) fail('ERR_ARG', OP, arg, 'an integer in [1, 16384]', describe(v));
  return v;
}

function checkStats(arg: string, v: unknown, dflt: readonly number[], positive: boolean): readonly number[] {
  if (v === undefined) return dflt;
  if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === 'number' && Number.isFinite(x) && (!positive || x > 0)))
    fail('ERR_ARG', OP, arg, `3 finite numbers${positive ? ' > 0' : ''} (one per RGB channel)`, describe(v));
  return v;
}

const KERNELS = ['linear', 'cubic', 'mitchell', 'lanczos2', 'lanczos3', 'nearest'];

function resolve(o: PreprocessOptions) {
  if (o === null || typeof o !== 'object') fail('ERR_ARG', OP, 'options', 'an object', describe(o));
  if (o.kernel !== undefined && !KERNELS.includes(o.kernel)) fail('ERR_ARG', OP, 'kernel', KERNELS.join(', '), describe(o.kernel));
  if (o.resampler !== undefined && o.resampler !== 'pil' && o.resampler !== 'sharp') fail('ERR_ARG', OP, 'resampler', "'pil' or 'sharp'", describe(o.resampler));
  return {
    resizeSize: checkSize('resizeSize', o.resizeSize, 232),
    cropSize: checkSize('cropSize', o.cropSize, 224),
    mean: checkStats('mean', o.mean, NORMALIZE.imagenet.mean, false),
    std: checkStats('std', o.std, NORMALIZE.imagenet.std, true),
    kernel: o.kernel ?? 'linear',
    resampler: o.resampler ?? 'pil',
  };
}

const name = (img: ImageInput) => (typeof img === 'string' ? `file "${img}"` : `image bytes (${img.length} bytes)`);

/** Decodes to interleaved RGB uint8 at full size. */
async function decodeRgb(sharp: Sharp, img: ImageInput): Promise<{ data: Buffer; width: number; height: number }> {
  if (typeof img !== 'string' && !(img instanceof Uint8Array)) fail('ERR_ARG', OP, 'image', 'a file path or the bytes of an image file', describe(img));
  try {
    const { data, info } = await sharp(img, { failOn: 'error' }).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels`);
    return { data, width: info.width, height: info.height };
  } catch (e) {
    const msg = (e as Error).message;
    const missing = typeof img === 'string' && /missing|no such file|ENOENT/i.test(msg);
    throw new ResnextError(`${OP}: ${name(img)} expected ${missing ? 'an existing image file' : 'a decodable JPEG, PNG, WebP, TIFF or GIF image'}, received: ${msg}`, 'ERR_IO');
  }
}

/** torchvision's Resize(size) output size for a (width, height) image: [newWidth, newHeight]. */
export function resizedSize(width: number, height: number, size: number): [number, number] {
  if (width <= height) return [size, Math.floor((size * height) / width)];
  return [Math.floor((size * width) / height), size];
}

async function resizeSharp(sharp: Sharp, image: ImageInput, src: { data: Buffer; width: number; height: number }, ow: number, oh: number, kernel: string): Promise<Uint8Array> {
  try {
    return await sharp(src.data, { raw: { width: src.width, height: src.height, channels: 3 } })
      .resize(ow, oh, { fit: 'fill', kernel: kernel as keyof KernelEnum })
      .raw()
      .toBuffer();
  } catch (e) {
    throw new ResnextError(`${OP}: ${name(image)} could not be resized to ${ow}x${oh}: ${(e as Error).message}`, 'ERR_IO');
  }
}

/** One image -> float32 CHW [3, cropSize, cropSize]. */
export async function preprocessImage(image: ImageInput, options: PreprocessOptions = {}): Promise<Float32Array> {
  const o = resolve(options);
  const sharp = loadSharp() as unknown as Sharp;
  const src = await decodeRgb(sharp, image);
  const [rw, rh] = resizedSize(src.width, src.height, o.resizeSize);
  const resized = o.resampler === 'pil' ? resizeBilinearPil(src.data, src.width, src.height, rw, rh) : await resizeSharp(sharp, image, src, rw, rh, o.kernel);
  const c = o.cropSize;
  // torchvision's center_crop: pads with 0 (before normalisation) when the image is smaller.
  const top = roundHalfEven((rh - c) / 2);
  const left = roundHalfEven((rw - c) / 2);
  const out = new Float32Array(3 * c * c);
  const scale = o.std.map((s) => 1 / (255 * s));
  const shift = o.mean.map((m, ch) => -m / o.std[ch]);
  for (let y = 0; y < c; y++) {
    const sy = y + top;
    for (let x = 0; x < c; x++) {
      const sx = x + left;
      const inside = sy >= 0 && sy < rh && sx >= 0 && sx < rw;
      const p = (sy * rw + sx) * 3;
      for (let ch = 0; ch < 3; ch++) out[ch * c * c + y * c + x] = (inside ? resized[p + ch] : 0) * scale[ch] + shift[ch];
    }
  }
  return out;
}

/**
 * Preprocesses images for an ImageNet model: one or many -> float32 [N, 3, cropSize, cropSize]
 * (see the file comment). Bad paths and undecodable files are ResnextError ERR_IO naming the file.
 */
export async function preprocess(images: ImageInput | ImageInput[], options: PreprocessOptions = {}): Promise<Tensor> {
  const list = Array.isArray(images) ? images : [images];
  if (list.length === 0) fail('ERR_ARG', OP, 'images', 'at least one image', 'an empty array');
  const o = resolve(options);
  const per = 3 * o.cropSize * o.cropSize;
  const all = new Float32Array(list.length * per);
  const done = await Promise.all(list.map((img) => preprocessImage(img, o)));
  for (let i = 0; i < done.length; i++) all.set(done[i], i * per);
  return tensor(all, [list.length, 3, o.cropSize, o.cropSize]);
}
