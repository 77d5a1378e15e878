#!/usr/bin/env node
// Writes $OUT/summary.json from what a GPU check left in $OUT (results.jsonl from check.js,
// autotune.jsonl from the CUDA backend, phases.jsonl from run.sh) and prints a short report, so
// the end of the run's output (all a truncated output tail may keep) answers the questions.
//   node summary.js OUT_DIR

const fs = require('node:fs');
const path = require('node:path');

const out = path.resolve(process.argv[2] || 'gpu-check-out');
const lines = (f) => {
  const p = path.join(out, f);
  if (!fs.existsSync(p)) return [];
  return fs
    .readFileSync(p, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => {
      try {
        return JSON.parse(l);
      } catch {
        return null;
      }
    })
    .filter(Boolean);
};

const results = lines('results.jsonl');
const tune = lines('autotune.jsonl');
const phases = lines('phases.jsonl');

// The last record of each case wins (a resumed suite may re-record after a timeout).
const byCase = new Map();
for (const r of results) byCase.set(`${r.suite}/${r.case}`, r);
const cases = [...byCase.values()];
const suites = {};
for (const r of cases) {
  const s = (suites[r.suite] ??= { pass: 0, fail: 0, error: 0, timeout: 0, skip: 0, failed: [] });
  s[r.status] = (s[r.status] ?? 0) + 1;
  if (r.status !== 'pass' && r.status !== 'skip') s.failed.push(`${r.case}: ${r.status}${r.detail ? ` (${String(r.detail).slice(0, 300)})` : ''}`);
}
const info = cases.find((r) => r.case === 'deviceInfo')?.data ?? null;
const autotune = {
  graphs: tune.length,
  fromCache: tune.filter((t) => t.fromCache).length,
  plansBuilt: tune.reduce((a, t) => a + (t.built || 0), 0),
  plansTimed: tune.reduce((a, t) => a + (t.timed || 0), 0),
  runtimeCompiledCandidates: tune.reduce((a, t) => a + (t.runtimeCompiled || 0), 0),
  totalMs: Math.round(tune.reduce((a, t) => a + (t.tuneMs || 0), 0)),
  slowest: [...tune].sort((a, b) => b.tuneMs - a.tuneMs).slice(0, 5).map((t) => ({ op: t.op, dtype: t.dtype, key: t.key, tuneMs: Math.round(t.tuneMs), built: t.built, chosen: t.chosen, chosenMs: t.chosenMs, stop: t.stop })),
  perGraph: tune.map((t) => ({ op: t.op, dtype: t.dtype, key: t.key, candidates: t.candidates, built: t.built, timed: t.timed, tuneMs: Math.round(t.tuneMs), chosen: t.chosen, chosenMs: t.chosenMs, fromCache: t.fromCache })),
};
const bott = byCase.get('bottleneck/bottleneck: compare with PyTorch');
const r50 = byCase.get('resnext50/resnext50_32x4d PyTorch reference (same run)');
const phaseSeconds = Object.fromEntries(phases.map((p) => [p.phase, p.seconds]));
const summary = {
  dryRun: phases.some((p) => p.dryRun),
  gpu: info ? { name: info.name, computeCapability: info.computeCapability, cudnn: info.cudnnVersion, cudnnBuilt: info.cudnnBuiltVersion, driverCuda: info.driverCudaVersion, cublas: info.cublasVersion, backendAbi: info.backendAbi } : null,
  totals: cases.reduce((a, r) => ((a[r.status] = (a[r.status] ?? 0) + 1), a), {}),
  suites,
  phases: phaseSeconds,
  autotune,
  bottleneck: bott ? { status: bott.status, detail: bott.detail, conv: bott.data?.conv ?? null, tensors: bott.data?.rows ?? null } : null,
  resnext50: r50 ? { status: r50.status, detail: r50.detail, ratio: r50.data?.ratio ?? null, ours: r50.data?.ours ?? null, torch: r50.data?.torch?.rows ?? null } : null,
  ok: cases.length > 0 && cases.every((r) => r.status === 'pass' || r.status === 'skip'),
};
fs.writeFileSync(path.join(out, 'summary.json'), `${JSON.stringify(summary, null, 1)}\n`);

const p = (s) => process.stdout.write(`${s}\n`);
// The long lists first, so the summary block stays at the very end of the output.
if (tune.length) {
  p(`autotune per graph (${tune.length}): op dtype | candidates built timed | tune ms | chosen (ms) | key`);
  for (const t of tune)
    p(`  ${t.op} ${t.dtype} | ${t.candidates} ${t.built} ${t.timed} | ${Math.round(t.tuneMs)} | ${t.chosen}${t.fromCache ? ' [cache]' : ''} (${t.chosenMs}) | ${t.key}`);
}
if (bott?.data?.rows) {
  const rows = [...bott.data.rows].sort((a, b) => b.err / b.tol - a.err / a.tol);
  p(`bottleneck vs PyTorch, largest relative errors (of ${rows.length}):`);
  for (const r of rows.slice(0, 10)) p(`  ${r.ok ? 'ok  ' : 'OVER'} ${r.k} ${Number(r.err).toExponential(2)} (tol ${r.tol})`);
}
p('================ gpu-check summary ================');
p(`${summary.dryRun ? 'DRY RUN on the CPU (nothing ran on a GPU)' : `GPU: ${summary.gpu ? `${summary.gpu.name} (sm ${summary.gpu.computeCapability}), cuDNN ${summary.gpu.cudnn} (built ${summary.gpu.cudnnBuilt}), driver CUDA ${summary.gpu.driverCuda}` : 'unknown (CUDA did not load)'}`}`);
p(`cases: ${JSON.stringify(summary.totals)}`);
for (const [name, s] of Object.entries(suites)) {
  p(`  ${name}: ${s.pass} pass, ${s.fail} fail, ${s.error} error, ${s.timeout} timeout, ${s.skip} skip`);
  for (const f of s.failed.slice(0, 12)) p(`    - ${f}`);
}
p(`phases (s): ${JSON.stringify(phaseSeconds)}`);
p(`autotune: ${autotune.graphs} graphs (${autotune.fromCache} from the plan cache), ${autotune.plansBuilt} plans built, ${autotune.plansTimed} timed, ${(autotune.totalMs / 1000).toFixed(1)} s in total`);
for (const t of autotune.slowest) p(`    ${t.op} ${t.dtype} ${t.tuneMs} ms, built ${t.built}, chose ${t.chosen} (${t.chosenMs} ms) [${t.stop}] ${t.key}`);
if (summary.bottleneck) {
  p(`bottleneck vs PyTorch: ${summary.bottleneck.status}: ${summary.bottleneck.detail}`);
  for (const c of summary.bottleneck.conv ?? []) p(`    ${c.conv}: ours ${JSON.stringify(c.ours)} torch ${JSON.stringify(c.torch)} ratio ${JSON.stringify(c.ratio)}`);
}
if (summary.resnext50) p(`resnext50_32x4d step vs PyTorch: ${summary.resnext50.status}: ${summary.resnext50.detail}`);
p(`RESULT: ${summary.ok ? 'ALL PASSED' : 'FAILURES (see above)'}; details in ${path.join(out, 'summary.json')}`);
process.exit(0);
