/**
 * Process groups for data-parallel training (issue 15): `init({ backend, rank, worldSize,
 * initMethod })` or the environment variables RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT that
 * torchrun (and `resnext train --nproc-per-node`) set.
 *
 * Rendezvous: rank 0 serves a small TCP key-value store on MASTER_ADDR:MASTER_PORT (./store.ts);
 * every rank's gloo context exchanges its transport address through it and connects a full mesh
 * over gloo's TCP transport. Each rank also keeps a presence connection to that store, so when a
 * rank dies the others learn which one, and a failed collective says so.
 *
 * Collectives act in place on float32 CPU tensors and are asynchronous (Promises, like data()):
 * they run on the group's thread, in the order they were called, each under the group's timeout.
 */
import * as net from 'node:net';
import { describe, fail, ResnextError } from '../../native/errors';
import { tensor } from '../../tensor/create';
import { Tensor } from '../../tensor/tensor';
import { noGrad } from '../../autograd/engine';
import { loadGloo, type GlooGroup } from './gloo';
import { Presence, StoreServer } from './store';

export type Backend = 'gloo' | 'nccl';
export type ReduceOp = 'sum' | 'avg';

export interface InitOptions {
  /** 'gloo' (CPU tensors; default) or 'nccl' (CUDA tensors). */
  backend?: Backend;
  /** This process's rank (default: RANK). */
  rank?: number;
  /** Number of processes (default: WORLD_SIZE). */
  worldSize?: number;
  /** 'env://' (MASTER_ADDR and MASTER_PORT; the default) or 'tcp://host:port'. */
  initMethod?: string;
  /** Timeout of the rendezvous and of every collective, ms (default RESNEXT_DIST_TIMEOUT_MS or 120000). */
  timeoutMs?: number;
  /**
   * The address other ranks reach this process on (gloo's TCP transport): default
   * RESNEXT_DIST_HOST, else 127.0.0.1 when the master is on loopback, else this host's name.
   */
  hostname?: string;
}

/** Communication counters of a group (for the benchmark). */
export interface CommStats {
  calls: number;
  /** Elements reduced or broadcast. */
  elements: number;
  /** Bytes this rank sent, by the ring allreduce's 2(W-1)/W and broadcast's per-rank share. */
  bytesSent: number;
  /** Time from submitting a collective to its completion, summed, ms. */
  ms: number;
}

function envInt(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) fail('ERR_ARG', 'distributed.init', name, 'a non-negative integer', describe(v));
  return n;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}

/** The native message behind a collective's error (so an outer explain() rewraps it once). */
const rawCause = new WeakMap<ResnextError, string>();

export class ProcessGroup {
  readonly stats: CommStats = { calls: 0, elements: 0, bytesSent: 0, ms: 0 };
  /** The first rank known to have died (null while all are alive). */
  deadRank: number | null = null;
  private closed = false;

  constructor(
    readonly backend: Backend,
    readonly rank: number,
    readonly worldSize: number,
    readonly timeoutMs: number,
    private readonly g: GlooGroup,
    private readonly server: StoreServer | null,
    private readonly presence: Presence | null,
  ) {}

  private check(op: string): void {
    if (this.closed) throw new ResnextError(`${op}: the process group expected to be open, received a destroyed one`, 'ERR_ARG');
  }

  private count(n: number, ring: boolean, ms: number): void {
    const w = this.worldSize;
    this.stats.calls++;
    this.stats.elements += n;
    this.stats.bytesSent += ring ? (4 * n * 2 * (w - 1)) / w : this.rank === 0 ? 4 * n : 0;
    this.stats.ms += ms;
  }

