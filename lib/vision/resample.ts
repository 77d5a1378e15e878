/**
 * PIL's antialiased bilinear resize of 8-bit RGB (Image.resize(size, BILINEAR) with no
 * reducing_gap, which is what torchvision's Resize does to PIL images), on interleaved uint8:
 *
 * - per output pixel j of an axis shrunk by scale = in / out, the filter is a triangle of support
 *   max(1, scale) input pixels centred at (j + 0.5) * scale; the taps run from
 *   trunc(centre - support + 0.5) to trunc(centre + support + 0.5), clamped to the image, with
 *   weights tri((i - centre + 0.5) / max(1, scale)) normalised to sum 1;
 * - weights become fixed point with 22 fractional bits (rounded half away from zero), sums start
 *   at 2^21 (rounding) and are shifted back and clamped to [0, 255];
 * - the horizontal pass runs first and is rounded to uint8, then the vertical pass.
 *
 * Following those steps gives PIL's bytes: test/predict.test.ts compares the result with
 * torchvision's on PNG and JPEG images.
 */

const PRECISION_BITS = 22;
const ONE = 1 << PRECISION_BITS;
const HALF = 1 << (PRECISION_BITS - 1);

interface Coeffs {
  /** First input index and tap count of each output pixel. */
  first: Int32Array;
  count: Int32Array;
  /** Fixed-point weights, `taps` per output pixel. */
  k: Int32Array;
  taps: number;
}

function coeffs(inSize: number, outSize: number): Coeffs {
  const scale = inSize / outSize;
  const filterScale = Math.max(1, scale);
  const support = filterScale; // the triangle's support is 1
  const taps = Math.ceil(support) * 2 + 1;
  const first = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const k = new Int32Array(outSize * taps);
  const w = new Float64Array(taps);
  for (let j = 0; j < outSize; j++) {
    const centre = (j + 0.5) * scale;
    const lo = Math.max(0, Math.trunc(centre - support + 0.5));
    const hi = Math.min(inSize, Math.trunc(centre + support + 0.5));
    const n = Math.min(hi - lo, taps);
    let total = 0;
    for (let t = 0; t < n; t++) {
      const x = Math.abs((t + lo - centre + 0.5) / filterScale);
      w[t] = x < 1 ? 1 - x : 0;
      total += w[t];
    }
    for (let t = 0; t < n; t++) {
      const v = total !== 0 ? w[t] / total : w[t];
      k[j * taps + t] = v < 0 ? Math.trunc(-0.5 + v * ONE) : Math.trunc(0.5 + v * ONE);
    }
    first[j] = lo;
    count[j] = n;
  }
  return { first, count, k, taps };
}

const clip8 = (s: number): number => {
  const v = s >> PRECISION_BITS;
  return v < 0 ? 0 : Math.min(v, 255);
};

/** Resizes interleaved RGB uint8 (w x h) to ow x oh exactly as PIL does (see the file comment). */
export function resizeBilinearPil(src: Uint8Array, w: number, h: number, ow: number, oh: number): Uint8Array {
  const cx = coeffs(w, ow);
  const cy = coeffs(h, oh);
  // Only the rows the vertical pass reads need the horizontal pass.
  const y0 = cy.first[0];
  const y1 = cy.first[oh - 1] + cy.count[oh - 1];
  const rows = y1 - y0;
  const tmp = new Uint8Array(rows * ow * 3);
  for (let y = 0; y < rows; y++) {
    const srow = (y + y0) * w * 3;
    const drow = y * ow * 3;
    for (let j = 0; j < ow; j++) {
      const f = cx.first[j], n = cx.count[j], o = j * cx.taps;
      let s0 = HALF, s1 = HALF, s2 = HALF;
      for (let t = 0; t < n; t++) {
        const kk = cx.k[o + t];
        const p = srow + (f + t) * 3;
        s0 += src[p] * kk;
        s1 += src[p + 1] * kk;
        s2 += src[p + 2] * kk;
      }
      const d = drow + j * 3;
      tmp[d] = clip8(s0);
      tmp[d + 1] = clip8(s1);
      tmp[d + 2] = clip8(s2);
    }
  }
  const out = new Uint8Array(oh * ow * 3);
  const stride = ow * 3;
  for (let i = 0; i < oh; i++) {
    const f = cy.first[i] - y0, n = cy.count[i], o = i * cy.taps;
    const drow = i * stride;
    for (let x = 0; x < stride; x++) {
      let s = HALF;
      for (let t = 0; t < n; t++) s += tmp[(f + t) * stride + x] * cy.k[o + t];
      out[drow + x] = clip8(s);
    }
  }
  return out;
}
