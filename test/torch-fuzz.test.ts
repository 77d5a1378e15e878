/**
 * A short range of the seeded loadTorch fuzzer (test/fuzz/torch-fuzz.js): mutated torch.save
 * files (zip and legacy) and synthesised hostile pickles, batches in child processes under a
 * timeout and a heap cap. Any crash, hang, over-memory case, non-ResnextError, non-ERR_IO code or
 * message not naming the file fails with its one-line reproducer. It runs against dist/ (the
 * built package). Longer runs: `node test/fuzz/torch-fuzz.js --from 0 --to 20000`.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

test('300 torch-fuzz cases: no crash, no hang, only ERR_IO naming the file', () => {
  const script = path.join(__dirname, 'fuzz', 'torch-fuzz.js');
  const r = spawnSync(process.execPath, [script, '--from', '0', '--to', '300', '--batch', '150', '--strict'], {
    encoding: 'utf8',
    timeout: 38_000,
  });
  const summary = r.stdout.trim().split('\n').at(-1) ?? '';
  expect({ status: r.status, summary, findings: r.stdout.split('\n').filter((l) => /^[A-Z]+ seed=/.test(l)) }).toEqual({
    status: 0,
    summary: expect.stringMatching(/^torch-fuzz: 300 cases, 0 crashes, 0 hangs, 0 over-memory, 0 non-ResnextErrors, 0 non-ERR_IO, 0 unnamed-file, 0 internal-JS-errors, 0 slow, 0 leaks, 0 bad-messages/),
    findings: [],
  });
}, 40_000);
