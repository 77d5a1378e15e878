/**
 * Module: the base of every layer and model. Parameters (tensors with requiresGrad), buffers
 * (running statistics) and child modules are registered by name, so names compose into
 * PyTorch's dotted state-dict keys (`layer1.0.conv2.weight`, `bn1.running_mean`, ...) and a
 * torchvision state dict loads unchanged.
 */
import { describe, fail, ResnextError } from '../native/errors';
import { ensureDevice } from '../native/cuda';
import { isGradEnabled, noGrad } from '../autograd/engine';
import { cast, to } from '../ops/shape';
import { Tensor, type Device } from '../tensor/tensor';

export type StateDict = Record<string, Tensor>;

/**
 * Frees an intermediate activation `t` that the next op has already read, when no autograd tape
 * is recording (inside noGrad): nothing can need it any more, so inference holds a few
 * activations at a time instead of every layer's until the scope ends. `t` is kept when it is
 * one of `inputs` (the caller's tensors) or while a tape records (backward may need it; tidy
 * frees it later). Queued kernels hold their own reference, so freeing early is safe.
 */
export function freeUntaped(t: Tensor, ...inputs: Tensor[]): void {
  if (!isGradEnabled() && !inputs.includes(t)) t.dispose();
}

export interface LoadResult {
  missing: string[];
  unexpected: string[];
}

export abstract class Module {
  /** Training mode (batch statistics in BN); switch with train() / eval(). */
  training = true;
  private readonly _params = new Map<string, Tensor>();
  private readonly _buffers = new Map<string, Tensor>();
  private readonly _modules = new Map<string, Module>();

  abstract forward(x: Tensor): Tensor;

  /** Calls forward (so modules can be used like functions: m.call(x)). */
  call(x: Tensor): Tensor {
    return this.forward(x);
  }

  protected registerParameter(name: string, t: Tensor): Tensor {
    t.requiresGrad = true;
    this._params.set(name, t);
    return t;
  }

  protected registerBuffer(name: string, t: Tensor): Tensor {
    this._buffers.set(name, t);
    return t;
  }

  protected registerModule<M extends Module>(name: string, m: M): M {
    this._modules.set(name, m);
    return m;
  }

  /** Direct children, in registration order. */
  children(): [string, Module][] {
    return [...this._modules];
  }

  /** This module and all descendants with their dotted names ('' for this one). */
  namedModules(prefix = ''): [string, Module][] {
    const out: [string, Module][] = [[prefix, this]];
    for (const [n, m] of this._modules) out.push(...m.namedModules(prefix ? `${prefix}.${n}` : n));
    return out;
  }

  namedParameters(): [string, Tensor][] {
    return this.namedModules().flatMap(([p, m]) => [...m._params].map(([n, t]): [string, Tensor] => [p ? `${p}.${n}` : n, t]));
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  namedBuffers(): [string, Tensor][] {
    return this.namedModules().flatMap(([p, m]) => [...m._buffers].map(([n, t]): [string, Tensor] => [p ? `${p}.${n}` : n, t]));
  }

  buffers(): Tensor[] {
    return this.namedBuffers().map(([, t]) => t);
  }

  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Moves every parameter and buffer to `device` in place (tensor identities are kept). */
  to(device: Device): this {
    ensureDevice('Module.to', device);
    for (const t of [...this.parameters(), ...this.buffers()]) {
      if (t.device === device) continue;
      t._moveTo(device);
      if (t.grad) {
        t.grad.dispose();
        t.grad = null;
      }
    }
    return this;
  }

  /**
   * Parameters and buffers by dotted name (torchvision's names). The values are the module's
   * own tensors, not copies: read or save them, do not dispose them.
   */
  stateDict(): StateDict {
    for (const [, m] of this.namedModules()) m.syncOwnBuffers();
    // PyTorch's order: module by module, each module's parameters then its buffers.
    const out: StateDict = {};
    for (const [p, m] of this.namedModules())
      for (const [n, t] of [...m._params, ...m._buffers]) out[p ? `${p}.${n}` : n] = t;
    return out;
  }

  /**
   * Copies values from `dict` into this module's parameters and buffers (shapes must match;
   * dtypes are converted). With strict (the default), missing or unexpected keys are an error
   * (ERR_ARG) that lists them; otherwise they are returned.
   */
  loadStateDict(dict: StateDict | Map<string, Tensor>, options: { strict?: boolean } = {}): LoadResult {
    const strict = options.strict ?? true;
    const entries = dict instanceof Map ? dict : new Map(Object.entries(dict ?? {}));
    if (!(dict instanceof Map) && (typeof dict !== 'object' || dict === null))
      fail('ERR_ARG', 'loadStateDict', 'dict', 'an object or Map of tensors', describe(dict));
    const own = new Map([...this.namedParameters(), ...this.namedBuffers()]);
    const missing = [...own.keys()].filter((k) => !entries.has(k));
    const unexpected = [...entries.keys()].filter((k) => !own.has(k));
    if (strict && (missing.length || unexpected.length)) {
      const list = (a: string[]) => (a.length > 8 ? `${a.slice(0, 8).join(', ')} ... (${a.length} in all)` : a.join(', ') || 'none');
      throw new ResnextError(
        `loadStateDict: dict expected exactly this module's ${own.size} keys, received ${entries.size}; ` +
          `missing: ${list(missing)}; unexpected: ${list(unexpected)}`,
        'ERR_ARG',
      );
    }
    // Check every shape before changing anything, so a bad dict leaves the module untouched.
    for (const [k, t] of own) {
      const src = entries.get(k);
      if (!src) continue;
      if (!(src instanceof Tensor)) fail('ERR_ARG', 'loadStateDict', k, 'a Tensor', describe(src));
      if (src.shape.join() !== t.shape.join())
        fail('ERR_SHAPE', 'loadStateDict', k, `shape [${t.shape.join(', ')}]`, `[${src.shape.join(', ')}]`);
    }
    noGrad(() => {
      for (const [k, t] of own) {
        const src = entries.get(k);
        if (!src) continue;
        let s = src;
        if (s.device !== t.device) s = noGrad(() => to(s, t.device));
        if (s.dtype !== t.dtype) {
          const c = cast(s, t.dtype);
          if (s !== src) s.dispose();
          s = c;
        }
        t.copy_(s);
        if (s !== src) s.dispose();
      }
    });
    for (const [, m] of this.namedModules()) m.onLoad();
    return { missing, unexpected };
  }

  /** Disposes every parameter, buffer and gradient. */
  dispose(): void {
    for (const t of [...this.parameters(), ...this.buffers()]) {
      t.grad?.dispose();
      t.grad = null;
      t.dispose();
    }
  }

  /** Disposes and clears the gradients of all parameters. */
  zeroGrad(): void {
    for (const p of this.parameters()) p.zeroGrad();
  }

  /** Hooks for modules that mirror a buffer in JS (BatchNorm's num_batches_tracked). */
  protected syncOwnBuffers(): void {}
  protected onLoad(): void {}
}