  /**
   * A collective failed: the error names the rank that died when the presence channel reports
   * one (waiting briefly for that report), and says what happened.
   */
  async explain(op: string, e: unknown): Promise<ResnextError> {
    if (e instanceof ResnextError && !rawCause.has(e)) return e; // not a collective's failure
    const deadline = Date.now() + 2000;
    while (this.deadRank === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    return this.failure(op, e);
  }

  /** The same as explain() without waiting (for collectives inside synchronous code). */
  failure(op: string, e: unknown): ResnextError {
    const msg = (e instanceof ResnextError && rawCause.get(e)) || (e instanceof Error ? e.message : String(e));
    const who =
      this.deadRank !== null
        ? `rank ${this.deadRank} died or lost its connection (seen by rank ${this.rank})`
        : this.worldSize === 2
          ? `rank ${1 - this.rank} failed or did not answer within ${this.timeoutMs} ms (seen by rank ${this.rank})`
          : `a peer failed or did not answer within ${this.timeoutMs} ms (seen by rank ${this.rank}; gloo's message below names its address)`;
    const err = new ResnextError(`${op}: ${who}: ${msg}`, 'ERR_IO');
    rawCause.set(err, msg);
    return err;
  }

  private async run(op: string, n: number, ring: boolean, p: () => Promise<void>): Promise<void> {
    this.check(op);
    const t0 = performance.now();
    try {
      await p();
    } catch (e) {
      throw await this.explain(op, e);
    }
    this.count(n, ring, performance.now() - t0);
  }

  private runSync(op: string, n: number, ring: boolean, f: () => void): void {
    this.check(op);
    const t0 = performance.now();
    try {
      f();
    } catch (e) {
      throw this.failure(op, e);
    }
    this.count(n, ring, performance.now() - t0);
  }

  /** In-place allreduce of a Float32Array (sum or mean over ranks). */
  allreduceArray(data: Float32Array, op: ReduceOp = 'sum'): Promise<void> {
    return this.run('allreduce', data.length, true, () => this.g.allreduce(data, op === 'avg'));
  }
  /** allreduceArray() that blocks the JS thread (batch-norm statistics inside forward and backward). */
  allreduceArraySync(data: Float32Array, op: ReduceOp = 'sum'): void {
    this.runSync('allreduce', data.length, true, () => this.g.allreduceSync(data, op === 'avg'));
  }
  broadcastArray(data: Float32Array, root = 0): Promise<void> {
    return this.run('broadcast', data.length, false, () => this.g.broadcast(data, root));
  }
  broadcastArraySync(data: Float32Array, root = 0): void {
    this.runSync('broadcast', data.length, false, () => this.g.broadcastSync(data, root));
  }

  private floats(op: string, t: Tensor): void {
    if (!(t instanceof Tensor)) fail('ERR_ARG', op, 'tensor', 'a Tensor', describe(t));
    if (t.dtype !== 'float32') fail('ERR_DTYPE', op, 'tensor', 'a float32 tensor', t.dtype);
    if (this.backend === 'gloo' && t.device !== 'cpu') fail('ERR_DEVICE', op, 'tensor', "a CPU tensor (backend 'gloo')", t.device);
  }

  /** Allreduce of a tensor, in place: every rank ends with the sum (or mean) of all ranks' values. */
  async allreduce(t: Tensor, options: { op?: ReduceOp } = {}): Promise<void> {
    this.floats('allreduce', t);
    const op = options.op ?? 'sum';
    if (op !== 'sum' && op !== 'avg') fail('ERR_ARG', 'allreduce', 'op', "'sum' or 'avg'", describe(op));
    const d = (await t.data()) as Float32Array;
    await this.allreduceArray(d, op);
    writeInto(t, d);
  }

  /** Broadcast of a tensor from `root`, in place. */
  async broadcast(t: Tensor, root = 0): Promise<void> {
    this.floats('broadcast', t);
    if (!Number.isInteger(root) || root < 0 || root >= this.worldSize) fail('ERR_ARG', 'broadcast', 'root', `a rank in [0, ${this.worldSize})`, describe(root));
    const d = (await t.data()) as Float32Array;
    await this.broadcastArray(d, root);
    writeInto(t, d);
  }

  /** Waits until every rank has called barrier(). */
  barrier(): Promise<void> {
    return this.run('barrier', 0, false, () => this.g.barrier());
  }

  /** Leaves the group: closes the native group, the presence connection and (rank 0) the store. */
  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    this.presence?.close();
    this.g.close();
    // Rank 0 keeps the store a moment so the others' presence BYEs arrive before it closes.
    const server = this.server;
    if (server) setTimeout(() => server.close(), 200).unref();
    if (defaultGroup === this) defaultGroup = null;
  }
}

/** Copies host floats into a tensor's storage (not recorded for autograd). */
export function writeInto(t: Tensor, d: Float32Array): void {
  noGrad(() => {
    const s = tensor(d, [...t.shape]);
    try {
      t.copy_(s);
    } finally {
      s.dispose();
    }
  });
}

let defaultGroup: ProcessGroup | null = null;

/** The group made by the last init() (null before). */
export function getGroup(): ProcessGroup | null {
  return defaultGroup;
}

