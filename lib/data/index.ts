/**
 * Data: readers (IDX / MNIST / Fashion-MNIST, CIFAR-10/100 binary, image folders via sharp), a
 * built-in synthetic dataset, transforms as plain-data specs, and a DataLoader that prepares
 * batches in worker threads. Exported as the `data` namespace of the package.
 */
export { type Dataset, type InMemoryOptions, inMemory, subset, take, randomSplit, fromSource } from './dataset';
export type { DataSource, MemorySource, FileSource, RawImage } from './source';
export { readIdx, mnist, fashionMnist, FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, type IdxOptions, type Split } from './idx';
export { cifar10, cifar100, readCifar, CIFAR10_CLASSES, type CifarReadOptions } from './cifar';
export { imageFolder, type ImageFolderOptions } from './imagefolder';
export { synthetic, SYNTHETIC_CLASSES, type SyntheticOptions } from './synthetic';
export {
  NORMALIZE, padCrop, flip, randomResizedCrop, resize, centerCrop, padTo, normalize, compose, applyTransforms,
  type TransformSpec, type NormalizePreset, type Size, type ImageShape, type Pipeline,
} from './transforms';
export { DataLoader, type DataLoaderOptions, type Batch } from './loader';
export { permutation } from './rng';
