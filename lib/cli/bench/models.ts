/**
 * The models of the speed sweep, named as in ../shared/anchors/pytorch-h200.json
 * (resnext50_{C}x{d}d, resnext29_{C}x{d}d), in three families:
 *  - resnext50-fixed: the paper's fixed-complexity ResNeXt-50 family (Table 2), widths from
 *    solveResNeXtWidth(C): 1x64d (= ResNet-50), 2x40d, 4x24d, 8x14d, 32x4d;
 *  - resnext29-card: CIFAR ResNeXt-29 at d = 64 and growing cardinality (section 5.3):
 *    1x64d, 2x64d, 4x64d, 8x64d, 16x64d (complexity grows with C);
 *  - resnext29-fixed: CIFAR ResNeXt-29 at the complexity of its 1x64d baseline (the cheapest
 *    member of resnext29-card, and the counterpart of ResNeXt-50's 1x64d), widths from
 *    solveWidth on the parameter count, as the paper does for Table 2: 2x40d, 4x24d, 8x14d,
 *    32x4d. C = 16 is left out: integer widths give 16x8d at +9% MACs (above the 5% band).
 * A model in two families (resnext29_1x64d) is listed once.
 */
import type { Module } from '../../nn/module';
import * as models from '../../models';

export type Family = 'resnext50-fixed' | 'resnext29-card' | 'resnext29-fixed';
export const FAMILIES: readonly Family[] = ['resnext50-fixed', 'resnext29-card', 'resnext29-fixed'];

export interface BenchModel {
  name: string;
  families: Family[];
  /** 'imagenet' (3x224x224 reference input, 1000 classes) or 'cifar' (3x32x32, 10 classes). */
  kind: 'imagenet' | 'cifar';
  cardinality: number;
  width: number;
  numClasses: number;
  /** The paper's input side for this model (224 or 32): MACs are also reported there. */
  refSize: number;
  build(init?: 'kaiming' | 'zeros' | 'none'): Module;
}

const R50_CARDINALITIES = [1, 2, 4, 8, 32];
const C29_CARDINALITIES = [1, 2, 4, 8, 16];
const C29_FIXED_CARDINALITIES = [2, 4, 8, 32];

function r50(c: number, d: number): BenchModel {
  return {
    name: `resnext50_${c}x${d}d`, families: ['resnext50-fixed'], kind: 'imagenet', cardinality: c, width: d, numClasses: 1000, refSize: 224,
    build: (init) => models.resnext({ layers: [3, 4, 6, 3], groups: c, widthPerGroup: d, init }),
  };
}

function c29(c: number, d: number, family: Family): BenchModel {
  return {
    name: `resnext29_${c}x${d}d`, families: [family], kind: 'cifar', cardinality: c, width: d, numClasses: 10, refSize: 32,
    build: (init) => models.resnext29({ cardinality: c, width: d, init }),
  };
}

/** Model names and families without building anything heavy (the solver only counts shapes). */
export function speedModels(): BenchModel[] {
  const out: BenchModel[] = [];
  for (const c of R50_CARDINALITIES) out.push(r50(c, c === 1 ? 64 : models.solveResNeXtWidth(c).width));
  for (const c of C29_CARDINALITIES) out.push(c29(c, 64, 'resnext29-card'));
  const base = models.resnext29({ cardinality: 1, width: 64, init: 'none' });
  const baseParams = models.countParams(base).total;
  base.dispose();
  out.find((m) => m.name === 'resnext29_1x64d')!.families.push('resnext29-fixed');
  for (const c of C29_FIXED_CARDINALITIES) {
    const { width } = models.solveWidth((d) => models.resnext29({ cardinality: c, width: d, init: 'none' }), baseParams);
    const m = c29(c, width, 'resnext29-fixed');
    const same = out.find((o) => o.name === m.name);
    if (same) same.families.push('resnext29-fixed');
    else out.push(m);
  }
  return out;
}

/**
 * Filters models by a comma-separated list of names, family names (resnext50-fixed, ...),
 * prefixes ending in '*' (resnext29_*) or kinds (imagenet, cifar).
 */
export function selectModels(all: BenchModel[], filter: string | undefined): BenchModel[] {
  if (!filter) return all;
  const tokens = filter.split(',').map((s) => s.trim()).filter(Boolean);
  const match = (m: BenchModel, t: string) =>
    m.name === t || (m.families as string[]).includes(t) || m.kind === t || (t.endsWith('*') && m.name.startsWith(t.slice(0, -1)));
  return all.filter((m) => tokens.some((t) => match(m, t)));
}

/** Parameters and multiply-adds of one image of [3, size, size] for every model of a family. */
export function familyComplexity(family: Family, size?: number): { name: string; cardinality: number; width: number; params: number; macs: number }[] {
  return speedModels()
    .filter((m) => m.families.includes(family))
    .map((m) => {
      const model = m.build('zeros');
      try {
        return {
          name: m.name, cardinality: m.cardinality, width: m.width,
          params: models.countParams(model).total, macs: models.countMACs(model, [3, size ?? m.refSize, size ?? m.refSize]).total,
        };
      } finally {
        model.dispose();
      }
    });
}
