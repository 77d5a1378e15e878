/** Environment capture and the three outputs of a bench run: Markdown, SVG, terminal summary. */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { packageRoot } from '../../native/addon';
import { cudaStatus, deviceInfo } from '../../native/cuda';
import { numThreads } from '../../tensor/tensor';
import type { AccuracyResult } from './accuracy';
import type { CompareResult } from './compare';
import type { SpeedRow } from './types';

export interface Env {
  date: string;
  node: string;
  platform: string;
  arch: string;
  osRelease: string;
  cpu: { model: string; logicalCores: number; threads: number; memoryGiB: number };
  gpu: Record<string, unknown> | null;
  cuda: { available: boolean; library: string | null; reason: string };
  package: { name: string; version: string };
  git: { commit: string | null; dirty: boolean | null };
  loadavg: { start: number[]; end?: number[] };
}

function git(args: string[]): string | null {
  try {
    return execFileSync('git', args, { cwd: packageRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 }).trim();
  } catch {
    return null;
  }
}

export function captureEnv(device: string): Env {
  let pkg = { name: 'resnext', version: 'unknown' };
  try {
    const p = JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8'));
    pkg = { name: p.name, version: p.version };
  } catch {
    /* an installed package without package.json is not expected; keep 'unknown' */
  }
  const commit = git(['rev-parse', 'HEAD']);
  const status = commit ? git(['status', '--porcelain', '--untracked-files=no']) : null;
  const cs = cudaStatus();
  let gpu: Record<string, unknown> | null = null;
  if (device === 'cuda' && cs.available) gpu = deviceInfo('cuda') as Record<string, unknown>;
  const cpus = os.cpus();
  return {
    date: new Date().toISOString(), node: process.version, platform: process.platform, arch: process.arch, osRelease: os.release(),
    cpu: { model: cpus[0]?.model?.trim() ?? 'unknown', logicalCores: cpus.length, threads: numThreads(), memoryGiB: +(os.totalmem() / 2 ** 30).toFixed(1) },
    gpu, cuda: { available: cs.available, library: cs.library, reason: cs.reason }, package: pkg,
    git: { commit, dirty: status === null ? null : status.length > 0 }, loadavg: { start: os.loadavg().map((x) => +x.toFixed(2)) },
  };
}

// ------------------------------------------------------------------ formatting helpers

const f1 = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
const mib = (b: number) => (b / 2 ** 20).toFixed(0);
const spreadStr = (s: { median: number; min: number; max: number }) => `${f1(s.median)} (${f1(s.min)}–${f1(s.max)})`;

export interface ReportInput {
  config: Record<string, unknown> & { device: string; precision: string };
  env: Env;
  speed: { rows: SpeedRow[]; seconds: number; notes: string[] } | null;
  accuracy: AccuracyResult | null;
  compare: CompareResult | null;
}

