/** Elementwise ops with broadcasting, scalar ops, unary math and ReLU, each with its gradient. */
import { fail, describe } from '../native/errors';
import { native, type BinaryOp, type ScalarOp, type UnaryOp } from '../native/addon';
import { defineGradient, needsGrad, record } from '../autograd/engine';
import { Tensor } from '../tensor/tensor';
import { H, sumTo, T } from './util';


defineGradient('add', ['a', 'b']);
defineGradient('sub', ['a', 'b']);
defineGradient('mul', ['a', 'b']);
defineGradient('div', ['a', 'b']);
defineGradient('addScalar', ['x']);
defineGradient('mulScalar', ['x']);
defineGradient('rsubScalar', ['x']);
defineGradient('rdivScalar', ['x']);
defineGradient('pow', ['x']);
defineGradient('neg', ['x']);
defineGradient('exp', ['x']);
defineGradient('log', ['x']);
defineGradient('sqrt', ['x']);
defineGradient('relu', ['x']);

const bin = (op: BinaryOp, a: Tensor, b: Tensor) => T(native.binary(op, a.handle, b.handle));
const sc = (op: ScalarOp, x: Tensor, s: number) => T(native.scalar(op, x.handle, s));
const un = (op: UnaryOp, x: Tensor) => T(native.unary(op, x.handle));

function scalarArg(op: string, arg: string, v: unknown): number {
  if (typeof v !== 'number' || Number.isNaN(v)) fail('ERR_ARG', op, arg, 'a Tensor or a number', describe(v));
  return v;
}

/** a + b (broadcasting); either side may be a number. */
export function add(a: Tensor | number, b: Tensor | number): Tensor {
  if (!(a instanceof Tensor)) {
    if (!(b instanceof Tensor)) fail('ERR_ARG', 'add', 'a', 'a Tensor (at least one operand must be a Tensor)', describe(a));
    return add(b, a);
  }
  if (!(b instanceof Tensor)) {
    const s = scalarArg('add', 'b', b);
    H('add', 'a', a);
    const out = sc('add', a, s);
    return needsGrad(a) ? record(out, 'addScalar', [a], [], (g) => [g]) : out;
  }
  const out = T(native.binary('add', H('add', 'a', a), H('add', 'b', b)));
  if (!needsGrad(a, b)) return out;
  return record(out, 'add', [a, b], [], (g) => [sumTo(g, a.shape), sumTo(g, b.shape)]);
}

/** a - b (broadcasting); either side may be a number. */
export function sub(a: Tensor | number, b: Tensor | number): Tensor {
  if (!(a instanceof Tensor)) {
    const s = scalarArg('sub', 'a', a);
    H('sub', 'b', b);
    const x = b as Tensor;
    const out = sc('rsub', x, s);
    return needsGrad(x) ? record(out, 'rsubScalar', [x], [], (g) => [un('neg', g)]) : out;
  }
  if (!(b instanceof Tensor)) return add(a, -scalarArg('sub', 'b', b));
  const out = T(native.binary('sub', H('sub', 'a', a), H('sub', 'b', b)));
  if (!needsGrad(a, b)) return out;
  return record(out, 'sub', [a, b], [], (g) => {
    const nb = un('neg', g);
    const gb = sumTo(nb, b.shape);
    if (gb !== nb) nb.dispose();
    return [sumTo(g, a.shape), gb];
  });
}

/** a * b (broadcasting); either side may be a number. */
export function mul(a: Tensor | number, b: Tensor | number): Tensor {
  if (!(a instanceof Tensor)) {
    if (!(b instanceof Tensor)) fail('ERR_ARG', 'mul', 'a', 'a Tensor (at least one operand must be a Tensor)', describe(a));
    return mul(b, a);
  }
  if (!(b instanceof Tensor)) {
    const s = scalarArg('mul', 'b', b);
    H('mul', 'a', a);
    const out = sc('mul', a, s);
    return needsGrad(a) ? record(out, 'mulScalar', [a], [], (g) => [sc('mul', g, s)]) : out;
  }
  const out = T(native.binary('mul', H('mul', 'a', a), H('mul', 'b', b)));
  if (!needsGrad(a, b)) return out;
  return record(out, 'mul', [a, b], [a, b], (g, [sa, sb]) => [
    a.requiresGrad ? reduceOwned(bin('mul', g, sb), a.shape) : null,
    b.requiresGrad ? reduceOwned(bin('mul', g, sa), b.shape) : null,
  ]);
}

