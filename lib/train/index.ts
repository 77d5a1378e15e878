export { Trainer, type TrainerOptions, type FitOptions, type FitResult, type EpochMetrics, type EvalResult, type Batch, type BatchSource } from './trainer';
export { saveCheckpoint, loadCheckpoint, resolveCheckpoint, disposeCheckpoint, type TrainingState, type LoadedCheckpoint } from './checkpoint';
export { Progress, type ProgressInfo } from './progress';
export * as distributed from './distributed';
