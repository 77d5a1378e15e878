export { init, getGroup, launchedByLauncher, writeInto, ProcessGroup, type InitOptions, type Backend, type ReduceOp, type CommStats } from './process-group';
export { GradReducer, type ReducerOptions } from './ddp';
export { SyncBatchNorm, convertSyncBatchNorm, allreduceSum } from './sync-batch-norm';
export { loadGloo, glooAddonCandidates, GLOO_ADDON } from './gloo';
export { StoreServer } from './store';
