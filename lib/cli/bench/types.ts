import type { Family } from './models';
import type { StepTiming, TrainResult } from './speed';

/** One model of the speed sweep in the result JSON. */
export interface SpeedRow {
  name: string;
  families: Family[];
  kind: 'imagenet' | 'cifar';
  cardinality: number;
  width: number;
  params: number;
  /** Multiply-adds of one image at the benchmark's input size (analytic, countMACs). */
  macs: number;
  /** Multiply-adds of one image at the paper's input size (224 or 32). */
  macsRef: { size: number; macs: number } | null;
  device: string;
  precision: string;
  train: (TrainResult & { batch: number; size: number }) | null;
  infer: (StepTiming & { batch: number; size: number }) | null;
  /** Set when the model could not be benchmarked (e.g. out of memory); the sweep goes on. */
  error?: string;
  seconds: number;
}