function table(head: string[], rows: string[][], right: boolean[]): string {
  const sep = head.map((_, i) => (right[i] ? '---:' : '---'));
  return [head, sep, ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n');
}

export function speedTable(rows: SpeedRow[]): string {
  return table(
    ['model', 'families', 'C', 'd', 'params (M)', 'GMACs/img (bench size)', 'GMACs/img (paper size)', 'batch', 'size', 'train img/s median (min–max)', 'infer img/s median (min–max)', 'train peak MiB (sampled)'],
    rows.map((r) => [
      r.name, r.families.join(', '), String(r.cardinality), String(r.width), (r.params / 1e6).toFixed(2), (r.macs / 1e9).toFixed(3),
      r.macsRef ? `${(r.macsRef.macs / 1e9).toFixed(3)} @${r.macsRef.size}` : '',
      String(r.train?.batch ?? r.infer?.batch ?? ''), String(r.train?.size ?? r.infer?.size ?? ''),
      r.train ? spreadStr(r.train.imgPerSec) : r.error ?? '', r.infer ? spreadStr(r.infer.imgPerSec) : '',
      r.train ? mib(r.train.peakMemBytes) : '',
    ]),
    [false, false, true, true, true, true, true, true, true, true, true, true],
  );
}

export function accuracyTable(a: AccuracyResult): string {
  return table(
    ['model', 'C', 'd', 'params (k)', 'MMACs/img', 'vs baseline MACs', 'test top-1 % per seed', 'mean ± std %', 'difference from baseline'],
    a.rows.map((r) => [
      r.name, String(r.cardinality), String(r.width), (r.params / 1e3).toFixed(1), (r.macs / 1e6).toFixed(2), `${r.macsDelta >= 0 ? '+' : ''}${(100 * r.macsDelta).toFixed(1)}%`,
      r.accs.map((x) => (100 * x).toFixed(2)).join(', '), `${(100 * r.mean).toFixed(2)} ± ${(100 * r.std).toFixed(2)}`, r.vsBaseline?.verdict ?? 'baseline',
    ]),
    [false, true, true, true, true, true, false, true, false],
  );
}

export function compareTable(c: CompareResult): string {
  const fm = (x: number | null) => (x === null ? '' : x.toFixed(0));
  const t = table(
    ['model', 'mode', 'precision', 'batch', 'size', 'ours img/s', 'reference img/s', 'ours / reference', 'ours peak MiB', 'reference peak MiB', 'memory ratio'],
    c.rows.map((r) => [
      r.name, r.mode, r.precision, String(r.batch ?? ''), String(r.size ?? ''), f1(r.ours.imgPerSec), f1(r.theirs.imgPerSec) + (r.theirs.note ? ` (${r.theirs.note})` : ''),
      r.speedRatio.toFixed(3), fm(r.ours.peakMemMiB), fm(r.theirs.peakMemMiB), r.memRatio === null ? '' : r.memRatio.toFixed(2),
    ]),
    [false, false, false, true, true, true, true, true, true, true, true],
  );
  const un = [
    ...c.unmatchedOurs.map((u) => `- ours without a match: ${u.name} ${u.mode} ${u.precision} batch ${u.batch} at ${u.size}px (${u.reason})`),
    ...c.unmatchedTheirs.map((u) => `- reference without a match: ${u.name} ${u.mode} ${u.precision} batch ${u.batch ?? '?'} at ${u.size ?? '?'}px (${u.reason})`),
    ...(c.skipped.length ? [`- reference rows that are not model throughput, skipped: ${c.skipped.map((s) => s.kind + (s.name ? ` ${s.name}` : '')).join(', ')}`] : []),
  ];
  return `${c.rows.length ? t : '_No rows matched._'}\n${un.length ? `\n${un.join('\n')}\n` : ''}`;
}

function envLines(e: Env, device: string): string[] {
  const dev =
    device === 'cuda' && e.gpu
      ? `GPU ${String(e.gpu.name ?? '?')} (${Object.entries(e.gpu).filter(([k]) => k !== 'name').map(([k, v]) => `${k} ${String(v)}`).join(', ')})`
      : `CPU ${e.cpu.model}, ${e.cpu.threads} threads of ${e.cpu.logicalCores} logical cores, ${e.cpu.memoryGiB} GiB`;
  return [
    `- device: ${dev}`,
    `- ${e.package.name} ${e.package.version}, git ${e.git.commit ? e.git.commit.slice(0, 12) : 'unknown'}${e.git.dirty ? ' (uncommitted changes)' : ''}, Node ${e.node}, ${e.platform}-${e.arch}`,
    `- date ${e.date}; load average (1/5/15 min) at start ${e.loadavg.start.join(' / ')}${e.loadavg.end ? `, at end ${e.loadavg.end.join(' / ')}` : ''}`,
  ];
}

export function markdown(r: ReportInput): string {
  const out: string[] = [`# resnext bench: ${r.config.device}, ${r.config.precision}`, '', ...envLines(r.env, r.config.device), ''];
  if (r.speed) {
    out.push('## Speed', '', ...r.speed.notes.map((n) => `- ${n}`), '', speedTable(r.speed.rows), '');
  }
  if (r.accuracy) {
    const a = r.accuracy;
    out.push(
      '## Accuracy at equal MACs', '',
      `- ${a.dataset}: ${a.trainSamples} training / ${a.testSamples} test images (${a.inputShape.join('x')}); ${a.config.seeds} seeds x ${a.config.epochs} epochs, batch ${a.config.batch}, ` +
        `lr ${a.config.lr} cosine, SGD Nesterov 0.9, weight decay 5e-4; stem ${a.config.stemChannels}, block outputs ${a.config.stageChannels.join('/')}, ${a.config.blocksPerStage} block(s) per stage; ` +
        `widths solved for equal MACs at ${a.inputShape.join('x')}; ${a.seconds.toFixed(0)} s in all`,
      `- verdict: ${a.summary}`, '', accuracyTable(a), '',
    );
  }
  if (r.compare) {
    out.push(`## Compared with ${path.basename(r.compare.file)} (${r.compare.format})`, '', compareTable(r.compare));
  }
  return `${out.join('\n')}\n`;
}

// ------------------------------------------------------------------ SVG

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];

