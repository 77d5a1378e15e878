/**
 * The autograd tape. An op that runs while grad mode is on and has an input with requiresGrad
 * records a Node on its output: the op's name, its inputs, a backward function and the tensors
 * it saved. backward() walks the tape from a tensor in reverse topological order, sums the
 * gradients arriving at each tensor, and accumulates them into the leaves' `.grad`. After
 * backward (unless retainGraph) each node frees what it saved. Gradient formulas live in
 * lib/ops next to each op's forward (the per-op registry below is filled by defineOp).
 */
import { describe, fail } from '../native/errors';
import { addUntaped, onesOf, viewOf } from '../ops/untaped';
import { keep, keepOwned, Tensor, type GradNode } from '../tensor/tensor';

let gradEnabled = true;

/** Runs fn with gradient recording off (like torch.no_grad()). */
export function noGrad<T>(fn: () => T): T {
  if (typeof fn !== 'function') fail('ERR_ARG', 'noGrad', 'fn', 'a function', describe(fn));
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Whether an op on these inputs must be recorded. */
export function needsGrad(...inputs: (Tensor | null | undefined)[]): boolean {
  return gradEnabled && inputs.some((t) => t?.requiresGrad);
}

/** A second handle on t's storage, owned by whoever saved it (survives t.dispose()). */
export function alias(t: Tensor): Tensor {
  return keepOwned(viewOf(t));
}

export type BackwardFn = (grad: Tensor) => (Tensor | null)[];

/**
 * Called when backward() has put a leaf's gradient for this pass into leaf.grad (each leaf is
 * visited once, after every contribution to it was summed). Data-parallel training
 * (lib/train/distributed) starts a bucket's allreduce here, while the rest of backward runs.
 */
export const gradHooks: { onLeafGrad: ((leaf: Tensor) => void) | null } = { onLeafGrad: null };

/** One op's gradient rule, registered by name so the registry lists every differentiable op. */
export const gradientRegistry = new Map<string, { inputs: readonly string[] }>();

export function defineGradient(name: string, inputs: readonly string[]): void {
  gradientRegistry.set(name, { inputs });
}

class Node implements GradNode {
  released = false;
  constructor(
    readonly name: string,
    public inputs: (Tensor | null)[],
    private fn: BackwardFn | null,
    private saved: Tensor[],
  ) {}

  backward(grad: Tensor): (Tensor | null)[] {
    if (this.released || !this.fn)
      fail('ERR_ARG', 'backward', this.name, 'a graph that has not been freed (pass { retainGraph: true } to backward twice)', 'a freed graph');
    return this.fn(grad);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    for (const t of this.saved) t.dispose();
    this.saved = [];
    this.fn = null;
    this.inputs = [];
  }
}

/**
 * Records `out` as produced by op `name` from `inputs`. `save` lists tensors to keep alive for
 * backward: each is aliased, so disposing the original (or leaving a tidy scope) does not
 * break backward; the aliases are freed after backward. The backward function receives the
 * aliases in the same order.
 */
export function record(
  out: Tensor,
  name: string,
  inputs: (Tensor | null)[],
  save: Tensor[],
  backward: (grad: Tensor, saved: Tensor[]) => (Tensor | null)[],
): Tensor {
  if (!gradientRegistry.has(name)) fail('ERR_INTERNAL', 'record', 'op', 'an op with a registered gradient', name);
  const saved = save.map(alias);
  out.requiresGrad = true;
  out.gradFn = new Node(name, inputs, (g) => backward(g, saved), saved);
  return out;
}

// ------------------------------------------------------------------ backward

function topoOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  const stack: [Tensor, boolean][] = [[root, false]];
  while (stack.length) {
    const [t, done] = stack.pop()!;
    if (done) {
      order.push(t);
      continue;
    }
    if (seen.has(t)) continue;
    seen.add(t);
    stack.push([t, true]);
    for (const inp of t.gradFn?.inputs ?? []) if (inp?.requiresGrad && !seen.has(inp)) stack.push([inp, false]);
  }
  return order; // inputs before outputs
}

export interface BackwardOptions {
  /** Keep saved tensors so backward can run again through the same graph. */
  retainGraph?: boolean;
}

