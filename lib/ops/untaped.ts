/**
 * Kernels the autograd engine itself calls: never recorded on the tape (they run while the tape
 * is walked). A leaf module: it imports only the addon and the tensor handle, so lib/autograd can
 * use it without an import cycle through the taped ops.
 */
import { native } from '../native/addon';
import { Tensor } from '../tensor/tensor';

/** a + b, same shapes (gradient accumulation). */
export function addUntaped(a: Tensor, b: Tensor): Tensor {
  return new Tensor(native.binary('add', a.handle, b.handle));
}

/** A second handle on t's storage (same shape), untracked by autograd. */
export function viewOf(t: Tensor): Tensor {
  return new Tensor(native.reshape(t.handle, [...t.shape]));
}

/** Ones shaped like t (the seed gradient of a scalar). */
export function onesOf(t: Tensor): Tensor {
  return new Tensor(native.ones([...t.shape], t.dtype, t.device));
}