interface Series {
  label: string;
  points: { x: number; y: number; lo?: number; hi?: number }[];
  dashed?: boolean;
}

/** One panel: log2(cardinality) on x, linear y from 0, series as lines with markers and error bars. */
function panel(x0: number, y0: number, w: number, h: number, title: string, yLabel: string, series: Series[], yFromZero = true): string {
  const xs = series.flatMap((s) => s.points.map((p) => p.x));
  const ys = series.flatMap((s) => s.points.flatMap((p) => [p.y, p.hi ?? p.y, p.lo ?? p.y]));
  const g: string[] = [];
  const m = { l: 58, r: 12, t: 26, b: 40 };
  const pw = w - m.l - m.r, ph = h - m.t - m.b;
  g.push(`<text x="${x0 + w / 2}" y="${y0 + 16}" text-anchor="middle" font-size="13" font-weight="bold">${esc(title)}</text>`);
  if (!xs.length) {
    g.push(`<text x="${x0 + w / 2}" y="${y0 + h / 2}" text-anchor="middle" font-size="12" fill="#666">no data</text>`);
    return g.join('\n');
  }
  const lx = xs.map((x) => Math.log2(x));
  const xmin = Math.min(...lx), xmax = Math.max(...lx);
  let ymin = yFromZero ? 0 : Math.min(...ys), ymax = Math.max(...ys);
  if (!yFromZero) {
    const pad = Math.max((ymax - ymin) * 0.15, 0.002);
    ymin -= pad;
    ymax += pad;
  }
  if (ymax <= ymin) ymax = ymin + 1;
  const X = (x: number) => x0 + m.l + (xmax > xmin ? ((Math.log2(x) - xmin) / (xmax - xmin)) * pw : pw / 2);
  const Y = (y: number) => y0 + m.t + ph - ((y - ymin) / (ymax - ymin)) * ph;
  g.push(`<rect x="${x0 + m.l}" y="${y0 + m.t}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`);
  for (let i = 0; i <= 4; i++) {
    const v = ymin + ((ymax - ymin) * i) / 4;
    const lab = yFromZero ? f1(v) : v.toFixed(3);
    g.push(`<line x1="${x0 + m.l}" x2="${x0 + m.l + pw}" y1="${Y(v)}" y2="${Y(v)}" stroke="#eee"/>`);
    g.push(`<text x="${x0 + m.l - 4}" y="${Y(v) + 4}" text-anchor="end" font-size="10">${lab}</text>`);
  }
  for (const x of [...new Set(xs)].sort((a, b) => a - b)) {
    g.push(`<text x="${X(x)}" y="${y0 + m.t + ph + 14}" text-anchor="middle" font-size="10">${x}</text>`);
  }
  g.push(`<text x="${x0 + m.l + pw / 2}" y="${y0 + h - 8}" text-anchor="middle" font-size="11">cardinality C (equal MACs)</text>`);
  g.push(`<text x="${x0 + 12}" y="${y0 + m.t + ph / 2}" text-anchor="middle" font-size="11" transform="rotate(-90 ${x0 + 12} ${y0 + m.t + ph / 2})">${esc(yLabel)}</text>`);
  series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length];
    const pts = [...s.points].sort((a, b) => a.x - b.x);
    if (pts.length > 1)
      g.push(`<polyline fill="none" stroke="${c}" stroke-width="1.5"${s.dashed ? ' stroke-dasharray="4 3"' : ''} points="${pts.map((p) => `${X(p.x).toFixed(1)},${Y(p.y).toFixed(1)}`).join(' ')}"/>`);
    for (const p of pts) {
      if (p.lo !== undefined && p.hi !== undefined)
        g.push(`<line x1="${X(p.x)}" x2="${X(p.x)}" y1="${Y(p.lo).toFixed(1)}" y2="${Y(p.hi).toFixed(1)}" stroke="${c}"/>`);
      g.push(`<circle cx="${X(p.x).toFixed(1)}" cy="${Y(p.y).toFixed(1)}" r="3" fill="${c}"/>`);
    }
    g.push(`<line x1="${x0 + m.l + 8}" x2="${x0 + m.l + 24}" y1="${y0 + m.t + 12 + 14 * i}" y2="${y0 + m.t + 12 + 14 * i}" stroke="${c}" stroke-width="2"${s.dashed ? ' stroke-dasharray="4 3"' : ''}/>`);
    g.push(`<text x="${x0 + m.l + 28}" y="${y0 + m.t + 16 + 14 * i}" font-size="10">${esc(s.label)}</text>`);
  });
  return g.join('\n');
}

