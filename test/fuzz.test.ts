/**
 * A short range of the seeded API fuzzer (test/fuzz/api-fuzz.js): random and hostile calls to
 * every public op and creation function, batches in child processes. Any crash or hang fails
 * with its one-line reproducer. Longer runs: `npm run fuzz -- --from 0 --to 100000`.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

/** Runs a fuzzer script over cases 0-2,000 in strict mode; its status, summary line and findings. */
function fuzz(name: string, extra: string[] = []) {
  const script = path.join(__dirname, 'fuzz', name);
  const r = spawnSync(process.execPath, [script, '--from', '0', '--to', '2000', ...extra, '--strict'], {
    encoding: 'utf8',
    timeout: 230_000,
  });
  const summary = r.stdout.trim().split('\n').at(-1) ?? '';
  return { status: r.status, summary, findings: r.stdout.split('\n').filter((l) => /^(CRASH|HANG|NONRX)/.test(l)) };
}
const clean = {
  status: 0,
  summary: expect.stringMatching(/^fuzz: 2000 cases, 0 crashes, 0 hangs, 0 non-ResnextErrors/),
  findings: [],
};

test('2,000 fuzz cases: no crash, no hang, only ResnextErrors', () => {
  expect(fuzz('api-fuzz.js', ['--batch', '250'])).toEqual(clean);
}, 240_000);

test('2,000 cases of the independently written fuzzer (test/fuzz/fuzz.js): no crash, no hang, only ResnextErrors', () => {
  expect(fuzz('fuzz.js')).toEqual(clean);
}, 240_000);
