/**
 * What `resnext predict`, `embed` and `export` share: flag parsing and building a named model,
 * from a weights file (.pth or .safetensors, via the builders' `weights` option) or freshly
 * initialised.
 */
import { parseArgs } from 'node:util';
import * as models from '../models';
import type { Module } from '../nn/module';
import { setNumThreads } from '../tensor/tensor';
import { intFlag, MODEL_NAMES, modelSpecFromFlags, UsageError } from './args';

export type Flags = Record<string, string | boolean | undefined>;

/** Model flags of the three commands (as for train: --layers/--cardinality/--width for 'resnext'). */
export const MODEL_OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  model: { type: 'string' },
  weights: { type: 'string' },
  'num-classes': { type: 'string' },
  layers: { type: 'string' },
  cardinality: { type: 'string' },
  width: { type: 'string' },
  threads: { type: 'string' },
} as const;

export const MODEL_HELP = `Model:
  --model NAME            ${MODEL_NAMES.filter((n) => !n.startsWith('resnext29')).join(' | ')} (default resnext50_32x4d)
  --weights FILE          torchvision .pth (zip or legacy) or .safetensors weights
  --num-classes N         classes of the head (default: the file's, else 1000)
  --layers A,B,C,D        for --model resnext: blocks per stage (default 3,4,6,3)
  --cardinality C         for --model resnext: groups (default 32)
  --width D               for --model resnext: width per group (default 4)
  --threads N             CPU threads (default all cores)`;

export function parseFlags(cmd: string, argv: string[], options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>): { flags: Flags; positionals: string[] } {
  try {
    const r = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
    return { flags: r.values as Flags, positionals: r.positionals };
  } catch (e) {
    throw new UsageError(`${(e as Error).message.replace(/^Unknown option/, 'unknown option')}. Run 'resnext ${cmd} --help' for the options.`);
  }
}

/** Builds --model (default resnext50_32x4d), loading --weights when given. */
export async function buildFromFlags(f: Flags, allowCifar = false): Promise<{ model: Module; name: string; weights: string | undefined }> {
  const t = intFlag('threads', f.threads as string | undefined);
  if (t) setNumThreads(t);
  const name = (f.model as string | undefined) ?? 'resnext50_32x4d';
  if (!allowCifar && name.startsWith('resnext29'))
    throw new UsageError(`--model expected an ImageNet model (${MODEL_NAMES.filter((n) => !n.startsWith('resnext29')).join(', ')}), received "${name}"`);
  const weights = f.weights as string | undefined;
  const classes = intFlag('num-classes', f['num-classes'] as string | undefined);
  const spec = modelSpecFromFlags(name, f, classes ?? (allowCifar && name.startsWith('resnext29') ? 10 : 1000), 3);
  const options: Record<string, unknown> = { ...spec.options };
  if (weights !== undefined) {
    if (classes === undefined) delete options.numClasses; // the file's class count
    options.weights = weights;
  }
  const build = (models as unknown as Record<string, (o: unknown) => Module | Promise<Module>>)[spec.builder];
  if (typeof build !== 'function') throw new UsageError(`model builder "${spec.builder}" is not one of ${MODEL_NAMES.join(', ')}`);
  if (weights !== undefined && spec.builder.startsWith('resnext29')) throw new UsageError('--weights applies to the ImageNet models only');
  const model = await build(options);
  return { model, name, weights };
}
