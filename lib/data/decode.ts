/**
 * Image decoding with sharp (libvips): JPEG, PNG, WebP (and whatever else the installed libvips
 * reads). sharp is loaded on first use, so the package works without it until an image folder
 * is read. Decoding runs on libuv's thread pool, off the JS thread.
 */
import { ResnextError } from '../native/errors';

interface SharpImage {
  removeAlpha(): SharpImage;
  toColourspace(space: string): SharpImage;
  resize(width: number, height: number, opts: { fit: string; position: string }): SharpImage;
  raw(): SharpImage;
  toBuffer(opts: { resolveWithObject: true }): Promise<{ data: Buffer; info: { width: number; height: number; channels: number } }>;
}
type Sharp = (input: string, opts?: { failOn?: string }) => SharpImage;

let sharpPath = 'sharp';
let sharp: Sharp | null = null;

/** Where to load sharp from (workers whose script lives outside the package pass a resolved path). */
export function setSharpPath(p: string): void {
  sharpPath = p;
  sharp = null;
}

export function loadSharp(): Sharp {
  if (sharp) return sharp;
  try {
    const m = require(sharpPath) as Sharp | { default: Sharp };
    sharp = typeof m === 'function' ? m : m.default;
  } catch (e) {
    throw new ResnextError(
      `imageFolder: the image decoder expected the npm package "sharp" (npm install sharp), received: ${(e as Error).message}`,
      'ERR_LOAD',
    );
  }
  return sharp;
}

/**
 * Decodes an image file to uint8 CHW with `channels` channels (1: greyscale, 3: sRGB; alpha is
 * dropped), resized to cover height x width and centre-cropped (aspect ratio kept).
 */
export async function decodeImage(file: string, channels: number, height: number, width: number): Promise<{
  data: Uint8Array;
  channels: number;
  height: number;
  width: number;
}> {
  const s = loadSharp();
  let out: { data: Buffer; info: { width: number; height: number; channels: number } };
  try {
    out = await s(file, { failOn: 'warning' })
      .removeAlpha()
      .toColourspace(channels === 1 ? 'b-w' : 'srgb')
      .resize(width, height, { fit: 'cover', position: 'centre' })
      .raw()
      .toBuffer({ resolveWithObject: true });
  } catch (e) {
    throw new ResnextError(`imageFolder: file "${file}" expected a decodable JPEG, PNG or WebP image, received: ${(e as Error).message}`, 'ERR_IO');
  }
  const { info, data } = out;
  if (info.width !== width || info.height !== height || info.channels !== channels)
    throw new ResnextError(
      `imageFolder: file "${file}" expected to decode to ${channels}x${height}x${width}, received ${info.channels}x${info.height}x${info.width}`,
      'ERR_IO',
    );
  // HWC (interleaved) -> CHW (planes).
  const hw = height * width;
  const chw = new Uint8Array(channels * hw);
  for (let p = 0; p < hw; p++) for (let c = 0; c < channels; c++) chw[c * hw + p] = data[p * channels + c];
  return { data: chw, channels, height, width };
}
