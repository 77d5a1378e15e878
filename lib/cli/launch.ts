/**
 * `resnext train --nproc-per-node N [--nnodes M --node-rank K --master-addr HOST --master-port P]`:
 * starts N local worker processes of `resnext train` (like torchrun), each with RANK, LOCAL_RANK,
 * WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT set and the machine's cores split
 * between them (`--threads`, unless given). When a worker fails, the launcher says which rank and
 * how; the others end on their own with an error naming it (their collectives fail once the
 * rank's connections close), and any still running after the grace period are stopped.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as os from 'node:os';

export interface LaunchOptions {
  nprocPerNode: number;
  nnodes: number;
  nodeRank: number;
  masterAddr: string;
  masterPort: number;
  /** `resnext train` arguments for the workers (without the launcher's flags). */
  args: string[];
  /** The CLI script to run (dist/cli/main.js). */
  script: string;
  /** How long the other workers get to end on their own after one failed, ms (default 30000). */
  graceMs?: number;
  stderr?: NodeJS.WritableStream;
}

/** Starts the workers and resolves with the exit code: 0 when all succeed, else the first failure's. */
export function launch(o: LaunchOptions): Promise<number> {
  const err = o.stderr ?? process.stderr;
  const world = o.nprocPerNode * o.nnodes;
  const cores = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  const threads = Math.max(1, Math.floor(cores / o.nprocPerNode));
  const args = o.args.includes('--threads') ? o.args : [...o.args, '--threads', String(threads)];
  const children: { rank: number; p: ChildProcess; done: boolean }[] = [];
  return new Promise((resolve) => {
    let failure: number | null = null;
    let left = o.nprocPerNode;
    let killTimer: NodeJS.Timeout | null = null;
    const forward = (sig: NodeJS.Signals) => () => {
      for (const c of children) if (!c.done) c.p.kill(sig);
    };
    const onInt = forward('SIGINT');
    const onTerm = forward('SIGTERM');
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onTerm);
    for (let local = 0; local < o.nprocPerNode; local++) {
      const rank = o.nodeRank * o.nprocPerNode + local;
      const env = {
        ...process.env, RANK: String(rank), LOCAL_RANK: String(local), WORLD_SIZE: String(world), LOCAL_WORLD_SIZE: String(o.nprocPerNode),
        MASTER_ADDR: o.masterAddr, MASTER_PORT: String(o.masterPort),
      };
      const p = spawn(process.execPath, [o.script, 'train', ...args], { env, stdio: 'inherit' });
      const c = { rank, p, done: false };
      children.push(c);
      p.on('exit', (code, signal) => {
        c.done = true;
        left--;
        if (code !== 0) {
          err.write(`resnext train: worker rank ${rank} (pid ${p.pid}) ${signal ? `was killed by ${signal}` : `exited with code ${code}`}\n`);
          if (failure === null) {
            failure = code ?? 1;
            killTimer = setTimeout(() => {
              for (const o2 of children)
                if (!o2.done) {
                  err.write(`resnext train: stopping worker rank ${o2.rank}, still running ${(o.graceMs ?? 30000) / 1000} s after rank ${rank} failed\n`);
                  o2.p.kill('SIGKILL');
                }
            }, o.graceMs ?? 30000);
          }
        }
        if (left === 0) {
          if (killTimer) clearTimeout(killTimer);
          process.off('SIGINT', onInt);
          process.off('SIGTERM', onTerm);
          resolve(failure ?? 0);
        }
      });
    }
  });
}
