/**
 * --compare FILE: another run side by side. Reads either one of our result files
 * (schema 'resnext-bench/1') or the PyTorch anchor format of ../shared/anchors/pytorch-h200.json
 * (rows with kind, name, B, hw, amp, img_per_s, ms_per_step | ms, peak_mem_MiB). Rows are
 * matched on model name, mode (train / infer), precision (anchor: amp true = bf16, false = fp32),
 * batch and input size; the ratio is ours / theirs (throughput above 1 = we are faster; memory
 * below 1 = we use less). Rows that do not match are listed, with the nearest miss.
 */
import * as fs from 'node:fs';
import { ResnextError } from '../../native/errors';

export interface FlatRow {
  name: string;
  mode: 'train' | 'infer';
  precision: string;
  batch: number | null;
  size: number | null;
  imgPerSec: number;
  ms: number | null;
  peakMemMiB: number | null;
  note?: string;
}

export interface CompareRow {
  name: string;
  mode: string;
  precision: string;
  batch: number | null;
  size: number | null;
  ours: { imgPerSec: number; ms: number | null; peakMemMiB: number | null };
  theirs: { imgPerSec: number; ms: number | null; peakMemMiB: number | null; note?: string };
  /** ours / theirs */
  speedRatio: number;
  memRatio: number | null;
}

export interface CompareResult {
  file: string;
  format: 'resnext-bench' | 'pytorch-anchor';
  reference: Record<string, unknown>;
  rows: CompareRow[];
  unmatchedOurs: { name: string; mode: string; precision: string; batch: number | null; size: number | null; reason: string }[];
  unmatchedTheirs: { name: string; mode: string; precision: string; batch: number | null; size: number | null; reason: string }[];
  /** Reference rows that are not model throughput (conv micro-benchmarks, profiles). */
  skipped: { kind: string; name?: string }[];
}

interface OurSpeedRow {
  name: string;
  precision: string;
  train?: { batch: number; size: number; imgPerSec: { median: number }; ms: { median: number }; peakMemBytes: number } | null;
  infer?: { batch: number; size: number; imgPerSec: { median: number }; ms: { median: number } } | null;
}

/** Our result JSON's speed rows as one row per (model, mode). */
export function flattenOurs(speedRows: OurSpeedRow[]): FlatRow[] {
  const out: FlatRow[] = [];
  for (const r of speedRows) {
    if (r.train)
      out.push({
        name: r.name, mode: 'train', precision: r.precision, batch: r.train.batch, size: r.train.size,
        imgPerSec: r.train.imgPerSec.median, ms: r.train.ms.median, peakMemMiB: r.train.peakMemBytes / 2 ** 20,
      });
    if (r.infer)
      out.push({ name: r.name, mode: 'infer', precision: r.precision, batch: r.infer.batch, size: r.infer.size, imgPerSec: r.infer.imgPerSec.median, ms: r.infer.ms.median, peakMemMiB: null });
  }
  return out;
}

export function readReference(file: string): { format: CompareResult['format']; reference: Record<string, unknown>; rows: FlatRow[]; skipped: CompareResult['skipped'] } {
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ResnextError(`--compare: could not read ${file} as JSON: ${(e as Error).message}`, 'ERR_IO');
  }
  if (j && j.schema === 'resnext-bench/1') {
    const speed = (j.speed as { rows?: OurSpeedRow[] } | null)?.rows ?? [];
    const env = (j.env ?? {}) as Record<string, unknown>;
    return { format: 'resnext-bench', reference: { createdAt: j.createdAt, device: (j.config as Record<string, unknown>)?.device, env }, rows: flattenOurs(speed), skipped: [] };
  }
  if (j && Array.isArray(j.rows)) {
    const rows: FlatRow[] = [];
    const skipped: CompareResult['skipped'] = [];
    for (const r of j.rows as Record<string, unknown>[]) {
      const kind = String(r.kind);
      if ((kind !== 'train' && kind !== 'infer') || typeof r.name !== 'string' || typeof r.img_per_s !== 'number') {
        skipped.push({ kind, name: typeof r.name === 'string' ? r.name : undefined });
        continue;
      }
      const num = (v: unknown) => (typeof v === 'number' ? v : null);
      rows.push({
        name: r.name, mode: kind, precision: r.amp === true ? 'bf16' : 'fp32', batch: num(r.B), size: num(r.hw), imgPerSec: r.img_per_s,
        ms: num(r.ms_per_step) ?? num(r.ms), peakMemMiB: num(r.peak_mem_MiB), note: r.channels_last ? 'channels_last' : undefined,
      });
    }
    const env = (j.env ?? { torch: j.torch, cudnn: j.cudnn, gpu: j.gpu }) as Record<string, unknown>;
    return { format: 'pytorch-anchor', reference: { what: j.what, env }, rows, skipped };
  }
  throw new ResnextError(`--compare: ${file} expected a resnext bench result (schema resnext-bench/1) or a PyTorch anchor file with "rows", received neither`, 'ERR_IO');
}

