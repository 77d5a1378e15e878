export {
  resnext, resnet50, resnext50_32x4d, resnext101_32x8d, resnext101_64x4d, ResNet, Bottleneck, conv1x1, conv3x3,
  zeroInitResidual, type ResNeXtConfig, type NamedBuilder,
} from './resnet';
export { readWeights, loadWeightsInto, loadWeightsFile, type WeightsOption, type LoadWeightsResult } from './weights';
export { resnext29, resnext29_8x64d, resnext29_16x64d, ResNeXt29, CifarBlock, type ResNeXt29Config } from './cifar';
export { countParams, countMACs, solveWidth, solveResNeXtWidth, type LayerMACs, type LayerParams } from './complexity';
