export { Module, type StateDict, type LoadResult } from './module';
export {
  Conv2d, BatchNorm2d, Linear, MaxPool2d, AdaptiveAvgPool2d, ReLU, Flatten, Sequential, layerHooks, type Conv2dModuleOptions,
} from './layers';
