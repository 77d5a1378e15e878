/**
 * Vision: torchvision's ImageNet preprocessing (decoded with sharp), the ImageNet-1k class names,
 * and classification (top-k with probabilities). Exported as the `vision` namespace.
 */
export { preprocess, preprocessImage, imagenetPreprocessing, resizedSize, type ImageInput, type PreprocessOptions } from './preprocess';
export { predict, topkSoftmax, type Prediction, type PredictOptions } from './predict';
export { IMAGENET_CLASSES, TORCHVISION_WEIGHT_FILES } from './imagenet-classes';