const fits = (a: FlatRow, b: FlatRow) =>
  a.name === b.name && a.mode === b.mode && a.precision === b.precision && (a.batch === null || b.batch === null || a.batch === b.batch) && (a.size === null || b.size === null || a.size === b.size);
const describeRow = (r: FlatRow) => `${r.name} ${r.mode} ${r.precision} batch ${r.batch ?? '?'} at ${r.size ?? '?'}px`;

function reason(r: FlatRow, others: FlatRow[], side: string): string {
  const same = others.filter((o) => o.name === r.name);
  if (!same.length) return `no ${r.name} in ${side}`;
  const mode = same.filter((o) => o.mode === r.mode);
  if (!mode.length) return `${side} has ${r.name} only as ${[...new Set(same.map((o) => o.mode))].join('/')}`;
  const prec = mode.filter((o) => o.precision === r.precision);
  if (!prec.length) return `${side} has ${r.name} ${r.mode} only in ${[...new Set(mode.map((o) => o.precision))].join('/')}`;
  return `${side} has ${prec.map(describeRow).join('; ')}`;
}

export function compareRows(ours: FlatRow[], theirs: FlatRow[], file: string, format: CompareResult['format'], reference: Record<string, unknown>, skipped: CompareResult['skipped'] = []): CompareResult {
  const rows: CompareRow[] = [];
  const usedTheirs = new Set<FlatRow>();
  const unmatchedOurs: CompareResult['unmatchedOurs'] = [];
  for (const a of ours) {
    // The first reference row that fits and is not taken yet (files list each configuration once).
    const cands = theirs.filter((b) => fits(a, b) && !usedTheirs.has(b));
    const b = cands[0];
    if (!b) {
      unmatchedOurs.push({ name: a.name, mode: a.mode, precision: a.precision, batch: a.batch, size: a.size, reason: reason(a, theirs, 'the reference') });
      continue;
    }
    usedTheirs.add(b);
    rows.push({
      name: a.name, mode: a.mode, precision: a.precision, batch: a.batch ?? b.batch, size: a.size ?? b.size,
      ours: { imgPerSec: a.imgPerSec, ms: a.ms, peakMemMiB: a.peakMemMiB },
      theirs: { imgPerSec: b.imgPerSec, ms: b.ms, peakMemMiB: b.peakMemMiB, note: b.note },
      speedRatio: a.imgPerSec / b.imgPerSec,
      memRatio: a.peakMemMiB !== null && b.peakMemMiB ? a.peakMemMiB / b.peakMemMiB : null,
    });
  }
  const unmatchedTheirs = theirs
    .filter((b) => !usedTheirs.has(b))
    .map((b) => ({ name: b.name, mode: b.mode, precision: b.precision, batch: b.batch, size: b.size, reason: reason(b, ours, 'this run') }));
  return { file, format, reference, rows, unmatchedOurs, unmatchedTheirs, skipped };
}

export function compareWithFile(file: string, ours: FlatRow[]): CompareResult {
  const ref = readReference(file);
  return compareRows(ours, ref.rows, file, ref.format, ref.reference, ref.skipped);
}
