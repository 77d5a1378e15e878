/**
 * resnext: train and run ResNeXt networks from TypeScript.
 * This entry point re-exports the public API of every layer.
 */
export { ResnextError, type ErrorCode } from './native/errors';
export { Tensor, tidy, keep, memory, synchronize, numThreads, setNumThreads, cpuFeatures, type DType, type Device, type TypedArray, type MemoryInfo } from './tensor/tensor';
export {
  tensor, empty, zeros, ones, full, zerosLike, onesLike, randn, rand, manualSeed, getRngState, setRngState,
  type TensorOptions, type RandomOptions,
} from './tensor/create';
export { noGrad, isGradEnabled, backward, gradientRegistry, type BackwardOptions } from './autograd/engine';
export { gradcheck, type GradcheckOptions, type GradcheckResult } from './autograd/gradcheck';
// Every public op: each lib/ops module exports exactly its public functions and option types.
export * from './ops/elementwise';
export * from './ops/shape';
export * from './ops/nn';
export { addonPath } from './native/addon';
export { cudaAvailable, cudaStatus, deviceInfo, type CudaStatus, type DeviceInfo } from './native/cuda';
export * as nn from './nn';
export * as models from './models';
export * as optim from './optim';
export * as train from './train';
export * as data from './data';
export * as io from './io';
export * as vision from './vision';