/** a / b (broadcasting); either side may be a number. */
export function div(a: Tensor | number, b: Tensor | number): Tensor {
  if (!(a instanceof Tensor)) {
    const s = scalarArg('div', 'a', a);
    H('div', 'b', b);
    const x = b as Tensor;
    const out = sc('rdiv', x, s);
    // d(s/x) = -s/x^2
    return needsGrad(x)
      ? record(out, 'rdivScalar', [x], [x], (g, [sx]) => {
          const x2 = bin('mul', sx, sx);
          const q = bin('div', g, x2);
          const r = sc('mul', q, -s);
          x2.dispose();
          q.dispose();
          return [r];
        })
      : out;
  }
  if (!(b instanceof Tensor)) return mul(a, 1 / scalarArg('div', 'b', b));
  const out = T(native.binary('div', H('div', 'a', a), H('div', 'b', b)));
  if (!needsGrad(a, b)) return out;
  return record(out, 'div', [a, b], [a, b], (g, [sa, sb]) => {
    const ga = a.requiresGrad ? reduceOwned(bin('div', g, sb), a.shape) : null;
    let gb: Tensor | null = null;
    if (b.requiresGrad) {
      const b2 = bin('mul', sb, sb);
      const ab = bin('div', sa, b2);
      const t = bin('mul', g, ab);
      const n = un('neg', t);
      b2.dispose();
      ab.dispose();
      t.dispose();
      gb = reduceOwned(n, b.shape);
    }
    return [ga, gb];
  });
}

/** sumTo for a temporary: disposes the input when a new tensor was made. */
function reduceOwned(t: Tensor, shape: readonly number[]): Tensor {
  const r = sumTo(t, shape);
  if (r !== t) t.dispose();
  return r;
}

/** x ** p for a number p. */
export function pow(x: Tensor, p: number): Tensor {
  const s = scalarArg('pow', 'exponent', p);
  H('pow', 'x', x);
  const out = sc('pow', x, s);
  if (!needsGrad(x)) return out;
  return record(out, 'pow', [x], [x], (g, [sx]) => {
    const xp = sc('pow', sx, s - 1);
    const k = sc('mul', xp, s);
    const r = bin('mul', g, k);
    xp.dispose();
    k.dispose();
    return [r];
  });
}

export function neg(x: Tensor): Tensor {
  const out = T(native.unary('neg', H('neg', 'x', x)));
  return needsGrad(x) ? record(out, 'neg', [x], [], (g) => [un('neg', g)]) : out;
}

export function exp(x: Tensor): Tensor {
  const out = T(native.unary('exp', H('exp', 'x', x)));
  return needsGrad(x) ? record(out, 'exp', [x], [out], (g, [y]) => [bin('mul', g, y)]) : out;
}

export function log(x: Tensor): Tensor {
  const out = T(native.unary('log', H('log', 'x', x)));
  return needsGrad(x) ? record(out, 'log', [x], [x], (g, [sx]) => [bin('div', g, sx)]) : out;
}

export function sqrt(x: Tensor): Tensor {
  const out = T(native.unary('sqrt', H('sqrt', 'x', x)));
  if (!needsGrad(x)) return out;
  return record(out, 'sqrt', [x], [out], (g, [y]) => {
    const q = bin('div', g, y);
    const r = sc('mul', q, 0.5);
    q.dispose();
    return [r];
  });
}

export function abs(x: Tensor): Tensor {
  return T(native.unary('abs', H('abs', 'x', x)));
}

/** Elementwise maximum (no gradient). */
export function maximum(a: Tensor, b: Tensor): Tensor {
  return T(native.binary('maximum', H('maximum', 'a', a), H('maximum', 'b', b)));
}

/** max(x, 0). */
export function relu(x: Tensor): Tensor {
  const out = T(native.relu(H('relu', 'x', x)));
  if (!needsGrad(x)) return out;
  return record(out, 'relu', [x], [out], (g, [y]) => [T(native.reluBackward(g.handle, y.handle))]);
}
