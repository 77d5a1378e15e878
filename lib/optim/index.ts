export { SGD, type SGDOptions, type SGDState } from './sgd';
export { MultiStepLR, CosineLR, ConstantLR, scheduleFromJSON, type Schedule } from './schedule';
