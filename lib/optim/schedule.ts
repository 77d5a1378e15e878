/**
 * Learning-rate schedules as pure functions of the global step (so a resumed run gets the same
 * rate): multi-step decay (the paper's recipes: /10 at fixed epochs) and cosine annealing with
 * linear warm-up.
 */
import { describe, fail } from '../native/errors';

export interface Schedule {
  /** The learning rate for the given 0-based optimizer step. */
  lrAt(step: number): number;
  /** Plain-data description, saved in checkpoints. */
  toJSON(): Record<string, unknown>;
}

function check(op: string, arg: string, v: unknown, ok: boolean, expected: string): void {
  if (!ok) fail('ERR_ARG', op, arg, expected, describe(v));
}

/** lr = base * gamma^(number of milestones <= step). Milestones are in steps. */
export class MultiStepLR implements Schedule {
  constructor(
    readonly base: number,
    readonly milestones: number[],
    readonly gamma = 0.1,
  ) {
    check('MultiStepLR', 'base', base, base >= 0, 'a non-negative number');
    check('MultiStepLR', 'milestones', milestones, Array.isArray(milestones) && milestones.every((m) => Number.isInteger(m) && m >= 0), 'an array of step numbers');
  }
  lrAt(step: number): number {
    return this.base * this.gamma ** this.milestones.filter((m) => m <= step).length;
  }
  toJSON() {
    return { type: 'multistep', base: this.base, milestones: this.milestones, gamma: this.gamma };
  }
}

/** Linear warm-up from base * warmupFactor to base over warmupSteps, then cosine to minLr at totalSteps. */
export class CosineLR implements Schedule {
  constructor(
    readonly base: number,
    readonly totalSteps: number,
    readonly warmupSteps = 0,
    readonly minLr = 0,
    readonly warmupFactor = 0.01,
  ) {
    check('CosineLR', 'base', base, base >= 0, 'a non-negative number');
    check('CosineLR', 'totalSteps', totalSteps, Number.isInteger(totalSteps) && totalSteps > 0, 'a positive integer');
    check('CosineLR', 'warmupSteps', warmupSteps, Number.isInteger(warmupSteps) && warmupSteps >= 0 && warmupSteps < totalSteps, `an integer in [0, ${totalSteps})`);
  }
  lrAt(step: number): number {
    if (step < this.warmupSteps) {
      const t = step / this.warmupSteps;
      return this.base * (this.warmupFactor + (1 - this.warmupFactor) * t);
    }
    const t = Math.min(1, (step - this.warmupSteps) / (this.totalSteps - this.warmupSteps));
    return this.minLr + (this.base - this.minLr) * 0.5 * (1 + Math.cos(Math.PI * t));
  }
  toJSON() {
    return { type: 'cosine', base: this.base, totalSteps: this.totalSteps, warmupSteps: this.warmupSteps, minLr: this.minLr, warmupFactor: this.warmupFactor };
  }
}

/** Constant learning rate. */
export class ConstantLR implements Schedule {
  constructor(readonly base: number) {}
  lrAt(): number {
    return this.base;
  }
  toJSON() {
    return { type: 'constant', base: this.base };
  }
}

/** Rebuilds a schedule from its toJSON() form. */
export function scheduleFromJSON(j: Record<string, unknown>): Schedule {
  switch (j?.type) {
    case 'multistep':
      return new MultiStepLR(j.base as number, j.milestones as number[], j.gamma as number);
    case 'cosine':
      return new CosineLR(j.base as number, j.totalSteps as number, j.warmupSteps as number, j.minLr as number, j.warmupFactor as number);
    case 'constant':
      return new ConstantLR(j.base as number);
    default:
      fail('ERR_ARG', 'scheduleFromJSON', 'type', '"multistep", "cosine" or "constant"', describe(j?.type));
  }
}
