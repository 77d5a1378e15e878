/**
 * Data-parallel training over gloo on loopback (issue 15). Two worker processes
 * (test/distributed/worker.js) train a small ResNeXt-29 with synchronised batch norm; they are
 * compared with one process training on the same global batches, checked for bit-identical
 * parameters after every step, killed, and resumed. Needs the gloo addon (`npm run build:gloo`,
 * Debian's libgloo-dev): skipped, saying so, without it.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadGloo } from '../lib/train/distributed/gloo';

const root = path.resolve(__dirname, '..');
const worker = path.join(root, 'test', 'distributed', 'worker.js');
const haveGloo = fs.existsSync(path.join(root, 'build-gloo', 'Release', 'resnext_gloo.node')) || !!process.env.RESNEXT_GLOO_ADDON;
const d = haveGloo ? describe : describe.skip;
if (!haveGloo) console.warn('distributed.test.ts skipped: build the gloo addon with `npm run build:gloo` (needs libgloo-dev)');

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  endedAt: number;
}

function start(opts: Record<string, unknown>, env: Record<string, string>): Promise<Run> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [worker], { env: { ...process.env, ...env, RX_WORKER: JSON.stringify(opts) }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    p.stdout.on('data', (c) => (stdout += c));
    p.stderr.on('data', (c) => (stderr += c));
    const timer = setTimeout(() => p.kill('SIGKILL'), 80000);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, endedAt: Date.now() });
    });
  });
}

let port = 20000 + Math.floor(Math.random() * 20000);
function world(n: number, opts: Record<string, unknown>): Promise<Run[]> {
  port++;
  return Promise.all(
    Array.from({ length: n }, (_, r) =>
      start({ ...opts, out: opts.out ? `${opts.out}.${r}` : undefined, hashes: opts.hashes ? `${opts.hashes}.${r}` : undefined }, {
        RANK: String(r), WORLD_SIZE: String(n), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), RESNEXT_NUM_THREADS: '1',
      }),
    ),
  );
}

const floats = (f: string) => new Float32Array(fs.readFileSync(f).buffer.slice(0));
const base = { steps: 20, perEpoch: 10, batch: 16, size: 16, lr: 0.00005, syncBN: true, threads: 1 };

test('a missing gloo library gives ERR_DEVICE naming what to install', () => {
  const prev = process.env.RESNEXT_GLOO_ADDON;
  process.env.RESNEXT_GLOO_ADDON = path.join(os.tmpdir(), 'no-such-dir', 'resnext_gloo.node');
  try {
    expect(() => loadGloo()).toThrow(expect.objectContaining({ code: 'ERR_DEVICE', message: expect.stringMatching(/apt-get install libgloo-dev.*npm run build:gloo/) }));
  } finally {
    if (prev === undefined) delete process.env.RESNEXT_GLOO_ADDON;
    else process.env.RESNEXT_GLOO_ADDON = prev;
  }
});

d('data-parallel training over gloo (2 processes, loopback)', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rx-dist-'));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  test('2 ranks with syncBatchNorm match one process on the same global batches; ranks are bit-identical after every step', async () => {
    const [runs, single] = await Promise.all([
      world(2, { ...base, out: path.join(tmp, 'dp'), hashes: path.join(tmp, 'h') }),
      start({ ...base, single: true, out: path.join(tmp, 'single') }, {}),
    ]);
    for (const r of [...runs, single]) expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: expect.any(String) });
    const h0 = fs.readFileSync(path.join(tmp, 'h.0'), 'utf8').trim().split('\n');
    const h1 = fs.readFileSync(path.join(tmp, 'h.1'), 'utf8').trim().split('\n');
    expect(h0).toHaveLength(20);
    expect(h1).toEqual(h0);
    const a = floats(path.join(tmp, 'dp.0'));
    expect(Buffer.compare(Buffer.from(a.buffer), Buffer.from(floats(path.join(tmp, 'dp.1')).buffer))).toBe(0);
    const b = floats(path.join(tmp, 'single'));
    let d2 = 0, n2 = 0, md = 0, mb = 0;
    for (let i = 0; i < a.length; i++) {
      const e = a[i] - b[i];
      d2 += e * e;
      n2 += b[i] * b[i];
      md = Math.max(md, Math.abs(e));
      mb = Math.max(mb, Math.abs(b[i]));
    }
    const relL2 = Math.sqrt(d2 / n2);
    console.log(`2 ranks vs 1 process after 20 steps: relative L2 ${relL2.toExponential(2)}, max |diff| / max |p| ${(md / mb).toExponential(2)}`);
    expect(relL2).toBeLessThan(1e-5);
    fs.writeFileSync(path.join(tmp, 'reference.ok'), '');
  }, 90000);

  test('allreduce (sum, avg), broadcast and barrier on tensors', async () => {
    const runs = await world(2, { collectives: true });
    const out = runs.map((r) => JSON.parse(r.stdout.trim()));
    for (const o of out) expect(o).toEqual({ rank: o.rank, sum: [3, 30, -1], avg: [0.5, 1], bcast: [7, 8] });
  }, 30000);

  test('a rank that stops answering ends the other with a timeout error, not a hang', async () => {
    port++;
    const env = (r: number) => ({ RANK: String(r), WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) });
    const opts = { ...base, steps: 10, stopAtStep: 2, timeoutMs: 3000 };
    const p1 = spawn(process.execPath, [worker], { env: { ...process.env, ...env(1), RX_WORKER: JSON.stringify(opts) }, stdio: 'ignore' });
    try {
      const t0 = Date.now();
      const r0 = await start(opts, env(0));
      console.log(`rank 0 ended ${Date.now() - t0} ms after starting (rank 1 stopped at step 2, timeout 3 s): ${r0.stderr.trim()}`);
      expect(r0.code).toBe(3);
      expect(r0.stderr).toMatch(/ERR_IO .*rank 1 failed or did not answer within 3000 ms/);
    } finally {
      p1.kill('SIGKILL');
    }
  }, 60000);

  test('killing one rank ends the other with an error naming it, within 30 s', async () => {
    const runs = await world(2, { ...base, steps: 10, killAtStep: 3, killRank: 1 });
    expect(runs[1].signal).toBe('SIGKILL');
    expect(runs[0].code).toBe(3);
    expect(runs[0].stderr).toMatch(/ERR_IO .*rank 1 died/);
    const after = runs[0].endedAt - runs[1].endedAt;
    console.log(`rank 0 ended ${after} ms after rank 1 was killed: ${runs[0].stderr.trim()}`);
    expect(after).toBeLessThan(30000);
  }, 60000);

  test('resume after a kill continues exactly (the same parameters as the uninterrupted run)', async () => {
    const ck = path.join(tmp, 'ck');
    const killed = await world(2, { ...base, checkpointDir: ck, checkpointEvery: 6, killAtStep: 13, killRank: 1 });
    expect(killed[1].signal).toBe('SIGKILL');
    expect(fs.readFileSync(path.join(ck, 'latest'), 'utf8').trim()).toBe('step-00000012');
    const resumed = await world(2, { ...base, checkpointDir: ck, checkpointEvery: 6, resume: true, out: path.join(tmp, 'resumed') });
    for (const r of resumed) expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: expect.any(String) });
    const ref = path.join(tmp, 'dp.0');
    if (!fs.existsSync(ref)) return; // the first test failed
    const a = floats(path.join(tmp, 'resumed.0'));
    expect(Buffer.compare(Buffer.from(a.buffer), Buffer.from(floats(ref).buffer))).toBe(0);
    expect(Buffer.compare(Buffer.from(a.buffer), Buffer.from(floats(path.join(tmp, 'resumed.1')).buffer))).toBe(0);
  }, 90000);

  test('resnext train --nproc-per-node 2 starts two workers that train together', async () => {
    const cli = path.join(root, 'dist', 'cli', 'main.js');
    const r = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const p = spawn(process.execPath, [cli, 'train', '--nproc-per-node', '2', '--master-port', String(++port), '--dataset', 'synthetic', '--size', '8',
        '--synthetic-size', '32', '--limit-test', '16', '--epochs', '1', '--batch-size', '16', '--cardinality', '2', '--width', '2', '--stem-channels', '8',
        '--stage-channels', '16,32,64', '--workers', '0', '--sync-bn', '--no-progress', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      p.stdout.on('data', (c) => (out += c));
      p.stderr.on('data', (c) => (out += c));
      const timer = setTimeout(() => p.kill('SIGKILL'), 60000);
      p.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code, out });
      });
    });
    expect(r).toEqual({ code: 0, out: expect.stringContaining('"steps":2') });
    expect(r.out.match(/"steps":2/g)).toHaveLength(1); // only rank 0 reports
  }, 60000);

  test('the launcher reports a worker that dies, and the other ends with an error naming it within 30 s', async () => {
    const cli = path.join(root, 'dist', 'cli', 'main.js');
    const p = spawn(process.execPath, [cli, 'train', '--nproc-per-node', '2', '--master-port', String(++port), '--dataset', 'synthetic', '--size', '8',
      '--synthetic-size', '4000', '--limit-test', '16', '--epochs', '5', '--batch-size', '16', '--cardinality', '2', '--width', '2', '--stem-channels', '8',
      '--stage-channels', '16,32,64', '--workers', '0', '--no-progress', '--dist-timeout', '20'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (c) => (out += c));
    p.stderr.on('data', (c) => (out += c));
    const exited = new Promise<number | null>((resolve) => p.on('close', (code) => resolve(code)));
    try {
      // Wait for training to start, then kill the worker with RANK=1.
      const deadline = Date.now() + 30000;
      while (!out.includes('resnext train: resnext29') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      await new Promise((r) => setTimeout(r, 1000));
      const kids = fs.readFileSync(`/proc/${p.pid}/task/${p.pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
      const rank1 = kids.find((k) => fs.readFileSync(`/proc/${k}/environ`, 'utf8').split('\0').includes('RANK=1'));
      expect(rank1).toBeDefined();
      const t0 = Date.now();
      process.kill(rank1!, 'SIGKILL');
      const code = await exited;
      const ms = Date.now() - t0;
      console.log(`launcher exited ${ms} ms after rank 1 was killed, code ${code}:\n${out.trim().split('\n').slice(-3).join('\n')}`);
      expect(code).not.toBe(0);
      expect(out).toMatch(/worker rank 1 \(pid \d+\) was killed by SIGKILL/);
      expect(out).toMatch(/rank 1 died/);
      expect(ms).toBeLessThan(30000);
    } finally {
      p.kill('SIGKILL');
    }
  }, 90000);
});