/** Computes d(root)/d(leaf) for every leaf with requiresGrad and adds it to leaf.grad. */
export function backward(root: Tensor, grad?: Tensor, opts: BackwardOptions = {}): void {
  if (!(root instanceof Tensor)) fail('ERR_ARG', 'backward', 'tensor', 'a Tensor', describe(root));
  if (!root.requiresGrad)
    fail('ERR_ARG', 'backward', 'tensor', 'a tensor that requires grad (computed from inputs with requiresGrad)', root.toString());
  let seed: Tensor;
  if (grad === undefined) {
    if (root.size !== 1)
      fail('ERR_SHAPE', 'backward', 'grad', 'a gradient tensor for a non-scalar output', `none for shape [${root.shape.join(', ')}]`);
    seed = keepOwned(onesOf(root));
  } else {
    if (!(grad instanceof Tensor)) fail('ERR_ARG', 'backward', 'grad', 'a Tensor', describe(grad));
    if (grad.shape.join() !== root.shape.join())
      fail('ERR_SHAPE', 'backward', 'grad', `shape [${root.shape.join(', ')}]`, `[${grad.shape.join(', ')}]`);
    seed = alias(grad);
  }

  const order = topoOrder(root);
  const grads = new Map<Tensor, Tensor>([[root, seed]]);
  const placed = new Set<Tensor>([seed]); // gradient objects held in `grads` or a leaf's .grad

  const accumulate = (t: Tensor, g: Tensor): void => {
    if (placed.has(g)) g = alias(g); // one object per holder, so disposing one never frees another
    placed.add(g);
    const prev = grads.get(t);
    if (!prev) {
      grads.set(t, g);
      return;
    }
    const sum = keepOwned(addUntaped(prev, g));
    prev.dispose();
    g.dispose();
    placed.add(sum);
    grads.set(t, sum);
  };

  const nodes: GradNode[] = [];
  noGrad(() => {
    for (let i = order.length - 1; i >= 0; i--) {
      const t = order[i];
      const g = grads.get(t);
      if (!g) continue;
      grads.delete(t);
      const node = t.gradFn;
      if (!node) {
        // A leaf: accumulate into .grad.
        if (t.grad && !t.grad.isDisposed) {
          const sum = keep(addUntaped(t.grad, g));
          t.grad.dispose();
          g.dispose();
          t.grad = sum;
        } else {
          t.grad = keep(g);
        }
        gradHooks.onLeafGrad?.(t);
        continue;
      }
      nodes.push(node);
      placed.delete(g);
      // One object per gradient (an op may return the same tensor for two inputs).
      const distinct = new Set<Tensor>();
      const gs = node.backward(g).map((gi) => {
        if (!gi) return gi;
        if (distinct.has(gi)) return alias(gi);
        distinct.add(gi);
        return gi;
      });
      node.inputs.forEach((inp, k) => {
        const gi = gs[k];
        if (gi && inp?.requiresGrad) accumulate(inp, keepOwned(gi));
      });
      // Free what no holder took: the incoming gradient and gradients for inputs without grad.
      for (const gi of new Set([g, ...gs])) if (gi && !placed.has(gi)) gi.dispose();
    }
  });
  for (const g of grads.values()) g.dispose();
  if (!opts.retainGraph) for (const n of nodes) n.release();
}

// Tensor.backward(), installed here so the tensor layer does not depend on autograd.
declare module '../tensor/tensor' {
  interface Tensor {
    /** Backpropagates from this tensor (a scalar unless `grad` is given). */
    backward(grad?: Tensor, opts?: BackwardOptions): void;
    /** A tensor on the same storage with no gradient history. */
    detach(): Tensor;
    /** Marks a leaf as requiring gradients; returns this. */
    requiresGrad_(flag?: boolean): this;
    /** Disposes and clears .grad. */
    zeroGrad(): void;
  }
}

Tensor.prototype.backward = function (this: Tensor, grad?: Tensor, opts?: BackwardOptions): void {
  backward(this, grad, opts);
};
Tensor.prototype.detach = function (this: Tensor): Tensor {
  return viewOf(this);
};
Tensor.prototype.requiresGrad_ = function <T extends Tensor>(this: T, flag = true): T {
  if (this.gradFn) fail('ERR_ARG', 'requiresGrad_', 'tensor', 'a leaf tensor', 'the output of an op');
  if (flag && this.dtype === 'int32') fail('ERR_DTYPE', 'requiresGrad_', 'tensor', 'a float tensor', 'int32');
  this.requiresGrad = flag;
  return this;
};
Tensor.prototype.zeroGrad = function (this: Tensor): void {
  this.grad?.dispose();
  this.grad = null;
};
