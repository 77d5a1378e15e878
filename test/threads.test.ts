/**
 * Errors found by queued kernels belong to the thread (JS environment) that queued them, and a
 * worker can be terminated with reads and kernels in flight without harming the process.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import * as rx from '../lib';

const dist = path.join(__dirname, '..', 'dist', 'index.js');

test("a worker's failing kernels never reject the main thread's reads, and its own errors reach it", async () => {
  // The worker queues crossEntropy with a bad target (the kernel finds it), then syncs: it must
  // see ERR_ARG itself, every time, while the main thread's reads all succeed.
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    const rx = require(workerData);
    let seen = 0;
    for (let i = 0; i < 200; i++) {
      const logits = rx.randn([4, 3]);
      const bad = rx.tensor(Int32Array.from([0, 1, 9, 2]), [4]);
      const loss = rx.crossEntropy(logits, bad);
      try { loss.dataSync(); } catch (e) { if (e.code === 'ERR_ARG') seen++; }
      for (const t of [logits, bad, loss]) t.dispose();
    }
    parentPort.postMessage(seen);`;
  const worker = new Worker(code, { eval: true, workerData: dist });
  const seen = new Promise<number>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  let ok = 0;
  let failed = 0;
  let done = false;
  void seen.then(() => {
    done = true;
  });
  while (!done) {
    const a = rx.randn([16, 16]);
    const b = rx.matmul(a, a);
    try {
      await b.data();
      b.dataSync();
      ok++;
    } catch {
      failed++;
    }
    a.dispose();
    b.dispose();
  }
  expect(await seen).toBe(200); // the worker saw each of its own errors
  expect(failed).toBe(0); // and the main thread none of them
  expect(ok).toBeGreaterThan(0);
});

test('terminating a worker while its data() and kernels are in flight leaves the process well', () => {
  // In a child process, so an abort would show as a signal rather than kill jest.
  const script = `
    const { Worker } = require('node:worker_threads');
    const rx = require(${JSON.stringify(dist)});
    const code = \`
      const rx = require(require('node:worker_threads').workerData);
      const x = rx.randn([8, 64, 32, 32]); const w = rx.randn([64, 64, 3, 3]);
      let y = x; for (let i = 0; i < 20; i++) y = rx.conv2d(y, w, { padding: 1 });
      y.data().then(() => {}); require('node:worker_threads').parentPort.postMessage('queued');\`;
    let n = 0;
    const next = () => {
      const wk = new Worker(code, { eval: true, workerData: ${JSON.stringify(dist)} });
      wk.once('message', () => setTimeout(() => wk.terminate().then(() => (++n < 4 ? next() : finish())), n * 20));
      wk.once('error', (e) => { console.error('worker error', e); process.exit(3); });
    };
    const finish = () => {
      const s = rx.sum(rx.ones([1000])).item();
      console.log('alive', s);
    };
    next();`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 90_000 });
  expect({ signal: r.signal, status: r.status, stderr: r.stderr.slice(-500) }).toEqual({ signal: null, status: 0, stderr: '' });
  expect(r.stdout).toContain('alive 1000');
});