/** Whether RANK and WORLD_SIZE are set (a launcher started this process as a worker). */
export function launchedByLauncher(): boolean {
  return envInt('WORLD_SIZE') !== undefined && envInt('RANK') !== undefined;
}

/** Joins a process group (resolves once every rank has joined). */
export async function init(options: InitOptions = {}): Promise<ProcessGroup> {
  const op = 'distributed.init';
  const backend = options.backend ?? 'gloo';
  if (backend === 'nccl')
    throw new ResnextError(
      `${op}: backend 'nccl' expected a usable CUDA GPU and libresnext_nccl.so, received none: the NCCL backend is compiled and linked in CI ` +
        "(scripts/ci-cuda.sh, against the nvidia-nccl-cu13 wheel) but not yet wired to CUDA tensors; use backend 'gloo' for CPU tensors",
      'ERR_DEVICE',
    );
  if (backend !== 'gloo') fail('ERR_ARG', op, 'backend', "'gloo' or 'nccl'", describe(backend));
  const worldSize = options.worldSize ?? envInt('WORLD_SIZE') ?? 1;
  const rank = options.rank ?? envInt('RANK') ?? 0;
  if (!Number.isSafeInteger(worldSize) || worldSize < 1) fail('ERR_ARG', op, 'worldSize', 'a positive integer (or WORLD_SIZE)', describe(worldSize));
  if (!Number.isSafeInteger(rank) || rank < 0 || rank >= worldSize) fail('ERR_ARG', op, 'rank', `an integer in [0, ${worldSize}) (or RANK)`, describe(rank));
  const timeoutMs = options.timeoutMs ?? envInt('RESNEXT_DIST_TIMEOUT_MS') ?? 120000;
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1) fail('ERR_ARG', op, 'timeoutMs', 'a positive integer', describe(timeoutMs));
  let host: string;
  let port: number;
  const im = options.initMethod ?? 'env://';
  if (im === 'env://') {
    host = process.env.MASTER_ADDR || '127.0.0.1';
    port = envInt('MASTER_PORT') ?? 29500;
  } else {
    const m = /^tcp:\/\/(\[[^\]]+\]|[^:/]+):(\d+)\/?$/.exec(im);
    if (!m) fail('ERR_ARG', op, 'initMethod', "'env://' or 'tcp://host:port'", describe(im));
    host = m[1].replace(/^\[|\]$/g, '');
    port = Number(m[2]);
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535) fail('ERR_ARG', op, 'MASTER_PORT', 'a port in [1, 65535]', describe(port));
  const hostname = options.hostname ?? process.env.RESNEXT_DIST_HOST ?? (isLoopback(host) ? '127.0.0.1' : require('node:os').hostname());
  const gloo = loadGloo();

  let server: StoreServer | null = null;
  if (rank === 0) {
    server = new StoreServer();
    try {
      // Listen on every interface unless the master address is a loopback one.
      await server.listen(isLoopback(host) ? host : net.isIP(host) ? host : '0.0.0.0', port);
    } catch (e) {
      throw new ResnextError(`${op}: rank 0 expected to listen on ${host}:${port} (MASTER_ADDR:MASTER_PORT), received ${(e as Error).message}`, 'ERR_IO');
    }
  }
  let g: GlooGroup;
  try {
    g = await gloo.connect({ rank, size: worldSize, storeHost: host, storePort: port, hostname, timeoutMs });
  } catch (e) {
    server?.close();
    throw new ResnextError(`${op}: ${(e as Error).message}`, 'ERR_IO');
  }
  let presence: Presence | null = null;
  if (rank !== 0) {
    presence = new Presence();
    try {
      await presence.connect(host, port, rank, timeoutMs);
    } catch (e) {
      g.close();
      throw new ResnextError(`${op}: rank ${rank} expected to reach rank 0's store at ${host}:${port}, received ${(e as Error).message}`, 'ERR_IO');
    }
  }
  const pg = new ProcessGroup(backend, rank, worldSize, timeoutMs, g, server, presence);
  const onDeath = (r: number) => {
    if (pg.deadRank === null) pg.deadRank = r;
  };
  if (server) server.onDeath = onDeath;
  if (presence) presence.onDeath = onDeath;
  // Every rank is connected (and has its presence channel) before anyone starts.
  await pg.barrier();
  defaultGroup = pg;
  return pg;
}
