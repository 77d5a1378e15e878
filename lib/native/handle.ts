/** The handle types the addon's interface (addon.generated.ts) is written in. */
export type DTypeName = 'float32' | 'float64' | 'int32' | 'bfloat16';
export type DeviceName = 'cpu' | 'cuda';

/** A native tensor handle: shape, dtype and device of a core tensor; freed by dispose(). */
export interface TensorHandle {
  readonly shape: number[];
  readonly dtype: DTypeName;
  readonly device: DeviceName;
  readonly disposed: boolean;
  readonly nbytes: number;
  dispose(): void;
  sharesStorage(other: TensorHandle): boolean;
  /** Reports the handle's bytes to V8 as external memory (once; handles made in a scope wait). */
  account(): void;
}