/** Throughput (and accuracy, when present) against cardinality for the equal-MACs families. */
export function svg(r: ReportInput): string {
  const panels: string[] = [];
  const W = 460, H = 300;
  if (r.speed) {
    const fam = (family: string, mode: 'train' | 'infer') => ({
      label: `${family} ${mode}${mode === 'train' ? ` (batch ${r.speed!.rows.find((x) => x.families.includes(family as never))?.train?.batch ?? '?'})` : ''}`,
      dashed: mode === 'infer',
      points: r.speed!.rows
        .filter((x) => x.families.includes(family as never) && x[mode])
        .map((x) => ({ x: x.cardinality, y: x[mode]!.imgPerSec.median, lo: x[mode]!.imgPerSec.min, hi: x[mode]!.imgPerSec.max })),
    });
    const s50 = [fam('resnext50-fixed', 'train'), fam('resnext50-fixed', 'infer')].filter((s) => s.points.length);
    const s29 = [fam('resnext29-fixed', 'train'), fam('resnext29-fixed', 'infer')].filter((s) => s.points.length);
    const size = (k: 'imagenet' | 'cifar') => r.speed!.rows.find((x) => x.kind === k)?.train?.size ?? r.speed!.rows.find((x) => x.kind === k)?.infer?.size;
    if (s50.length) panels.push(panel(0, 0, W, H, `ResNeXt-50 family, ${size('imagenet')}x${size('imagenet')}, ${r.config.device} ${r.config.precision}`, 'images / s', s50));
    if (s29.length) panels.push(panel(0, 0, W, H, `ResNeXt-29 family at 1x64d MACs, ${size('cifar')}x${size('cifar')}`, 'images / s', s29));
  }
  if (r.accuracy) {
    const a = r.accuracy;
    panels.push(
      panel(0, 0, W, H, `${a.dataset.split('(')[0]} test top-1, ${a.config.seeds} seeds (mean ± std)`, 'test accuracy', [
        { label: `${(a.rows[0].macs / 1e6).toFixed(1)} M MACs, ${a.config.epochs} epochs`, points: a.rows.map((x) => ({ x: x.cardinality, y: x.mean, lo: x.mean - x.std, hi: x.mean + x.std })) },
      ], false),
    );
  }
  const n = Math.max(1, panels.length);
  const width = W * n, height = H + 22;
  const body = panels.map((p, i) => `<g transform="translate(${i * W},0)">\n${p}\n</g>`).join('\n');
  const foot = `${r.env.package.name} ${r.env.package.version} ${r.env.git.commit?.slice(0, 8) ?? ''}, ${r.config.device === 'cuda' && r.env.gpu ? String(r.env.gpu.name) : r.env.cpu.model}, ${r.env.date.slice(0, 10)}`;
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">\n` +
    `<rect width="${width}" height="${height}" fill="white"/>\n${body}\n` +
    `<text x="6" y="${height - 6}" font-size="9" fill="#666">${esc(foot)}</text>\n</svg>\n`
  );
}
