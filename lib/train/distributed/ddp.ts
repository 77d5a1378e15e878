/**
 * Gradient averaging for data-parallel training, as PyTorch's DDP reducer does it: parameters
 * are grouped into buckets (in reverse registration order, roughly the order backward produces
 * their gradients; the first bucket is small so communication starts early), and a bucket's
 * allreduce starts as soon as the last of its gradients is ready (the autograd engine's leaf
 * hook), while backward goes on computing the rest. finish() launches what never became ready
 * (parameters without a gradient this step count as zeros, on every rank alike), waits, and puts
 * the averaged gradients in place.
 *
 * Every rank runs the same graph, so buckets launch in the same order on every rank, and the
 * group's collectives, queued in that order, match. Allreduce gives every rank the same bits, so
 * the ranks' parameters stay bit-identical.
 */
import { gradHooks } from '../../autograd/engine';
import { tensor } from '../../tensor/create';
import type { Tensor } from '../../tensor/tensor';
import type { ProcessGroup } from './process-group';

interface Bucket {
  params: Tensor[];
  offsets: number[];
  size: number;
  ready: number;
  buf: Float32Array | null;
  done: Promise<void> | null;
}

export interface ReducerOptions {
  /** Bucket capacity in bytes (default 25 MiB, PyTorch's bucket_cap_mb). */
  bucketCapBytes?: number;
  /** The first bucket's capacity (default 1 MiB). */
  firstBucketBytes?: number;
}

export class GradReducer {
  readonly buckets: Bucket[] = [];
  private readonly where = new Map<Tensor, Bucket>();
  private readonly seen = new Set<Tensor>();
  /** Milliseconds between the first launch of a step and the end of its last allreduce. */
  lastCommMs = 0;

  constructor(
    private readonly group: ProcessGroup,
    params: Tensor[],
    options: ReducerOptions = {},
  ) {
    const cap = options.bucketCapBytes ?? 25 * 1024 * 1024;
    let limit = options.firstBucketBytes ?? 1024 * 1024;
    let cur: Bucket | null = null;
    for (const p of [...params].reverse()) {
      if (!cur || (cur.size + p.size) * 4 > limit) {
        if (cur) limit = cap;
        cur = { params: [], offsets: [], size: 0, ready: 0, buf: null, done: null };
        this.buckets.push(cur);
      }
      cur.params.push(p);
      cur.offsets.push(cur.size);
      cur.size += p.size;
      this.where.set(p, cur);
    }
  }

  /** Runs fn (the backward pass) with bucket launches hooked to the leaves' gradients. */
  during<T>(fn: () => T): T {
    const prev = gradHooks.onLeafGrad;
    gradHooks.onLeafGrad = (t) => this.ready(t);
    try {
      return fn();
    } finally {
      gradHooks.onLeafGrad = prev;
    }
  }

  private ready(t: Tensor): void {
    const b = this.where.get(t);
    if (!b || this.seen.has(t)) return;
    this.seen.add(t);
    if (++b.ready === b.params.length) this.launch(b);
  }

  private t0 = 0;

  private launch(b: Bucket): void {
    if (b.done) return;
    const buf = new Float32Array(b.size);
    b.params.forEach((p, i) => {
      if (p.grad && !p.grad.isDisposed) buf.set(p.grad.dataSync() as Float32Array, b.offsets[i]);
    });
    b.buf = buf;
    // From the first bucket's submission (its gradients computed and copied) to the last one's end.
    if (this.t0 === 0) this.t0 = performance.now();
    b.done = this.group.allreduceArray(buf, 'avg');
    b.done.catch(() => undefined); // awaited in finish()
  }

  /** Launches the remaining buckets, waits for all and replaces each gradient with the mean over ranks. */
  async finish(): Promise<void> {
    for (const b of this.buckets) this.launch(b);
    try {
      for (const b of this.buckets) await b.done;
      this.lastCommMs = performance.now() - this.t0;
      for (const b of this.buckets)
        b.params.forEach((p, i) => {
          const g = tensor(b.buf!.subarray(b.offsets[i], b.offsets[i] + p.size), [...p.shape]);
          p.grad?.dispose();
          p.grad = g;
        });
    } finally {
      for (const b of this.buckets) {
        b.ready = 0;
        b.buf = null;
        b.done = null;
      }
      this.seen.clear();
      this.t0 = 0;
    }
  }
}
